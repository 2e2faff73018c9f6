"""CORS: which origins' pages may read the proxy's answers, and the headers that say so.

Pure. ``CorsPolicy`` is built from ``[server]`` (``cors_origins``, ``cors_credentials``,
``cors_max_age``, ``cross_origin_resource_policy``) and lives in the request's ``Settings``, so
it reloads. An ``Origin`` header matches only byte for byte an entry of the list as
``config.cors`` checked it (lowercase, no default port, no path); ``null`` (sandboxed frames,
``file:`` pages, requests redirected across origins) never matches, nor does a request with
two ``Origin`` headers. With CORS configured:

- every answer carries ``Vary: Origin`` (what it says depends on the header), errors and 304s
  included; an answer to an allowed origin carries ``Access-Control-Allow-Origin`` (that origin,
  or ``*`` for the ``*`` list), ``Access-Control-Expose-Headers`` (``EXPOSED``),
  ``Access-Control-Allow-Credentials: true`` only with ``cors_credentials``, and
  ``Timing-Allow-Origin`` (the same origin), so a page's script reads ``Server-Timing``;
- an answer to a request without ``Origin`` (an ``<img>``) carries ``Timing-Allow-Origin``
  naming every configured origin, so those pages read its timing too (no other CORS header:
  nothing else is readable from an ``<img>``);
- a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin is
  ``204`` naming the route's methods, the request headers that method may carry
  (``REQUEST_HEADERS``) and ``Access-Control-Max-Age``; from any other origin it is ``403
  origin_not_allowed`` with no CORS header, so the browser refuses the request it prepared.

``Cross-Origin-Resource-Policy`` (when configured) is on every answer, CORS or not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from imgproxy.config import ResourcePolicy, ServerConfig
from imgproxy.config.cors import ANY_ORIGIN
from imgproxy.errors import MethodNotAllowed, OriginNotAllowed

NULL_ORIGIN: Final = "null"
# Response headers a page's script may read besides the CORS-safelisted ones (Content-Type,
# Content-Length, Cache-Control, Expires, Last-Modified, Pragma, Content-Language).
EXPOSED: Final = ("ETag", "X-Cache", "X-Delivery", "X-Fallback", "Server-Timing", "X-Request-Id",
                  "Content-Range", "Retry-After")
_CONDITIONAL: Final = ("Authorization", "If-Match", "If-Modified-Since", "If-None-Match", "If-Range",
                       "If-Unmodified-Since", "Range")
# Per method: the request headers the routes read (all that a preflight may allow).
REQUEST_HEADERS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "GET": _CONDITIONAL,
    "HEAD": _CONDITIONAL,
    "POST": ("Authorization", "Content-Type"),
    "DELETE": ("Authorization",),
})


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origins: tuple[str, ...] = ()  # exact serialized origins, or ("*",)
    credentials: bool = False
    max_age: int = 600
    resource_policy: ResourcePolicy | None = None

    @classmethod
    def from_config(cls, server: ServerConfig) -> CorsPolicy:
        return cls(origins=server.cors_origins, credentials=server.cors_credentials,
                   max_age=int(server.cors_max_age),
                   resource_policy=server.cross_origin_resource_policy)

    @property
    def is_enabled(self) -> bool:
        return bool(self.origins)

    def allowed_origin(self, sent: Sequence[str]) -> str | None:
        """The request's one ``Origin`` value if it may read answers (``sent``: every ``Origin``
        header, as received)."""
        if len(sent) != 1 or sent[0] == NULL_ORIGIN:
            return None
        if self.origins == (ANY_ORIGIN,) or sent[0] in self.origins:
            return sent[0]
        return None

    def answer_headers(self, sent: Sequence[str]) -> dict[str, str]:
        """The CORS headers of any answer (``Vary`` is the caller's to merge with its own)."""
        headers: dict[str, str] = {}
        if self.resource_policy is not None:
            headers["Cross-Origin-Resource-Policy"] = self.resource_policy.value
        if not self.is_enabled:
            return headers
        headers["Vary"] = "Origin"
        origin = self.allowed_origin(sent)
        if origin is not None:
            headers.update(self._allow(origin))
            headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED)
            headers["Timing-Allow-Origin"] = headers["Access-Control-Allow-Origin"]
        elif not sent:
            headers["Timing-Allow-Origin"] = ", ".join(self.origins)
        return headers

    def preflight_headers(self, sent: Sequence[str], method: str,
                          route_methods: Collection[str]) -> dict[str, str]:
        """The ``204`` answer's headers for a preflight of ``method`` on a route that answers
        ``route_methods``; raises ``OriginNotAllowed`` or ``MethodNotAllowed``."""
        origin = self.allowed_origin(sent)
        if origin is None:
            shown = ", ".join(repr(value[:100]) for value in sent[:2]) or "no Origin"
            raise OriginNotAllowed(f"preflight from {shown}: not in server.cors_origins")
        allowed = sorted(m for m in route_methods if m in REQUEST_HEADERS)
        if method not in allowed:
            raise MethodNotAllowed(f"preflight for {method[:16]!r}", headers={"Allow": ", ".join(allowed)})
        return {
            **self._allow(origin),
            "Access-Control-Allow-Methods": ", ".join(allowed),
            "Access-Control-Allow-Headers": ", ".join(REQUEST_HEADERS[method]),
            "Access-Control-Max-Age": str(self.max_age),
            "Vary": "Origin, Access-Control-Request-Method",
        }

    def _allow(self, origin: str) -> dict[str, str]:
        if self.origins == (ANY_ORIGIN,):
            return {"Access-Control-Allow-Origin": ANY_ORIGIN}
        headers = {"Access-Control-Allow-Origin": origin}
        if self.credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers


def merge_vary(existing: str | None, names: str) -> str:
    """``existing`` ``Vary`` with each of ``names`` added once (case-insensitively)."""
    have = [part.strip() for part in (existing or "").split(",") if part.strip()]
    lowered = {part.lower() for part in have}
    have += [name.strip() for name in names.split(",") if name.strip().lower() not in lowered]
    return ", ".join(have)
