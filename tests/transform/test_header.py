"""transform/header.py: what first bytes say, from files Pillow writes, and refusals of broken or
hostile headers (a clear 415/422, or a request for more bytes; never an exception of another kind)."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from imgproxy.errors import NotAnImage, ProxyError, UnprocessableImage
from imgproxy.transform.header import Header, NeedBytes, read_header, tiff_orientation


def saved(fmt: str, size: tuple[int, int], mode: str = "RGB", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, fmt, **options)
    return buffer.getvalue()


def header_of(data: bytes, start: int = 16) -> tuple[Header, int]:
    """Feed the prefix as the server does (at least doubling); the header and the bytes it took."""
    end = start
    while True:
        found = read_header(data[:end], len(data))
        if isinstance(found, Header):
            return found, end
        assert found.end > end or end >= len(data)
        end = min(len(data), max(found.end, 2 * end))


def with_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


@pytest.mark.parametrize(("data", "expected"), [
    (saved("JPEG", (123, 45)), Header("JPEG", 123, 45, 1)),
    (saved("JPEG", (123, 45), exif=with_exif(6)), Header("JPEG", 45, 123, 1, 6)),
    (saved("JPEG", (123, 45), exif=with_exif(3)), Header("JPEG", 123, 45, 1, 3)),
    (saved("PNG", (7, 9), "RGBA"), Header("PNG", 7, 9, 1)),
    (saved("PNG", (7, 9), exif=with_exif(8)), Header("PNG", 9, 7, 1, 8)),
    (saved("GIF", (640, 1), "P"), Header("GIF", 640, 1, None)),
    (saved("WEBP", (99, 77)), Header("WEBP", 99, 77, 1)),
    (saved("WEBP", (99, 77), "RGBA", lossless=True), Header("WEBP", 99, 77, 1)),
    (saved("AVIF", (64, 48)), Header("AVIF", 64, 48, 1)),
], ids=["jpeg", "jpeg-exif-6", "jpeg-exif-3", "png", "png-exif-8", "gif", "webp-lossy", "webp-lossless",
        "avif"])
def test_the_header_is_what_pillow_wrote(data: bytes, expected: Header) -> None:
    assert header_of(data)[0] == expected


def test_an_animated_png_tells_its_frames() -> None:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (10, 10), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    assert header_of(buffer.getvalue())[0] == Header("PNG", 10, 10, 3)


def test_an_animated_webp_has_no_cheap_frame_count() -> None:
    buffer = io.BytesIO()
    frames = [Image.new("RGB", (10, 10), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:])
    assert header_of(buffer.getvalue())[0] == Header("WEBP", 10, 10, None)


def test_a_frame_header_after_big_segments_asks_for_exactly_the_bytes_up_to_it() -> None:
    data = saved("JPEG", (50, 40))
    padding = b"".join(b"\xff\xe2" + (60002).to_bytes(2, "big") + bytes(60000) for _ in range(4))
    data = data[:2] + padding + data[2:] + bytes(1_000_000)  # and a long body after the header
    found = read_header(data[:65536], len(data))
    assert isinstance(found, NeedBytes)
    assert found.end == 2 + 2 * 60004 + 4  # the next marker after the second segment
    header, used = header_of(data, 65536)
    assert header == Header("JPEG", 50, 40, 1)
    assert used < len(data)


@pytest.mark.parametrize("data", [b"", b"GIF", b"hello world, this is text", b"\0" * 64, b"%PDF-1.7\n" * 4,
                                  b"\0\0\0\x18ftypisom\0\0\0\0isommp41" + bytes(16)],
                         ids=["empty", "short", "text", "zeros", "pdf", "mp4"])
def test_what_no_image_starts_with_is_415(data: bytes) -> None:
    with pytest.raises(NotAnImage):
        read_header(data, len(data))


@pytest.mark.parametrize("data", [
    b"\xff\xd8\xff\xe1\xff\xff" + bytes(100),  # a segment past the object's end
    b"\xff\xd8\xff\xda\x00\x08" + bytes(100),  # a scan before any frame header
    b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x00\x03" + bytes(100),  # a 0x0 frame
    b"\xff\xd8\xff\xe0\x00\x01" + bytes(100),  # a length below 2
    b"\xff\xd8\xff\xe0\x00\x10" + bytes(14) + b"\x00\x00" + bytes(20),  # no marker where one belongs
    b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR" + bytes(17),  # 0x0
    b"\x89PNG\r\n\x1a\n\0\0\0\x0dIDAT" + bytes(17),  # IHDR not first
    b"RIFF\0\0\0\0WEBPVP8 " + bytes(20),  # no start code
    b"\0\0\0\x18ftypavif\0\0\0\0avifmif1" + b"\xff" * 64,  # boxes past their parent
    b"\0\0\0\x18ftypavif\0\0\0\0avifmif1\0\0\0\x08free",  # no primary item
], ids=["jpeg-past-end", "jpeg-scan-first", "jpeg-zero", "jpeg-short-length", "jpeg-no-marker",
        "png-zero", "png-idat-first", "webp-no-start", "avif-past-parent", "avif-no-item"])
def test_broken_headers_are_422(data: bytes) -> None:
    with pytest.raises(UnprocessableImage):
        header_of(data)


@pytest.mark.parametrize("data", [
    b"\0\0\0\x18ftypavif\0\0\0\0avifmif1\0\0\0\x14meta\0\0\0\0\0\0\0\x08pitm",  # an empty pitm, last
    b"RIFF\0\0\0\0WEBPVP8L" + bytes(4) + b"\x2f",  # cut right after the signature
])
def test_structures_cut_short_are_422_not_a_crash(data: bytes) -> None:
    with pytest.raises(UnprocessableImage):
        header_of(data)


def test_fuzzed_headers_only_ever_raise_proxy_errors() -> None:
    """Mutated real headers: a Header, a NeedBytes within the object, or a 415/422; never a crash."""
    seeds = [saved("JPEG", (40, 30), exif=with_exif(6)), saved("PNG", (5, 5)), saved("WEBP", (9, 9)),
             saved("AVIF", (16, 16)), saved("GIF", (3, 3), "P")]
    rng = random.Random(15)
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[:rng.randint(1, len(data))]
        try:
            found = read_header(bytes(data), len(data))
        except ProxyError:
            continue
        assert not isinstance(found, NeedBytes) or found.end <= len(data) or len(data) < 16


@pytest.mark.parametrize(("tiff", "expected"), [
    (b"", 1), (b"II*\0", 1), (b"XX*\0\x08\0\0\0" + bytes(20), 1),
    (b"II*\0\xff\xff\xff\xff", 1),  # IFD offset past the end
    (b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x09\0\0", 1),  # orientation 9: none
    (b"MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x05\0\0", 5),
    (b"II*\0\x08\0\0\0\xff\xff" + bytes(24), 1),  # 65535 entries claimed, two present
])
def test_tiff_orientation_treats_broken_exif_as_none(tiff: bytes, expected: int) -> None:
    assert tiff_orientation(tiff) == expected
