"""Media types: sniffing a type S3 did not give, and the headers that keep content inert.

Pure. A private bucket holds user uploads and the proxy's origin may be the dashboard's, so
anything outside the inline allowlist (HTML, SVG, PDF, unknown bytes) is sent as an attachment
under a sandboxing Content-Security-Policy, and every answer carries ``nosniff``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from types import MappingProxyType
from typing import Final

SNIFF_BYTES: Final = 512
GENERIC_TYPES: Final = frozenset({"", "application/octet-stream", "binary/octet-stream"})
# Applies to every proxied body: an image needs no script, frame, form or plugin.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
)
# Every answer carries it: browsers take the Content-Type as given, never guess a "better" one.
NOSNIFF: Final[Mapping[str, str]] = MappingProxyType({"X-Content-Type-Options": "nosniff"})

_MAGIC: Final[tuple[tuple[bytes, int, str], ...]] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"GIF87a", 0, "image/gif"),
    (b"GIF89a", 0, "image/gif"),
    (b"BM", 0, "image/bmp"),
    (b"\x00\x00\x01\x00", 0, "image/x-icon"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
    (b"%PDF-", 0, "application/pdf"),
)


def sniff_type(head: bytes) -> str:
    """The media type the first bytes show, or ``application/octet-stream``."""
    for magic, offset, mime in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "image/avif"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1"):
        return "image/heic"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<script")):
        return "text/html"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in text):
        return "image/svg+xml"
    return "application/octet-stream"


def needs_sniffing(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() in GENERIC_TYPES


def is_inline(content_type: str, inline_types: Collection[str]) -> bool:
    return content_type.split(";")[0].strip().lower() in inline_types


def safety_headers(content_type: str, inline_types: Collection[str]) -> dict[str, str]:
    """Headers that stop a stored file from running as a page on the proxy's origin."""
    headers = {**NOSNIFF, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    if not is_inline(content_type, inline_types):
        headers["Content-Disposition"] = "attachment"
    return headers
