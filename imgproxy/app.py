"""``create_app(config)``: the aiohttp application that ``cli``, ``demo`` and the tests all run.

Long-lived resources (one S3 client per source) are ``cleanup_ctx`` entries: created at
start-up, closed at shutdown in reverse order, and only if their start-up succeeded.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

from aiohttp import web

from imgproxy import keys
from imgproxy.auth.principal import AuthPolicy
from imgproxy.auth.tokens import load_tokens
from imgproxy.cache import HotCounter, MetadataCache, VariantCache
from imgproxy.config import Config
from imgproxy.forwarded import parse_networks
from imgproxy.health import Readiness
from imgproxy.middleware import TRUSTED_PROXIES, observe, stamp_request_id
from imgproxy.routes import add_routes
from imgproxy.storage.s3 import open_source
from imgproxy.transform.pool import TransformPool
from imgproxy.transform.steps import supported_outputs
from imgproxy.variants import VariantService


async def s3_sources(app: web.Application) -> AsyncIterator[None]:
    """One aiobotocore client per source for the app's lifetime (never one per request)."""
    config = app[keys.CONFIG]
    async with AsyncExitStack() as stack:
        sources = {name: await stack.enter_async_context(open_source(src, app[keys.CLOCK]))
                   for name, src in config.sources.items()}
        app[keys.SOURCES] = sources
        app[keys.READINESS] = Readiness(sources, config.server.ready_cache_seconds, app[keys.CLOCK])
        yield


async def variant_service(app: web.Application) -> AsyncIterator[None]:
    """The image worker pool (started before serving, stopped after) and the variant caches."""
    config = app[keys.CONFIG]
    pool = TransformPool(config.transform.workers, config.transform.queue_size,
                         config.transform.timeout, config.transform.max_source_pixels)
    try:
        if config.transform.enabled and config.transform.prestart_workers:
            await pool.start()
        app[keys.VARIANTS] = VariantService(
            config.transform, pool, VariantCache(config.cache.variant_bytes), app[keys.METADATA],
            supported_outputs())
        yield
    finally:
        pool.close()


def auth_policy(config: Config) -> AuthPolicy:
    return AuthPolicy(
        keys={kid: secret.reveal().encode("utf-8") for kid, secret in config.auth.keys.items()},
        tokens=load_tokens(config.auth.tokens),
        max_ttl=config.auth.max_ttl,
        clock_skew=config.auth.clock_skew,
    )


def create_app(config: Config, *, clock: Callable[[], float] = time.time) -> web.Application:
    app = web.Application(middlewares=[observe], handler_args={"max_field_size": 8190})
    app[keys.CONFIG] = config
    app[keys.AUTH] = auth_policy(config)
    app[keys.CLOCK] = clock
    app[TRUSTED_PROXIES] = parse_networks(config.server.trusted_proxies)
    app[keys.METADATA] = MetadataCache(config.cache.metadata_entries, config.cache.metadata_ttl)
    deliveries = [source.delivery for source in config.sources.values()]
    app[keys.HOT] = HotCounter(max(d.hot_entries for d in deliveries),
                               max(d.hot_window for d in deliveries))
    app.cleanup_ctx.append(s3_sources)
    app.cleanup_ctx.append(variant_service)
    app.on_response_prepare.append(stamp_request_id)
    add_routes(app)
    return app
