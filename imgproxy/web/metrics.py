"""Prometheus metrics: their definitions, and the scrape endpoint on its own (non-public) address.

One ``Metrics`` per application, registered in its own ``CollectorRegistry``, so several apps in
one process (the tests) never collide. With ``PROMETHEUS_MULTIPROC_DIR`` set (several worker
processes on one port), prometheus-client keeps the values in files in that directory and a
scrape of any worker answers the sum over all of them.

Counters the rest of the code already keeps (pool rejections, cache hits, coalesced waiters)
are not duplicated there: ``refresh`` reads them through a ``Snapshot`` and adds the change.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from imgproxy.auth.revocations import RevocationList

log = logging.getLogger("imgproxy.metrics")
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client itself, too
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WEBHOOK_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The running totals and levels kept by the pool and the caches, read on the loop thread."""

    queued: int = 0
    loaded: int = 0
    rejected: int = 0
    renders: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_bytes: int = 0
    coalesced: int = 0


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """Every metric the proxy exports, and the registry a scrape reads."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("imgproxy_requests", "Requests answered, by route, status and delivery mode.",
                                ["route", "status", "delivery"], registry=reg)
        self.request_seconds = Histogram("imgproxy_request_duration_seconds",
                                         "Time from request to the last byte handed to the socket.",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=reg)
        self.response_bytes = Counter("imgproxy_response_bytes", "Response body bytes sent.",
                                      ["delivery"], registry=reg)
        self.s3_seconds = Histogram("imgproxy_s3_duration_seconds",
                                    "S3 calls until the response headers, by operation.",
                                    ["operation"], buckets=LATENCY_BUCKETS, registry=reg)
        self.s3_errors = Counter("imgproxy_s3_errors", "Failed S3 calls, by the error code clients see.",
                                 ["operation", "code"], registry=reg)
        self.pool_exhausted = Counter(
            "imgproxy_s3_pool_exhausted", "Requests refused (503) because a source's pool stayed "
            "full for pool_timeout, by source and pool (streams, reads, calls).",
            ["source", "pool"], registry=reg)
        self.transform_seconds = Histogram("imgproxy_transform_duration_seconds",
                                           "Image transforms in the worker pool (queueing included).",
                                           buckets=LATENCY_BUCKETS, registry=reg)
        self.cache_hits = Counter("imgproxy_variant_cache_hits", "Variant cache lookups that hit.",
                                  registry=reg)
        self.cache_misses = Counter("imgproxy_variant_cache_misses", "Variant cache lookups that missed.",
                                    registry=reg)
        # The host's total, which every worker reads: the latest reading, not a sum over workers.
        self.cache_bytes = Gauge("imgproxy_variant_cache_bytes", "Bytes held by the host's variant cache.",
                                 multiprocess_mode="livemostrecent", registry=reg)
        self.coalesced = Counter("imgproxy_coalesced_waiters",
                                 "Requests that waited for an identical render instead of rendering.",
                                 registry=reg)
        self.store = Counter("imgproxy_variant_store",
                             "Shared variant store calls: get hit/miss/error, put stored/dropped/error.",
                             ["operation", "result"], registry=reg)
        self.pool_queued = Gauge("imgproxy_transform_queue_depth",
                                 "Transforms admitted and waiting for a worker.",
                                 multiprocess_mode="livesum", registry=reg)
        self.pool_loaded = Gauge("imgproxy_transform_sources_in_memory",
                                 "Admitted transforms handed to the image workers, which read "
                                 "and hold their sources (at most 2 per worker; the rest of "
                                 "the queue holds nothing).",
                                 multiprocess_mode="livesum", registry=reg)
        self.pool_rejections = Counter("imgproxy_transform_rejections",
                                       "Transforms refused (503) because the pool's queue was full, "
                                       "before their source was read.",
                                       registry=reg)
        self.renders = Counter("imgproxy_transform_renders",
                               "Variants rendered in the image pool (a variant cache or store hit, a "
                               "304, or a HEAD whose variant's size was known renders nothing).",
                               registry=reg)
        self.connections_closed = Counter(
            "imgproxy_connections_closed", "Client connections closed by a limit, by reason "
            "(header_timeout, no_request, evicted_idle, over_limit, send_timeout, slow_client, "
            "and the parser's refusals: malformed_request, uri_too_long, header_too_large).",
            ["reason"], registry=reg)
        self.rate_limited = Counter(
            "imgproxy_rate_limited", "Requests refused (429) by a [limits] rate, by budget "
            "(originals, transforms) and dimension (signature, key, token, sub, client).",
            ["budget", "dimension"], registry=reg)
        self.auth_failures = Counter(
            "imgproxy_auth_failures", "Requests refused for their credentials (401, 403), by the error "
            "code clients see (unauthorized, invalid_token, invalid_signature, expired, out_of_scope, ...); "
            "a JWT's by the check it failed (jwt_expired, jwt_signature, jwt_unknown_kid, ...).",
            ["reason"], registry=reg)
        self.jwks_fetches = Counter(
            "imgproxy_jwks_fetches", "Fetches of an [auth.oidc] provider's keys (discovery included), by "
            "provider and result (ok, error: the keys held stay in use).", ["provider", "result"],
            registry=reg)
        self.webhook_decisions = Counter(
            "imgproxy_webhook_requests", "Questions to [auth.webhook] (one per /img request, one per "
            "POST /sign item), by outcome: allow, deny, error (on_error decided), cached (a kept answer).",
            ["outcome"], registry=reg)
        self.webhook_calls = Histogram(
            "imgproxy_webhook_call_duration_seconds", "HTTP calls to [auth.webhook] (a batch is one), "
            "by result: ok, timeout, connect, status, too_large, not_json, bad_result.", ["result"],
            buckets=WEBHOOK_BUCKETS, registry=reg)
        # What is in force in this process (one series per worker with several: pid label).
        self.config_info = Gauge("imgproxy_config_info",
                                 "1 for the config version in force in this process (a digest of the "
                                 "validated config and its secrets), 0 for the ones it replaced.",
                                 ["version"], multiprocess_mode="liveall", registry=reg)
        self.reloads = reload_counter(reg)
        self.revocations_info = Gauge("imgproxy_revocations_info",
                                      "1 for the revocation list version in force in this process "
                                      "(config and polled entries), 0 for the ones it replaced.",
                                      ["version"], multiprocess_mode="liveall", registry=reg)
        self.revocations_entries = Gauge("imgproxy_revocations_entries",
                                         "Entries of the revocation list in force (config and polled).",
                                         multiprocess_mode="liveall", registry=reg)
        self.revocations_age = Gauge("imgproxy_revocations_age_seconds",
                                     "Seconds since the polled revocation object was last loaded or "
                                     "found unchanged (+Inf: never; 0 without auth.revocations_url).",
                                     multiprocess_mode="liveall", registry=reg)
        self.revocation_errors = Counter("imgproxy_revocations_load_errors",
                                         "Failed loads of the polled revocation object, by kind (the "
                                         "last good list stays in force).", ["kind"], registry=reg)
        self.revocations_age_now: Callable[[], float | None] | None = None  # None: not polled
        self._versions: dict[Gauge, str] = {}  # the version each info gauge shows as 1
        self.snapshot: Callable[[], Snapshot] = Snapshot
        self._seen = Snapshot()

    def observe_request(self, route: str, status: int, delivery: str, sent: int, seconds: float,
                        transform_seconds: float | None) -> None:
        self.requests.labels(route, str(status), delivery).inc()
        self.request_seconds.labels(route).observe(seconds)
        if sent:
            self.response_bytes.labels(delivery).inc(sent)
        if transform_seconds is not None:
            self.transform_seconds.observe(transform_seconds)
        self.refresh()

    def observe_rate_limited(self, budget: str, dimension: str) -> None:
        self.rate_limited.labels(budget, dimension).inc()

    def observe_auth_failure(self, reason: str) -> None:
        self.auth_failures.labels(reason).inc()

    def observe_jwks_fetch(self, provider: str, result: str) -> None:
        self.jwks_fetches.labels(provider, result).inc()

    def observe_webhook_decision(self, outcome: str) -> None:
        self.webhook_decisions.labels(outcome).inc()

    def observe_webhook_call(self, result: str, seconds: float) -> None:
        self.webhook_calls.labels(result).observe(seconds)

    def observe_pool_exhausted(self, source: str, pool: str) -> None:
        self.pool_exhausted.labels(source, pool).inc()

    def observe_connection_closed(self, reason: str) -> None:
        self.connections_closed.labels(reason).inc()

    def observe_s3(self, operation: str, seconds: float, error_code: str | None) -> None:
        """``S3Source``'s observer: every call's duration, and its error (public code) if any."""
        self.s3_seconds.labels(operation).observe(seconds)
        if error_code is not None:
            self.s3_errors.labels(operation, error_code).inc()

    def observe_s3_interrupted(self) -> None:
        """An object body that failed mid-stream (after its GET had succeeded)."""
        self.s3_errors.labels("get", "interrupted").inc()

    def observe_store(self, operation: str, result: str) -> None:
        """``VariantStore``'s observer: one call's outcome."""
        self.store.labels(operation, result).inc()

    def observe_in_force(self, config_version: str, revocations: RevocationList | None) -> None:
        """The config and revocation list this process now serves with (None: the polled list
        never loaded: no list is in force)."""
        for gauge, version in ((self.config_info, config_version),
                               (self.revocations_info, revocations.version if revocations else None)):
            previous = self._versions.pop(gauge, None)
            if previous is not None and previous != version:
                gauge.labels(previous).set(0)
            if version is not None:
                gauge.labels(version).set(1)
                self._versions[gauge] = version
        self.revocations_entries.set(revocations.size if revocations else 0)

    def observe_reload(self, result: str) -> None:
        self.reloads.labels(result).inc()

    def observe_revocations_failed(self, kind: str) -> None:
        self.revocation_errors.labels(kind).inc()

    def refresh(self) -> None:
        """Carry the pool's and the caches' own totals over (only what changed since last time)."""
        if self.revocations_age_now is not None:
            age = self.revocations_age_now()
            self.revocations_age.set(math.inf if age is None else age)
        now, seen = self.snapshot(), self._seen
        self.pool_queued.set(now.queued)
        self.pool_loaded.set(now.loaded)
        self.cache_bytes.set(now.cache_bytes)
        for counter, delta in ((self.pool_rejections, now.rejected - seen.rejected),
                               (self.renders, now.renders - seen.renders),
                               (self.cache_hits, now.cache_hits - seen.cache_hits),
                               (self.cache_misses, now.cache_misses - seen.cache_misses),
                               (self.coalesced, now.coalesced - seen.coalesced)):
            if delta > 0:
                counter.inc(delta)
        self._seen = now

    def exposition(self) -> bytes:
        """The text a scrape answers: this app's registry, or every worker's files summed."""
        self.refresh()
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def reload_counter(registry: CollectorRegistry) -> Counter:
    """Reloads (SIGHUP) by result: ok, partial (keys that need a restart were left as they
    were), invalid (refused: the old config stays). Counted once, by the process that validates
    (the supervisor, or the one process with ``--workers 1``)."""
    return Counter("imgproxy_reloads", "Config reloads (SIGHUP) by result: ok, partial (some keys "
                   "need a restart), invalid (refused; the running config stays).", ["result"],
                   registry=registry)


def enable_multiprocess_metrics(directory: str) -> None:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` for the workers, also if prometheus-client is imported.

    prometheus-client chooses file-backed values when ``prometheus_client.values`` is imported;
    ``cli`` imports it (through ``app``) before any config is read, so choose again now, before
    any metric exists and before the fork.
    """
    os.environ[MULTIPROC_ENV] = directory
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def forget_metrics_of(pid: int) -> None:
    """A dead worker's live gauges (queue depth, cache bytes) must stop counting in scrapes."""
    if os.environ.get(MULTIPROC_ENV):
        prometheus_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
