"""Who is asking: one decision that turns a request's credentials into a ``Principal``.

Pure. A ``sig`` parameter means a signed URL; otherwise an ``Authorization`` header means a
bearer token: a configured static token (looked up in constant time, always), else a JWT of an
``[auth.oidc]`` provider; otherwise a grant cookie (``[auth.grants]``); otherwise the user an
``[auth.forward]`` proxy names in headers (only when the caller found the direct peer trusted);
otherwise the request has no credentials (401). A credential that fails never falls through to
the next kind. A plain URL authorized by a user's own credential (JWT, grant, forward) may ask
only for the renders ``auth.plain`` allows; a presets-only key, token or grant only for presets
(``auth.presets``). Nothing here touches storage, so the answer never
depends on whether the object exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from imgproxy.auth.forward import ForwardPolicy, identify_forward
from imgproxy.auth.grants import COOKIE, Grant, unseal
from imgproxy.auth.oidc import KeyLookup, is_jwt, verify_jwt
from imgproxy.auth.plain import PlainPolicy
from imgproxy.auth.presets import check_presets_only
from imgproxy.auth.revocations import RevocationList
from imgproxy.auth.signing import require_no_reserved, verify_url
from imgproxy.auth.tokens import Token, load_tokens, match_token, parse_bearer
from imgproxy.config.grants import GrantsConfig
from imgproxy.config.model import Config, KeyLimits, Revocation, Scope
from imgproxy.config.oidc import OidcConfig
from imgproxy.errors import InvalidToken, OutOfScope, RevocationsUnavailable, Unauthorized
from imgproxy.protocol.paths import IMG


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
    oidc: Mapping[str, OidcConfig] = field(default_factory=lambda: MappingProxyType({}))
    forward: ForwardPolicy | None = None
    grants: GrantsConfig | None = None
    plain: PlainPolicy = field(default_factory=PlainPolicy)

    def __repr__(self) -> str:
        return (f"AuthPolicy(keys={sorted(self.keys)}, tokens={[t.name for t in self.tokens]}, "
                f"oidc={sorted(self.oidc)})")

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
            oidc=config.auth.oidc,
            forward=None if config.auth.forward is None else ForwardPolicy.from_config(config.auth.forward),
            grants=config.auth.grants,
            plain=PlainPolicy.of(config.auth.plain_widths, config.auth.plain_any_transform),
        )

    def key_limits(self, kid: str) -> KeyLimits:
        return self.limits.get(kid) or KeyLimits(max_ttl=self.max_ttl)

    def open_grant(self, cookie: str, now: float) -> Grant:
        """The grant a cookie seals (any configured key may have sealed it: keys rotate), or
        ``InvalidGrant``; its life is bounded by its key's ``max_ttl``."""
        parts = cookie.split(".")
        kid = parts[1] if len(parts) == 4 else ""
        return unseal(cookie, self.keys, COOKIE, now, self.clock_skew, self.key_limits(kid).max_ttl)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is authorized as. ``name`` (the key id, token name, OIDC provider name or
    forwarded user) and ``sub`` (a signed viewer id, a JWT's subject, the forwarded user) are
    logged; ``sig`` (a signed URL's signature, what rate limits and revocations key on) never is."""

    kind: Literal["signature", "token", "jwt", "grant", "forward"]
    name: str  # the key id, token name, [auth.oidc.NAME], grant's sub or forwarded user: safe to log
    sub: str | None = None  # the signed viewer id, a JWT's or grant's sub, or the forwarded user
    sig: str | None = field(default=None, repr=False)  # a signed URL's signature
    durable: bool = False  # a signed URL without exp (a durable key's)
    # A bearer's: what it may read, and what POST /sign may sign for it (a JWT's: its claim scopes).
    scopes: tuple[Scope, ...] = field(default=(), compare=False, repr=False)
    sign_scopes: tuple[Scope, ...] = field(default=(), compare=False, repr=False)
    # What [auth.webhook] is told besides sub: a JWT's groups claim, the forwarded groups or a
    # grant's; the OIDC provider's issuer (None for the other kinds).
    groups: tuple[str, ...] = field(default=(), compare=False, repr=False)
    issuer: str | None = field(default=None, compare=False, repr=False)
    via: str = ""  # a grant's: how it was obtained (jwt:PROVIDER, token:NAME, link)
    presets_only: bool = False  # its key, token or grant transforms by preset only

    @property
    def is_user(self) -> bool:
        """A user's own credential (not a signed URL, not a service's token): its plain URLs are
        limited (``auth.plain``) and its answers are private."""
        return self.kind in ("jwt", "grant", "forward")

    def allows(self, source: str, key: str) -> bool:
        return any(scope.allows(source, key) for scope in self.scopes)


def no_keys(provider: OidcConfig) -> None:
    return None


def identify_bearer(authorization: str, policy: AuthPolicy, jwks: KeyLookup, now: float) -> Principal:
    """The bearer of ``Authorization``: a static token (every one compared, in constant time,
    whatever the value looks like), else a JWT of an ``[auth.oidc]`` provider; else 401."""
    presented = parse_bearer(authorization)
    token = match_token(presented, policy.tokens)
    if token is not None:
        return Principal("token", token.name, scopes=token.scopes, sign_scopes=token.sign_scopes,
                         presets_only=token.presets_only)
    if policy.oidc and is_jwt(presented):
        identity = verify_jwt(presented, policy.oidc, jwks, now)
        return Principal("jwt", identity.provider, sub=identity.sub, scopes=identity.scopes,
                         sign_scopes=identity.scopes, groups=identity.groups, issuer=identity.issuer)
    raise InvalidToken("unknown bearer token")


def authorize(
    source: str,
    key: str,
    params: Mapping[str, str],
    authorization: str | None,
    policy: AuthPolicy,
    now: float,
    jwks: KeyLookup = no_keys,
    forwarded: Mapping[str, str] | None = None,
    cookie: str | None = None,
    route: str = IMG,
) -> Principal:
    """``forwarded``: the request's headers when ``[auth.forward]`` is on and the direct peer is one
    of its trusted proxies, else None (forward-auth headers are then not read). ``cookie``: the
    grant cookie's value, if ``[auth.grants]`` is on and the request (GET/HEAD) carries one.
    ``route``: ``img``, or ``meta`` (a signature is checked over that route's path; its params
    are not transforms, so the plain and presets-only limits do not apply: ``web/meta.py``
    allows only ``placeholder``)."""
    if "sig" in params:
        if not policy.keys:
            raise Unauthorized("signed URL but no signing keys configured",
                               public_message="This server accepts bearer tokens only.",
                               headers={"WWW-Authenticate": 'Bearer realm="imgproxy"'})
        url = verify_url(source, key, params, keys=policy.keys, now=now, max_ttl=policy.max_ttl,
                         clock_skew=policy.clock_skew, limits=policy.limits, route=route)
        if policy.revocations is None:
            raise RevocationsUnavailable("revocation list not loaded yet")
        issued = url.issued(policy.key_limits(url.kid).max_ttl, policy.clock_skew)
        policy.revocations.check(source, key, url, issued)
        presets_only = policy.key_limits(url.kid).presets_only
        if presets_only and route == IMG:
            check_presets_only(params)
        return Principal("signature", url.kid, sub=url.sub, sig=url.sig, durable=url.exp is None,
                         presets_only=presets_only)
    principal = None
    if authorization is not None:
        if policy.tokens or policy.oidc:
            require_no_reserved(params)
            principal = identify_bearer(authorization, policy, jwks, now)
    elif cookie is not None and policy.grants is not None:
        require_no_reserved(params)
        principal = grant_principal(source, key, policy.open_grant(cookie, now), policy)
    elif forwarded is not None and policy.forward is not None:
        identity = identify_forward(forwarded, policy.forward.config)
        if identity is not None:
            require_no_reserved(params)
            principal = Principal("forward", identity.user, sub=identity.user, scopes=identity.scopes,
                                  groups=identity.groups)
    if principal is None:
        raise Unauthorized("no credentials")
    if not principal.allows(source, key):
        raise OutOfScope(f"{principal.kind} {principal.name!r} has no scope for this path")
    if route != IMG:
        return principal
    if principal.presets_only:
        check_presets_only(params)
    if principal.is_user:
        policy.plain.check(params)
    return principal


def grant_principal(source: str, key: str, grant: Grant, policy: AuthPolicy) -> Principal:
    """A verified grant as a principal: within its key's scopes too, and not revoked (by key or
    sub issued before a cutoff, or by path)."""
    if policy.revocations is None:
        raise RevocationsUnavailable("revocation list not loaded yet")
    policy.revocations.check_issued(source, key, grant.kid, grant.sub, grant.iat)
    if not policy.key_limits(grant.kid).allows(source, key):
        raise OutOfScope(f"grant key {grant.kid!r} has no scope for this path")
    return Principal("grant", grant.sub, sub=grant.sub, scopes=grant.scopes, groups=grant.groups,
                     via=grant.via,
                     presets_only=grant.presets_only or policy.key_limits(grant.kid).presets_only)
