"""``[auth.forward]``: the auth proxy whose headers (user, groups, more claims) are believed, from
which peers, and the rules by which those values become scopes (as an OIDC provider's)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from imgproxy.config.oidc import CLAIM_NAME, ScopeRule, read_scope_rules
from imgproxy.config.reader import Table
from imgproxy.config.sections import read_networks
from imgproxy.config.values import ConfigError

HEADER_NAME: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}", re.ASCII)
DEFAULT_USER_HEADER: Final = "X-Forwarded-User"
DEFAULT_GROUPS_HEADER: Final = "X-Forwarded-Groups"
RESERVED_CLAIMS: Final = ("sub", "groups", "email")  # filled from user_header, groups_header, email_header


@dataclass(frozen=True, slots=True)
class ForwardConfig:
    """``[auth.forward]``: identities an auth proxy (oauth2-proxy, Traefik forwardAuth, nginx
    ``auth_request``) puts in request headers, believed only from ``trusted_proxies``."""

    trusted_proxies: tuple[str, ...]  # the direct peers (CIDRs) whose headers are believed
    user_header: str = DEFAULT_USER_HEADER  # the user: claim "sub"; without it, no forward identity
    groups_header: str = DEFAULT_GROUPS_HEADER  # comma-separated: claim "groups" (a list)
    email_header: str | None = None  # e.g. "X-Forwarded-Email": claim "email"
    # claim name -> header (e.g. tenant_id = "X-Auth-Request-Tenant"), for rules and templates
    extra_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    scopes_claim: str | None = None  # a claim (from extra_headers) of space-separated scopes
    allow_broad_scopes: bool = False  # may that claim grant "*" or a whole source ("photos:*")
    rules: tuple[ScopeRule, ...] = ()

    @property
    def headers(self) -> Mapping[str, str]:
        """Every header read, by the claim it becomes."""
        named = {"sub": self.user_header, "groups": self.groups_header}
        if self.email_header is not None:
            named["email"] = self.email_header
        return {**named, **self.extra_headers}


def check_header(name: str, where: str) -> str:
    if not HEADER_NAME.fullmatch(name):
        raise ConfigError(f"{where}: {name!r} is not a header name")
    return name


def read_forward(t: Table) -> ForwardConfig | None:
    """``[auth.forward]``, or None when the table is absent (forward-auth off)."""
    if not t.data:
        return None
    trusted = read_networks(t, "trusted_proxies", ())
    if not trusted:
        raise ConfigError(f"{t.where('trusted_proxies')}: list the auth proxies' addresses (CIDRs); "
                          "from anyone else the headers are ignored")
    email = t.optional_string("email_header")
    extras = t.table("extra_headers")
    extra_headers: dict[str, str] = {}
    for claim in extras.data:
        if not CLAIM_NAME.fullmatch(claim) or claim in RESERVED_CLAIMS:
            raise ConfigError(f"{extras.where(claim)}: {claim!r} is not a claim name (sub, groups and "
                              "email come from user_header, groups_header and email_header)")
        extra_headers[claim] = check_header(extras.string(claim, required=True), extras.where(claim))
    extras.reject_unknown()
    scopes_claim, rules = read_scope_rules(t)
    config = ForwardConfig(
        trusted_proxies=trusted,
        user_header=check_header(t.string("user_header", DEFAULT_USER_HEADER), t.where("user_header")),
        groups_header=check_header(t.string("groups_header", DEFAULT_GROUPS_HEADER),
                                   t.where("groups_header")),
        email_header=None if email is None else check_header(email, t.where("email_header")),
        extra_headers=MappingProxyType(extra_headers),
        scopes_claim=scopes_claim,
        allow_broad_scopes=t.boolean("allow_broad_scopes", False),
        rules=rules)
    names = [name.lower() for name in config.headers.values()]
    if len(set(names)) != len(names):
        raise ConfigError(f"{t.path}: two claims read the same header")
    t.reject_unknown()
    return config
