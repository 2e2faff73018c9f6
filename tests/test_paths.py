"""paths.py: raw request paths -> (source, key), key checks, prefix confinement, canonical paths."""

from __future__ import annotations

import random
import string
import sys
import unicodedata
from urllib.parse import quote, unquote_to_bytes

import pytest

from imgproxy.errors import InvalidPath
from imgproxy.protocol.paths import (
    MAX_KEY_BYTES,
    ImagePath,
    check_key,
    image_path,
    object_key,
    parse_image_path,
    percent_decode,
    percent_encode,
)

# Raw (still percent-encoded) request paths and the key S3 must be asked for.
DECODED_KEYS = [
    ("/img/photos/cat.jpg", "cat.jpg"),
    ("/img/photos/employees/ada.jpg", "employees/ada.jpg"),
    ("/img/photos/a%20b.jpg", "a b.jpg"),
    ("/img/photos/Zo%C3%AB.jpg", "Zoë.jpg"),
    ("/img/photos/Zo%c3%ab.jpg", "Zoë.jpg"),
    ("/img/photos/Zoë.jpg", "Zoë.jpg"),
    ("/img/photos/%E6%97%A5%E6%9C%AC.png", "日本.png"),
    ("/img/photos/a+b.jpg", "a+b.jpg"),
    ("/img/photos/a%2Bb.jpg", "a+b.jpg"),
    ("/img/photos/100%25.jpg", "100%.jpg"),
    ("/img/photos/%2541.jpg", "%41.jpg"),
    ("/img/photos/w=300.jpg", "w=300.jpg"),
    ("/img/photos/w%3D300.jpg", "w=300.jpg"),
    ("/img/photos/a%2Fb.jpg", "a/b.jpg"),
    ("/img/photos/a//b.jpg", "a//b.jpg"),
    ("/img/photos/dir/", "dir/"),
    ("/img/photos/.hidden", ".hidden"),
    ("/img/photos/a..b/c...jpg", "a..b/c...jpg"),
    ("/img/photos/cat.jpg?exp=1&sig=x", "cat.jpg"),
    ("/img/photos/cat.jpg#frag", "cat.jpg"),
]


@pytest.mark.parametrize(("raw_path", "key"), DECODED_KEYS)
def test_raw_path_decodes_to_the_object_key(raw_path: str, key: str) -> None:
    assert parse_image_path(raw_path).key == key


@pytest.mark.parametrize(
    ("raw_path", "source"),
    [
        ("/img/photos/cat.jpg", "photos"),
        ("/img/ph%6Ftos/cat.jpg", "photos"),
        ("/img/team-2_a/cat.jpg", "team-2_a"),
    ],
)
def test_source_segment_is_decoded(raw_path: str, source: str) -> None:
    assert parse_image_path(raw_path).source == source


@pytest.mark.parametrize(
    "raw_path",
    [
        "/img/photos/..",
        "/img/photos/../secret.jpg",
        "/img/photos/a/../../secret.jpg",
        "/img/photos/a/..",
        "/img/photos/.",
        "/img/photos/./a.jpg",
        "/img/photos/a/./b.jpg",
        "/img/photos/%2e%2e/secret.jpg",
        "/img/photos/%2E%2E/secret.jpg",
        "/img/photos/.%2e/secret.jpg",
        "/img/photos/%2e/a.jpg",
        "/img/photos/a%2F..%2Fb.jpg",
        "/img/photos/a%2F.%2Fb.jpg",
    ],
)
def test_dot_segment_is_rejected(raw_path: str) -> None:
    with pytest.raises(InvalidPath, match="dot segment"):
        parse_image_path(raw_path)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/img/photos/a\\b.jpg",
        "/img/photos/..\\secret.jpg",
        "/img/photos/a%5Cb.jpg",
        "/img/photos/a%5cb.jpg",
    ],
)
def test_backslash_is_rejected(raw_path: str) -> None:
    with pytest.raises(InvalidPath, match="backslash"):
        parse_image_path(raw_path)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/img/photos/a%00.jpg",
        "/img/photos/a%0A.jpg",
        "/img/photos/a%0d%0aX-Injected:%201",
        "/img/photos/a%09b.jpg",
        "/img/photos/a%1Fb.jpg",
        "/img/photos/a%7Fb.jpg",
        "/img/photos/a%C2%85b.jpg",  # U+0085, a C1 control
        "/img/photos/a\x00b.jpg",
    ],
)
def test_control_character_is_rejected(raw_path: str) -> None:
    with pytest.raises(InvalidPath, match="control character"):
        parse_image_path(raw_path)


def test_key_of_exactly_1024_utf8_bytes_is_accepted() -> None:
    key = "é" * (MAX_KEY_BYTES // 2)  # two bytes each
    assert parse_image_path(image_path("photos", key)).key == key


@pytest.mark.parametrize(
    "key",
    [
        "a" * (MAX_KEY_BYTES + 1),
        "é" * (MAX_KEY_BYTES // 2) + "a",
        "日" * 342,  # 342 characters, 1026 bytes
    ],
)
def test_key_over_1024_utf8_bytes_is_rejected(key: str) -> None:
    with pytest.raises(InvalidPath, match="too long"):
        parse_image_path(image_path("photos", key))


@pytest.mark.parametrize(
    "raw_path",
    [
        "/img/photos/%zz.jpg",
        "/img/photos/%4.jpg",
        "/img/photos/a%",
        "/img/photos/a%2",
        "/img/photos/%%41.jpg",
        "/img/ph%zztos/a.jpg",
    ],
)
def test_malformed_percent_escape_is_rejected(raw_path: str) -> None:
    with pytest.raises(InvalidPath, match="malformed percent-escape"):
        parse_image_path(raw_path)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/img/photos/%C3%28.jpg",
        "/img/photos/%FF.jpg",
        "/img/photos/%C3.jpg",
        "/img/photos/%ED%A0%80.jpg",  # an encoded UTF-16 surrogate
        "/img/%C3%28/a.jpg",
    ],
)
def test_invalid_utf8_is_rejected(raw_path: str) -> None:
    with pytest.raises(InvalidPath, match="not UTF-8"):
        parse_image_path(raw_path)


@pytest.mark.parametrize(
    ("raw_path", "reason"),
    [
        ("/img/", "no source segment"),
        ("/img/photos", "no source segment"),
        ("/img//cat.jpg", "no source segment"),
        ("/img/photos/", "empty key"),
        ("/img/photos/?exp=1", "empty key"),
        ("/image/photos/cat.jpg", "outside"),
        ("/photos/cat.jpg", "outside"),
        ("", "outside"),
    ],
)
def test_path_without_source_or_key_is_rejected(raw_path: str, reason: str) -> None:
    with pytest.raises(InvalidPath, match=reason):
        parse_image_path(raw_path)


UNUSUAL_KEYS = [
    "cat.jpg",
    "a b.jpg",
    "employees/Zoë Smith+1.jpg",
    "100%.jpg",
    "%41%zz%",
    "w=300&h=200.jpg",
    "q?x#y.jpg",
    "dir/sub dir/~tilde-._.jpg",
    "emoji 🐈.png",
    "a//b/",
    "é" * (MAX_KEY_BYTES // 2),
]


@pytest.mark.parametrize("key", UNUSUAL_KEYS)
def test_image_path_round_trips_through_parse_image_path(key: str) -> None:
    assert parse_image_path(image_path("photos", key)) == ImagePath("photos", key)


@pytest.mark.parametrize(
    ("source", "key", "expected"),
    [
        ("photos", "cat.jpg", "/img/photos/cat.jpg"),
        ("photos", "a b.jpg", "/img/photos/a%20b.jpg"),
        ("photos", "employees/Zoë Smith+1.jpg", "/img/photos/employees/Zo%C3%AB%20Smith%2B1.jpg"),
        ("photos", "100%.jpg", "/img/photos/100%25.jpg"),
        ("photos", "w=300.jpg", "/img/photos/w%3D300.jpg"),
        ("photos", "a~b-c_d.e", "/img/photos/a~b-c_d.e"),
        ("photos", "q?x#y&z", "/img/photos/q%3Fx%23y%26z"),
        ("photos", "a*b'c(d)!", "/img/photos/a%2Ab%27c%28d%29%21"),
        ("photos", "日", "/img/photos/%E6%97%A5"),
        ("my photos", "a/b", "/img/my%20photos/a/b"),
        ("a/b", "c", "/img/a%2Fb/c"),
    ],
)
def test_image_path_is_the_canonical_encoding(source: str, key: str, expected: str) -> None:
    assert image_path(source, key) == expected


@pytest.mark.parametrize(
    ("prefix", "key", "expected"),
    [
        ("", "cat.jpg", "cat.jpg"),
        ("users/", "cat.jpg", "users/cat.jpg"),
        ("users/", "a/b c.jpg", "users/a/b c.jpg"),
        ("tenants/42/", "x", "tenants/42/x"),
    ],
)
def test_object_key_places_the_key_inside_the_prefix(prefix: str, key: str, expected: str) -> None:
    assert object_key(prefix, key) == expected


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("../other-tenant/secret.jpg", "dot segment"),
        ("a/../../b", "dot segment"),
        ("./a", "dot segment"),
        ("..\\secret.jpg", "backslash"),
        ("a\x00b", "control character"),
        ("", "empty key"),
    ],
)
def test_object_key_rechecks_the_key_so_nothing_escapes_the_prefix(key: str, reason: str) -> None:
    with pytest.raises(InvalidPath, match=reason):
        object_key("users/", key)


def test_object_key_over_1024_bytes_with_its_prefix_is_rejected() -> None:
    key = "a" * (MAX_KEY_BYTES - 5)
    with pytest.raises(InvalidPath, match="prefixed key too long"):
        object_key("users/", key)


def test_object_key_of_exactly_1024_bytes_with_its_prefix_is_accepted() -> None:
    key = "a" * (MAX_KEY_BYTES - len("users/"))
    assert len(object_key("users/", key).encode()) == MAX_KEY_BYTES


def test_the_control_characters_refused_are_exactly_unicodes_category_cc() -> None:
    control = {chr(code) for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)) == "Cc"}
    refused = set()
    for char in control | {"\u200b", "\u2028", "\ufeff", "\u00a0", "é", "\U0001f600"}:
        try:
            check_key(f"team/a{char}b.jpg")
        except InvalidPath:
            refused.add(char)
    assert refused == control


@pytest.mark.parametrize("keep_slash", [True, False])
def test_percent_encode_is_quote_with_the_unreserved_set_for_every_kind_of_text(keep_slash: bool) -> None:
    # The fast path (text with nothing to encode) must agree with quote() everywhere.
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "-._~/ %+&=?#:@!$'()*,;[]\\\"<>^`{|}\x00\x7féü日😀"
    texts = ["", "a", "/", "a/b", "photos/bench-1.jpg", "~x_y.z-", "é", "a b"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    safe = "-._~" + ("/" if keep_slash else "")
    for text in texts:
        assert percent_encode(text, keep_slash=keep_slash) == quote(text, safe=safe), text


def test_percent_decode_of_text_without_escapes_is_the_text() -> None:
    for text in ["", "photos", "a b", "a+b", "w", "300", "Zoë", "日本"]:
        assert percent_decode(text, "key") == unquote_to_bytes(text).decode("utf-8")
