"""``WebhookClient``: the calls to ``[auth.webhook]``, its decision cache and its coalescing, for the
app's lifetime (the handlers' checks are in ``web/permission.py``).

Each call is one POST with a time limit covering connecting and reading (``auth.webhook.timeout``)
and a size limit on the answer; it follows no redirect and reads no proxy settings from the
environment. Identical questions in flight share one call (a task of its own: a requester that
goes away does not cancel it for the others). Only clear answers are cached, and only for the
config in force: a reload that changes ``[auth.webhook]`` drops every decision, and a request
still served by the old config neither reads nor fills the cache. A failure is logged as a
WARNING at most once a minute per kind, naming the kind only: the URL and the headers are secrets.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final

import aiohttp
from aiohttp import hdrs

from imgproxy.auth.webhook import (
    MAX_ANSWER_BYTES,
    Decision,
    DecisionCache,
    Failure,
    FailureLog,
    Question,
    Verdict,
    WebhookFailure,
    batch_groups,
    parse_answer,
    request_body,
)
from imgproxy.config.webhook import WebhookConfig

log = logging.getLogger("imgproxy.webhook")
MAX_CONNECTIONS: Final = 64  # calls in flight at once; more wait (within their own time limit)


class WebhookClient:
    """The one HTTP client that asks ``[auth.webhook]``, and the decisions it keeps."""

    def __init__(self, session: aiohttp.ClientSession, clock: Callable[[], float]) -> None:
        self.session = session
        self.clock = clock
        self.failures = FailureLog()
        self._config: WebhookConfig | None = None  # the config the cache's decisions came from
        self.cache = DecisionCache(0, 1)
        self._pending: dict[Question, asyncio.Future[Verdict]] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._tls: dict[str | None, ssl.SSLContext] = {}
        self.on_decision: Callable[[str], None] = lambda outcome: None
        self.on_call: Callable[[str, float], None] = lambda result, seconds: None

    def adopt(self, config: WebhookConfig) -> None:
        """``config`` is now the one in force: decisions of any other are dropped."""
        if config is not self._config and config != self._config:
            self.cache = DecisionCache(config.cache_ttl, config.cache_entries)
            self._pending = {}
        self._config = config

    async def decide(self, config: WebhookConfig, questions: Sequence[Question], *,
                     current: bool) -> list[Decision]:
        """One decision per question, in order. ``current``: ``config`` is the one in force (else
        the cache and the calls in flight are neither read nor shared)."""
        if current:
            self.adopt(config)
        now = self.clock()
        found: dict[Question, Decision] = {}
        waiting: dict[Question, asyncio.Future[Verdict]] = {}
        asking: list[Question] = []
        loop = asyncio.get_running_loop()
        for question in dict.fromkeys(questions):
            held = self.cache.get(question, now) if current else None
            if held is not None:
                found[question] = Decision(Verdict.ALLOW if held else Verdict.DENY, cached=True)
            elif current and question in self._pending:
                waiting[question] = self._pending[question]
            else:
                waiting[question] = future = loop.create_future()
                asking.append(question)
                if current:
                    self._pending[question] = future
        for group in batch_groups(asking, config.batch):
            futures = [waiting[q] for q in group]
            task = asyncio.create_task(self.call(config, group, futures, current))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        for question, future in waiting.items():
            found[question] = Decision(await asyncio.shield(future))
        decisions = [found[q] for q in questions]
        for decision in decisions:
            self.on_decision(decision.outcome)
        return decisions

    async def call(self, config: WebhookConfig, group: list[Question],
                   futures: list[asyncio.Future[Verdict]], current: bool) -> None:
        """Ask about ``group`` (one question, or a batch), and settle its futures whatever happens."""
        verdicts = [Verdict.ERROR] * len(group)
        started = time.perf_counter()
        result = "ok"
        try:
            answers = await self.post(config, group)
            verdicts = [Verdict.ALLOW if allowed else Verdict.DENY for allowed in answers]
        except WebhookFailure as exc:
            result = exc.failure.value
            if self.failures.should_report(exc.failure, self.clock()):
                log.warning("auth.webhook: a call failed (%s); answering on_error=%s (logged at most "
                            "once a minute per kind of failure)", exc.failure, config.on_error)
        except Exception:  # ours, not the webhook's: logged (no URL in our code's messages), never an allow
            result = "internal"
            log.exception("auth.webhook: a call failed unexpectedly; answering on_error=%s", config.on_error)
        finally:
            self.on_call(result, time.perf_counter() - started)
            now = self.clock()
            for question, future, verdict in zip(group, futures, verdicts, strict=True):
                if verdict is not Verdict.ERROR and current and config is self._config:
                    self.cache.put(question, verdict is Verdict.ALLOW, now)
                if self._pending.get(question) is future:
                    del self._pending[question]
                if not future.done():
                    future.set_result(verdict)

    async def post(self, config: WebhookConfig, group: list[Question]) -> tuple[bool, ...]:
        """The answer's booleans, or ``WebhookFailure``; within ``config.timeout`` in all."""
        body = request_body(group, config.batch)
        headers = {name: value.reveal() for name, value in config.headers.items()}
        headers[hdrs.CONTENT_TYPE] = "application/json"
        try:
            async with asyncio.timeout(config.timeout), self.session.post(
                    config.url.reveal(), data=body, headers=headers, allow_redirects=False,
                    ssl=self.tls(config.ca_bundle)) as response:
                answer = bytearray()
                async for chunk in response.content.iter_chunked(16 * 1024):
                    answer += chunk
                    if len(answer) > MAX_ANSWER_BYTES:
                        raise WebhookFailure(Failure.TOO_LARGE)
                return parse_answer(response.status, bytes(answer), len(group) if config.batch else None)
        except TimeoutError:
            raise WebhookFailure(Failure.TIMEOUT) from None
        except (aiohttp.ClientError, OSError, ValueError):  # never the exception's text: it names the URL
            raise WebhookFailure(Failure.CONNECT) from None

    def tls(self, ca_bundle: str | None) -> ssl.SSLContext | bool:
        if ca_bundle is None:
            return True
        context = self._tls.get(ca_bundle)
        if context is None:
            context = self._tls[ca_bundle] = ssl.create_default_context(cafile=ca_bundle)
        return context

    async def close(self) -> None:
        for task in list(self._calls):
            task.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)


@asynccontextmanager
async def open_webhook(clock: Callable[[], float]) -> AsyncIterator[WebhookClient]:
    """A ``WebhookClient`` with its HTTP client, for the app's lifetime."""
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, trust_env=False,
                                     timeout=aiohttp.ClientTimeout(total=None)) as session:
        client = WebhookClient(session, clock)
        try:
            yield client
        finally:
            await client.close()

