"""auth/revocations.py and config/revocations.py: entries parsed alike from TOML and JSON, and
checked by lookups whose cost does not grow with the list."""

from __future__ import annotations

import time
from typing import Any

import pytest

from imgproxy.auth.revocations import RevocationList
from imgproxy.auth.signing import SignedUrl
from imgproxy.config import ConfigError, Scope
from imgproxy.config.revocations import parse_revocations
from imgproxy.errors import Revoked

SIG = "D03MHBwmafOnoZD_Dh37nPUR-vsbQfaZ0SFjDYjoFZI"
CUTOFF = 1_800_000_000


def url(kid: str = "bi", sub: str | None = None, sig: str = "x" * 43, iat: int | None = CUTOFF - 1,
        exp: int | None = None) -> SignedUrl:
    return SignedUrl(kid, exp, iat, sub, sig)


def built(*entries: dict[str, Any]) -> RevocationList:
    return RevocationList.build(parse_revocations(list(entries), "auth.revocations"))


def test_a_kid_revocation_bites_before_its_cutoff_only() -> None:
    revoked = built({"kid": "bi", "before": CUTOFF})
    with pytest.raises(Revoked):
        revoked.check("photos", "a.jpg", url(), CUTOFF - 1)
    revoked.check("photos", "a.jpg", url(), CUTOFF)
    revoked.check("photos", "a.jpg", url(kid="k1"), CUTOFF - 1)


def test_the_latest_cutoff_for_a_kid_wins() -> None:
    revoked = built({"kid": "bi", "before": CUTOFF}, {"kid": "bi", "before": CUTOFF - 100})
    with pytest.raises(Revoked):
        revoked.check("photos", "a.jpg", url(), CUTOFF - 50)


def test_a_sub_revocation_needs_the_sub() -> None:
    revoked = built({"sub": "bob", "before": "2027-02-01T00:00:00+00:00"})
    with pytest.raises(Revoked):
        revoked.check("photos", "a.jpg", url(sub="bob"), CUTOFF)
    revoked.check("photos", "a.jpg", url(sub="bobby"), CUTOFF)
    revoked.check("photos", "a.jpg", url(), CUTOFF)


@pytest.mark.parametrize(("scope", "key", "is_revoked"), [
    ("photos:employees/bob*", "employees/bob.jpg", True),
    ("photos:employees/bob*", "employees/bobby/x.jpg", True),
    ("photos:employees/bob*", "employees/bo.jpg", False),
    ("photos:employees/bob.jpg", "employees/bob.jpg", True),
    ("photos:employees/bob.jpg", "employees/bob.jpg2", False),
    ("*:secret/*", "secret/a", True),
    ("archive:employees/*", "employees/bob.jpg", False),
    ("photos", "anything", True),
])
def test_a_scope_revocation(scope: str, key: str, is_revoked: bool) -> None:
    revoked = built({"scope": scope})
    if is_revoked:
        with pytest.raises(Revoked):
            revoked.check("photos", key, url(), CUTOFF)
    else:
        revoked.check("photos", key, url(), CUTOFF)


def test_one_signature() -> None:
    revoked = built({"sig": SIG})
    with pytest.raises(Revoked):
        revoked.check("photos", "a.jpg", url(sig=SIG), CUTOFF)
    revoked.check("photos", "a.jpg", url(sig=SIG[:-1] + "J"), CUTOFF)


def test_issued_without_iat_is_the_earliest_possible_signing() -> None:
    assert url(iat=None, exp=CUTOFF + 3600).issued(3600, 60) == CUTOFF - 60
    assert url(iat=CUTOFF - 5, exp=CUTOFF + 3600).issued(3600, 60) == CUTOFF - 5


def test_the_version_names_the_content() -> None:
    one, same = built({"sig": SIG}), built({"sig": SIG})
    other = built({"sig": SIG}, {"kid": "bi", "before": CUTOFF})
    assert one.version == same.version != other.version
    assert RevocationList.build(()).version == "0" * 12
    assert SIG not in repr(one)
    assert (one.size, other.size) == (1, 2)


def test_checking_costs_the_same_with_100000_entries() -> None:
    """Not a timing target (bench/bench_revocations.py measures); a guard that the check is a
    lookup and not a scan: 100,000 scopes and signatures, a thousand checks well under a second."""
    entries = [{"scope": f"photos:people/{i}/*"} for i in range(50_000)]
    entries += [{"sig": f"{i:043d}"} for i in range(50_000)]
    revoked = built(*entries)
    started = time.perf_counter()
    for i in range(1000):
        revoked.check("photos", f"other/{i}/photo.jpg", url(), CUTOFF)
    assert time.perf_counter() - started < 0.5
    with pytest.raises(Revoked):
        revoked.check("photos", "people/49999/x.jpg", url(), CUTOFF)


@pytest.mark.parametrize(("entry", "message"), [
    ({"kid": "bi"}, "needs 'before'"),
    ({"sub": "bob"}, "needs 'before'"),
    ({"kid": "bi", "sub": "bob", "before": 1}, "exactly one of"),
    ({}, "exactly one of"),
    ({"scope": "photos:a*", "before": 1}, "only for kid and sub"),
    ({"sig": "short"}, "43-character"),
    ({"kid": "bad kid", "before": 1}, "key ids"),
    ({"kid": "bi", "before": "2026-12-01"}, "time zone"),
    ({"kid": "bi", "before": "yesterday"}, "RFC 3339"),
    ({"kid": "bi", "before": True}, "RFC 3339"),
    ({"scope": "photos:a*b"}, "only at the end"),
    ({"kid": "bi", "before": 1, "by": "me"}, "unknown key"),
    ("bi", "expected a table"),
])
def test_a_bad_entry_is_a_config_error_naming_it(entry: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_revocations([{"sig": SIG}, entry], "auth.revocations")
    assert "auth.revocations[1]" in str(caught.value)


def test_an_entry_may_carry_a_note() -> None:
    (entry,) = parse_revocations([{"scope": "photos:a/*", "note": "INC-42"}], "x")
    assert entry.scope == Scope("photos", "a/", True)
