"""media.py: sniffing a type from the first bytes, and the headers that keep stored content inert."""

from __future__ import annotations

import pytest

from imgproxy.config import DEFAULT_INLINE_TYPES
from imgproxy.protocol.media import CONTENT_SECURITY_POLICY, needs_sniffing, safety_headers, sniff_type

SNIFFED = [
    ("jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    ("jpeg exif", b"\xff\xd8\xff\xe1\x00\x18Exif\x00\x00", "image/jpeg"),
    ("png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    ("gif87a", b"GIF87a\x01\x00\x01\x00", "image/gif"),
    ("gif89a", b"GIF89a\x01\x00\x01\x00", "image/gif"),
    ("webp", b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
    ("avif", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00", "image/avif"),
    ("avif sequence", b"\x00\x00\x00\x20ftypavis\x00\x00\x00\x00", "image/avif"),
    ("bmp", b"BM\x36\x00\x0c\x00\x00\x00\x00\x00", "image/bmp"),
    ("ico", b"\x00\x00\x01\x00\x01\x00\x10\x10", "image/x-icon"),
    ("tiff le", b"II*\x00\x08\x00\x00\x00", "image/tiff"),
    ("heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "image/heic"),
    ("pdf", b"%PDF-1.7\n", "application/pdf"),
    ("html doctype", b"<!DOCTYPE html><html><body>", "text/html"),
    ("html lowercase doctype", b"<!doctype html>", "text/html"),
    ("html tag", b"<html><script>alert(1)</script>", "text/html"),
    ("html after whitespace and bom", b"\xef\xbb\xbf \r\n\t<HTML>", "text/html"),
    ("bare script", b"<script>alert(1)</script>", "text/html"),
    ("svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "image/svg+xml"),
    ("svg with xml declaration", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
     "image/svg+xml"),
    ("svg uppercase", b"  <SVG>", "image/svg+xml"),
    ("riff that is not webp", b"RIFF\x24\x00\x00\x00WAVEfmt ", "application/octet-stream"),
    ("mp4 is not avif", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00", "application/octet-stream"),
    ("plain text", b"hello world", "application/octet-stream"),
    ("xml that is not svg", b'<?xml version="1.0"?><feed/>', "application/octet-stream"),
    ("truncated jpeg", b"\xff\xd8", "application/octet-stream"),
    ("empty", b"", "application/octet-stream"),
]


@pytest.mark.parametrize(("name", "head", "expected"), SNIFFED, ids=[row[0] for row in SNIFFED])
def test_first_bytes_give_the_media_type(name: str, head: bytes, expected: str) -> None:
    assert sniff_type(head) == expected


@pytest.mark.parametrize(
    ("content_type", "needed"),
    [
        (None, True),
        ("", True),
        ("application/octet-stream", True),
        ("binary/octet-stream", True),
        ("Application/Octet-Stream; charset=binary", True),
        ("image/jpeg", False),
        ("text/html", False),
        ("application/pdf", False),
    ],
)
def test_only_missing_or_generic_types_are_sniffed(content_type: str | None, needed: bool) -> None:
    assert needs_sniffing(content_type) is needed


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "text/html; charset=utf-8",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/xml",
        "application/xml",
        "application/pdf",
        "application/octet-stream",
        "application/javascript",
        "text/plain",
        "image/tiff",
        "image/heic",
        "",
        "image/jpeg-but-not-really",
    ],
)
def test_type_outside_the_allowlist_is_an_attachment(content_type: str) -> None:
    assert safety_headers(content_type, DEFAULT_INLINE_TYPES)["Content-Disposition"] == "attachment"


@pytest.mark.parametrize(
    "content_type",
    [*DEFAULT_INLINE_TYPES, "IMAGE/JPEG", "image/png; charset=binary", " image/webp "],
)
def test_allowlisted_type_is_never_an_attachment(content_type: str) -> None:
    assert "Content-Disposition" not in safety_headers(content_type, DEFAULT_INLINE_TYPES)


def test_a_narrower_allowlist_turns_other_images_into_attachments() -> None:
    assert safety_headers("image/gif", ("image/jpeg",))["Content-Disposition"] == "attachment"


@pytest.mark.parametrize("content_type", ["image/jpeg", "text/html", "image/svg+xml", ""])
def test_nosniff_is_always_sent(content_type: str) -> None:
    assert safety_headers(content_type, DEFAULT_INLINE_TYPES)["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("content_type", ["image/jpeg", "text/html", "image/svg+xml", ""])
def test_sandboxing_csp_is_always_sent(content_type: str) -> None:
    headers = safety_headers(content_type, DEFAULT_INLINE_TYPES)
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("directive", ["default-src 'none'", "sandbox"])
def test_csp_forbids_scripts_and_sandboxes_the_document(directive: str) -> None:
    assert directive in [part.strip() for part in CONTENT_SECURITY_POLICY.split(";")]
