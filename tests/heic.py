"""HEIC files generated with pillow-heif itself (its encoder, never its Pillow plugin: the test
process must not register a HEIF opener that the serving process would then seem to have).

Shared by the HEIF tests (``tests/test_heif_*.py``) and ``bench/bench_heif.py``.
"""

from __future__ import annotations

import io
import struct

import pillow_heif
from PIL import ExifTags, Image, ImageDraw

RED: tuple[int, int, int] = (230, 20, 20)


def heic(image: Image.Image, *, quality: int = 60, orientation: int | None = None,
         **options: object) -> bytes:
    """``image`` as HEIC; ``orientation``: stored as EXIF (and by pillow-heif as ``irot``/``imir``)."""
    if orientation is not None:
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, quality=quality, **options)
    return buffer.getvalue()


def with_primary_second(first: Image.Image, primary: Image.Image) -> bytes:
    """A HEIF of two images whose primary (the one a viewer shows) is the second."""
    container = pillow_heif.from_pillow(first)
    container.add_from_pillow(primary)
    buffer = io.BytesIO()
    container.save(buffer, quality=60, primary_index=1)
    return buffer.getvalue()


def marked(width: int, height: int) -> Image.Image:
    """White, with a red block in the top-left corner (a quarter of each side): where it lands in
    a render tells how the picture was turned."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((0, 0, width // 4 - 1, height // 4 - 1), fill=RED)
    return image


def declaring(width: int, height: int) -> bytes:
    """A HEIC of a few hundred bytes whose header (``ispe``) declares ``width`` x ``height``: its
    coded picture is 64x64, so decoding it fails (``corrupt_image``); only a check made before
    decoding can call it too large."""
    data = bytearray(heic(Image.new("RGB", (64, 64), (0, 0, 255)), quality=30))
    at = data.find(b"ispe")
    assert at > 0
    assert data.count(b"ispe") == 1
    data[at + 8:at + 16] = struct.pack(">II", width, height)  # after the box's version and flags
    return bytes(data)


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    pixel = image.convert("RGB").getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel[0], pixel[1], pixel[2]


def is_red(image: Image.Image, xy: tuple[int, int]) -> bool:
    r, g, b = rgb_at(image, xy)
    return r > 180 and g < 90 and b < 90
