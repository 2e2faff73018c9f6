"""transform/steps.py's shortcuts (JPEG draft, reducing gap): renders stay within the quality bound
the choice was made under, and the draft really decodes fewer pixels.

The bound is bench/bench_render_quality.py's (README "Transforms"): SSIM >= 0.985 on luminance
against the reference, a full-resolution decode resized by LANCZOS with no reducing gap, on the
same generated photos (tests/photos.py). For scale: a plain BILINEAR resize of the full image
scores 0.980-0.992 on them, and the JPEG encode at quality 82 alone 0.94-0.97. Outputs are PNG
so that no encoder loss is counted.
"""

from __future__ import annotations

import functools
import io

import pytest
from photos import photo_jpeg
from PIL import ExifTags, Image
from ssim import ssim
from support import RENDER_SETTINGS as SETTINGS

from imgproxy.transform import decode, steps
from imgproxy.transform.geometry import cover_crop, target_box
from imgproxy.transform.params import Fit, Gravity, OutputFormat, TransformSpec
from imgproxy.transform.steps import render

SSIM_BOUND = 0.985
# Camera frames, phone photos scaled on upload (both ways up), an odd size whose draft leaves a
# partly padded last row (853 / 4 = 213.25), and a small web image.
SOURCES = [(4000, 3000), (1600, 1200), (1200, 1600), (1280, 853), (800, 600)]
# Thumbnail widths and their dpr=2 variants (192, 300, 600), 260 and 347 (1280 and 1600 px
# sources' decoded widths at 1/4 are just over 1.15x them: the draft's worst cases), and the two
# kinds of crop.
TARGETS = [TransformSpec(96, None), TransformSpec(150, None), TransformSpec(192, None),
           TransformSpec(260, None), TransformSpec(300, None), TransformSpec(347, None),
           TransformSpec(600, None), TransformSpec(300, 300, fit=Fit.COVER),
           TransformSpec(120, 40, fit=Fit.COVER, gravity=Gravity.SOUTH)]


@functools.cache
def source(size: tuple[int, int], orientation: int = 1) -> bytes:
    """The generated photo as a JPEG that displays at ``size`` once ``orientation`` is applied."""
    if orientation == 1:
        return photo_jpeg(*size, seed=size[0] * size[1])
    upright = Image.open(io.BytesIO(source(size)))
    stored = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
              2: Image.Transpose.FLIP_LEFT_RIGHT}[orientation]
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    buffer = io.BytesIO()
    upright.transpose(stored).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def reference(data: bytes, request: TransformSpec) -> Image.Image:
    """A full-resolution decode (made upright), resized by LANCZOS with no reducing gap."""
    image = Image.open(io.BytesIO(data))
    method = steps._UPRIGHT.get(decode.exif_orientation(image))
    full = image.convert("RGB") if method is None else image.convert("RGB").transpose(method)
    box = target_box(full.size, request)
    assert box is not None
    if request.fit is Fit.COVER and request.width and request.height:
        size = (request.width, request.height)
        return full.resize(size, Image.Resampling.LANCZOS, box=cover_crop(full.size, size, request.gravity))
    return full.resize(box, Image.Resampling.LANCZOS)


def rendered(data: bytes, request: TransformSpec) -> Image.Image:
    body = render(data, request, OutputFormat.PNG, SETTINGS).body
    return Image.open(io.BytesIO(body)).convert("RGB")


def label(value: object) -> str:
    if isinstance(value, TransformSpec):
        return f"{value.width}x{value.height}-{value.fit.value}" if value.height else f"w{value.width}"
    return f"{value[0]}x{value[1]}" if isinstance(value, tuple) else str(value)


@pytest.mark.parametrize("size", SOURCES, ids=label)
def test_thumbnails_stay_within_the_quality_bound_of_a_full_resolution_lanczos(size: tuple[int, int]) -> None:
    data = source(size)
    worst = min((ssim(rendered(data, request), reference(data, request)), label(request))
                for request in TARGETS)
    assert worst[0] >= SSIM_BOUND, f"{label(size)} {worst[1]}: SSIM {worst[0]:.4f}"


ORIENTED = [TransformSpec(96, None), TransformSpec(300, 300, fit=Fit.COVER, gravity=Gravity.EAST)]


@pytest.mark.parametrize("orientation", [2, 3, 6])
@pytest.mark.parametrize("request_spec", ORIENTED, ids=label)
def test_an_oriented_odd_sized_jpeg_stays_within_the_bound(orientation: int,
                                                           request_spec: TransformSpec) -> None:
    # 1280x853 displayed: drafted, the padded last row or column ends up on another side.
    data = source((1280, 853), orientation)
    assert ssim(rendered(data, request_spec), reference(data, request_spec)) >= SSIM_BOUND


def test_a_crop_one_output_pixel_off_is_outside_the_bound() -> None:
    # What the bound rejects: the right picture in the wrong place.
    data = source((1600, 1200))
    request = TransformSpec(300, 300, fit=Fit.COVER)
    full = Image.open(io.BytesIO(data)).convert("RGB")
    left, top, right, bottom = cover_crop(full.size, (300, 300), Gravity.CENTER)
    shifted = full.resize((300, 300), Image.Resampling.LANCZOS, box=(left + 4, top, right + 4, bottom))
    assert ssim(shifted, reference(data, request)) < SSIM_BOUND


def decoded_size(data: bytes, request: TransformSpec) -> tuple[int, int]:
    """The size the JPEG is decoded at, after the draft step."""
    job = steps.Job(image=decode.open_image(data, SETTINGS), source_format="JPEG", spec=request,
                    target=None, settings=SETTINGS)
    steps.draft(job)
    steps.load_first_frame(job)
    return job.image.size


@pytest.mark.parametrize(
    ("size", "width", "decoded"),
    [
        ((1600, 1200), 300, (400, 300)),  # 1/4: 400 px is at least 1.15x the 300 px target
        ((1600, 1200), 347, (400, 300)),  # 1/4: 400 px is 1.153x the 347 px target
        ((1600, 1200), 350, (800, 600)),  # 1/2: 1/4 would be 400 px, under 1.15x the 350 px target
        ((1600, 1200), 96, (200, 150)),  # 1/8
        ((4000, 3000), 300, (500, 375)),  # 1/8
        ((4000, 3000), 600, (1000, 750)),  # 1/4
        ((1280, 853), 150, (320, 214)),  # 1/4, the last row partly padding
        ((800, 600), 600, (800, 600)),  # no draft: 1/2 would be under the target
    ],
    ids=lambda value: label(value) if isinstance(value, tuple) else f"w{value}",
)
def test_the_jpeg_draft_decodes_at_a_reduced_size(size: tuple[int, int], width: int,
                                                  decoded: tuple[int, int]) -> None:
    assert decoded_size(source(size), TransformSpec(width, None)) == decoded


@pytest.mark.parametrize(("width", "decoded", "size"),
                         [(96, (150, 114), (96, 72)), (150, (300, 227), (150, 113))])
def test_the_output_size_is_computed_on_the_source_not_on_the_drafted_pixels(
        width: int, decoded: tuple[int, int], size: tuple[int, int]) -> None:
    # 600x453 decodes at 1/4 as 150x114 (113.25 rows) for w=96 and at 1/2 as 300x227 (226.5) for
    # w=150, the last row partly padding. Computed on those, w=96 would be 96x73 and w=150 150x114,
    # where the source's own ratio gives 72.48 and 113.25.
    data = photo_jpeg(600, 453, seed=1)
    assert decoded_size(data, TransformSpec(width, None)) == decoded
    output = render(data, TransformSpec(width, None), OutputFormat.JPEG, SETTINGS)
    assert (output.width, output.height) == size
