"""transform/attention.py: gravity=auto puts the cover window over the detail, on generated
portraits whose face is where the test says (tests/portraits.py)."""

from __future__ import annotations

import pytest
from PIL import Image
from portraits import portrait

from imgproxy.transform.attention import MAP_SIDE, best_start, find_focus, saliency
from imgproxy.transform.geometry import focal_crop

# (picture size, face centre as fractions, target): the face near each edge of portraits and
# landscapes, crops to squares, strips and the other orientation.
LAYOUTS = [
    ((600, 800), (0.5, 0.16), (100, 100)),   # a head-and-shoulders portrait: the face near the top
    ((600, 800), (0.5, 0.84), (100, 100)),   # the face near the bottom
    ((600, 800), (0.35, 0.2), (300, 200)),   # to a landscape strip
    ((800, 600), (0.14, 0.5), (100, 100)),   # a landscape: the face at the left
    ((800, 600), (0.86, 0.4), (100, 100)),   # at the right
    ((1600, 900), (0.2, 0.3), (90, 160)),    # a wide picture to a tall crop
    ((3000, 4000), (0.6, 0.15), (96, 96)),   # a phone photo's size
]


@pytest.mark.parametrize(("size", "centre", "target"), LAYOUTS, ids=str)
def test_the_attention_window_contains_the_face(size: tuple[int, int], centre: tuple[float, float],
                                                target: tuple[int, int]) -> None:
    picture = portrait(size, centre)
    focus = find_focus(picture.image, (0, 0, *size), target)
    left, top, right, bottom = focal_crop(size, target, focus)
    s_left, s_top, s_right, s_bottom = picture.subject
    where = (focus, picture.subject)
    assert left <= s_left, where
    assert s_right <= right, where
    assert top <= s_top, where
    assert s_bottom <= bottom, where


def test_the_attention_window_of_a_drafted_image_is_where_it_is_on_the_full_one() -> None:
    # The pipeline measures on the decoded (drafted) pixels, of which the picture covers a region.
    picture = portrait((1200, 1600), (0.5, 0.8))
    full = find_focus(picture.image, (0, 0, 1200, 1600), (1, 1))
    padded = Image.new("RGB", (151, 201), (0, 0, 0))
    padded.paste(picture.image.resize((150, 200), Image.Resampling.BOX))
    drafted = find_focus(padded, (0, 0, 150, 200), (1, 1))
    assert drafted == pytest.approx(full, abs=0.02)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA"])
def test_a_flat_picture_is_cropped_at_the_centre(mode: str) -> None:
    flat = Image.new(mode, (300, 400), 128 if mode in ("L", "LA") else (128, 128, 128, 255)[: len(mode)])
    assert find_focus(flat, (0, 0, 300, 400), (1, 1)) == (0.5, 0.5)
    assert find_focus(flat, (0, 0, 300, 400), (4, 1)) == (0.5, 0.5)


def test_the_map_is_small_whatever_the_source() -> None:
    picture = portrait((3000, 4000), (0.5, 0.5))
    assert max(saliency(picture.image, (0, 0, 3000, 4000)).size) == MAP_SIDE
    assert saliency(Image.new("RGB", (40, 30)), (0, 0, 40, 30)).size == (40, 30)  # never enlarged


def test_the_same_pixels_give_the_same_point() -> None:
    picture = portrait((900, 1200), (0.3, 0.3), seed=4)
    points = {find_focus(picture.image, (0, 0, 900, 1200), (1, 1)) for _ in range(3)}
    assert len(points) == 1


@pytest.mark.parametrize(("line", "length", "start"), [
    ([0, 0, 9, 9, 0, 0], 2, 2), ([5, 0, 0, 0], 2, 0), ([0, 0, 0, 5], 2, 2), ([1, 1, 1, 1, 1], 3, 1),
    ([1, 1, 1, 1], 2, 1), ([3], 1, 0), ([1, 2, 3], 3, 0), ([1, 2, 3], 5, 0),
])
def test_the_best_run_has_the_largest_sum_and_ties_go_to_the_middle(line: list[int], length: int,
                                                                     start: int) -> None:
    assert best_start(line, length) == start
