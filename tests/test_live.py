"""A reloaded config in one serving process (``process.reload.install`` -> ``web.live.Live``):
the per-request settings a reload changes, through the whole stack on moto. The SIGHUP and the
supervisor's pipe are test_reload.py's; here the new config is installed directly."""

from __future__ import annotations

from typing import Any

import aiohttp
from processes import PHOTO, PHOTO_KEY
from support import ProxyClient, ProxyFactory, metric_samples

from imgproxy.auth.signing import UrlSigner
from imgproxy.process.reload import install
from imgproxy.web.appkeys import LIVE, METRICS_URL


async def photo_client(proxy: ProxyFactory, s3: Any, bucket: str, **sections: Any) -> ProxyClient:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    return await proxy(**sections)


async def reload_into(client: ProxyClient, proxy: ProxyFactory, version: str, **sections: Any) -> None:
    assert client.app is not None
    await install(client.app, proxy.config(**sections), version)


async def test_a_reload_changes_cache_control_for_new_requests(proxy: ProxyFactory, s3: Any, bucket: str,
                                                               signer: UrlSigner) -> None:
    client = await photo_client(proxy, s3, bucket, source={"delivery": {"mode": "stream"}})
    url = signer.sign("photos", PHOTO_KEY)
    assert (await client.get(url)).headers["Cache-Control"] == "private, max-age=3600"
    await reload_into(client, proxy, "v2",
                      source={"delivery": {"mode": "stream"}, "cache_control": "no-store"})
    assert (await client.get(url)).headers["Cache-Control"] == "no-store"


async def test_a_reload_changes_the_delivery_mode(proxy: ProxyFactory, s3: Any, bucket: str,
                                                  signer: UrlSigner) -> None:
    client = await photo_client(proxy, s3, bucket, source={"delivery": {"mode": "stream"}})
    url = signer.sign("photos", PHOTO_KEY)
    assert (await client.get(url)).headers["X-Delivery"] == "stream"
    await reload_into(client, proxy, "v2", source={"delivery": {"mode": "redirect"}})
    response = await client.get(url, allow_redirects=False)
    assert response.status == 302
    assert response.headers["X-Delivery"] == "redirect"


async def test_a_reload_changes_the_transform_limits(proxy: ProxyFactory, s3: Any, bucket: str,
                                                     signer: UrlSigner) -> None:
    client = await photo_client(proxy, s3, bucket, transform={"workers": 1})
    url = signer.sign("photos", PHOTO_KEY, params={"w": "50"})
    assert (await client.get(url)).status == 200
    await reload_into(client, proxy, "v2", transform={"workers": 1, "max_width": 40})
    response = await client.get(url)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_parameter"


async def test_a_reload_changes_the_keys_but_not_the_settings_a_request_already_holds(
        proxy: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner) -> None:
    client = await photo_client(proxy, s3, bucket)
    assert client.app is not None
    held = client.app[LIVE].current  # what a request that began now would hold to its end
    await reload_into(client, proxy, "v2", auth={"keys": {"k9": "x" * 40}})
    assert list(held.auth.keys) == ["k1"]
    assert list(client.app[LIVE].current.auth.keys) == ["k9"]
    response = await client.get(signer.sign("photos", PHOTO_KEY))
    assert response.status == 403
    assert (await response.json())["error"] == "unknown_key"


async def test_the_config_info_metric_names_the_version_in_force(proxy: ProxyFactory, s3: Any,
                                                                 bucket: str) -> None:
    client = await photo_client(proxy, s3, bucket)
    assert client.app is not None
    first = client.app[LIVE].current.version
    await reload_into(client, proxy, "0123456789ab", server={"log_keys": True})
    async with aiohttp.ClientSession() as session, session.get(client.app[METRICS_URL]) as response:
        samples = metric_samples(await response.text())
    assert samples[("imgproxy_config_info", frozenset({("version", "0123456789ab")}))] == 1
    assert samples[("imgproxy_config_info", frozenset({("version", first)}))] == 0


async def test_a_reload_changes_the_rate_limits_and_keeps_what_the_buckets_counted(
        proxy: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner) -> None:
    client = await photo_client(proxy, s3, bucket, limits={"originals": {"per_key": "3/h"}})
    urls = [signer.sign("photos", PHOTO_KEY, sub=f"v{i}") for i in range(6)]
    assert [(await client.get(url)).status for url in urls[:2]] == [200, 200]
    await reload_into(client, proxy, "v2", limits={"originals": {"per_key": "2/h"}})
    tightened = await client.get(urls[2])
    assert tightened.status == 429  # 2 already counted against the new 2/h
    assert (await tightened.json())["error"] == "rate_limited"
    await reload_into(client, proxy, "v3")  # no [limits]: unlimited again
    assert [(await client.get(url)).status for url in urls[3:]] == [200, 200, 200]
