"""The placeholder decision (``delivery/fallback.py``) and the drawing values
(``transform/drawing.py``): pure tables of input -> expected."""

from __future__ import annotations

import pytest

from imgproxy.auth.plain import PlainPolicy
from imgproxy.config.fallback import FallbackConfig
from imgproxy.delivery.fallback import choose_placeholder, fallback_etag
from imgproxy.errors import InvalidParameter, ParamsNotAllowed
from imgproxy.transform.drawing import (
    DEFAULT_SIZE,
    PALETTE,
    avatar_background,
    drawing_size,
    initials_drawing,
    parse_initials,
)
from imgproxy.transform.params import Fit, TransformSpec


@pytest.mark.parametrize(("given", "expected"), [
    ("ab", "AB"), ("A", "A"), ("xyz", "XYZ"), ("Zoë", "ZOE"), ("ÉŁ", "EL"), ("øß", "OS"),
])
def test_initials_are_folded_to_latin_capitals(given: str, expected: str) -> None:
    assert parse_initials({"initials": given}) == expected


@pytest.mark.parametrize("given", ["", "ABCD", "A1", "A B", "Жа", "中", "A-"])
def test_initials_other_than_one_to_three_latin_letters_are_refused(given: str) -> None:
    with pytest.raises(InvalidParameter):
        parse_initials({"initials": given})


def test_no_initials_is_none() -> None:
    assert parse_initials({"w": "96"}) is None


@pytest.mark.parametrize(("spec", "size"), [
    (None, (DEFAULT_SIZE, DEFAULT_SIZE)),
    (TransformSpec(width=None, height=None), (DEFAULT_SIZE, DEFAULT_SIZE)),
    (TransformSpec(width=96, height=None), (96, 96)),
    (TransformSpec(width=None, height=40), (40, 40)),
    (TransformSpec(width=120, height=90, fit=Fit.COVER), (120, 90)),
    (TransformSpec(width=200, height=100), (100, 100)),  # inside the box: the square that fits
])
def test_a_drawing_has_the_requests_size(spec: TransformSpec | None, size: tuple[int, int]) -> None:
    assert drawing_size(spec) == size


def test_an_avatars_colour_is_the_bg_else_one_per_key() -> None:
    assert avatar_background(TransformSpec(96, 96, background=(1, 2, 3, 128)), "k") == (1, 2, 3)
    assert avatar_background(None, "people/ada.jpg") in PALETTE
    assert avatar_background(None, "people/ada.jpg") == avatar_background(None, "people/ada.jpg")
    assert len({avatar_background(None, f"people/{n}.jpg") for n in range(50)}) > 3


def test_two_avatars_differ_in_canonical_by_letters_and_colour() -> None:
    spec = TransformSpec(96, 96)
    names = {initials_drawing(letters, spec, "k").canonical for letters in ("AB", "AC")}
    names.add(initials_drawing("AB", TransformSpec(96, 96, background=(0, 0, 0, 255)), "k").canonical)
    assert len(names) == 3


OBJECT = FallbackConfig(key="defaults/x.png")
SILHOUETTE = FallbackConfig(builtin="silhouette", statuses=(404, 502), status=200)
NONE = FallbackConfig()


@pytest.mark.parametrize(("config", "status", "initials", "expected"), [
    (OBJECT, 404, None, ("object", 404)),
    (OBJECT, 502, None, None),  # not listed
    (OBJECT, 403, None, None),
    (OBJECT, 404, "AB", ("initials", 404)),  # the request's own avatar first
    (SILHOUETTE, 502, None, ("silhouette", 200)),
    (SILHOUETTE, 500, "AB", None),
    (NONE, 404, None, None),  # no table: nothing for a plain request
    (NONE, 404, "AB", ("initials", 404)),
])
def test_which_placeholder_answers(config: FallbackConfig, status: int, initials: str | None,
                                   expected: tuple[str, int] | None) -> None:
    chosen = choose_placeholder(config, status, initials, TransformSpec(96, 96), "people/x.jpg")
    assert (None if chosen is None else (chosen.kind, chosen.status)) == expected


@pytest.mark.parametrize(("etag", "marked"), [
    ('"v5-abc"', '"fb-v5-abc"'),
    ('"d41d8cd98f00b204e9800998ecf8427e"', '"fb-d41d8cd98f00b204e9800998ecf8427e"'),
    ('W/"x"', 'W/"fb-x"'), (None, None),
])
def test_a_placeholders_etag_is_marked(etag: str | None, marked: str | None) -> None:
    assert fallback_etag(etag) == marked


def test_plain_urls_do_not_accept_initials_by_default() -> None:
    with pytest.raises(ParamsNotAllowed):
        PlainPolicy.of((96,), any_transform=False).check({"w": "96", "initials": "AB"})
    PlainPolicy.of((96,), any_transform=True).check({"w": "96", "initials": "AB"})
