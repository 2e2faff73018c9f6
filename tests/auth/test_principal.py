"""auth/principal.py: authorize() turns a request's credentials into a Principal or a 401/403/400."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

import pytest

from imgproxy.auth.forward import ForwardPolicy
from imgproxy.auth.principal import AuthPolicy, Principal, authorize
from imgproxy.auth.signing import parse_query, sign_url
from imgproxy.auth.tokens import load_tokens
from imgproxy.config import Scope, Secret, TokenConfig
from imgproxy.config.forward import ForwardConfig
from imgproxy.config.oidc import ScopeRule, ScopeTemplate
from imgproxy.errors import (
    BadRequest,
    ExpiredSignature,
    InvalidSignature,
    InvalidToken,
    OutOfScope,
    Unauthorized,
)

SECRET = b"principal-signing-key-0123456789abcdef"
OPS_TOKEN = "ops-bearer-token-0123456789abcdef0123456789"
HR_TOKEN = "hr-bearer-token-0123456789abcdef01234567890"
NOW = 1_700_000_000.0

TOKENS = load_tokens([
    TokenConfig("ops", Secret(OPS_TOKEN), (Scope.parse("*", "t"),)),
    TokenConfig("hr", Secret(HR_TOKEN), (Scope.parse("photos:employees/*", "t"),)),
])
POLICY = AuthPolicy(keys={"k1": SECRET}, tokens=TOKENS, max_ttl=3600, clock_skew=60)
SIGNING_ONLY = AuthPolicy(keys={"k1": SECRET}, tokens=(), max_ttl=3600, clock_skew=60)
TOKENS_ONLY = AuthPolicy(keys={}, tokens=TOKENS, max_ttl=3600, clock_skew=60)


def signed_params(key: str = "employees/ada.jpg", exp: float = NOW + 600, **extra: str) -> dict[str, str]:
    url = sign_url("photos", key, secret=SECRET, exp=int(exp), kid="k1", params=extra)
    return parse_query(urlsplit(url).query, 32)


def auth(
    params: Mapping[str, str] | None = None,
    authorization: str | None = None,
    key: str = "employees/ada.jpg",
    policy: AuthPolicy = POLICY,
) -> Principal:
    return authorize("photos", key, params or {}, authorization, policy, now=NOW)


def test_signed_url_authorizes_as_its_key_id() -> None:
    params = signed_params()
    principal = auth(params)
    assert (principal.kind, principal.name, principal.sub) == ("signature", "k1", None)
    assert not principal.durable
    assert principal.sig == params["sig"]
    assert params["sig"] not in repr(principal)


def test_sig_parameter_takes_the_signature_path_even_with_a_bearer_header() -> None:
    params = {**signed_params(), "sig": "A" * 43}
    with pytest.raises(InvalidSignature):
        auth(params, authorization=f"Bearer {OPS_TOKEN}")


def test_expired_signed_url_is_forbidden() -> None:
    with pytest.raises(ExpiredSignature) as caught:
        auth(signed_params(exp=NOW - 10))
    assert caught.value.status == 403


def test_signed_url_on_a_tokens_only_server_is_unauthorized_with_a_challenge() -> None:
    with pytest.raises(Unauthorized) as caught:
        auth(signed_params(), policy=TOKENS_ONLY)
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer ")


def test_bearer_token_authorizes_as_its_name() -> None:
    assert auth(authorization=f"Bearer {OPS_TOKEN}") == Principal("token", "ops")


def test_bearer_scheme_is_case_insensitive_in_authorize() -> None:
    assert auth(authorization=f"bearer {HR_TOKEN}") == Principal("token", "hr")


def test_bearer_token_inside_its_scope_is_allowed() -> None:
    assert auth(authorization=f"Bearer {HR_TOKEN}", key="employees/x/y.png").name == "hr"


def test_bearer_token_outside_its_scope_is_forbidden() -> None:
    with pytest.raises(OutOfScope) as caught:
        auth(authorization=f"Bearer {HR_TOKEN}", key="payroll/2024.pdf")
    assert caught.value.status == 403


def test_unknown_bearer_token_is_unauthorized() -> None:
    with pytest.raises(InvalidToken) as caught:
        auth(authorization="Bearer not-a-configured-token-0123456789abcdef")
    assert caught.value.status == 401


def test_malformed_authorization_header_is_unauthorized() -> None:
    with pytest.raises(InvalidToken):
        auth(authorization="Basic YWxhZGRpbjpvcGVuc2VzYW1l")


def test_no_credentials_is_unauthorized() -> None:
    with pytest.raises(Unauthorized) as caught:
        auth()
    assert caught.value.status == 401


def test_no_credentials_error_carries_www_authenticate() -> None:
    with pytest.raises(Unauthorized) as caught:
        auth()
    assert caught.value.headers["WWW-Authenticate"] == 'Bearer realm="imgproxy"'


def test_ordinary_parameters_without_sig_or_header_are_unauthorized() -> None:
    with pytest.raises(Unauthorized):
        auth({"w": "300"})


@pytest.mark.parametrize(
    "params", [{"exp": "1767225600"}, {"kid": "k1"}, {"exp": "1", "kid": "k1", "w": "3"}]
)
def test_signing_parameters_with_a_bearer_token_are_a_bad_request(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest) as caught:
        auth(params, authorization=f"Bearer {OPS_TOKEN}")
    assert caught.value.status == 400


def test_ordinary_parameters_with_a_bearer_token_are_allowed() -> None:
    assert auth({"w": "300"}, authorization=f"Bearer {OPS_TOKEN}").name == "ops"


def test_bearer_header_on_a_signing_only_server_is_unauthorized() -> None:
    with pytest.raises(Unauthorized):
        auth(authorization=f"Bearer {OPS_TOKEN}", policy=SIGNING_ONLY)


def test_auth_policy_repr_hides_keys_and_token_digests() -> None:
    text = repr(POLICY)
    assert SECRET.decode() not in text
    assert all(token.digest.hex() not in text and repr(token.digest) not in text for token in TOKENS)


# --- forward-auth: after the signature and the bearer, never instead of a failing one -------------

FORWARD = AuthPolicy(keys={"k1": SECRET}, tokens=TOKENS, max_ttl=3600, clock_skew=60,
                     forward=ForwardPolicy.from_config(ForwardConfig(
                         trusted_proxies=("127.0.0.1/32",),
                         rules=(ScopeRule((ScopeTemplate.parse("photos:users/{sub}/*", "t"),)),))))
ADA = {"X-Forwarded-User": "ada"}


def forwarded(key: str, headers: Mapping[str, str] | None, authorization: str | None = None,
              params: Mapping[str, str] | None = None) -> Principal:
    return authorize("photos", key, params or {}, authorization, FORWARD, now=NOW, forwarded=headers)


def test_a_forwarded_user_is_a_forward_principal_in_its_scopes() -> None:
    principal = forwarded("users/ada/me.jpg", ADA)
    assert (principal.kind, principal.name, principal.sub) == ("forward", "ada", "ada")
    with pytest.raises(OutOfScope):
        forwarded("users/bob/me.jpg", ADA)


def test_headers_the_caller_did_not_believe_are_no_credentials() -> None:
    with pytest.raises(Unauthorized):
        forwarded("users/ada/me.jpg", None)
    with pytest.raises(Unauthorized):
        forwarded("users/ada/me.jpg", {"X-Forwarded-Groups": "staff"})  # no user: no identity


def test_a_bearer_decides_alone_when_forward_headers_come_too() -> None:
    with pytest.raises(InvalidToken):
        forwarded("users/ada/me.jpg", ADA, authorization="Bearer " + "n" * 40)
    assert forwarded("users/ada/me.jpg", ADA, authorization=f"Bearer {OPS_TOKEN}").kind == "token"


def test_a_signature_decides_alone_when_forward_headers_come_too() -> None:
    with pytest.raises(InvalidSignature):
        forwarded("users/ada/me.jpg", ADA, params={**signed_params("users/ada/me.jpg"), "sig": "A" * 43})


def test_a_forwarded_user_may_not_send_signing_parameters() -> None:
    with pytest.raises(BadRequest):
        forwarded("users/ada/me.jpg", ADA, params={"exp": "1"})
