"""Placeholders through the whole stack: ``[sources.NAME.fallback]`` and ``initials=``, with S3 on
moto (through the byte-counting ``TcpRelay`` where "no further S3 read" matters) and the worker
pool drawing for real; every answer decoded with Pillow."""

from __future__ import annotations

import io
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse, hdrs
from aiohttp.test_utils import TestClient
from PIL import Image
from support import ProxyFactory, RelayFactory, metric_samples
from tcp_relay import TcpRelay

from imgproxy.auth.signing import UrlSigner
from imgproxy.web.appkeys import METRICS

FALLBACK_KEY = "defaults/silhouette.png"
FALLBACK_COLOUR = (10, 200, 30)
PHOTO_COLOUR = (200, 40, 40)


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def stored(s3: Any) -> str:
    """A bucket with a fallback object (a 300x200 green PNG) and one photo (a red JPEG)."""
    bucket = f"test-fallback-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=FALLBACK_KEY, Body=png((300, 200), FALLBACK_COLOUR),
                  ContentType="image/png")
    s3.put_object(Bucket=bucket, Key="people/present.jpg", Body=jpeg((400, 300), PHOTO_COLOUR),
                  ContentType="image/jpeg")
    return bucket


@dataclass
class Stack:
    client: TestClient[Any, Any]
    signer: UrlSigner
    relay: TcpRelay | None

    def url(self, key: str, **params: str) -> str:
        return self.signer.sign("photos", key, params=params)

    async def get(self, key: str, headers: dict[str, str] | None = None, /,
                  **params: str) -> tuple[ClientResponse, bytes]:
        response = await self.client.get(self.url(key, **params), headers=headers or {})
        return response, await response.read()

    def fallbacks(self) -> dict[tuple[str, str, str], float]:
        app = self.client.app
        assert app is not None
        samples = metric_samples(app[METRICS].exposition().decode())
        return {(labels["source"], labels["kind"], labels["status"]): value
                for (name, frozen), value in samples.items() if name == "imgproxy_fallbacks_total"
                for labels in (dict(frozen),)}


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
def make_stack(proxy: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str, stored: str,
               signer: UrlSigner) -> StackFactory:
    """``await make_stack(fallback={...}, relay=True, **source_overrides)``: one image worker."""

    async def build(fallback: dict[str, Any] | None = None, relay: bool = False,
                    presets: dict[str, Any] | None = None, **source: Any) -> Stack:
        tcp_relay = await relay_to(moto_endpoint) if relay else None
        if tcp_relay is not None:
            source["endpoint_url"] = tcp_relay.endpoint
        if fallback is not None:
            source["fallback"] = fallback
        client = await proxy(source={"bucket": stored, **source},
                             transform={"workers": 1, "prestart_workers": True, "presets": presets or {}})
        return Stack(client, signer, tcp_relay)

    return build


def decoded(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    image.load()
    return image


def pixels(image: Image.Image) -> list[tuple[int, ...]]:
    found = [p for p in image.convert("RGB").get_flattened_data() if isinstance(p, tuple)]
    assert len(found) == image.width * image.height
    return found


def near(pixel: object, colour: tuple[int, int, int], tolerance: int = 12) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


# --- the fallback object ----------------------------------------------------------------------

async def test_a_missing_photo_gets_the_fallback_object_at_the_requested_size(
        make_stack: StackFactory) -> None:
    stack = await make_stack({"key": FALLBACK_KEY})
    response, body = await stack.get("people/missing.jpg", w="96", h="96", fit="cover")
    assert response.status == 404  # the status is kept: CDNs, fetch() and monitoring see the truth
    assert response.headers["X-Fallback"] == "1"
    assert response.headers[hdrs.CACHE_CONTROL] == "private, max-age=60"
    image = decoded(body)
    assert image.size == (96, 96)
    assert near(image.convert("RGB").getpixel((48, 48)), FALLBACK_COLOUR)


async def test_status_200_when_the_fallback_says_so(make_stack: StackFactory) -> None:
    stack = await make_stack({"key": FALLBACK_KEY, "status": 200, "cache_control": "public, max-age=30"})
    response, body = await stack.get("people/missing.jpg", w="50")
    assert response.status == 200
    assert response.headers["X-Fallback"] == "1"
    assert response.headers[hdrs.CACHE_CONTROL] == "public, max-age=30"
    assert decoded(body).size == (50, 33)  # the fallback's own 3:2, as the transform asks


async def test_an_untransformed_request_gets_the_fallback_object_as_stored(
        make_stack: StackFactory, s3: Any, stored: str) -> None:
    stack = await make_stack({"key": FALLBACK_KEY})
    response, body = await stack.get("people/missing.jpg")
    assert response.status == 404
    assert response.headers["X-Fallback"] == "1"
    assert response.headers[hdrs.CONTENT_TYPE] == "image/png"
    assert body == s3.get_object(Bucket=stored, Key=FALLBACK_KEY)["Body"].read()
    assert response.headers[hdrs.ETAG].startswith('"fb-')
    head = await stack.client.head(stack.url("people/missing.jpg"))
    assert head.status == 404
    assert head.headers["X-Fallback"] == "1"
    assert head.headers[hdrs.CONTENT_LENGTH] == str(len(body))


async def test_an_existing_photo_is_served_not_its_fallback(make_stack: StackFactory) -> None:
    stack = await make_stack({"key": FALLBACK_KEY, "status": 200})
    response, body = await stack.get("people/present.jpg", w="96", h="96", fit="cover")
    assert response.status == 200
    assert "X-Fallback" not in response.headers
    assert near(decoded(body).getpixel((48, 48)), PHOTO_COLOUR)


async def test_fallbacks_are_counted_by_source_kind_and_status(make_stack: StackFactory) -> None:
    stack = await make_stack({"key": FALLBACK_KEY})
    for _ in range(2):
        response, _ = await stack.get("people/missing.jpg", w="64", h="64", fit="cover")
        assert response.headers["X-Fallback"] == "1"
    await stack.get("people/missing.jpg", w="64", h="64", fit="cover", initials="AB")
    await stack.get("people/present.jpg", w="64", h="64", fit="cover")
    assert stack.fallbacks() == {("photos", "object", "404"): 2.0, ("photos", "initials", "404"): 1.0}


async def test_unauthorized_requests_never_get_a_fallback(make_stack: StackFactory) -> None:
    stack = await make_stack({"key": FALLBACK_KEY, "status": 200})
    url = stack.url("people/missing.jpg", w="96", h="96", fit="cover", initials="AB")
    sig = url.rsplit("sig=", 1)[1]
    forged = url.replace(f"sig={sig}", f"sig={'A' if sig[0] != 'A' else 'B'}{sig[1:]}")
    response = await stack.client.get(forged)
    assert response.status == 403
    assert "X-Fallback" not in response.headers
    assert (await response.json())["error"] == "invalid_signature"
    anonymous = await stack.client.get("/img/photos/people/missing.jpg?w=96")
    assert anonymous.status == 401
    assert "X-Fallback" not in anonymous.headers
    assert stack.fallbacks() == {}


async def test_a_missing_fallback_object_leaves_the_plain_404(make_stack: StackFactory) -> None:
    stack = await make_stack({"key": "defaults/not-there.png", "status": 200})
    for params in ({"w": "96"}, {}):
        response, _ = await stack.get("people/missing.jpg", **params)
        assert response.status == 404, params
        assert "X-Fallback" not in response.headers
        assert response.content_type == "application/json"
        assert (await response.json())["error"] == "not_found"
    assert stack.fallbacks() == {}


async def test_a_fallbacks_etag_is_never_the_photos_so_a_new_photo_is_fetched(
        make_stack: StackFactory, s3: Any, stored: str) -> None:
    stack = await make_stack({"key": FALLBACK_KEY, "status": 200})
    key = f"people/new-{uuid.uuid4().hex[:8]}.jpg"
    first, _ = await stack.get(key, w="80", h="80", fit="cover")
    assert first.headers["X-Fallback"] == "1"
    placeholder_etag = first.headers[hdrs.ETAG]
    assert placeholder_etag.startswith('"fb-')
    s3.put_object(Bucket=stored, Key=key, Body=jpeg((400, 300), PHOTO_COLOUR), ContentType="image/jpeg")
    again, body = await stack.get(key, {hdrs.IF_NONE_MATCH: placeholder_etag}, w="80", h="80", fit="cover")
    assert again.status == 200
    assert "X-Fallback" not in again.headers
    assert again.headers[hdrs.ETAG] != placeholder_etag
    assert near(decoded(body).getpixel((40, 40)), PHOTO_COLOUR)


async def test_statuses_the_fallback_does_not_list_keep_their_error(make_stack: StackFactory) -> None:
    # S3 unreachable: a connection refused is a 502 storage_error; only 404 is listed.
    stack = await make_stack({"builtin": "silhouette"}, endpoint_url="http://127.0.0.1:9", max_attempts=1)
    response, _ = await stack.get("people/missing.jpg", w="96", h="96")
    assert response.status == 502
    assert "X-Fallback" not in response.headers


async def test_a_listed_storage_error_gets_the_silhouette_with_its_status(make_stack: StackFactory) -> None:
    stack = await make_stack({"builtin": "silhouette", "statuses": [404, 502]},
                             endpoint_url="http://127.0.0.1:9", max_attempts=1)
    response, body = await stack.get("people/missing.jpg", w="96", h="96")
    assert response.status == 502
    assert response.headers["X-Fallback"] == "1"
    assert decoded(body).size == (96, 96)
    assert stack.fallbacks() == {("photos", "silhouette", "502"): 1.0}


# --- drawn placeholders: silhouette and initials ----------------------------------------------

async def test_the_builtin_silhouette_is_drawn_at_the_requested_size_without_an_s3_read(
        make_stack: StackFactory) -> None:
    stack = await make_stack({"builtin": "silhouette"}, relay=True)
    assert stack.relay is not None
    response, body = await stack.get("people/missing.jpg", w="120", h="90", fit="cover", fmt="jpeg")
    assert response.status == 404
    assert response.headers["X-Fallback"] == "1"
    assert response.headers[hdrs.CONTENT_TYPE] == "image/jpeg"
    image = decoded(body)
    assert image.size == (120, 90)
    assert len(set(pixels(image))) > 2  # a figure on a background, not a blank
    assert stack.relay.requests_sent() == 1  # the photo's own read; the drawing read nothing


async def test_initials_render_an_avatar_for_a_missing_photo(make_stack: StackFactory) -> None:
    stack = await make_stack()  # no [sources.photos.fallback]: initials need none
    response, body = await stack.get("people/missing.jpg", w="96", h="96", fit="cover", initials="ab",
                                     bg="336699")
    assert response.status == 404
    assert response.headers["X-Fallback"] == "1"
    assert response.headers[hdrs.CACHE_CONTROL] == "private, max-age=60"
    assert response.headers[hdrs.CONTENT_TYPE] == "image/png"
    image = decoded(body).convert("RGB")
    assert image.size == (96, 96)
    assert image.getpixel((2, 2)) == (0x33, 0x66, 0x99)  # the bg colour in the corner
    letters = [p for p in pixels(image) if p != (0x33, 0x66, 0x99)]
    assert len(letters) > 200  # "AB" in white: not blank
    assert (255, 255, 255) in letters


async def test_initials_without_a_size_draw_the_default_avatar_in_the_asked_format(
        make_stack: StackFactory) -> None:
    stack = await make_stack()
    response, body = await stack.get("people/missing.jpg", initials="Zoë")
    assert response.status == 404
    assert decoded(body).size == (256, 256)
    webp, body = await stack.get("people/missing.jpg", w="40", fmt="webp", initials="ZO")
    assert webp.headers[hdrs.CONTENT_TYPE] == "image/webp"
    assert decoded(body).size == (40, 40)


async def test_initials_with_status_200_from_the_sources_fallback_table(make_stack: StackFactory) -> None:
    stack = await make_stack({"key": FALLBACK_KEY, "status": 200})
    response, body = await stack.get("people/missing.jpg", w="64", h="64", fit="cover", initials="Q",
                                     bg="ffffff")
    assert response.status == 200
    image = decoded(body).convert("RGB")
    assert image.getpixel((1, 1)) == (255, 255, 255)  # the avatar, not the green fallback object
    assert min(sum(pixel) for pixel in pixels(image)) < 300  # dark letters on white


async def test_the_initials_avatar_reads_nothing_more_from_s3(make_stack: StackFactory) -> None:
    stack = await make_stack({"key": FALLBACK_KEY}, relay=True)
    assert stack.relay is not None
    response, _ = await stack.get("people/missing.jpg", w="96", h="96", fit="cover", initials="AB")
    assert response.headers["X-Fallback"] == "1"
    assert stack.relay.requests_sent() == 1  # the photo's read (a 404); no fallback object read
    again, _ = await stack.get("people/missing.jpg", w="96", h="96", fit="cover", initials="AB")
    assert again.headers["X-Cache"] == "HIT"  # the avatar itself is cached
    assert stack.relay.requests_sent() == 2  # the photo is looked up again: it may exist now


async def test_a_photo_that_exists_is_served_even_with_initials_and_shares_its_variant(
        make_stack: StackFactory) -> None:
    stack = await make_stack()
    plain, plain_body = await stack.get("people/present.jpg", w="96", h="96", fit="cover")
    assert plain.headers["X-Cache"] == "MISS"
    with_initials, body = await stack.get("people/present.jpg", w="96", h="96", fit="cover", initials="AB")
    assert with_initials.status == 200
    assert "X-Fallback" not in with_initials.headers
    assert with_initials.headers["X-Cache"] == "HIT"  # the same variant, not a second render
    assert with_initials.headers[hdrs.ETAG] == plain.headers[hdrs.ETAG]
    assert body == plain_body
    original, _ = await stack.get("people/present.jpg", initials="AB")
    assert original.status == 200
    assert original.headers[hdrs.CONTENT_TYPE] == "image/jpeg"  # the original, untouched
    assert "X-Fallback" not in original.headers


async def test_bad_initials_are_a_400(make_stack: StackFactory) -> None:
    stack = await make_stack()
    for value in ("ABCD", "A1", "Жа", ""):
        response, _ = await stack.get("people/present.jpg", w="96", initials=value)
        assert response.status == 400, value
        assert (await response.json())["error"] == "invalid_parameter"


async def test_a_presets_initials_avatar_has_the_presets_size_and_the_photo_its_variant(
        make_stack: StackFactory) -> None:
    stack = await make_stack(presets={"thumb": {"w": 72, "h": 72, "fit": "cover", "fmt": "webp"}})
    response, body = await stack.get("people/missing.jpg", preset="thumb", initials="AB")
    assert response.status == 404
    assert response.headers["X-Fallback"] == "1"
    assert response.headers[hdrs.CONTENT_TYPE] == "image/webp"
    assert decoded(body).size == (72, 72)
    plain, _ = await stack.get("people/present.jpg", preset="thumb")
    with_initials, _ = await stack.get("people/present.jpg", preset="thumb", initials="AB")
    assert (plain.status, with_initials.status) == (200, 200)
    assert with_initials.headers[hdrs.ETAG] == plain.headers[hdrs.ETAG]
    assert with_initials.headers["X-Cache"] == "HIT"
