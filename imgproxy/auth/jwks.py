"""An identity provider's signing keys (its JWKS): parsing them, choosing one for a token, and
deciding when to fetch them again.

Pure: the bytes come from ``web/jwks.py``, the time is passed in. Only public RSA (2048 bits or
more) and EC keys meant for signatures are kept; a key is chosen by the token's ``kid`` and must
suit the token's algorithm (its type, its curve, its own ``alg`` if it names one), so no key is
ever used with an algorithm it was not made for.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from typing import Final

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

PublicKey = RSAKey | ECKey
MAX_JWKS_BYTES: Final = 1024 * 1024
MAX_KEYS: Final = 100
MIN_RSA_BITS: Final = 2048
# How long fetched keys count as fresh: the answer's Cache-Control max-age, within these bounds.
MIN_MAX_AGE: Final = 60.0
MAX_MAX_AGE: Final = 86400.0
DEFAULT_MAX_AGE: Final = 600.0
# Fetches of one provider's keys (an unknown kid, stale keys, a failed fetch) start at most this often.
MIN_FETCH_INTERVAL: Final = 30.0
_CURVES: Final = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_MAX_AGE: Final = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})\"?", re.IGNORECASE | re.ASCII)


class BadKeySet(ValueError):
    """A JWKS body that is not a JSON ``{"keys": [...]}`` holding at least one usable key."""


@dataclass(frozen=True, slots=True)
class JwkSet:
    """The usable keys of one JWKS, in its order."""

    keys: tuple[PublicKey, ...]

    def __repr__(self) -> str:
        return f"JwkSet(kids={[k.kid for k in self.keys]})"

    def has_kid(self, kid: str) -> bool:
        return any(key.kid == kid for key in self.keys)

    def find(self, kid: str | None, alg: str) -> PublicKey | None:
        """The key for a token's ``kid`` and ``alg``. Without a kid, only a JWKS with exactly one
        key that suits ``alg`` answers (with several, which one signed would be a guess)."""
        suitable = [key for key in self.keys if suits(key, alg)]
        if kid is None:
            return suitable[0] if len(suitable) == 1 else None
        return next((key for key in suitable if key.kid == kid), None)


def suits(key: PublicKey, alg: str) -> bool:
    """May ``key`` verify a signature made with ``alg``?"""
    if key.get("alg") not in (None, alg):
        return False
    if alg[:2] in ("RS", "PS"):
        return isinstance(key, RSAKey)
    return isinstance(key, ECKey) and key.curve_name == _CURVES.get(alg)


def _modulus_bits(n: object) -> int:
    if not isinstance(n, str):
        return 0
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except ValueError:
        return 0
    return int.from_bytes(raw, "big").bit_length()


def _import(entry: object) -> PublicKey | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or "d" in entry:
        return None
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        return None
    try:
        if entry.get("kty") == "RSA":
            if _modulus_bits(entry.get("n")) < MIN_RSA_BITS:  # checked before joserfc warns about it
                return None
            return RSAKey.import_key(entry)
        if entry.get("kty") == "EC":
            return ECKey.import_key(entry)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    return None


def parse_jwks(body: bytes) -> JwkSet:
    """The usable keys of a JWKS document; ``BadKeySet`` if there are none."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadKeySet("not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise BadKeySet('no "keys" list')
    keys = tuple(key for key in (_import(e) for e in entries[:MAX_KEYS]) if key is not None)
    if not keys:
        raise BadKeySet(f"none of {len(entries)} keys is a usable public RSA or EC signing key")
    return JwkSet(keys)


def fresh_for(cache_control: str | None) -> float:
    """Seconds fetched keys stay fresh: ``max-age`` within [1 min, 1 day], else 10 minutes."""
    match = _MAX_AGE.search(cache_control or "")
    if match is None:
        return DEFAULT_MAX_AGE
    return min(MAX_MAX_AGE, max(MIN_MAX_AGE, float(match.group(1))))


@dataclass(slots=True)
class Keyring:
    """What is known of one provider's keys: the last good set (kept through any outage), until
    when it is fresh, and when a fetch was last started."""

    keys: JwkSet | None = None
    fresh_until: float = 0.0
    last_attempt: float = -math.inf
    jwks_url: str | None = None  # from discovery, once it succeeded
    fetches: int = 0

    def should_fetch(self, kid: str | None, now: float) -> bool:
        """Fetch now? Never twice within ``MIN_FETCH_INTERVAL``; else when there are no keys, they
        are stale, or the token names a kid the set lacks (the IdP may have rotated)."""
        if now - self.last_attempt < MIN_FETCH_INTERVAL:
            return False
        if self.keys is None or now >= self.fresh_until:
            return True
        return kid is not None and not self.keys.has_kid(kid)

    def has(self, kid: str | None) -> bool:
        """Does the set held have ``kid`` (without a kid: any key at all)?"""
        return self.keys is not None and (kid is None or self.keys.has_kid(kid))

    def started(self, now: float) -> None:
        self.last_attempt = now
        self.fetches += 1

    def loaded(self, keys: JwkSet, fresh_for: float, now: float) -> None:
        self.keys, self.fresh_until = keys, now + fresh_for
