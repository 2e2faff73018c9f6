"""Who the client is behind reverse proxies: X-Forwarded-For / X-Forwarded-Proto, believed only
when the connection comes from a configured trusted proxy.

Pure. The client is the right-most address in X-Forwarded-For that is not itself a trusted
proxy (addresses further left were written by the client and prove nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS: Final = 32


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def is_trusted(address: str | None, trusted: Sequence[Network]) -> bool:
    if not address or not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(remote: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    if not is_trusted(remote, trusted) or not forwarded_for:
        return remote or "-"
    hops = [hop.strip() for hop in forwarded_for.split(",")][-MAX_HOPS:]
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return remote or "-"
    return hops[0] if hops and hops[0] else (remote or "-")


def public_scheme(remote: str | None, forwarded_proto: str | None, trusted: Sequence[Network],
                  scheme: str) -> str:
    if is_trusted(remote, trusted) and forwarded_proto:
        proto = forwarded_proto.split(",")[0].strip().lower()
        if proto in ("http", "https"):
            return proto
    return scheme
