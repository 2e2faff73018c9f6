"""Rate limits through the whole stack (issue 13, point 6): ``[limits]`` per signature, key,
token, viewer and client address, for originals (every request) and transforms (renders only).

Real moto, the real app on a test client, the app's clock a ``ManualClock``: a bucket refills
only when a test advances it. The per-host table shared by several workers is
``test_rate_limits_workers.py``; the arithmetic alone is ``tests/limits/``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import pytest
from aiohttp import hdrs
from multidict import CIMultiDict
from processes import PHOTO
from s3_gate import ManualClock
from support import (
    OTHER_KEY,
    SCOPED_TOKEN,
    SIGNING_KEY,
    TOKEN,
    TOKENS,
    ProxyClient,
    ProxyFactory,
    source_table,
)
from tcp_relay import Blackhole

from imgproxy.auth.signing import UrlSigner
from imgproxy.web.appkeys import METRICS_URL

KEYS = ("a.png", "b.png", "c.png", "d.png", "employees/e.png")


@pytest.fixture(autouse=True)
def _photos(s3: Any, bucket: str) -> None:
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=PHOTO, ContentType="image/png")


class Asker:
    """Signs as one key at the app's clock, and sends."""

    def __init__(self, client: ProxyClient, clock: ManualClock, secret: str = SIGNING_KEY,
                 kid: str = "k1") -> None:
        self.client, self.clock, self.signer = client, clock, UrlSigner(secret, kid)

    def url(self, key: str, sub: str | None = None, **params: str) -> str:
        return self.signer.sign("photos", key, params=params, now=self.clock.now, sub=sub)

    async def get(self, url: str, **headers: str) -> tuple[int, CIMultiDict[str], dict[str, Any] | None]:
        async with self.client.get(url, headers=headers) as response:
            body = await response.json() if response.status >= 400 else None
            await response.read()
            return response.status, CIMultiDict(response.headers), body

    async def statuses(self, *urls: str, **headers: str) -> list[int]:
        return [(await self.get(url, **headers))[0] for url in urls]


async def asker(proxy: ProxyFactory, clock: ManualClock, **sections: Any) -> Asker:
    return Asker(await proxy(clock=clock, **sections), clock)


async def test_over_the_limit_is_429_rate_limited_with_retry_after(
        proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, limits={"originals": {"per_signature": "2/min"}})
    url = me.url("a.png")
    assert await me.statuses(url, url) == [200, 200]
    status, headers, body = await me.get(url)
    assert status == 429
    assert headers["Retry-After"] == "30"  # 2 per minute: one back every 30 s
    assert headers[hdrs.CACHE_CONTROL] == "no-store"
    assert body is not None
    assert body["error"] == "rate_limited"
    assert body["message"] == "Too many image requests for this signed URL; retry in 30 s."


async def test_a_looping_url_is_refused_by_its_signature_and_leaves_its_key_budget(
        proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, limits={"originals": {"per_signature": "2/min", "per_key": "5/min"}})
    leaked = me.url("a.png")
    assert await me.statuses(*[leaked] * 12) == [200, 200] + [429] * 10
    # The ten refusals cost the key nothing: 3 of its 5 are left for its other URLs.
    others = [me.url(key) for key in ("b.png", "c.png", "d.png")]
    assert await me.statuses(*others) == [200, 200, 200]
    status, _, body = await me.get(me.url("employees/e.png"))
    assert (status, body and body["message"]) == (429, "Too many image requests for URLs signed "
                                                        "with this key; retry in 12 s.")


async def test_each_key_has_its_own_budget(proxy: ProxyFactory, clock: ManualClock) -> None:
    client = await proxy(clock=clock, auth={"keys": {"k1": SIGNING_KEY, "k2": OTHER_KEY}},
                         limits={"originals": {"per_key": "2/min"}})
    one, two = Asker(client, clock), Asker(client, clock, OTHER_KEY, "k2")
    assert await one.statuses(one.url("a.png"), one.url("b.png"), one.url("c.png")) == [200, 200, 429]
    assert await two.statuses(two.url("a.png"), two.url("b.png")) == [200, 200]


async def test_each_token_has_its_own_budget(proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, limits={"originals": {"per_token": "2/min"}})
    ops, hr = f"Bearer {TOKEN}", f"Bearer {SCOPED_TOKEN}"
    assert await me.statuses("/img/photos/a.png", "/img/photos/b.png", "/img/photos/c.png",
                             Authorization=ops) == [200, 200, 429]
    assert await me.statuses("/img/photos/employees/e.png", Authorization=hr) == [200]
    assert TOKENS["hr"]["scopes"] == ["photos:employees/*"]


async def test_each_viewer_has_its_own_budget_across_urls(proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, limits={"originals": {"per_sub": "2/min"}})
    alice = [me.url(key, sub="alice") for key in ("a.png", "b.png", "c.png")]
    assert await me.statuses(*alice) == [200, 200, 429]
    assert await me.statuses(me.url("a.png", sub="bob"), me.url("a.png"), me.url("b.png")) == [200] * 3


async def test_a_trusted_proxy_s_client_is_limited_by_its_forwarded_address(
        proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, server={"trusted_proxies": ["127.0.0.1/32"]},
                     limits={"originals": {"per_client": "2/min"}})
    urls = [me.url(key) for key in ("a.png", "b.png", "c.png")]
    first = {"X-Forwarded-For": "198.51.100.1"}
    assert await me.statuses(*urls, **first) == [200, 200, 429]
    assert await me.statuses(*urls[:2], **{"X-Forwarded-For": "203.0.113.7, 198.51.100.2"}) == [200, 200]


async def test_an_untrusted_peer_s_forwarded_for_is_ignored(proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, server={"trusted_proxies": ["10.0.0.0/8"]},
                     limits={"originals": {"per_client": "2/min"}})
    answers = [(await me.get(me.url(key), **{"X-Forwarded-For": f"198.51.100.{n}"}))[0]
               for n, key in enumerate(("a.png", "b.png", "c.png"))]
    assert answers == [200, 200, 429]  # all three are 127.0.0.1's, whatever they claim


async def test_the_transforms_budget_counts_renders_not_hits_or_304s(
        proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, transform={"workers": 1},
                     limits={"transforms": {"per_key": "2/min"}, "originals": {"per_key": "100/min"}})
    w10, w11, w12 = (me.url("a.png", w=str(w)) for w in (10, 11, 12))
    status, first, _ = await me.get(w10)
    assert (status, first["X-Cache"]) == (200, "MISS")
    for _ in range(5):
        status, again, _ = await me.get(w10)
        assert (status, again["X-Cache"]) == (200, "HIT")
    assert (await me.get(w10, **{"If-None-Match": first["ETag"]}))[0] == 304
    status, second, _ = await me.get(w11)
    assert (status, second["X-Cache"]) == (200, "MISS")
    status, headers, body = await me.get(w12)  # a third render: over the budget
    assert (status, headers["Retry-After"], body and body["error"]) == (429, "30", "rate_limited")
    assert body is not None
    assert body["message"] == "Too many image renders for URLs signed with this key; retry in 30 s."
    assert (await me.get(w11))[1]["X-Cache"] == "HIT"  # rendered ones are still served
    assert await me.statuses(me.url("a.png"), me.url("b.png")) == [200, 200]  # originals: their own budget


async def test_a_waiter_for_an_over_budget_render_renders_with_its_own_budget(
        proxy: ProxyFactory, blackhole: Blackhole) -> None:
    """k2's render of a variant is refused (its budget is spent) while k1 waits for that very
    render: k1 does not share k2's 429, it renders with its own budget. A shared store that
    never answers (2 s until the miss) holds k2's render open while k1 arrives."""
    store = source_table(blackhole.endpoint, "variants", connect_timeout=1, read_timeout=1, max_attempts=1)
    client = await proxy(auth={"keys": {"k1": SIGNING_KEY, "k2": OTHER_KEY}}, transform={"workers": 1},
                         cache={"store": store}, limits={"transforms": {"per_key": "1/h"}})
    clock = ManualClock(time.time())  # the app keeps the real time; the signers sign at it
    one, two = Asker(client, clock), Asker(client, clock, OTHER_KEY, "k2")
    assert (await two.get(two.url("a.png", w="20")))[0] == 200  # k2's one render this hour
    over = asyncio.create_task(two.get(two.url("a.png", w="30")))
    await asyncio.sleep(0.5)  # k2's render waits for the store; k1 joins it as a waiter
    status, headers, _ = await one.get(one.url("a.png", w="30"))
    assert ((await over)[0], status) == (429, 200)
    assert headers["X-Cache"] == "MISS"  # rendered for k1, once k2's render was refused


async def test_the_originals_budget_counts_every_request_a_304_too(
        proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, limits={"originals": {"per_signature": "2/min"}})
    url = me.url("a.png")
    status, headers, _ = await me.get(url)
    assert status == 200
    assert (await me.get(url, **{"If-None-Match": headers["ETag"]}))[0] == 304
    assert (await me.get(url, **{"If-None-Match": headers["ETag"]}))[0] == 429


async def test_a_bucket_refills_with_the_clock(proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock, limits={"originals": {"per_signature": "2/min"}})
    url = me.url("a.png")
    assert await me.statuses(url, url, url) == [200, 200, 429]
    clock.advance(29)
    status, headers, _ = await me.get(url)
    assert (status, headers["Retry-After"]) == (429, "1")
    clock.advance(1)
    assert await me.statuses(url, url) == [200, 429]
    clock.advance(60)  # a whole period: a full bucket again
    assert await me.statuses(url, url, url) == [200, 200, 429]


async def test_refusals_are_counted_in_the_metrics_and_the_access_log(
        proxy: ProxyFactory, clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    me = await asker(proxy, clock, limits={"originals": {"per_signature": "1/min", "per_sub": "5/min"}})
    url = me.url("a.png", sub="alice")
    with caplog.at_level(logging.INFO, logger="imgproxy.access"):
        assert await me.statuses(url, url, url, url) == [200, 429, 429, 429]
    lines = [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]
    assert len(lines) == 4
    assert "limited=" not in lines[0]
    assert all(" status=429 " in line and " limited=originals/signature" in line for line in lines[1:])
    signature = url.rpartition("sig=")[2]
    assert not any(signature in r.getMessage() for r in caplog.records)
    assert me.client.app is not None
    async with me.client.session.get(me.client.app[METRICS_URL]) as response:
        text = await response.text()
    counted = re.search(r'^imgproxy_rate_limited_total\{budget="originals",dimension="signature"\} (\S+)$',
                        text, re.MULTILINE)
    assert counted is not None
    assert float(counted.group(1)) == 3.0
    assert 'dimension="sub"' not in text  # the refused requests charged the viewer nothing


async def test_without_limits_nothing_is_refused(proxy: ProxyFactory, clock: ManualClock) -> None:
    me = await asker(proxy, clock)
    url = me.url("a.png")
    assert await me.statuses(*[url] * 20) == [200] * 20
