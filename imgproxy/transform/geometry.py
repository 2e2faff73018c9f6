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


def cover_crop(size: tuple[int, int], target: tuple[int, int],
               gravity: Gravity) -> tuple[float, float, float, float]:
    """The part of a ``size`` image that ``fit=cover`` keeps: the largest box of the target's
    aspect ratio, placed at ``gravity``, as (left, top, right, bottom) inside the image.

    Which side is kept whole is decided in integers (``target_w * height`` against
    ``target_h * width``), so that side is exact; the other is the exact quotient clamped to the
    image. Computing both from a float scale instead puts the box a hair outside the image on
    about one square thumbnail size in ten, and Pillow refuses such a box (ValueError).
    """
    width, height = size
    target_w, target_h = target
    if target_w * height >= target_h * width:  # the target is relatively wider: keep the width
        crop_w, crop_h = float(width), min(float(height), width * target_h / target_w)
    else:
        crop_w, crop_h = min(float(width), height * target_w / target_h), float(height)
    name = gravity.value
    x_share = 0.0 if "west" in name else 1.0 if "east" in name else 0.5
    y_share = 0.0 if "north" in name else 1.0 if "south" in name else 0.5
    left, top = (width - crop_w) * x_share, (height - crop_h) * y_share
    return left, top, min(float(width), left + crop_w), min(float(height), top + crop_h)
