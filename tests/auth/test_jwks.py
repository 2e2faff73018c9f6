"""auth/jwks.py: which keys of a JWKS are kept, which one a token gets, and when to fetch again."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import ECKey, RSAKey

from imgproxy.auth.jwks import MIN_FETCH_INTERVAL, BadKeySet, Keyring, fresh_for, parse_jwks

RSA = RSAKey.generate_key(2048, parameters={"kid": "r"})
EC = ECKey.generate_key("P-256", parameters={"kid": "e"})
EC384 = ECKey.generate_key("P-384", parameters={"kid": "e384"})


def jwks(*entries: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(entries)}).encode()


def small_rsa() -> dict[str, Any]:
    weak = rsa.generate_private_key(65537, 1024)  # noqa: S505 (the weak key it must refuse)
    numbers = weak.public_key().public_numbers()
    return {"kty": "RSA", "kid": "small", "e": "AQAB",
            "n": base64.urlsafe_b64encode(numbers.n.to_bytes(128, "big")).rstrip(b"=").decode()}


def public(key: RSAKey | ECKey, **extra: Any) -> dict[str, Any]:
    return {**key.as_dict(private=False), **extra}


def test_public_rsa_and_ec_signing_keys_are_kept_in_order() -> None:
    keys = parse_jwks(jwks(public(RSA), public(EC)))
    assert [k.kid for k in keys.keys] == ["r", "e"]


@pytest.mark.parametrize("entry", [
    {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},  # a shared secret is never a verification key
    public(RSA, use="enc"),
    RSA.as_dict(private=True),  # private material in a JWKS: a mistake, not used
    small_rsa(),
    public(RSA, kid=7),
    {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
])
def test_unusable_keys_are_left_out(entry: dict[str, Any]) -> None:
    with pytest.raises(BadKeySet):
        parse_jwks(jwks(entry))
    assert [k.kid for k in parse_jwks(jwks(entry, public(EC))).keys] == ["e"]


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"keys": {}}', b'{"keys": []}'])
def test_a_body_without_keys_is_bad(body: bytes) -> None:
    with pytest.raises(BadKeySet):
        parse_jwks(body)


@pytest.mark.parametrize(("kid", "alg", "found"), [
    ("r", "RS256", "r"), ("r", "PS256", "r"), ("e", "ES256", "e"), ("e384", "ES384", "e384"),
    ("r", "ES256", None),  # an RSA key is never used for EC (nor, below, EC for RSA)
    ("e", "RS256", None), ("e", "ES384", None),  # the curve must match the algorithm
    ("nobody", "RS256", None),
    (None, "RS256", "r"),  # no kid: the one key that suits RS256
    (None, "ES256", "e"),
])
def test_find(kid: str | None, alg: str, found: str | None) -> None:
    keys = parse_jwks(jwks(public(RSA), public(EC), public(EC384)))
    key = keys.find(kid, alg)
    assert (key.kid if key is not None else None) == found


def test_without_a_kid_two_suitable_keys_are_a_guess_and_refused() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "r2"})
    assert parse_jwks(jwks(public(RSA), public(other))).find(None, "RS256") is None


def test_a_keys_own_alg_binds_it() -> None:
    keys = parse_jwks(jwks(public(RSA, alg="RS256")))
    assert keys.find("r", "RS256") is not None
    assert keys.find("r", "PS256") is None


@pytest.mark.parametrize(("header", "seconds"), [
    (None, 600.0), ("public, max-age=3600", 3600.0), ("max-age=5", 60.0), ("max-age=999999999", 86400.0),
    ("no-store", 600.0), ('max-age="120"', 120.0), ("s-maxage=10", 600.0),
])
def test_fresh_for(header: str | None, seconds: float) -> None:
    assert fresh_for(header) == seconds


def test_a_keyring_fetches_when_empty_stale_or_missing_the_kid_at_most_once_per_interval() -> None:
    ring = Keyring()
    assert ring.should_fetch("r", 1000.0)
    ring.started(1000.0)
    assert not ring.should_fetch("r", 1000.0 + MIN_FETCH_INTERVAL - 1)  # a failed first fetch waits too
    ring.loaded(parse_jwks(jwks(public(RSA))), 600.0, 1000.0)
    assert not ring.should_fetch("r", 1000.0 + MIN_FETCH_INTERVAL)  # known kid, fresh
    assert not ring.should_fetch("other", 1000.0 + MIN_FETCH_INTERVAL - 1)  # unknown, but too soon
    assert ring.should_fetch("other", 1000.0 + MIN_FETCH_INTERVAL)
    assert not ring.should_fetch(None, 1000.0 + 599)
    assert ring.should_fetch(None, 1000.0 + 600)  # stale
