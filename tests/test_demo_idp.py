"""The demo's identity provider (``imgproxy.demo.idp``): its JWKS over real loopback HTTP, its
tokens as the proxy's own verifier sees them, and the demo config that trusts it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from imgproxy.auth.jwks import parse_jwks
from imgproxy.auth.oidc import verify_jwt
from imgproxy.config import Config, Scope
from imgproxy.demo import SOURCE, demo_config
from imgproxy.demo.gallery import visible_cards
from imgproxy.demo.idp import DISCOVERY_PATH, HR, LEAD, LEAD_TEAM, DemoIdp, serve_idp
from imgproxy.demo.people import directory
from imgproxy.errors import InvalidJwt

NOW = 1_790_000_000.0


@pytest.fixture
async def idp() -> AsyncIterator[DemoIdp]:
    async with serve_idp() as running:
        yield running


def config_for(idp: DemoIdp) -> Config:
    config, _ = demo_config("http://127.0.0.1:9", "127.0.0.1", 0, idp)
    return config


def scopes_of(idp: DemoIdp, token: str, now: float = NOW) -> tuple[Scope, ...]:
    providers = config_for(idp).auth.oidc
    keys = parse_jwks(json.dumps(idp.jwks()).encode())
    return verify_jwt(token, providers, lambda provider: keys, now).scopes


async def test_the_jwks_is_served_on_loopback_and_holds_the_tokens_key(idp: DemoIdp) -> None:
    assert idp.issuer.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as client:
        async with client.get(idp.jwks_url) as reply:
            assert reply.status == 200
            keys = parse_jwks(await reply.read())
        async with client.get(idp.issuer + DISCOVERY_PATH) as reply:
            discovery = await reply.json()
    assert discovery["issuer"] == idp.issuer
    assert discovery["jwks_uri"] == idp.jwks_url
    assert keys.find(idp.key.kid, "ES256") is not None
    assert "d" not in idp.jwks()["keys"][0]  # the public half only


async def test_each_run_makes_its_own_key() -> None:
    async with serve_idp() as first, serve_idp() as second:
        assert first.key.kid != second.key.kid
        assert first.jwks() != second.jwks()


async def test_hr_tokens_earn_every_employee_photo(idp: DemoIdp) -> None:
    assert scopes_of(idp, idp.token(HR, NOW)) == (Scope(SOURCE, "employees/", is_prefix=True),)


async def test_a_team_leads_token_earns_only_their_teams_folder(idp: DemoIdp) -> None:
    assert scopes_of(idp, idp.token(LEAD, NOW)) == (Scope(SOURCE, f"employees/{LEAD_TEAM}/", is_prefix=True),)


async def test_a_token_expires(idp: DemoIdp) -> None:
    token = idp.token(HR, NOW, ttl=300)
    with pytest.raises(InvalidJwt):
        scopes_of(idp, token, now=NOW + 300 + 61)  # past exp and the provider's clock skew


async def test_another_runs_token_is_refused(idp: DemoIdp) -> None:
    async with serve_idp() as other:
        token = other.token(HR, NOW)
    with pytest.raises(InvalidJwt):  # another issuer (another port)
        scopes_of(idp, token)


async def test_the_lead_sees_exactly_their_teams_cards(idp: DemoIdp) -> None:
    people = directory()
    cards = visible_cards(people, SOURCE, scopes_of(idp, idp.token(LEAD, NOW)))
    shown = [card.person for card in cards if card.is_visible]
    assert shown == [person for person in people if person.team == LEAD_TEAM]
    assert 0 < len(shown) < len(people)
    assert all("sig=" not in card.thumb and "exp=" not in card.thumb for card in cards)


async def test_the_demo_config_trusts_the_idp_and_turns_grants_on(idp: DemoIdp) -> None:
    config = config_for(idp)
    assert config.auth.oidc["demo"].issuer == idp.issuer
    assert config.auth.oidc["demo"].jwks_url == idp.jwks_url
    assert config.auth.grants is not None
    assert config.auth.grants.secure is False
    assert config.auth.plain_widths == ()  # the page's plain URLs name a preset
    assert dict(config.transform.presets["thumb"].params) == {"w": "96", "h": "96", "fit": "cover",
                                                              "fmt": "auto"}


def test_without_an_idp_the_demo_config_has_no_login() -> None:
    config, _ = demo_config("http://127.0.0.1:9", "192.0.2.1", 0)
    assert not config.auth.oidc
    assert config.auth.grants is None
