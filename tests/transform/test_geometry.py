"""transform/steps.py geometry: every fit mode keeps its size invariant, for every source size,
EXIF orientation, target size and (fit=cover) gravity, in displayed (post-orientation) pixels.

A property test over a grid rather than a list of examples: float rounding bugs in the crop
box hit about one square thumbnail size in ten of ordinary 3:2 photos, and no hand-picked
example list finds them reliably. The grid is kept small enough to run in a couple of seconds.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterator

import pytest
from PIL import ExifTags, Image
from support import RENDER_SETTINGS as SETTINGS

from imgproxy.transform.geometry import cover_crop, mapped_box, oriented_box
from imgproxy.transform.params import (
    Fit,
    Gravity,
    OutputFormat,
    TransformLimits,
    TransformSpec,
    parse_transform,
)
from imgproxy.transform.steps import _UPRIGHT, render

LIMITS = TransformLimits(max_width=4000, max_height=4000, formats=(OutputFormat.JPEG, OutputFormat.PNG))

# Displayed sizes: degenerate, odd and prime, and ordinary photo sizes in both orientations
# (1280x853 and 1000x667 at w=64&h=64 and w=100&h=100 were the reported 500s). A 4000x3000
# camera frame is represented by its 4:3 ratio at 400x300, to keep the grid fast.
SOURCES = [(1, 1), (2, 3), (3, 2), (7, 13), (13, 7), (101, 67), (400, 300), (1000, 667),
           (1280, 853), (853, 1280)]
ORIENTATIONS = range(1, 9)
# Target boxes (w, h): squares, thin strips, both aspect directions, enlargements of the tiny.
# (Larger boxes only cost time: the geometry is the same arithmetic.)
BOXES = [(1, 1), (3, 2), (1, 40), (40, 1), (7, 7), (16, 16), (50, 50), (64, 64), (100, 100),
         (45, 30), (29, 43)]
# fit=inside also takes one side only.
INSIDE_BOXES = [*BOXES, (64, None), (None, 64), (1, None), (None, 1), (2000, None)]

# How each EXIF orientation stores the displayed picture (the inverse of what a viewer applies).
STORED: dict[int, Image.Transpose | None] = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@functools.cache
def oriented_jpeg(displayed: tuple[int, int], orientation: int) -> bytes:
    """A JPEG that shows as ``displayed`` once its EXIF ``orientation`` is applied."""
    picture = Image.new("RGB", displayed, (90, 140, 200))
    method = STORED[orientation]
    stored = picture if method is None else picture.transpose(method)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif, quality=70)
    return buffer.getvalue()


def query(box: tuple[int | None, int | None], fit: Fit, gravity: Gravity | None = None) -> TransformSpec:
    width, height = box
    params = {"fit": fit.value}
    if width is not None:
        params["w"] = str(width)
    if height is not None:
        params["h"] = str(height)
    if gravity is not None:
        params["gravity"] = gravity.value
    spec = parse_transform(params, LIMITS)
    assert spec is not None
    return spec


def output_size(data: bytes, spec: TransformSpec) -> tuple[int, int]:
    """Render, and read the size back from the output's own header."""
    rendered = render(data, spec, None, SETTINGS)
    size = Image.open(io.BytesIO(rendered.body)).size
    assert size == (rendered.width, rendered.height)
    return size


def check_inside(source: tuple[int, int], box: tuple[int | None, int | None], size: tuple[int, int]) -> None:
    (src_w, src_h), (box_w, box_h), (out_w, out_h) = source, box, size
    where = f"{src_w}x{src_h} inside {box_w}x{box_h} -> {out_w}x{out_h}"
    assert min(out_w, out_h) >= 1, where
    assert out_w <= (box_w or out_w), f"wider than the box: {where}"
    assert out_h <= (box_h or out_h), f"taller than the box: {where}"
    assert out_w <= src_w, f"enlarged: {where}"
    assert out_h <= src_h, f"enlarged: {where}"
    # The aspect ratio, to a pixel: the side scaled from the other is within 1 px of it (one of
    # them, since neither can be under 1 px: 2000x1 inside w=1 is 1x1).
    assert abs(out_h - out_w * src_h / src_w) <= 1 or abs(out_w - out_h * src_w / src_h) <= 1, \
        f"aspect ratio lost: {where}"
    # And as large as allowed: one side reaches the box or the source.
    assert out_w >= min(box_w or src_w, src_w) - 1 or out_h >= min(box_h or src_h, src_h) - 1, \
        f"smaller than needed: {where}"


def cases() -> Iterator[tuple[tuple[int, int], int]]:
    for source in SOURCES:
        for orientation in ORIENTATIONS:
            yield source, orientation


def case_id(value: object) -> str:
    return f"{value[0]}x{value[1]}" if isinstance(value, tuple) else f"o{value}"


@pytest.mark.parametrize(("source", "orientation"), list(cases()), ids=case_id)
def test_every_fit_mode_keeps_its_size_invariant(source: tuple[int, int], orientation: int) -> None:
    data = oriented_jpeg(source, orientation)
    gravities = list(Gravity)
    for index, box in enumerate(BOXES):
        # Every gravity, for every source, across its orientations and boxes.
        gravity = gravities[(index + orientation) % len(gravities)]
        for fit in (Fit.COVER, Fit.CONTAIN, Fit.FILL):
            spec = query(box, fit, gravity if fit is Fit.COVER else None)
            assert output_size(data, spec) == box, f"{source} o{orientation} {spec.canonical}"
    for inside_box in INSIDE_BOXES:
        check_inside(source, inside_box, output_size(data, query(inside_box, Fit.INSIDE)))


@pytest.mark.parametrize("gravity", list(Gravity), ids=str)
def test_cover_gives_exactly_the_box_at_every_gravity(gravity: Gravity) -> None:
    # Every (source, box) pair at every gravity; the orientations are covered above.
    for source in SOURCES:
        data = oriented_jpeg(source, 1)
        for box in BOXES:
            assert output_size(data, query(box, Fit.COVER, gravity)) == box, f"{source} {box}"


def test_the_reported_thumbnail_sizes_render() -> None:
    for source, box in [((1280, 853), (64, 64)), ((1000, 667), (100, 100))]:
        assert output_size(oriented_jpeg(source, 1), query(box, Fit.COVER)) == box


# --- the crop box itself (pure) ---------------------------------------------------------------

Check = Callable[[tuple[float, float, float, float], tuple[int, int]], bool]
TOUCHES: dict[Gravity, Check] = {
    Gravity.NORTHWEST: lambda b, s: b[0] == 0 and b[1] == 0,
    Gravity.NORTH: lambda b, s: b[1] == 0,
    Gravity.NORTHEAST: lambda b, s: b[2] == s[0] and b[1] == 0,
    Gravity.WEST: lambda b, s: b[0] == 0,
    Gravity.CENTER: lambda b, s: abs(b[0] - (s[0] - b[2])) < 1e-6 and abs(b[1] - (s[1] - b[3])) < 1e-6,
    Gravity.EAST: lambda b, s: b[2] == s[0],
    Gravity.SOUTHWEST: lambda b, s: b[0] == 0 and b[3] == s[1],
    Gravity.SOUTH: lambda b, s: b[3] == s[1],
    Gravity.SOUTHEAST: lambda b, s: b[2] == s[0] and b[3] == s[1],
}


@pytest.mark.parametrize("gravity", [g for g in Gravity if g.is_fixed], ids=str)
def test_the_cover_crop_lies_inside_the_image_with_the_target_aspect_at_the_gravity(
        gravity: Gravity) -> None:
    # Stored sizes after JPEG DCT scaling are in the list too (1280x853 at 1/4 is 320x214).
    sizes = [(w, h) for w in (1, 2, 7, 13, 101, 160, 320, 853, 1000, 1280, 4000)
             for h in (1, 3, 7, 67, 107, 214, 667, 853, 3000)]
    for size in sizes:
        for target in [(s, s) for s in range(1, 101)] + [(150, 100), (100, 150), (33, 301), (301, 33)]:
            left, top, right, bottom = box = cover_crop(size, target, gravity)
            where = f"{size} -> {target} at {gravity}: {box}"
            assert 0 <= left < right <= size[0], where
            assert 0 <= top < bottom <= size[1], where
            assert right - left == size[0] or bottom - top == size[1], f"not maximal: {where}"
            aspect = (right - left) * target[1] - (bottom - top) * target[0]
            assert abs(aspect) <= 1e-6 * target[0] * target[1], f"aspect: {where}"
            assert TOUCHES[gravity](box, size), f"gravity: {where}"


# --- boxes through a draft and an orientation (pure) -----------------------------------------

@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_box_follows_the_pixels_through_each_orientation(orientation: int) -> None:
    stored = Image.new("L", (7, 4), 0)
    for box in [(1, 0, 3, 3), (0, 0, 7, 4), (6, 3, 7, 4), (2, 1, 5, 2)]:
        marked = stored.copy()
        marked.paste(255, box)
        method = _UPRIGHT.get(orientation)
        upright = marked if method is None else marked.transpose(method)
        assert oriented_box(box, stored.size, orientation) == upright.getbbox(), f"{box} o{orientation}"


@pytest.mark.parametrize(
    ("box", "size", "region", "expected"),
    [
        ((0, 0, 1280, 853), (1280, 853), (0, 0, 1280, 853), (0, 0, 1280, 853)),  # no draft
        # 1280x853 drafted at 1/4: 320x214 pixels, of which the picture covers 320x213.25.
        ((0, 0, 1280, 853), (1280, 853), (0, 0, 320, 213.25), (0, 0, 320, 213.25)),
        ((213.5, 0, 1066.5, 853), (1280, 853), (0, 0, 320, 213.25), (53.375, 0, 266.625, 213.25)),
        # The same draft mirrored left to right: the padded column is on the left now.
        ((0, 0, 1280, 853), (1280, 853), (0.75, 0, 320, 213.25), (0.75, 0, 320, 213.25)),
        ((0, 0, 640, 853), (1280, 853), (0.75, 0, 320, 213.25), (0.75, 0, 160.375, 213.25)),
    ],
)
def test_a_box_on_the_source_moves_onto_the_drafted_pixels(
        box: tuple[float, float, float, float], size: tuple[int, int],
        region: tuple[float, float, float, float], expected: tuple[float, float, float, float]) -> None:
    assert mapped_box(box, size, region) == expected
