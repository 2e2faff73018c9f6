"""Issue 13 points 1, 2 and 5 over HTTP: keys with scopes and max_ttl, durable URLs and their
capped caching, revocations from the config, and who-looked-at-what in the access log."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import hdrs
from photos import photo_jpeg
from support import SIGNING_KEY, TOKEN, ProxyFactory, source_table

from imgproxy.auth.signing import UrlSigner, sign_url
from imgproxy.protocol.accesslog import key_hash
from imgproxy.protocol.paths import image_path
from imgproxy.web import appkeys

NOW = 1_900_000_000.0
JPEG = b"\xff\xd8\xff\xe0" + b"y" * 700
BI_KEY = "bi-signing-key-0123456789abcdef-0123456789"
VAULT_KEY = "vault-signing-key-0123456789abcdef-012345"
KEYS = {
    "k1": SIGNING_KEY,
    "bi": {"secret": BI_KEY, "scopes": ["photos:employees/*"], "durable": True, "max_ttl": "1h"},
    "vault": {"secret": VAULT_KEY, "scopes": ["photos:ids/*"]},
}
HOUR = 3600


@pytest.fixture
def limited(proxy: ProxyFactory, s3: Any, bucket: str) -> ProxyFactory:
    for key in ("employees/ada.jpg", "employees/bob smith.jpg", "ids/ada.jpg", "other/x.jpg"):
        s3.put_object(Bucket=bucket, Key=key, Body=JPEG, ContentType="image/jpeg")
    return proxy.preset(auth={"keys": KEYS, "sign_with": "k1"}, clock=lambda: NOW,
                        source={"cache_control": "public, max-age=86400, immutable"})


def put_photo(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="employees/real.jpg", Body=photo_jpeg(320, 240),
                  ContentType="image/jpeg")


def bi(key: str = "employees/ada.jpg", **options: Any) -> str:
    return UrlSigner(BI_KEY, "bi").sign("photos", key, now=NOW, **options)


async def error_of(response: Any) -> str:
    return str((await response.json())["error"])


# --- 1. keys limited by scope and max_ttl --------------------------------------------------------

async def test_a_scoped_key_opens_its_scope(limited: ProxyFactory) -> None:
    client = await limited()
    response = await client.get(bi(ttl=600))
    assert response.status == 200
    assert await response.read() == JPEG


@pytest.mark.parametrize("key", ["ids/ada.jpg", "other/x.jpg", "employees", "employee/ada.jpg"])
async def test_a_path_outside_the_keys_scopes_is_403_out_of_scope(limited: ProxyFactory, key: str) -> None:
    client = await limited()
    response = await client.get(bi(key, ttl=600))
    assert response.status == 403
    assert await error_of(response) == "out_of_scope"


async def test_out_of_scope_wins_over_a_wrong_signature(limited: ProxyFactory) -> None:
    client = await limited()
    url = bi("ids/ada.jpg", ttl=600)
    response = await client.get(url[: url.index("&sig=")] + "&sig=" + "A" * 43)
    assert await error_of(response) == "out_of_scope"
    inside = bi(ttl=600)
    wrong = await client.get(inside[: inside.index("&sig=")] + "&sig=" + "A" * 43)
    assert await error_of(wrong) == "invalid_signature"


async def test_another_source_is_out_of_the_keys_scope(limited: ProxyFactory, moto_endpoint: str,
                                                       bucket: str) -> None:
    client = await limited(sources={"archive": source_table(moto_endpoint, bucket)})
    url = UrlSigner(BI_KEY, "bi").sign("archive", "employees/ada.jpg", now=NOW, ttl=600)
    assert await error_of(await client.get(url)) == "out_of_scope"


async def test_a_keys_own_max_ttl_bounds_exp(limited: ProxyFactory) -> None:
    client = await limited()
    assert (await client.get(bi(ttl=HOUR))).status == 200
    response = await client.get(bi(ttl=2 * HOUR))  # within auth.max_ttl (1d), beyond the key's 1h
    assert response.status == 403
    assert await error_of(response) == "expiry_too_far"


async def test_the_plain_key_form_still_opens_everything(limited: ProxyFactory) -> None:
    client = await limited()
    for key in ("ids/ada.jpg", "other/x.jpg"):
        url = UrlSigner(SIGNING_KEY, "k1").sign("photos", key, now=NOW, ttl=600)
        assert (await client.get(url)).status == 200


# --- 2. durable URLs -------------------------------------------------------------------------------

async def test_a_durable_url_has_no_exp_and_works_long_after(limited: ProxyFactory) -> None:
    url = UrlSigner(BI_KEY, "bi").sign("photos", "employees/ada.jpg", now=NOW - 400 * 86400, durable=True)
    query = parse_qs(urlsplit(url).query)
    assert "exp" not in query
    assert "iat" in query
    client = await limited()
    response = await client.get(url)
    assert response.status == 200
    assert await response.read() == JPEG


async def test_a_durable_answer_is_private_and_capped(limited: ProxyFactory) -> None:
    client = await limited(auth={"keys": KEYS, "sign_with": "k1", "durable_max_age": "10m"})
    response = await client.get(bi(durable=True))
    assert response.headers[hdrs.CACHE_CONTROL] == "private, max-age=600"
    etag = response.headers[hdrs.ETAG]
    revalidated = await client.get(bi(durable=True), headers={hdrs.IF_NONE_MATCH: etag})
    assert revalidated.status == 304
    assert revalidated.headers[hdrs.CACHE_CONTROL] == "private, max-age=600"
    # The same object through a URL with exp keeps the source's policy.
    plain = await client.get(bi(ttl=600))
    assert plain.headers[hdrs.CACHE_CONTROL] == "public, max-age=86400, immutable"


async def test_a_durable_transform_is_capped_too(limited: ProxyFactory, s3: Any, bucket: str) -> None:
    put_photo(s3, bucket)
    client = await limited(transform={"prestart_workers": False, "workers": 1})
    response = await client.get(bi("employees/real.jpg", durable=True, params={"w": "64"}))
    assert response.status == 200, await response.text()
    assert response.headers[hdrs.CACHE_CONTROL] == "private, max-age=3600"


async def test_a_durable_redirect_and_its_presigned_url_are_capped(limited: ProxyFactory) -> None:
    client = await limited(auth={"keys": KEYS, "sign_with": "k1", "durable_max_age": "15m"},
                           source={"cache_control": "public, max-age=86400",
                                   "delivery": {"mode": "redirect", "presign_window": "1h",
                                                "presign_ttl": "2h"}})
    response = await client.get(bi(durable=True), allow_redirects=False)
    assert response.status == 302
    max_age = int(response.headers[hdrs.CACHE_CONTROL].split("max-age=")[1])
    assert response.headers[hdrs.CACHE_CONTROL].startswith("private, ")
    assert max_age <= 450  # the window is at most half the cap
    presigned = parse_qs(urlsplit(response.headers[hdrs.LOCATION]).query)
    assert int(presigned["X-Amz-Expires"][0]) <= 900
    assert presigned["response-cache-control"] == ["private, max-age=900"]
    # A URL with exp: the configured window and lifetime.
    plain = await client.get(bi(ttl=600), allow_redirects=False)
    assert int(parse_qs(urlsplit(plain.headers[hdrs.LOCATION]).query)["X-Amz-Expires"][0]) > 900


async def test_a_key_that_is_not_durable_cannot_make_durable_urls(limited: ProxyFactory) -> None:
    client = await limited()
    url = UrlSigner(VAULT_KEY, "vault").sign("photos", "ids/ada.jpg", now=NOW, durable=True)
    response = await client.get(url)
    assert response.status == 400
    assert await error_of(response) == "invalid_parameter"


async def test_an_iat_in_the_future_is_400(limited: ProxyFactory) -> None:
    client = await limited()
    ahead = sign_url("photos", "employees/ada.jpg", secret=BI_KEY, exp=None, iat=int(NOW) + 61, kid="bi")
    assert (await client.get(ahead)).status == 400
    within_skew = sign_url("photos", "employees/ada.jpg", secret=BI_KEY, exp=None, iat=int(NOW) + 59,
                           kid="bi")
    assert (await client.get(within_skew)).status == 200


async def test_stripping_exp_from_a_durable_keys_url_breaks_its_signature(limited: ProxyFactory) -> None:
    client = await limited()
    url = bi(ttl=600)
    exp = parse_qs(urlsplit(url).query)["exp"][0]
    response = await client.get(url.replace(f"exp={exp}&", ""))
    assert await error_of(response) == "invalid_signature"


# --- 2. revocations from the config ----------------------------------------------------------------

def revoking(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"keys": KEYS, "sign_with": "k1", "revocations": list(entries)}


async def test_a_kid_revoked_before_a_time_refuses_older_urls_only(limited: ProxyFactory) -> None:
    client = await limited(auth=revoking({"kid": "bi", "before": int(NOW) - 86400}))
    old = UrlSigner(BI_KEY, "bi").sign("photos", "employees/ada.jpg", now=NOW - 2 * 86400, durable=True)
    response = await client.get(old)
    assert response.status == 403
    assert await error_of(response) == "revoked"
    assert (await client.get(bi(durable=True))).status == 200


async def test_a_kid_revocation_applies_to_urls_without_iat_by_their_exp(limited: ProxyFactory) -> None:
    """No iat: revoked when exp - the key's max_ttl - clock_skew lies before the cutoff."""
    client = await limited(auth=revoking({"kid": "bi", "before": "2030-03-17T17:46:40Z"}))  # NOW
    early = sign_url("photos", "employees/ada.jpg", secret=BI_KEY, exp=int(NOW) + HOUR, kid="bi")
    assert await error_of(await client.get(early)) == "revoked"  # could have been signed before NOW
    late = sign_url("photos", "employees/ada.jpg", secret=BI_KEY, exp=int(NOW) + 2 * HOUR, kid="bi")
    assert await error_of(await client.get(late)) == "expiry_too_far"


async def test_a_revoked_scope_refuses_every_signed_url_inside_it(limited: ProxyFactory) -> None:
    client = await limited(auth=revoking({"scope": "photos:employees/bob*"}))
    assert await error_of(await client.get(bi("employees/bob smith.jpg", ttl=60))) == "revoked"
    k1 = UrlSigner(SIGNING_KEY, "k1").sign("photos", "employees/bob smith.jpg", now=NOW, ttl=60)
    assert await error_of(await client.get(k1)) == "revoked"
    assert (await client.get(bi("employees/ada.jpg", ttl=60))).status == 200
    token = await client.get(image_path("photos", "employees/bob smith.jpg"),
                             headers={hdrs.AUTHORIZATION: f"Bearer {TOKEN}"})
    assert token.status == 200  # revocations are about URLs; a token is revoked by removing it


async def test_one_revoked_signature_refuses_that_url_only(limited: ProxyFactory) -> None:
    url = bi(durable=True)
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    client = await limited(auth=revoking({"sig": sig}))
    assert await error_of(await client.get(url)) == "revoked"
    assert (await client.get(bi(durable=True, sub="someone"))).status == 200


async def test_a_sub_revoked_before_a_time(limited: ProxyFactory) -> None:
    client = await limited(auth=revoking({"sub": "bob@example.com", "before": int(NOW) + 1}))
    assert await error_of(await client.get(bi(ttl=600, sub="bob@example.com"))) == "revoked"
    assert (await client.get(bi(ttl=600, sub="ada@example.com"))).status == 200
    assert (await client.get(bi(ttl=600))).status == 200


# --- 5. who looked at what -------------------------------------------------------------------------

async def test_the_access_log_names_the_key_and_the_viewer(limited: ProxyFactory,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    client = await limited()
    with caplog.at_level(logging.INFO, logger="imgproxy.access"):
        assert (await client.get(bi(ttl=600, sub="Zoë Ünal <zoe@example.com>"))).status == 200
        assert (await client.get(image_path("photos", "employees/ada.jpg"),
                                 headers={hdrs.AUTHORIZATION: f"Bearer {TOKEN}"})).status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]
    expected_hash = key_hash(client.app[appkeys.LIVE].current.key_hash_secret, "photos", "employees/ada.jpg")
    assert " kid=bi " in lines[0]
    assert ' sub="Zoë Ünal <zoe@example.com>" ' in lines[0]
    assert f" key_hash={expected_hash} " in lines[0]
    assert "employees/ada" not in lines[0]
    assert " token=ops " in lines[1]
    assert " kid=" not in lines[1]
    assert " sub=" not in lines[1]
    assert BI_KEY not in "\n".join(lines)


async def test_the_key_hash_is_keyed_by_the_configured_secret(limited: ProxyFactory) -> None:
    one = (await limited(log={"key_hash_secret": "h" * 32})).app[appkeys.LIVE].current.key_hash_secret
    two = (await limited(log={"key_hash_secret": "i" * 32})).app[appkeys.LIVE].current.key_hash_secret
    assert key_hash(one, "photos", "a.jpg") != key_hash(two, "photos", "a.jpg")
    assert key_hash(one, "photos", "a.jpg") == key_hash(b"h" * 32, "photos", "a.jpg")


async def test_sub_and_iat_are_not_part_of_a_variants_etag(limited: ProxyFactory, s3: Any,
                                                           bucket: str) -> None:
    put_photo(s3, bucket)
    client = await limited(transform={"prestart_workers": False, "workers": 1})
    first = await client.get(bi("employees/real.jpg", ttl=600, params={"w": "64"}, sub="a"))
    second = await client.get(bi("employees/real.jpg", durable=True, params={"w": "64"}, sub="b"))
    assert first.status == second.status == 200
    assert first.headers[hdrs.ETAG] == second.headers[hdrs.ETAG]
    assert second.headers["X-Cache"] == "HIT"


# --- credentials that are almost right ----------------------------------------------------------

async def test_a_scoped_keys_url_relabelled_as_an_unscoped_kid_fails(limited: ProxyFactory) -> None:
    """Signed with bi's secret for a path outside bi's scopes, but claiming kid=k1 (which opens
    everything): the signature is checked with k1's secret and does not match."""
    client = await limited()
    forged = sign_url("photos", "ids/ada.jpg", secret=BI_KEY, exp=int(NOW) + 60, kid="k1")
    assert await error_of(await client.get(forged)) == "invalid_signature"


async def test_a_changed_sub_breaks_the_signature(limited: ProxyFactory) -> None:
    client = await limited()
    url = bi(ttl=600, sub="ada@example.com")
    assert await error_of(await client.get(url.replace("sub=ada%40", "sub=bob%40"))) == "invalid_signature"


@pytest.mark.parametrize("query", ["iat=12a", "iat=-5", "iat=", "sub=", "sub=a%0Ab"])
async def test_malformed_iat_or_sub_is_400_before_anything_else(limited: ProxyFactory, query: str) -> None:
    client = await limited()
    url = bi(durable=True)
    path, _, rest = url.partition("?")
    params = [p for p in rest.split("&") if not p.startswith(query.split("=")[0] + "=")]
    response = await client.get(path + "?" + "&".join([query, *params]))
    assert response.status == 400
    assert await error_of(response) == "invalid_parameter"


async def test_a_revoked_durable_url_never_reaches_s3(limited: ProxyFactory,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    url = bi(durable=True)
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    client = await limited(auth=revoking({"sig": sig}))
    with caplog.at_level(logging.INFO):
        response = await client.get(url)
    assert response.status == 403
    assert hdrs.ETAG not in response.headers
    assert not [r for r in caplog.records if r.name == "werkzeug"]  # moto saw no request
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("imgproxy"))
    assert "revoked" in ours
    assert sig not in ours  # the revoked signature is not logged (serve runs no aiohttp access log)
