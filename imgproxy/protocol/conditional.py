"""Conditional and range requests: parse the client's headers into what to ask S3 for.

Pure. RFC 9110 rules applied here: If-Modified-Since is ignored when If-None-Match is present
(13.2.2); an unparseable date is ignored (13.1.3); a Range that is not a single, well-formed
``bytes=`` range is ignored and the whole object is served (14.2: a server MAY ignore Range);
If-Range turns a range request into a full one when its validator does not match (13.1.5).
Whether a range is satisfiable is S3's answer, since only S3 knows the size. Only a single strong
entity tag of visible ASCII (what S3's ETags are) is ever passed on to S3; any other
If-None-Match/If-Match is evaluated here, and any other If-Range tag never matches, so no
client byte outside ASCII reaches a request to S3 (botocore cannot sign one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from enum import Enum
from typing import Final

_RANGE: Final = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$", re.IGNORECASE | re.ASCII)
_ETAG_LIST_ITEM: Final = re.compile(r'\s*(?:W/)?("[^"]*")\s*(?:,|$)')
# RFC 9110 8.8.3 etagc without obs-text (and without ',', so it is never a list of two).
_SINGLE_STRONG_ETAG: Final = re.compile(r'"[\x21\x23-\x2b\x2d-\x7e]*"')
MAX_VALIDATOR_CHARS: Final = 1024


@dataclass(frozen=True, slots=True)
class ByteRange:
    """One ``bytes=`` range: ``first-last``, ``first-`` or the suffix ``-length``."""

    first: int | None
    last: int | None

    def header(self) -> str:
        first = "" if self.first is None else str(self.first)
        last = "" if self.last is None else str(self.last)
        return f"bytes={first}-{last}"


@dataclass(frozen=True, slots=True)
class Preconditions:
    """The request's validators, normalised; each maps onto one S3 GetObject/HeadObject field."""

    if_none_match: str | None = None
    if_modified_since: datetime | None = None
    if_match: str | None = None
    if_unmodified_since: datetime | None = None
    if_range_etag: str | None = None
    if_range_date: datetime | None = None
    if_range_never_matches: bool = False  # weak ETag or bad date: serve the whole object

    @property
    def is_empty(self) -> bool:
        return self == Preconditions()


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP date as an aware datetime in UTC, or ``None`` when it cannot be used (13.1.3).

    Normalised to UTC here, once, so that nothing downstream converts it again: a date that
    parses but whose UTC instant no ``datetime`` holds (``Fri, 31 Dec 9999 23:59:59 -0100`` is
    year 10000 in UTC) or whose year overflows the parser is unusable, like any other bad date.
    A UTC ``datetime`` always formats back (``format_http_date``), to the client or to S3.
    """
    if not value or len(value) > 64:
        return None
    try:
        parsed = parsedate_to_datetime(value)
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def format_http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_range(value: str | None) -> ByteRange | None:
    """A single satisfiable-looking byte range, or ``None`` to serve the whole object."""
    if not value or "," in value:
        return None
    match = _RANGE.match(value)
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        length = int(last_text)
        return ByteRange(None, length) if length > 0 else None
    first = int(first_text)
    last = int(last_text) if last_text else None
    if last is not None and last < first:
        return None
    return ByteRange(first, last)


def _validator(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_VALIDATOR_CHARS or any(ord(c) < 0x20 for c in value):
        return None
    return value


def parse_preconditions(headers: Mapping[str, str]) -> Preconditions:
    """Validators from request headers (names as in ``aiohttp.hdrs``, case-insensitive map)."""
    if_none_match = _validator(headers.get("If-None-Match"))
    if_range = _validator(headers.get("If-Range"))
    if_range_etag = if_range if if_range and _SINGLE_STRONG_ETAG.fullmatch(if_range) else None
    if_range_date = None if not if_range or if_range.startswith('"') else parse_http_date(if_range)
    return Preconditions(
        if_none_match=if_none_match,
        if_modified_since=None if if_none_match else parse_http_date(headers.get("If-Modified-Since")),
        if_match=_validator(headers.get("If-Match")),
        if_unmodified_since=parse_http_date(headers.get("If-Unmodified-Since")),
        if_range_etag=if_range_etag,
        if_range_date=if_range_date,
        # RFC 9110 13.1.5: a weak or malformed entity tag, or an unusable date, never matches.
        if_range_never_matches=bool(if_range) and if_range_etag is None and if_range_date is None,
    )


def etag_matches(header: str, etag: str, *, strong: bool = False) -> bool:
    """RFC 9110 13.1.2: does an If-None-Match (weak) or If-Match (strong) list match ``etag``?"""
    if header.strip() == "*":
        return True
    if strong and etag.startswith("W/"):
        return False
    opaque = etag[2:] if etag.startswith("W/") else etag
    position = 0
    while position < len(header):
        match = _ETAG_LIST_ITEM.match(header, position)
        if match is None:
            return False
        is_weak = header[match.start():match.end()].lstrip().startswith("W/")
        if match.group(1) == opaque and not (strong and is_weak):
            return True
        position = match.end()
    return False


class Decision(Enum):
    """The outcome of evaluating validators against a known ETag (RFC 9110 13.2.2 order)."""

    PROCEED = "proceed"
    NOT_MODIFIED = "not_modified"
    PRECONDITION_FAILED = "precondition_failed"


def needs_local_evaluation(pre: Preconditions) -> bool:
    """S3 compares If-None-Match/If-Match as one exact string; lists, weak tags, '*' and tags
    that are not visible ASCII are evaluated here, against the ETag from a HEAD, instead."""
    return any(value is not None and not _SINGLE_STRONG_ETAG.fullmatch(value)
               for value in (pre.if_none_match, pre.if_match))


def is_not_modified(if_none_match: str | None, etag: str | None) -> bool:
    """RFC 9110 13.1.2: the client's ``If-None-Match`` already names ``etag`` (answer 304).
    The one place this check is made, for originals and variants alike."""
    return bool(if_none_match) and etag is not None and etag_matches(if_none_match or "", etag)


def evaluate(pre: Preconditions, etag: str | None) -> Decision:
    if pre.if_match is not None and (etag is None or not etag_matches(pre.if_match, etag, strong=True)):
        return Decision.PRECONDITION_FAILED
    if is_not_modified(pre.if_none_match, etag):
        return Decision.NOT_MODIFIED
    return Decision.PROCEED


def without_etag_validators(pre: Preconditions) -> Preconditions:
    """What is left for S3 once the ETag validators were evaluated here."""
    return replace(pre, if_none_match=None, if_match=None)
