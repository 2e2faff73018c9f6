"""Reading revocation entries: ``[auth] revocations = [...]`` and the polled revocation object.

One parser for both (a TOML array of tables, or the JSON object's ``revocations`` list), so an
entry means the same wherever it is written. Each entry is exactly one of::

    {kid = "bi", before = "2026-12-01T00:00:00Z"}    # the key's URLs issued before the time
    {sub = "bob@example.com", before = 1764547200}   # a viewer's URLs issued before the time
    {scope = "photos:employees/bob*"}                # every signed URL for these paths
    {sig = "D03MHBwmafOnoZD_Dh37nPUR-vsbQfaZ0SFjDYjoFZI"}  # one exact URL

``before`` is an RFC 3339 time with a zone (``Z`` or ``+01:00``), a TOML date-time with one, or
unix seconds. An optional ``note`` (who, why, a ticket) is accepted and ignored.

The polled object (``auth.revocations_url``) is UTF-8 JSON, at most ``MAX_OBJECT_BYTES``::

    {"revocations": [{"kid": "bi", "before": "2026-12-01T00:00:00Z"}, {"sig": "..."}],
     "note": "optional, ignored"}
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Final

from imgproxy.config.model import Revocation, Scope
from imgproxy.config.values import NAME_PATTERN, ConfigError

MAX_REVOCATIONS: Final = 1_000_000
MAX_OBJECT_BYTES: Final = 64 * 1024 * 1024  # the polled object; a million entries fit
_SIG: Final = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)
_KINDS: Final = ("kid", "sub", "scope", "sig")


def _instant(value: object, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected an RFC 3339 time or unix seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an RFC 3339 time "
                              "(e.g. 2026-12-01T00:00:00Z)") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigError(f"{where}: give the time zone (e.g. 2026-12-01T00:00:00Z)")
        return value.timestamp()
    raise ConfigError(f"{where}: expected an RFC 3339 time or unix seconds")


def parse_revocation(entry: object, where: str) -> Revocation:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table such as {{kid = \"bi\", before = \"...\"}}")
    kinds = [kind for kind in _KINDS if kind in entry]
    unknown = sorted(set(entry) - {*_KINDS, "before", "note"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key")
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of kid, sub, scope, sig")
    kind = kinds[0]
    value = entry[kind]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}.{kind}: expected a non-empty string")
    if kind in ("kid", "sub"):
        if "before" not in entry:
            raise ConfigError(f"{where}: a {kind} revocation needs 'before' (the URLs issued "
                              "before this time are revoked)")
        if kind == "kid" and not NAME_PATTERN.fullmatch(value):
            raise ConfigError(f"{where}.kid: key ids use letters, digits, '_' and '-'")
        return Revocation(kind, value, before=_instant(entry["before"], f"{where}.before"))
    if "before" in entry:
        raise ConfigError(f"{where}.before: only for kid and sub revocations")
    if kind == "scope":
        return Revocation(kind, scope=Scope.parse(value, f"{where}.scope"))
    if not _SIG.fullmatch(value):
        raise ConfigError(f"{where}.sig: expected a URL's 43-character sig value")
    return Revocation(kind, value)


def parse_revocations(entries: object, where: str) -> tuple[Revocation, ...]:
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a list of tables")
    if len(entries) > MAX_REVOCATIONS:
        raise ConfigError(f"{where}: more than {MAX_REVOCATIONS} entries")
    return tuple(parse_revocation(entry, f"{where}[{index}]") for index, entry in enumerate(entries))


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def parse_revocation_object(body: bytes, where: str) -> tuple[Revocation, ...]:
    """The polled object's entries; a ConfigError names what is wrong (never an entry's value)."""
    if len(body) > MAX_OBJECT_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_OBJECT_BYTES} bytes")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        reason = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "bad value"
        raise ConfigError(f"{where}: not valid JSON ({reason})") from None
    if not isinstance(data, dict) or "revocations" not in data:
        raise ConfigError(f"{where}: expected an object {{\"revocations\": [...]}}")
    unknown = sorted(set(data) - {"revocations", "note"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key")
    return parse_revocations(data["revocations"], f"{where}.revocations")
