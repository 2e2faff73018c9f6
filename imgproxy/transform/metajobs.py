"""What an image worker does for ``/meta``: read an image's header, and draw its placeholder.

Both run only in the worker processes (``transform/pool.py``), never on the event loop: the
header walk (``transform/header.py``, pure but fed a client's bytes) and the placeholder, a
``PLACEHOLDER_SIDE`` px render through the whole pipeline (``steps.render``: draft, orientation,
colour, the same limits) to PNG, decoded back to RGBA and hashed (``transform/thumbhash.py``).
Pillow is imported inside the job, in the worker; this module is imported by the serving process.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

from imgproxy.errors import NotAnImage
from imgproxy.storage.worker_read import ReadMeta, SourceRead
from imgproxy.transform.header import Header, NeedBytes, read_header
from imgproxy.transform.jobs import RenderSettings
from imgproxy.transform.params import Fit, OutputFormat, TransformSpec

# ThumbHash keeps at most 7 terms a side: 64 px hold them as well as 100 px (its limit) for
# under half the hashing time (22 ms against 50 ms, pure Python).
PLACEHOLDER_SIDE: Final = 64
PLACEHOLDER_SPEC: Final = TransformSpec(width=PLACEHOLDER_SIDE, height=PLACEHOLDER_SIDE, fit=Fit.INSIDE,
                                        fmt=OutputFormat.PNG)


@dataclass(frozen=True, slots=True)
class Placeholder:
    thumbhash: str  # base64
    width: int  # of the render it was made from
    height: int


def run_header_job(data: bytes, total: int, input_formats: tuple[str, ...]) -> Header | NeedBytes:
    """In a worker: the header in ``data`` (the first bytes of ``total``), of an allowed format."""
    found = read_header(data, total)
    if isinstance(found, Header) and found.format not in input_formats:
        raise NotAnImage(f"{found.format} is not in transform.input_formats")
    return found


def run_placeholder_job(read: SourceRead, settings: RenderSettings,
                        timeout: float) -> tuple[ReadMeta, Placeholder]:
    """In a worker: read the source, render it small (``pool.run_read_job``'s limits), hash it."""
    from PIL import Image

    from imgproxy.transform.pool import run_read_job
    from imgproxy.transform.thumbhash import encode_thumbhash

    meta, rendered = run_read_job(read, PLACEHOLDER_SPEC, OutputFormat.PNG, settings, timeout)
    with Image.open(io.BytesIO(rendered.body), formats=["PNG"]) as small:
        rgba = small.convert("RGBA")
    thumbhash = encode_thumbhash(rgba.width, rgba.height, rgba.tobytes())
    return meta, Placeholder(thumbhash, rgba.width, rgba.height)
