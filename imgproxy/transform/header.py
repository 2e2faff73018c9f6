"""What an image file's first bytes say: its format, displayed size and frames, without decoding.

Pure (no Pillow), bounded and total: ``read_header(prefix, total)`` looks only at the bytes it is
given (the first bytes of an object of ``total`` bytes) and answers a ``Header``, or ``NeedBytes``
(the prefix must reach ``end`` bytes: a JPEG's SOF after a large EXIF segment, a PNG's IHDR not
yet whole), or raises ``NotAnImage`` (no format it knows starts so) or ``UnprocessableImage`` (the
structure is broken: a segment that runs past the object's end, a zero size, a JPEG whose scan
starts before any frame header). Every length read from the file is checked before it is used,
so a hostile header costs at most a walk over the bytes at hand. It runs in the image workers
(``transform/describe.py``), never on the event loop.

Per format, as Go imgproxy's ``imagemeta`` reads them:

- JPEG: markers up to the first SOFn (width, height); the EXIF orientation from an APP1
  ``Exif`` segment before it; ``frames`` 1, or None for an MPO (an APP2 ``MPF`` segment).
- PNG: IHDR; before the first IDAT, ``acTL`` (an APNG's frame count) and ``eXIf`` (orientation).
- GIF: the logical screen; ``frames`` None (counting them walks the whole file).
- WebP: ``VP8 ``, ``VP8L`` or ``VP8X`` (the canvas; animated: ``frames`` None). Its EXIF chunk
  comes after the pixels, so its orientation is not read (1).
- AVIF and HEIF (ISOBMFF): the primary item's ``ispe``, turned by its ``irot``; an image
  sequence's ``frames`` None.

Width and height are as displayed: swapped for the EXIF orientations 5-8 (and a quarter-turn
``irot``), as ``transform/steps.orient`` renders them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from imgproxy.errors import NotAnImage, UnprocessableImage

# JPEG frame headers: SOF0-3, 5-7, 9-11, 13-15 (not DHT C4, JPG C8, DAC CC).
_SOF: Final = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length
_ORIENTATION_TAG: Final = 0x0112
_PNG: Final = b"\x89PNG\r\n\x1a\n"
_HEIF_BRANDS: Final = {b"avif": "AVIF", b"avis": "AVIF", b"heic": "HEIF", b"heix": "HEIF",
                       b"heim": "HEIF", b"heis": "HEIF", b"hevc": "HEIF", b"hevx": "HEIF",
                       b"mif1": "HEIF", b"msf1": "HEIF"}
MAX_BOXES: Final = 4096  # ISOBMFF boxes or PNG chunks walked, at most


@dataclass(frozen=True, slots=True)
class Header:
    format: str  # Pillow's name for it, as in transform.input_formats: JPEG, PNG, GIF, WEBP, AVIF, HEIF
    width: int  # as displayed (after the orientation)
    height: int
    frames: int | None  # None: not known without reading the whole file
    orientation: int = 1  # EXIF 1-8


@dataclass(frozen=True, slots=True)
class NeedBytes:
    """The header goes on past the prefix: read the object's first ``end`` bytes (at least)."""

    end: int


def read_header(data: bytes, total: int) -> Header | NeedBytes:
    """The header of an object of ``total`` bytes whose first ``len(data)`` bytes are ``data``."""
    if len(data) < 16 and len(data) < total:
        return NeedBytes(min(total, 64))
    if data.startswith(b"\xff\xd8\xff"):
        walk = _jpeg
    elif data.startswith(_PNG):
        walk = _png
    elif data[:6] in (b"GIF87a", b"GIF89a"):
        walk = _gif
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        walk = _webp
    elif data[4:8] == b"ftyp":
        walk = _isobmff
    else:
        raise NotAnImage("no known image header")
    try:
        return _checked(walk(data, total))
    except (IndexError, struct.error, ValueError, OverflowError) as exc:  # a structure cut short
        raise UnprocessableImage(f"header unreadable: {exc.__class__.__name__}") from None


def _checked(found: Header | NeedBytes) -> Header | NeedBytes:
    if isinstance(found, Header) and (found.width < 1 or found.height < 1):
        raise UnprocessableImage(f"{found.format} header: {found.width}x{found.height}")
    return found


def _need(end: int, total: int, what: str) -> NeedBytes:
    """More bytes, unless the object has no more: then its header is cut short."""
    if end > total:
        raise UnprocessableImage(f"{what} runs past the object's end")
    return NeedBytes(end)


def _displayed(fmt: str, width: int, height: int, frames: int | None, orientation: int) -> Header:
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Header(fmt, width, height, frames, orientation)


# --- JPEG -------------------------------------------------------------------------------------


def _jpeg(data: bytes, total: int) -> Header | NeedBytes:
    pos, orientation = 2, 1
    frames: int | None = 1
    while True:
        if pos + 4 > len(data):
            return _need(pos + 4, total, "JPEG marker")
        if data[pos] != 0xFF:
            raise UnprocessableImage("JPEG: no marker where one belongs")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA):
            raise UnprocessableImage("JPEG: scan or end before a frame header")
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 2:
            raise UnprocessableImage("JPEG: segment length below 2")
        end = pos + 2 + length
        if marker in _SOF:
            if pos + 9 > len(data):
                return _need(pos + 9, total, "JPEG frame header")
            if length < 7:
                raise UnprocessableImage("JPEG: frame header too short")
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return _displayed("JPEG", width, height, frames, orientation)
        if marker in (0xE1, 0xE2):  # APP1 (EXIF) and APP2 (MPF) are read whole
            if end > len(data):
                return _need(end + 4, total, "JPEG segment")
            payload = data[pos + 4:end]
            if marker == 0xE1 and payload.startswith(b"Exif\x00\x00") and orientation == 1:
                orientation = tiff_orientation(payload[6:])
            elif marker == 0xE2 and payload.startswith(b"MPF\x00"):
                frames = None  # an MPO: how many pictures is in its index, past this bound's use
        pos = end


def tiff_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of IFD0 of a TIFF (an EXIF block), 1-8; 1 when absent or unreadable (as
    ``transform/decode.exif_orientation``: broken metadata counts as none)."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for index in range(min(count, (len(tiff) - ifd - 2) // 12)):
        entry = ifd + 2 + 12 * index
        tag, kind = struct.unpack(order + "HH", tiff[entry:entry + 4])
        if tag == _ORIENTATION_TAG and kind == 3:
            (value,) = struct.unpack(order + "H", tiff[entry + 8:entry + 10])
            return value if 1 <= value <= 8 else 1
    return 1


# --- PNG, GIF, WebP ------------------------------------------------------------------------


def _png(data: bytes, total: int) -> Header | NeedBytes:
    if len(data) < 33:
        return _need(33, total, "PNG IHDR")
    if data[12:16] != b"IHDR":
        raise UnprocessableImage("PNG: IHDR is not the first chunk")
    width, height = struct.unpack(">II", data[16:24])
    pos, frames, orientation = 33, 1, 1
    for _ in range(MAX_BOXES):
        if pos + 8 > len(data):
            if pos >= total:
                break  # no IDAT at all: Pillow's load fails, the size stands
            return _need(pos + 8, total, "PNG chunk")
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            break
        end = pos + 12 + length
        if kind in (b"acTL", b"eXIf"):
            if end > len(data):
                return _need(end, total, "PNG chunk")
            body = data[pos + 8:pos + 8 + length]
            if kind == b"acTL" and length >= 4:
                frames = int.from_bytes(body[:4], "big") or 1
            elif kind == b"eXIf":
                orientation = tiff_orientation(body)
        pos = end
    return _displayed("PNG", width, height, frames, orientation)


def _gif(data: bytes, total: int) -> Header | NeedBytes:
    if len(data) < 10:
        return _need(10, total, "GIF screen descriptor")
    width, height = struct.unpack("<HH", data[6:10])
    return Header("GIF", width, height, None)


def _webp(data: bytes, total: int) -> Header | NeedBytes:
    if len(data) < 30:
        return _need(30, total, "WebP header")
    kind = data[12:16]
    if kind == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise UnprocessableImage("WebP: no VP8 start code")
        width, height = struct.unpack("<HH", data[26:30])
        return Header("WEBP", width & 0x3FFF, height & 0x3FFF, 1)
    if kind == b"VP8L":
        if data[20] != 0x2F:
            raise UnprocessableImage("WebP: no VP8L signature")
        bits = int.from_bytes(data[21:25], "little")
        return Header("WEBP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, 1)
    if kind == b"VP8X":
        flags = data[20]
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return Header("WEBP", width, height, None if flags & 0x02 else 1)
    raise UnprocessableImage("WebP: unknown first chunk")


# --- AVIF, HEIF (ISOBMFF) --------------------------------------------------------------------


@dataclass(slots=True)
class _Boxes:
    """What the ``meta`` box says about its items."""

    primary: int | None = None
    properties: list[tuple[bytes, bytes]] | None = None  # ipco's, in order: (type, body)
    associations: dict[int, list[int]] | None = None  # ipma: item id -> 1-based property indices


def _walk(data: bytes, start: int, end: int, visit: Callable[[bytes, int, int], None]) -> int | None:
    """Call ``visit(type, body_start, box_end)`` for each box in ``data[start:end]``; the offset
    where a box runs past the bytes at hand, or None once every box was visited."""
    pos = start
    for _ in range(MAX_BOXES):
        if pos >= end:
            return None
        if pos + 8 > len(data):
            return pos + 8
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], pos + 8
        if size == 1:
            if pos + 16 > len(data):
                return pos + 16
            size, body = int.from_bytes(data[pos + 8:pos + 16], "big"), pos + 16
        elif size == 0:
            size = end - pos
        if size < body - pos:
            raise UnprocessableImage("ISOBMFF: box size below its header")
        box_end = pos + size
        if box_end > end:
            raise UnprocessableImage("ISOBMFF: box runs past its parent")
        if kind in (b"meta", b"iprp", b"ipco", b"ipma", b"pitm") or box_end <= len(data):
            if box_end > len(data):
                return box_end
            visit(kind, body, box_end)
        pos = box_end
    raise UnprocessableImage("ISOBMFF: too many boxes")


def _isobmff(data: bytes, total: int) -> Header | NeedBytes:
    size = int.from_bytes(data[0:4], "big")
    brands = [data[8:12]] + [data[i:i + 4] for i in range(16, min(size, len(data)) - 3, 4)]
    fmt = next((_HEIF_BRANDS[b] for b in brands if b in _HEIF_BRANDS), None)
    if fmt is None:
        raise NotAnImage("ISOBMFF without an image brand")
    sequence = data[8:12] in (b"avis", b"msf1", b"hevs")
    boxes = _Boxes()
    meta_end: list[int] = []

    def in_meta(kind: bytes, body: int, box_end: int) -> None:
        if kind == b"pitm":
            boxes.primary = int.from_bytes(data[body + 4:body + 6 if data[body] == 0 else body + 8], "big")
        elif kind == b"iprp":
            missing = _walk(data, body, box_end, in_meta)
            if missing is not None:
                meta_end.append(missing)
        elif kind == b"ipco":
            found: list[tuple[bytes, bytes]] = []
            _walk(data, body, box_end, lambda k, b, e: found.append((k, data[b:e])))
            boxes.properties = found
        elif kind == b"ipma":
            boxes.associations = _ipma(data[body:box_end])

    def top(kind: bytes, body: int, box_end: int) -> None:
        if kind == b"meta":
            missing = _walk(data, body + 4, box_end, in_meta)  # a full box: version and flags first
            if missing is not None:
                meta_end.append(missing)

    missing = _walk(data, 0, total, top)
    if meta_end:
        return _need(max(meta_end), total, "ISOBMFF meta box")
    if boxes.properties is None or boxes.associations is None or boxes.primary is None:
        if missing is not None:
            return _need(missing, total, "ISOBMFF box")
        raise UnprocessableImage("ISOBMFF: no primary item properties")
    indices = boxes.associations.get(boxes.primary, [])
    chosen = [boxes.properties[i - 1] for i in indices if 0 < i <= len(boxes.properties)]
    size_box = next((body for kind, body in chosen if kind == b"ispe" and len(body) >= 12), None)
    if size_box is None:
        raise UnprocessableImage("ISOBMFF: the primary item has no ispe")
    width, height = struct.unpack(">II", size_box[4:12])
    turns = next((body[0] & 3 for kind, body in chosen if kind == b"irot" and body), 0)
    if turns % 2:
        width, height = height, width
    return Header(fmt, width, height, None if sequence else 1)


def _ipma(body: bytes) -> dict[int, list[int]]:
    """item id -> its property indices (1-based; the essential bit dropped)."""
    if len(body) < 8:
        return {}
    version, flags = body[0], int.from_bytes(body[1:4], "big")
    count, pos = int.from_bytes(body[4:8], "big"), 8
    wide_id, wide_index = version >= 1, bool(flags & 1)
    found: dict[int, list[int]] = {}
    for _ in range(min(count, MAX_BOXES)):
        id_size = 4 if wide_id else 2
        if pos + id_size + 1 > len(body):
            break
        item = int.from_bytes(body[pos:pos + id_size], "big")
        pos += id_size
        n = body[pos]
        pos += 1
        size = 2 if wide_index else 1
        indices = []
        for _ in range(n):
            if pos + size > len(body):
                break
            value = int.from_bytes(body[pos:pos + size], "big")
            indices.append(value & (0x7FFF if wide_index else 0x7F))
            pos += size
        found[item] = indices
    return found
