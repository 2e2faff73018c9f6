"""transform/negotiate.py: which encoder fmt=auto picks from the Accept header."""

from __future__ import annotations

import pytest

from imgproxy.transform.negotiate import (
    MAX_ACCEPT_CHARS,
    accepted_types,
    choose_target,
    parse_accept,
    quality,
)
from imgproxy.transform.params import OutputFormat, TransformSpec

# What fmt=auto may send besides JPEG/PNG, in tie order (TransformPolicy.auto_formats).
ALL = (OutputFormat.WEBP, OutputFormat.AVIF)  # transform.auto_prefer's default
AVIF_FIRST = (OutputFormat.AVIF, OutputFormat.WEBP)  # auto_prefer = ["avif", "webp"]
NO_AVIF = (OutputFormat.WEBP,)  # no AVIF encoder, or auto_prefer = ["webp"]
ONLY_AVIF = (OutputFormat.AVIF,)
BASIC: tuple[OutputFormat, ...] = ()
AUTO = TransformSpec(width=100, height=None, auto_format=True)
SOURCE = TransformSpec(width=100, height=None)
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI_15 = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
FIREFOX_OLD = "image/webp,*/*"
SAFARI_17 = ("image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,"
             "image/svg+xml,image/*;q=0.8,*/*;q=0.5")


@pytest.mark.parametrize(
    ("accept", "media_type", "listed"),
    [
        (None, "image/webp", False),
        ("", "image/webp", False),
        ("image/webp", "image/webp", True),
        ("IMAGE/WebP", "image/webp", True),
        ("  image/webp  ", "image/webp", True),
        ("image/webp;q=1", "image/webp", True),
        ("image/webp;q=0.001", "image/webp", True),
        ("image/webp;q=0", "image/webp", False),
        ("image/webp;q=0.0", "image/webp", False),
        ("image/webp;q=0.000", "image/webp", False),
        ("image/webp ; q = 0", "image/webp", False),
        ("image/webp;Q=0", "image/webp", False),  # RFC 9110 12.4.2: "q" is case-insensitive
        ("image/webp;level=1;q=0", "image/webp", False),
        ("text/html,image/webp;q=0.9,image/avif;q=0", "image/webp", True),
        ("text/html,image/webp;q=0.9,image/avif;q=0", "image/avif", False),
        ("image/*", "image/webp", False),
        ("*/*", "image/avif", False),
        ("image/*;q=1,*/*", "image/avif", False),
        ("image/webpx", "image/webp", False),
        ("image/avi", "image/avif", False),
        (CHROME, "image/avif", True),
        (CHROME, "image/webp", True),
        (SAFARI_15, "image/webp", True),
        (SAFARI_15, "image/avif", False),
        ("image/webp," + "a/b," * MAX_ACCEPT_CHARS, "image/webp", False),  # oversized: ignored whole
        # a malformed weight drops its range (never q=1): not a qvalue per RFC 9110 12.4.2
        ("image/webp;q=nan", "image/webp", False),
        ("image/webp;q=NaN", "image/webp", False),
        ("image/webp;q=inf", "image/webp", False),
        ("image/webp;q=2", "image/webp", False),
        ("image/webp;q=-1", "image/webp", False),
        ("image/webp;q=1.5", "image/webp", False),
        ("image/webp;q=0.0001", "image/webp", False),
        ("image/webp;q=", "image/webp", False),
        ("image/webp;q=abc", "image/webp", False),
        ("image/webp;q=1e0", "image/webp", False),
        ("image/webp;q=.5", "image/webp", False),
        ("image/webp;q=1.000", "image/webp", True),
        ("image/webp;q=0.", "image/webp", False),  # "0." is a qvalue, and weighs 0
        ("image/webp;q=nan,image/avif", "image/avif", True),  # only the malformed range is dropped
    ],
)
def test_accepted_types_lists_explicit_types_with_positive_weight(accept: str | None, media_type: str,
                                                                   listed: bool) -> None:
    assert (media_type in accepted_types(accept)) is listed


@pytest.mark.parametrize(
    ("spec", "accept", "formats", "expected"),
    [
        # an explicit fmt wins over Accept
        (TransformSpec(width=1, height=None, fmt=OutputFormat.PNG), CHROME, ALL, OutputFormat.PNG),
        (TransformSpec(width=1, height=None, fmt=OutputFormat.JPEG), "image/webp", ALL, OutputFormat.JPEG),
        # no fmt: the source's own family, decided later (Accept is not consulted)
        (SOURCE, CHROME, ALL, None),
        (SOURCE, None, ALL, None),
        # fmt=auto: WebP, then AVIF (the default order), if both client and server can;
        # otherwise JPEG/PNG later
        (AUTO, CHROME, ALL, OutputFormat.WEBP),
        (AUTO, "image/avif", ALL, OutputFormat.AVIF),
        (AUTO, "image/webp,image/avif", ALL, OutputFormat.WEBP),
        (AUTO, "image/avif,image/webp", ALL, OutputFormat.WEBP),
        (AUTO, "image/webp", ALL, OutputFormat.WEBP),
        (AUTO, SAFARI_15, ALL, OutputFormat.WEBP),
        (AUTO, FIREFOX_OLD, ALL, OutputFormat.WEBP),
        (AUTO, CHROME, NO_AVIF, OutputFormat.WEBP),
        (AUTO, "image/avif", NO_AVIF, None),
        (AUTO, CHROME, BASIC, None),
        (AUTO, "image/avif;q=0,image/webp", ALL, OutputFormat.WEBP),
        (AUTO, "image/avif;q=0,image/webp;q=0", ALL, None),
        (AUTO, "image/*", ALL, None),
        (AUTO, "*/*", ALL, None),
        (AUTO, "image/png,image/jpeg", ALL, None),
        (AUTO, "", ALL, None),
        (AUTO, None, ALL, None),
        # q values decide; ties go in the server's order, then JPEG/PNG
        (AUTO, "image/avif;q=0.1, image/webp;q=0.9", ALL, OutputFormat.WEBP),
        (AUTO, "image/webp;q=0.9, image/avif;q=0.1", ALL, OutputFormat.WEBP),
        (AUTO, "image/avif;q=0.9, image/webp;q=0.1", ALL, OutputFormat.AVIF),
        (AUTO, "image/avif;q=0.9, image/webp;q=0.8", ALL, OutputFormat.AVIF),  # the client's q wins
        (AUTO, "image/avif;q=0.5, image/webp;q=0.5", ALL, OutputFormat.WEBP),
        (AUTO, "image/webp;q=0.5, image/avif;q=0.5", ALL, OutputFormat.WEBP),
        (AUTO, "image/avif;q=0.1, image/webp;q=0.9", NO_AVIF, OutputFormat.WEBP),
        (AUTO, "image/avif, image/webp;q=0.9", NO_AVIF, OutputFormat.WEBP),
        (AUTO, SAFARI_17, ALL, OutputFormat.WEBP),
        # the other order (auto_prefer = ["avif", "webp"]): ties go to AVIF, q values still decide
        (AUTO, CHROME, AVIF_FIRST, OutputFormat.AVIF),
        (AUTO, SAFARI_17, AVIF_FIRST, OutputFormat.AVIF),
        (AUTO, "image/webp,image/avif", AVIF_FIRST, OutputFormat.AVIF),
        (AUTO, "image/avif;q=0.5, image/webp;q=0.5", AVIF_FIRST, OutputFormat.AVIF),
        (AUTO, "image/webp;q=0.9, image/avif;q=0.8", AVIF_FIRST, OutputFormat.WEBP),
        (AUTO, SAFARI_15, AVIF_FIRST, OutputFormat.WEBP),
        # a format left out of auto_prefer is never chosen by fmt=auto, whatever its q
        (AUTO, "image/avif, image/webp;q=0.1", NO_AVIF, OutputFormat.WEBP),
        (AUTO, CHROME, ONLY_AVIF, OutputFormat.AVIF),
        (AUTO, "image/webp, image/avif;q=0.1", ONLY_AVIF, OutputFormat.AVIF),
        (AUTO, SAFARI_15, ONLY_AVIF, None),
        # the JPEG/PNG fallback is weighed too, through the most specific range that matches it
        (AUTO, "image/avif;q=0.5, image/jpeg", ALL, None),
        (AUTO, "image/avif;q=0.5, image/png;q=0.8", ALL, None),
        (AUTO, "image/avif;q=0.5, image/*", ALL, None),
        (AUTO, "image/avif;q=0.5, */*", ALL, None),
        (AUTO, "image/avif;q=0.5, image/*;q=0.4, */*", ALL, OutputFormat.AVIF),  # image/* beats */*
        (AUTO, "image/avif, image/jpeg", ALL, OutputFormat.AVIF),  # a tie: AVIF first
        (AUTO, "image/webp;q=0.5, image/jpeg;q=0, image/png;q=0, image/*", ALL, OutputFormat.WEBP),
        (AUTO, "image/webp;q=0.5, image/jpeg;q=0, image/*", ALL, None),  # PNG still weighs 1
        (AUTO, "image/jpeg;q=0.9, image/png;q=0.9, image/webp;q=0.8", ALL, None),
        # a wildcard never selects AVIF or WebP, and a specific q=0 overrides it
        (AUTO, "image/*;q=0.1, */*;q=0.1", ALL, None),
        (AUTO, "image/webp;q=0, image/*", ALL, None),
        (AUTO, "image/avif;q=0, image/webp;q=0.2, image/*;q=0.1", ALL, OutputFormat.WEBP),
        # nothing acceptable: the fallback anyway, never a 406
        (AUTO, "image/avif;q=0, image/webp;q=0, */*;q=0", ALL, None),
        # malformed weights: the range is ignored, not read as q=1
        (AUTO, "image/avif;q=nan, image/webp;q=0.5", ALL, OutputFormat.WEBP),
        (AUTO, "image/avif;q=nan", ALL, None),
        (AUTO, "image/avif;q=0.1, image/webp;q=nan, image/jpeg;q=2", ALL, OutputFormat.AVIF),
        (AUTO, "image/avif;q=0.2, */*;q=nan", ALL, OutputFormat.AVIF),
    ],
)
def test_choose_target(spec: TransformSpec, accept: str | None, formats: tuple[OutputFormat, ...],
                       expected: OutputFormat | None) -> None:
    assert choose_target(spec, accept, formats) is expected


@pytest.mark.parametrize(
    ("accept", "media_type", "expected"),
    [
        ("image/webp;q=0.5", "image/webp", 0.5),
        ("image/*;q=0.3, image/webp;q=0.5", "image/webp", 0.5),  # the specific type wins ...
        ("image/webp;q=0.5, image/*;q=0.9", "image/webp", 0.5),  # ... wherever it is listed
        ("image/*;q=0.3, */*;q=0.9", "image/jpeg", 0.3),  # type/* over */*
        ("*/*;q=0.2", "image/jpeg", 0.2),
        ("text/*", "image/jpeg", 0.0),  # no range matches
        ("image/webp;q=0.2, image/webp;q=0.7", "image/webp", 0.7),  # the same range twice: the higher
        ("image/webp;level=1;q=0.4", "image/webp", 0.4),  # media type parameters do not hide q
        ("image/webp;q=0.4;q=0.9", "image/webp", 0.4),  # the first q counts
        ("image/webp;Q=0.25", "image/webp", 0.25),
        ("image/webp", "image/webp", 1.0),
        ("webp, image", "image/webp", 0.0),  # not type/subtype
    ],
)
def test_quality_is_the_most_specific_matching_ranges_weight(accept: str, media_type: str,
                                                            expected: float) -> None:
    assert quality(media_type, parse_accept(accept)) == expected


def test_quality_without_wildcards_counts_only_the_type_itself() -> None:
    ranges = parse_accept("image/*, */*")
    assert quality("image/avif", ranges) == 1.0
    assert quality("image/avif", ranges, wildcards=False) == 0.0


@pytest.mark.parametrize("weight", ["nan", "NaN", "inf", "-inf", "1e0", "2", "-0", "0.1234", "1.001", "0x1",
                                    "", "\u0661"])
def test_a_range_with_a_malformed_weight_is_left_out(weight: str) -> None:
    assert parse_accept(f"image/webp;q={weight}, image/png") == parse_accept("image/png")
