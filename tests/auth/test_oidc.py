"""auth/oidc.py and principal.identify_bearer: the claim checks at their boundaries, which values
are JWTs, and that a static token is always looked up first."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from imgproxy.auth.jwks import JwkSet
from imgproxy.auth.oidc import check_claims, is_jwt, peek, verify_jwt
from imgproxy.auth.principal import AuthPolicy, Principal, identify_bearer
from imgproxy.auth.tokens import Token, load_tokens
from imgproxy.config import Secret, TokenConfig
from imgproxy.config.oidc import OidcConfig, ScopeRule, ScopeTemplate
from imgproxy.errors import InvalidJwt, InvalidToken, KeysUnavailable

NOW = 1_900_000_000.0
ISSUER = "https://idp.example/realms/corp"
PROVIDER = OidcConfig(name="corp", issuer=ISSUER, audience="imgproxy", clock_skew=60.0,
                      rules=(ScopeRule(scopes=(ScopeTemplate.parse("photos:users/{sub}/*", "t"),)),))
KEY = ECKey.generate_key("P-256", parameters={"kid": "e1"})
PUBLIC = JwkSet((ECKey.import_key(KEY.as_dict(private=False)),))


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "aud": "imgproxy", "sub": "ada", "exp": NOW + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(("overrides", "now", "reason"), [
    ({}, NOW, None),
    ({"exp": NOW - 60}, NOW, None),  # within clock_skew
    ({"exp": NOW - 61}, NOW, "expired"),
    ({"nbf": NOW + 60}, NOW, None),
    ({"nbf": NOW + 61}, NOW, "not_yet_valid"),
    ({"iat": NOW + 61}, NOW, "not_yet_valid"),
    ({"iat": NOW - 86400}, NOW, None),
    ({"exp": None}, NOW, "claims"),
    ({"exp": "1900000300"}, NOW, "claims"),
    ({"exp": True}, NOW, "claims"),
    ({"iss": ISSUER + "/"}, NOW, "issuer"),  # exactly, not up to a slash
    ({"aud": ["other", "imgproxy"]}, NOW, None),
    ({"aud": ["other"]}, NOW, "audience"),
    ({"aud": None}, NOW, "audience"),
    ({"sub": None}, NOW, "claims"),
    ({"sub": ""}, NOW, "claims"),
    ({"sub": "a\nb"}, NOW, "claims"),
    ({"sub": 7}, NOW, "claims"),
])
def test_check_claims(overrides: dict[str, Any], now: float, reason: str | None) -> None:
    if reason is None:
        assert check_claims(claims(**overrides), PROVIDER, now) == claims(**overrides)["sub"]
        return
    with pytest.raises(InvalidJwt) as caught:
        check_claims(claims(**overrides), PROVIDER, now)
    assert caught.value.reason == reason
    assert caught.value.public_message == "The bearer token is not valid."


def sign(payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    return jwt.encode({"alg": "ES256", "kid": "e1", **(header or {})}, payload, KEY)


@pytest.mark.parametrize(("value", "expected"), [
    (sign(claims()), True),
    ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", True),  # alg=none is a JWT (and refused later)
    ("x" * 40, False), ("a.b.c", False), ("eyJ.eyJ", False), ("eyJa.b.c.d", False), ("eyJ+.a.b", False),
])
def test_is_jwt(value: str, expected: bool) -> None:
    assert is_jwt(value) is expected


def test_peek_reads_issuer_kid_and_alg_without_verifying() -> None:
    seen = peek(sign(claims(), {"jku": "https://attacker.example/keys"}))
    assert seen is not None
    assert (seen.issuer, seen.kid, seen.alg) == (ISSUER, "e1", "ES256")
    assert peek("eyJub3Q.eyJqc29u.x") is None


def test_verify_jwt_gives_the_provider_sub_and_claim_scopes() -> None:
    identity = verify_jwt(sign(claims()), {"corp": PROVIDER}, lambda p: PUBLIC, NOW)
    assert (identity.provider, identity.sub) == ("corp", "ada")
    assert [(s.source, s.key) for s in identity.scopes] == [("photos", "users/ada/")]


def test_verify_jwt_before_any_keys_is_keys_unavailable() -> None:
    with pytest.raises(KeysUnavailable):
        verify_jwt(sign(claims()), {"corp": PROVIDER}, lambda p: None, NOW)


def test_an_alg_header_lying_about_the_key_is_refused() -> None:
    _, body, sig = sign(claims()).split(".")
    lying = json.dumps({"alg": "RS256", "kid": "e1"}).encode()
    forged = base64.urlsafe_b64encode(lying).rstrip(b"=").decode() + f".{body}.{sig}"
    with pytest.raises(InvalidJwt) as caught:
        verify_jwt(forged, {"corp": PROVIDER}, lambda p: PUBLIC, NOW)
    assert caught.value.reason == "unknown_kid"  # no RSA key e1: an EC key never verifies RS256


def policy(tokens: tuple[Token, ...] = ()) -> AuthPolicy:
    return AuthPolicy(keys={}, tokens=tokens, max_ttl=3600, clock_skew=60, oidc={"corp": PROVIDER})


def test_a_static_token_is_matched_first_even_when_it_looks_like_a_jwt() -> None:
    value = sign(claims())
    static = load_tokens([TokenConfig("legacy", Secret(value), ())])
    found = identify_bearer(f"Bearer {value}", policy(static), lambda p: PUBLIC, NOW)
    assert found == Principal("token", "legacy")


def test_a_jwt_principal_carries_its_provider_sub_and_scopes() -> None:
    found = identify_bearer(f"Bearer {sign(claims())}", policy(), lambda p: PUBLIC, NOW)
    assert found == Principal("jwt", "corp", sub="ada")
    assert found.allows("photos", "users/ada/me.jpg")
    assert not found.allows("photos", "users/bob/me.jpg")
    assert found.sign_scopes == found.scopes


def test_an_opaque_value_with_providers_configured_is_invalid_token() -> None:
    with pytest.raises(InvalidToken) as caught:
        identify_bearer("Bearer " + "x" * 40, policy(), lambda p: PUBLIC, NOW)
    assert not isinstance(caught.value, InvalidJwt)
