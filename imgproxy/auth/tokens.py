"""Bearer tokens: recognising a presented token and checking its scopes.

Pure. Tokens are compared as SHA-256 digests with ``hmac.compare_digest`` against *every*
configured token (no early exit), so neither timing nor order reveals which one came close.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from imgproxy.config import Scope, TokenConfig
from imgproxy.errors import InvalidToken, OutOfScope

_BEARER: Final = re.compile(r"Bearer +([A-Za-z0-9\-._~+/]+=*) *", re.IGNORECASE | re.ASCII)
# The whole Authorization value ("Bearer ..."): IdP tokens run to several KiB. The header line
# ("Authorization: " and this) stays under the server's 8190-byte line limit (protocol/connections.py).
MAX_TOKEN_CHARS: Final = 8000


@dataclass(frozen=True, slots=True)
class Token:
    """A configured token as the server keeps it: its name (safe to log), digest and scopes."""

    name: str
    digest: bytes
    scopes: tuple[Scope, ...]
    sign_scopes: tuple[Scope, ...] = ()
    presets_only: bool = False  # transforms by preset only (auth/presets.py), and what it mints

    def __repr__(self) -> str:
        return f"Token(name={self.name!r}, scopes={len(self.scopes)})"

    def allows(self, source: str, key: str) -> bool:
        return any(scope.allows(source, key) for scope in self.scopes)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def load_tokens(configs: Sequence[TokenConfig]) -> tuple[Token, ...]:
    return tuple(Token(c.name, _digest(c.token.reveal()), c.scopes, c.sign_scopes, c.presets_only)
                 for c in configs)


def parse_bearer(header: str) -> str:
    """The token from an ``Authorization: Bearer ...`` value, or ``InvalidToken``."""
    match = _BEARER.fullmatch(header) if len(header) <= MAX_TOKEN_CHARS else None
    if match is None:
        raise InvalidToken("malformed Authorization header",
                           public_message="Use 'Authorization: Bearer <token>'.")
    return match.group(1)


def match_token(presented: str, tokens: Sequence[Token]) -> Token | None:
    """The configured token equal to ``presented``, or None; constant time in the token's content."""
    digest = _digest(presented)
    found: Token | None = None
    for token in tokens:
        if hmac.compare_digest(digest, token.digest):
            found = token
    return found


def find_token(presented: str, tokens: Sequence[Token]) -> Token:
    """The configured token equal to ``presented``, or ``InvalidToken``."""
    found = match_token(presented, tokens)
    if found is None:
        raise InvalidToken("unknown bearer token")
    return found


def check_scope(token: Token, source: str, key: str) -> None:
    if not token.allows(source, key):
        raise OutOfScope(f"token {token.name!r} has no scope for this path")
