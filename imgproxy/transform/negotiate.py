"""Output format negotiation: ``fmt`` and the ``Accept`` header -> what to encode.

Pure. The answer is decided *before* decoding, from the request alone, so it can be part of the
variant's cache key and ETag: a concrete format, or ``None`` meaning "JPEG or PNG, by whether
the image has alpha" (which the source bytes, fixed by the source ETag, determine).

``fmt=auto`` weighs the candidates by the client's ``q`` values (RFC 9110 12.5.1):

- AVIF and WebP are candidates only where the client names them (``image/avif``,
  ``image/webp``): clients that cannot decode them send ``image/*`` and ``*/*`` too, so a
  wildcard never selects one.
- The JPEG/PNG fallback's weight is that of ``image/jpeg`` or ``image/png`` (the higher), each
  through the most specific range that matches it (``image/jpeg`` over ``image/*`` over
  ``*/*``); no matching range weighs 0.
- The highest weight above 0 wins; ties go in the server's order of candidates (config
  ``transform.auto_prefer``, default WebP then AVIF: at JPEG's quality a 300 px AVIF is about
  5 % smaller than the WebP and costs about 5x its encoder CPU, see README "fmt=auto and
  Accept"), then the fallback. When nothing is acceptable (every weight 0) the fallback is sent
  anyway: an image the client may not want beats a 406 in an ``<img>``.
- A range whose ``q`` is not a valid qvalue (RFC 9110 12.4.2: ``0`` to ``1`` with at most
  three decimals; so not ``nan``, ``inf``, ``2``, ``-1`` or ``abc``) is ignored whole, as if
  not listed: a malformed weight never promotes a format, nor becomes ``q=1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from imgproxy.transform.params import OutputFormat, TransformSpec

_MEDIA_RANGE: Final = re.compile(r"^\s*([^;\s]+)\s*(?:;(.*))?$")
_QPARAM: Final = re.compile(r"^\s*q\s*=\s*(.*?)\s*$", re.IGNORECASE | re.DOTALL)  # "q" any case
_QVALUE: Final = re.compile(r"^(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)$", re.ASCII)  # RFC 9110 12.4.2
MAX_ACCEPT_CHARS: Final = 2048
FALLBACK_TYPES: Final = ("image/jpeg", "image/png")


@dataclass(frozen=True, slots=True)
class MediaRange:
    """One element of ``Accept``: a media range (lower case) and its weight."""

    media_range: str  # "image/webp", "image/*" or "*/*"
    q: float

    def specificity(self, media_type: str) -> int:
        """How closely this range names ``media_type``: 2 exactly, 1 ``type/*``, 0 ``*/*``,
        -1 not at all."""
        if self.media_range == media_type:
            return 2
        kind, _, subtype = self.media_range.partition("/")
        if subtype == "*" and kind == media_type.partition("/")[0]:
            return 1
        return 0 if self.media_range == "*/*" else -1


def parse_accept(accept: str | None) -> tuple[MediaRange, ...]:
    """The header's media ranges with their weights (``q``, default 1). Elements that are not
    ``type/subtype``, or whose ``q`` is malformed, are left out; so is an oversized header."""
    if not accept or len(accept) > MAX_ACCEPT_CHARS:
        return ()
    found: list[MediaRange] = []
    for item in accept.split(","):
        match = _MEDIA_RANGE.match(item)
        if match is None or match.group(1).count("/") != 1:
            continue
        weight = _weight(match.group(2) or "")
        if weight is not None:
            found.append(MediaRange(match.group(1).lower(), weight))
    return tuple(found)


def _weight(parameters: str) -> float | None:
    """The first ``q`` parameter's value (1 if there is none); None if it is not a qvalue."""
    for parameter in parameters.split(";"):
        match = _QPARAM.match(parameter)
        if match is not None:
            value = match.group(1)
            return float(value) if _QVALUE.match(value) else None
    return 1.0


def quality(media_type: str, ranges: Sequence[MediaRange], *, wildcards: bool = True) -> float:
    """The weight the client gives ``media_type``: that of the most specific range matching it
    (the highest of equally specific ones); 0 when none does. ``wildcards=False``: only a
    range naming the type itself counts."""
    floor = 0 if wildcards else 2
    matching = [(s, r.q) for r in ranges if (s := r.specificity(media_type)) >= floor]
    if not matching:
        return 0.0
    closest = max(s for s, _ in matching)
    return max(q for s, q in matching if s == closest)


def accepted_types(accept: str | None) -> frozenset[str]:
    """Media types the client names explicitly with q > 0 (wildcards do not count)."""
    ranges = parse_accept(accept)
    return frozenset(r.media_range for r in ranges
                     if "*" not in r.media_range and quality(r.media_range, ranges, wildcards=False) > 0)


def choose_target(
    spec: TransformSpec, accept: str | None, candidates: Sequence[OutputFormat]
) -> OutputFormat | None:
    """The encoder to use; ``None``: decide between the source family / JPEG / PNG later.

    ``candidates``: what ``fmt=auto`` may send besides the fallback (WebP, AVIF: those the
    server can encode and its config lets auto choose), in the order equal weights go.
    """
    if spec.fmt is not None:
        return spec.fmt
    if not spec.auto_format:
        return None
    ranges = parse_accept(accept)
    if not ranges:
        return None
    best, weight = None, max(quality(media_type, ranges) for media_type in FALLBACK_TYPES)
    for candidate in reversed(candidates):  # the earlier one wins a tie, the fallback loses one
        q = quality(candidate.media_type, ranges, wildcards=False)
        if q > 0 and q >= weight:
            best, weight = candidate, q
    return best
