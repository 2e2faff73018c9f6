"""``server.cors_origins`` as RFC 6454 serialized origins, checked once at load.

A browser's ``Origin`` header is a serialized origin: lowercase scheme and host, no default
port, no path, no trailing slash (``https://dash.example.com``, ``http://127.0.0.1:5173``). The
proxy compares it byte for byte with the configured list (``protocol.cors``), so every entry
here must be written as a browser writes it, or it would never match: this module refuses the
near misses (a path, a trailing slash, ``:443`` on https, a user name, ``null``) instead of
letting them silently allow nothing. Upper-case letters in the scheme or host are lowered, as
the browser lowers them. ``*`` (any origin) is allowed only alone and only without
``server.cors_credentials``: a credentialed answer must name one origin (Fetch standard).
"""

from __future__ import annotations

import re
from typing import Final

from imgproxy.config.values import ConfigError

ANY_ORIGIN: Final = "*"
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_ORIGIN: Final = re.compile(
    r"(?P<scheme>https?)://(?P<host>[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[1-9][0-9]{0,4}))?", re.ASCII)


def check_origin(text: str, where: str) -> str:
    """``text`` as the browser serializes it, or a ConfigError naming what is wrong."""
    if text == "null":
        raise ConfigError(f"{where}: 'null' is not an origin to allow (sandboxed frames, file: "
                          "pages and redirected requests all send it); it never matches")
    if not text.isascii():
        raise ConfigError(f"{where}: {text!r}: write an international host name as the browser "
                          "sends it, in punycode (xn--...)")
    lowered = text.lower()
    match = _ORIGIN.fullmatch(lowered)
    if match is None:
        if re.fullmatch(r"https?://[^/?#]+[/?#].*", lowered, re.ASCII):
            raise ConfigError(f"{where}: {text!r}: an origin has no path, query or trailing slash "
                              "(e.g. 'https://dash.example.com')")
        raise ConfigError(f"{where}: {text!r} is not an origin such as 'https://dash.example.com' "
                          "or 'http://127.0.0.1:5173'")
    port = match["port"]
    if port is not None and int(port) > 65535:
        raise ConfigError(f"{where}: {text!r}: port out of range")
    if port is not None and int(port) == DEFAULT_PORTS[match["scheme"]]:
        raise ConfigError(f"{where}: {text!r}: browsers leave out the default port :{port}; "
                          "so must this entry")
    return lowered


def check_origins(origins: tuple[str, ...], credentials: bool, where: str) -> tuple[str, ...]:
    """The configured list, each entry checked; ``*`` only alone and without credentials."""
    if ANY_ORIGIN in origins:
        if len(origins) > 1:
            raise ConfigError(f"{where}: '*' allows every origin; list exact origins or '*' alone")
        if credentials:
            raise ConfigError(f"{where}: '*' with server.cors_credentials = true is refused; "
                              "list the exact origins allowed to send credentials")
        return origins
    checked = tuple(check_origin(origin, where) for origin in origins)
    if len(set(checked)) != len(checked):
        raise ConfigError(f"{where}: an origin is listed twice")
    return checked
