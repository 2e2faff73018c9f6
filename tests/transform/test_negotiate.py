"""transform/negotiate.py: which encoder fmt=auto picks from the Accept header."""

from __future__ import annotations

import pytest

from imgproxy.transform.negotiate import MAX_ACCEPT_CHARS, accepted_types, choose_target
from imgproxy.transform.params import OutputFormat, TransformSpec

ALL = frozenset(OutputFormat)
NO_AVIF = frozenset({OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP})
BASIC = frozenset({OutputFormat.JPEG, OutputFormat.PNG})
AUTO = TransformSpec(width=100, height=None, auto_format=True)
SOURCE = TransformSpec(width=100, height=None)
CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI_15 = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"
FIREFOX_OLD = "image/webp,*/*"


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
        # fmt=auto: AVIF, then WebP, if both client and server can; otherwise JPEG/PNG later
        (AUTO, CHROME, ALL, OutputFormat.AVIF),
        (AUTO, "image/avif", ALL, OutputFormat.AVIF),
        (AUTO, "image/webp,image/avif", ALL, OutputFormat.AVIF),
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
    ],
)
def test_choose_target(spec: TransformSpec, accept: str | None, formats: frozenset[OutputFormat],
                       expected: OutputFormat | None) -> None:
    assert choose_target(spec, accept, formats) is expected
