"""``[sources.NAME.fallback]``: what a source answers instead of an error for an image request.

An object of the source (``key``) or a placeholder the proxy draws (``builtin = "silhouette"``),
for the statuses listed (404 by default); 401 and 403 only with ``allow_auth_statuses``, since a
placeholder in place of a refusal hides an authorization bug. The same table's ``statuses``,
``status`` and ``cache_control`` also govern a request's initials avatar (``initials=``), which
needs no table at all: its defaults are this dataclass's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from imgproxy.config.reader import Table
from imgproxy.config.values import ConfigError

BUILTINS: Final = ("silhouette",)
AUTH_STATUSES: Final = frozenset({401, 403})
MAX_KEY_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class FallbackConfig:
    key: str | None = None  # an object key of the source (inside its prefix), rendered as asked
    builtin: str | None = None  # or a placeholder the proxy draws ("silhouette"): no S3 read
    statuses: tuple[int, ...] = (404,)  # the error statuses it replaces
    allow_auth_statuses: bool = False  # statuses may list 401/403 only with this
    status: int | None = None  # 200, or None: the error's own (a 404 stays a 404)
    cache_control: str = "private, max-age=60"  # short: the photo may appear any minute

    @property
    def has_object(self) -> bool:
        """Whether a fallback object or drawing is configured (else only initials use it)."""
        return self.key is not None or self.builtin is not None


def check_fallback_key(key: str, where: str) -> str:
    """A key as ``protocol.paths.check_key`` accepts it (checked again there at use)."""
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ConfigError(f"{where}: expected an object key of 1 to {MAX_KEY_BYTES} bytes")
    if key.startswith("/") or "\\" in key or any(s in (".", "..") for s in key.split("/")):
        raise ConfigError(f"{where}: must be a key inside the source's prefix, without '/' at the "
                          "start, '\\', '.' or '..'")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in key):
        raise ConfigError(f"{where}: must not contain control characters")
    return key


def read_fallback(t: Table) -> FallbackConfig:
    base = FallbackConfig()
    key, builtin = t.optional_string("key"), t.optional_string("builtin")
    if key is not None and builtin is not None:
        raise ConfigError(f"{t.path}: give key (an object) or builtin (a drawing), not both")
    if key is not None:
        check_fallback_key(key, t.where("key"))
    if builtin is not None and builtin not in BUILTINS:
        raise ConfigError(f"{t.where('builtin')}: must be {' or '.join(map(repr, BUILTINS))}")
    allow_auth = t.boolean("allow_auth_statuses", base.allow_auth_statuses)
    statuses = read_statuses(t, base.statuses, allow_auth)
    status = t.raw("status")
    if status is not None and (isinstance(status, bool) or status != 200):
        raise ConfigError(f"{t.where('status')}: must be 200 (or left out: the error's own status)")
    cache_control = t.string("cache_control", base.cache_control)
    if not re.fullmatch(r"[\x20-\x7e]+", cache_control):
        raise ConfigError(f"{t.where('cache_control')}: expected a Cache-Control header value")
    fallback = FallbackConfig(key=key, builtin=builtin, statuses=statuses, allow_auth_statuses=allow_auth,
                              status=status if isinstance(status, int) else None, cache_control=cache_control)
    t.reject_unknown()
    return fallback


def read_statuses(t: Table, default: tuple[int, ...], allow_auth: bool) -> tuple[int, ...]:
    raw = t.raw("statuses")
    if raw is None:
        return default
    where = t.where("statuses")
    if not isinstance(raw, list) or not raw or not all(type(s) is int for s in raw):
        raise ConfigError(f"{where}: expected a list of HTTP error statuses such as [404, 502, 504]")
    for status in raw:
        if not 400 <= status <= 599:
            raise ConfigError(f"{where}: {status} is not an error status (400-599)")
        if status in AUTH_STATUSES and not allow_auth:
            raise ConfigError(f"{where}: {status} would hide refused credentials behind a placeholder; "
                              "list it only with allow_auth_statuses = true")
    return tuple(sorted(set(raw)))
