"""Signed image URLs: the canonical form, signing, and verification.

Pure, and importable by a dashboard backend with no server, network or aiohttp:

    from imgproxy.auth.signing import UrlSigner
    signer = UrlSigner(secret="...32+ bytes...", kid="k1", base_url="https://img.example.com")
    url = signer.sign("photos", "employees/ada.jpg", ttl=3600)

Canonical form (the README's "Signing spec" is the normative text):

    canonical = PATH "?" QUERY
    PATH      = "/" ROUTE "/" enc(source) "/" enc_keep_slash(key)
    ROUTE     = "img" (the image) | "meta" (its metadata): a signature is for one route only
    QUERY     = every parameter except ``sig`` (``exp`` and ``kid`` included), sorted by name,
                each written enc(name) "=" enc(value), joined with "&"
    enc(s)    = UTF-8 bytes of s, each byte outside A-Z a-z 0-9 "-" "." "_" "~" written %XX
                (uppercase hex); enc_keep_slash also leaves "/" as it is
    sig       = base64url(HMAC-SHA256(secret, canonical)) without "=" padding

The signed URL is ``canonical + "&sig=" + sig``. Verification rebuilds the canonical form from
the *decoded* request, so any equivalent encoding of the same key verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from imgproxy.config.model import KeyLimits
from imgproxy.errors import (
    BadRequest,
    ExpiredSignature,
    ExpiryTooFar,
    InvalidParameter,
    InvalidSignature,
    OutOfScope,
    UnknownKeyId,
)
from imgproxy.protocol.paths import IMG, check_key, image_path, percent_decode, percent_encode

RESERVED_PARAMS: Final = frozenset({"exp", "iat", "kid", "sig", "sub"})
MAX_PARAM_BYTES: Final = 256
MAX_SUB_CHARS: Final = 128
_EXP: Final = re.compile(r"^[0-9]{1,12}$")
_SUB_REFUSED: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def canonical_query(params: Mapping[str, str]) -> str:
    """Every parameter but ``sig``, sorted by name, canonically encoded and joined by '&'."""
    return "&".join(
        f"{percent_encode(name, keep_slash=False)}={percent_encode(value, keep_slash=False)}"
        for name, value in sorted(params.items())
        if name != "sig"
    )


def canonical_form(source: str, key: str, params: Mapping[str, str], route: str = IMG) -> str:
    return f"{image_path(source, key, route)}?{canonical_query(params)}"


def compute_signature(secret: bytes, canonical: str) -> str:
    digest = hmac.new(secret, canonical.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def check_sub(sub: str) -> str:
    """A viewer id (``sub``): 1-128 characters, no control characters (it is logged)."""
    if not 1 <= len(sub) <= MAX_SUB_CHARS or _SUB_REFUSED.search(sub):
        raise ValueError(f"sub must be 1-{MAX_SUB_CHARS} characters without control characters")
    return sub


def sign_url(
    source: str,
    key: str,
    *,
    secret: str | bytes,
    exp: int | None,
    kid: str | None = None,
    params: Mapping[str, str] | None = None,
    base_url: str = "",
    iat: int | None = None,
    sub: str | None = None,
    route: str = IMG,
) -> str:
    """A signed proxy URL (path and query, prefixed by ``base_url``) valid until ``exp``; without
    ``exp`` (a durable key's URL) it must carry ``iat``. ``route``: ``img`` (the image) or
    ``meta`` (its metadata, ``GET /meta/...``); the signature is valid for that route only."""
    extra = dict(params or {})
    clash = RESERVED_PARAMS & extra.keys()
    if clash:
        raise ValueError(f"parameter names {sorted(clash)} are reserved for signing")
    if exp is None and iat is None:
        raise ValueError("a signed URL carries exp, iat, or both")
    check_key(key)
    signed = dict(extra)
    if exp is not None:
        signed["exp"] = str(int(exp))
    if iat is not None:
        signed["iat"] = str(int(iat))
    if kid is not None:
        signed["kid"] = kid
    if sub is not None:
        signed["sub"] = check_sub(sub)
    canonical = canonical_form(source, key, signed, route)
    secret_bytes = secret.encode("utf-8") if isinstance(secret, str) else secret
    return f"{base_url.rstrip('/')}{canonical}&sig={compute_signature(secret_bytes, canonical)}"


@dataclass(frozen=True, slots=True)
class UrlSigner:
    """Signs proxy URLs for one key; what a dashboard holds. ``repr`` never shows the secret."""

    secret: bytes
    kid: str | None = None
    base_url: str = ""

    def __init__(self, secret: str | bytes, kid: str | None = None, base_url: str = "") -> None:
        object.__setattr__(self, "secret", secret.encode() if isinstance(secret, str) else secret)
        object.__setattr__(self, "kid", kid)
        object.__setattr__(self, "base_url", base_url)

    def __repr__(self) -> str:
        return f"UrlSigner(kid={self.kid!r}, base_url={self.base_url!r}, secret='**********')"

    def sign(
        self,
        source: str,
        key: str,
        *,
        ttl: float = 3600,
        params: Mapping[str, str] | None = None,
        now: float | None = None,
        window: float = 0,
        durable: bool = False,
        sub: str | None = None,
        route: str = IMG,
    ) -> str:
        """``window`` > 0: ``exp`` rounds up to a multiple of it (and ``iat`` is derived from
        ``exp``), so every signing in the same window yields the identical URL and the browser
        reuses its cached image. ``durable``: no ``exp`` at all, ``iat`` rounded down to the
        window (only a key with ``durable = true`` makes such URLs the server accepts)."""
        issued = time.time() if now is None else now
        exp, iat = stamps(issued, ttl, window, durable=durable)
        return sign_url(source, key, secret=self.secret, exp=exp, iat=iat, kid=self.kid,
                        params=params, base_url=self.base_url, sub=sub, route=route)

    def sign_many(
        self,
        items: Iterable[tuple[str, str, Mapping[str, str] | None]],
        *,
        ttl: float = 3600,
        now: float | None = None,
        window: float = 0,
        durable: bool = False,
        sub: str | None = None,
    ) -> list[str]:
        """Sign many (source, key, params) items with one expiry: no call per image."""
        issued = time.time() if now is None else now
        return [self.sign(s, k, ttl=ttl, params=p, now=issued, window=window, durable=durable, sub=sub)
                for s, k, p in items]


def stable_expiry(now: float, ttl: float, window: float = 0) -> int:
    """``now + ttl``, rounded up to a multiple of ``window`` when ``window`` > 0."""
    exp = int(now + ttl)
    if window > 0:
        step = math.ceil(window)
        exp = -(-exp // step) * step
    return exp


def issued_at(exp: int, ttl: float, window: float = 0) -> int:
    """The ``iat`` a URL expiring at ``exp`` carries: ``exp`` minus ``ttl`` rounded up to the
    window, minus one window. Never later than the signing time (``exp`` is at most ``now + ttl
    + window``), and a function of ``exp`` alone: it changes only when ``exp`` does."""
    if window <= 0:
        return exp - math.ceil(ttl)
    step = math.ceil(window)
    return exp - -(-math.ceil(ttl) // step) * step - step


def durable_issued_at(now: float, window: float = 0) -> int:
    """A durable URL's ``iat``: ``now`` rounded down to the window (byte-identical within it)."""
    step = math.ceil(window) if window > 0 else 1
    return int(now) // step * step


def stamps(now: float, ttl: float, window: float = 0, *, durable: bool = False) -> tuple[int | None, int]:
    """(``exp``, ``iat``) for a URL signed at ``now``: the one rule every signer follows."""
    if durable:
        return None, durable_issued_at(now, window)
    exp = stable_expiry(now, ttl, window)
    return exp, issued_at(exp, ttl, window)


def parse_query(raw_query: str, max_params: int) -> dict[str, str]:
    """Decode a raw query string; duplicate, empty-named or oversized parameters are errors."""
    params: dict[str, str] = {}
    if not raw_query:
        return params
    parts = [part for part in raw_query.split("&") if part]
    if len(parts) > max_params:
        raise InvalidParameter("too many query parameters",
                               public_message=f"At most {max_params} query parameters are allowed.")
    for part in parts:
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        name = percent_decode(raw_name.replace("+", " "), "query parameter name", InvalidParameter)
        value = percent_decode(raw_value.replace("+", " "), f"query parameter {name!r}", InvalidParameter)
        if not name:
            raise InvalidParameter("empty parameter name",
                                   public_message="A query parameter has no name.")
        if len(name.encode()) + len(value.encode()) > MAX_PARAM_BYTES:
            raise InvalidParameter(f"parameter {name!r} too long",
                                   public_message=f"Query parameter {name!r} is too long.")
        if name in params:
            raise InvalidParameter(f"duplicate parameter {name!r}",
                                   public_message=f"Query parameter {name!r} is given twice.")
        params[name] = value
    return params


@dataclass(frozen=True, slots=True)
class SignedUrl:
    """What a verified signed URL says: its key, lifetime stamps and viewer."""

    kid: str
    exp: int | None  # None: a durable URL (its key has durable = true)
    iat: int | None
    sub: str | None
    sig: str = field(repr=False)

    def issued(self, max_ttl: float, clock_skew: float) -> float:
        """When the URL was signed, at the latest: its ``iat``, or for an older URL without one
        ``exp - max_ttl - clock_skew`` (the earliest it can have been signed at)."""
        if self.iat is not None:
            return self.iat
        assert self.exp is not None
        return self.exp - max_ttl - clock_skew


def _stamp(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not _EXP.fullmatch(text):
        raise InvalidParameter(f"malformed {name}",
                               public_message=f"Parameter {name!r} must be unix seconds (digits only).")
    return int(text)


def verify_url(
    source: str,
    key: str,
    params: Mapping[str, str],
    *,
    keys: Mapping[str, bytes],
    now: float,
    max_ttl: float,
    clock_skew: float,
    limits: Mapping[str, KeyLimits] | None = None,
    route: str = IMG,
) -> SignedUrl:
    """Check a signed URL: its stamps' form, its key, the key's scopes (before the signature:
    a path outside them is ``out_of_scope`` whatever the signature), ``sig`` over the canonical
    form of ``route`` (an ``img`` signature never opens ``meta`` nor the reverse), then
    ``exp``/``iat`` against ``now``."""
    sig = params.get("sig", "")
    exp, iat = _stamp(params, "exp"), _stamp(params, "iat")
    if exp is None and iat is None:
        raise InvalidParameter("missing exp",
                               public_message="Signed URLs need an 'exp' parameter (unix seconds).")
    sub = params.get("sub")
    if sub is not None:
        try:
            check_sub(sub)
        except ValueError:
            message = f"Parameter 'sub' must be 1-{MAX_SUB_CHARS} characters without control characters."
            raise InvalidParameter("malformed sub", public_message=message) from None
    kid = params.get("kid")
    if kid is None:
        if len(keys) != 1:
            raise UnknownKeyId("kid missing with several keys",
                               public_message="Parameter 'kid' is required: several keys are active.")
        kid = next(iter(keys))
    secret = keys.get(kid)
    if secret is None:
        raise UnknownKeyId("unknown kid")
    limit = (limits or {}).get(kid) or KeyLimits(max_ttl=max_ttl)
    if exp is None and not limit.durable:
        raise InvalidParameter(f"no exp, key {kid!r} is not durable",
                               public_message="Signed URLs need an 'exp' parameter (unix seconds).")
    if not limit.allows(source, key):
        raise OutOfScope(f"key {kid!r} has no scope for this path",
                         public_message="The URL's signing key does not grant access to this path.")
    expected = compute_signature(secret, canonical_form(source, key, params, route))
    if not hmac.compare_digest(expected.encode("ascii"), sig.encode("utf-8", "replace")):
        raise InvalidSignature("signature mismatch")
    if iat is not None and iat > now + clock_skew:
        raise InvalidParameter("iat in the future",
                               public_message="Parameter 'iat' lies in the future.")
    # Without exp (a durable key's URL): valid while the key, its scopes and the revocations allow.
    if exp is not None and exp < now:
        raise ExpiredSignature("expired")
    if exp is not None and exp > now + min(max_ttl, limit.max_ttl) + clock_skew:
        raise ExpiryTooFar("exp beyond max_ttl")
    return SignedUrl(kid, exp, iat, sub, sig)


def verify_signature(
    source: str,
    key: str,
    params: Mapping[str, str],
    *,
    keys: Mapping[str, bytes],
    now: float,
    max_ttl: float,
    clock_skew: float,
) -> str:
    """``verify_url`` for keys without limits; the key id that matched."""
    return verify_url(source, key, params, keys=keys, now=now, max_ttl=max_ttl, clock_skew=clock_skew).kid


def require_no_reserved(params: Mapping[str, str]) -> None:
    """Bearer-token requests carry no signing parameters; mixing the two is a client bug."""
    clash = sorted(RESERVED_PARAMS & params.keys())
    if clash:
        raise BadRequest(f"signing params {clash} without sig",
                         public_message=f"Parameter {clash[0]!r} only belongs in a signed URL (with 'sig').")
