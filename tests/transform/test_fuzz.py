"""transform/steps.py on mutated images: ``render()`` succeeds or raises a ProxyError, nothing else.

Small valid JPEG, PNG, GIF, WebP and (where Pillow has it) AVIF files, carrying the metadata real
photos carry (EXIF, ICC, XMP, comments), are mutated with a seeded RNG: byte flips, truncations
(anywhere, and right at the start of a block or just after its introducer), random bytes in the
header, chunks duplicated, dropped, swapped or inserted, blocks (metadata or not) refilled with
EXIF-like garbage behind valid framing, and blocks of garbage metadata added. Each format gets an
equal share of ``FUZZ_SECONDS``; iteration ``i`` of a format always makes the same mutation
(``mutate(fmt, i)``, for this Pillow build), so a failure names what to replay. Any exception
other than a ProxyError is a bug (the server would answer it with a 500), and so is a ProxyError
whose log detail quotes the client's bytes.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from PIL import ExifTags, Image, ImageCms, ImageDraw, PngImagePlugin, features

from imgproxy.config import DEFAULT_INPUT_FORMATS
from imgproxy.errors import ProxyError
from imgproxy.transform.jobs import RenderSettings
from imgproxy.transform.params import OutputFormat, TransformLimits, TransformSpec, parse_transform
from imgproxy.transform.steps import render

FUZZ_SECONDS = 4.0  # wall time for the whole module, shared equally by the formats
SEED = 20240610
MAX_REPORTED = 8  # distinct failures listed when the test fails

HAS_AVIF = features.check("avif")
FORMATS = ["JPEG", "PNG", "GIF", "WEBP", *(["AVIF"] if HAS_AVIF else [])]
SETTINGS = RenderSettings(
    input_formats=DEFAULT_INPUT_FORMATS,
    max_source_pixels=1_000_000,  # a mutated header may claim any size; keep each try cheap
    jpeg_quality=82,
    webp_quality=80,
    avif_quality=60,
    png_compress_level=1,
)
OUTPUTS = (OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP,
           *((OutputFormat.AVIF,) if HAS_AVIF else ()))
LIMITS = TransformLimits(max_width=4000, max_height=4000, formats=OUTPUTS)
QUERIES: list[dict[str, str]] = [
    {"w": "24"},
    {"h": "20", "fmt": "png"},
    {"w": "32", "h": "32", "fit": "cover"},
    {"w": "30", "h": "17", "fit": "cover", "gravity": "southeast", "fmt": "webp"},
    {"w": "40", "h": "40", "fit": "contain", "bg": "ff000080"},
    {"w": "25", "h": "60", "fit": "fill", "fmt": "jpeg", "q": "60"},
    {"w": "96", "fmt": "auto"},
    *([{"w": "16", "fmt": "avif"}] if HAS_AVIF else []),
]


def specs() -> list[TransformSpec]:
    parsed = [parse_transform(query, LIMITS) for query in QUERIES]
    return [spec for spec in parsed if spec is not None]


# --- seeds: small valid files with the metadata real photos carry ------------------------------

def picture(size: tuple[int, int] = (48, 32), mode: str = "RGB") -> Image.Image:
    image = Image.linear_gradient("L").resize(size).convert(mode)
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, size[0] // 2, size[1] // 2), fill="red")
    draw.line((0, size[1] - 1, size[0] - 1, 0), fill="blue", width=2)
    return image


def camera_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "FuzzCam"
    exif[ExifTags.Base.XResolution] = 72.0
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 26.0)
    return exif


ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
EXIF_TIFF = camera_exif().tobytes().removeprefix(b"Exif\x00\x00")  # the TIFF structure itself
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><tiff:Orientation>3</tiff:Orientation></x:xmpmeta>'


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@functools.cache
def seeds(fmt: str) -> tuple[bytes, ...]:
    meta: dict[str, object] = {"exif": camera_exif(), "icc_profile": ICC}
    frames = [picture(), picture().transpose(Image.Transpose.ROTATE_180), picture(mode="L").convert("RGB")]
    if fmt == "JPEG":
        return (save(picture(), "JPEG", dpi=(300, 300), comment=b"private", xmp=XMP, **meta),
                save(picture((33, 17)), "JPEG", progressive=True, exif=camera_exif()),
                save(picture(mode="CMYK"), "JPEG", icc_profile=ICC),
                save(picture(mode="L"), "JPEG", quality=50))
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "private")
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        palette = picture().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        return (save(picture(mode="RGBA"), "PNG", pnginfo=info, **meta),
                save(palette, "PNG", transparency=0),
                save(picture(mode="I;16"), "PNG"),
                save(picture(mode="LA"), "PNG"))
    if fmt == "GIF":
        return (save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0,
                     transparency=0, comment=b"private"),
                save(picture().convert("P"), "GIF"))
    if fmt == "WEBP":
        return (save(picture(), "WEBP", quality=60, xmp=XMP, **meta),
                save(picture(mode="RGBA"), "WEBP", lossless=True, exif=camera_exif()),
                save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=80))
    if fmt == "AVIF":
        return (save(picture(), "AVIF", quality=40, speed=10, **meta),
                save(picture(mode="RGBA"), "AVIF", quality=40, speed=10))
    raise AssertionError(fmt)


# --- the file's structure: where its blocks start and end --------------------------------------

Span = tuple[int, int]


def jpeg_segments(data: bytes) -> list[Span]:
    spans, at = [(0, 2)], 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2:at + 4])[0]
        end = min(len(data), at + 2 + length)
        spans.append((at, end))
        if marker == 0xDA:  # start of scan: the entropy-coded data runs to EOI
            spans.append((end, max(end, len(data) - 2)))
            spans.append((max(end, len(data) - 2), len(data)))
            break
        at = end
    return spans


def png_chunks(data: bytes) -> list[Span]:
    spans, at = [(0, 8)], 8
    while at + 12 <= len(data):
        end = min(len(data), at + 12 + struct.unpack(">I", data[at:at + 4])[0])
        spans.append((at, end))
        at = end
    return spans


def riff_chunks(data: bytes) -> list[Span]:
    spans, at = [(0, 12)], 12
    while at + 8 <= len(data):
        size = struct.unpack("<I", data[at + 4:at + 8])[0]
        end = min(len(data), at + 8 + size + (size & 1))
        spans.append((at, end))
        at = end
    return spans


def gif_blocks(data: bytes) -> list[Span]:
    def sub_blocks(at: int) -> int:
        while at < len(data) and data[at]:
            at += 1 + data[at]
        return min(len(data), at + 1)

    table = 3 * 2 ** ((data[10] & 7) + 1) if len(data) > 10 and data[10] & 0x80 else 0
    spans, at = [(0, 13 + table)], 13 + table
    while at < len(data):
        kind = data[at]
        if kind == 0x21:
            end = sub_blocks(at + 2)
        elif kind == 0x2C and at + 10 <= len(data):
            local = 3 * 2 ** ((data[at + 9] & 7) + 1) if data[at + 9] & 0x80 else 0
            end = sub_blocks(at + 10 + local + 1)
        else:
            end = at + 1
        spans.append((at, end))
        at = end
    return spans


def isobmff_boxes(data: bytes) -> list[Span]:
    spans, at = [], 0
    while at + 8 <= len(data):
        size, kind = struct.unpack(">I", data[at:at + 4])[0], data[at + 4:at + 8]
        if size < 8:
            break
        spans.append((at, min(len(data), at + size)))
        if kind == b"meta":  # a full box of boxes: its children are worth mutating one by one
            children = isobmff_boxes(data[at + 12:at + size])
            spans.extend((at + 12 + child_start, at + 12 + child_end) for child_start, child_end in children)
        at += size
    return spans


BLOCKS: dict[str, Callable[[bytes], list[Span]]] = {
    "JPEG": jpeg_segments, "PNG": png_chunks, "GIF": gif_blocks, "WEBP": riff_chunks,
    "AVIF": isobmff_boxes,
}


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)


def garbage_metadata(rng: random.Random) -> bytes:
    """What an EXIF/ICC payload may hold in the wild: noise, a bad TIFF header, a cut-off one."""
    tiff = EXIF_TIFF
    return rng.choice([
        rng.randbytes(rng.randint(0, 64)),
        b"Exif\x00\x00" + rng.randbytes(rng.randint(0, 40)),
        b"MM\x00*" + rng.randbytes(rng.randint(0, 40)),
        b"II*\x00" + rng.randbytes(rng.randint(0, 40)),
        tiff[:rng.randint(0, len(tiff))],
        bytes(b ^ (1 << rng.randrange(8)) if rng.random() < 0.05 else b for b in tiff),
    ])


def metadata_block(fmt: str, payload: bytes, rng: random.Random) -> bytes:
    """A metadata block of ``fmt`` (EXIF, ICC or XMP) carrying ``payload``."""
    if fmt == "JPEG":  # APP1 (EXIF, XMP) or APP2 (ICC, MPO's index)
        marker, prefix = rng.choice([(0xE1, b"Exif\x00\x00"), (0xE1, b"http://ns.adobe.com/xap/1.0/\x00"),
                                     (0xE2, b"ICC_PROFILE\x00\x01\x01"), (0xE2, b"MPF\x00")])
        body = (prefix + payload)[:65533]
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
    if fmt == "PNG":
        kind = rng.choice([b"eXIf", b"iCCP", b"zTXt", b"iTXt"])
        body = b"icc\x00\x00" + zlib.compress(payload) if kind == b"iCCP" else payload
        return png_chunk(kind, body)
    if fmt == "WEBP":
        return riff_chunk(rng.choice([b"EXIF", b"ICCP", b"XMP "]), payload)
    if fmt == "GIF":
        return b"\x21" + rng.choice([b"\xfe", b"\xff", b"\xf9", b"\x01"]) + bytes([min(255, len(payload))]) \
            + payload[:255] + b"\x00"
    return struct.pack(">I", len(payload) + 8) + rng.choice([b"Exif", b"colr", b"uuid"]) + payload


def fix_riff_size(data: bytes) -> bytes:
    if data[:4] == b"RIFF" and len(data) >= 8:
        return data[:4] + struct.pack("<I", len(data) - 8) + data[8:]
    return data


# --- mutations --------------------------------------------------------------------------------

def mutate(fmt: str, iteration: int) -> tuple[bytes, TransformSpec, str]:
    """Mutation number ``iteration`` of a seed of ``fmt``: (data, spec, what was done)."""
    rng = random.Random(f"{SEED}:{fmt}:{iteration}")
    data = bytearray(rng.choice(seeds(fmt)))
    spans = BLOCKS[fmt](bytes(data)) or [(0, len(data))]
    kind = rng.choice(["flip", "flip", "truncate", "truncate-at-block", "header", "insert", "append",
                       "duplicate", "drop", "swap", "length", "garbage-payload", "add-metadata"])
    start, end = rng.choice(spans)
    if kind == "flip":
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del data[rng.randrange(len(data)):]
    elif kind == "truncate-at-block":  # at a block's start, or just after its introducer byte(s)
        del data[min(len(data), start + rng.choice([0, 1, 2, 3])):]
    elif kind == "header":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(min(len(data), 40))] = rng.randrange(256)
    elif kind == "insert":
        at = rng.randrange(len(data))
        data[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == "append":
        data += rng.choice([rng.randbytes(rng.randint(1, 64)), bytes(data[start:end])])
    elif kind == "duplicate":
        data[end:end] = data[start:end]
    elif kind == "drop":
        del data[start:end]
    elif kind == "swap":
        other_start, other_end = rng.choice(spans)
        if other_start >= end:
            data[start:other_end] = data[other_start:other_end] + data[end:other_start] + data[start:end]
    elif kind == "length":  # a block claims another length (or size field) than it has
        for at in range(start, min(end, start + 8)):
            if rng.random() < 0.3:
                data[at] = rng.randrange(256)
    elif kind == "garbage-payload":  # keep a block's framing (valid length, CRC), fill it with garbage
        if end - start > 8:
            payload = garbage_metadata(rng)
            if fmt == "JPEG":
                data[start:end] = data[start:start + 2] + struct.pack(">H", len(payload) + 2) + payload
            elif fmt == "PNG":
                data[start:end] = png_chunk(bytes(data[start + 4:start + 8]), payload)
            elif fmt == "WEBP":
                data[start:end] = riff_chunk(bytes(data[start:start + 4]), payload)
            else:  # GIF, AVIF: same size, past the block's first 8 bytes
                data[start + 8:end] = payload[:end - start - 8].ljust(end - start - 8, b"\x00")
    elif kind == "add-metadata":
        at = end if start > 0 else spans[0][1]
        data[at:at] = metadata_block(fmt, garbage_metadata(rng), rng)
    if fmt == "WEBP" and rng.random() < 0.7:
        data = bytearray(fix_riff_size(bytes(data)))  # else libwebp rejects most mutants outright
    spec = rng.choice(specs())
    return bytes(data), spec, f"{kind} at {start}..{end}, {spec.canonical}"


@dataclass(frozen=True, slots=True)
class Failure:
    iteration: int
    what: str
    error: str
    where: str


def signature(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"


def is_plain_detail(detail: str) -> bool:
    """A log detail made of our words and numbers, not a repr of the client's bytes."""
    return detail.isascii() and detail.isprintable() and "b'" not in detail and 'b"' not in detail


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_mutated_image_renders_or_is_a_proxy_error(fmt: str) -> None:
    deadline = time.monotonic() + FUZZ_SECONDS / len(FORMATS)
    failures: dict[tuple[str, str], Failure] = {}
    tries = 0
    while time.monotonic() < deadline:
        data, spec, what = mutate(fmt, tries)
        try:
            render(data, spec, spec.fmt, SETTINGS)
        except ProxyError as exc:
            detail = str(exc)
            if not is_plain_detail(detail):
                failure = Failure(tries, what, "bytes in the log detail", detail)
                failures.setdefault(("detail", type(exc).__name__), failure)
        except Exception as exc:  # anything else would be a 500
            key = (type(exc).__name__, signature(exc))
            failures.setdefault(key, Failure(tries, what, f"{type(exc).__name__}: {exc}", key[1]))
        tries += 1
    assert tries > 0
    report = "\n".join(f"  mutate({fmt!r}, {f.iteration}): {f.what}\n    -> {f.error} at {f.where}"
                       for f in list(failures.values())[:MAX_REPORTED])
    assert not failures, f"{len(failures)} distinct non-ProxyError failures in {tries} tries:\n{report}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_seed_renders_unmutated(fmt: str) -> None:
    for data in seeds(fmt):
        for spec in specs():
            render(data, spec, spec.fmt, replace(SETTINGS, max_source_pixels=50_000_000))


def test_the_mutations_are_reproducible() -> None:
    assert mutate("PNG", 7) == mutate("PNG", 7)
