"""auth/claims.py: claims -> scopes, and every way a claim value could widen a template."""

from __future__ import annotations

from typing import Any

import pytest

from imgproxy.auth.claims import claim_groups, claim_scopes, expand, segment_value
from imgproxy.config import Scope
from imgproxy.config.oidc import OidcConfig, ScopeRule, ScopeTemplate


def template(text: str) -> ScopeTemplate:
    return ScopeTemplate.parse(text, "test")


def provider(*rules: ScopeRule, scopes_claim: str | None = None, broad: bool = False) -> OidcConfig:
    return OidcConfig(name="corp", issuer="https://idp.example/", audience="imgproxy", rules=rules,
                      scopes_claim=scopes_claim, allow_broad_scopes=broad)


@pytest.mark.parametrize(("value", "expected"), [
    ("acme", "acme"), ("ada@example.com", "ada@example.com"), (42, "42"), ("a.b", "a.b"),
    ("a/b", None), ("../x", None), ("..", None), (".", None), ("x..y", None), ("*", None), ("a*", None),
    ("", None), (None, None), ("a\nb", None), ("a\x00", None), ("a\x7f", None), ("a\\b", None),
    ("{sub}", None), (True, None), (["acme"], None), ({"a": 1}, None), ("x" * 257, None),
])
def test_segment_value(value: object, expected: str | None) -> None:
    assert segment_value(value) == expected


@pytest.mark.parametrize(("text", "claims", "expected"), [
    ("photos:tenants/{tenant_id}/*", {"tenant_id": "acme"}, Scope("photos", "tenants/acme/", True)),
    ("photos:users/{sub}/*", {"sub": "ada"}, Scope("photos", "users/ada/", True)),
    ("photos:{org}/users/{sub}/*", {"org": "o1", "sub": "ada"}, Scope("photos", "o1/users/ada/", True)),
    ("photos:{org}/users/{sub}/*", {"org": "o1", "sub": "../ada"}, None),
    ("photos:{org}/users/{sub}/*", {"sub": "ada"}, None),
    ("photos:users/{sub}/avatar.jpg", {"sub": "ada"}, Scope("photos", "users/ada/avatar.jpg", False)),
    ("photos:tenants/{tenant_id}/*", {"tenant_id": "a/b"}, None),
    ("photos:tenants/{tenant_id}/*", {"tenant_id": "*"}, None),
    ("photos:tenants/{tenant_id}/*", {"tenant_id": ""}, None),
    ("photos:tenants/{tenant_id}/*", {}, None),
    ("photos:*", {}, Scope("photos", "", True)),  # a whole source only when written literally
])
def test_expand(text: str, claims: dict[str, Any], expected: Scope | None) -> None:
    assert expand(template(text), claims) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("photos:users/{sub}", "followed by '/'"),
    ("photos:users/{sub}*", "followed by '/'"),
    ("photos:{sub}x/*", "followed by '/'"),
    ("{src}:users/*", "only in the key part"),
    ("photos:users/{sub/*", "placeholders look like"),
    ("photos:users/{a-b}/*", "placeholders look like"),
    ("photos:a*b", "only at the end"),
])
def test_a_bad_template_is_a_config_error(text: str, message: str) -> None:
    from imgproxy.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        template(text)


HR = ScopeRule(scopes=(template("photos:employees/*"),), claim="groups", equals="hr")
MINE = ScopeRule(scopes=(template("photos:users/{sub}/*"),))


@pytest.mark.parametrize(("claims", "expected"), [
    ({"sub": "ada", "groups": ["staff", "hr"]}, ["photos:employees/", "photos:users/ada/"]),
    ({"sub": "ada", "groups": "hr"}, ["photos:employees/", "photos:users/ada/"]),
    ({"sub": "ada", "groups": ["staff"]}, ["photos:users/ada/"]),
    ({"sub": "ada", "groups": "hr-admins"}, ["photos:users/ada/"]),
    ({"sub": "ada", "groups": [["hr"]]}, ["photos:users/ada/"]),
    ({"sub": "a/b", "groups": []}, []),
])
def test_rules(claims: dict[str, Any], expected: list[str]) -> None:
    found = claim_scopes(claims, provider(HR, MINE))
    assert [f"{s.source}:{s.key}" for s in found] == expected


@pytest.mark.parametrize(("value", "broad", "expected"), [
    (["photos:a/*", "photos:b.jpg"], False, [Scope("photos", "a/", True), Scope("photos", "b.jpg", False)]),
    ("photos:a/* photos:b.jpg", False, [Scope("photos", "a/", True), Scope("photos", "b.jpg", False)]),
    (["*", "photos:*", "photos", "photos:a/*"], False, [Scope("photos", "a/", True)]),
    (["*", "photos:*"], True, [Scope("*", "", True), Scope("photos", "", True)]),
    (["bad source:x", "photos:a*b", "photos:", 7, "photos:x\n"], False, []),
    (42, False, []),
    (None, False, []),
])
def test_scopes_claim(value: object, broad: bool, expected: list[Scope]) -> None:
    found = claim_scopes({"sub": "ada", "scp": value}, provider(scopes_claim="scp", broad=broad))
    assert list(found) == expected


def test_scopes_claim_reads_at_most_a_hundred_scopes() -> None:
    value = [f"photos:p{i}/*" for i in range(150)]
    assert len(claim_scopes({"scp": value}, provider(scopes_claim="scp"))) == 100


@pytest.mark.parametrize(("value", "groups"), [
    (["staff", "hr", "staff"], ("staff", "hr")),
    ("hr", ("hr",)),
    (["hr", 7, None, "", "a\tb", "x" * 257, {"g": 1}], ("hr",)),
    (None, ()),
    (42, ()),
    ([f"g{i}" for i in range(150)], tuple(f"g{i}" for i in range(100))),
], ids=["list", "one-string", "junk-dropped", "missing", "number", "at-most-100"])
def test_a_groups_claim_gives_its_plain_strings(value: object, groups: tuple[str, ...]) -> None:
    assert claim_groups(value) == groups
