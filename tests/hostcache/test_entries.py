"""hostcache.entries: an entry decodes only for its own key, whole and unaltered."""

from __future__ import annotations

import dataclasses
import json

import pytest

from imgproxy.cache import PIPELINE_VERSION, Variant, VariantKey
from imgproxy.hostcache import entries

KEY = VariantKey("photos", "team/ada.png", '"abc"', "w=100", "jpeg")
VARIANT = Variant(b"\xff\xd8 jpeg bytes \x00\x01" * 50, "image/jpeg", KEY.etag, 100, 75)


def test_an_entry_decodes_to_the_variant_it_was_made_of() -> None:
    assert entries.decode(entries.encode(KEY, VARIANT), KEY) == VARIANT


def test_the_header_is_json_not_pickle() -> None:
    data = entries.encode(KEY, VARIANT)
    header, start = entries.read_header(data) or ({}, 0)
    assert json.loads(json.dumps(header)) == header
    assert header["key"] == [PIPELINE_VERSION, "photos", "team/ada.png", '"abc"', "w=100", "jpeg"]
    assert data[start:] == VARIANT.body


@pytest.mark.parametrize("other", [
    dataclasses.replace(KEY, key="team/bob.png"),
    dataclasses.replace(KEY, source_etag='"new"'),
    dataclasses.replace(KEY, canonical="w=200"),
    dataclasses.replace(KEY, target="webp"),
    dataclasses.replace(KEY, source="archive"),
])
def test_an_entry_is_a_miss_for_any_other_key(other: VariantKey) -> None:
    assert entries.decode(entries.encode(KEY, VARIANT), other) is None


def test_a_truncated_entry_is_a_miss() -> None:
    data = entries.encode(KEY, VARIANT)
    for cut in (0, 5, len(entries.MAGIC) + 2, len(data) // 2, len(data) - 1):
        assert entries.decode(data[:cut], KEY) is None


def test_a_flipped_body_byte_is_a_miss() -> None:
    data = bytearray(entries.encode(KEY, VARIANT))
    data[-10] ^= 0x01
    assert entries.decode(bytes(data), KEY) is None


def test_bytes_appended_are_a_miss() -> None:
    assert entries.decode(entries.encode(KEY, VARIANT) + b"x", KEY) is None


@pytest.mark.parametrize("data", [
    b"",
    b"\x80\x04\x95pickle",
    entries.MAGIC + entries.LENGTH.pack(10**9) + b"{}",
    entries.MAGIC + entries.LENGTH.pack(4) + b"nope",
    entries.MAGIC + entries.LENGTH.pack(2) + b"[]",
    entries.MAGIC + entries.LENGTH.pack(2) + b"\xff\xfe",
])
def test_foreign_or_malformed_bytes_are_a_miss(data: bytes) -> None:
    assert entries.decode(data, KEY) is None
    assert entries.expected_size(data) is None


def test_a_header_with_wrong_types_is_a_miss() -> None:
    data = entries.encode(KEY, VARIANT)
    header, start = entries.read_header(data) or ({}, 0)
    header["width"] = "100"
    text = json.dumps(header).encode()
    assert entries.decode(entries.MAGIC + entries.LENGTH.pack(len(text)) + text + data[start:], KEY) is None


def test_the_expected_size_is_read_from_the_first_bytes() -> None:
    data = entries.encode(KEY, VARIANT)
    assert entries.expected_size(data[:entries.PREFIX_BYTES + entries.MAX_HEADER_BYTES]) == len(data)
