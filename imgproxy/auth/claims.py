"""From a verified JWT's claims to scopes: the provider's ``scopes_claim`` and its rules' templates.

Pure. Nothing here widens what the operator wrote: a template's placeholder takes one claim value
as one whole path segment, and a value that could reach further (``/``, ``*``, ``..``, a control
character, empty, missing, not a string) drops that scope entirely rather than shortening it. A
scope from ``scopes_claim`` is never ``*`` or a whole source unless ``allow_broad_scopes`` says
so; a rule may grant those only by spelling them out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Protocol

from imgproxy.config import ConfigError, Scope
from imgproxy.config.oidc import ScopeRule, ScopeTemplate

MAX_CLAIM_SCOPES: Final = 100  # scope strings read from scopes_claim at most; the rest are ignored
MAX_VALUE_CHARS: Final = 256  # a claim value filling a placeholder
MAX_GROUPS: Final = 100  # groups read from a groups claim at most; the rest are ignored
_UNSAFE: Final = re.compile(r"[/*\\\x00-\x1f\x7f-\x9f{}]|\.\.")


class ClaimRules(Protocol):
    """What turns claims into scopes: an ``[auth.oidc.NAME]`` provider's, or ``[auth.forward]``."""

    @property
    def scopes_claim(self) -> str | None: ...
    @property
    def allow_broad_scopes(self) -> bool: ...
    @property
    def rules(self) -> tuple[ScopeRule, ...]: ...


def segment_value(value: object) -> str | None:
    """A claim value usable as one path segment, or None (the scope is then dropped)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or value in ("", ".") or len(value) > MAX_VALUE_CHARS \
            or _UNSAFE.search(value):
        return None
    return value


def expand(template: ScopeTemplate, claims: Mapping[str, Any]) -> Scope | None:
    """The template with its placeholders filled from ``claims``; None if any value is unsafe."""
    pieces = list(template.parts)
    for index in range(1, len(pieces), 2):
        value = segment_value(claims.get(pieces[index]))
        if value is None:
            return None
        pieces[index] = value
    return Scope(template.source, "".join(pieces), template.is_prefix)


def rule_applies(rule: ScopeRule, claims: Mapping[str, Any]) -> bool:
    if rule.claim is None:
        return True
    value = claims.get(rule.claim)
    if isinstance(value, list):
        return any(isinstance(item, str) and item == rule.equals for item in value)
    return isinstance(value, str) and value == rule.equals


def is_broad(scope: Scope) -> bool:
    """``*`` or a whole source (``photos:*``)."""
    return scope.source == "*" or (scope.is_prefix and not scope.key)


def claimed_scopes(value: object, allow_broad: bool) -> list[Scope]:
    """The scope strings of a ``scopes_claim`` (a list, or one space-separated string); the ones
    that do not parse, or are broad without ``allow_broad``, are left out."""
    texts = value.split() if isinstance(value, str) else value if isinstance(value, list) else []
    scopes: list[Scope] = []
    for text in texts[:MAX_CLAIM_SCOPES]:
        if not isinstance(text, str) or re.search(r"[\x00-\x1f\x7f-\x9f]", text):
            continue
        try:
            scope = Scope.parse(text, "scopes_claim")
        except ConfigError:
            continue
        if allow_broad or not is_broad(scope):
            scopes.append(scope)
    return scopes


def claim_scopes(claims: Mapping[str, Any], provider: ClaimRules) -> tuple[Scope, ...]:
    """Every scope the claims earn under ``provider``'s rules, without repeats."""
    found: list[Scope] = []
    if provider.scopes_claim is not None:
        found += claimed_scopes(claims.get(provider.scopes_claim), provider.allow_broad_scopes)
    for rule in provider.rules:
        if rule_applies(rule, claims):
            found += [scope for scope in (expand(t, claims) for t in rule.scopes) if scope is not None]
    return tuple(dict.fromkeys(found))


def claim_groups(value: object) -> tuple[str, ...]:
    """The groups a claim names (a list of strings, or one string), without repeats: the strings
    of at most ``MAX_VALUE_CHARS`` characters with no control character, at most ``MAX_GROUPS``."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    groups = [item for item in items if isinstance(item, str) and item and len(item) <= MAX_VALUE_CHARS
              and not re.search(r"[\x00-\x1f\x7f-\x9f]", item)]
    return tuple(dict.fromkeys(groups))[:MAX_GROUPS]
