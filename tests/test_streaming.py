"""Streaming GET and HEAD through the whole stack: aiohttp -> aiobotocore -> moto over HTTP.

Headers, type sniffing, the inert-content rules, unusual keys with both kinds of credentials,
prefix confinement, and a multi-megabyte object arriving intact.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from support import TOKEN, ProxyFactory, RawRequest, RelayFactory
from tcp_relay import TcpRelay

from imgproxy.auth.signing import UrlSigner
from imgproxy.protocol.paths import image_path

JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF\x00" + bytes(range(256)) * 8
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
BEARER = {hdrs.AUTHORIZATION: f"Bearer {TOKEN}"}
# Headers a HEAD must repeat exactly as the GET sends them.
OBJECT_HEADERS = (
    hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.ETAG, hdrs.LAST_MODIFIED, hdrs.CACHE_CONTROL,
    hdrs.ACCEPT_RANGES, "X-Content-Type-Options", "Content-Security-Policy",
)


def put(s3: Any, bucket: str, key: str, body: bytes, content_type: str | None = None) -> dict[str, Any]:
    """Store an object and return what S3 itself says about it (HEAD)."""
    extra = {"ContentType": content_type} if content_type else {}
    s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
    head: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key)
    return head


# --- GET: body and headers -------------------------------------------------------------------

async def test_get_streams_the_object_bytes(client: TestClient[Any, Any], s3: Any, bucket: str,
                                            signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert response.status == 200
    assert await response.read() == JPEG


async def test_get_content_type_is_the_one_s3_stored(client: TestClient[Any, Any], s3: Any, bucket: str,
                                                     signer: UrlSigner) -> None:
    put(s3, bucket, "a.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 64, "image/webp")
    response = await client.get(signer.sign("photos", "a.webp"))
    assert response.headers[hdrs.CONTENT_TYPE] == "image/webp"


async def test_get_content_length_is_the_object_size(client: TestClient[Any, Any], s3: Any, bucket: str,
                                                     signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert response.headers[hdrs.CONTENT_LENGTH] == str(len(JPEG))


async def test_get_etag_is_the_objects_etag(client: TestClient[Any, Any], s3: Any, bucket: str,
                                            signer: UrlSigner) -> None:
    head = put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert response.headers[hdrs.ETAG] == head["ETag"]
    assert head["ETag"] == f'"{hashlib.md5(JPEG).hexdigest()}"'  # noqa: S324 (S3's ETag is an MD5)


async def test_get_last_modified_is_the_objects(client: TestClient[Any, Any], s3: Any, bucket: str,
                                                signer: UrlSigner) -> None:
    head = put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert response.headers[hdrs.LAST_MODIFIED] == head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]


async def test_get_cache_control_is_the_source_default(client: TestClient[Any, Any], s3: Any,
                                                       bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert response.headers[hdrs.CACHE_CONTROL] == "private, max-age=3600"


async def test_get_cache_control_is_the_sources_custom_value(
    proxy: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner,
) -> None:
    client = await proxy(source={"cache_control": "private, max-age=60, immutable"})
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert response.headers[hdrs.CACHE_CONTROL] == "private, max-age=60, immutable"


async def test_get_advertises_byte_ranges(client: TestClient[Any, Any], s3: Any, bucket: str,
                                          signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert response.headers[hdrs.ACCEPT_RANGES] == "bytes"


async def test_get_carries_a_request_id(client: TestClient[Any, Any], s3: Any, bucket: str,
                                        signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    first = await client.get(signer.sign("photos", "a.jpg"))
    second = await client.get(signer.sign("photos", "a.jpg"))
    assert first.headers["X-Request-Id"]
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


async def test_get_keeps_a_well_formed_request_id_from_a_trusted_proxy(
        proxy: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    client = await proxy(server={"trusted_proxies": ["127.0.0.1/32", "::1/128"]})
    response = await client.get(signer.sign("photos", "a.jpg"), headers={"X-Request-Id": "lb-42.abc"})
    assert response.headers["X-Request-Id"] == "lb-42.abc"


async def test_get_replaces_a_request_id_from_an_untrusted_client(client: TestClient[Any, Any], s3: Any,
                                                                  bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"), headers={"X-Request-Id": "lb-42.abc"})
    assert response.status == 200
    assert response.headers["X-Request-Id"] != "lb-42.abc"
    assert len(response.headers["X-Request-Id"]) == 16


async def test_get_forbids_mime_sniffing(client: TestClient[Any, Any], s3: Any, bucket: str,
                                         signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_get_sends_a_sandboxing_content_security_policy(client: TestClient[Any, Any], s3: Any,
                                                              bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    policy = response.headers["Content-Security-Policy"]
    assert "sandbox" in policy
    assert "default-src 'none'" in policy


async def test_get_serves_an_allowlisted_image_inline(client: TestClient[Any, Any], s3: Any, bucket: str,
                                                      signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.get(signer.sign("photos", "a.jpg"))
    assert hdrs.CONTENT_DISPOSITION not in response.headers


# --- HEAD ------------------------------------------------------------------------------------

async def test_head_repeats_the_get_headers(client: TestClient[Any, Any], s3: Any, bucket: str,
                                            signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    url = signer.sign("photos", "a.jpg")
    got = await client.get(url)
    head = await client.head(url)
    assert head.status == 200
    assert {h: head.headers.get(h) for h in OBJECT_HEADERS} == {h: got.headers.get(h) for h in OBJECT_HEADERS}
    assert head.headers[hdrs.CONTENT_LENGTH] == str(len(JPEG))


async def test_head_has_no_body(client: TestClient[Any, Any], s3: Any, bucket: str,
                                signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.head(signer.sign("photos", "a.jpg"))
    assert await response.read() == b""


async def test_head_carries_a_request_id(client: TestClient[Any, Any], s3: Any, bucket: str,
                                         signer: UrlSigner) -> None:
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    response = await client.head(signer.sign("photos", "a.jpg"))
    assert response.headers["X-Request-Id"]


# --- Content-Type sniffing and inert content -------------------------------------------------

@pytest.mark.parametrize("stored_type", ["application/octet-stream", "binary/octet-stream"])
async def test_get_sniffs_the_type_when_s3_says_octet_stream(
    client: TestClient[Any, Any], s3: Any, bucket: str, signer: UrlSigner, stored_type: str
) -> None:
    put(s3, bucket, "upload", PNG, stored_type)
    response = await client.get(signer.sign("photos", "upload"))
    assert response.headers[hdrs.CONTENT_TYPE] == "image/png"
    assert await response.read() == PNG


async def test_head_sniffs_the_type_when_s3_says_octet_stream(client: TestClient[Any, Any], s3: Any,
                                                              bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, "upload", PNG, "application/octet-stream")
    response = await client.head(signer.sign("photos", "upload"))
    assert response.headers[hdrs.CONTENT_TYPE] == "image/png"
    assert response.headers[hdrs.CONTENT_LENGTH] == str(len(PNG))


async def test_get_keeps_unrecognisable_bytes_as_an_attachment(client: TestClient[Any, Any], s3: Any,
                                                               bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, "blob", b"\x01\x02 not an image", "application/octet-stream")
    response = await client.get(signer.sign("photos", "blob"))
    assert response.headers[hdrs.CONTENT_TYPE] == "application/octet-stream"
    assert response.headers[hdrs.CONTENT_DISPOSITION] == "attachment"


@pytest.mark.parametrize(
    ("key", "body", "content_type"),
    [
        ("page.html", b"<html><script>alert(1)</script></html>", "text/html"),
        ("page.htm", b"<html><script>alert(1)</script></html>", "text/html; charset=utf-8"),
        ("logo.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
         "image/svg+xml"),
        ("doc.pdf", b"%PDF-1.7 ...", "application/pdf"),
    ],
)
async def test_active_content_is_an_attachment_under_a_sandbox(
    client: TestClient[Any, Any], s3: Any, bucket: str, signer: UrlSigner,
    key: str, body: bytes, content_type: str,
) -> None:
    put(s3, bucket, key, body, content_type)
    response = await client.get(signer.sign("photos", key))
    assert response.status == 200
    assert response.headers[hdrs.CONTENT_TYPE] == content_type
    assert response.headers[hdrs.CONTENT_DISPOSITION] == "attachment"
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_html_sniffed_from_octet_stream_is_an_attachment(client: TestClient[Any, Any], s3: Any,
                                                               bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, "innocent.jpg", b"<!DOCTYPE html><script>alert(1)</script>", "application/octet-stream")
    response = await client.get(signer.sign("photos", "innocent.jpg"))
    assert response.headers[hdrs.CONTENT_TYPE] == "text/html"
    assert response.headers[hdrs.CONTENT_DISPOSITION] == "attachment"
    assert "sandbox" in response.headers["Content-Security-Policy"]


async def test_head_of_svg_is_an_attachment_under_a_sandbox(client: TestClient[Any, Any], s3: Any,
                                                            bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, "logo.svg", b"<svg><script>alert(1)</script></svg>", "image/svg+xml")
    response = await client.head(signer.sign("photos", "logo.svg"))
    assert response.headers[hdrs.CONTENT_DISPOSITION] == "attachment"
    assert "sandbox" in response.headers["Content-Security-Policy"]


async def test_a_type_removed_from_the_inline_allowlist_becomes_an_attachment(
    proxy: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner,
) -> None:
    client = await proxy(server={"inline_types": ["image/png"]})
    put(s3, bucket, "a.jpg", JPEG, "image/jpeg")
    put(s3, bucket, "a.png", PNG, "image/png")
    jpeg = await client.get(signer.sign("photos", "a.jpg"))
    png = await client.get(signer.sign("photos", "a.png"))
    assert jpeg.headers[hdrs.CONTENT_DISPOSITION] == "attachment"
    assert hdrs.CONTENT_DISPOSITION not in png.headers


# --- Unusual keys, both ways of authorizing ---------------------------------------------------

UNUSUAL_KEYS = [
    "with space.jpg",
    "Zoë.jpg",
    "a+b.jpg",
    "100%.jpg",
    "%20literally.jpg",
    "k=v.jpg",
    "a&b.jpg",
    "hash#tag.jpg",
    "what?.jpg",
    "dir/sub dir/Zoë Smith+1 100% a=b&c#d?e.jpg",
    "日本語/写真.jpg",
]


@pytest.mark.parametrize("key", UNUSUAL_KEYS)
async def test_unusual_key_round_trips_with_a_signed_url(client: TestClient[Any, Any], s3: Any,
                                                         bucket: str, signer: UrlSigner, key: str) -> None:
    body = JPEG + key.encode()
    put(s3, bucket, key, body, "image/jpeg")
    response = await client.get(signer.sign("photos", key))
    assert response.status == 200, await response.text()
    assert await response.read() == body


@pytest.mark.parametrize("key", UNUSUAL_KEYS)
async def test_unusual_key_round_trips_with_a_bearer_token(client: TestClient[Any, Any], s3: Any,
                                                           bucket: str, key: str) -> None:
    body = JPEG + key.encode()
    put(s3, bucket, key, body, "image/jpeg")
    response = await client.get(image_path("photos", key), headers=BEARER)
    assert response.status == 200, await response.text()
    assert await response.read() == body


async def test_keys_differing_only_by_plus_and_space_are_different_objects(
    client: TestClient[Any, Any], s3: Any, bucket: str, signer: UrlSigner
) -> None:
    put(s3, bucket, "a+b.jpg", JPEG + b"plus", "image/jpeg")
    put(s3, bucket, "a b.jpg", JPEG + b"space", "image/jpeg")
    plus = await client.get(signer.sign("photos", "a+b.jpg"))
    space = await client.get(signer.sign("photos", "a b.jpg"))
    assert await plus.read() == JPEG + b"plus"
    assert await space.read() == JPEG + b"space"


async def test_a_literal_plus_in_the_path_is_not_a_space(client: TestClient[Any, Any], s3: Any,
                                                         bucket: str, raw_request: RawRequest) -> None:
    put(s3, bucket, "a+b.jpg", JPEG + b"plus", "image/jpeg")
    response = await raw_request(client, "GET", "/img/photos/a+b.jpg", headers=BEARER)
    assert await response.read() == JPEG + b"plus"


# --- Prefix confinement ------------------------------------------------------------------------

@pytest.fixture
async def confined(proxy: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str, s3: Any,
                   bucket: str) -> tuple[TestClient[Any, Any], TcpRelay]:
    """A client whose source is confined to 'employees/', reaching moto through a relay."""
    relay = await relay_to(moto_endpoint)
    s3.put_object(Bucket=bucket, Key="employees/x.jpg", Body=JPEG + b"employee", ContentType="image/jpeg")
    s3.put_object(Bucket=bucket, Key="secret.jpg", Body=JPEG + b"secret", ContentType="image/jpeg")
    client = await proxy(source={"prefix": "employees/", "endpoint_url": relay.endpoint})
    return client, relay


async def test_a_prefixed_source_reads_inside_its_prefix_by_relative_key(
    confined: tuple[TestClient[Any, Any], TcpRelay], signer: UrlSigner
) -> None:
    client, _ = confined
    response = await client.get(signer.sign("photos", "x.jpg"))
    assert response.status == 200
    assert await response.read() == JPEG + b"employee"


async def test_a_prefixed_source_cannot_name_the_prefix_itself(
    confined: tuple[TestClient[Any, Any], TcpRelay], signer: UrlSigner
) -> None:
    client, _ = confined
    response = await client.get(signer.sign("photos", "employees/x.jpg"))
    assert response.status == 404


@pytest.mark.parametrize(
    "target",
    [
        "/img/photos/../secret.jpg",
        "/img/photos/%2E%2E/secret.jpg",
        "/img/photos/%2e%2e%2fsecret.jpg",
        "/img/photos/x/../../secret.jpg",
        "/img/photos/..%5Csecret.jpg",
        "/img/photos/./x.jpg",
    ],
)
async def test_escaping_the_prefix_is_400_and_never_reaches_s3(
    confined: tuple[TestClient[Any, Any], TcpRelay], raw_request: RawRequest, target: str
) -> None:
    client, relay = confined
    response = await raw_request(client, "GET", target, headers=BEARER)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_path"
    assert relay.links == []


# --- Size ---------------------------------------------------------------------------------------

@pytest.mark.slow
async def test_a_multi_megabyte_object_streams_intact(client: TestClient[Any, Any], s3: Any, bucket: str,
                                                      signer: UrlSigner) -> None:
    body = os.urandom(6 * 1024 * 1024 + 123)
    put(s3, bucket, "big.bin", body, "image/jpeg")
    response = await client.get(signer.sign("photos", "big.bin"))
    digest = hashlib.sha256()
    received = 0
    async for chunk in response.content.iter_chunked(256 * 1024):
        digest.update(chunk)
        received += len(chunk)
    assert response.headers[hdrs.CONTENT_LENGTH] == str(len(body))
    assert received == len(body)
    assert digest.hexdigest() == hashlib.sha256(body).hexdigest()
