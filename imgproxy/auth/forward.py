"""Forward-auth: the identity an auth proxy put in request headers, as claims and then scopes.

Pure. The caller decides whether the peer may speak for the user (``ForwardPolicy.trusts``, on
the direct peer's address: never ``X-Forwarded-For``); from an untrusted peer these headers are
not read at all. From a trusted one a header value that is too long or holds a control character
is refused (401 ``invalid_token``) rather than trimmed or ignored: the auth proxy is broken or
bypassed, and a failing credential never falls through. The claims are ``sub`` (the user),
``groups`` (a list), ``email`` and the ``extra_headers`` claims; ``auth/claims.py`` maps them to
scopes by ``[auth.forward]``'s rules, exactly as a JWT's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from imgproxy.auth.claims import claim_scopes
from imgproxy.config.forward import ForwardConfig
from imgproxy.config.model import Scope
from imgproxy.errors import InvalidToken
from imgproxy.protocol.forwarded import Network, is_trusted, parse_networks

MAX_VALUE_CHARS: Final = 256  # the user, an email, an extra claim, one group
MAX_GROUPS_CHARS: Final = 4096  # the whole groups header
MAX_GROUPS: Final = 100
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
PUBLIC_MESSAGE: Final = "The forwarded identity is not valid."
MAX_REPORTED_PEERS: Final = 1024


@dataclass(frozen=True, slots=True)
class ForwardIdentity:
    user: str
    scopes: tuple[Scope, ...]
    groups: tuple[str, ...] = ()  # from groups_header


@dataclass(frozen=True, slots=True)
class ForwardPolicy:
    """``[auth.forward]`` with its peer networks parsed (rebuilt at each reload)."""

    config: ForwardConfig
    networks: tuple[Network, ...]

    @classmethod
    def from_config(cls, config: ForwardConfig) -> ForwardPolicy:
        return cls(config, parse_networks(config.trusted_proxies))

    def trusts(self, peer: str | None) -> bool:
        """May the direct peer (the connection's address) speak for the user?"""
        return is_trusted(peer, self.networks)

    def is_present(self, headers: Mapping[str, str]) -> bool:
        """Does the request carry any header this policy reads (from whoever)?"""
        return any(name in headers for name in self.config.headers.values())


def checked(value: str, name: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidToken(f"forwarded {name}: over {limit} characters", public_message=PUBLIC_MESSAGE)
    if _CONTROL.search(value):
        raise InvalidToken(f"forwarded {name}: a control character", public_message=PUBLIC_MESSAGE)
    return value.strip()


def forward_claims(headers: Mapping[str, str], config: ForwardConfig) -> dict[str, object] | None:
    """The claims in a trusted peer's headers; None without a user (no forward identity)."""
    raw_user = headers.get(config.user_header)
    if raw_user is None:
        return None
    user = checked(raw_user, config.user_header, MAX_VALUE_CHARS)
    if not user:
        raise InvalidToken(f"forwarded {config.user_header}: empty", public_message=PUBLIC_MESSAGE)
    groups_text = checked(headers.get(config.groups_header, ""), config.groups_header, MAX_GROUPS_CHARS)
    groups = [group.strip() for group in groups_text.split(",") if group.strip()]
    if len(groups) > MAX_GROUPS or any(len(group) > MAX_VALUE_CHARS for group in groups):
        raise InvalidToken(f"forwarded {config.groups_header}: too many or too long",
                           public_message=PUBLIC_MESSAGE)
    claims: dict[str, object] = {"sub": user, "groups": groups}
    optional = {"email": config.email_header} if config.email_header is not None else {}
    for claim, header in {**optional, **config.extra_headers}.items():
        value = headers.get(header)
        if value is not None and (value := checked(value, header, MAX_VALUE_CHARS)):
            claims[claim] = value  # absent or empty: the claim is missing (templates grant nothing)
    return claims


def identify_forward(headers: Mapping[str, str], config: ForwardConfig) -> ForwardIdentity | None:
    """The user a trusted auth proxy names, with the scopes its rules give; None if it names none."""
    claims = forward_claims(headers, config)
    if claims is None:
        return None
    user = claims["sub"]
    groups = claims["groups"]
    assert isinstance(user, str)
    assert isinstance(groups, list)
    return ForwardIdentity(user, claim_scopes(claims, config), tuple(dict.fromkeys(groups)))


class UntrustedPeers:
    """When a peer outside ``trusted_proxies`` sent forward-auth headers last got a log line: at
    most one per peer per ``interval`` (a spoofing client cannot flood the log). Bounded: past
    ``MAX_REPORTED_PEERS`` peers the memory starts over. Loop thread only."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}

    def should_report(self, peer: str, now: float) -> bool:
        last = self._last.get(peer)
        if last is not None and now - last < self.interval:
            return False
        if len(self._last) >= MAX_REPORTED_PEERS:
            self._last.clear()
        self._last[peer] = now
        return True
