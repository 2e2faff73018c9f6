"""Untransformed HEIC originals through the whole stack (aiohttp on a real socket, the image
workers, moto): served as stored, an attachment, unless the source lists HEIF in
``convert_originals``; then always rendered (never streamed, redirected or handed to nginx as
HEIC, in every delivery mode), as large as the output limits allow, cached like a variant."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp import hdrs
from heic import heic, is_red, marked
from PIL import Image
from support import ProxyClient, ProxyFactory

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import DEFAULT_INPUT_FORMATS
from imgproxy.web import appkeys

HEIF_INPUT = {"input_formats": [*DEFAULT_INPUT_FORMATS, "HEIF"], "workers": 1}
CONVERT = {"convert_originals": ["HEIF"]}


@pytest.fixture
def photo(s3: Any, bucket: str) -> bytes:
    body = heic(marked(600, 400), quality=70)
    s3.put_object(Bucket=bucket, Key="ada.heic", Body=body, ContentType="image/heic")
    return body


async def fetch(client: ProxyClient, signer: UrlSigner, key: str, method: str = "GET",
                headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    response = await client.request(method, signer.sign("photos", key), headers=headers or {},
                                    allow_redirects=False)
    return response.status, response.headers, await response.read()


def opened(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


@pytest.mark.parametrize("mode", ["stream", "redirect"])
async def test_without_convert_originals_a_heic_is_served_as_stored_as_an_attachment(
        proxy: ProxyFactory, signer: UrlSigner, photo: bytes, mode: str) -> None:
    client = await proxy(source={"delivery": {"mode": mode}}, transform=HEIF_INPUT)
    status, headers, body = await fetch(client, signer, "ada.heic")
    if mode == "stream":
        assert status == 200
        assert (headers[hdrs.CONTENT_TYPE], body) == ("image/heic", photo)
        assert headers[hdrs.CONTENT_DISPOSITION] == "attachment"
    else:  # S3 sends the bytes as stored, told to make them a download
        assert status == 302
        assert "response-content-disposition=attachment" in headers[hdrs.LOCATION]


@pytest.mark.parametrize("mode", ["stream", "redirect", "accel", "auto"])
async def test_a_converted_heic_is_rendered_as_a_jpeg_in_every_delivery_mode(
        proxy: ProxyFactory, signer: UrlSigner, photo: bytes, mode: str) -> None:
    # auto with a 0-byte threshold would redirect every original it knows the size of.
    delivery = {"mode": mode, "redirect_min_bytes": 0, "hot_requests": 1}
    client = await proxy(source={**CONVERT, "delivery": delivery}, transform=HEIF_INPUT)
    for _ in range(3):  # the later ones know the size and count as hot: still rendered
        status, headers, body = await fetch(client, signer, "ada.heic")
        assert status == 200, body
        assert hdrs.LOCATION not in headers
        assert "X-Accel-Redirect" not in headers
        assert headers[hdrs.CONTENT_TYPE] == "image/jpeg"
        assert hdrs.CONTENT_DISPOSITION not in headers  # shown inline
        image = opened(body)
        assert (image.format, image.size) == ("JPEG", (600, 400))  # smaller than the limits: as is
        assert is_red(image, (10, 10))


async def test_a_converted_heic_is_as_large_as_the_output_limits_allow(
        proxy: ProxyFactory, signer: UrlSigner, photo: bytes) -> None:
    client = await proxy(source=CONVERT, transform={**HEIF_INPUT, "max_width": 300, "max_height": 180})
    status, _, body = await fetch(client, signer, "ada.heic")
    assert status == 200
    assert opened(body).size == (270, 180)


async def test_a_converted_heic_is_a_cached_variant_with_its_own_etag(
        proxy: ProxyFactory, signer: UrlSigner, photo: bytes, s3: Any, bucket: str) -> None:
    client = await proxy(source=CONVERT, transform=HEIF_INPUT)
    status, headers, body = await fetch(client, signer, "ada.heic")
    assert (status, headers["X-Cache"]) == (200, "MISS")
    etag = headers[hdrs.ETAG]
    assert etag != s3.head_object(Bucket=bucket, Key="ada.heic")["ETag"]
    status, again, cached = await fetch(client, signer, "ada.heic")
    assert (status, again["X-Cache"], again[hdrs.ETAG], cached) == (200, "HIT", etag, body)
    status, head, empty = await fetch(client, signer, "ada.heic", method="HEAD")
    assert (status, head[hdrs.CONTENT_LENGTH], head[hdrs.CONTENT_TYPE], empty) == (200, str(len(body)),
                                                                                  "image/jpeg", b"")
    status, _, _ = await fetch(client, signer, "ada.heic", headers={hdrs.IF_NONE_MATCH: etag})
    assert status == 304
    assert client.app[appkeys.VARIANTS].pool.completed == 1  # one render answered all four


async def test_convert_format_auto_answers_as_fmt_auto_with_vary_accept(
        proxy: ProxyFactory, signer: UrlSigner, photo: bytes) -> None:
    client = await proxy(source={**CONVERT, "convert_format": "auto"}, transform=HEIF_INPUT)
    for accept, media_type in (("image/webp,image/heic,*/*", "image/webp"),
                               ("image/heic,image/jpeg", "image/jpeg")):
        status, headers, body = await fetch(client, signer, "ada.heic", headers={hdrs.ACCEPT: accept})
        assert (status, headers[hdrs.CONTENT_TYPE], headers[hdrs.VARY]) == (200, media_type, "Accept")
        assert opened(body).size == (600, 400)


@pytest.mark.parametrize(("content_type", "converted"), [
    ("image/heic", True),
    ("image/heif; charset=binary", True),
    ("application/octet-stream", True),  # untyped: its first bytes say HEIC
    ("image/jpeg", False),  # a wrong type is believed, as for every original
])
async def test_a_heic_under_another_name_is_converted_by_its_stored_type(
        proxy: ProxyFactory, signer: UrlSigner, s3: Any, bucket: str, content_type: str,
        converted: bool) -> None:
    body = heic(marked(60, 40))
    s3.put_object(Bucket=bucket, Key="uploads/1234", Body=body, ContentType=content_type)
    client = await proxy(source=CONVERT, transform=HEIF_INPUT)
    status, headers, answer = await fetch(client, signer, "uploads/1234")
    assert status == 200
    if converted:
        assert (headers[hdrs.CONTENT_TYPE], opened(answer).size) == ("image/jpeg", (60, 40))
    else:
        assert answer == body


async def test_other_originals_of_a_converting_source_are_served_as_stored(
        proxy: ProxyFactory, signer: UrlSigner, s3: Any, bucket: str) -> None:
    buffer = io.BytesIO()
    marked(60, 40).save(buffer, "PNG")
    s3.put_object(Bucket=bucket, Key="logo.png", Body=buffer.getvalue(), ContentType="image/png")
    client = await proxy(source=CONVERT, transform=HEIF_INPUT)
    status, headers, body = await fetch(client, signer, "logo.png")
    assert (status, headers[hdrs.CONTENT_TYPE], body) == (200, "image/png", buffer.getvalue())


async def test_a_missing_heic_of_a_converting_source_is_404(proxy: ProxyFactory, signer: UrlSigner) -> None:
    client = await proxy(source=CONVERT, transform=HEIF_INPUT)
    status, _, _ = await fetch(client, signer, "nobody.heic")
    assert status == 404
