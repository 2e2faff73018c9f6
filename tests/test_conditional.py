"""conditional.py: Range parsing, request validators, and If-None-Match comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from imgproxy.protocol.conditional import (
    ByteRange,
    Preconditions,
    etag_matches,
    format_http_date,
    needs_local_evaluation,
    parse_http_date,
    parse_preconditions,
    parse_range,
)

DATE_TEXT = "Wed, 21 Oct 2015 07:28:00 GMT"
DATE = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


# --- parse_range ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=5-5", ByteRange(5, 5)),
        ("bytes=100-", ByteRange(100, None)),
        ("bytes=0-", ByteRange(0, None)),
        ("bytes=-500", ByteRange(None, 500)),
        ("bytes=-1", ByteRange(None, 1)),
        ("Bytes=0-99", ByteRange(0, 99)),
        ("BYTES=0-99", ByteRange(0, 99)),
        (" bytes = 10 - 20 ", ByteRange(10, 20)),
        ("bytes=1000000000000-", ByteRange(10**12, None)),
    ],
)
def test_single_byte_range_is_parsed(header: str, expected: ByteRange) -> None:
    assert parse_range(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes=",
        "bytes=-",
        "bytes=-0",
        "bytes=0-99,200-299",
        "bytes=0-0,-1",
        "bytes=0-99,",
        "bytes=9-5",
        "bytes=1-0",
        "items=0-99",
        "none",
        "0-99",
        "bytes 0-99",
        "bytes=a-b",
        "bytes=0x10-0x20",
        "bytes=-5-10",
        "bytes=5--10",
        "bytes=1.5-2",
        "bytes=0-99 garbage",
        "bytes=\u0660-\u0669",  # Arabic-Indic digits are not DIGIT
        "bytes=" + "9" * 20 + "-",
    ],
)
def test_anything_but_one_valid_byte_range_is_ignored(header: str | None) -> None:
    assert parse_range(header) is None


@pytest.mark.parametrize(
    ("byte_range", "header"),
    [
        (ByteRange(0, 99), "bytes=0-99"),
        (ByteRange(100, None), "bytes=100-"),
        (ByteRange(None, 500), "bytes=-500"),
    ],
)
def test_byte_range_writes_its_s3_range_header(byte_range: ByteRange, header: str) -> None:
    assert byte_range.header() == header


# --- HTTP dates -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DATE_TEXT, DATE),
        ("Wednesday, 21-Oct-15 07:28:00 GMT", DATE),
        ("Wed Oct 21 07:28:00 2015", DATE),
        ("Wed, 21 Oct 2015 09:28:00 +0200", DATE),
    ],
)
def test_http_date_forms_are_parsed(text: str, expected: datetime) -> None:
    assert parse_http_date(text) == expected


@pytest.mark.parametrize("text", [None, "", "yesterday", "Wed, 32 Oct 2015 07:28:00 GMT", "1445412480",
                                  DATE_TEXT + " " * 64])
def test_unparseable_http_date_is_none(text: str | None) -> None:
    assert parse_http_date(text) is None


@pytest.mark.parametrize("text", [
    "Fri, 31 Dec 9999 23:59:59 -0100",  # year 10000 once in UTC
    "Fri, 31 Dec 9999 23:59:59 -2359",
    "Fri, 31 Dec 9999 23:59:59 EST",
    "Fri, 31 Dec 99999 23:59:59 GMT",
    "Fri, 31 Dec 999999999999 23:59:59 GMT",  # overflows the parser's C long
    "Jan 99999999999999999999 99:99:99 1 PM",
    "Fri, 31 Dec 2000 23:59:59 +9999",
    "Fri, 31 Dec 2000 23:59:59 -9999",
    "Fri, 31 Dec 2000 23:59:59 +2400",
])
def test_a_date_no_utc_datetime_holds_is_none(text: str) -> None:
    assert parse_http_date(text) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("Fri, 31 Dec 9999 23:59:59 +0100", datetime(9999, 12, 31, 22, 59, 59, tzinfo=UTC)),
    ("Fri, 31 Dec 9999 23:59:59 GMT", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("Wed, 01 Jan 1000 00:00:00 +2359", datetime(999, 12, 31, 0, 1, tzinfo=UTC)),
    ("Thu, 01 Jan 1970 00:00:00 +2359", datetime(1969, 12, 31, 0, 1, tzinfo=UTC)),
])
def test_a_date_at_the_edge_of_the_range_is_kept_in_utc_and_formats_back(text: str,
                                                                         expected: datetime) -> None:
    parsed = parse_http_date(text)
    assert parsed == expected
    assert parsed is not None
    assert parsed.tzinfo is UTC
    assert parse_http_date(format_http_date(parsed)) == expected


def test_a_parsed_http_date_is_normalised_to_utc() -> None:
    parsed = parse_http_date("Wed, 21 Oct 2015 09:28:00 +0200")
    assert parsed is not None
    assert (parsed.tzinfo, parsed.hour) == (UTC, 7)


def test_parsed_http_date_is_timezone_aware() -> None:
    parsed = parse_http_date("Wed Oct 21 07:28:00 2015")
    assert parsed is not None
    assert parsed.tzinfo is not None


def test_http_date_is_formatted_in_gmt() -> None:
    moment = DATE.astimezone(timezone(timedelta(hours=2)))
    assert format_http_date(moment) == DATE_TEXT


# --- parse_preconditions ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, Preconditions()),
        ({"If-None-Match": '"abc"'}, Preconditions(if_none_match='"abc"')),
        ({"If-None-Match": ' W/"abc", "def" '}, Preconditions(if_none_match='W/"abc", "def"')),
        ({"If-Modified-Since": DATE_TEXT}, Preconditions(if_modified_since=DATE)),
        ({"If-Match": '"abc"'}, Preconditions(if_match='"abc"')),
        ({"If-Unmodified-Since": DATE_TEXT}, Preconditions(if_unmodified_since=DATE)),
        ({"If-Range": '"abc"'}, Preconditions(if_range_etag='"abc"')),
        ({"If-Range": DATE_TEXT}, Preconditions(if_range_date=DATE)),
    ],
)
def test_each_validator_is_read_from_its_header(headers: dict[str, str], expected: Preconditions) -> None:
    assert parse_preconditions(headers) == expected


def test_if_modified_since_is_ignored_when_if_none_match_is_present() -> None:
    pre = parse_preconditions({"If-None-Match": '"abc"', "If-Modified-Since": DATE_TEXT})
    assert (pre.if_none_match, pre.if_modified_since) == ('"abc"', None)


@pytest.mark.parametrize("header", ["If-Modified-Since", "If-Unmodified-Since"])
def test_unparseable_date_validator_is_ignored(header: str) -> None:
    assert parse_preconditions({header: "not a date"}) == Preconditions()


def test_if_range_with_an_etag_sets_only_the_etag() -> None:
    pre = parse_preconditions({"If-Range": '"abc"'})
    assert (pre.if_range_etag, pre.if_range_date) == ('"abc"', None)


def test_if_range_with_a_date_sets_only_the_date() -> None:
    pre = parse_preconditions({"If-Range": DATE_TEXT})
    assert (pre.if_range_etag, pre.if_range_date) == (None, DATE)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        '"abc\x00"',
        '"abc\r\nX-Injected: 1"',
        '"' + "a" * 1100 + '"',
    ],
)
def test_empty_oversized_or_control_character_validator_is_ignored(value: str) -> None:
    assert parse_preconditions({"If-None-Match": value, "If-Match": value}) == Preconditions()


@pytest.mark.parametrize("value", ['W/"abc"', '"\udcff"', '"é"', '"a b"', '"a,b"', '"abc', "abc"])
def test_an_if_range_that_is_not_one_strong_ascii_etag_or_a_date_never_matches(value: str) -> None:
    assert parse_preconditions({"If-Range": value}) == Preconditions(if_range_never_matches=True)


@pytest.mark.parametrize(("value", "local"), [
    ('"abc"', False),
    ('"d41d8cd98f00b204e9800998ecf8427e-2"', False),
    ('"!#$%&()*+-./:;<=>?@[]^_`{|}~"', False),
    ('""', False),
    ('"a", "b"', True),
    ('"a,b"', True),
    ('W/"abc"', True),
    ("*", True),
    ('"a b"', True),
    ('"\udcff"', True),  # a latin-1 byte that is not UTF-8, as aiohttp hands it on
    ('"é"', True),
])
def test_only_one_strong_ascii_etag_is_left_for_s3_to_compare(value: str, local: bool) -> None:
    for header in ("If-None-Match", "If-Match"):
        assert needs_local_evaluation(parse_preconditions({header: value})) is local


def test_no_validators_means_empty_preconditions() -> None:
    assert parse_preconditions({"Accept": "image/*"}).is_empty


def test_any_validator_makes_preconditions_non_empty() -> None:
    assert not parse_preconditions({"If-Match": '"abc"'}).is_empty


# --- etag_matches -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("if_none_match", "etag", "matches"),
    [
        ('"abc"', '"abc"', True),
        ('"abc"', '"abd"', False),
        ('"abc"', '"abcd"', False),
        ('"abc"', '"ABC"', False),
        ('W/"abc"', '"abc"', True),
        ('"abc"', 'W/"abc"', True),
        ('W/"abc"', 'W/"abc"', True),
        ('"a", "b", "c"', '"b"', True),
        ('"a","b","c"', '"c"', True),
        ('"a", W/"b"', '"b"', True),
        ('  "a" ,  "b"  ', '"b"', True),
        ('"a", "b"', '"c"', False),
        ('"a", "b",', '"b"', True),
        ("*", '"anything"', True),
        (" * ", 'W/"anything"', True),
        ('"*"', '"anything"', False),
        ("abc", '"abc"', False),
        ('"a" "b"', '"b"', False),
        ('"a", garbage, "b"', '"b"', False),
        ("", '"abc"', False),
        ('""', '""', True),
        ('"d41d8cd98f00b204e9800998ecf8427e-2"', '"d41d8cd98f00b204e9800998ecf8427e-2"', True),
    ],
)
def test_if_none_match_uses_weak_comparison(if_none_match: str, etag: str, matches: bool) -> None:
    assert etag_matches(if_none_match, etag) is matches
