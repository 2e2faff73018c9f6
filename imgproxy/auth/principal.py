"""Who is asking: one decision that turns a request's credentials into a ``Principal``.

Pure. A ``sig`` parameter means a signed URL; otherwise an ``Authorization`` header means a
bearer token; otherwise the request has no credentials (401). Nothing here touches storage, so
the answer never depends on whether the object exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from imgproxy.auth.revocations import RevocationList
from imgproxy.auth.signing import require_no_reserved, verify_url
from imgproxy.auth.tokens import Token, check_scope, find_token, load_tokens, parse_bearer
from imgproxy.config.model import Config, KeyLimits, Revocation
from imgproxy.errors import RevocationsUnavailable, Unauthorized


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """What the server checks credentials against (built from config, again at each reload)."""

    keys: Mapping[str, bytes]
    tokens: Sequence[Token]
    max_ttl: float
    clock_skew: float
    limits: Mapping[str, KeyLimits] = field(default_factory=dict)
    # None: the revocation list is configured to be polled and has never been loaded: signed
    # URLs cannot be checked, and get 503 (never fail open).
    revocations: RevocationList | None = field(default_factory=RevocationList)

    def __repr__(self) -> str:
        return f"AuthPolicy(keys={sorted(self.keys)}, tokens={[t.name for t in self.tokens]})"

    @classmethod
    def from_config(cls, config: Config, polled: tuple[Revocation, ...] | None = ()) -> AuthPolicy:
        """``polled``: the entries of the polled revocation object (``auth.revocations_url``),
        or None while it has never been loaded (signed URLs then get 503)."""
        revocations = None if polled is None else RevocationList.build((*config.auth.revocations, *polled))
        return cls(
            keys={kid: secret.reveal().encode("utf-8") for kid, secret in config.auth.keys.items()},
            tokens=load_tokens(config.auth.tokens),
            max_ttl=config.auth.max_ttl,
            clock_skew=config.auth.clock_skew,
            limits=dict(config.auth.key_limits),
            revocations=revocations,
        )

    def key_limits(self, kid: str) -> KeyLimits:
        return self.limits.get(kid) or KeyLimits(max_ttl=self.max_ttl)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is authorized as. ``name`` (the key id or token name) and ``sub`` (a signed
    viewer id) are logged; ``sig`` (a signed URL's signature, what rate limits and revocations
    key on) never is."""

    kind: Literal["signature", "token"]
    name: str  # the key id or token name: safe to log
    sub: str | None = None  # the signed viewer id, when the URL carries one
    sig: str | None = field(default=None, repr=False)  # a signed URL's signature
    durable: bool = False  # a signed URL without exp (a durable key's)


def authorize(
    source: str,
    key: str,
    params: Mapping[str, str],
    authorization: str | None,
    policy: AuthPolicy,
    now: float,
) -> Principal:
    if "sig" in params:
        if not policy.keys:
            raise Unauthorized("signed URL but no signing keys configured",
                               public_message="This server accepts bearer tokens only.",
                               headers={"WWW-Authenticate": 'Bearer realm="imgproxy"'})
        url = verify_url(source, key, params, keys=policy.keys, now=now, max_ttl=policy.max_ttl,
                         clock_skew=policy.clock_skew, limits=policy.limits)
        if policy.revocations is None:
            raise RevocationsUnavailable("revocation list not loaded yet")
        issued = url.issued(policy.key_limits(url.kid).max_ttl, policy.clock_skew)
        policy.revocations.check(source, key, url, issued)
        return Principal("signature", url.kid, sub=url.sub, sig=url.sig, durable=url.exp is None)
    if authorization is not None and policy.tokens:
        require_no_reserved(params)
        token = find_token(parse_bearer(authorization), policy.tokens)
        check_scope(token, source, key)
        return Principal("token", token.name)
    raise Unauthorized("no credentials")
