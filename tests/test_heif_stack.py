"""HEIF/HEIC input through the whole stack: aiohttp on a real socket -> VariantService -> the image
worker processes (which register pillow-heif's opener), the HEIC files generated here with
pillow-heif's encoder (tests/heic.py) and stored in moto.

The safety of the other formats holds for HEIC too: the pixel limit from the header before any
decoding, a broken or mislabelled file a 4xx, never a 500; the orientation applied once; no
HEIC ever sent back (no fmt=heif, and fmt=auto never chooses it).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from aiohttp import hdrs
from heic import declaring, heic, is_red, marked, rgb_at, with_primary_second
from PIL import Image
from support import ProxyFactory

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import DEFAULT_INPUT_FORMATS
from imgproxy.errors import ImageTooLarge, InvalidParameter, NotAnImage, UnprocessableImage
from imgproxy.transform.pool import TransformPool

WITH_HEIF = {"input_formats": [*DEFAULT_INPUT_FORMATS, "HEIF"], "workers": 1, "prestart_workers": True}
# Safari 17's Accept for images: it names HEIC, the one browser that can show it.
SAFARI = "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"  # noqa: E501


def objects() -> dict[str, bytes]:
    photo = heic(marked(600, 400), quality=70)
    return {
        "photo.heic": photo,
        # Stored turned a quarter, as a phone in portrait stores it: EXIF orientation 6 and irot.
        "turned.heic": heic(marked(600, 400), quality=70, orientation=6),
        "huge.heic": declaring(20_000, 20_000),
        "truncated.heic": heic(marked(1200, 800), quality=90)[:-600],
        "text.heic": b"Quarterly numbers, definitely not an image.\n" * 40,
        "jpeg.heic": _jpeg(),
        "primary-second.heic": with_primary_second(Image.new("RGB", (300, 300), (20, 200, 20)),
                                                   marked(600, 400)),
    }


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    marked(60, 40).save(buffer, "JPEG")
    return buffer.getvalue()


class Photos:
    def __init__(self, client: Any, signer: UrlSigner) -> None:
        self.client, self.signer = client, signer

    async def get(self, key: str, accept: str | None = None, **params: str) -> tuple[int, Any, bytes]:
        headers = {hdrs.ACCEPT: accept} if accept is not None else {}
        response = await self.client.get(self.signer.sign("photos", key, params=params), headers=headers)
        return response.status, response.headers, await response.read()

    async def error(self, key: str, **params: str) -> tuple[int, str]:
        status, _, body = await self.get(key, **params)
        assert status != 200
        return status, json.loads(body)["error"]


@pytest.fixture
async def photos(proxy: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner) -> Photos:
    for key, body in objects().items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/heic")
    return Photos(await proxy(transform=WITH_HEIF), signer)


def opened(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


async def test_a_heic_renders_as_a_jpeg_thumbnail(photos: Photos) -> None:
    status, headers, body = await photos.get("photo.heic", w="300")
    assert status == 200, body
    assert headers[hdrs.CONTENT_TYPE] == "image/jpeg"
    image = opened(body)
    assert (image.format, image.size) == ("JPEG", (300, 200))
    assert is_red(image, (10, 10))
    assert min(rgb_at(image, (290, 190))) >= 240


async def test_a_heif_renders_its_primary_image_not_its_first(photos: Photos) -> None:
    # The first image is a green 300x300 square, the primary a 600x400 marked one.
    status, _, body = await photos.get("primary-second.heic", w="150")
    assert status == 200, body
    image = opened(body)
    assert image.size == (150, 100)
    assert is_red(image, (5, 5))


async def test_the_orientation_of_a_turned_heic_is_applied_exactly_once(photos: Photos) -> None:
    # Stored 600x400 with its red corner top-left; shown turned clockwise (orientation 6): 400x600
    # with the red corner top-right. Turned twice it would be 600x400 again, and never: 600x400.
    status, _, body = await photos.get("turned.heic", w="200")
    assert status == 200, body
    image = opened(body)
    assert image.size == (200, 300)
    assert is_red(image, (190, 10))
    assert not is_red(image, (10, 10))
    assert not is_red(image, (190, 290))


@pytest.mark.parametrize("accept", [SAFARI, "image/heic,image/heif,*/*", "image/heic"])
async def test_fmt_auto_never_answers_heic(photos: Photos, accept: str) -> None:
    status, headers, _ = await photos.get("photo.heic", accept=accept, w="100", fmt="auto")
    assert status == 200
    assert headers[hdrs.CONTENT_TYPE] in ("image/webp", "image/jpeg")
    assert headers[hdrs.VARY] == "Accept"


@pytest.mark.parametrize("fmt", ["heif", "heic"])
async def test_heif_is_no_output_format(photos: Photos, fmt: str) -> None:
    assert await photos.error("photo.heic", w="100", fmt=fmt) == (400, InvalidParameter.code)


async def test_a_heic_whose_header_declares_400_megapixels_is_refused_before_decoding(photos: Photos) -> None:
    # A decode would fail (the coded picture is 64x64): corrupt_image. image_too_large can only
    # come from the header, before any decoding.
    assert await photos.error("huge.heic", w="100") == (422, ImageTooLarge.code)


async def test_a_heic_over_max_source_pixels_is_refused(proxy: ProxyFactory, s3: Any, bucket: str,
                                                        signer: UrlSigner) -> None:
    s3.put_object(Bucket=bucket, Key="big.heic", Body=heic(marked(1280, 960), quality=30))
    photos = Photos(await proxy(transform={**WITH_HEIF, "max_source_pixels": 1_000_000}), signer)
    assert await photos.error("big.heic", w="100") == (422, ImageTooLarge.code)
    s3.put_object(Bucket=bucket, Key="small.heic", Body=heic(marked(960, 960), quality=30))
    status, _, _ = await photos.get("small.heic", w="100")
    assert status == 200


@pytest.mark.parametrize(("key", "status", "code"), [
    ("truncated.heic", 422, UnprocessableImage.code),  # its boxes are whole, its picture cut short
    ("text.heic", 415, NotAnImage.code),
])
async def test_a_broken_or_mislabelled_heic_is_a_4xx(photos: Photos, key: str, status: int,
                                                     code: str) -> None:
    assert await photos.error(key, w="100") == (status, code)


async def test_a_jpeg_named_heic_renders_as_the_jpeg_it_is(photos: Photos) -> None:
    status, _, body = await photos.get("jpeg.heic", w="30")
    assert status == 200
    assert opened(body).size == (30, 20)


async def test_heic_is_refused_unless_input_formats_lists_it(proxy: ProxyFactory, s3: Any, bucket: str,
                                                             signer: UrlSigner) -> None:
    s3.put_object(Bucket=bucket, Key="photo.heic", Body=heic(marked(60, 40)))
    photos = Photos(await proxy(transform={"workers": 1}), signer)
    assert await photos.error("photo.heic", w="30") == (415, NotAnImage.code)


def worker_view(data: bytes) -> dict[str, object]:
    """Runs in an image worker: what the registered HEIF opener makes of ``data``."""
    import sys

    from PIL import Image

    image = Image.open(io.BytesIO(data), formats=["HEIF"])
    return {"thumbnails": image.info.get("thumbnails"), "depth_images": image.info.get("depth_images"),
            "draft": image.draft("RGB", (32, 24)), "plugin": "pillow_heif" in sys.modules}


async def test_the_workers_ignore_embedded_thumbnails_and_depth_images() -> None:
    # With thumbnails on, the plugin lists the 32 px preview and its draft() decodes it instead.
    data = heic(marked(128, 96), thumbnails=[32])
    pool = TransformPool(workers=1, queue_size=0, timeout=10, max_pixels=50_000_000)
    try:
        await pool.start()
        view = await pool._workers.run(30, worker_view, data)
    finally:
        pool.close()
    assert view == {"thumbnails": [], "depth_images": [], "draft": None, "plugin": True}
