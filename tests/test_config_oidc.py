"""``[auth.oidc.NAME]``: providers, their algorithms, claim rules and scope templates, read and checked."""

from __future__ import annotations

from typing import Any

import pytest

from imgproxy.config import ConfigError, Scope, parse_config
from imgproxy.config.oidc import OidcConfig, ScopeRule, ScopeTemplate

ISSUER = "https://login.example.com/realms/corp"


def providers(**tables: dict[str, Any]) -> dict[str, OidcConfig]:
    data = {"auth": {"oidc": tables}, "sources": {"photos": {"bucket": "private-photos"}},
            "log": {"key_hash_secret": "h" * 32}}
    return dict(parse_config(data, environ={}).auth.oidc)


def corp(**overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"issuer": ISSUER, "audience": "imgproxy", "scopes_claim": "imgproxy_scopes"}
    table.update(overrides)
    return {name: value for name, value in table.items() if value is not None}


def test_a_provider_alone_is_enough_auth_and_has_safe_defaults() -> None:
    provider = providers(corp=corp())["corp"]
    assert provider == OidcConfig(name="corp", issuer=ISSUER, audience="imgproxy",
                                  scopes_claim="imgproxy_scopes")
    assert provider.algorithms == ("RS256", "ES256")
    assert provider.clock_skew == 60.0
    assert provider.jwks_url is None
    assert not provider.allow_broad_scopes


def test_rules_and_templates_are_parsed() -> None:
    rules = [{"claim": "groups", "equals": "hr", "scopes": ["photos:employees/*"]},
             {"scopes": ["photos:tenants/{tenant_id}/*", "photos:*"]}]
    provider = providers(corp=corp(scopes_claim=None, rules=rules))["corp"]
    assert provider.rules == (
        ScopeRule(scopes=(ScopeTemplate("photos", ("employees/",), True, "photos:employees/*"),),
                  claim="groups", equals="hr"),
        ScopeRule(scopes=(ScopeTemplate("photos", ("tenants/", "tenant_id", "/"), True,
                                        "photos:tenants/{tenant_id}/*"),
                          ScopeTemplate("photos", ("",), True, "photos:*"))),
    )
    assert Scope("photos", "", True).allows("photos", "x")  # the literal whole source stays one


@pytest.mark.parametrize(("overrides", "message"), [
    ({"issuer": None}, "auth.oidc.corp.issuer: is required"),
    ({"audience": None}, "auth.oidc.corp.audience: is required"),
    ({"audience": ""}, "auth.oidc.corp.audience: is required"),
    ({"issuer": "http://login.example.com/"}, "must be an https:// URL"),
    ({"issuer": "ftp://login.example.com/"}, "must be an https:// URL"),
    ({"issuer": "https://user@login.example.com/"}, "must be an https:// URL"),
    ({"jwks_url": "http://10.0.0.1/keys"}, "corp.jwks_url: 'http://10.0.0.1/keys' must be an https"),
    ({"algorithms": ["none"]}, "'none' is not allowed"),
    ({"algorithms": ["RS256", "HS256"]}, "'HS256' is not allowed"),
    ({"algorithms": []}, "'an empty list' is not allowed"),
    ({"clock_skew": "1h"}, "auth.oidc.corp.clock_skew: must be between"),
    ({"scopes_claim": None}, "set scopes_claim or add"),
    ({"scopes_claim": "bad claim"}, "is not a claim name"),
    ({"rules": {"scopes": ["photos:*"]}}, "expected [[auth.oidc.corp.rules]] tables"),
    ({"rules": [{"claim": "groups", "scopes": ["photos:a/*"]}]}, "give both claim and equals"),
    ({"rules": [{"claim": "groups", "equals": "hr", "scopes": []}]}, "list at least one scope"),
    ({"rules": [{"scopes": ["photos:u/{sub}"]}]}, "rules[0].scopes: 'photos:u/{sub}': a placeholder must be"),
    ({"rules": [{"scopes": ["p:a/*"], "when": "x"}]}, "auth.oidc.corp.rules[0].when: unknown key"),
    ({"secret": "x"}, "auth.oidc.corp.secret: unknown key"),
    ({"ca_bundle": "/nonexistent.pem"}, "auth.oidc.corp.ca_bundle"),
])
def test_a_bad_provider_is_a_config_error_naming_the_key(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        providers(corp=corp(**overrides))
    assert message in str(caught.value)


def test_two_providers_may_not_share_an_issuer() -> None:
    with pytest.raises(ConfigError, match=r"auth\.oidc\.b\.issuer: the same issuer as auth\.oidc\.a"):
        providers(a=corp(), b=corp())


def test_plain_http_is_allowed_to_a_loopback_idp() -> None:
    provider = providers(corp=corp(issuer="http://127.0.0.1:8081/realms/dev"))["corp"]
    assert provider.issuer == "http://127.0.0.1:8081/realms/dev"


def test_providers_alone_need_a_key_hash_secret_for_the_access_log() -> None:
    data: dict[str, Any] = {"auth": {"oidc": {"corp": corp()}},
                            "sources": {"photos": {"bucket": "private-photos"}}}
    with pytest.raises(ConfigError, match=r"^log\.key_hash_secret: required when auth has only"):
        parse_config(data, environ={})
    assert parse_config({**data, "server": {"log_keys": True}}, environ={}).auth.oidc
