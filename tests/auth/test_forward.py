"""Forward-auth headers -> claims -> a user and scopes (pure): values bounded and checked."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from imgproxy.auth.forward import ForwardPolicy, UntrustedPeers, forward_claims, identify_forward
from imgproxy.config import ConfigError, Scope
from imgproxy.config.forward import ForwardConfig, read_forward
from imgproxy.config.oidc import ScopeRule, ScopeTemplate
from imgproxy.config.reader import Table
from imgproxy.errors import InvalidToken

CONFIG = ForwardConfig(
    trusted_proxies=("10.0.0.0/8",), email_header="X-Forwarded-Email",
    extra_headers=MappingProxyType({"tenant_id": "X-Auth-Request-Tenant"}),
    rules=(ScopeRule((ScopeTemplate.parse("photos:staff/*", "t"),), "groups", "staff"),
           ScopeRule((ScopeTemplate.parse("photos:tenants/{tenant_id}/*", "t"),))))


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, None),
    ({"X-Forwarded-Groups": "staff"}, None),  # groups without a user: no identity
    ({"X-Forwarded-User": " ada "}, {"sub": "ada", "groups": []}),
    ({"X-Forwarded-User": "ada", "X-Forwarded-Groups": "a, b,,c "},
     {"sub": "ada", "groups": ["a", "b", "c"]}),
    ({"X-Forwarded-User": "ada", "X-Forwarded-Email": "ada@example.com", "X-Auth-Request-Tenant": ""},
     {"sub": "ada", "groups": [], "email": "ada@example.com"}),
])
def test_headers_become_claims(headers: dict[str, str], expected: dict[str, object] | None) -> None:
    assert forward_claims(headers, CONFIG) == expected


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-User": ""},
    {"X-Forwarded-User": "a\x00b"},
    {"X-Forwarded-User": "a\x7fb"},
    {"X-Forwarded-User": "a\x85b"},
    {"X-Forwarded-User": "u" * 257},
    {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "staff,\x01x"},
    {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "g" * 4097},
    {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "g" * 257},
    {"X-Forwarded-User": "ada", "X-Auth-Request-Tenant": "a\x1bb"},
    {"X-Forwarded-User": "ada", "X-Forwarded-Email": "e" * 300},
])
def test_a_bad_value_from_a_trusted_peer_is_invalid_token(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidToken) as caught:
        forward_claims(headers, CONFIG)
    assert caught.value.public_message == "The forwarded identity is not valid."


def test_rules_and_templates_make_the_scopes() -> None:
    identity = identify_forward({"X-Forwarded-User": "ada", "X-Forwarded-Groups": "staff",
                                 "X-Auth-Request-Tenant": "acme"}, CONFIG)
    assert identity is not None
    assert identity.user == "ada"
    assert identity.scopes == (Scope("photos", "staff/", True), Scope("photos", "tenants/acme/", True))


def test_a_widening_tenant_drops_the_template_scope() -> None:
    identity = identify_forward({"X-Forwarded-User": "ada", "X-Auth-Request-Tenant": "a/b"}, CONFIG)
    assert identity is not None
    assert identity.scopes == ()


@pytest.mark.parametrize(("peer", "trusted"), [
    ("10.1.2.3", True), ("127.0.0.1", False), (None, False), ("not-an-ip", False)])
def test_only_the_listed_peers_are_trusted(peer: str | None, trusted: bool) -> None:
    assert ForwardPolicy.from_config(CONFIG).trusts(peer) is trusted


def test_an_untrusted_peer_is_reported_once_a_minute() -> None:
    peers = UntrustedPeers()
    assert [peers.should_report("1.2.3.4", t) for t in (0.0, 30.0, 59.9, 60.0)] == [True, False, False, True]
    assert peers.should_report("5.6.7.8", 30.0) is True


@pytest.mark.parametrize(("data", "message"), [
    ({"rules": [{"scopes": ["photos:x/*"]}]}, r"^auth\.forward\.trusted_proxies: list"),
    ({"trusted_proxies": ["nope"], "scopes_claim": "s"}, r"not an IP address"),
    ({"trusted_proxies": ["10.0.0.0/8"]}, r"^auth\.forward: set scopes_claim"),
    ({"trusted_proxies": ["10.0.0.0/8"], "scopes_claim": "s", "user_header": "X User"}, r"not a header name"),
    ({"trusted_proxies": ["10.0.0.0/8"], "scopes_claim": "s", "extra_headers": {"sub": "X-S"}},
     r"not a claim name"),
    ({"trusted_proxies": ["10.0.0.0/8"], "scopes_claim": "s",
      "extra_headers": {"t": "x-forwarded-user"}}, r"two claims read the same header"),
    ({"trusted_proxies": ["10.0.0.0/8"], "scopes_claim": "s", "nope": 1}, r"unknown key"),
])
def test_config_mistakes_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_forward(Table(data, "auth.forward"))


def test_an_absent_table_is_off() -> None:
    assert read_forward(Table({}, "auth.forward")) is None
