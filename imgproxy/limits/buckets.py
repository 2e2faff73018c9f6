"""Which buckets a request is charged to: one per limited dimension that applies to its
credentials, in the order they are checked (signature, key, token, sub, client).

Pure. A bucket is named by a 16-byte digest of (budget, dimension, value): the table and the
memory hold no signature (a credential), viewer id or client address in the clear, and every
name costs the same whatever its value's length.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from enum import StrEnum

from imgproxy.auth.principal import Principal
from imgproxy.config.model import BudgetLimits, Rate


class Budget(StrEnum):
    """What a request spends: egress (every request for an original) or CPU (renders)."""

    ORIGINALS = "originals"
    TRANSFORMS = "transforms"


class Dimension(StrEnum):
    """Whose budget, in checking order: one looping URL is refused by its own bucket first."""

    SIGNATURE = "signature"
    KEY = "key"
    TOKEN = "token"  # noqa: S105 (the dimension's name, not a secret)
    SUB = "sub"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class Bucket:
    dimension: Dimension
    rate: Rate
    id: bytes = field(repr=False)  # the digest that names it in the stores


def bucket_id(budget: Budget, dimension: Dimension, value: str) -> bytes:
    text = f"{budget}\0{dimension}\0{value}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).digest()[:16]


def client_id(address: str) -> str:
    """What ``per_client`` counts: an IPv4 address as it is, an IPv6 address by its /64 (one
    host is routinely given a whole /64, and would otherwise be a new client at every address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def buckets_for(budget: Budget, limits: BudgetLimits, principal: Principal,
                client: str) -> tuple[Bucket, ...]:
    """The request's buckets in checking order; () when none of its dimensions is limited.
    ``client`` is the address after ``server.trusted_proxies`` ("-": unknown, not limited)."""
    signed = principal.kind == "signature"
    address = client_id(client) if limits.per_client is not None and client != "-" else None
    candidates = (
        (Dimension.SIGNATURE, limits.per_signature, principal.sig if signed else None),
        (Dimension.KEY, limits.per_key, principal.name if signed else None),
        # A static token's name; a JWT's provider is no one principal (its users are per_sub).
        (Dimension.TOKEN, limits.per_token, principal.name if principal.kind == "token" else None),
        (Dimension.SUB, limits.per_sub, principal.sub),
        (Dimension.CLIENT, limits.per_client, address),
    )
    return tuple(Bucket(dimension, rate, bucket_id(budget, dimension, value))
                 for dimension, rate, value in candidates if rate is not None and value)
