"""The access log line: one per request, as logfmt or JSON, on the ``imgproxy.access`` logger.

What goes in is decided by the callers (``middleware.observe`` and the handlers' ``LOG_FIELDS``):
never a query string (signatures), a token, a credential or a presigned URL; object keys only
when the operator enables ``server.log_keys``. This module orders and writes the fields, and
escapes every character that is not printable (C0, DEL, C1, line and paragraph separators, bidi
and other format controls) in both formats, so no value a client chose can split or forge a
line or send escape sequences to a terminal.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping
from typing import Final

from imgproxy.config import Config, LogFormat

access_log = logging.getLogger("imgproxy.access")
NUMERIC: Final = frozenset({"status", "bytes", "duration_ms", "storage_ms", "transform_ms"})
_BARE: Final = re.compile(r"[A-Za-z0-9._:/*@+-]+")
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]")  # candidates; kept if str.isprintable says so


def key_hash(secret: bytes, source: str, key: str) -> str:
    """What the access log says of an object key without ``server.log_keys``: the first 24 hex
    digits of HMAC-SHA256(secret, source NUL key). An audit computes it for the key it looks
    for (``imgproxy key-hash``) and matches lines; the log alone names no object."""
    message = f"{source}\0{key}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[:24]


def key_hash_secret(config: Config) -> bytes:
    """``log.key_hash_secret``, or one derived from the signing key (or first token) so that
    replicas sharing it log the same hashes, and the log's hashes do not reveal that key."""
    if config.log.key_hash_secret is not None:
        return config.log.key_hash_secret.reveal().encode()
    if config.auth.keys:
        base = config.auth.keys[config.auth.sign_with].reveal()
    elif config.auth.tokens:
        base = config.auth.tokens[0].token.reveal()
    else:  # only OIDC providers: then only with server.log_keys (parse_config), and never used
        base = ""
    return hmac.new(base.encode(), b"imgproxy access log key_hash", hashlib.sha256).digest()


def _escape_char(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_unprintable(value: str) -> str:
    """``value`` with each unprintable character (but the space) as ``\\xNN``/``\\uNNNN``."""
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() or c == " " else _escape_char(c) for c in value)


def logfmt_value(value: str) -> str:
    if value and _BARE.fullmatch(value):
        return value
    quoted = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escape_unprintable(quoted) + '"'


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)  # JSON escapes astral characters as a pair
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def format_line(fields: Mapping[str, str], fmt: LogFormat) -> str:
    """``key=value ...`` (logfmt), or one JSON object whose numeric fields are numbers."""
    if fmt == LogFormat.JSON:
        text = json.dumps({k: _number(v) if k in NUMERIC else v for k, v in fields.items()},
                          ensure_ascii=False, separators=(",", ":"))
        # json escapes C0 itself; the rest of the unprintable characters only occur in strings.
        return text if text.isprintable() else _UNPRINTABLE.sub(_json_escape, text)
    return " ".join(f"{k}={logfmt_value(v)}" for k, v in fields.items())


def _number(value: str) -> int | float | str:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def write(fields: Mapping[str, str], fmt: LogFormat) -> None:
    access_log.info("%s", format_line(fields, fmt))
