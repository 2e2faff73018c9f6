"""Output format negotiation: ``fmt`` and the ``Accept`` header -> what to encode.

Pure. The answer is decided *before* decoding, from the request alone, so it can be part of the
variant's cache key and ETag: a concrete format, or ``None`` meaning "JPEG or PNG, by whether
the image has alpha" (which the source bytes, fixed by the source ETag, determine).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final

from imgproxy.transform.params import OutputFormat, TransformSpec

_MEDIA_RANGE: Final = re.compile(r"^\s*([^;\s]+)\s*(?:;(.*))?$")
_QVALUE: Final = re.compile(r"(?:^|;)\s*q\s*=\s*([0-9.]+)", re.IGNORECASE)  # RFC 9110 12.4.2
MAX_ACCEPT_CHARS: Final = 2048


def accepted_types(accept: str | None) -> frozenset[str]:
    """Media types the client lists explicitly with q > 0 (wildcards do not count)."""
    if not accept or len(accept) > MAX_ACCEPT_CHARS:
        return frozenset()
    found: set[str] = set()
    for item in accept.split(","):
        match = _MEDIA_RANGE.match(item)
        if match is None:
            continue
        quality = _QVALUE.search(match.group(2) or "")
        try:
            if quality is not None and float(quality.group(1)) <= 0:
                continue
        except ValueError:
            continue
        found.add(match.group(1).lower())
    return frozenset(found)


def choose_target(
    spec: TransformSpec, accept: str | None, formats: Collection[OutputFormat]
) -> OutputFormat | None:
    """The encoder to use; ``None``: decide between the source family / JPEG / PNG later."""
    if spec.fmt is not None:
        return spec.fmt
    if not spec.auto_format:
        return None
    accepted = accepted_types(accept)
    for candidate in (OutputFormat.AVIF, OutputFormat.WEBP):
        if candidate in formats and candidate.media_type in accepted:
            return candidate
    return None
