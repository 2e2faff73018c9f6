"""The polled revocation object (auth.revocations_url) through the whole stack: a real moto bucket
of its own, read by the real aiobotocore client every second; the proxy's answers, its metrics and
its detailed readiness report while the object appears, changes and breaks."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest
from processes import PHOTO, PHOTO_KEY
from support import TOKEN, ProxyClient, ProxyFactory, metric_samples, source_table

from imgproxy.auth.signing import UrlSigner, parse_query
from imgproxy.config import Secret
from imgproxy.process.reload import install
from imgproxy.web.appkeys import LIVE, METRICS_URL

INTERVAL = 1.0  # auth.revocations_interval in these tests: its lower bound
SETTLE = 4 * INTERVAL  # how long a change may take to be in force (a poll, a parse, a build)
OBJECT_KEY = "bi/revocations.json"


@pytest.fixture
def revocations_bucket(s3: Any) -> Iterator[str]:
    """A bucket no source serves, for the revocation object (as a named role would write it)."""
    name = f"revocations-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    yield name
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])


Polled = Callable[..., Awaitable[ProxyClient]]


@pytest.fixture
def polled(proxy: ProxyFactory, moto_endpoint: str, revocations_bucket: str, s3: Any,
           bucket: str) -> Polled:
    """``await polled(auth={...})``: the proxy polling the revocation object every second."""
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    connection = source_table(moto_endpoint, revocations_bucket)
    del connection["bucket"]

    async def start(**auth: Any) -> ProxyClient:
        return await proxy(auth={"revocations_url": f"s3://{revocations_bucket}/{OBJECT_KEY}",
                                 "revocations_interval": INTERVAL, "revocations_s3": connection, **auth})

    return start


def write_list(s3: Any, bucket: str, entries: list[dict[str, Any]]) -> None:
    s3.put_object(Bucket=bucket, Key=OBJECT_KEY, Body=json.dumps({"revocations": entries}).encode())


def sig_of(url: str) -> str:
    return parse_query(url.partition("?")[2], 32)["sig"]


async def status_of(client: ProxyClient, url: str, headers: dict[str, str] | None = None) -> int:
    async with client.get(url.removeprefix("http://localhost"), headers=headers) as response:
        await response.read()
        return response.status


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = SETTLE) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


async def becomes(client: ProxyClient, url: str, status: int) -> None:
    async def check() -> bool:
        return await status_of(client, url) == status
    await eventually(check, f"{url} answers {status}")


async def scrape(client: ProxyClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    assert client.app is not None
    async with aiohttp.ClientSession() as session, session.get(client.app[METRICS_URL]) as response:
        return metric_samples(await response.text())


async def operators_readyz(client: ProxyClient) -> tuple[int, Any]:
    assert client.app is not None
    url = client.app[METRICS_URL].removesuffix("/metrics") + "/readyz"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


async def one_url_revoked(polled: Polled, signer: UrlSigner, s3: Any,
                          revocations_bucket: str) -> tuple[ProxyClient, str]:
    """A proxy whose polled list, revoking one URL, is in force; and that URL."""
    revoked = signer.sign("photos", PHOTO_KEY)
    write_list(s3, revocations_bucket, [{"sig": sig_of(revoked)}])
    client = await polled()
    await becomes(client, revoked, 403)
    return client, revoked


# --- before the first load: fail closed for signatures, tokens still work -----------------

async def test_until_the_list_first_loads_signed_urls_are_503_with_retry_after(
        polled: Polled, signer: UrlSigner) -> None:
    client = await polled()
    async with client.get(signer.sign("photos", PHOTO_KEY)) as response:
        assert response.status == 503
        assert (await response.json())["error"] == "not_ready"
        assert response.headers["Retry-After"]


async def test_until_the_list_first_loads_bearer_tokens_are_200(polled: Polled) -> None:
    client = await polled()
    url = "/img/photos/" + urllib.parse.quote(PHOTO_KEY)
    assert await status_of(client, url, {"Authorization": f"Bearer {TOKEN}"}) == 200


async def test_a_list_that_never_loaded_is_not_ready_and_says_why(polled: Polled) -> None:
    client = await polled()
    await eventually(lambda: _last_error_is(client, "not_found"), "the 404 is reported")
    status, report = await operators_readyz(client)
    assert status == 503
    assert report["revocations"]["loaded"] is False
    assert (await client.get("/readyz")).status == 503


async def _last_error_is(client: ProxyClient, kind: str) -> bool:
    _, report = await operators_readyz(client)
    return bool(report["revocations"]["last_error"] == kind)


async def test_signed_urls_work_once_the_object_appears(polled: Polled, signer: UrlSigner, s3: Any,
                                                        revocations_bucket: str) -> None:
    client = await polled()
    url = signer.sign("photos", PHOTO_KEY)
    assert await status_of(client, url) == 503
    write_list(s3, revocations_bucket, [])
    await becomes(client, url, 200)
    status, report = await operators_readyz(client)
    assert status == 200
    assert report["revocations"]["loaded"] is True


# --- a list that changes ------------------------------------------------------------------

async def test_a_url_revoked_in_the_object_is_403_within_an_interval(
        polled: Polled, signer: UrlSigner, s3: Any, revocations_bucket: str) -> None:
    write_list(s3, revocations_bucket, [])
    client = await polled()
    url, other = signer.sign("photos", PHOTO_KEY), signer.sign("photos", PHOTO_KEY, params={"w": "20"})
    await becomes(client, url, 200)
    write_list(s3, revocations_bucket, [{"sig": sig_of(url), "note": "leaked in a ticket"}])
    started = time.monotonic()
    await becomes(client, url, 403)
    assert time.monotonic() - started < SETTLE
    async with client.get(url) as response:
        assert (await response.json())["error"] == "revoked"
    assert await status_of(client, other) == 200


async def test_config_entries_and_polled_entries_both_count(
        polled: Polled, signer: UrlSigner, s3: Any, revocations_bucket: str) -> None:
    by_config, by_object = signer.sign("photos", PHOTO_KEY), signer.sign("photos", PHOTO_KEY, ttl=600)
    write_list(s3, revocations_bucket, [{"sig": sig_of(by_object)}])
    client = await polled(revocations=[{"sig": sig_of(by_config)}])
    await becomes(client, by_object, 403)
    assert await status_of(client, by_config) == 403
    assert await status_of(client, signer.sign("photos", PHOTO_KEY, ttl=900)) == 200


async def test_an_unchanged_list_is_not_loaded_again(polled: Polled, signer: UrlSigner, s3: Any,
                                                     revocations_bucket: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    write_list(s3, revocations_bucket, [])
    caplog.set_level(logging.INFO, "imgproxy.revocations")
    client = await polled()
    await becomes(client, signer.sign("photos", PHOTO_KEY), 200)
    await asyncio.sleep(3 * INTERVAL)  # three more polls, each a 304
    loads = [r for r in caplog.records if r.name == "imgproxy.revocations" and "loaded" in r.message]
    assert len(loads) == 1
    _, report = await operators_readyz(client)
    assert report["revocations"]["age_seconds"] < 2 * INTERVAL  # each 304 confirms the list


async def test_a_reload_keeps_the_polled_entries(polled: Polled, signer: UrlSigner, s3: Any,
                                                 revocations_bucket: str) -> None:
    client, revoked = await one_url_revoked(polled, signer, s3, revocations_bucket)
    assert client.app is not None
    running = client.app[LIVE].current.config
    keys = MappingProxyType({**running.auth.keys, "k9": Secret("y" * 40)})
    await install(client.app, replace(running, auth=replace(running.auth, keys=keys)), "v2")
    assert list(client.app[LIVE].current.auth.keys) == ["k1", "k9"]
    assert await status_of(client, revoked) == 403
    assert await status_of(client, UrlSigner("y" * 40, "k9").sign("photos", PHOTO_KEY)) == 200


# --- a list that breaks: the last good one stays ------------------------------------------

async def test_a_broken_object_keeps_the_last_good_list_and_counts_an_error(
        polled: Polled, signer: UrlSigner, s3: Any, revocations_bucket: str,
        caplog: pytest.LogCaptureFixture) -> None:
    client, revoked = await one_url_revoked(polled, signer, s3, revocations_bucket)
    fine = signer.sign("photos", PHOTO_KEY, ttl=600)
    caplog.set_level(logging.WARNING, "imgproxy.revocations")
    s3.put_object(Bucket=revocations_bucket, Key=OBJECT_KEY, Body=b'{"revocations": [{"sig": "no"}]}')
    await eventually(lambda: _last_error_is(client, "invalid"), "the bad object is reported")
    await asyncio.sleep(2 * INTERVAL)  # more failed polls: still one log line
    assert await status_of(client, revoked) == 403
    assert await status_of(client, fine) == 200
    samples = await scrape(client)
    assert samples[("imgproxy_revocations_load_errors_total", frozenset({("kind", "invalid")}))] >= 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "imgproxy.revocations"]
    assert len(warnings) == 1
    assert "revocations[0].sig" in warnings[0]
    assert "keeping the list loaded" in warnings[0]
    status, report = await operators_readyz(client)
    assert status == 200  # the last good list is in force
    assert report["revocations"]["loaded"] is True


async def test_a_deleted_object_keeps_the_last_good_list(polled: Polled, signer: UrlSigner, s3: Any,
                                                         revocations_bucket: str) -> None:
    client, revoked = await one_url_revoked(polled, signer, s3, revocations_bucket)
    s3.delete_object(Bucket=revocations_bucket, Key=OBJECT_KEY)
    await eventually(lambda: _last_error_is(client, "not_found"), "the 404 is reported")
    assert await status_of(client, revoked) == 403


# --- metrics ------------------------------------------------------------------------------

async def test_metrics_show_the_list_version_entries_and_age(polled: Polled, signer: UrlSigner, s3: Any,
                                                              revocations_bucket: str) -> None:
    url = signer.sign("photos", PHOTO_KEY)
    client = await polled()
    before = await scrape(client)
    assert before[("imgproxy_revocations_age_seconds", frozenset())] == float("inf")
    write_list(s3, revocations_bucket, [{"sig": sig_of(url)}, {"kid": "old", "before": 1}])
    await becomes(client, url, 403)
    samples = await scrape(client)
    assert samples[("imgproxy_revocations_entries", frozenset())] == 2
    assert samples[("imgproxy_revocations_age_seconds", frozenset())] < 2 * INTERVAL
    versions = [dict(labels)["version"] for (name, labels), value in samples.items()
                if name == "imgproxy_revocations_info" and value == 1]
    assert len(versions) == 1
    assert len(versions[0]) == 12
