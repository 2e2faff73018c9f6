"""Readiness: whether every source answers with the configured credentials, cached briefly,
and (with ``auth.revocations_url``) whether a revocation list has ever loaded.

Probes run at most once per ``ready_cache_seconds`` however many load balancers ask, and
concurrent askers share one probe round. The revocation part is read at each report: a process
whose polled list never loaded cannot check signed URLs (they get 503), so it is not ready; one
whose list fails to refresh keeps the last good list and stays ready (the detail says so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from imgproxy.errors import ProxyError
from imgproxy.storage.s3 import S3Source

log = logging.getLogger("imgproxy.health")


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    checked_at: float
    sources: Mapping[str, str]  # name -> "ok" or the public error code
    revocations: Mapping[str, object] | None = None  # the polled list's state (web/polling.py)

    @property
    def ready(self) -> bool:
        return not self.failing

    @property
    def failing(self) -> list[str]:
        failing = sorted(name for name, state in self.sources.items() if state != "ok")
        if self.revocations is not None and not self.revocations.get("loaded"):
            failing.append("revocations")
        return failing

    def detail(self) -> dict[str, object]:
        """The report for operators (the metrics address): the state of every source, and of
        the polled revocation list if there is one."""
        detail: dict[str, object] = {"status": "ready" if self.ready else "not_ready",
                                     "sources": dict(self.sources)}
        if self.revocations is not None:
            detail["revocations"] = dict(self.revocations)
        return detail


class Readiness:
    def __init__(self, sources: Mapping[str, S3Source], ttl: float, clock: Callable[[], float],
                 revocations: Callable[[], Mapping[str, object] | None] | None = None) -> None:
        self._sources = sources
        self._ttl = ttl
        self._clock = clock
        self._revocations = revocations
        self._report: ReadinessReport | None = None
        self._lock = asyncio.Lock()

    async def report(self) -> ReadinessReport:
        async with self._lock:
            now = self._clock()
            if self._report is None or now - self._report.checked_at >= self._ttl:
                self._report = await self._probe(now)
            report = self._report
        if self._revocations is None:
            return report
        return replace(report, revocations=self._revocations())

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
