"""The authorization webhook's questions and answers: whom it is asked about, what it is sent,
which answers decide, and the decisions kept.

Pure (time is passed in; ``web/webhook.py`` makes the calls). The webhook is asked about JWT,
cookie-grant and forward-auth principals only (a signed URL or a static token was authorized by
whoever holds the key), after their scopes allowed the path. It is sent an OPA-style
``{"input": {...}}`` and allows only on exactly ``{"result": true}``; ``{"result": false}``
denies; anything else is a failure, which never allows (``on_error``: 403 or 503). Only clear
answers are kept, for ``cache_ttl``, per ``Question`` (kind, issuer, sub, groups, source, key,
method); a HEAD is asked as the GET it previews.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from imgproxy.config.webhook import OnError
from imgproxy.errors import ProxyError, WebhookDenied, WebhookUnavailable

ASKED_KINDS: Final = frozenset({"jwt", "grant", "forward"})
MAX_ANSWER_BYTES: Final = 64 * 1024
MAX_BATCH_KEYS: Final = 500  # keys in one batch call; more are split into several calls
FAILURE_LOG_INTERVAL: Final = 60.0


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    ERROR = "error"  # no clear answer: on_error decides (never allow)


class Failure(StrEnum):
    """Why a call gave no decision (the log's and the metric's word; never the URL)."""

    TIMEOUT = "timeout"  # no whole answer within auth.webhook.timeout, connecting included
    CONNECT = "connect"  # refused, reset, DNS, TLS
    STATUS = "status"  # not a 2xx answer
    TOO_LARGE = "too_large"  # an answer over MAX_ANSWER_BYTES
    NOT_JSON = "not_json"
    BAD_RESULT = "bad_result"  # JSON, but not {"result": true|false} (or a list of them, batched)


class WebhookFailure(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.value)
        self.failure = failure


@dataclass(frozen=True, slots=True)
class Question:
    """May this user read this object? Also the decision cache's key."""

    kind: str
    issuer: str | None
    sub: str | None
    groups: tuple[str, ...]
    source: str
    key: str
    method: str = "GET"

    def fields(self) -> dict[str, object]:
        return {"sub": self.sub, "groups": list(self.groups), "source": self.source, "key": self.key,
                "method": self.method, "kind": self.kind, "issuer": self.issuer}


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    cached: bool = False  # from the decision cache (no call)

    @property
    def outcome(self) -> str:
        """The access log's ``webhook=`` and the metric's outcome: allow, deny, error, cached."""
        return "cached" if self.cached else self.verdict.value


class Asked(Protocol):
    """Anything with the fields a question is made of (``auth.principal.Principal``)."""

    @property
    def kind(self) -> str: ...
    @property
    def sub(self) -> str | None: ...
    @property
    def groups(self) -> tuple[str, ...]: ...
    @property
    def issuer(self) -> str | None: ...


def should_ask(kind: str) -> bool:
    """Is a principal of this kind subject to the webhook?"""
    return kind in ASKED_KINDS


def question_for(principal: Asked, source: str, key: str) -> Question:
    return Question(principal.kind, principal.issuer, principal.sub, principal.groups, source, key)


def request_body(questions: Sequence[Question], batch: bool) -> bytes:
    """``{"input": {...}}`` for one question; batched, one ``keys`` list for questions that differ
    only in their key (``batch_groups``)."""
    first = questions[0]
    fields = first.fields()
    if batch:
        del fields["key"]
        fields["keys"] = [q.key for q in questions]
    return json.dumps({"input": fields}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def batch_groups(questions: Iterable[Question], batch: bool) -> list[list[Question]]:
    """The calls to make: one per question, or batched, one per (who, source, method), at most
    ``MAX_BATCH_KEYS`` keys each."""
    if not batch:
        return [[q] for q in questions]
    groups: dict[tuple[object, ...], list[list[Question]]] = {}
    for q in questions:
        chunks = groups.setdefault((q.kind, q.issuer, q.sub, q.groups, q.source, q.method), [[]])
        if len(chunks[-1]) >= MAX_BATCH_KEYS:
            chunks.append([])
        chunks[-1].append(q)
    return [chunk for chunks in groups.values() for chunk in chunks]


def parse_answer(status: int, body: bytes, count: int | None) -> tuple[bool, ...]:
    """The booleans an answer decides: ``{"result": true|false}`` (``count`` None), or batched
    ``{"result": [true, false, ...]}`` with exactly ``count`` booleans in the keys' order.
    Anything else raises ``WebhookFailure``."""
    if not 200 <= status < 300:
        raise WebhookFailure(Failure.STATUS)
    if len(body) > MAX_ANSWER_BYTES:
        raise WebhookFailure(Failure.TOO_LARGE)
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise WebhookFailure(Failure.NOT_JSON) from None
    result = answer.get("result") if isinstance(answer, dict) else None
    results: list[object] = [result] if count is None else result if isinstance(result, list) else []
    if len(results) != (count or 1) or not all(isinstance(value, bool) for value in results):
        raise WebhookFailure(Failure.BAD_RESULT)
    return tuple(value is True for value in results)


def refusal(verdict: Verdict, on_error: OnError) -> ProxyError | None:
    """The error a verdict answers with (None: allowed)."""
    if verdict is Verdict.ALLOW:
        return None
    if verdict is Verdict.DENY:
        return WebhookDenied("auth.webhook answered false")
    if on_error is OnError.UNAVAILABLE:
        return WebhookUnavailable("auth.webhook failed (on_error = unavailable)")
    return WebhookDenied("auth.webhook failed (on_error = deny)")


def worst(decisions: Iterable[Decision]) -> str | None:
    """One outcome for a request that asked several questions (``POST /sign``): error, deny,
    allow, cached, in that order of precedence; None if none was asked."""
    outcomes = {d.outcome for d in decisions}
    return next((o for o in ("error", "deny", "allow", "cached") if o in outcomes), None)


class DecisionCache:
    """Clear decisions for ``ttl`` seconds, at most ``entries`` of them (the oldest go first).
    Loop thread only."""

    def __init__(self, ttl: float, entries: int) -> None:
        self.ttl = ttl
        self.entries = entries
        self._held: dict[Question, tuple[bool, float]] = {}  # insertion order = expiry order

    def __len__(self) -> int:
        return len(self._held)

    def get(self, question: Question, now: float) -> bool | None:
        held = self._held.get(question)
        if held is None:
            return None
        if now >= held[1]:
            del self._held[question]
            return None
        return held[0]

    def put(self, question: Question, allowed: bool, now: float) -> None:
        if self.ttl <= 0:
            return
        self._held.pop(question, None)
        while len(self._held) >= self.entries:
            del self._held[next(iter(self._held))]
        self._held[question] = (allowed, now + self.ttl)


class FailureLog:
    """When each kind of failure last got a WARNING: at most one per ``interval`` per kind."""

    def __init__(self, interval: float = FAILURE_LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[Failure, float] = {}

    def should_report(self, failure: Failure, now: float) -> bool:
        last = self._last.get(failure)
        if last is not None and now - last < self.interval:
            return False
        self._last[failure] = now
        return True
