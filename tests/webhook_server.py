"""A fake ``[auth.webhook]`` for the tests: a real aiohttp server on a random loopback port, in the
test's event loop, that records every call (its input and headers) and answers as told: by its
``decide`` rule, slowly (``delay``), with another status, or with a body of the test's choosing.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from nginx_site import Authority


def allow_all_but_denied(fields: Mapping[str, Any], key: str) -> bool:
    """The default rule: every key but those holding ``denied``."""
    return "denied" not in key


class FakeWebhook:
    """``url``; ``calls``: each call's ``input``; ``headers``: each call's request headers."""

    def __init__(self) -> None:
        self.decide: Callable[[Mapping[str, Any], str], bool] = allow_all_but_denied
        self.delay = 0.0
        self.status = 200
        self.body: bytes | None = None  # answered as is (garbage), instead of the rule's result
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0
        self.scheme = "http"
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/v1/data/imgproxy/allow"

    def url_with_credentials(self, user: str, password: str) -> str:
        return f"http://{user}:{password}@127.0.0.1:{self.port}/v1/data/imgproxy/allow"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        question = (await request.json())["input"]
        self.calls.append(question)
        self.headers.append(dict(request.headers))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.body is not None:
            return web.Response(status=self.status, body=self.body, content_type="application/json")
        if "keys" in question:
            result: object = [self.decide(question, key) for key in question["keys"]]
        else:
            result = self.decide(question, question["key"])
        return web.Response(status=self.status, text=json.dumps({"result": result}),
                            content_type="application/json")

    async def start(self, tls: Authority | None = None) -> FakeWebhook:
        """On http, or https with ``tls``'s certificate for 127.0.0.1."""
        app = web.Application()
        app.router.add_post("/v1/data/imgproxy/allow", self.handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        context = None
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            self.scheme = "https"
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
