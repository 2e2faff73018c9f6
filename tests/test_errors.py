"""errors.py: the error tree's public face: distinct codes, sane statuses, challenges on 401."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from imgproxy import errors
from imgproxy.errors import (
    InvalidJwt,
    InvalidToken,
    KeysUnavailable,
    LedgerFull,
    NotFound,
    NotReady,
    ObjectNotFound,
    Overloaded,
    ProxyError,
    RevocationsUnavailable,
    StorageBusy,
    Unauthorized,
    all_error_classes,
)

ALL = all_error_classes()
# Deliberately the same public answer: "no such key" must look like any other 404 to a client.
# And "retry shortly" is one answer whichever resource is exhausted (metrics say which), and
# "not ready" whichever part is not (sources, a revocation list or an IdP's keys never loaded).
# A JWT that fails a check is any invalid token to its client (the log and metrics say which).
SHARED = {(404, "not_found"): {NotFound, ObjectNotFound},
          (503, "overloaded"): {Overloaded, StorageBusy, LedgerFull},
          (503, "not_ready"): {NotReady, RevocationsUnavailable, KeysUnavailable},
          (401, "invalid_token"): {InvalidToken, InvalidJwt}}


def test_error_tree_starts_at_proxy_error() -> None:
    assert ALL[0] is ProxyError


def test_every_error_class_in_the_module_is_in_the_tree() -> None:
    defined = {obj for obj in vars(errors).values()
               if isinstance(obj, type) and issubclass(obj, ProxyError)}
    assert defined == set(ALL)


def test_status_and_code_pairs_are_distinct_except_the_intended_ones() -> None:
    counts = Counter((cls.status, cls.code) for cls in ALL)
    shared = {pair: {cls for cls in ALL if (cls.status, cls.code) == pair}
              for pair, count in counts.items() if count > 1}
    assert shared == SHARED


def test_codes_are_distinct_except_the_intended_ones() -> None:
    counts = Counter(cls.code for cls in ALL)
    assert {code for code, count in counts.items() if count > 1} == {"not_found", "overloaded", "not_ready",
                                                                      "invalid_token"}


@pytest.mark.parametrize("cls", [Overloaded, StorageBusy, LedgerFull])
def test_an_overload_always_says_when_to_retry(cls: type[Overloaded]) -> None:
    assert cls("full").headers["Retry-After"] == "1"
    assert cls("full", headers={"Retry-After": "5"}).headers["Retry-After"] == "5"


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_status_is_a_client_or_server_error(cls: type[ProxyError]) -> None:
    assert 400 <= cls.status <= 599


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_refinement_keeps_its_parents_status(cls: type[ProxyError]) -> None:
    parent = cls.__mro__[1]
    assert parent in (ProxyError, Exception) or cls.status == getattr(parent, "status", None)


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_code_is_snake_case(cls: type[ProxyError]) -> None:
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code)


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_public_message_is_a_sentence(cls: type[ProxyError]) -> None:
    assert re.fullmatch(r"[A-Z].*\.", cls.public_message)


@pytest.mark.parametrize("cls", ALL, ids=lambda cls: cls.__name__)
def test_docstring_tree_lists_the_class_with_its_status_and_code(cls: type[ProxyError]) -> None:
    assert f"{cls.__name__} ({cls.status} {cls.code})" in (errors.__doc__ or "")


@pytest.mark.parametrize("cls", [c for c in ALL if issubclass(c, Unauthorized)], ids=lambda c: c.__name__)
def test_unauthorized_errors_carry_a_bearer_challenge(cls: type[Unauthorized]) -> None:
    assert cls("log only").headers["WWW-Authenticate"].startswith("Bearer realm=")


@pytest.mark.parametrize("cls", [c for c in ALL if not issubclass(c, Unauthorized)], ids=lambda c: c.__name__)
def test_other_errors_carry_no_challenge(cls: type[ProxyError]) -> None:
    assert "WWW-Authenticate" not in cls("log only").headers


def test_explicit_challenge_is_not_overwritten() -> None:
    exc = Unauthorized(headers={"WWW-Authenticate": 'Bearer realm="other"'})
    assert exc.headers["WWW-Authenticate"] == 'Bearer realm="other"'


def test_log_detail_does_not_become_the_public_message() -> None:
    detail = "bucket acme-private key secret/payroll.pdf missing"
    exc = ObjectNotFound(detail)
    assert (str(exc), exc.public_message) == (detail, "No such image.")


def test_public_message_can_be_overridden_per_instance() -> None:
    exc = NotFound(public_message="Something specific.")
    assert (exc.public_message, NotFound.public_message) == ("Something specific.", "No such resource.")


def test_instances_do_not_share_their_headers() -> None:
    first, second = Unauthorized(), Unauthorized()
    first.headers["X-Extra"] = "1"
    assert "X-Extra" not in second.headers
