"""What crosses between the serving process and an image worker: settings in, a rendering out.

Pure and free of Pillow, so the serving process (which builds the one and receives the other)
never imports PIL: decoding and encoding happen only in the worker processes. Which output
formats this Pillow build can encode is read from which of its encoder modules are installed,
without importing them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from collections.abc import Collection
from dataclasses import dataclass

from imgproxy.transform.params import OutputFormat


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """What a worker needs besides the spec: limits and per-format defaults (from config)."""

    input_formats: tuple[str, ...]
    max_source_pixels: int
    jpeg_quality: int
    webp_quality: int
    avif_quality: int
    png_compress_level: int


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    media_type: str
    width: int
    height: int
    seconds: float


def available_outputs() -> Collection[OutputFormat]:
    """Output formats this Pillow build can encode: WebP and AVIF need their encoder modules
    (``PIL._webp``, ``PIL._avif``); found on disk, not imported (that happens in the workers)."""
    formats = {OutputFormat.JPEG, OutputFormat.PNG}
    pil = importlib.util.find_spec("PIL")  # a top-level spec: found without running PIL/__init__
    where = pil.submodule_search_locations if pil is not None else None
    if where is None:
        return formats
    for fmt, module in ((OutputFormat.WEBP, "_webp"), (OutputFormat.AVIF, "_avif")):
        if importlib.machinery.PathFinder.find_spec(module, list(where)) is not None:
            formats.add(fmt)
    return formats
