"""``create_app(config)``: the aiohttp application that ``cli``, ``demo`` and the tests all run.

Long-lived resources (one S3 client per source, the caches) are ``cleanup_ctx`` entries: created
at start-up, closed at shutdown in reverse order, and only if their start-up succeeded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

from aiohttp import web

from imgproxy.auth.forward import UntrustedPeers
from imgproxy.auth.ledger import DEFAULT_ENTRIES as LEDGER_ENTRIES
from imgproxy.auth.ledger import LocalLedger
from imgproxy.background import running
from imgproxy.cache import HotCounter, LocalFlight, MetadataCache, VariantCache
from imgproxy.config import Config
from imgproxy.config.digest import config_version
from imgproxy.hostcache.directory import open_dir
from imgproxy.hostcache.flight import HostFlight
from imgproxy.hostcache.ledger import HostLedger
from imgproxy.hostcache.table import HostHotCounter, HostMetadata, HostTable
from imgproxy.hostcache.variants import HostVariantCache
from imgproxy.limits.limiter import build_limiter
from imgproxy.memory import heap_trimmer
from imgproxy.protocol.jsonbody import MAX_BODIES, BodySlots
from imgproxy.protocol.sendwatch import SendLimits, SendWatchdog
from imgproxy.storage.revocation_object import open_revocation_object
from imgproxy.storage.s3 import open_source
from imgproxy.storage.variant_store import open_store
from imgproxy.transform.pool import TransformPool
from imgproxy.transform.variants import VariantService
from imgproxy.web import appkeys
from imgproxy.web.health import Readiness
from imgproxy.web.jwks import open_jwks
from imgproxy.web.live import Live
from imgproxy.web.metrics import Metrics, Snapshot, multiprocess_dir
from imgproxy.web.middleware import observe, stamp_facts
from imgproxy.web.polling import PolledRevocations
from imgproxy.web.routes import add_routes
from imgproxy.web.scrape import metrics_endpoint
from imgproxy.web.webhook import open_webhook


async def s3_sources(app: web.Application) -> AsyncIterator[None]:
    """One aiobotocore client per source for the app's lifetime (never one per request)."""
    config = app[appkeys.CONFIG]
    async with AsyncExitStack() as stack:
        sources = {name: await stack.enter_async_context(open_source(src, app[appkeys.CLOCK]))
                   for name, src in config.sources.items()}
        for source in sources.values():
            source.observe = app[appkeys.METRICS].observe_s3
            source.observe_exhaustion(app[appkeys.METRICS].observe_pool_exhausted)
        app[appkeys.SOURCES] = sources
        app[appkeys.LIVE].attach(sources)

        def revocations() -> dict[str, object] | None:
            polled = app.get(appkeys.POLLED)
            return None if polled is None else polled.detail()

        app[appkeys.READINESS] = Readiness(sources, config.server.ready_cache_seconds, app[appkeys.CLOCK],
                                           revocations)
        yield


async def revocations_poller(app: web.Application) -> AsyncIterator[None]:
    """The polled revocation list (``auth.revocations_url``): its client and its poll loop."""
    auth = app[appkeys.CONFIG].auth
    assert auth.revocations_url is not None
    assert auth.revocations_s3 is not None
    key = auth.revocations_url.removeprefix(f"s3://{auth.revocations_s3.bucket}/")
    async with open_revocation_object(auth.revocations_s3, key) as source:
        polled = app[appkeys.POLLED] = PolledRevocations(auth.revocations_url, source, app[appkeys.LIVE],
                                                         app[appkeys.METRICS])
        app[appkeys.METRICS].revocations_age_now = polled.age
        async with running(polled.run(), "revocations-poller"):
            yield


async def jwks_cache(app: web.Application) -> AsyncIterator[None]:
    """The ``[auth.oidc]`` providers' keys and their HTTP client (also without providers: a
    reload may add one); the keys held survive reloads."""
    async with open_jwks(app[appkeys.CLOCK]) as cache:
        cache.on_fetch = app[appkeys.METRICS].observe_jwks_fetch
        app[appkeys.JWKS] = cache
        yield


async def webhook_client(app: web.Application) -> AsyncIterator[None]:
    """The ``[auth.webhook]`` client and its decisions (also without a webhook: a reload may add one)."""
    async with open_webhook(app[appkeys.CLOCK]) as client:
        client.on_decision = app[appkeys.METRICS].observe_webhook_decision
        client.on_call = app[appkeys.METRICS].observe_webhook_call
        app[appkeys.WEBHOOK] = client
        yield


async def caches(app: web.Application) -> AsyncIterator[None]:
    """The variant and metadata caches, the hot counters, the render lock, the rate limits'
    buckets and the opened grant links: the host's, shared with the other serving workers through
    ``cache.dir``, or without one this process's own."""
    config = app[appkeys.CONFIG]
    deliveries = [source.delivery for source in config.sources.values()]
    hot_entries = max(d.hot_entries for d in deliveries)
    hot_window = max(d.hot_window for d in deliveries)
    if config.cache.dir is None:
        app[appkeys.METADATA] = MetadataCache(config.cache.metadata_entries, config.cache.metadata_ttl)
        app[appkeys.HOT] = HotCounter(hot_entries, hot_window)
        app[appkeys.VARIANT_CACHE] = VariantCache(config.cache.variant_bytes)
        app[appkeys.FLIGHT] = LocalFlight()
        app[appkeys.LIMITER] = build_limiter(config, None)
        app[appkeys.LEDGER] = LocalLedger()
        yield
        return
    where = open_dir(config.cache.dir)  # checked again: 0700, this user's (the sweep ran before)
    table = HostTable(where.table)
    try:
        app[appkeys.METADATA] = HostMetadata(table, config.cache.metadata_entries, config.cache.metadata_ttl)
        app[appkeys.HOT] = HostHotCounter(table, hot_entries, hot_window)
        app[appkeys.VARIANT_CACHE] = HostVariantCache(where, table, config.cache.variant_bytes)
        # Without a variant cache a waiter would find nothing after waiting: no lock then.
        app[appkeys.FLIGHT] = (HostFlight(where.locks, config.transform.timeout)
                               if config.cache.variant_bytes else LocalFlight())
        app[appkeys.LIMITER] = build_limiter(config, table)
        app[appkeys.LEDGER] = HostLedger(table, LEDGER_ENTRIES)
        yield
    finally:
        table.close()


async def variant_store(app: web.Application) -> AsyncIterator[None]:
    """The shared variant store's client (only with ``[cache.store]``); pending writes drain at exit."""
    cache = app[appkeys.CONFIG].cache
    assert cache.store is not None
    # A stored variant is read into memory like a source is: the same bound applies.
    max_bytes = app[appkeys.CONFIG].transform.max_source_bytes
    async with open_store(cache.store, cache.store_pending_writes, max_bytes) as store:
        store.observe = app[appkeys.METRICS].observe_store
        app[appkeys.STORE] = store
        yield


async def variant_service(app: web.Application) -> AsyncIterator[None]:
    """The image worker pool (started before serving, stopped after) and the variant caches."""
    config = app[appkeys.CONFIG]
    pool = TransformPool(config.transform.workers, config.transform.queue_size,
                         config.transform.timeout, config.transform.max_source_pixels)
    try:
        if config.transform.enabled and config.transform.prestart_workers:
            await pool.start()
        service = app[appkeys.VARIANTS] = VariantService(
            pool, app[appkeys.VARIANT_CACHE], app[appkeys.METADATA], app.get(appkeys.STORE),
            app[appkeys.FLIGHT])
        app[appkeys.METRICS].snapshot = lambda: Snapshot(
            queued=pool.queued, loaded=pool.loaded, rejected=pool.rejected, renders=pool.completed,
            cache_hits=service.variants.hits,
            cache_misses=service.variants.misses, cache_bytes=service.variants.current_bytes,
            coalesced=service.coalescer.coalesced)
        yield
    finally:
        pool.close()


async def stop_watchdog(app: web.Application) -> None:
    app[appkeys.SEND_WATCHDOG].close()


def create_app(config: Config, *, clock: Callable[[], float] = time.time,
               version: str | None = None) -> web.Application:
    """``version``: the config's ``config_version`` as loaded (a supervisor's worker gets a config
    adjusted for it, which would digest differently); computed here if not given."""
    # The HTTP parser's limits are the connection's (connections.GuardedRunner), not the app's.
    app = web.Application(middlewares=[observe], client_max_size=config.auth.sign_max_bytes)
    app[appkeys.CONFIG] = config
    live = app[appkeys.LIVE] = Live(config, version or config_version(config))
    app[appkeys.CLOCK] = clock
    app[appkeys.LOG_FORMAT] = config.log.format
    metrics = app[appkeys.METRICS] = Metrics(multiprocess_dir())
    metrics.observe_in_force(live.current.version, live.current.auth.revocations)
    app[appkeys.BODY_SLOTS] = BodySlots(MAX_BODIES)
    app[appkeys.UNTRUSTED_PEERS] = UntrustedPeers()
    limits = SendLimits(config.server.send_timeout, config.server.min_send_rate)
    app[appkeys.SEND_WATCHDOG] = SendWatchdog(limits, on_cut=app[appkeys.METRICS].observe_connection_closed)
    app.cleanup_ctx.append(heap_trimmer)
    app.cleanup_ctx.append(caches)
    app.cleanup_ctx.append(s3_sources)
    app.cleanup_ctx.append(jwks_cache)
    app.cleanup_ctx.append(webhook_client)
    if config.auth.revocations_url is not None:
        app.cleanup_ctx.append(revocations_poller)
    if config.cache.store is not None:
        app.cleanup_ctx.append(variant_store)
    app.cleanup_ctx.append(variant_service)
    if config.metrics.enabled:
        async def readiness() -> tuple[int, dict[str, object]]:
            report = await app[appkeys.READINESS].report()
            return (200 if report.ready else 503), report.detail()

        app.cleanup_ctx.append(metrics_endpoint(config.metrics.host, config.metrics.port, readiness))
    app.on_response_prepare.append(stamp_facts)
    app.on_cleanup.append(stop_watchdog)
    add_routes(app)
    return app
