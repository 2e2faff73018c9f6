"""auth.grants and the ledgers: sealing, every way an unsealing fails, scope subsets, and
single-use links (this process's ledger, and the host's shared by two connections)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgproxy.auth.grants import (
    COOKIE,
    LINK,
    MAX_SEALED,
    Grant,
    covered,
    grant_link,
    parse_scopes,
    seal,
    unseal,
)
from imgproxy.auth.ledger import LocalLedger
from imgproxy.config.model import Scope
from imgproxy.errors import InvalidGrant, LedgerFull
from imgproxy.hostcache.ledger import HostLedger
from imgproxy.hostcache.table import HostTable

NOW = 1_900_000_000
KEY = b"grant-test-key-0123456789abcdef0123456789"
KEYS = {"k1": KEY, "k2": b"second-grant-key-0123456789abcdef012345"}


def scopes(*texts: str) -> tuple[Scope, ...]:
    return parse_scopes(texts)


def grant(**changes: object) -> Grant:
    fields: dict[str, object] = {"kid": "k1", "sub": "ada", "scopes": scopes("photos:employees/*"),
                                 "iat": NOW, "exp": NOW + 3600, "groups": ("hr",), "via": "jwt:corp"}
    fields.update(changes)
    return Grant(**fields)  # type: ignore[arg-type]


def reason(value: str, purpose: bytes = COOKIE, now: float = NOW, max_life: float = 86400) -> str:
    with pytest.raises(InvalidGrant) as caught:
        unseal(value, KEYS, purpose, now, 60, max_life)
    return caught.value.reason


def test_a_sealed_grant_unseals_to_itself() -> None:
    sealed = seal(grant(), KEY, COOKIE)
    assert sealed.startswith("g1.k1.")
    assert unseal(sealed, KEYS, COOKIE, NOW + 10, 60, 86400) == grant()


def test_every_tampering_is_refused_before_the_payload_is_read() -> None:
    version, kid, payload, mac = seal(grant(), KEY, COOKIE).split(".")
    assert reason(f"{version}.k2.{payload}.{mac}") == "signature"
    assert reason(f"{version}.nope.{payload}.{mac}") == "unknown_kid"
    assert reason(f"{version}.{kid}.{payload}x.{mac}") == "signature"
    assert reason(f"{version}.{kid}.{payload}.{mac[:-2]}") == "signature"
    assert reason(f"g0.{kid}.{payload}.{mac}") == "malformed"
    assert reason(f"{version}.{kid}.{payload}") == "malformed"
    assert reason(f"{version}.{kid}.{payload}.{mac}=") == "malformed"
    assert reason("x" * (MAX_SEALED + 1)) == "too_long"


def test_a_cookie_is_not_a_link_and_a_link_not_a_cookie() -> None:
    assert reason(seal(grant(), KEY, LINK), COOKIE) == "signature"
    assert reason(seal(grant(), KEY, COOKIE), LINK) == "signature"


def test_time_bounds() -> None:
    sealed = seal(grant(), KEY, COOKIE)
    assert reason(sealed, now=NOW + 3600) == "expired"
    assert reason(sealed, now=NOW - 61) == "lifetime"  # issued in the future, past the skew
    assert reason(sealed, max_life=3599) == "lifetime"


def test_a_grant_that_would_not_fit_a_cookie_is_refused_when_sealed() -> None:
    many = tuple(Scope("photos", f"{'x' * 200}{n}/", True) for n in range(30))
    with pytest.raises(ValueError, match="cookie"):
        seal(grant(scopes=many), KEY, COOKIE)
    with pytest.raises(ValueError, match="sub"):
        seal(grant(sub="a\nb"), KEY, COOKIE)
    with pytest.raises(ValueError, match="scopes"):
        seal(grant(scopes=()), KEY, COOKIE)


@pytest.mark.parametrize(("asked", "within", "expected"), [
    ("photos:employees/ada.jpg", "photos:employees/*", True),
    ("photos:employees/eng/*", "photos:employees/*", True),
    ("photos:employees/*", "photos:employees/*", True),
    ("photos:*", "photos:employees/*", False),
    ("photos:employees*", "photos:employees/*", False),
    ("other:employees/*", "photos:employees/*", False),
    ("photos:x.jpg", "photos:x.jpg", True),
    ("photos:x.jpg*", "photos:x.jpg", False),
    ("photos:anything/*", "*", True),
])
def test_a_grant_asks_only_for_a_subset(asked: str, within: str, expected: bool) -> None:
    assert covered(scopes(asked)[0], scopes(within)) is expected


def test_a_link_carries_a_nonce_and_its_return() -> None:
    url = grant_link(KEY.decode(), "k1", "ada", ["photos:employees/*"], base_url="https://img.example.com/",
                     ttl=60, return_to="https://dash.example.com/x", now=NOW)
    parts = urllib.parse.urlsplit(url)
    assert (parts.netloc, parts.path) == ("img.example.com", "/session")
    query = dict(urllib.parse.parse_qsl(parts.query))
    link = unseal(query["grant"], KEYS, LINK, NOW, 60, 60)
    assert link.nonce
    assert link.exp == NOW + 60
    assert link.via == "link"
    assert query["return"] == "https://dash.example.com/x"
    other = grant_link(KEY, "k1", "ada", ["photos:employees/*"], base_url="", now=NOW)
    assert dict(urllib.parse.parse_qsl(other.split("?")[1]))["grant"] != query["grant"]


def test_the_local_ledger_says_yes_once_and_forgets_only_expired_links() -> None:
    ledger = LocalLedger(entries=2)
    assert ledger.first_use("a", NOW + 10, NOW)
    assert not ledger.first_use("a", NOW + 10, NOW + 5)
    assert ledger.first_use("b", NOW + 100, NOW)
    with pytest.raises(LedgerFull):
        ledger.first_use("c", NOW + 10, NOW + 5)
    assert ledger.first_use("c", NOW + 20, NOW + 11)  # "a" expired: room again
    assert len(ledger) == 2
    assert not ledger.first_use("b", NOW + 100, NOW + 50)


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[tuple[HostLedger, HostLedger]]:
    """Two connections to one table: two workers."""
    first, second = HostTable(tmp_path / "t.sqlite"), HostTable(tmp_path / "t.sqlite")
    yield HostLedger(first, 3), HostLedger(second, 3)
    first.close()
    second.close()


def test_the_host_ledger_is_one_for_both_workers(ledgers: tuple[HostLedger, HostLedger]) -> None:
    first, second = ledgers
    assert first.first_use("n1", NOW + 10, NOW)
    assert not second.first_use("n1", NOW + 10, NOW + 1)
    assert not first.first_use("n1", NOW + 10, NOW + 2)
    assert second.first_use("n2", NOW + 10, NOW)
    assert first.first_use("n3", NOW + 30, NOW)
    with pytest.raises(LedgerFull):
        second.first_use("n4", NOW + 30, NOW + 1)
    assert second.first_use("n4", NOW + 40, NOW + 11)  # n1 and n2 expired
    assert len(first) == 2


def test_a_failing_host_table_refuses_links(tmp_path: Path) -> None:
    table = HostTable(tmp_path / "t.sqlite")
    ledger = HostLedger(table, 10)
    table.close()
    with pytest.raises(LedgerFull):
        ledger.first_use("n", NOW + 10, NOW)
