"""Transforms through the whole stack: aiohttp -> VariantService -> worker pool, S3 via moto.

Images are generated here with Pillow and stored once per module. Where "nothing was fetched"
matters, the proxy reaches moto through the byte-counting ``TcpRelay``; "exactly one
transformation" is read from the worker pool's own counter.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse, hdrs
from aiohttp.test_utils import TestClient
from PIL import ExifTags, Image, ImageDraw
from support import ProxyFactory, RelayFactory
from tcp_relay import TcpRelay

from imgproxy.auth.signing import UrlSigner
from imgproxy.errors import ImageTooLarge, NotAnImage, TransformTimeout, UnprocessableImage
from imgproxy.transform.jobs import available_outputs
from imgproxy.transform.params import OutputFormat
from imgproxy.transform.variants import VariantService
from imgproxy.web import appkeys as keys

HAS_AVIF = OutputFormat.AVIF in available_outputs()
# The limits of the "hostile input" server: the 4000x3000 photo (~1 MB) is too many bytes, a
# 3000x3000 solid PNG (a few KB) too many pixels, and the small photo is fine.
HOSTILE_LIMITS = {"max_source_bytes": 256 * 1024, "max_source_pixels": 4_000_000}


# --- images -----------------------------------------------------------------------------------

def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def photo(width: int, height: int) -> Image.Image:
    """Photo-like: smooth gradients with hard-edged shapes (compresses like a real photo)."""
    size = (width, height)
    image = Image.merge("RGB", (
        Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR),
        Image.radial_gradient("L").resize(size, Image.Resampling.BILINEAR),
        Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90)
        .resize(size, Image.Resampling.BILINEAR),
    ))
    draw = ImageDraw.Draw(image)
    for i in range(10):
        x, y = width * i // 10, height * i // 12
        draw.ellipse((x, y, x + width // 5, y + height // 4), fill=(255 - 25 * i, 30 + 20 * i, 120),
                     outline=(0, 0, 0), width=max(1, width // 300))
        draw.line((0, y, width, height - y), fill=(255, 255, 255), width=max(1, width // 500))
    return image


def with_alpha() -> bytes:
    image = Image.new("RGBA", (400, 300), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (200, 0, 400, 300))
    return encode(image, "PNG")


def private_jpeg() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SecretCam-9000"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 26.0)
    return encode(photo(400, 300), "JPEG", exif=exif, xmp=b"<x:xmpmeta>secret-xmp</x:xmpmeta>", quality=90)


def forged_png(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header claims ``width``x``height`` pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def animated_gif(size: int, frames: int) -> bytes:
    images = [Image.new("P", (size, size), i) for i in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=100)


def objects() -> dict[str, tuple[bytes, str]]:
    """key -> (body, Content-Type as stored)."""
    small = encode(photo(1200, 900), "JPEG", quality=85)
    large = encode(photo(4000, 3000), "JPEG", quality=90)
    assert len(small) < HOSTILE_LIMITS["max_source_bytes"] < len(large)
    whole = encode(photo(600, 400), "JPEG", quality=90)
    return {
        "photo.jpg": (small, "image/jpeg"),
        "large.jpg": (large, "image/jpeg"),
        "alpha.png": (with_alpha(), "image/png"),
        "private.jpg": (private_jpeg(), "image/jpeg"),
        "text.jpg": (b"Quarterly numbers, definitely not an image.\n" * 40, "image/jpeg"),
        "image.bmp": (encode(photo(60, 40), "BMP"), "image/bmp"),
        "truncated.jpg": (whole[: len(whole) // 2], "image/jpeg"),
        "bomb.png": (encode(Image.new("L", (3000, 3000), 0), "PNG"), "image/png"),
        "forged.png": (forged_png(20_000, 20_000), "image/png"),
        "animated-bomb.gif": (animated_gif(1200, 3), "image/gif"),
    }


@dataclass(frozen=True)
class Stored:
    bucket: str
    bodies: dict[str, bytes]
    etags: dict[str, str]


@pytest.fixture(scope="module")
def stored(s3: Any) -> Stored:
    """One bucket with every sample image, for the whole module."""
    bucket = f"test-transform-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    bodies, etags = {}, {}
    for key, (body, content_type) in objects().items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        bodies[key] = body
        etags[key] = s3.head_object(Bucket=bucket, Key=key)["ETag"]
    return Stored(bucket, bodies, etags)


# --- the stack --------------------------------------------------------------------------------

@dataclass
class Stack:
    client: TestClient[Any, Any]
    signer: UrlSigner
    relay: TcpRelay | None

    @property
    def variants(self) -> VariantService:
        app = self.client.app
        assert app is not None
        service: VariantService = app[keys.VARIANTS]
        return service

    @property
    def transformations(self) -> int:
        return self.variants.pool.completed

    def url(self, key: str, **params: str) -> str:
        return self.signer.sign("photos", key, params=params)

    async def get(self, key: str, headers: dict[str, str] | None = None, /,
                  **params: str) -> tuple[ClientResponse, bytes]:
        response = await self.client.get(self.url(key, **params), headers=headers or {})
        return response, await response.read()

    async def get_image(self, key: str, headers: dict[str, str] | None = None, /,
                        **params: str) -> tuple[ClientResponse, Image.Image]:
        response, body = await self.get(key, headers, **params)
        assert response.status == 200, body
        image = Image.open(io.BytesIO(body))
        image.load()
        return response, image


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
def make_stack(proxy: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str,
               stored: Stored, signer: UrlSigner) -> StackFactory:
    """``await make_stack(transform={...}, cache={...}, relay=True, **source_overrides)``: one
    worker, started with the app, unless ``transform`` says otherwise."""

    async def build(transform: dict[str, Any] | None = None, cache: dict[str, Any] | None = None,
                    relay: bool = False, **source: Any) -> Stack:
        tcp_relay = await relay_to(moto_endpoint) if relay else None
        if tcp_relay is not None:
            source["endpoint_url"] = tcp_relay.endpoint
        client = await proxy(source={"bucket": stored.bucket, **source}, cache=cache or {},
                             transform={"workers": 1, "prestart_workers": True, **(transform or {})})
        return Stack(client, signer, tcp_relay)

    return build


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


async def error_of(response: ClientResponse) -> dict[str, str]:
    body: dict[str, str] = await response.json()
    assert set(body) == {"error", "message", "request_id"}
    return body


# --- the original, untouched ------------------------------------------------------------------

async def test_a_request_without_transform_parameters_streams_the_original_untouched(
        stack: Stack, stored: Stored) -> None:
    response, body = await stack.get("photo.jpg")
    assert response.status == 200
    assert body == stored.bodies["photo.jpg"]
    assert response.headers[hdrs.ETAG] == stored.etags["photo.jpg"]
    assert "X-Cache" not in response.headers
    assert stack.transformations == 0


# --- output -----------------------------------------------------------------------------------

async def test_w_300_gives_a_300_px_wide_jpeg(stack: Stack) -> None:
    response, body = await stack.get("photo.jpg", w="300")
    image = Image.open(io.BytesIO(body))
    assert response.status == 200
    assert response.headers[hdrs.CONTENT_TYPE] == "image/jpeg"
    assert int(response.headers[hdrs.CONTENT_LENGTH]) == len(body)
    assert image.format == "JPEG"
    assert image.size == (300, 225)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"w": "300", "h": "300", "fit": "inside"}, (300, 225)),
        ({"w": "300", "h": "300", "fit": "contain"}, (300, 300)),
        ({"w": "300", "h": "300", "fit": "cover"}, (300, 300)),
        ({"w": "300", "h": "100", "fit": "fill"}, (300, 100)),
        ({"w": "2400"}, (1200, 900)),  # inside never enlarges
    ],
    ids=["inside", "contain", "cover", "fill", "inside-no-enlarge"],
)
async def test_output_dimensions_for_each_fit_mode(stack: Stack, params: dict[str, str],
                                                   expected: tuple[int, int]) -> None:
    _, image = await stack.get_image("photo.jpg", **params)
    assert image.size == expected


async def test_metadata_is_stripped_from_the_output(stack: Stack, stored: Stored) -> None:
    assert b"SecretCam-9000" in stored.bodies["private.jpg"]
    response, body = await stack.get("private.jpg", w="100")
    assert response.status == 200
    assert len(Image.open(io.BytesIO(body)).getexif()) == 0
    assert b"SecretCam-9000" not in body
    assert b"secret-xmp" not in body


async def test_cache_control_is_the_sources(make_stack: StackFactory) -> None:
    stack = await make_stack(cache_control="public, max-age=60")
    response, _ = await stack.get("photo.jpg", w="100")
    assert response.headers[hdrs.CACHE_CONTROL] == "public, max-age=60"


# --- fmt=auto ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("key", "accept", "media_type"),
    [
        pytest.param("photo.jpg", "image/avif,*/*", "image/avif",
                     marks=pytest.mark.skipif(not HAS_AVIF, reason="no AVIF encoder")),
        ("photo.jpg", "image/avif,image/webp,*/*", "image/webp"),  # a tie: transform.auto_prefer's order
        ("photo.jpg", "image/webp,*/*", "image/webp"),
        ("photo.jpg", "image/png,image/*,*/*", "image/jpeg"),
        ("alpha.png", "image/png,image/*,*/*", "image/png"),
        ("alpha.png", "image/webp,*/*", "image/webp"),
    ],
    ids=["avif", "avif-and-webp", "webp", "opaque-legacy", "alpha-legacy", "alpha-webp"],
)
async def test_fmt_auto_picks_the_format_from_accept_and_alpha(stack: Stack, key: str, accept: str,
                                                               media_type: str) -> None:
    response, image = await stack.get_image(key, {hdrs.ACCEPT: accept}, w="100", fmt="auto")
    assert response.headers[hdrs.CONTENT_TYPE] == media_type
    assert Image.MIME[image.format or ""] == media_type


@pytest.mark.skipif(not HAS_AVIF, reason="no AVIF encoder: WebP would win whatever the q values")
async def test_fmt_auto_follows_the_accept_q_values_over_the_format_order(stack: Stack) -> None:
    response, image = await stack.get_image("photo.jpg", {hdrs.ACCEPT: "image/avif;q=0.9, image/webp;q=0.8"},
                                            w="100", fmt="auto")
    assert response.headers[hdrs.CONTENT_TYPE] == "image/avif"
    assert image.format == "AVIF"
    webp, _ = await stack.get("photo.jpg", {hdrs.ACCEPT: "image/avif;q=0.9, image/webp;q=0.9"},
                              w="100", fmt="auto")
    assert webp.headers[hdrs.CONTENT_TYPE] == "image/webp"  # a tie goes to WebP (auto_prefer)
    assert webp.headers[hdrs.ETAG] != response.headers[hdrs.ETAG]


async def test_fmt_auto_ignores_a_range_whose_q_is_nan(stack: Stack) -> None:
    response, _ = await stack.get("photo.jpg", {hdrs.ACCEPT: "image/webp;q=nan, image/jpeg;q=0.5"},
                                  w="100", fmt="auto")
    assert response.headers[hdrs.CONTENT_TYPE] == "image/jpeg"


async def test_fmt_auto_keeps_the_alpha_channel(stack: Stack) -> None:
    _, image = await stack.get_image("alpha.png", {hdrs.ACCEPT: "image/webp"}, w="100", fmt="auto")
    assert image.convert("RGBA").getchannel("A").getextrema() == (0, 255)


async def test_fmt_auto_sends_vary_accept(stack: Stack) -> None:
    response, _ = await stack.get("photo.jpg", {hdrs.ACCEPT: "image/webp"}, w="100", fmt="auto")
    assert response.headers[hdrs.VARY] == "Accept"


async def test_a_fixed_format_does_not_vary_by_accept(stack: Stack) -> None:
    response, _ = await stack.get("photo.jpg", {hdrs.ACCEPT: "image/webp"}, w="100", fmt="png")
    assert response.headers[hdrs.CONTENT_TYPE] == "image/png"
    assert hdrs.VARY not in response.headers


# --- ETag -------------------------------------------------------------------------------------

async def test_the_variant_etag_is_strong_and_not_the_sources(stack: Stack, stored: Stored) -> None:
    response, _ = await stack.get("photo.jpg", w="100")
    etag = response.headers[hdrs.ETAG]
    assert re.fullmatch(r'"[!#-~]+"', etag)  # strong: no W/ prefix
    assert etag != stored.etags["photo.jpg"]


async def test_the_variant_etag_differs_per_parameters(stack: Stack) -> None:
    etags = set()
    for params in ({"w": "100"}, {"w": "101"}, {"h": "100"}, {"w": "100", "fmt": "png"},
                   {"w": "100", "q": "50"}, {"w": "100", "h": "100", "fit": "cover"}):
        response, _ = await stack.get("photo.jpg", **params)
        etags.add(response.headers[hdrs.ETAG])
    assert len(etags) == 6


async def test_the_variant_etag_differs_per_accept_class(stack: Stack) -> None:
    accepts = ["image/webp,*/*", "image/png,*/*"] + (["image/avif,*/*"] if HAS_AVIF else [])
    etags = set()
    for accept in accepts:
        response, _ = await stack.get("photo.jpg", {hdrs.ACCEPT: accept}, w="100", fmt="auto")
        etags.add(response.headers[hdrs.ETAG])
    assert len(etags) == len(accepts)


async def test_accepts_of_the_same_class_share_one_variant(stack: Stack) -> None:
    first, _ = await stack.get("photo.jpg", {hdrs.ACCEPT: "image/webp"}, w="100", fmt="auto")
    second, _ = await stack.get("photo.jpg", {hdrs.ACCEPT: "text/html,image/webp;q=0.9,*/*;q=0.8"},
                                w="100", fmt="auto")
    assert second.headers[hdrs.ETAG] == first.headers[hdrs.ETAG]
    assert second.headers["X-Cache"] == "HIT"


async def test_w_150_at_dpr_2_is_the_same_variant_as_w_300(stack: Stack) -> None:
    first, first_body = await stack.get("photo.jpg", w="300")
    second, second_body = await stack.get("photo.jpg", w="150", dpr="2")
    assert second.headers[hdrs.ETAG] == first.headers[hdrs.ETAG]
    assert second.headers["X-Cache"] == "HIT"
    assert second_body == first_body


# --- 304 --------------------------------------------------------------------------------------

async def test_if_none_match_with_the_variant_etag_is_304_without_touching_storage(
        make_stack: StackFactory) -> None:
    stack = await make_stack(relay=True)
    assert stack.relay is not None
    first, _ = await stack.get("photo.jpg", w="300")
    before = (stack.relay.bytes_to_upstream, stack.relay.bytes_from_upstream, stack.transformations)
    response, body = await stack.get("photo.jpg", {hdrs.IF_NONE_MATCH: first.headers[hdrs.ETAG]}, w="300")
    assert response.status == 304
    assert body == b""
    assert response.headers[hdrs.ETAG] == first.headers[hdrs.ETAG]
    assert (stack.relay.bytes_to_upstream, stack.relay.bytes_from_upstream, stack.transformations) == before


async def test_a_fresh_server_answers_a_known_variant_etag_with_304_after_a_head_only(
        make_stack: StackFactory, stored: Stored) -> None:
    # The browser kept the variant across a proxy restart: the new process has no caches, so it
    # may ask S3 for the source's ETag (HEAD), but must neither GET the object nor decode it.
    earlier = await make_stack()
    first, _ = await earlier.get("photo.jpg", w="300")
    stack = await make_stack(relay=True)
    assert stack.relay is not None
    response, _ = await stack.get("photo.jpg", {hdrs.IF_NONE_MATCH: first.headers[hdrs.ETAG]}, w="300")
    assert response.status == 304
    assert stack.relay.bytes_from_upstream < len(stored.bodies["photo.jpg"]) // 4
    assert stack.transformations == 0


async def test_the_sources_etag_does_not_match_a_variant(stack: Stack, stored: Stored) -> None:
    response, _ = await stack.get("photo.jpg", {hdrs.IF_NONE_MATCH: stored.etags["photo.jpg"]}, w="300")
    assert response.status == 200


# --- variant cache, coalescing, timing --------------------------------------------------------

async def test_x_cache_is_miss_then_hit(stack: Stack) -> None:
    first, first_body = await stack.get("photo.jpg", w="200")
    second, second_body = await stack.get("photo.jpg", w="200")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert second_body == first_body
    assert stack.transformations == 1


async def test_server_timing_gives_storage_transform_and_total(stack: Stack) -> None:
    response, _ = await stack.get("photo.jpg", w="200")
    timing = dict(re.findall(r"(\w+);dur=([0-9.]+)", response.headers["Server-Timing"]))
    assert set(timing) == {"storage", "transform", "total"}
    assert float(timing["storage"]) > 0
    assert float(timing["transform"]) > 0
    assert float(timing["total"]) >= float(timing["storage"]) + float(timing["transform"])


async def test_server_timing_names_the_delivery_and_cache_result_for_page_scripts(stack: Stack) -> None:
    first, _ = await stack.get("photo.jpg", w="200")
    second, _ = await stack.get("photo.jpg", w="200")
    for response, state in ((first, "MISS"), (second, "HIT")):
        facts = dict(re.findall(r"(\w+);desc=(\w+)", response.headers["Server-Timing"]))
        assert facts == {"delivery": "stream", "cache": state}
        assert "total;dur=" in response.headers["Server-Timing"]


async def test_concurrent_identical_requests_are_transformed_once(make_stack: StackFactory) -> None:
    # The variant cache is off, so only coalescing can make 8 requests cost one transformation.
    # The source's metadata is cached first (by another variant) so all 8 reach the coalescer
    # while the first one's render (a 2000 px PNG from a 4000x3000 JPEG) is still running.
    stack = await make_stack(cache={"variant_bytes": 0})
    await stack.get("large.jpg", w="50")
    assert stack.transformations == 1
    results = await asyncio.gather(*(stack.get("large.jpg", w="2000", fmt="png") for _ in range(8)))
    assert stack.transformations == 2
    assert stack.variants.coalescer.coalesced == 7
    assert {response.status for response, _ in results} == {200}
    assert len({body for _, body in results}) == 1
    assert len({response.headers[hdrs.ETAG] for response, _ in results}) == 1


async def test_with_the_variant_cache_disabled_every_request_transforms(make_stack: StackFactory) -> None:
    stack = await make_stack(cache={"variant_bytes": 0})
    states = [(await stack.get("photo.jpg", w="120"))[0].headers["X-Cache"] for _ in range(3)]
    assert states == ["MISS", "MISS", "MISS"]
    assert stack.transformations == 3


# --- limits and hostile input -----------------------------------------------------------------

HOSTILE = [
    ("large.jpg", 413, "source_too_large"),
    ("bomb.png", 422, ImageTooLarge.code),
    ("forged.png", 422, ImageTooLarge.code),
    ("animated-bomb.gif", 422, ImageTooLarge.code),  # one frame fits; three frames do not
    ("text.jpg", 415, NotAnImage.code),
    ("image.bmp", 415, NotAnImage.code),  # BMP is not on the default input allowlist
    ("truncated.jpg", 422, UnprocessableImage.code),
]
HOSTILE_IDS = [key for key, _, _ in HOSTILE]


@pytest.fixture
async def guarded(make_stack: StackFactory) -> Stack:
    return await make_stack(transform=HOSTILE_LIMITS)


@pytest.mark.parametrize(("key", "status", "code"), HOSTILE, ids=HOSTILE_IDS)
async def test_hostile_input_is_answered_with_its_error(guarded: Stack, key: str, status: int,
                                                        code: str) -> None:
    response, _ = await guarded.get(key, w="100")
    assert response.status == status
    assert (await error_of(response))["error"] == code


@pytest.mark.parametrize(("key", "status", "code"), HOSTILE, ids=HOSTILE_IDS)
async def test_the_server_still_transforms_after_hostile_input(guarded: Stack, key: str, status: int,
                                                               code: str) -> None:
    response, _ = await guarded.get(key, w="100")
    assert response.status == status
    _, image = await guarded.get_image("photo.jpg", w="100")
    assert image.size == (100, 75)


async def test_a_source_over_the_byte_limit_is_413_with_a_message_naming_the_limit(guarded: Stack) -> None:
    response, _ = await guarded.get("large.jpg", w="100")
    message = (await error_of(response))["message"]
    assert response.status == 413
    assert "larger than 262144 bytes" in message


async def test_a_source_over_the_byte_limit_still_streams_untransformed(guarded: Stack,
                                                                       stored: Stored) -> None:
    response, body = await guarded.get("large.jpg")
    assert response.status == 200
    assert body == stored.bodies["large.jpg"]


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("bomb.png", ImageTooLarge),
        ("text.jpg", NotAnImage),
        ("truncated.jpg", UnprocessableImage),
    ],
)
async def test_a_hostile_input_error_has_its_public_message(
        guarded: Stack, key: str, error: type[UnprocessableImage | NotAnImage]) -> None:
    response, _ = await guarded.get(key, w="100")
    assert (await error_of(response))["message"] == error.public_message


async def test_a_width_above_the_configured_maximum_is_400_naming_w(make_stack: StackFactory) -> None:
    stack = await make_stack(transform={"max_width": 500})
    response, _ = await stack.get("photo.jpg", w="501")
    body = await error_of(response)
    assert response.status == 400
    assert body["error"] == "invalid_parameter"
    assert "Parameter 'w'" in body["message"]
    assert stack.transformations == 0


async def test_an_unknown_parameter_is_400_naming_it(stack: Stack) -> None:
    response, _ = await stack.get("photo.jpg", w="100", blur="5")
    body = await error_of(response)
    assert response.status == 400
    assert "'blur'" in body["message"]


async def test_a_saturated_pool_answers_503_with_retry_after(make_stack: StackFactory) -> None:
    stack = await make_stack(transform={"workers": 1, "queue_size": 0})
    # Four distinct renders of the 4000x3000 photo at once: one worker, no queue.
    results = await asyncio.gather(*(stack.get("large.jpg", w=str(2000 - i), fmt="png") for i in range(4)))
    statuses = sorted(response.status for response, _ in results)
    rejected = [response for response, _ in results if response.status == 503]
    assert statuses[0] == 200
    assert rejected
    assert all(response.headers[hdrs.RETRY_AFTER] == "1" for response in rejected)
    assert {(await error_of(response))["error"] for response in rejected} == {"overloaded"}


async def test_a_transform_over_the_time_limit_is_422_and_the_worker_is_free_again(
        make_stack: StackFactory) -> None:
    # At PNG compression level 9 this render takes over 3 s; the limit is 0.1 s.
    stack = await make_stack(transform={"workers": 1, "timeout": 0.1, "png_compress_level": 9})
    response, _ = await stack.get("large.jpg", w="4000", fmt="png")
    assert response.status == 422
    assert (await error_of(response))["error"] == TransformTimeout.code
    # The one worker answers the next job at once: the slow one was stopped, not left running.
    started = time.monotonic()
    _, image = await stack.get_image("photo.jpg", w="100")
    assert image.size == (100, 75)
    assert time.monotonic() - started < 1.5
