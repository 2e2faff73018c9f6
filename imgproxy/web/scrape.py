"""The metrics address: a tiny app with ``GET /metrics`` and the detailed ``/readyz``, served
beside the public one (never on its port) for the application's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST

from imgproxy.startup import StartupError, os_reason, socket_url
from imgproxy.web.appkeys import METRICS, METRICS_URL
from imgproxy.web.metrics import Metrics

log = logging.getLogger("imgproxy.metrics")


# The operators' readiness report: (status, JSON body); served on the metrics address only.
ReadinessReport = Callable[[], Awaitable[tuple[int, dict[str, object]]]]


def scrape_app(metrics: Metrics, readiness: ReadinessReport | None = None) -> web.Application:
    """The tiny app behind the metrics address: ``GET /metrics`` and the detailed ``/readyz``."""

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(),
                            headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST, hdrs.CACHE_CONTROL: "no-store"})

    async def readyz(request: web.Request) -> web.Response:
        assert readiness is not None
        status, body = await readiness()
        return web.json_response(body, status=status, headers={hdrs.CACHE_CONTROL: "no-store"})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    if readiness is not None:
        app.router.add_get("/readyz", readyz)
    return app


def listen_url(site: web.TCPSite, host: str) -> str:
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return f"{socket_url(sock)}/metrics"
    return f"http://{host}/metrics"


def metrics_endpoint(host: str, port: int, readiness: ReadinessReport | None = None
                     ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` serving ``app[METRICS]`` (and ``readiness``) on ``host:port``, never
    the public port."""

    async def serve(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]
        runner = web.AppRunner(scrape_app(metrics, readiness), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            # Several workers share the port; any of them answers with the summed view.
            site = web.TCPSite(runner, host, port, reuse_address=True,
                               reuse_port=metrics.multiproc_dir is not None)
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {host}:{port} for metrics: {os_reason(exc)}") from exc
            app[METRICS_URL] = listen_url(site, host)
            log.info("metrics on %s", app[METRICS_URL])
            yield
        finally:
            await runner.cleanup()

    return serve
