"""The polled revocation list in one serving process: asked for every interval, kept when it fails.

Each serving process asks for ``auth.revocations_url`` at start-up and then every
``auth.revocations_interval`` (read at each wait, so a reload changes it), with the ETag it
holds, so an unchanged list is a 304. A new list is parsed and checked whole
(``config.revocations.parse_revocation_object``) before it replaces the old one; a list that
cannot be loaded (S3 down, 403, 404, too large, bad JSON, a bad entry) keeps the last good one
in force, is counted (``imgproxy_revocations_load_errors_total{kind}``), logged at most once a
minute per kind, and shown in the detailed readiness report. Never fail open: until a first
list has loaded, signed URLs are 503 (``AuthPolicy.from_config(config, None)``); bearer tokens
still work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from imgproxy.config import ConfigError
from imgproxy.config.revocations import parse_revocation_object
from imgproxy.storage.revocation_object import FetchFailed, RevocationObject
from imgproxy.web.live import Live
from imgproxy.web.metrics import Metrics

log = logging.getLogger("imgproxy.revocations")
LOG_EVERY: Final = 60.0  # seconds between two log lines about the same kind of failure


class PolledRevocations:
    """What this process knows of the polled list: its ETag, when it last loaded, what failed."""

    def __init__(self, url: str, source: RevocationObject, live: Live, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url  # s3://bucket/key: no secret in it
        self.source = source
        self.live = live
        self.metrics = metrics
        self.clock = clock
        self.etag: str | None = None
        self.loaded_at: float | None = None  # the last load or 304 (clock's time)
        self.error: str | None = None  # the kind of the last attempt's failure, if it failed
        self._logged: dict[str, float] = {}

    def age(self) -> float | None:
        return None if self.loaded_at is None else max(0.0, self.clock() - self.loaded_at)

    def detail(self) -> dict[str, object]:
        """The readiness report's part (the metrics address): loaded or not, since when, why not."""
        age = self.age()
        revocations = self.live.current.auth.revocations
        return {
            "loaded": age is not None,
            "age_seconds": None if age is None else round(age, 1),
            "version": None if revocations is None else revocations.version,
            "entries": None if revocations is None else revocations.size,
            "last_error": self.error,
        }

    async def poll(self) -> None:
        """One attempt: a new list installed, an unchanged one confirmed, or the failure noted."""
        try:
            fetched = await self.source.fetch(self.etag)
            if fetched is not None:
                entries = await asyncio.to_thread(parse_revocation_object, fetched.body,
                                                  "auth.revocations_url")
                settings = await self.live.revoke(entries)
                self.etag = fetched.etag
                self.metrics.observe_in_force(settings.version, settings.auth.revocations)
                log.info("revocations: loaded %s (%d entries)", self.url, len(entries))
        except FetchFailed as failed:
            self.failed(failed.kind, failed.detail)
        except ConfigError as exc:
            self.failed("invalid", str(exc))
        else:
            self.loaded_at, self.error = self.clock(), None
        self.metrics.refresh()

    def failed(self, kind: str, detail: str) -> None:
        self.error = kind
        self.metrics.observe_revocations_failed(kind)
        now, last = self.clock(), self._logged.get(kind)
        if last is not None and now - last < LOG_EVERY:
            return
        self._logged[kind] = now
        age = self.age()
        kept = ("no list has loaded yet: signed URLs get 503" if age is None
                else f"keeping the list loaded {age:.0f}s ago")
        log.warning("revocations: cannot load %s (%s%s); %s; next such line in %gs at the earliest",
                    self.url, kind, f": {detail}" if detail else "", kept, LOG_EVERY)

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # a bug must not end the polling: the list would go stale
                log.exception("revocations: polling %s failed unexpectedly", self.url)
                self.failed("internal", exc.__class__.__name__)
            await asyncio.sleep(self.live.current.config.auth.revocations_interval)

