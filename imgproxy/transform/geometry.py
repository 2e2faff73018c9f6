"""Where the pixels go: the scaled size and the ``fit=cover`` crop box, as pure arithmetic.

No Pillow here: the steps (``steps.py``) apply these boxes, and the tests check them over every
size, target and gravity without decoding an image.
"""

from __future__ import annotations

from imgproxy.transform.params import Fit, Gravity, TransformSpec


def target_box(size: tuple[int, int], spec: TransformSpec) -> tuple[int, int] | None:
    """The size the image is scaled to before any crop or letterbox, or None for no scaling."""
    width, height = size
    if spec.width is None and spec.height is None:
        return None
    if spec.fit is Fit.FILL and spec.width and spec.height:
        return spec.width, spec.height
    ratios = [r for r in ((spec.width or 0) / width, (spec.height or 0) / height) if r > 0]
    if spec.fit is Fit.COVER:
        scale = max(ratios)
    else:
        scale = min(ratios)
        if spec.fit is Fit.INSIDE:
            scale = min(scale, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _cover_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[float, float]:
    """The largest box of the target's aspect inside ``size``.

    Which side is kept whole is decided in integers (``target_w * height`` against
    ``target_h * width``), so that side is exact; the other is the exact quotient clamped to the
    image. Computing both from a float scale instead puts the box a hair outside the image on
    about one square thumbnail size in ten, and Pillow refuses such a box (ValueError).
    """
    width, height = size
    target_w, target_h = target
    if target_w * height >= target_h * width:  # the target is relatively wider: keep the width
        return float(width), min(float(height), width * target_h / target_w)
    return min(float(width), height * target_w / target_h), float(height)


def cover_crop(size: tuple[int, int], target: tuple[int, int],
               gravity: Gravity) -> tuple[float, float, float, float]:
    """The part of a ``size`` image that ``fit=cover`` keeps: the largest box of the target's
    aspect ratio, placed at ``gravity``, as (left, top, right, bottom) inside the image.
    (``Gravity.AUTO`` is resolved to a focal point before this; here it is the centre.)"""
    width, height = size
    crop_w, crop_h = _cover_size(size, target)
    name = gravity.value
    x_share = 0.0 if "west" in name else 1.0 if "east" in name else 0.5
    y_share = 0.0 if "north" in name else 1.0 if "south" in name else 0.5
    left, top = (width - crop_w) * x_share, (height - crop_h) * y_share
    return left, top, min(float(width), left + crop_w), min(float(height), top + crop_h)


def focal_crop(size: tuple[int, int], target: tuple[int, int],
               focus: tuple[float, float]) -> tuple[float, float, float, float]:
    """The ``fit=cover`` box centred on ``focus`` (fractions 0..1 of the width and height),
    moved back inside the image where the point is nearer an edge than half the box."""
    width, height = size
    crop_w, crop_h = _cover_size(size, target)
    left = min(max(0.0, focus[0] * width - crop_w / 2), width - crop_w)
    top = min(max(0.0, focus[1] * height - crop_h / 2), height - crop_h)
    return left, top, min(float(width), left + crop_w), min(float(height), top + crop_h)


Box = tuple[float, float, float, float]  # (left, top, right, bottom)


def mapped_box(box: Box, size: tuple[int, int], region: Box) -> Box:
    """``box``, given on an image of ``size``, on pixels in which that whole image covers
    ``region``. A JPEG drafted at 1/s is decoded into ceil(W/s) x ceil(H/s) pixels of which it
    covers (0, 0, W/s, H/s) (the last row and column are partly padding), so the scale and the
    crop are computed on the source's own size and only then moved onto the decoded pixels:
    computed on the decoded size, a side could round to a pixel more, and the picture would be
    stretched by up to that padding. Never beyond ``region`` (Pillow refuses a box outside the
    image)."""
    width, height = size
    x_scale, y_scale = (region[2] - region[0]) / width, (region[3] - region[1]) / height
    return (max(region[0], region[0] + box[0] * x_scale), max(region[1], region[1] + box[1] * y_scale),
            min(region[2], region[0] + box[2] * x_scale), min(region[3], region[1] + box[3] * y_scale))


def oriented_box(box: Box, size: tuple[int, int], orientation: int) -> Box:
    """Where ``box`` on an image of ``size`` lies once the EXIF ``orientation`` (1-8) is applied
    to the image, i.e. on the upright picture (what ``steps.orient`` does to the pixels)."""
    width, height = size
    left, top, right, bottom = box
    if orientation in (2, 3):  # mirrored left to right (2), or turned half way (3)
        left, right = width - right, width - left
    if orientation in (3, 4):  # upside down
        top, bottom = height - bottom, height - top
    if orientation in (5, 6, 7, 8):  # a quarter turn: rows become columns
        if orientation in (6, 7):  # the stored left edge becomes the top, the bottom the left
            top, bottom = height - bottom, height - top
        if orientation in (7, 8):
            left, right = width - right, width - left
        return top, left, bottom, right
    return left, top, right, bottom
