"""``[auth.oidc.NAME]``: an OpenID Connect provider whose JWTs are accepted as bearer tokens, and
the rules (with their scope templates) by which a token's claims become scopes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from imgproxy.config.model import Scope
from imgproxy.config.reader import Table
from imgproxy.config.values import NAME_PATTERN, ConfigError, check_ca_bundle

# Asymmetric signatures only: an HMAC algorithm would make the IdP's public key (which anyone
# can fetch) a shared secret, and "none" is no signature at all.
SUPPORTED_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                               "ES256", "ES384", "ES512")
DEFAULT_ALGORITHMS: Final = ("RS256", "ES256")
DEFAULT_CLOCK_SKEW: Final = 60.0
PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}", re.ASCII)
CLAIM_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_:./-]{0,127}", re.ASCII)
_LOOPBACK: Final = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class ScopeTemplate:
    """A rule's scope, parsed: ``source:key`` whose key may hold ``{claim}`` placeholders.

    ``parts`` alternates literal text and claim names (``("tenants/", "tenant_id", "/")`` for
    ``photos:tenants/{tenant_id}/*``); every placeholder is followed by ``/``, so a claim value
    fills exactly one path segment. Without placeholders it is a plain ``Scope`` as written.
    """

    source: str
    parts: tuple[str, ...]
    is_prefix: bool
    text: str  # as written in the config

    @property
    def claims(self) -> tuple[str, ...]:
        return self.parts[1::2]

    @classmethod
    def parse(cls, text: str, where: str) -> ScopeTemplate:
        source, sep, key = text.partition(":")
        parts = tuple(PLACEHOLDER.split(key)) if sep else ()
        literals = parts[0::2] if parts else (key,)
        if "{" in source or "}" in source or any("{" in p or "}" in p for p in literals):
            raise ConfigError(f"{where}: {text!r}: placeholders look like {{claim}}, and only in the "
                              "key part (after 'SOURCE:')")
        if any(not following.startswith("/") for following in parts[2::2]):
            raise ConfigError(f"{where}: {text!r}: a placeholder must be followed by '/' "
                              "(it fills one whole path segment)")
        filled = PLACEHOLDER.sub("x", text)
        scope = Scope.parse(filled, where)  # the shape, with every placeholder filled in
        if len(parts) <= 1:
            return cls(scope.source, (scope.key,), scope.is_prefix, text)
        last = parts[-1][:-1] if scope.is_prefix else parts[-1]
        return cls(scope.source, (*parts[:-1], last), scope.is_prefix, text)


@dataclass(frozen=True, slots=True)
class ScopeRule:
    """``[[auth.oidc.NAME.rules]]``: the ``scopes`` a token gets when its ``claim`` equals
    ``equals`` (or is a list holding it); a rule with neither applies to every token."""

    scopes: tuple[ScopeTemplate, ...]
    claim: str | None = None
    equals: str | None = None


@dataclass(frozen=True, slots=True)
class OidcConfig:
    """One identity provider (``[auth.oidc.NAME]``) whose JWTs are bearer tokens here."""

    name: str
    issuer: str  # the token's iss, exactly
    audience: str  # must be the token's aud (or one of them)
    jwks_url: str | None = None  # None: jwks_uri from the issuer's /.well-known/openid-configuration
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    clock_skew: float = DEFAULT_CLOCK_SKEW  # leeway for exp, nbf and iat
    scopes_claim: str | None = None  # a claim holding scope strings (a list, or space-separated)
    allow_broad_scopes: bool = False  # may scopes_claim grant '*' or a whole source ('photos:*')
    rules: tuple[ScopeRule, ...] = ()
    ca_bundle: str | None = None  # PEM file of the CAs the IdP's https certificate must chain to
    groups_claim: str = "groups"  # the claim whose strings are the user's groups ([auth.webhook])


def check_fetch_url(url: str, where: str) -> str:
    """An https URL (plain http only to a loopback host, for a local IdP in development)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host, parts = None, None
    if parts is None or not host or parts.scheme not in ("https", "http") \
            or (parts.scheme == "http" and host not in _LOOPBACK) or parts.fragment or "@" in parts.netloc:
        raise ConfigError(f"{where}: {url!r} must be an https:// URL (http:// only to 127.0.0.1, "
                          "localhost or [::1])")
    return url


def read_rule(t: Table) -> ScopeRule:
    scopes = tuple(ScopeTemplate.parse(s, t.where("scopes")) for s in t.string_list("scopes", ()))
    if not scopes:
        raise ConfigError(f"{t.where('scopes')}: list at least one scope, e.g. 'photos:users/{{sub}}/*'")
    claim, equals = t.optional_string("claim"), t.optional_string("equals")
    if (claim is None) != (equals is None):
        raise ConfigError(f"{t.path}: give both claim and equals (or neither, for every token)")
    if claim is not None and not CLAIM_NAME.fullmatch(claim):
        raise ConfigError(f"{t.where('claim')}: {claim!r} is not a claim name")
    t.reject_unknown()
    return ScopeRule(scopes=scopes, claim=claim, equals=equals)


def read_scope_rules(t: Table) -> tuple[str | None, tuple[ScopeRule, ...]]:
    """``scopes_claim`` and ``[[rules]]`` of a table (an OIDC provider's, or ``[auth.forward]``):
    at least one of them, or its identities would grant nothing."""
    scopes_claim = t.optional_string("scopes_claim")
    if scopes_claim is not None and not CLAIM_NAME.fullmatch(scopes_claim):
        raise ConfigError(f"{t.where('scopes_claim')}: {scopes_claim!r} is not a claim name")
    raw_rules = t.raw("rules")
    if raw_rules is not None and not isinstance(raw_rules, list):
        raise ConfigError(f"{t.where('rules')}: expected [[{t.where('rules')}]] tables")
    rules = tuple(read_rule(Table(rule, f"{t.where('rules')}[{i}]"))
                  for i, rule in enumerate(raw_rules or []))
    if scopes_claim is None and not rules:
        raise ConfigError(f"{t.path}: set scopes_claim or add [[{t.where('rules')}]] (a token would "
                          "grant nothing)")
    return scopes_claim, rules


def read_provider(name: str, t: Table) -> OidcConfig:
    issuer = check_fetch_url(t.string("issuer", required=True), t.where("issuer"))
    jwks_url = t.optional_string("jwks_url")
    if jwks_url is not None:
        check_fetch_url(jwks_url, t.where("jwks_url"))
    algorithms = t.string_list("algorithms", DEFAULT_ALGORITHMS)
    wrong = [alg for alg in algorithms if alg not in SUPPORTED_ALGORITHMS]
    if wrong or not algorithms:
        raise ConfigError(f"{t.where('algorithms')}: {wrong[0] if wrong else 'an empty list'!r} is not "
                          f"allowed; choose from {', '.join(SUPPORTED_ALGORITHMS)} (never none or HS*)")
    scopes_claim, rules = read_scope_rules(t)
    ca_bundle = t.optional_string("ca_bundle")
    if ca_bundle is not None:
        check_ca_bundle(ca_bundle, t.where("ca_bundle"))
    groups_claim = t.string("groups_claim", "groups")
    if not CLAIM_NAME.fullmatch(groups_claim):
        raise ConfigError(f"{t.where('groups_claim')}: {groups_claim!r} is not a claim name")
    audience = t.string("audience", required=True)
    if not audience:
        raise ConfigError(f"{t.where('audience')}: is required")
    config = OidcConfig(
        name=name, issuer=issuer, audience=audience, jwks_url=jwks_url,
        algorithms=tuple(dict.fromkeys(algorithms)),
        clock_skew=t.duration("clock_skew", DEFAULT_CLOCK_SKEW, 0, 600), scopes_claim=scopes_claim,
        allow_broad_scopes=t.boolean("allow_broad_scopes", False), rules=rules, ca_bundle=ca_bundle,
        groups_claim=groups_claim)
    t.reject_unknown()
    return config


def read_oidc(t: Table) -> Mapping[str, OidcConfig]:
    """Every ``[auth.oidc.NAME]``; two providers may not share an issuer (the token's ``iss``
    chooses the provider)."""
    providers: dict[str, OidcConfig] = {}
    for name in t.data:
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"{t.where(name)}: provider names use letters, digits, '_' and '-'")
        provider = read_provider(name, t.table(name))
        twin = next((p for p in providers.values() if p.issuer == provider.issuer), None)
        if twin is not None:
            raise ConfigError(f"{t.where(name)}.issuer: the same issuer as auth.oidc.{twin.name}")
        providers[name] = provider
    t.reject_unknown()
    return MappingProxyType(providers)
