"""fp=x,y and gravity=auto, pure: the fp grammar, its canonical form, and the focal crop box."""

from __future__ import annotations

from typing import Any

import pytest

from imgproxy.config import parse_config
from imgproxy.errors import InvalidParameter
from imgproxy.transform.geometry import focal_crop
from imgproxy.transform.params import (
    Gravity,
    OutputFormat,
    TransformLimits,
    TransformSpec,
    parse_transform,
)
from imgproxy.transform.policy import TransformPolicy

LIMITS = TransformLimits(max_width=4096, max_height=4096, formats=frozenset(OutputFormat))
COVER = {"w": "100", "h": "100", "fit": "cover"}


def parse(query: dict[str, str]) -> TransformSpec:
    spec = parse_transform(query, LIMITS)
    assert spec is not None
    return spec


# --- the fp grammar -----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "focus"), [
    ("0.5,0.25", (500, 250)), ("0,0", (0, 0)), ("1,1", (1000, 1000)), ("0.001,0.999", (1, 999)),
    ("0.500,0.250", (500, 250)), ("1.0,0.0", (1000, 0)), ("1.000,0.000", (1000, 0)), ("0.33,0.7", (330, 700)),
])
def test_fp_is_two_fractions_kept_in_thousandths(text: str, focus: tuple[int, int]) -> None:
    assert parse({**COVER, "fp": text}).focus == focus


@pytest.mark.parametrize("text", [
    "1.0001,0.5", "0.5,1.001", "1.5,0", "2,0", "-0,0.5", "+0.5,0.5", ".5,.5", "0.5", "0.5,", ",0.5",
    "0.5,0.5,0.5", "0.5 ,0.5", "0.5;0.5", "5e-1,0.5", "0.5000,0.5", "0.,0.5", "nan,0.5", "1e0,0",
    "0x1,0", "\uff10.5,0.5", "",
])
def test_fp_outside_the_grammar_is_400_naming_fp(text: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse({**COVER, "fp": text})
    assert "'fp'" in caught.value.public_message


@pytest.mark.parametrize("query", [
    {"w": "100", "h": "100", "fp": "0.5,0.5"},  # fit=inside, the default
    {"w": "100", "h": "100", "fit": "contain", "fp": "0.5,0.5"},
    {"w": "100", "h": "100", "fit": "fill", "fp": "0.5,0.5"},
    {"w": "100", "fit": "inside", "fp": "0.5,0.5"},
])
def test_fp_without_fit_cover_is_400(query: dict[str, str]) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse(query)
    assert caught.value.public_message == "Parameter 'fp' only applies to fit=cover."


@pytest.mark.parametrize("gravity", ["center", "north", "auto"])
def test_fp_with_gravity_is_400(gravity: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        parse({**COVER, "fp": "0.5,0.5", "gravity": gravity})
    assert caught.value.public_message == "Parameter 'fp' cannot be combined with gravity."


def test_gravity_auto_is_a_gravity_of_fit_cover_only() -> None:
    assert parse({**COVER, "gravity": "auto"}).gravity is Gravity.AUTO
    assert parse({**COVER, "gravity": "AUTO"}).gravity is Gravity.AUTO
    with pytest.raises(InvalidParameter):
        parse({"w": "100", "h": "100", "fit": "contain", "gravity": "auto"})


# --- the canonical form (variant key and ETag) --------------------------------------------------

def test_spellings_of_one_focal_point_share_a_variant() -> None:
    assert parse({**COVER, "fp": "0.5,0.25"}).canonical == parse({**COVER, "fp": "0.500,0.250"}).canonical


@pytest.mark.parametrize(("one", "other"), [
    ({"fp": "0.5,0.25"}, {"fp": "0.25,0.5"}),
    ({"fp": "0.5,0.25"}, {"fp": "0.5,0.251"}),
    ({"fp": "0.5,0.5"}, {}),  # the centre by fp is a crop by a point, not by a gravity
    ({"gravity": "auto"}, {}),
    ({"gravity": "auto"}, {"fp": "0.5,0.5"}),
])
def test_other_focal_points_and_auto_are_other_variants(one: dict[str, str], other: dict[str, str]) -> None:
    assert parse({**COVER, **one}).canonical != parse({**COVER, **other}).canonical


def test_a_spec_without_fp_keeps_its_canonical_form() -> None:
    # Variant keys and ETags cached before fp existed stay valid.
    assert parse(COVER).canonical == "w=100,h=100,fit=cover,g=center,fmt=src,q=0,bg=none"
    assert parse({**COVER, "fp": "0.5,0.25"}).canonical.endswith(",fp=500:250")


# --- the focal crop box -------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "target", "focus", "box"), [
    ((300, 400), (100, 100), (0.5, 0.5), (0, 50, 300, 350)),      # the centre, as gravity=center
    ((300, 400), (100, 100), (0.5, 0.25), (0, 0, 300, 300)),      # 100 px from the top: clamped
    ((300, 400), (100, 100), (0.5, 0.5 + 0.125 / 2), (0, 75, 300, 375)),
    ((300, 400), (100, 100), (0, 0), (0, 0, 300, 300)),           # a corner: the crop at that corner
    ((300, 400), (100, 100), (1, 1), (0, 100, 300, 400)),
    ((400, 300), (100, 100), (0, 0), (0, 0, 300, 300)),
    ((400, 300), (100, 100), (1, 0), (100, 0, 400, 300)),
    ((400, 300), (100, 100), (0.6, 0.9), (90, 0, 390, 300)),
    ((400, 300), (400, 100), (0.5, 0.9), (0, 200, 400, 300)),
    ((400, 300), (4, 3), (0.1, 0.1), (0, 0, 400, 300)),           # the same aspect: the whole image
])
def test_the_focal_crop_is_centred_on_the_point_and_clamped_inside(
        size: tuple[int, int], target: tuple[int, int], focus: tuple[float, float],
        box: tuple[float, float, float, float]) -> None:
    assert focal_crop(size, target, focus) == pytest.approx(box)


def test_every_focal_crop_lies_inside_the_image_with_the_target_aspect() -> None:
    points = [(x / 8, y / 8) for x in range(9) for y in range(9)]
    for size in [(1, 1), (7, 13), (13, 7), (320, 214), (853, 1280), (4000, 3000)]:
        for target in [(1, 1), (3, 2), (2, 3), (64, 64), (301, 33), (33, 301)]:
            for focus in points:
                left, top, right, bottom = box = focal_crop(size, target, focus)
                where = f"{size} -> {target} at {focus}: {box}"
                assert 0 <= left < right <= size[0], where
                assert 0 <= top < bottom <= size[1], where
                assert right - left == size[0] or bottom - top == size[1], f"not maximal: {where}"
                aspect = (right - left) * target[1] - (bottom - top) * target[0]
                assert abs(aspect) <= 1e-6 * target[0] * target[1], f"aspect: {where}"
                centre = ((left + right) / 2 / size[0], (top + bottom) / 2 / size[1])
                # The point is the centre unless the box had to move to stay inside.
                for axis, (lo, hi, side) in enumerate(((left, right, size[0]), (top, bottom, size[1]))):
                    if lo > 0 and hi < side:
                        assert centre[axis] == pytest.approx(focus[axis]), where



# --- fp beside a preset -----------------------------------------------------------------------

def presets(definition: dict[str, Any]) -> TransformPolicy:
    data = {"auth": {"keys": {"k1": "focal-test-signing-key-0123456789abcdef0123"}},
            "sources": {"photos": {"bucket": "acme-photos"}},
            "transform": {"presets": {"face": definition}}}
    return TransformPolicy.from_config(parse_config(data, environ={}).transform, frozenset(OutputFormat))


@pytest.mark.parametrize("gravity", [None, "north", "auto"])
def test_fp_beside_a_cover_preset_places_the_crop_in_place_of_its_gravity(gravity: str | None) -> None:
    definition: dict[str, Any] = {"w": 96, "h": 96, "fit": "cover"}
    if gravity is not None:
        definition["gravity"] = gravity
    spec = presets(definition).parse({"preset": "face", "fp": "0.5,0.2"})
    assert spec is not None
    assert spec.focus == (500, 200)
    assert spec.gravity is Gravity.CENTER  # unused: the crop is centred on fp


def test_fp_beside_a_preset_that_does_not_crop_is_400() -> None:
    with pytest.raises(InvalidParameter, match="fit=cover"):
        presets({"w": 96}).parse({"preset": "face", "fp": "0.5,0.2"})
