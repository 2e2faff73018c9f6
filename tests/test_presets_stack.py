"""Presets through the whole stack: ``[transform.presets.NAME]`` rendered by real workers from a
photo on moto, ``allow_override``, a preset edited by a reload, and the ``presets_only`` keys,
tokens, ``POST /sign`` items and cookie grants."""

from __future__ import annotations

import io
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from photos import photo_jpeg
from PIL import Image
from support import SIGNING_KEY, TOKEN, TOKENS, ProxyFactory
from yarl import URL

from imgproxy.auth.grants import COOKIE, grant_link, unseal
from imgproxy.auth.signing import UrlSigner
from imgproxy.process.reload import install

KEY = "employees/ada.jpg"
PRESETS: dict[str, Any] = {
    "thumb": {"w": 96, "h": 96, "fit": "cover", "fmt": "png", "allow_override": ["dpr"]},
    "card": {"w": 200, "fmt": "jpeg", "q": 70},
}
BI_TOKEN = "bi-tool-token-0123456789abcdef0123456789ab"
BI_SIGN_TOKEN = "bi-sign-token-0123456789abcdef0123456789ab"
DASH_TOKEN = "dash-sign-token-0123456789abcdef012345678"
GRANT_COOKIE = "imgproxy-grant"  # auth.grants.secure = false on the loopback test server
Client = TestClient[Any, Any]


def transform(**presets: Any) -> dict[str, Any]:
    return {"workers": 1, "presets": {**PRESETS, **presets}}


@pytest.fixture
def photo(s3: Any, bucket: str) -> bytes:
    body = photo_jpeg(400, 300)
    s3.put_object(Bucket=bucket, Key=KEY, Body=body, ContentType="image/jpeg")
    return body


async def rendered(response: ClientResponse) -> tuple[str, tuple[int, int]]:
    """A 200's media type and the pixel size of its decoded body."""
    assert response.status == 200, await response.text()
    with Image.open(io.BytesIO(await response.read())) as image:
        return response.headers["Content-Type"], image.size


async def refused(response: ClientResponse) -> tuple[int, str, str]:
    body = await response.json()
    return response.status, body["error"], body["message"]


# --- preset=NAME ------------------------------------------------------------------------------

async def test_a_preset_renders_its_definition(proxy: ProxyFactory, photo: bytes, signer: UrlSigner) -> None:
    client = await proxy(transform=transform())
    assert await rendered(await client.get(signer.sign("photos", KEY, params={"preset": "thumb"}))) == \
        ("image/png", (96, 96))
    assert await rendered(await client.get(signer.sign("photos", KEY, params={"preset": "card"}))) == \
        ("image/jpeg", (200, 150))


async def test_a_param_the_preset_allows_overrides_it(proxy: ProxyFactory, photo: bytes,
                                                      signer: UrlSigner) -> None:
    client = await proxy(transform=transform())
    url = signer.sign("photos", KEY, params={"preset": "thumb", "dpr": "2"})
    assert await rendered(await client.get(url)) == ("image/png", (192, 192))


@pytest.mark.parametrize(("preset", "param", "value"), [
    ("thumb", "w", "300"),      # set by the preset, not in allow_override
    ("thumb", "fmt", "jpeg"),   # set by the preset
    ("thumb", "q", "50"),       # not set by the preset, not in allow_override
    ("card", "dpr", "2"),       # card allows nothing
])
async def test_a_param_the_preset_does_not_allow_is_400_naming_it(
        proxy: ProxyFactory, photo: bytes, signer: UrlSigner, preset: str, param: str, value: str) -> None:
    client = await proxy(transform=transform())
    response = await client.get(signer.sign("photos", KEY, params={"preset": preset, param: value}))
    status, code, message = await refused(response)
    assert (status, code) == (400, "invalid_parameter")
    assert f"'{param}'" in message
    assert f"preset={preset}" in message


async def test_an_unknown_preset_is_400(proxy: ProxyFactory, photo: bytes, signer: UrlSigner) -> None:
    client = await proxy(transform=transform())
    status, code, message = await refused(await client.get(
        signer.sign("photos", KEY, params={"preset": "huge"})))
    assert (status, code) == (400, "invalid_parameter")
    assert "'huge'" in message
    assert "card, thumb" in message


async def test_editing_a_preset_changes_the_etag_and_the_render_of_the_same_url(
        proxy: ProxyFactory, photo: bytes, signer: UrlSigner) -> None:
    client = await proxy(transform=transform())
    url = signer.sign("photos", KEY, params={"preset": "card"})
    first = await client.get(url)
    assert await rendered(first) == ("image/jpeg", (200, 150))
    etag = first.headers["ETag"]
    assert (await client.get(url, headers={"If-None-Match": etag})).status == 304
    assert client.app is not None
    edited = transform(card={"w": 120, "fmt": "jpeg", "q": 70})
    await install(client.app, proxy.config(transform=edited), "v2")
    second = await client.get(url)
    assert await rendered(second) == ("image/jpeg", (120, 90))  # no stale render from the cache
    assert second.headers["ETag"] != etag
    assert (await client.get(url, headers={"If-None-Match": etag})).status == 200
    assert second.headers["X-Cache"] == "MISS"


async def test_two_presets_with_one_definition_share_a_variant(proxy: ProxyFactory, photo: bytes,
                                                               signer: UrlSigner) -> None:
    client = await proxy(transform=transform(same={"w": 200, "fmt": "jpeg", "q": 70}))
    card = await client.get(signer.sign("photos", KEY, params={"preset": "card"}))
    same = await client.get(signer.sign("photos", KEY, params={"preset": "same"}))
    assert card.headers["ETag"] == same.headers["ETag"]
    assert same.headers["X-Cache"] == "HIT"


# --- presets_only keys and tokens -----------------------------------------------------------------

def presets_only_key() -> dict[str, Any]:
    return {"keys": {"k1": {"secret": SIGNING_KEY, "presets_only": True}}}


async def test_a_presets_only_key_serves_presets_and_refuses_other_params(
        proxy: ProxyFactory, photo: bytes, signer: UrlSigner) -> None:
    client = await proxy(transform=transform(), auth=presets_only_key())
    status, code, message = await refused(await client.get(signer.sign("photos", KEY, params={"w": "96"})))
    assert (status, code) == (403, "params_not_allowed")
    assert "'w'" in message
    # Beside a preset, too, even one the preset would allow.
    response = await client.get(signer.sign("photos", KEY, params={"preset": "thumb", "dpr": "2"}))
    assert (await refused(response))[:2] == (403, "params_not_allowed")
    url = signer.sign("photos", KEY, params={"preset": "thumb"})
    assert await rendered(await client.get(url)) == ("image/png", (96, 96))
    original = await client.get(signer.sign("photos", KEY))  # the key's scopes allow the original
    assert (original.status, await original.read()) == (200, photo)


async def test_a_key_without_presets_only_may_sign_any_transform(proxy: ProxyFactory, photo: bytes,
                                                                  signer: UrlSigner) -> None:
    client = await proxy(transform=transform(), auth={"keys": {"k1": {"secret": SIGNING_KEY}}})
    assert await rendered(await client.get(signer.sign("photos", KEY, params={"w": "96"}))) == \
        ("image/jpeg", (96, 72))


async def test_a_presets_only_token_serves_presets_and_refuses_other_params(
        proxy: ProxyFactory, photo: bytes) -> None:
    tokens = {**TOKENS, "bi": {"token": BI_TOKEN, "scopes": ["*"], "presets_only": True}}
    client = await proxy(transform=transform(), auth={"tokens": tokens})
    bi, ops = {"Authorization": f"Bearer {BI_TOKEN}"}, {"Authorization": f"Bearer {TOKEN}"}
    assert (await refused(await client.get(f"/img/photos/{KEY}?w=96", headers=bi)))[:2] == \
        (403, "params_not_allowed")
    assert await rendered(await client.get(f"/img/photos/{KEY}?preset=thumb", headers=bi)) == \
        ("image/png", (96, 96))
    assert await rendered(await client.get(f"/img/photos/{KEY}?w=96", headers=ops)) == \
        ("image/jpeg", (96, 72))


# --- POST /sign ------------------------------------------------------------------------------------

def sign_tokens() -> dict[str, Any]:
    return {"tokens": {
        **TOKENS,
        "dash": {"token": DASH_TOKEN, "sign_scopes": ["photos:employees/*"]},
        "bi": {"token": BI_SIGN_TOKEN, "sign_scopes": ["photos:employees/*"], "presets_only": True},
    }}


def item(**params: str) -> dict[str, Any]:
    return {"source": "photos", "key": KEY, "params": params}


async def sign(client: Client, token: str, items: list[dict[str, Any]]) -> list[dict[str, str]]:
    response = await client.post("/sign", json=items, headers={"Authorization": f"Bearer {token}"})
    assert response.status == 200, await response.text()
    answer: list[dict[str, str]] = (await response.json())["items"]
    return answer


async def test_sign_checks_a_preset_like_a_url_and_its_url_renders_it(proxy: ProxyFactory,
                                                                       photo: bytes) -> None:
    client = await proxy(transform=transform(), auth=sign_tokens())
    good, unknown, overridden, allowed = await sign(client, DASH_TOKEN, [
        item(preset="thumb"), item(preset="huge"), item(preset="thumb", w="300"),
        item(preset="thumb", dpr="2")])
    assert unknown["error"] == overridden["error"] == "invalid_parameter"
    assert "'w'" in overridden["message"]
    assert await rendered(await client.session.get(URL(good["url"], encoded=True))) == ("image/png", (96, 96))
    assert await rendered(await client.session.get(URL(allowed["url"], encoded=True))) == \
        ("image/png", (192, 192))


async def test_a_presets_only_token_signs_presets_only(proxy: ProxyFactory, photo: bytes) -> None:
    client = await proxy(transform=transform(), auth=sign_tokens())
    by_preset, sized, with_dpr = await sign(client, BI_SIGN_TOKEN, [
        item(preset="thumb"), item(w="96"), item(preset="thumb", dpr="2")])
    assert sized["error"] == with_dpr["error"] == "params_not_allowed"
    query = parse_qs(urlsplit(by_preset["url"]).query)
    assert set(query) - {"exp", "iat", "kid", "sig"} == {"preset"}
    assert await rendered(await client.session.get(URL(by_preset["url"], encoded=True))) == \
        ("image/png", (96, 96))
    # The same items from a token without presets_only are signed.
    assert all("url" in answer for answer in await sign(client, DASH_TOKEN, [item(w="96")]))


# --- cookie grants and plain URLs -----------------------------------------------------------------

async def grant_for(client: Client, token: str) -> str:
    client.session.cookie_jar.clear()
    response = await client.post("/session", json={"sub": "emp-42"},
                                 headers={"Authorization": f"Bearer {token}"})
    assert response.status == 204, await response.text()
    client.session.cookie_jar.clear()
    return response.cookies[GRANT_COOKIE].value


async def plain(client: Client, cookie: str, query: str) -> ClientResponse:
    client.session.cookie_jar.clear()
    return await client.get(f"/img/photos/{KEY}?{query}", headers={"Cookie": f"{GRANT_COOKIE}={cookie}"})


@pytest.fixture
async def granting(proxy: ProxyFactory, photo: bytes) -> Client:
    auth = {**sign_tokens(), "grants": {"secure": False}, "plain_widths": [96]}
    return await proxy(transform=transform(), auth=auth)


async def test_a_users_plain_urls_may_name_a_preset_beside_the_plain_widths(granting: Client) -> None:
    cookie = await grant_for(granting, DASH_TOKEN)
    assert await rendered(await plain(granting, cookie, "preset=thumb")) == ("image/png", (96, 96))
    assert await rendered(await plain(granting, cookie, "preset=thumb&dpr=2")) == ("image/png", (192, 192))
    assert await rendered(await plain(granting, cookie, "w=96")) == ("image/jpeg", (96, 72))
    assert (await refused(await plain(granting, cookie, "w=300")))[:2] == (403, "params_not_allowed")
    assert (await refused(await plain(granting, cookie, "preset=huge")))[:2] == (400, "invalid_parameter")


async def test_a_grant_minted_by_a_presets_only_token_is_presets_only(granting: Client) -> None:
    cookie = await grant_for(granting, BI_SIGN_TOKEN)
    sealed = unseal(cookie, {"k1": SIGNING_KEY.encode()}, COOKIE, now=time.time(),
                    clock_skew=60, max_life=86400)
    assert sealed.presets_only
    assert (await refused(await plain(granting, cookie, "w=96")))[:2] == (403, "params_not_allowed")
    assert await rendered(await plain(granting, cookie, "preset=thumb")) == ("image/png", (96, 96))


async def test_a_grant_link_minted_presets_only_gives_a_presets_only_cookie(granting: Client) -> None:
    cookies = []
    for presets_only in (True, False):
        link = urlsplit(grant_link(SIGNING_KEY, "k1", "emp-7", ["photos:employees/*"], base_url="http://x",
                                   presets_only=presets_only))
        granting.session.cookie_jar.clear()
        response = await granting.get(f"{link.path}?{link.query}")
        assert response.status == 204, await response.text()
        cookies.append(response.cookies[GRANT_COOKIE].value)
    limited, unlimited = cookies
    assert (await refused(await plain(granting, limited, "w=96")))[:2] == (403, "params_not_allowed")
    assert await rendered(await plain(granting, limited, "preset=thumb")) == ("image/png", (96, 96))
    assert await rendered(await plain(granting, unlimited, "w=96")) == ("image/jpeg", (96, 72))


async def test_a_grant_sealed_with_a_presets_only_key_is_presets_only(proxy: ProxyFactory,
                                                                    photo: bytes) -> None:
    auth = {**sign_tokens(), **presets_only_key(), "grants": {"secure": False}, "plain_widths": [96]}
    client = await proxy(transform=transform(), auth=auth)
    cookie = await grant_for(client, DASH_TOKEN)  # the token is not presets-only; the key is
    assert (await refused(await plain(client, cookie, "w=96")))[:2] == (403, "params_not_allowed")
    assert await rendered(await plain(client, cookie, "preset=thumb")) == ("image/png", (96, 96))
