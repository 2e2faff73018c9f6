"""auth/tokens.py and config.Scope: reading a bearer header, finding the token, checking its scopes."""

from __future__ import annotations

import hashlib

import pytest

from imgproxy.auth.tokens import MAX_TOKEN_CHARS, Token, check_scope, find_token, load_tokens, parse_bearer
from imgproxy.config import ConfigError, Scope, Secret, TokenConfig
from imgproxy.errors import InvalidToken, OutOfScope

OPS_TOKEN = "ops-bearer-token-0123456789abcdef0123456789"
HR_TOKEN = "hr-bearer-token-0123456789abcdef01234567890"


def make_token(name: str, secret: str, *scopes: str) -> Token:
    config = TokenConfig(name, Secret(secret), tuple(Scope.parse(s, "test") for s in scopes))
    return load_tokens([config])[0]


TOKENS = (
    make_token("ops", OPS_TOKEN, "*"),
    make_token("hr", HR_TOKEN, "photos:employees/*"),
)


# --- parse_bearer -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc123", "abc123"),
        ("bearer abc123", "abc123"),
        ("BEARER abc123", "abc123"),
        ("bEaReR abc123", "abc123"),
        ("Bearer   abc123", "abc123"),
        ("Bearer abc123  ", "abc123"),
        ("Bearer a-b.c_d~e+f/g", "a-b.c_d~e+f/g"),
        ("Bearer YWJj==", "YWJj=="),
        (f"Bearer {OPS_TOKEN}", OPS_TOKEN),
    ],
)
def test_bearer_header_yields_the_token(header: str, token: str) -> None:
    assert parse_bearer(header) == token


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearerabc123",
        "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
        "Token abc123",
        "abc123",
        " Bearer abc123",
        "Bearer abc 123",
        "Bearer abc,123",
        "Bearer abc\"123",
        "Bearer =abc",
        "Bearer ab=c",
        "Bearer tökén",
        "Bearer\tabc123",
        "Bearer " + "a" * MAX_TOKEN_CHARS,
    ],
)
def test_malformed_bearer_header_is_an_invalid_token(header: str) -> None:
    with pytest.raises(InvalidToken, match="malformed"):
        parse_bearer(header)


def test_invalid_token_error_carries_a_bearer_challenge() -> None:
    with pytest.raises(InvalidToken) as caught:
        parse_bearer("Basic abc")
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer ")


# --- find_token -------------------------------------------------------------------------------

@pytest.mark.parametrize(("presented", "name"), [(OPS_TOKEN, "ops"), (HR_TOKEN, "hr")])
def test_configured_token_is_found_by_its_value(presented: str, name: str) -> None:
    assert find_token(presented, TOKENS).name == name


@pytest.mark.parametrize(
    "presented",
    ["unknown-token-0123456789abcdef0123456789", OPS_TOKEN[:-1], OPS_TOKEN + "x", OPS_TOKEN.upper(), ""],
)
def test_unknown_token_is_an_invalid_token(presented: str) -> None:
    with pytest.raises(InvalidToken, match="unknown bearer token"):
        find_token(presented, TOKENS)


def test_no_configured_tokens_means_every_token_is_invalid() -> None:
    with pytest.raises(InvalidToken):
        find_token(OPS_TOKEN, ())


def test_token_is_kept_only_as_its_sha256_digest() -> None:
    assert TOKENS[0].digest == hashlib.sha256(OPS_TOKEN.encode()).digest()


def test_token_repr_hides_the_digest() -> None:
    token = TOKENS[0]
    text = repr(token)
    assert token.digest.hex() not in text
    assert repr(token.digest) not in text
    assert OPS_TOKEN not in text


def test_token_repr_names_the_token() -> None:
    assert "'ops'" in repr(TOKENS[0])


# --- Scope.parse ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("photos:employees/*", Scope("photos", "employees/", is_prefix=True)),
        ("photos:employees/ada.jpg", Scope("photos", "employees/ada.jpg", is_prefix=False)),
        ("photos:*", Scope("photos", "", is_prefix=True)),
        ("photos", Scope("photos", "", is_prefix=True)),
        ("*", Scope("*", "", is_prefix=True)),
        ("*:avatars/*", Scope("*", "avatars/", is_prefix=True)),
        ("photos:a:b*", Scope("photos", "a:b", is_prefix=True)),
        ("photos:Zoë Smith+1.jpg", Scope("photos", "Zoë Smith+1.jpg", is_prefix=False)),
    ],
)
def test_scope_text_parses(text: str, expected: Scope) -> None:
    assert Scope.parse(text, "auth.tokens.t.scopes") == expected


@pytest.mark.parametrize(
    "text",
    ["photos:a*b", "photos:**", "photos:*/x", "bad source:x", "", ":x", "pho/tos:x", "photos!:x", "*x:y"],
)
def test_malformed_scope_is_a_config_error_naming_its_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^auth\.tokens\.t\.scopes: "):
        Scope.parse(text, "auth.tokens.t.scopes")


# --- Scope.allows -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("scope", "source", "key", "allowed"),
    [
        ("photos:employees/*", "photos", "employees/ada.jpg", True),
        ("photos:employees/*", "photos", "employees/sub/dir/ada.jpg", True),
        ("photos:employees/*", "photos", "employees/", True),
        ("photos:employees/*", "photos", "employees", False),
        ("photos:employees/*", "photos", "customers/ada.jpg", False),
        ("photos:employees/*", "photos", "Employees/ada.jpg", False),
        ("photos:employees/*", "photos", "x/employees/ada.jpg", False),
        ("photos:employees/*", "archive", "employees/ada.jpg", False),
        ("photos:employees/ada.jpg", "photos", "employees/ada.jpg", True),
        ("photos:employees/ada.jpg", "photos", "employees/ada.jpg.bak", False),
        ("photos:employees/ada.jpg", "photos", "employees/ada.jp", False),
        ("photos:employees/ada.jpg", "archive", "employees/ada.jpg", False),
        ("*", "photos", "anything/at/all.jpg", True),
        ("*", "archive", "x", True),
        ("*:avatars/*", "archive", "avatars/a.png", True),
        ("*:avatars/*", "archive", "other/a.png", False),
        ("photos", "photos", "anything.jpg", True),
        ("photos", "photos2", "anything.jpg", False),
        ("photos", "archive", "anything.jpg", False),
        ("photos:*", "photos", "x", True),
    ],
)
def test_scope_allows_exactly_its_source_and_keys(scope: str, source: str, key: str, allowed: bool) -> None:
    assert Scope.parse(scope, "test").allows(source, key) is allowed


@pytest.mark.parametrize(
    ("source", "key", "allowed"),
    [("photos", "a/x.jpg", True), ("archive", "b.jpg", True), ("photos", "b.jpg", False)],
)
def test_token_allows_what_any_of_its_scopes_allows(source: str, key: str, allowed: bool) -> None:
    token = make_token("two", OPS_TOKEN, "photos:a/*", "archive:b.jpg")
    assert token.allows(source, key) is allowed


def test_check_scope_accepts_a_key_inside_the_scope() -> None:
    check_scope(TOKENS[1], "photos", "employees/ada.jpg")


def test_check_scope_rejects_a_key_outside_the_scope() -> None:
    with pytest.raises(OutOfScope):
        check_scope(TOKENS[1], "photos", "payroll/2024.pdf")
