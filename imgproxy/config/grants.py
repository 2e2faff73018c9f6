"""``[auth.grants]``: cookie grants (the cookie's key, lifetimes, ``Secure``) and what a plain
URL (no signature) may ask for when a cookie, a JWT or an auth proxy authorizes it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from imgproxy.config.model import KeyLimits
from imgproxy.config.reader import Table
from imgproxy.config.values import ConfigError

SECURE_COOKIE: Final = "__Host-imgproxy-grant"  # __Host-: Secure, Path=/, no Domain (browser-enforced)
PLAIN_COOKIE: Final = "imgproxy-grant"  # secure = false: plain-HTTP loopback development only
MAX_PLAIN_WIDTHS: Final = 32
MAX_WIDTH: Final = 10_000
DEFAULT_TTL: Final = 8 * 3600.0
DEFAULT_LINK_TTL: Final = 300.0


@dataclass(frozen=True, slots=True)
class GrantsConfig:
    """``key``: the ``auth.keys`` id that seals new cookies and that grant links are checked with
    (cookies sealed by any configured key verify, so the key can rotate)."""

    key: str
    ttl: float = DEFAULT_TTL  # a cookie's life (Max-Age and its sealed exp)
    link_ttl: float = DEFAULT_LINK_TTL  # the longest a GET /session?grant= link may live
    secure: bool = True

    @property
    def cookie_name(self) -> str:
        return SECURE_COOKIE if self.secure else PLAIN_COOKIE


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_grants(t: Table, sign_with: str, limits: Mapping[str, KeyLimits],
                server_host: str) -> GrantsConfig | None:
    """``[auth.grants]`` (present, even empty: grants on), or None."""
    key = t.string("key", sign_with or None)
    if key not in limits:
        raise ConfigError(f"{t.where('key')}: {key!r} is not a key in auth.keys (grants are sealed "
                          "with a signing key)")
    max_ttl = limits[key].max_ttl
    grants = GrantsConfig(
        key=key,
        ttl=t.duration("ttl", min(DEFAULT_TTL, max_ttl), 60, max_ttl),
        link_ttl=t.duration("link_ttl", DEFAULT_LINK_TTL, 1, 3600),
        secure=t.boolean("secure", True),
    )
    if not grants.secure and not is_loopback(server_host):
        raise ConfigError(f"{t.where('secure')}: false only for plain-HTTP development on a loopback "
                          f"server.host (not {server_host!r}): a grant cookie sent over plain HTTP "
                          "can be read on the network")
    t.reject_unknown()
    return grants


def read_plain_widths(t: Table) -> tuple[int, ...]:
    """``auth.plain_widths``: the w and h values a plain URL may carry (sorted, unique)."""
    value = t.raw("plain_widths")
    if value is None:
        return ()
    where = t.where("plain_widths")
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where}: expected a list of whole numbers (pixels)")
    if len(value) > MAX_PLAIN_WIDTHS or not all(1 <= v <= MAX_WIDTH for v in value):
        raise ConfigError(f"{where}: at most {MAX_PLAIN_WIDTHS} widths, each 1 to {MAX_WIDTH}")
    return tuple(sorted(set(value)))
