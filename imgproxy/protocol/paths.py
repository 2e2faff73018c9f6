"""Image URL paths: ``/{route}/{source}/{key}`` -> (source, object key), validated and confined.

Pure. The key is decoded from the *raw* request path exactly once (strict percent-decoding,
strict UTF-8), then checked before anything is sent to S3: no ``.``/``..`` segments, no
backslashes, no control characters, at most 1024 bytes. ``object_key`` joins a source's prefix
and a checked key, so no request can name an object outside the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote_to_bytes

from imgproxy.errors import BadRequest, InvalidPath

IMG: Final = "img"  # the image itself
META: Final = "meta"  # what its header says (width, height, format, placeholder)
ROUTES: Final = frozenset({IMG, META})
ROUTE_PREFIX: Final = f"/{IMG}/"
MAX_KEY_BYTES: Final = 1024
_BAD_ESCAPE: Final = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ABSOLUTE_FORM: Final = re.compile(r"https?://[^/?#]*", re.IGNORECASE | re.ASCII)
# RFC 3986 unreserved characters stay literal; every other byte is %XX (uppercase).
_UNRESERVED: Final = "-._~"
# Unicode's control characters, category Cc: exactly C0, DEL and C1 (tests/test_paths.py checks it
# against unicodedata over every code point). One search, not a call per character.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Text percent_encode leaves as it is (ASCII letters and digits, and _UNRESERVED; '/' if kept).
_PLAIN: Final = re.compile(r"[A-Za-z0-9._~-]*")
_PLAIN_PATH: Final = re.compile(r"[A-Za-z0-9._~/-]*")


@dataclass(frozen=True, slots=True)
class ImagePath:
    """A checked request target: the source's name and the key relative to its prefix."""

    source: str
    key: str


def percent_decode(text: str, what: str, error: type[BadRequest] = InvalidPath) -> str:
    """Strictly decode ``%XX`` escapes to UTF-8 text; malformed escapes or bytes are ``error``."""
    if "%" not in text and text.isascii():  # nothing to decode (most keys, names and values)
        return text
    if _BAD_ESCAPE.search(text):
        raise error(f"malformed percent-escape in {what}",
                    public_message=f"The {what} has a malformed %-escape.")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what} is not UTF-8", public_message=f"The {what} is not valid UTF-8.") from None


def percent_encode(text: str, *, keep_slash: bool) -> str:
    """The one canonical encoding: every byte but RFC 3986 unreserved (and '/' if kept) as %XX."""
    if (_PLAIN_PATH if keep_slash else _PLAIN).fullmatch(text):  # nothing to encode: as quote() says
        return text
    return quote(text, safe=_UNRESERVED + ("/" if keep_slash else ""))


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe object key, else raise ``InvalidPath`` saying why."""
    if not key:
        raise InvalidPath("empty key", public_message="The image path names no object key.")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidPath("key too long",
                          public_message=f"Object keys are at most {MAX_KEY_BYTES} bytes of UTF-8.")
    if "\\" in key:
        raise InvalidPath("backslash in key", public_message="Object keys may not contain '\\'.")
    if _CONTROL.search(key):
        raise InvalidPath("control character in key",
                          public_message="Object keys may not contain control characters.")
    if any(segment in (".", "..") for segment in key.split("/")):
        raise InvalidPath("dot segment in key",
                          public_message="Object keys may not contain '.' or '..' segments.")
    return key


def origin_form(target: str) -> str:
    """The path and query of a request target. RFC 9112 3.2.2: a server must accept the
    absolute form (``http://host/img/...``, as proxies send it) too; its authority is dropped."""
    if target.startswith("/"):
        return target
    match = _ABSOLUTE_FORM.match(target)
    if match is None:
        raise InvalidPath("request target neither origin nor absolute form")
    rest = target[match.end():]
    return rest if rest.startswith("/") else "/" + rest


def parse_image_path(raw_path: str, route: str = IMG) -> ImagePath:
    """Split and check the raw (still percent-encoded) path of an ``/img/...`` (or ``/meta/...``)
    request."""
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    prefix = f"/{route}/"
    if not path.startswith(prefix):
        raise InvalidPath(f"path outside {prefix}")
    raw_source, sep, raw_key = path[len(prefix):].partition("/")
    if not sep or not raw_source:
        raise InvalidPath("no source segment",
                          public_message=f"The path must be /{route}/{{source}}/{{key}}.")
    source = percent_decode(raw_source, "source name")
    key = check_key(percent_decode(raw_key, "object key"))
    return ImagePath(source=source, key=key)


def image_path(source: str, key: str, route: str = IMG) -> str:
    """The canonical, percent-encoded URL path for ``source`` and ``key`` under ``route``."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {sorted(ROUTES)}")
    return f"/{route}/{percent_encode(source, keep_slash=False)}/{percent_encode(key, keep_slash=True)}"


def object_key(prefix: str, key: str) -> str:
    """The S3 key for ``key`` inside ``prefix``; the key is re-checked so nothing escapes."""
    full = prefix + check_key(key)
    if len(full.encode("utf-8")) > MAX_KEY_BYTES:
        raise InvalidPath("prefixed key too long",
                          public_message=f"Object keys are at most {MAX_KEY_BYTES} bytes of UTF-8.")
    return full
