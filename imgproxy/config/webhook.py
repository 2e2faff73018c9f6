"""``[auth.webhook]``: the application endpoint asked whether a user may read an object, how long
its answers are kept, and what a failed call means (deny or 503).

The URL and the header values are ``Secret``: the URL may carry credentials (``user:pass@`` or a
token in its query), so no error message, ``repr`` or log line here ever shows them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from imgproxy.config.forward import HEADER_NAME
from imgproxy.config.reader import Table
from imgproxy.config.values import ConfigError, Secret, check_ca_bundle

DEFAULT_TIMEOUT: Final = 0.2
MIN_TIMEOUT: Final = 0.01
MAX_TIMEOUT: Final = 10.0
DEFAULT_CACHE_TTL: Final = 60.0
MAX_CACHE_TTL: Final = 3600.0
DEFAULT_CACHE_ENTRIES: Final = 100_000
MAX_CACHE_ENTRIES: Final = 10_000_000
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# Set by the client itself: an operator's value would break the request or its framing.
RESERVED_HEADERS: Final = frozenset({"content-type", "content-length", "host", "transfer-encoding",
                                     "connection"})


class OnError(StrEnum):
    """What a failed call (timeout, refused, non-2xx, an answer that is not a boolean) means."""

    DENY = "deny"  # 403 webhook_denied, as a "false" would
    UNAVAILABLE = "unavailable"  # 503 webhook_unavailable with Retry-After


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """``[auth.webhook]``: asked for every JWT, cookie-grant and forward-auth request, and for
    every item ``POST /sign`` signs on their behalf (never for signed URLs or static tokens)."""

    url: Secret  # http(s)://...: a secret (it may hold credentials)
    headers: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))
    ca_bundle: str | None = None  # PEM file the https endpoint's certificate must chain to
    timeout: float = DEFAULT_TIMEOUT  # for one call, connecting and reading included
    cache_ttl: float = DEFAULT_CACHE_TTL  # how long a true/false is reused; 0: ask every time
    cache_entries: int = DEFAULT_CACHE_ENTRIES  # decisions held at most (oldest dropped first)
    on_error: OnError = OnError.DENY
    batch: bool = False  # the endpoint takes "keys": [...] and answers a list of booleans


def read_url(t: Table, environ: Mapping[str, str]) -> Secret:
    """``url`` (literal, ``env:`` or ``file:``): http or https with a host; never echoed back."""
    url = t.secret("url", environ, required=True)
    assert url is not None
    try:
        parts = urlsplit(url.reveal())
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host or parts.fragment \
            or _CONTROL.search(url.reveal()):
        raise ConfigError(f"{t.where('url')}: must be an http:// or https:// URL with a host "
                          "(not shown: it is a secret)")
    return url


def read_headers(t: Table, environ: Mapping[str, str]) -> Mapping[str, Secret]:
    headers: dict[str, Secret] = {}
    for name in t.data:
        if not HEADER_NAME.fullmatch(name) or name.lower() in RESERVED_HEADERS:
            raise ConfigError(f"{t.where(name)}: {name!r} is not a header name the webhook may set")
        value = t.secret(name, environ, required=True)
        assert value is not None
        if _CONTROL.search(value.reveal()):
            raise ConfigError(f"{t.where(name)}: the value holds a control character")
        headers[name] = value
    if len({name.lower() for name in headers}) != len(headers):
        raise ConfigError(f"{t.path}: a header is listed twice")
    t.reject_unknown()
    return MappingProxyType(headers)


def read_webhook(t: Table, environ: Mapping[str, str]) -> WebhookConfig:
    """``[auth.webhook]`` (present: even empty, it needs a url)."""
    url = read_url(t, environ)
    ca_bundle = t.optional_string("ca_bundle")
    if ca_bundle is not None:
        if urlsplit(url.reveal()).scheme != "https":
            raise ConfigError(f"{t.where('ca_bundle')}: only for an https:// url")
        check_ca_bundle(ca_bundle, t.where("ca_bundle"))
    headers = read_headers(t.table("headers"), environ)
    if "@" in urlsplit(url.reveal()).netloc and any(name.lower() == "authorization" for name in headers):
        raise ConfigError(f"{t.where('headers')}: Authorization and credentials in url exclude "
                          "each other (both would be the Authorization header)")
    config = WebhookConfig(
        url=url,
        headers=headers,
        ca_bundle=ca_bundle,
        timeout=t.duration("timeout", DEFAULT_TIMEOUT, MIN_TIMEOUT, MAX_TIMEOUT),
        cache_ttl=t.duration("cache_ttl", DEFAULT_CACHE_TTL, 0, MAX_CACHE_TTL),
        cache_entries=t.integer("cache_entries", DEFAULT_CACHE_ENTRIES, 1, MAX_CACHE_ENTRIES),
        on_error=t.choice("on_error", OnError.DENY, "choose deny (403) or unavailable (503)"),
        batch=t.boolean("batch", False),
    )
    t.reject_unknown()
    return config
