"""jsonbody.py's pure parts: the media-type rule and strict JSON (the wire is in test_sign_body.py)."""

from __future__ import annotations

from typing import Any

import pytest

from imgproxy.errors import BadRequest, Overloaded, UnsupportedMediaType
from imgproxy.protocol.jsonbody import BodySlots, check_media_type, parse_json

REFUSED = "The body is not JSON this server accepts: "


@pytest.mark.parametrize("header", [
    None, "", "  ", "application/json", "APPLICATION/JSON", " application/json ",
    "application/json; charset=utf-8", "application/json;charset=UTF-8", 'application/json; charset="utf-8"',
    "application/json; foo=bar", "application/json; charset=utf-8; foo=bar",
])
def test_json_in_utf8_or_no_content_type_is_accepted(header: str | None) -> None:
    check_media_type(header)


@pytest.mark.parametrize("header", [
    "text/plain", "text/json", "application/octet-stream", "application/x-www-form-urlencoded",
    "application/json-patch+json", "application/jsonx", "json", ";", "application/json; charset=foo",
    "application/json; charset=latin-1", "application/json; charset=utf8", "application/json; charset=",
    "application/json; charset=utf-16", "application/json; charset=" + "x" * 5000,
])
def test_another_media_type_or_charset_is_415(header: str) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_media_type(header)


@pytest.mark.parametrize(("body", "value"), [
    (b"[]", []),
    (b' {"items": [1, -2, 3.5, "x", true, null]} ', {"items": [1, -2, 3.5, "x", True, None]}),
    (b"12345678901234567890", 12345678901234567890),
    (b"-12345678901234567890", -12345678901234567890),
    (b"1e308", 1e308),
    (b'"Zo\xc3\xab"', "Zoë"),
    (b"[[[[]]]]", [[[[]]]]),
])
def test_strict_json_reads_ordinary_values(body: bytes, value: Any) -> None:
    assert parse_json(body) == value


@pytest.mark.parametrize(("body", "message"), [
    (b"", "The body is not valid JSON: Expecting value: line 1 column 1 (char 0)."),
    (b"[1,]", "The body is not valid JSON: Expecting value: line 1 column 4 (char 3)."),
    (b'"secret', "The body is not valid JSON: Unterminated string starting at: line 1 column 1 (char 0)."),
    (b"123456789012345678901", REFUSED + "an integer has more than 20 digits."),
    (b"[" + b"9" * 10_000 + b"]", REFUSED + "an integer has more than 20 digits."),
    (b"1e999", REFUSED + "a number is too large."),
    (b"-1e999", REFUSED + "a number is too large."),
    (b"NaN", REFUSED + "NaN is not a JSON number."),
    (b"[Infinity]", REFUSED + "Infinity is not a JSON number."),
    (b"[-Infinity]", REFUSED + "-Infinity is not a JSON number."),
    (b"[" * 100_000 + b"]" * 100_000, REFUSED + "it is nested too deeply."),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, REFUSED + "it is nested too deeply."),
    (b'["\xff"]', "The body is not UTF-8 (byte 2 is not)."),
    (b"\xfe\xff\x00[\x00]", "The body is not UTF-8 (byte 0 is not)."),
])
def test_anything_else_is_a_400_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        parse_json(body)
    assert raised.value.public_message == message


def test_body_slots_refuse_the_one_past_their_size_and_come_back() -> None:
    slots = BodySlots(2)
    with slots.take(), slots.take():
        with pytest.raises(Overloaded), slots.take():
            pass
        assert slots.in_use == 2
    assert slots.in_use == 0
    with slots.take():
        assert slots.in_use == 1
