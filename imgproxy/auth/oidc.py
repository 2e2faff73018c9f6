"""JWT bearer tokens from an OIDC provider: recognising one, verifying it, and whom it names.

Pure (the time is passed in; the keys come from a lookup the caller keeps fresh). The signature is
checked by joserfc, with exactly one key from the provider's own JWKS, chosen by the token's
``kid`` and suiting its ``alg`` (which must be on the provider's allowlist): the token's ``jku``,
``x5u`` and ``jwk`` headers are never read, ``none`` and HMAC are never allowed. Then the claims:
``iss`` exactly the provider's issuer, ``aud`` naming its audience, ``exp`` required, ``nbf`` and
``iat`` honoured, all within its ``clock_skew``; ``sub`` required (it names the user in the log,
the rate limits and the URLs ``POST /sign`` signs for them).

Every failure is the same ``InvalidToken`` for the client (401 ``invalid_token``); only the log
and the failures metric (``InvalidJwt.reason``) say which check failed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from joserfc import jws, jwt

from imgproxy.auth.claims import claim_groups, claim_scopes
from imgproxy.auth.jwks import JwkSet
from imgproxy.auth.signing import check_sub
from imgproxy.config import Scope
from imgproxy.config.oidc import OidcConfig
from imgproxy.errors import InvalidJwt, KeysUnavailable

_JWT: Final = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", re.ASCII)
KeyLookup = Callable[[OidcConfig], JwkSet | None]


def is_jwt(value: str) -> bool:
    """Three base64url segments, the first a JSON object (``eyJ`` is ``{"``): a JWS compact JWT."""
    return _JWT.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Unverified:
    """What a token says about itself before any check: which provider, which key, which algorithm."""

    issuer: str | None
    kid: str | None
    alg: str | None


@dataclass(frozen=True, slots=True)
class JwtIdentity:
    provider: str  # the [auth.oidc.NAME]
    sub: str
    scopes: tuple[Scope, ...]
    issuer: str = ""  # the provider's (the token's iss)
    groups: tuple[str, ...] = ()  # the strings of its groups_claim


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def peek(value: str) -> Unverified | None:
    """The token's ``iss``, ``kid`` and ``alg`` unverified (to choose a provider and its key, and
    to decide whether to fetch keys); None if it is not a JWS compact JWT with JSON claims."""
    if not is_jwt(value):
        return None
    try:
        token = jws.extract_compact(value.encode("ascii"))
        claims = json.loads(token.payload)
    except Exception:  # any decoder failure on client data: not a JWT
        return None
    header = token.headers()
    if not isinstance(claims, dict):
        return None
    return Unverified(_text(claims.get("iss")), _text(header.get("kid")), _text(header.get("alg")))


def find_provider(providers: Mapping[str, OidcConfig], issuer: str | None) -> OidcConfig | None:
    return next((p for p in providers.values() if issuer is not None and p.issuer == issuer), None)


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJwt("claims", f"{name} is not a number")
    return float(value)


def check_claims(claims: Mapping[str, Any], provider: OidcConfig, now: float) -> str:
    """The registered claims against ``provider``; returns ``sub``."""
    skew = provider.clock_skew
    if claims.get("iss") != provider.issuer:
        raise InvalidJwt("issuer", "wrong issuer")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if provider.audience not in [a for a in audiences if isinstance(a, str)]:
        raise InvalidJwt("audience", "wrong audience")
    expires = _number(claims, "exp")
    if expires is None:
        raise InvalidJwt("claims", "no exp")
    if now > expires + skew:
        raise InvalidJwt("expired", "expired")
    not_before = _number(claims, "nbf")
    if not_before is not None and now + skew < not_before:
        raise InvalidJwt("not_yet_valid", "not valid yet (nbf)")
    issued = _number(claims, "iat")
    if issued is not None and now + skew < issued:
        raise InvalidJwt("not_yet_valid", "issued in the future (iat)")
    sub = claims.get("sub")
    if not isinstance(sub, str):
        raise InvalidJwt("claims", "no sub")
    try:
        check_sub(sub)
    except ValueError:
        raise InvalidJwt("claims", "sub is empty, too long or has control characters") from None
    return sub


def verify_jwt(value: str, providers: Mapping[str, OidcConfig], keys: KeyLookup, now: float) -> JwtIdentity:
    """The identity a valid token names, or ``InvalidToken`` (``KeysUnavailable`` while its
    provider's keys have never been fetched)."""
    seen = peek(value)
    if seen is None:
        raise InvalidJwt("malformed", "malformed")
    provider = find_provider(providers, seen.issuer)
    if provider is None:
        raise InvalidJwt("issuer", "no auth.oidc provider has this issuer")
    if seen.alg not in provider.algorithms:
        raise InvalidJwt("algorithm", f"algorithm not allowed for auth.oidc.{provider.name}")
    keyset = keys(provider)
    if keyset is None:
        raise KeysUnavailable(f"auth.oidc.{provider.name}: no keys fetched yet")
    key = keyset.find(seen.kid, seen.alg)
    if key is None:
        raise InvalidJwt("unknown_kid", f"no key of auth.oidc.{provider.name} for this kid and alg")
    try:
        token = jwt.decode(value, key, algorithms=[seen.alg])
    except Exception:  # joserfc's errors on client data, whatever their class
        raise InvalidJwt("signature", "bad signature") from None
    sub = check_claims(token.claims, provider, now)
    return JwtIdentity(provider.name, sub, claim_scopes(token.claims, provider), provider.issuer,
                       claim_groups(token.claims.get(provider.groups_claim)))
