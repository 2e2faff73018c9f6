"""The image pipeline: the ordered list of Pillow steps that turns source bytes into a variant.

Synchronous, no asyncio: it runs only inside ``transform/pool.py``'s worker processes. Every
Pillow failure is translated here into a ``ProxyError`` (415 not an image / format not allowed,
422 corrupt or too many pixels). Animated inputs are rendered from their first frame only: a
thumbnail is a still, and one frame keeps the cost of a request bounded and predictable.

The source is a client's file, so the steps assume it is hostile or broken:
- Metadata is optional. Unreadable EXIF counts as no EXIF (orientation 1), an ICC profile
  that does not parse or does not match the pixels is dropped: the pixels still render.
- Everything else a decoder or parser raises on the bytes is a 422 ``corrupt_image``, made in
  one place (``render``), whose log detail names the step and the exception class only (Pillow's
  messages can quote the client's bytes).
- Pillow's warnings about the data (``UserWarning``: "Corrupt EXIF data", "Truncated File
  Read", "malformed MPO file") are ignored while rendering: they report metadata it skipped,
  the decision above, so a render never depends on the process's warning filters. A
  ``DecompressionBombWarning`` is an error (422). Other categories (a ``DeprecationWarning``
  about a call made here) are left to the process's filters, so strict test runs still see them.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from PIL import Image, ImageCms

from imgproxy.errors import ImageTooLarge, UnprocessableImage
from imgproxy.transform.attention import find_focus
from imgproxy.transform.decode import exif_orientation, is_data_failure, open_image
from imgproxy.transform.encode import encode
from imgproxy.transform.geometry import (
    Box,
    cover_crop,
    focal_crop,
    mapped_box,
    oriented_box,
    target_box,
)
from imgproxy.transform.jobs import Rendered, RenderSettings
from imgproxy.transform.params import Fit, Gravity, OutputFormat, TransformSpec

# Chosen by bench/bench_render_quality.py (the table is in README.md, Transforms): the gap, the
# fastest whose worst SSIM against a full-resolution LANCZOS resize stays >= 0.985 on 58 cases;
# the draft, the smallest factor within that bound (1.33 under the 0.99 bound until 2026-12-02).
DRAFT_FACTOR: Final = 1.15  # JPEG: the decoder scales by 1/2, 1/4, 1/8 while >= 1.15x the target
REDUCING_GAP: Final = 1.5  # then reduce() by whole factors while >= 1.5x the target, then LANCZOS
_SRGB: Final = ImageCms.createProfile("sRGB")
_SOURCE_FAMILY: Final = {"JPEG": OutputFormat.JPEG, "PNG": OutputFormat.PNG,
                         "WEBP": OutputFormat.WEBP, "AVIF": OutputFormat.AVIF}
# What a viewer does for each EXIF orientation (TIFF/EXIF tag 0x0112), as ImageOps.exif_transpose.
_UPRIGHT: Final = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                   6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


@dataclass(slots=True)
class Job:
    """The state passed from step to step."""

    image: Image.Image
    source_format: str
    spec: TransformSpec
    target: OutputFormat | None  # None: decide from alpha (JPEG or PNG) at encode time
    settings: RenderSettings
    icc_profile: bytes | None = None
    # fit=cover: the point the crop is centred on (fractions of the displayed picture), from
    # ``fp`` or ``gravity=auto``; None: the crop is placed by a fixed gravity.
    focus: tuple[float, float] | None = None
    # The source's own size, and the area it covers in ``image``'s pixels (a JPEG draft decodes
    # fewer pixels, with a partly padded last row and column: see geometry.mapped_box); both
    # displayed (upright) once ``orient`` has run. The geometry is computed on ``source_size``.
    source_size: tuple[int, int] = field(init=False)
    region: Box = field(init=False)

    def __post_init__(self) -> None:
        self.source_size = self.image.size
        self.region = (0, 0, *self.image.size)


def draft(job: Job) -> None:
    """JPEG: let the decoder scale by 1/2, 1/4 or 1/8 (DCT scaling) while the decoded image stays
    at least ``DRAFT_FACTOR`` times the target; ``job.region`` says where the picture lies in it."""
    if job.source_format != "JPEG":
        return
    # The spec is in displayed pixels; a quarter-turn EXIF orientation swaps the stored axes.
    turned = exif_orientation(job.image) in (5, 6, 7, 8)
    width, height = job.source_size
    box = target_box((height, width) if turned else (width, height), job.spec)
    if box is not None:
        requested = (int(box[0] * DRAFT_FACTOR), int(box[1] * DRAFT_FACTOR))
        drafted = job.image.draft(job.image.mode if job.image.mode in ("RGB", "L") else None,
                                  requested[::-1] if turned else requested)
        if drafted is not None:
            job.region = drafted[1]


def load_first_frame(job: Job) -> None:
    """Decode the pixels (a decoder failure is a 422, made in ``render``): an animation's first
    frame; a HEIF's primary image, which pillow-heif opens at and which need not be its first
    (a burst or an edited photo keeps others beside it)."""
    if job.source_format != "HEIF":
        job.image.seek(0)
    job.image.load()
    profile = job.image.info.get("icc_profile")
    job.icc_profile = profile if isinstance(profile, bytes) and profile else None


def orient(job: Job) -> None:
    """Apply the EXIF orientation to the pixels (the EXIF itself is not carried over).

    Not ``ImageOps.exif_transpose``: besides reading the EXIF it rewrites it (and the XMP) for
    an output that never carries them, and that rewriting fails on EXIF it could read
    (TypeError from ``Exif.tobytes``).
    """
    orientation = exif_orientation(job.image)
    method = _UPRIGHT.get(orientation)
    if method is not None:
        job.region = oriented_box(job.region, job.image.size, orientation)
        if orientation in (5, 6, 7, 8):
            job.source_size = job.source_size[::-1]
        job.image = job.image.transpose(method)


def normalise_mode(job: Job) -> None:
    """CMYK (via its ICC profile), palette, 16-bit and odd modes -> RGB, RGBA, L or LA."""
    image = job.image
    if image.mode == "CMYK":
        converted = None
        if job.icc_profile:
            try:
                source = ImageCms.ImageCmsProfile(io.BytesIO(job.icc_profile))
                converted = ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGB")
            except Exception as exc:  # OSError (does not parse), PyCMSError (not a CMYK profile)
                if not is_data_failure(exc):
                    raise
        image = converted if converted is not None else image.convert("RGB")
        job.icc_profile = None  # the pixels are sRGB now; a CMYK profile would be a lie
    elif image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        scale = 1 / 256 if image.mode != "I" or image.getextrema()[1] > 255 else 1  # type: ignore[operator]
        image = image.convert("I").point(lambda v: v * scale).convert("L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("RGB", "L") and "transparency" in image.info:
        image = image.convert("LA" if image.mode == "L" else "RGBA")  # a tRNS colour key -> alpha
    elif image.mode in ("1", "F", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif image.mode in ("PA", "RGBa"):
        image = image.convert("RGBA")
    job.image = image


def choose_focus(job: Job) -> None:
    """``fit=cover``: the signed focal point, or for ``gravity=auto`` the attention crop's,
    measured on the (drafted, upright) pixels before the final resize."""
    spec = job.spec
    if spec.fit is not Fit.COVER or not spec.width or not spec.height:
        return
    if spec.focus is not None:
        job.focus = (spec.focus[0] / 1000, spec.focus[1] / 1000)
    elif spec.gravity is Gravity.AUTO:
        job.focus = find_focus(job.image, job.region, (spec.width, spec.height))


def resize(job: Job) -> None:
    """Scale (and for ``fit=cover`` crop) in one resample, computed on the source's size."""
    image, spec = job.image, job.spec
    box = target_box(job.source_size, spec)
    if box is None:
        return
    whole: Box = (0, 0, *job.source_size)
    if spec.fit is Fit.COVER and spec.width and spec.height:
        target = (spec.width, spec.height)
        crop = cover_crop(job.source_size, target, spec.gravity) if job.focus is None \
            else focal_crop(job.source_size, target, job.focus)  # then resample straight to the output
    else:
        target, crop = box, whole
    source = mapped_box(crop, job.source_size, job.region)
    if target != image.size or source != (0, 0, *image.size):
        job.image = image.resize(target, Image.Resampling.LANCZOS, box=source, reducing_gap=REDUCING_GAP)
    if spec.fit is Fit.CONTAIN and spec.width and spec.height and job.image.size != (spec.width, spec.height):
        letterbox(job)


def letterbox(job: Job) -> None:
    """Centre the scaled image on a ``w`` x ``h`` canvas of ``bg`` (default transparent)."""
    spec, image = job.spec, job.image
    assert spec.width is not None
    assert spec.height is not None
    fill = spec.background or (0, 0, 0, 0)
    offset = ((spec.width - image.width) // 2, (spec.height - image.height) // 2)
    if fill[3] < 255 or image.mode in ("RGBA", "LA"):
        # Composited "over" the fill: a paste with the image as its own mask would multiply
        # the alpha of half-transparent pixels by itself (and darken their colour).
        canvas = Image.new("RGBA", (spec.width, spec.height), fill)
        canvas.alpha_composite(image if image.mode == "RGBA" else image.convert("RGBA"), offset)
    else:
        canvas = Image.new("RGB", (spec.width, spec.height), fill[:3])
        canvas.paste(image, offset)  # L is converted by paste; RGB is not copied first
    job.image = canvas


def has_alpha(image: Image.Image) -> bool:
    if image.mode not in ("RGBA", "LA"):
        return False
    extrema = image.getchannel("A").getextrema()
    return isinstance(extrema[0], int | float) and extrema[0] < 255


def choose_output(job: Job) -> None:
    if job.target is None:
        family = _SOURCE_FAMILY.get(job.source_format)
        job.target = family if family is not None and job.spec.fmt is None and not job.spec.auto_format \
            else (OutputFormat.PNG if has_alpha(job.image) else OutputFormat.JPEG)


def flatten(job: Job) -> None:
    """Formats without alpha get the image composited onto ``bg`` (default white)."""
    assert job.target is not None
    if job.target.has_alpha or job.image.mode not in ("RGBA", "LA"):
        if job.target is OutputFormat.JPEG and job.image.mode not in ("RGB", "L"):
            job.image = job.image.convert("RGB")
        return
    r, g, b, _ = job.spec.background or (255, 255, 255, 255)
    canvas = Image.new("RGB", job.image.size, (r, g, b))
    canvas.paste(job.image, (0, 0), job.image)  # RGBA or LA straight onto RGB, its alpha the mask
    job.image = canvas


# The pipeline, in order. Each step reads and updates the Job.
STEPS: Final[tuple[Callable[[Job], None], ...]] = (
    draft,
    load_first_frame,
    orient,
    normalise_mode,
    choose_focus,
    resize,
    choose_output,
    flatten,
)


def render(
    data: bytes | bytearray,
    spec: TransformSpec,
    target: OutputFormat | None,
    settings: RenderSettings,
    clock: Callable[[], float] = time.perf_counter,
) -> Rendered:
    """Run every step on ``data``. ``target`` None: JPEG/PNG by alpha, or the source's family.

    Raises only ``ProxyError``s for anything wrong with ``data``; see ``is_data_failure`` for
    what passes through untranslated (the worker's time-limit alarm, MemoryError).
    """
    started = clock()
    stage = open_image.__name__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pillow on the data (see the docstring)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with open_image(data, settings) as image:
                job = Job(image=image, source_format=image.format or "", spec=spec, target=target,
                          settings=settings)
                for step in STEPS:
                    stage = step.__name__
                    step(job)
                stage = encode.__name__
                assert job.target is not None
                body = encode(job.image, job.target, job.spec.quality, job.settings, job.icc_profile)
                width, height = job.image.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLarge(f"{stage}: pixel bomb (Pillow)") from None
        except Exception as exc:
            if not is_data_failure(exc):
                raise
            raise UnprocessableImage(f"{stage} failed: {exc.__class__.__name__}") from None
    assert job.target is not None
    return Rendered(body=body, media_type=job.target.media_type, width=width, height=height,
                    seconds=clock() - started)
