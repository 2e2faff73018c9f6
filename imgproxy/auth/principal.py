"""Who is asking: one decision that turns a request's credentials into a ``Principal``.

Pure. A ``sig`` parameter means a signed URL; otherwise an ``Authorization`` header means a
bearer token; otherwise the request has no credentials (401). Nothing here touches storage, so
the answer never depends on whether the object exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from imgproxy.auth.signing import require_no_reserved, verify_signature
from imgproxy.auth.tokens import Token, check_scope, find_token, parse_bearer
from imgproxy.errors import Unauthorized


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """What the server checks credentials against (built once from config)."""

    keys: Mapping[str, bytes]
    tokens: Sequence[Token]
    max_ttl: float
    clock_skew: float

    def __repr__(self) -> str:
        return f"AuthPolicy(keys={sorted(self.keys)}, tokens={[t.name for t in self.tokens]})"


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
        kid = verify_signature(source, key, params, keys=policy.keys, now=now,
                               max_ttl=policy.max_ttl, clock_skew=policy.clock_skew)
        return Principal("signature", kid)
    if authorization is not None and policy.tokens:
        require_no_reserved(params)
        token = find_token(parse_bearer(authorization), policy.tokens)
        check_scope(token, source, key)
        return Principal("token", token.name)
    raise Unauthorized("no credentials")
