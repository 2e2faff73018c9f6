"""Readiness: whether every source answers with the configured credentials, cached briefly.

Probes run at most once per ``ready_cache_seconds`` however many load balancers ask, and
concurrent askers share one probe round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from imgproxy.errors import ProxyError
from imgproxy.storage.s3 import S3Source

log = logging.getLogger("imgproxy.health")


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    checked_at: float
    sources: Mapping[str, str]  # name -> "ok" or the public error code

    @property
    def ready(self) -> bool:
        return all(state == "ok" for state in self.sources.values())

    @property
    def failing(self) -> list[str]:
        return sorted(name for name, state in self.sources.items() if state != "ok")

    def detail(self) -> dict[str, object]:
        """The report for operators (the metrics address): the state of every source."""
        return {"status": "ready" if self.ready else "not_ready", "sources": dict(self.sources)}


class Readiness:
    def __init__(self, sources: Mapping[str, S3Source], ttl: float, clock: Callable[[], float]) -> None:
        self._sources = sources
        self._ttl = ttl
        self._clock = clock
        self._report: ReadinessReport | None = None
        self._lock = asyncio.Lock()

    async def report(self) -> ReadinessReport:
        async with self._lock:
            now = self._clock()
            if self._report is None or now - self._report.checked_at >= self._ttl:
                self._report = await self._probe(now)
            return self._report

    async def _probe(self, now: float) -> ReadinessReport:
        names = list(self._sources)
        results = await asyncio.gather(*(self._sources[n].probe() for n in names),
                                       return_exceptions=True)
        states: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, ProxyError):
                states[name] = result.code
            elif isinstance(result, BaseException):
                log.error("readiness probe of source %s failed: %s", name, result.__class__.__name__)
                states[name] = "internal_error"
            else:
                states[name] = "ok"
        return ReadinessReport(checked_at=now, sources=states)
