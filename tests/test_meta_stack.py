"""GET|HEAD /meta/{source}/{key} through the whole stack (moto, real workers): what the header
says, conditional answers, the placeholder, authorization like /img, and errors as the API's."""

from __future__ import annotations

import base64
import io
import json
from typing import Any, Final

import pytest
from aiohttp import hdrs
from PIL import Image
from support import TOKEN, ProxyClient, ProxyFactory

from imgproxy.auth.signing import UrlSigner

KEY: Final = "employees/ada.jpg"


def jpeg(width: int = 800, height: int = 600, orientation: int = 1, app_bytes: int = 0) -> bytes:
    """A JPEG, optionally with an EXIF orientation and ``app_bytes`` of APP2 segments before its
    frame header (as phones write ICC profiles and depth maps)."""
    buffer = io.BytesIO()
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    exif = Image.Exif()
    if orientation != 1:
        exif[0x0112] = orientation
    image.save(buffer, "JPEG", quality=85, exif=exif.tobytes())
    data = buffer.getvalue()
    segments = b""
    while len(segments) < app_bytes:
        chunk = b"PAD\x00" + bytes(60000)
        segments += b"\xff\xe2" + (len(chunk) + 2).to_bytes(2, "big") + chunk
    return data[:2] + segments + data[2:]


def encoded(fmt: str, size: tuple[int, int] = (300, 200), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else None).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
async def meta_proxy(proxy: ProxyFactory) -> ProxyClient:
    return await proxy(transform={"workers": 1})


def put(s3: Any, bucket: str, key: str, body: bytes, content_type: str = "image/jpeg") -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)


def meta_url(signer: UrlSigner, key: str = KEY, **params: str) -> str:
    return signer.sign("photos", key, params=params or None, route="meta")


async def test_meta_answers_the_displayed_size_format_bytes_and_etag(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner) -> None:
    body = jpeg(800, 600, orientation=6)
    put(s3, bucket, KEY, body)
    async with meta_proxy.get(meta_url(signer)) as response:
        assert response.status == 200
        assert response.headers[hdrs.CONTENT_TYPE].startswith("application/json")
        data = await response.json()
        etag = response.headers[hdrs.ETAG]
    stored = s3.head_object(Bucket=bucket, Key=KEY)["ETag"]
    assert data == {"width": 600, "height": 800, "format": "jpeg", "frames": 1, "bytes": len(body),
                    "etag": stored, "placeholder": None}
    assert etag.startswith('"m')
    assert etag != stored


async def test_an_if_none_match_of_the_answers_etag_is_a_304(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, KEY, jpeg())
    async with meta_proxy.get(meta_url(signer)) as response:
        etag = response.headers[hdrs.ETAG]
    async with meta_proxy.get(meta_url(signer), headers={hdrs.IF_NONE_MATCH: etag}) as again:
        assert again.status == 304
        assert again.headers[hdrs.ETAG] == etag
        assert await again.read() == b""


async def test_a_head_has_the_gets_headers_and_no_body(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, KEY, jpeg())
    async with meta_proxy.get(meta_url(signer)) as got:
        length = len(await got.read())
    async with meta_proxy.head(meta_url(signer)) as head:
        assert head.status == 200
        assert head.headers[hdrs.CONTENT_LENGTH] == str(length)
        assert head.headers[hdrs.ETAG] == got.headers[hdrs.ETAG]
        assert await head.read() == b""


async def test_placeholder_1_adds_a_thumbhash_which_later_answers_include(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, KEY, jpeg(640, 480))
    async with meta_proxy.get(meta_url(signer)) as plain:
        before = await plain.json()
        plain_etag = plain.headers[hdrs.ETAG]
    async with meta_proxy.get(meta_url(signer, placeholder="1")) as asked:
        assert asked.status == 200
        assert asked.headers["X-Cache"] == "MISS"
        with_hash = await asked.json()
        hash_etag = asked.headers[hdrs.ETAG]
    assert before["placeholder"] is None
    hashed = base64.b64decode(with_hash["placeholder"])
    assert 5 <= len(hashed) <= 30
    assert hash_etag != plain_etag
    async with meta_proxy.get(meta_url(signer)) as later:  # no placeholder=1: it is cached now
        assert (await later.json())["placeholder"] == with_hash["placeholder"]
        assert later.headers["X-Cache"] == "HIT"
        assert later.headers[hdrs.ETAG] == hash_etag
    assert {k: v for k, v in with_hash.items() if k != "placeholder"} == \
        {k: v for k, v in before.items() if k != "placeholder"}


@pytest.mark.parametrize(("fmt", "mode", "expected"), [
    ("PNG", "RGBA", "png"), ("GIF", "P", "gif"), ("WEBP", "RGB", "webp"), ("AVIF", "RGB", "avif")])
async def test_each_input_format_is_measured_as_a_render_sees_it(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner, fmt: str, mode: str,
        expected: str) -> None:
    key = f"formats/a.{expected}"
    put(s3, bucket, key, encoded(fmt, (301, 203), mode), f"image/{expected}")
    async with meta_proxy.get(meta_url(signer, key)) as response:
        data = await response.json()
    async with meta_proxy.get(signer.sign("photos", key, params={"w": "2000", "fmt": "png"})) as rendered:
        assert rendered.status == 200
        size = Image.open(io.BytesIO(await rendered.read())).size
    assert (data["width"], data["height"], data["format"]) == (*size, expected)
    assert data["frames"] == (None if fmt == "GIF" else 1)


@pytest.mark.parametrize("orientation", range(1, 9))
async def test_every_exif_orientation_gives_the_rendered_size(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner, orientation: int) -> None:
    key = f"orientations/{orientation}.jpg"
    put(s3, bucket, key, jpeg(320, 200, orientation))
    async with meta_proxy.get(meta_url(signer, key)) as response:
        data = await response.json()
    async with meta_proxy.get(signer.sign("photos", key, params={"w": "2000"})) as rendered:
        size = Image.open(io.BytesIO(await rendered.read())).size
    assert (data["width"], data["height"]) == size


async def test_a_frame_header_after_large_app_segments_is_found_by_more_ranged_reads(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, KEY, jpeg(800, 600, orientation=8, app_bytes=300_000))
    async with meta_proxy.get(meta_url(signer)) as response:
        assert response.status == 200
        data = await response.json()
    assert (data["width"], data["height"]) == (600, 800)


async def test_a_header_that_never_ends_within_the_bound_is_a_422(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, KEY, jpeg(app_bytes=1_200_000))
    async with meta_proxy.get(meta_url(signer)) as response:
        assert response.status == 422
        body = await response.json()
    assert body["error"] == "corrupt_image"
    assert "header does not end" in body["message"]


@pytest.mark.parametrize("body", [
    b"<html>not an image</html>", b"", b"\xff\xd8\xff\xe1\xff\xff" + b"\0" * 100,
    b"\x89PNG\r\n\x1a\n" + b"\0\0\0\x0dIHDR" + b"\0" * 8, b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 20,
    b"\0\0\0\x18ftypavif\0\0\0\0avifmif1" + b"\xff" * 64,
], ids=["html", "empty", "jpeg-segment-past-the-end", "png-zero-size", "webp-no-start-code", "avif-garbage"])
async def test_non_images_and_broken_headers_are_4xx(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner, body: bytes) -> None:
    put(s3, bucket, KEY, body, "application/octet-stream")
    async with meta_proxy.get(meta_url(signer)) as response:
        assert response.status in (415, 422), await response.text()
        assert (await response.json())["error"] in ("unsupported_image", "corrupt_image")


async def test_a_missing_object_is_a_404_json_error(meta_proxy: ProxyClient, signer: UrlSigner) -> None:
    async with meta_proxy.get(meta_url(signer, "employees/nobody.jpg")) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"


async def test_an_img_signature_does_not_open_meta_nor_the_reverse(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner) -> None:
    put(s3, bucket, KEY, jpeg())
    image_url = signer.sign("photos", KEY)
    as_meta = image_url.replace("/img/", "/meta/", 1)
    async with meta_proxy.get(as_meta) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "invalid_signature"
    as_image = meta_url(signer).replace("/meta/", "/img/", 1)
    async with meta_proxy.get(as_image) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "invalid_signature"
    async with meta_proxy.get(image_url) as response:
        assert response.status == 200


async def test_a_bearer_token_opens_meta_and_no_credentials_is_a_401(
        meta_proxy: ProxyClient, s3: Any, bucket: str) -> None:
    put(s3, bucket, KEY, jpeg())
    async with meta_proxy.get(f"/meta/photos/{KEY}", headers={hdrs.AUTHORIZATION: f"Bearer {TOKEN}"}) as ok:
        assert ok.status == 200
        assert (await ok.json())["width"] == 800
    async with meta_proxy.get(f"/meta/photos/{KEY}") as refused:
        assert refused.status == 401
        assert (await refused.json())["error"] == "unauthorized"


@pytest.mark.parametrize(("params", "status"), [({"w": "100"}, 400), ({"placeholder": "yes"}, 400)])
async def test_parameters_other_than_placeholder_are_a_400(
        meta_proxy: ProxyClient, s3: Any, bucket: str, signer: UrlSigner, params: dict[str, str],
        status: int) -> None:
    put(s3, bucket, KEY, jpeg())
    async with meta_proxy.get(meta_url(signer, **params)) as response:
        assert response.status == status
        assert (await response.json())["error"] == "invalid_parameter"


@pytest.mark.parametrize("path", ["/meta/photos/a/../../secret.jpg", "/meta/photos/%2e%2e/x.jpg",
                                  "/meta/photos/a%5cb.jpg", "/meta/photos"])
async def test_a_key_escaping_the_prefix_is_a_400(meta_proxy: ProxyClient, path: str) -> None:
    async with meta_proxy.get(path, headers={hdrs.AUTHORIZATION: f"Bearer {TOKEN}"}) as response:
        assert response.status in (400, 404)
        assert (await response.json())["error"] in ("invalid_path", "not_found")


async def test_the_json_body_is_compact_and_parses(meta_proxy: ProxyClient, s3: Any, bucket: str,
                                                   signer: UrlSigner) -> None:
    put(s3, bucket, KEY, jpeg())
    async with meta_proxy.get(meta_url(signer)) as response:
        text = await response.text()
    assert json.loads(text)["format"] == "jpeg"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
