"""Cookie grants: a user's scopes sealed into a cookie, and the signed links that hand one out.

Pure, and importable by a dashboard backend (as ``auth.signing`` is) to mint grant links:

    from imgproxy.auth.grants import grant_link
    url = grant_link(secret="...32+ bytes...", kid="k1", sub="ada", scopes=["photos:employees/*"],
                     base_url="https://img.example.com", return_to="https://dash.example.com/")

A sealed grant is ``g1.KID.PAYLOAD.MAC``: ``PAYLOAD`` is base64url of a compact JSON object
(``sub``, ``scopes``, ``groups``, ``iat``, ``exp``, ``via``, ``presets_only`` when set, and a
link's single-use ``nonce``),
``MAC`` is base64url of HMAC-SHA256 under the ``auth.keys`` secret ``KID`` over the purpose, the
kid and the payload. Cookies and links have different purposes, so neither verifies as the other,
and neither as a signed URL (whose canonical form starts with ``/img/`` or ``/meta/``). The MAC is checked (in
constant time) before the payload is decoded; nothing of an unverified value is trusted or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

from imgproxy.config.model import KeyLimits, Scope
from imgproxy.config.values import ConfigError
from imgproxy.errors import InvalidGrant

VERSION: Final = "g1"
COOKIE: Final = b"imgproxy grant cookie v1"
LINK: Final = b"imgproxy grant link v1"
MAX_SEALED: Final = 3800  # bytes: with its name and attributes a cookie stays under 4096
MAX_SCOPES: Final = 32
MAX_GROUPS: Final = 32
MAX_TEXT: Final = 255  # characters of a sub, a group or a scope
_KID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64: Final = re.compile(r"[A-Za-z0-9_-]+")
_REFUSED: Final = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Grant:
    """Who a grant is for and what it allows; ``via`` (how it was obtained: ``jwt:PROVIDER``,
    ``token:NAME``, ``link``) is for the log."""

    kid: str
    sub: str
    scopes: tuple[Scope, ...]
    iat: int
    exp: int
    groups: tuple[str, ...] = ()
    via: str = ""
    nonce: str | None = field(default=None, repr=False)
    presets_only: bool = False  # minted by a presets-only token or key: transforms by preset only

    def allows(self, source: str, key: str) -> bool:
        return any(scope.allows(source, key) for scope in self.scopes)

    def same_access(self, other: Grant) -> bool:
        """Whether ``other`` would authorize exactly what this one does, for the same user."""
        return (self.sub, set(self.scopes), set(self.groups), self.presets_only) == (
            other.sub, set(other.scopes), set(other.groups), other.presets_only)


def check_text(value: str, what: str) -> str:
    """A sub or group: 1-255 characters, no control characters (they are logged)."""
    if not 1 <= len(value) <= MAX_TEXT or _REFUSED.search(value):
        raise ValueError(f"{what} must be 1-{MAX_TEXT} characters without control characters")
    return value


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _mac(secret: bytes, purpose: bytes, kid: str, payload: str) -> bytes:
    return hmac.new(secret, b"\n".join((purpose, kid.encode(), payload.encode())), hashlib.sha256).digest()


def seal(grant: Grant, secret: bytes, purpose: bytes) -> str:
    """``grant`` as a ``g1.KID.PAYLOAD.MAC`` string; ValueError if it would not fit a cookie."""
    if not _KID.fullmatch(grant.kid):
        raise ValueError("kid must be 1-64 letters, digits, '_' or '-'")
    check_text(grant.sub, "sub")
    for group in grant.groups:
        check_text(group, "a group")
    if not grant.scopes or len(grant.scopes) > MAX_SCOPES or len(grant.groups) > MAX_GROUPS:
        raise ValueError(f"a grant holds 1-{MAX_SCOPES} scopes and at most {MAX_GROUPS} groups")
    body: dict[str, object] = {"sub": grant.sub, "scopes": [s.text for s in grant.scopes],
                               "iat": grant.iat, "exp": grant.exp}
    if grant.groups:
        body["groups"] = list(grant.groups)
    if grant.via:
        body["via"] = grant.via
    if grant.nonce is not None:
        body["nonce"] = grant.nonce
    if grant.presets_only:
        body["presets_only"] = True
    payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
    sealed = f"{VERSION}.{grant.kid}.{payload}.{_b64(_mac(secret, purpose, grant.kid, payload))}"
    if len(sealed) > MAX_SEALED:
        raise ValueError(f"the grant is {len(sealed)} bytes sealed, over the {MAX_SEALED} a cookie "
                         "may hold: ask for fewer or shorter scopes")
    return sealed


def unseal(value: str, keys: Mapping[str, bytes], purpose: bytes, now: float, clock_skew: float,
           max_life: float) -> Grant:
    """The grant ``value`` seals, if its MAC verifies under its kid's key and it is current;
    ``InvalidGrant`` (with the reason for the log) otherwise."""
    if len(value) > MAX_SEALED:
        raise InvalidGrant("too_long")
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != VERSION or not _KID.fullmatch(parts[1]) \
            or not all(_B64.fullmatch(p) for p in parts[2:]):
        raise InvalidGrant("malformed")
    _, kid, payload, mac = parts
    secret = keys.get(kid)
    if secret is None:
        raise InvalidGrant("unknown_kid")
    expected = _b64(_mac(secret, purpose, kid, payload))
    if not hmac.compare_digest(expected.encode(), mac.encode()):
        raise InvalidGrant("signature")
    grant = _decode(kid, payload)
    if grant.exp <= now:
        raise InvalidGrant("expired")
    if grant.iat > now + clock_skew or grant.exp - grant.iat > max_life:
        raise InvalidGrant("lifetime")
    return grant


def _decode(kid: str, payload: str) -> Grant:
    """A verified payload (ours, so a failure here is a bug or an old format: still a 401)."""
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        sub, scopes, iat, exp = body["sub"], body["scopes"], body["iat"], body["exp"]
        groups, via, nonce = body.get("groups", []), body.get("via", ""), body.get("nonce")
        presets_only = body.get("presets_only", False)
        if not (isinstance(sub, str) and isinstance(scopes, list) and isinstance(groups, list)
                and all(isinstance(v, str) for v in (*scopes, *groups, via))
                and all(isinstance(t, int) and not isinstance(t, bool) for t in (iat, exp))
                and (nonce is None or isinstance(nonce, str)) and isinstance(presets_only, bool)):
            raise InvalidGrant("malformed")
        return Grant(kid, sub, tuple(Scope.parse(s, "grant") for s in scopes), iat, exp,
                     tuple(groups), via, nonce, presets_only)
    except (ValueError, KeyError, TypeError, binascii.Error, ConfigError):
        raise InvalidGrant("malformed") from None


def parse_scopes(texts: Iterable[str]) -> tuple[Scope, ...]:
    """Scope strings as a request or a dashboard gives them; ValueError naming the bad one."""
    scopes = []
    for text in texts:
        if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
            raise ValueError(f"scopes are strings of 1-{MAX_TEXT} characters")
        try:
            scopes.append(Scope.parse(text, "scope"))
        except ConfigError:
            raise ValueError(f"{text!r} is not a scope (e.g. 'photos:employees/*')") from None
    return tuple(scopes)


def covered(scope: Scope, by: Iterable[Scope]) -> bool:
    """Whether everything ``scope`` allows is allowed by one of ``by`` (a grant asks for a subset
    of what its principal may read, never more)."""
    for wider in by:
        if wider.source not in ("*", scope.source):
            continue
        if wider.is_prefix and scope.key.startswith(wider.key):
            return True
        if not wider.is_prefix and not scope.is_prefix and scope.key == wider.key:
            return True
    return False


def within_key(scopes: Iterable[Scope], limits: KeyLimits) -> bool:
    """Whether a key with ``limits`` may seal a grant of ``scopes`` (a key without scopes: any)."""
    return not limits.scopes or all(covered(scope, limits.scopes) for scope in scopes)


def grant_link(secret: str | bytes, kid: str, sub: str, scopes: Iterable[str], *, base_url: str,
               ttl: float = 60, return_to: str | None = None, groups: Iterable[str] = (),
               now: float | None = None, presets_only: bool = False) -> str:
    """A single-use ``GET /session?grant=...`` link for ``sub``'s browser: opening it sets the
    grant cookie and (with ``return_to``, an origin in the proxy's ``server.cors_origins``)
    redirects there. ``ttl``: how long the link may wait to be opened (at most the proxy's
    ``auth.grants.link_ttl``). ``presets_only``: the cookie transforms by preset only (as does
    any grant whose key is ``presets_only``)."""
    issued = int(time.time() if now is None else now)
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    grant = Grant(kid, sub, parse_scopes(scopes), issued, issued + max(1, int(ttl)), tuple(groups),
                  "link", secrets.token_urlsafe(16), presets_only)
    query = {"grant": seal(grant, key, LINK)}
    if return_to is not None:
        query["return"] = return_to
    return f"{base_url.rstrip('/')}/session?{urlencode(query)}"
