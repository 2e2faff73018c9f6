"""Which placeholder answers a failed image request, with which status and caching (pure).

A request that was authorized (an unauthorized one never gets here) and failed with a status its
source's ``[sources.NAME.fallback]`` lists (404 unless configured) is answered with, in order:
the request's initials avatar (``initials=``), else the source's fallback object or silhouette,
else nothing (the error stands). The answer keeps the error's status unless the table says
``status = 200``, has the table's short ``Cache-Control``, and an ETag no answer for the real
object can have (``fallback_etag``), so once the photo exists the browser's revalidation gets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgproxy.config.fallback import FallbackConfig
from imgproxy.transform.drawing import Drawing, initials_drawing, silhouette_drawing
from imgproxy.transform.params import TransformSpec


@dataclass(frozen=True, slots=True)
class Placeholder:
    """What to answer instead of an error: an object of the source (``key``) rendered as the
    request asked, or a ``drawing``; with ``status`` and ``cache_control``."""

    kind: str  # "object", "silhouette" or "initials": the metrics' and access log's name
    status: int
    cache_control: str
    key: str | None = None
    drawing: Drawing | None = None


def choose_placeholder(config: FallbackConfig, error_status: int, initials: str | None,
                       spec: TransformSpec | None, key: str) -> Placeholder | None:
    """The placeholder for an error of ``error_status`` on ``key``, or None: the error stands."""
    if error_status not in config.statuses:
        return None
    status, cache_control = config.status or error_status, config.cache_control
    if initials is not None:
        return Placeholder("initials", status, cache_control, drawing=initials_drawing(initials, spec, key))
    if config.key is not None:
        return Placeholder("object", status, cache_control, key=config.key)
    if config.builtin == "silhouette":
        return Placeholder("silhouette", status, cache_control, drawing=silhouette_drawing(spec))
    return None


def fallback_etag(etag: str | None) -> str | None:
    """A placeholder's ETag: the rendering's own, marked (``"fb-…"``) so that it never equals an
    ETag of the real object or its variants (S3's are hex digests, variants' ``"v…"``)."""
    if etag is None:
        return None
    weak = "W/" if etag.startswith("W/") else ""
    return f'{weak}"fb-{etag.removeprefix("W/").strip(chr(34))}"'
