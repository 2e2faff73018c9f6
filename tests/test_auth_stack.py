"""Every authorization outcome as a client sees it over HTTP, with a fixed clock where time matters.

Nothing touches S3 before authorization succeeds, so an unauthorized answer is the same whether
the object exists or not, and unknown sources are 404 only for authorized callers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, hdrs
from aiohttp.test_utils import TestClient
from support import OTHER_KEY, SCOPED_TOKEN, SIGNING_KEY, TOKEN, ProxyFactory, source_table

from imgproxy.auth.signing import UrlSigner
from imgproxy.protocol.paths import image_path

NOW = 1_900_000_000.0  # the patched clock: every signed URL here is judged at this instant
JPEG = b"\xff\xd8\xff\xe0" + b"x" * 500
DAY = 86400


def bearer(token: str) -> dict[str, str]:
    return {hdrs.AUTHORIZATION: f"Bearer {token}"}


@pytest.fixture
async def fixed(proxy: ProxyFactory, s3: Any, bucket: str) -> TestClient[Any, Any]:
    """A client whose server clock reads ``NOW``; 'employees/ada.jpg' exists, 'missing.jpg' does not."""
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    s3.put_object(Bucket=bucket, Key="other/x.jpg", Body=JPEG, ContentType="image/jpeg")
    return await proxy(clock=lambda: NOW)


def sign(key: str = "employees/ada.jpg", *, ttl: float = 600, now: float = NOW, kid: str | None = "k1",
         secret: str = SIGNING_KEY, params: dict[str, str] | None = None, source: str = "photos") -> str:
    return UrlSigner(secret, kid).sign(source, key, ttl=ttl, now=now, params=params)


async def error_of(response: ClientResponse) -> str:
    body = await response.json()
    return str(body["error"])


# --- Success, so every rejection below is a real difference ------------------------------------

async def test_a_valid_signed_url_is_served(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign())
    assert response.status == 200
    assert await response.read() == JPEG


async def test_a_signed_url_without_kid_is_served_when_one_key_is_configured(
    fixed: TestClient[Any, Any],
) -> None:
    response = await fixed.get(sign(kid=None))
    assert response.status == 200


async def test_a_signed_url_is_served_until_its_last_second(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign(now=NOW - 600, ttl=600))  # exp == NOW
    assert response.status == 200


async def test_a_valid_bearer_token_is_served(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg"), headers=bearer(TOKEN))
    assert response.status == 200


async def test_a_scoped_token_is_served_inside_its_scope(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg"), headers=bearer(SCOPED_TOKEN))
    assert response.status == 200


# --- 401: no credentials, bad token ------------------------------------------------------------

async def test_no_credentials_is_401(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg"))
    assert response.status == 401
    assert await error_of(response) == "unauthorized"


async def test_no_credentials_carries_a_bearer_challenge(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg"))
    assert response.headers[hdrs.WWW_AUTHENTICATE] == 'Bearer realm="imgproxy"'


async def test_a_head_without_credentials_is_401(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.head(image_path("photos", "employees/ada.jpg"))
    assert response.status == 401
    assert hdrs.WWW_AUTHENTICATE in response.headers


async def test_a_wrong_bearer_token_is_401_invalid_token(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg"),
                               headers=bearer("wrong-token-0123456789abcdef0123456789"))
    assert response.status == 401
    assert await error_of(response) == "invalid_token"
    assert 'error="invalid_token"' in response.headers[hdrs.WWW_AUTHENTICATE]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer two words", TOKEN])
async def test_a_malformed_authorization_header_is_401_invalid_token(fixed: TestClient[Any, Any],
                                                                     header: str) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg"),
                               headers={hdrs.AUTHORIZATION: header})
    assert response.status == 401
    assert await error_of(response) == "invalid_token"


async def test_a_token_prefix_is_not_the_token(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg"), headers=bearer(TOKEN[:-1]))
    assert response.status == 401


# --- 403: signatures ---------------------------------------------------------------------------

async def test_a_bad_signature_is_403(fixed: TestClient[Any, Any]) -> None:
    url = sign()
    sig = url.rsplit("sig=", 1)[1]
    forged = url.replace(f"sig={sig}", f"sig={'A' if sig[0] != 'A' else 'B'}{sig[1:]}")
    response = await fixed.get(forged)
    assert response.status == 403
    assert await error_of(response) == "invalid_signature"


async def test_a_signature_made_with_another_secret_is_403(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign(secret=OTHER_KEY))
    assert response.status == 403
    assert await error_of(response) == "invalid_signature"


async def test_an_empty_signature_is_403(fixed: TestClient[Any, Any]) -> None:
    url = sign()
    response = await fixed.get(url.rsplit("sig=", 1)[0] + "sig=")
    assert response.status == 403


async def test_an_expired_signed_url_is_403(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign(now=NOW - 601, ttl=600))  # exp == NOW - 1
    assert response.status == 403
    assert await error_of(response) == "expired"


async def test_a_url_expiring_beyond_the_maximum_lifetime_is_403(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign(ttl=2 * DAY))  # max_ttl is 1d
    assert response.status == 403
    assert await error_of(response) == "expiry_too_far"


async def test_a_url_at_the_maximum_lifetime_is_served(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign(ttl=DAY))
    assert response.status == 200


async def test_an_unknown_key_id_is_403(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign(kid="k9"))
    assert response.status == 403
    assert await error_of(response) == "unknown_key"


async def test_an_added_parameter_is_403(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign() + "&w=100")
    assert response.status == 403
    assert await error_of(response) == "invalid_signature"


async def test_a_changed_parameter_is_403(fixed: TestClient[Any, Any]) -> None:
    url = sign(params={"w": "100"})
    assert "w=100" in url
    response = await fixed.get(url.replace("w=100", "w=101"))
    assert response.status == 403
    assert await error_of(response) == "invalid_signature"


async def test_a_removed_parameter_is_403(fixed: TestClient[Any, Any]) -> None:
    url = sign(params={"w": "100"})
    response = await fixed.get(url.replace("w=100&", ""))
    assert response.status == 403


async def test_an_extended_expiry_is_403(fixed: TestClient[Any, Any]) -> None:
    url = sign(ttl=600)
    exp = int(NOW + 600)
    response = await fixed.get(url.replace(f"exp={exp}", f"exp={exp + 60}"))
    assert response.status == 403
    assert await error_of(response) == "invalid_signature"


async def test_a_changed_key_is_403(fixed: TestClient[Any, Any]) -> None:
    url = sign("employees/ada.jpg")
    response = await fixed.get(url.replace("employees/ada.jpg", "other/x.jpg"))
    assert response.status == 403
    assert await error_of(response) == "invalid_signature"


async def test_a_changed_source_is_403(proxy: ProxyFactory, moto_endpoint: str, bucket: str, s3: Any) -> None:
    client = await proxy(sources={"archive": source_table(moto_endpoint, bucket)}, clock=lambda: NOW)
    s3.put_object(Bucket=bucket, Key="a.jpg", Body=JPEG, ContentType="image/jpeg")
    url = sign("a.jpg")
    assert (await client.get(url)).status == 200
    response = await client.get(url.replace("/img/photos/", "/img/archive/"))
    assert response.status == 403


async def test_a_signed_url_missing_exp_is_400(fixed: TestClient[Any, Any]) -> None:
    url = sign()
    exp = int(NOW + 600)
    response = await fixed.get(url.replace(f"exp={exp}&", ""))
    assert response.status == 400
    assert await error_of(response) == "invalid_parameter"


# --- 403: bearer scope ------------------------------------------------------------------------

async def test_a_token_outside_its_scope_is_403(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "other/x.jpg"), headers=bearer(SCOPED_TOKEN))
    assert response.status == 403
    assert await error_of(response) == "out_of_scope"


async def test_a_scoped_token_cannot_climb_out_with_a_lookalike_prefix(fixed: TestClient[Any, Any],
                                                                      s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="employees-secret/x.jpg", Body=JPEG, ContentType="image/jpeg")
    response = await fixed.get(image_path("photos", "employees-secret/x.jpg"), headers=bearer(SCOPED_TOKEN))
    assert response.status == 403


async def test_a_scoped_token_for_another_source_is_403(proxy: ProxyFactory, moto_endpoint: str,
                                                        bucket: str, s3: Any) -> None:
    client = await proxy(sources={"archive": source_table(moto_endpoint, bucket)})
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    response = await client.get(image_path("archive", "employees/ada.jpg"), headers=bearer(SCOPED_TOKEN))
    assert response.status == 403


# --- The error body ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("url", "headers"),
    [
        (image_path("photos", "employees/ada.jpg"), {}),
        (image_path("photos", "employees/ada.jpg"), {hdrs.AUTHORIZATION: "Bearer nope-nope-nope"}),
        (sign(kid="k9"), {}),
        (image_path("photos", "other/x.jpg"), {hdrs.AUTHORIZATION: f"Bearer {SCOPED_TOKEN}"}),
    ],
    ids=["no-credentials", "bad-token", "unknown-kid", "out-of-scope"],
)
async def test_an_auth_error_body_is_error_message_and_request_id(
    fixed: TestClient[Any, Any], url: str, headers: dict[str, str]
) -> None:
    response = await fixed.get(url, headers=headers)
    body = await response.json()
    assert response.status in (401, 403)
    assert response.headers[hdrs.CONTENT_TYPE].startswith("application/json")
    assert set(body) == {"error", "message", "request_id"}
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert body["message"]


async def test_an_auth_error_never_reveals_the_expected_signature(fixed: TestClient[Any, Any]) -> None:
    good = sign()
    sig = good.rsplit("sig=", 1)[1]
    response = await fixed.get(good.rsplit("sig=", 1)[0] + "sig=forged")
    text = await response.text()
    assert sig not in text
    assert all(sig not in value for value in response.headers.values())


async def test_an_auth_error_is_not_cacheable(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg"))
    assert response.headers[hdrs.CACHE_CONTROL] == "no-store"


# --- No existence leak --------------------------------------------------------------------------

def comparable(response: ClientResponse, body: dict[str, Any]) -> tuple[Any, ...]:
    """Everything a client can observe, minus what differs per request (id, date)."""
    headers = sorted((k.lower(), v) for k, v in response.headers.items()
                     if k.lower() not in ("x-request-id", "date"))
    return response.status, headers, {k: v for k, v in body.items() if k != "request_id"}


@pytest.mark.parametrize(
    ("make_url", "headers"),
    [
        (lambda key: image_path("photos", key), {}),
        (lambda key: image_path("photos", key), {hdrs.AUTHORIZATION: "Bearer wrong-token-0123456789abcdef"}),
        (lambda key: sign(key, kid="k9"), {}),
        (lambda key: sign(key, now=NOW - 7200), {}),
        (lambda key: sign(key) + "&w=1", {}),
        (lambda key: image_path("photos", key), {hdrs.AUTHORIZATION: f"Bearer {SCOPED_TOKEN}"}),
    ],
    ids=["no-credentials", "bad-token", "unknown-kid", "expired", "tampered", "out-of-scope"],
)
async def test_unauthorized_answers_are_identical_for_existing_and_missing_objects(
    fixed: TestClient[Any, Any], make_url: Callable[[str], str], headers: dict[str, str]
) -> None:
    existing = await fixed.get(make_url("other/x.jpg"), headers=headers)
    missing = await fixed.get(make_url("other/missing.jpg"), headers=headers)
    assert existing.status in (401, 403)
    assert comparable(existing, await existing.json()) == comparable(missing, await missing.json())


async def test_an_authorized_request_does_tell_a_missing_object(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign("employees/missing.jpg"))
    assert response.status == 404
    assert await error_of(response) == "not_found"


# --- Unknown sources ------------------------------------------------------------------------------

async def test_an_unknown_source_is_404_for_an_authorized_token(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("nosuch", "a.jpg"), headers=bearer(TOKEN))
    assert response.status == 404
    assert await error_of(response) == "unknown_source"


async def test_an_unknown_source_is_404_for_a_valid_signature(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(sign("a.jpg", source="nosuch"))
    assert response.status == 404
    assert await error_of(response) == "unknown_source"


async def test_an_unknown_source_is_401_without_credentials(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("nosuch", "a.jpg"))
    assert response.status == 401


async def test_an_unknown_source_is_403_for_a_token_scoped_elsewhere(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("nosuch", "employees/a.jpg"), headers=bearer(SCOPED_TOKEN))
    assert response.status == 403


# --- Key rotation --------------------------------------------------------------------------------

@pytest.fixture
def rotating(proxy: ProxyFactory, bucket: str, s3: Any) -> ProxyFactory:
    """The proxy mid-rotation: both keys known, new URLs signed with k2; 'a.jpg' exists."""
    s3.put_object(Bucket=bucket, Key="a.jpg", Body=JPEG, ContentType="image/jpeg")
    return proxy.preset(auth={"keys": {"k1": SIGNING_KEY, "k2": OTHER_KEY}, "sign_with": "k2"},
                        clock=lambda: NOW)


@pytest.mark.parametrize(("kid", "secret"), [("k1", SIGNING_KEY), ("k2", OTHER_KEY)])
async def test_during_rotation_urls_signed_with_either_key_are_served(
        rotating: ProxyFactory, kid: str, secret: str) -> None:
    client = await rotating()
    response = await client.get(sign("a.jpg", kid=kid, secret=secret))
    assert response.status == 200


async def test_during_rotation_a_key_id_must_match_its_secret(rotating: ProxyFactory) -> None:
    client = await rotating()
    response = await client.get(sign("a.jpg", kid="k2", secret=SIGNING_KEY))
    assert response.status == 403
    assert await error_of(response) == "invalid_signature"


async def test_during_rotation_a_url_without_kid_is_403(rotating: ProxyFactory) -> None:
    client = await rotating()
    response = await client.get(sign("a.jpg", kid=None))
    assert response.status == 403
    assert await error_of(response) == "unknown_key"


async def test_after_rotation_urls_signed_with_the_retired_key_are_403(rotating: ProxyFactory) -> None:
    client = await rotating(auth={"keys": {"k2": OTHER_KEY}})
    retired = await client.get(sign("a.jpg", kid="k1", secret=SIGNING_KEY))
    current = await client.get(sign("a.jpg", kid="k2", secret=OTHER_KEY))
    assert retired.status == 403
    assert await error_of(retired) == "unknown_key"
    assert current.status == 200


# --- Mixing the two ----------------------------------------------------------------------------

async def test_a_forged_signature_is_not_rescued_by_a_valid_token(fixed: TestClient[Any, Any]) -> None:
    url = sign().rsplit("sig=", 1)[0] + "sig=forged"
    response = await fixed.get(url, headers=bearer(TOKEN))
    assert response.status == 403


async def test_a_bearer_request_with_signing_parameters_is_400(fixed: TestClient[Any, Any]) -> None:
    response = await fixed.get(image_path("photos", "employees/ada.jpg") + "?exp=1", headers=bearer(TOKEN))
    assert response.status == 400
