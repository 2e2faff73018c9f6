"""transform/params.py: the signed query -> TransformSpec, or an InvalidParameter naming the parameter."""

from __future__ import annotations

import pytest

from imgproxy.errors import InvalidParameter
from imgproxy.transform.params import (
    Fit,
    Gravity,
    OutputFormat,
    TransformLimits,
    TransformSpec,
    parse_transform,
)

ALL_FORMATS = frozenset(OutputFormat)
LIMITS = TransformLimits(max_width=4096, max_height=2048, formats=ALL_FORMATS)
NO_AVIF = TransformLimits(max_width=4096, max_height=2048,
                          formats=frozenset({OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP}))
AUTH = {"exp": "1700000000", "kid": "k1", "sig": "abc"}


def parse(query: dict[str, str], limits: TransformLimits = LIMITS) -> TransformSpec | None:
    return parse_transform({**AUTH, **query}, limits)


def rejection(query: dict[str, str], limits: TransformLimits = LIMITS) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as caught:
        parse(query, limits)
    return caught.value


# --- no transform -----------------------------------------------------------------------------

@pytest.mark.parametrize("query", [{}, {"exp": "1"}, AUTH])
def test_a_query_without_transform_parameters_asks_for_the_original(query: dict[str, str]) -> None:
    assert parse_transform(query, LIMITS) is None


# --- valid values -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"w": "300"}, TransformSpec(width=300, height=None)),
        ({"h": "200"}, TransformSpec(width=None, height=200)),
        ({"w": "1", "h": "1"}, TransformSpec(width=1, height=1)),
        ({"w": "4096"}, TransformSpec(width=4096, height=None)),
        ({"h": "2048"}, TransformSpec(width=None, height=2048)),
        ({"w": "0150"}, TransformSpec(width=150, height=None)),
        ({"w": "150", "dpr": "2"}, TransformSpec(width=300, height=None)),
        ({"w": "100", "h": "50", "dpr": "3"}, TransformSpec(width=300, height=150)),
        ({"w": "101", "dpr": "1.5"}, TransformSpec(width=152, height=None)),  # 151.5 rounds up
        ({"w": "100", "dpr": "1.25"}, TransformSpec(width=125, height=None)),
        ({"h": "100", "dpr": "4"}, TransformSpec(width=None, height=400)),
        ({"w": "100", "dpr": "1"}, TransformSpec(width=100, height=None)),
        ({"w": "2048", "dpr": "2"}, TransformSpec(width=4096, height=None)),
        ({"w": "10", "fit": "inside"}, TransformSpec(width=10, height=None, fit=Fit.INSIDE)),
        ({"w": "10", "h": "20", "fit": "cover"}, TransformSpec(width=10, height=20, fit=Fit.COVER)),
        ({"w": "10", "h": "20", "fit": "contain"}, TransformSpec(width=10, height=20, fit=Fit.CONTAIN)),
        ({"w": "10", "h": "20", "fit": "fill"}, TransformSpec(width=10, height=20, fit=Fit.FILL)),
        ({"w": "10", "h": "20", "fit": "COVER"}, TransformSpec(width=10, height=20, fit=Fit.COVER)),
        ({"fmt": "jpeg"}, TransformSpec(width=None, height=None, fmt=OutputFormat.JPEG)),
        ({"fmt": "png"}, TransformSpec(width=None, height=None, fmt=OutputFormat.PNG)),
        ({"fmt": "webp"}, TransformSpec(width=None, height=None, fmt=OutputFormat.WEBP)),
        ({"fmt": "avif"}, TransformSpec(width=None, height=None, fmt=OutputFormat.AVIF)),
        ({"fmt": "WebP"}, TransformSpec(width=None, height=None, fmt=OutputFormat.WEBP)),
        ({"fmt": "auto"}, TransformSpec(width=None, height=None, auto_format=True)),
        ({"fmt": "AUTO"}, TransformSpec(width=None, height=None, auto_format=True)),
        ({"w": "5", "q": "1"}, TransformSpec(width=5, height=None, quality=1)),
        ({"w": "5", "q": "100"}, TransformSpec(width=5, height=None, quality=100)),
        ({"fmt": "jpeg", "q": "50"}, TransformSpec(None, None, fmt=OutputFormat.JPEG, quality=50)),
        ({"fmt": "webp", "q": "50"}, TransformSpec(None, None, fmt=OutputFormat.WEBP, quality=50)),
        ({"fmt": "avif", "q": "50"}, TransformSpec(None, None, fmt=OutputFormat.AVIF, quality=50)),
        ({"fmt": "auto", "q": "50"}, TransformSpec(width=None, height=None, auto_format=True, quality=50)),
        ({"w": "5", "bg": "ff0000"}, TransformSpec(width=5, height=None, background=(255, 0, 0, 255))),
        ({"w": "5", "bg": "00FF0080"}, TransformSpec(width=5, height=None, background=(0, 255, 0, 128))),
        ({"w": "5", "bg": "abcdef00"}, TransformSpec(width=5, height=None, background=(171, 205, 239, 0))),
    ],
    ids=lambda value: "&".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else "",
)
def test_valid_parameters_become_a_normalised_spec(query: dict[str, str], expected: TransformSpec) -> None:
    assert parse(query) == expected


@pytest.mark.parametrize("gravity", list(Gravity))
def test_every_gravity_is_accepted_with_fit_cover(gravity: Gravity) -> None:
    spec = parse({"w": "10", "h": "10", "fit": "cover", "gravity": gravity.value})
    assert spec is not None
    assert spec.gravity is gravity


def test_defaults_are_fit_inside_centre_gravity_and_the_source_format() -> None:
    spec = parse({"w": "10"})
    assert spec == TransformSpec(width=10, height=None, fit=Fit.INSIDE, gravity=Gravity.CENTER, fmt=None,
                                 auto_format=False, quality=None, background=None)


# --- invalid values: 400 naming the parameter -------------------------------------------------

INVALID = [
    ("w", {"w": "0"}),
    ("w", {"w": "-1"}),
    ("w", {"w": "abc"}),
    ("w", {"w": ""}),
    ("w", {"w": "1.5"}),
    ("w", {"w": "1e3"}),
    ("w", {"w": "+5"}),
    ("w", {"w": " 5"}),
    ("w", {"w": "0x10"}),
    ("w", {"w": "٣"}),  # a unicode digit int() would accept
    ("w", {"w": "1234567"}),
    ("w", {"w": "4097"}),
    ("h", {"h": "0"}),
    ("h", {"h": "x"}),
    ("h", {"h": "2049"}),
    ("dpr", {"w": "10", "dpr": "0"}),
    ("dpr", {"w": "10", "dpr": "0.5"}),
    ("dpr", {"w": "10", "dpr": "4.01"}),
    ("dpr", {"w": "10", "dpr": "5"}),
    ("dpr", {"w": "10", "dpr": "10"}),
    ("dpr", {"w": "10", "dpr": "2."}),
    ("dpr", {"w": "10", "dpr": ".5"}),
    ("dpr", {"w": "10", "dpr": "1.234"}),
    ("dpr", {"w": "10", "dpr": "-1"}),
    ("dpr", {"w": "10", "dpr": "nan"}),
    ("dpr", {"w": "10", "dpr": "inf"}),
    ("dpr", {"w": "10", "dpr": ""}),
    ("fit", {"w": "10", "h": "10", "fit": "crop"}),
    ("fit", {"w": "10", "h": "10", "fit": ""}),
    ("gravity", {"w": "10", "h": "10", "fit": "cover", "gravity": "up"}),
    ("gravity", {"w": "10", "h": "10", "fit": "cover", "gravity": "centre"}),
    ("fmt", {"fmt": "gif"}),
    ("fmt", {"fmt": "bmp"}),
    ("fmt", {"fmt": ""}),
    ("q", {"w": "10", "q": "0"}),
    ("q", {"w": "10", "q": "101"}),
    ("q", {"w": "10", "q": "50.5"}),
    ("q", {"w": "10", "q": "high"}),
    ("q", {"w": "10", "q": ""}),
    ("bg", {"w": "10", "bg": "red"}),
    ("bg", {"w": "10", "bg": "fff"}),
    ("bg", {"w": "10", "bg": "#ff0000"}),
    ("bg", {"w": "10", "bg": "ff00000"}),
    ("bg", {"w": "10", "bg": "gggggg"}),
    ("bg", {"w": "10", "bg": ""}),
]


@pytest.mark.parametrize(("name", "query"), INVALID,
                         ids=[f"{name}={query[name]!r}" for name, query in INVALID])
def test_an_invalid_value_is_rejected_naming_the_parameter(name: str, query: dict[str, str]) -> None:
    error = rejection(query)
    assert error.status == 400
    assert error.code == "invalid_parameter"
    assert f"Parameter '{name}'" in error.public_message


@pytest.mark.parametrize("name", ["width", "W", "format", "quality", "x", "sig2"])
def test_an_unknown_parameter_is_rejected_naming_it(name: str) -> None:
    error = rejection({"w": "10", name: "1"})
    assert f"Unknown parameter '{name}'" in error.public_message


def test_an_unknown_parameter_is_rejected_even_without_transform_parameters() -> None:
    error = rejection({"download": "1"})
    assert "'download'" in error.public_message


# --- conflicting combinations -----------------------------------------------------------------

CONFLICTS = [
    ("gravity", {"w": "10", "gravity": "north"}),
    ("gravity", {"w": "10", "h": "10", "fit": "inside", "gravity": "north"}),
    ("gravity", {"w": "10", "h": "10", "fit": "contain", "gravity": "east"}),
    ("gravity", {"w": "10", "h": "10", "fit": "fill", "gravity": "center"}),
    ("fit", {"w": "10", "fit": "cover"}),
    ("fit", {"h": "10", "fit": "cover"}),
    ("fit", {"w": "10", "fit": "contain"}),
    ("fit", {"h": "10", "fit": "contain"}),
    ("fit", {"w": "10", "fit": "fill"}),
    ("fit", {"fit": "fill"}),
    ("q", {"fmt": "png", "q": "80"}),
    ("q", {"w": "10", "fmt": "PNG", "q": "80"}),
    ("dpr", {"dpr": "2"}),
    ("dpr", {"dpr": "2", "fmt": "webp"}),
]


@pytest.mark.parametrize(("name", "query"), CONFLICTS,
                         ids=["&".join(f"{k}={v}" for k, v in query.items()) for _, query in CONFLICTS])
def test_a_conflicting_combination_is_rejected_naming_the_parameter(name: str, query: dict[str, str]) -> None:
    assert f"Parameter '{name}'" in rejection(query).public_message


@pytest.mark.parametrize(
    ("name", "query"),
    [
        ("w", {"w": "2049", "dpr": "2"}),
        ("w", {"w": "1025", "dpr": "4"}),
        ("w", {"w": "2731", "dpr": "1.5"}),  # 4096.5 rounds up past the limit
        ("h", {"h": "1025", "dpr": "2"}),
    ],
)
def test_a_dimension_times_dpr_above_the_maximum_is_rejected(name: str, query: dict[str, str]) -> None:
    error = rejection(query)
    assert f"Parameter '{name}'" in error.public_message
    assert "dpr" in error.public_message


# --- formats ----------------------------------------------------------------------------------

def test_an_unsupported_output_format_names_the_supported_ones() -> None:
    message = rejection({"fmt": "avif"}, NO_AVIF).public_message
    assert "Parameter 'fmt'" in message
    assert "auto, jpeg, png, webp" in message


@pytest.mark.parametrize("value", ["gif", "tiff", "jpg2000"])
def test_an_unknown_output_format_names_the_supported_ones(value: str) -> None:
    message = rejection({"fmt": value}, NO_AVIF).public_message
    assert "Parameter 'fmt'" in message
    assert "auto, jpeg, png, webp" in message
    assert "avif" not in message


def test_fmt_auto_is_accepted_whatever_the_build_encodes() -> None:
    narrow = TransformLimits(4096, 4096, frozenset({OutputFormat.JPEG, OutputFormat.PNG}))
    spec = parse({"fmt": "auto"}, narrow)
    assert spec is not None
    assert spec.auto_format


# --- the canonical form (variant cache key and ETag) ------------------------------------------

@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"w": "150", "dpr": "2"}, {"w": "300"}),
        ({"w": "100", "h": "50", "dpr": "1.5"}, {"w": "150", "h": "75"}),
        ({"w": "0300"}, {"w": "300"}),
        ({"w": "300", "fit": "inside"}, {"w": "300"}),
        ({"w": "300", "dpr": "1"}, {"w": "300"}),
        ({"w": "9", "h": "9", "fit": "cover", "gravity": "center"}, {"w": "9", "h": "9", "fit": "cover"}),
        ({"w": "9", "h": "9", "fit": "COVER"}, {"w": "9", "h": "9", "fit": "cover"}),
        ({"fmt": "JPEG"}, {"fmt": "jpeg"}),
        ({"w": "9", "bg": "FFFFFF"}, {"w": "9", "bg": "ffffffff"}),
    ],
)
def test_requests_for_the_same_pixels_share_one_canonical_form(one: dict[str, str],
                                                                other: dict[str, str]) -> None:
    first, second = parse(one), parse(other)
    assert first is not None
    assert second is not None
    assert first.canonical == second.canonical


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"w": "300"}, {"h": "300"}),
        ({"w": "300"}, {"w": "301"}),
        ({"w": "9", "h": "9", "fit": "cover"}, {"w": "9", "h": "9", "fit": "fill"}),
        ({"w": "9", "h": "9", "fit": "contain"}, {"w": "9", "h": "9"}),
        ({"w": "9", "h": "9", "fit": "cover", "gravity": "north"},
         {"w": "9", "h": "9", "fit": "cover", "gravity": "south"}),
        ({"w": "9"}, {"w": "9", "fmt": "auto"}),
        ({"w": "9"}, {"w": "9", "fmt": "jpeg"}),
        ({"w": "9", "fmt": "webp"}, {"w": "9", "fmt": "avif"}),
        ({"w": "9", "q": "80"}, {"w": "9", "q": "81"}),
        ({"w": "9", "bg": "000000"}, {"w": "9"}),
        ({"w": "9", "bg": "00000000"}, {"w": "9", "bg": "000000"}),
    ],
)
def test_requests_for_different_pixels_have_different_canonical_forms(one: dict[str, str],
                                                                       other: dict[str, str]) -> None:
    first, second = parse(one), parse(other)
    assert first is not None
    assert second is not None
    assert first.canonical != second.canonical
