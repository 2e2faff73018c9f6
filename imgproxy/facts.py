"""``RequestFacts``: the typed record of what happened to one request.

Handlers set its fields as they learn them (which source and key, who asked, how the answer was
delivered, where a variant came from, how long storage and transforms took, how many bytes
went out, why an answer was cut short); ``web/middleware.py`` alone turns the record into the
access log line, the metrics and the informational headers (``X-Delivery``, ``X-Cache``,
``Server-Timing``). Nothing else writes log fields, and nothing parses a response's headers
back to learn what happened. Pure: no aiohttp.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from imgproxy.delivery.policy import Delivery


class Part(StrEnum):
    """The parts of a request's time that are measured apart from the whole."""

    STORAGE = "storage"  # S3: HEAD, GET until its headers; for a transform, the whole read
    TRANSFORM = "transform"  # rendering in the image pool, queueing included


class CacheResult(StrEnum):
    """Where a variant's body came from (``X-Cache``)."""

    HIT = "HIT"  # this host's variant cache (every worker's), or a 304 from the known ETag
    STORE = "STORE"  # the shared variant store
    MISS = "MISS"  # rendered for this request


@dataclass(slots=True)
class Durations:
    """Seconds spent on each ``Part``, in the order first measured."""

    seconds: dict[Part, float] = field(default_factory=dict)

    @contextmanager
    def timing(self, part: Part) -> Iterator[None]:
        """Add the block's time to ``part`` (several blocks add up)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - started)

    def add(self, part: Part, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def get(self, part: Part) -> float | None:
        return self.seconds.get(part)


@dataclass(slots=True)
class RequestFacts:
    """What happened to one request; every field but the first three is set when known."""

    request_id: str
    client: str  # the address, through trusted proxies
    scheme: str  # the client's, through trusted proxies
    user_agent: str | None = None  # its first characters
    source: str | None = None
    key: str | None = None  # logged only with server.log_keys
    key_hash: str | None = None  # without log_keys: a keyed hash of source and key (audits match it)
    principal: str | None = None  # "signature:KID", "token:NAME", "jwt:PROVIDER:SUB", "grant:SUB", ...
    kid: str | None = None  # a signed URL's key id
    token: str | None = None  # a bearer token's name
    sub: str | None = None  # the signed viewer id, or a JWT's sub
    denied: str | None = None  # a 401/403's error code (a JWT's: jwt_ and the check it failed)
    webhook: str | None = None  # [auth.webhook]'s outcome: allow, deny, error, cached
    max_age_cap: float | None = None  # a durable URL's: Cache-Control max-age at most this
    private: bool = False  # a user's own credential (grant, JWT, forward): Cache-Control private
    vary: str | None = None  # a header the answer depends on beyond the route's own (Cookie)
    delivery: Delivery | None = None  # set for image answers only
    transform: bool = False
    cache: CacheResult | None = None
    aborted: str | None = None  # why the answer was cut short: client_gone, send_timeout, ...
    limited: tuple[str, str] | None = None  # a 429's (budget, dimension): ("originals", "key")
    body_bytes: int = 0  # body bytes handed to the socket
    durations: Durations = field(default_factory=Durations)
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
