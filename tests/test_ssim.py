"""tests/ssim.py, the metric the render-quality tests and bench use: checked against SSIM's
definition computed directly, one window at a time, on images small enough for plain loops."""

from __future__ import annotations

import random

import pytest
from PIL import Image, ImageFilter
from ssim import C1, C2, RADIUS, WEIGHTS, luminance, mean_absolute_difference, ssim


def ssim_by_definition(one: Image.Image, other: Image.Image) -> float:
    x, y = luminance(one), luminance(other)
    width, height = x.size
    xs = [[float(x.getpixel((i, j))) for i in range(width)] for j in range(height)]  # type: ignore[arg-type]
    ys = [[float(y.getpixel((i, j))) for i in range(width)] for j in range(height)]  # type: ignore[arg-type]
    values = []
    for j in range(RADIUS, height - RADIUS):
        for i in range(RADIUS, width - RADIUS):
            mx = my = sxx = syy = sxy = 0.0
            for dj in range(-RADIUS, RADIUS + 1):
                for di in range(-RADIUS, RADIUS + 1):
                    w = WEIGHTS[dj + RADIUS] * WEIGHTS[di + RADIUS]
                    p, q = xs[j + dj][i + di], ys[j + dj][i + di]
                    mx, my = mx + w * p, my + w * q
                    sxx, syy, sxy = sxx + w * p * p, syy + w * q * q, sxy + w * p * q
            values.append((2 * mx * my + C1) * (2 * (sxy - mx * my) + C2)
                          / ((mx * mx + my * my + C1) * (sxx - mx * mx + syy - my * my + C2)))
    return sum(values) / len(values)


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    return Image.frombytes("RGB", size, random.Random(seed).randbytes(size[0] * size[1] * 3))


PICTURE = noise((37, 29), 1).filter(ImageFilter.GaussianBlur(1))


@pytest.mark.parametrize(
    "other",
    [PICTURE.filter(ImageFilter.GaussianBlur(1.2)), PICTURE.point(lambda v: v // 2 + 40), noise((37, 29), 2)],
    ids=["blurred", "dimmer", "unrelated"],
)
def test_ssim_is_the_definition_computed_directly(other: Image.Image) -> None:
    assert ssim(PICTURE, other) == pytest.approx(ssim_by_definition(PICTURE, other), abs=1e-5)


def test_identical_images_score_one_and_differ_by_nothing() -> None:
    assert ssim(PICTURE, PICTURE.copy()) == pytest.approx(1.0, abs=1e-6)
    assert mean_absolute_difference(PICTURE, PICTURE.copy()) == 0


def test_images_of_different_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="sizes differ"):
        ssim(PICTURE, PICTURE.resize((36, 29)))
