"""How close a render is to a reference: SSIM on luminance, and the mean absolute difference.

SSIM as Wang, Bovik, Sheikh and Simoncelli define it ("Image quality assessment: from error
visibility to structural similarity", IEEE TIP 2004) and as their reference ``ssim_index.m``
computes it: luminance on 0-255, an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
the map over the positions where the window fits in the image ("valid"), and its mean. Without
numpy: the sums run in Pillow's 32-bit float images ("F"), one separable pass per axis, each
tap a ``crop`` (the window shifted) scaled by ``point`` and added with ``ImageMath``, so nothing
is rounded to 8 bits on the way (a Gaussian blur of 8-bit images would round E[x^2] by up to
128, as much as the variance of a whole textured patch). ``tests/test_ssim.py`` checks it
against a direct double loop over the definition.

Shared by ``tests/transform/test_render_quality.py`` and ``bench/bench_render_quality.py`` (which
appends this directory to ``sys.path``), so the tests and the measurement use one metric.
"""

from __future__ import annotations

import math
from typing import Any

from PIL import Image, ImageChops, ImageMath, ImageStat

RADIUS = 5  # an 11-tap window
SIGMA = 1.5
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2
_RAW = [math.exp(-(k * k) / (2 * SIGMA * SIGMA)) for k in range(-RADIUS, RADIUS + 1)]
WEIGHTS = [w / sum(_RAW) for w in _RAW]  # one axis; the 2-D window is their outer product


def luminance(image: Image.Image) -> Image.Image:
    """Y of ITU-R BT.601 (Pillow's RGB -> L weights) as 32-bit floats, not rounded."""
    return image.convert("RGB").convert("F")


def _evaluate(expression: Any, **images: Image.Image) -> Image.Image:
    result = ImageMath.lambda_eval(expression, **images)
    assert isinstance(result, Image.Image)
    return result


def window_mean(image: Image.Image) -> Image.Image:
    """The Gaussian-weighted mean around each position where the whole window fits ("valid")."""
    for axis in (0, 1):
        width, height = image.size
        total: Image.Image | None = None
        for k, weight in enumerate(WEIGHTS):
            inner = width - 2 * RADIUS, height - 2 * RADIUS
            box = (k, 0, inner[0] + k, height) if axis == 0 else (0, k, width, inner[1] + k)
            part = image.crop(box).point(lambda v, w=weight: v * w)
            total = part if total is None else _evaluate(lambda a: a["t"] + a["p"], t=total, p=part)
        assert total is not None
        image = total
    return image


def ssim_map(one: Image.Image, other: Image.Image) -> Image.Image:
    """SSIM at each valid position of two same-sized images (luminance), as an "F" image."""
    if one.size != other.size:
        raise ValueError(f"sizes differ: {one.size} and {other.size}")
    if min(one.size) <= 2 * RADIUS:
        raise ValueError(f"{one.size} is smaller than the {2 * RADIUS + 1}-pixel window")
    x, y = luminance(one), luminance(other)
    mu_x, mu_y = window_mean(x), window_mean(y)
    xx = window_mean(_evaluate(lambda a: a["x"] * a["x"], x=x))
    yy = window_mean(_evaluate(lambda a: a["y"] * a["y"], y=y))
    xy = window_mean(_evaluate(lambda a: a["x"] * a["y"], x=x, y=y))
    return _evaluate(
        lambda a: ((a["mx"] * a["my"] * 2 + C1) * ((a["xy"] - a["mx"] * a["my"]) * 2 + C2))
        / ((a["mx"] * a["mx"] + a["my"] * a["my"] + C1)
           * (a["xx"] - a["mx"] * a["mx"] + a["yy"] - a["my"] * a["my"] + C2)),
        mx=mu_x, my=mu_y, xx=xx, yy=yy, xy=xy)


def ssim(one: Image.Image, other: Image.Image) -> float:
    """The mean SSIM of two same-sized images: 1.0 when identical."""
    return mean(ssim_map(one, other))


def mean(image: Image.Image) -> float:
    """The mean of an "F" image (``ImageStat`` bins float images into 256 levels first)."""
    value = image.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    assert isinstance(value, float)
    return value


def mean_absolute_difference(one: Image.Image, other: Image.Image) -> float:
    """Over every pixel and RGB channel, on 0-255."""
    means = ImageStat.Stat(ImageChops.difference(one.convert("RGB"), other.convert("RGB"))).mean
    return sum(means) / len(means)
