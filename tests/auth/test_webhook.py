"""The webhook's pure parts: whom it asks about, what it sends, which answers decide, the kept
decisions and the failure log's rate."""

from __future__ import annotations

import dataclasses
import json

import pytest

from imgproxy.auth.principal import Principal
from imgproxy.auth.webhook import (
    MAX_ANSWER_BYTES,
    MAX_BATCH_KEYS,
    Decision,
    DecisionCache,
    Failure,
    FailureLog,
    Question,
    Verdict,
    WebhookFailure,
    batch_groups,
    parse_answer,
    question_for,
    refusal,
    request_body,
    should_ask,
    worst,
)
from imgproxy.config.webhook import OnError
from imgproxy.errors import WebhookDenied, WebhookUnavailable

ADA = Question("jwt", "https://id.example.com/", "ada", ("hr",), "photos", "employees/ada.jpg")


@pytest.mark.parametrize(("kind", "asked"), [
    ("jwt", True), ("grant", True), ("forward", True), ("signature", False), ("token", False),
])
def test_only_user_principals_are_asked_about(kind: str, asked: bool) -> None:
    assert should_ask(kind) is asked


def test_a_question_is_the_principals_identity_and_the_path() -> None:
    principal = Principal("jwt", "corp", sub="ada", groups=("hr",), issuer="https://id.example.com/")
    assert question_for(principal, "photos", "employees/ada.jpg") == ADA


def test_the_body_is_opa_input() -> None:
    assert json.loads(request_body([ADA], batch=False)) == {"input": {
        "sub": "ada", "groups": ["hr"], "source": "photos", "key": "employees/ada.jpg", "method": "GET",
        "kind": "jwt", "issuer": "https://id.example.com/"}}


def test_a_batch_body_lists_the_keys_instead_of_one_key() -> None:
    other = dataclasses.replace(ADA, key="b.jpg")
    fields = json.loads(request_body([ADA, other], batch=True))["input"]
    assert fields["keys"] == ["employees/ada.jpg", "b.jpg"]
    assert "key" not in fields


def test_batches_are_per_source_and_chunked() -> None:
    questions = [Question("jwt", None, "ada", (), "photos", f"k{i}") for i in range(MAX_BATCH_KEYS + 1)]
    questions.append(Question("jwt", None, "ada", (), "archive", "k0"))
    sizes = [len(group) for group in batch_groups(questions, batch=True)]
    assert sizes == [MAX_BATCH_KEYS, 1, 1]
    assert len(batch_groups(questions, batch=False)) == len(questions)


@pytest.mark.parametrize(("status", "body", "count", "expected"), [
    (200, b'{"result": true}', None, (True,)),
    (200, b'{"result": false}', None, (False,)),
    (204, b'{"result": true, "decision_id": "x"}', None, (True,)),
    (200, b'{"result": [true, false]}', 2, (True, False)),
    (200, b'{"result": "true"}', None, Failure.BAD_RESULT),
    (200, b'{"result": 1}', None, Failure.BAD_RESULT),
    (200, b'{"result": 0}', None, Failure.BAD_RESULT),
    (200, b'{}', None, Failure.BAD_RESULT),
    (200, b'true', None, Failure.BAD_RESULT),
    (200, b'{"result": [true]}', None, Failure.BAD_RESULT),
    (200, b'{"result": true}', 1, Failure.BAD_RESULT),
    (200, b'{"result": [true]}', 2, Failure.BAD_RESULT),
    (200, b'{"result": [true, 1]}', 2, Failure.BAD_RESULT),
    (200, b'{"result": tru', None, Failure.NOT_JSON),
    (200, b"\xff", None, Failure.NOT_JSON),
    (200, b"[" * 100_000, None, Failure.TOO_LARGE),
    (200, b"[" * 10_000, None, Failure.NOT_JSON),
    (500, b'{"result": true}', None, Failure.STATUS),
    (301, b'{"result": true}', None, Failure.STATUS),
])
def test_only_booleans_decide(status: int, body: bytes, count: int | None,
                              expected: tuple[bool, ...] | Failure) -> None:
    if isinstance(expected, Failure):
        with pytest.raises(WebhookFailure) as caught:
            parse_answer(status, body, count)
        assert caught.value.failure is expected
    else:
        assert parse_answer(status, body, count) == expected


def test_an_answer_just_within_the_size_limit_is_read() -> None:
    body = b'{"result": true, "p": "' + b"a" * (MAX_ANSWER_BYTES - 25) + b'"}'
    assert len(body) == MAX_ANSWER_BYTES
    assert parse_answer(200, body, None) == (True,)


@pytest.mark.parametrize(("verdict", "on_error", "expected"), [
    (Verdict.ALLOW, OnError.DENY, None),
    (Verdict.ALLOW, OnError.UNAVAILABLE, None),
    (Verdict.DENY, OnError.UNAVAILABLE, WebhookDenied),
    (Verdict.ERROR, OnError.DENY, WebhookDenied),
    (Verdict.ERROR, OnError.UNAVAILABLE, WebhookUnavailable),
])
def test_what_each_verdict_answers(verdict: Verdict, on_error: OnError, expected: type | None) -> None:
    error = refusal(verdict, on_error)
    assert (None if error is None else type(error)) is expected


def test_a_batch_is_logged_as_its_worst_outcome() -> None:
    cached, allow = Decision(Verdict.ALLOW, cached=True), Decision(Verdict.ALLOW)
    assert worst([cached, allow]) == "allow"
    assert worst([cached, Decision(Verdict.DENY), Decision(Verdict.ERROR)]) == "error"
    assert worst([cached]) == "cached"
    assert worst([]) is None


def test_a_decision_is_kept_for_its_ttl_only() -> None:
    cache = DecisionCache(ttl=60, entries=10)
    cache.put(ADA, True, now=1000)
    assert cache.get(ADA, now=1059.9) is True
    assert cache.get(ADA, now=1060) is None
    assert len(cache) == 0


def test_the_cache_holds_at_most_its_entries_oldest_out_first() -> None:
    cache = DecisionCache(ttl=60, entries=2)
    questions = [Question("jwt", None, "ada", (), "photos", f"k{i}") for i in range(3)]
    for question in questions:
        cache.put(question, False, now=0)
    assert len(cache) == 2
    assert [cache.get(q, now=1) for q in questions] == [None, False, False]


def test_a_zero_ttl_keeps_nothing() -> None:
    cache = DecisionCache(ttl=0, entries=10)
    cache.put(ADA, True, now=0)
    assert cache.get(ADA, now=0) is None


def test_each_kind_of_failure_is_reported_once_a_minute() -> None:
    failures = FailureLog()
    assert failures.should_report(Failure.TIMEOUT, 0)
    assert not failures.should_report(Failure.TIMEOUT, 59)
    assert failures.should_report(Failure.STATUS, 59)
    assert failures.should_report(Failure.TIMEOUT, 60)
