"""Opening a client's image: its header read under the format and pixel limits, and which of
Pillow's exceptions mean "the bytes are broken" (a 422) rather than a decision or a limit.

Runs only in the image worker processes (it imports Pillow).
"""

from __future__ import annotations

import io
import warnings

from PIL import ExifTags, Image, UnidentifiedImageError

from imgproxy.errors import ImageTooLarge, NotAnImage, ProxyError, UnprocessableImage
from imgproxy.transform.jobs import RenderSettings


def is_data_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is how Pillow or Python reacted to the bytes (a decoder, a parser, the
    arithmetic on what they read), as opposed to a decision already made or a resource limit.

    Not data failures: imgproxy's own exceptions (a ``ProxyError``, or the worker's time-limit
    alarm from ``pool.py``, which must reach ``run_job`` to become a 422 ``transform_timeout``),
    and ``MemoryError``. The pixel limit is checked before decoding and Pillow bounds its
    metadata buffers, so running out of memory means the worker's memory does not fit the
    configured ``max_source_pixels`` (or the host is short of it): the operator's problem, a
    logged 500, not a 4xx telling the client that its image is broken.
    """
    return (isinstance(exc, Exception) and not isinstance(exc, ProxyError | MemoryError)
            and not type(exc).__module__.startswith("imgproxy."))


def open_image(data: bytes | bytearray, settings: RenderSettings) -> Image.Image:
    """Identify the image from its header only; refuse formats not allowed and pixel bombs."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(settings.input_formats))
            # Counting frames reads each frame's header (GIF: walks the blocks), not its pixels.
            frames = int(getattr(image, "n_frames", 1) or 1)
    except UnidentifiedImageError:
        raise NotAnImage("not an allowed image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge("pixel bomb (Pillow)") from None
    except Exception as exc:
        if not is_data_failure(exc):
            raise
        raise UnprocessableImage(f"header unreadable: {exc.__class__.__name__}") from None
    width, height = image.size
    if width < 1 or height < 1 or width * height * frames > settings.max_source_pixels:
        raise ImageTooLarge(f"{width}x{height}x{frames} pixels exceeds the limit")
    return image


def exif_orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation, 1-8; 1 when there is none or it cannot be read."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as exc:  # SyntaxError (not a TIFF header), struct.error (cut short), ...
        if not is_data_failure(exc):
            raise
        return 1
    return value if isinstance(value, int) and value in range(1, 9) else 1
