"""Writing the output: each format's encoder and its options.

Synchronous Pillow, run only in the worker processes, as ``steps.render``'s last stage (its
failures are translated there). The output carries no EXIF, XMP or comment (private photos
carry GPS positions), but keeps an ICC profile that parses and matches the pixels.
"""

from __future__ import annotations

import io
from typing import Final

from PIL import Image, ImageCms

from imgproxy.transform.decode import is_data_failure
from imgproxy.transform.jobs import RenderSettings
from imgproxy.transform.params import OutputFormat

# Chosen by bench/bench_encoders.py (2026-12-01 15:09 UTC; the table is in README.md, "fmt=auto
# and Accept"), with the default qualities (config/model.py): per format, each method or speed
# at the lowest quality whose SSIM is >= JPEG q=82's on every 300 px photo, then the least CPU
# within 5 % of JPEG's bytes of the format's smallest (CPU within 5 % is a tie, to the fewer
# bytes). 300 px, against JPEG (21.5 KB, 0.24 ms to encode): WebP q=79 method 3: 0.72x the bytes,
# 7.8 ms (method 4 ties: 7.8 ms, 11 bytes more; 2: 0.80x, 4.0 ms; 6: 0.72x, 18.6 ms). AVIF q=64
# speed 7: 0.68x, 39 ms (6: the same bytes, 88 ms; 8 needs q=67, 0.77x, 26 ms; 9 and 10 q=67,
# 0.85x, 7 ms). Speed 8 at q=60, before, was 0.61x the bytes but below JPEG's SSIM on every photo.
WEBP_METHOD: Final = 3
AVIF_SPEED: Final = 7
# One encoder thread: the workers are one per core, so more threads take CPU from another
# worker's render (at speed 7, Pillow's default of one per CPU cost 4-8 % more CPU in three runs,
# for the same size), and libaom's output depends on the thread count: a strong ETag must name
# the same bytes on every replica, whatever its core count.
AVIF_THREADS: Final = 1
# The ICC colour space each pixel mode may carry a profile for.
_PROFILE_SPACE: Final = {"RGB": "RGB ", "RGBA": "RGB ", "L": "GRAY", "LA": "GRAY"}


def matching_profile(profile: bytes | None, mode: str) -> bytes | None:
    """``profile`` if it parses and describes pixels of ``mode`` (an RGB profile for RGB/RGBA,
    a grey one for L/LA); else None: a broken or mismatched profile is dropped, not passed on."""
    if profile is None or mode not in _PROFILE_SPACE:
        return None
    try:
        space = ImageCms.ImageCmsProfile(io.BytesIO(profile)).profile.xcolor_space
    except Exception as exc:  # OSError: "cannot open profile from string"
        if not is_data_failure(exc):
            raise
        return None
    return profile if space == _PROFILE_SPACE[mode] else None


def encode(image: Image.Image, target: OutputFormat, quality: int | None, settings: RenderSettings,
           icc_profile: bytes | None) -> bytes:
    """``image`` as ``target`` at ``quality`` (None: the config's default), with no EXIF/XMP
    (private photos carry GPS), keeping ``icc_profile`` where it matches the pixels."""
    # Always passed, None included: the PNG and AVIF encoders otherwise fall back to the
    # image's own info["icc_profile"] (a CMYK source's, after its pixels became sRGB).
    options: dict[str, object] = {"icc_profile": matching_profile(icc_profile, image.mode)}
    if target is OutputFormat.JPEG:
        # comment: Pillow would otherwise copy the source's COM marker (free text, often private).
        options.update(quality=quality or settings.jpeg_quality, optimize=False, progressive=False,
                       comment=b"")
        fmt = "JPEG"
    elif target is OutputFormat.WEBP:
        options.update(quality=quality or settings.webp_quality, method=WEBP_METHOD)
        fmt = "WEBP"
    elif target is OutputFormat.AVIF:
        options.update(quality=quality or settings.avif_quality, speed=AVIF_SPEED, max_threads=AVIF_THREADS)
        fmt = "AVIF"
    else:
        options.update(compress_level=settings.png_compress_level)
        fmt = "PNG"
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
