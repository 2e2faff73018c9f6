"""limits.buckets: which buckets a request is charged to, in checking order."""

from __future__ import annotations

import pytest

from imgproxy.auth.principal import Principal
from imgproxy.config import BudgetLimits, Rate
from imgproxy.limits.buckets import Budget, Dimension, bucket_id, buckets_for, client_id

RATE = Rate(10, 60.0)
EVERY = BudgetLimits(per_signature=RATE, per_key=RATE, per_token=RATE, per_sub=RATE, per_client=RATE)
SIGNED = Principal("signature", "k1", sub="viewer-7", sig="s" * 43)
TOKEN = Principal("token", "ops")


@pytest.mark.parametrize(("principal", "client", "limits", "expected"), [
    (SIGNED, "203.0.113.9", EVERY, ["signature", "key", "sub", "client"]),
    (Principal("signature", "k1", sig="s" * 43), "203.0.113.9", EVERY, ["signature", "key", "client"]),
    (TOKEN, "203.0.113.9", EVERY, ["token", "client"]),
    (TOKEN, "-", EVERY, ["token"]),  # no address known (a Unix socket): not limited by address
    # A JWT's user: per_sub (its provider's name is no one principal, so per_token does not apply).
    (Principal("jwt", "corp", sub="ada"), "203.0.113.9", EVERY, ["sub", "client"]),
    (Principal("forward", "ada", sub="ada"), "203.0.113.9", EVERY, ["sub", "client"]),
    (SIGNED, "203.0.113.9", BudgetLimits(per_client=RATE), ["client"]),
    (SIGNED, "203.0.113.9", BudgetLimits(), []),
])
def test_a_request_is_charged_to_each_limited_dimension_that_applies(
        principal: Principal, client: str, limits: BudgetLimits, expected: list[str]) -> None:
    buckets = buckets_for(Budget.ORIGINALS, limits, principal, client)
    assert [b.dimension.value for b in buckets] == expected


def test_buckets_are_named_by_a_digest_never_by_the_signature() -> None:
    [bucket] = buckets_for(Budget.ORIGINALS, BudgetLimits(per_signature=RATE), SIGNED, "-")
    assert len(bucket.id) == 16
    assert b"s" * 16 not in bucket.id
    assert "s" * 43 not in repr(bucket)


def test_each_budget_and_dimension_has_its_own_buckets() -> None:
    ids = {bucket_id(budget, dimension, "same")
           for budget in Budget for dimension in Dimension}
    assert len(ids) == len(Budget) * len(Dimension)


@pytest.mark.parametrize(("address", "expected"), [
    ("203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),  # the same host's /64
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("::ffff:203.0.113.9", "203.0.113.9"),  # an IPv4 client on a dual-stack socket
    ("unix-socket-peer", "unix-socket-peer"),
])
def test_a_client_is_an_ipv4_address_or_an_ipv6_slash_64(address: str, expected: str) -> None:
    assert client_id(address) == expected


def test_addresses_of_one_ipv6_slash_64_share_a_bucket() -> None:
    limits = BudgetLimits(per_client=RATE)
    [one], [two], [other] = (buckets_for(Budget.ORIGINALS, limits, TOKEN, address)
                             for address in ("2001:db8::1", "2001:db8::2:3", "2001:db8:0:1::1"))
    assert one.id == two.id != other.id
