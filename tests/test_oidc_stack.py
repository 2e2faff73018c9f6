"""JWT bearer tokens from an ``[auth.oidc]`` provider, through the whole stack: a real local IdP
(discovery and JWKS over loopback HTTP), the app on a real socket, moto behind it.

The app's clock is the test's (``ManualClock``): the tokens' exp/nbf and the JWKS refresh
interval are judged at instants the test chooses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from idp import AUDIENCE, FakeIdp, hs256_with_public_key, random_kid, tampered, unsigned
from joserfc.jwk import RSAKey
from nginx_site import Authority
from s3_gate import ManualClock
from support import TOKEN, ProxyFactory, metric_samples

from imgproxy.auth.jwks import MIN_FETCH_INTERVAL
from imgproxy.web.appkeys import LIVE, METRICS

NOW = 1_900_000_000.0
JPEG = b"\xff\xd8\xff\xe0" + b"j" * 300
Client = TestClient[Any, Any]


def oidc(idp: FakeIdp, **overrides: Any) -> dict[str, Any]:
    provider = {
        "issuer": idp.issuer, "audience": AUDIENCE, "scopes_claim": "imgproxy_scopes",
        "rules": [{"claim": "groups", "equals": "hr", "scopes": ["photos:employees/*"]},
                  {"scopes": ["photos:users/{sub}/*", "photos:tenants/{tenant_id}/*"]}],
    }
    provider.update(overrides)
    return {"oidc": {"corp": provider}}


def bearer(token: str) -> dict[str, str]:
    return {hdrs.AUTHORIZATION: f"Bearer {token}"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def client(proxy: ProxyFactory, s3: Any, bucket: str, idp: FakeIdp, clock: ManualClock) -> Client:
    for key in ("employees/ada.jpg", "other/x.jpg", "users/ada/me.jpg", "users/bob/me.jpg",
                "tenants/acme/logo.jpg", "tenants/a/b/logo.jpg"):
        s3.put_object(Bucket=bucket, Key=key, Body=JPEG, ContentType="image/jpeg")
    return await proxy(clock=clock, auth=oidc(idp))


async def status_and_code(client: Client, key: str, token: str) -> tuple[int, str | None]:
    response = await client.get(f"/img/photos/{key}", headers=bearer(token))
    if response.status < 400:
        await response.read()
        return response.status, None
    return response.status, (await response.json())["error"]


# --- Valid tokens: their scopes, and nothing else ----------------------------------------------

async def test_an_rs256_token_reads_what_its_group_rule_grants(client: Client, idp: FakeIdp) -> None:
    response = await client.get("/img/photos/employees/ada.jpg", headers=bearer(idp.token(NOW)))
    assert response.status == 200
    assert await response.read() == JPEG


async def test_an_es256_token_is_accepted(client: Client, idp: FakeIdp) -> None:
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW, alg="ES256")) == (200, None)


async def test_a_path_outside_the_tokens_scopes_is_403_out_of_scope(client: Client, idp: FakeIdp) -> None:
    assert await status_and_code(client, "other/x.jpg", idp.token(NOW)) == (403, "out_of_scope")


async def test_a_token_without_the_group_gets_only_its_own_prefix(client: Client, idp: FakeIdp) -> None:
    token = idp.token(NOW, groups=["staff"])
    assert await status_and_code(client, "users/ada/me.jpg", token) == (200, None)
    assert await status_and_code(client, "users/bob/me.jpg", token) == (403, "out_of_scope")
    assert await status_and_code(client, "employees/ada.jpg", token) == (403, "out_of_scope")


async def test_the_tenant_template_opens_the_tenants_prefix(client: Client, idp: FakeIdp) -> None:
    token = idp.token(NOW, groups=[], tenant_id="acme")
    assert await status_and_code(client, "tenants/acme/logo.jpg", token) == (200, None)


@pytest.mark.parametrize("tenant", ["../x", "a/b", "a", "*", "", None])
async def test_a_tenant_claim_that_would_widen_the_template_grants_nothing(
    client: Client, idp: FakeIdp, tenant: str | None,
) -> None:
    """'a' is the control: the same claim, safe, opens tenants/a/ (but not tenants/a/b/ ... via 'a/b')."""
    token = idp.token(NOW, groups=[], sub="zed", tenant_id=tenant)
    expected = (200, None) if tenant == "a" else (403, "out_of_scope")
    assert await status_and_code(client, "tenants/a/b/logo.jpg", token) == expected


async def test_a_scopes_claim_grants_its_scopes_but_never_a_whole_source(
    client: Client, idp: FakeIdp,
) -> None:
    token = idp.token(NOW, groups=[], imgproxy_scopes="photos:other/* photos:* *")
    assert await status_and_code(client, "other/x.jpg", token) == (200, None)
    assert await status_and_code(client, "employees/ada.jpg", token) == (403, "out_of_scope")


async def test_static_tokens_still_work_beside_the_provider(client: Client) -> None:
    response = await client.get("/img/photos/other/x.jpg", headers=bearer(TOKEN))
    assert response.status == 200


async def test_a_server_with_only_an_oidc_provider_serves_jwts(
    proxy: ProxyFactory, s3: Any, bucket: str, idp: FakeIdp, clock: ManualClock,
) -> None:
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    client = await proxy(clock=clock, auth={"keys": {}, "tokens": {}, **oidc(idp)},
                         log={"key_hash_secret": "k" * 32})
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    assert await status_and_code(client, "employees/ada.jpg", TOKEN) == (401, "invalid_token")


# --- Invalid tokens: all one 401 invalid_token -------------------------------------------------

def attacker_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


BAD_TOKENS: dict[str, Callable[[FakeIdp], str]] = {
    "expired": lambda idp: idp.token(NOW - 1000),
    "not_yet_valid": lambda idp: idp.token(NOW, nbf=int(NOW) + 600),
    "issued_in_the_future": lambda idp: idp.token(NOW, iat=int(NOW) + 600),
    "wrong_issuer": lambda idp: idp.token(NOW, iss=idp.base + "/realms/other"),
    "wrong_audience": lambda idp: idp.token(NOW, aud="someone-else"),
    "no_exp": lambda idp: idp.token(NOW, exp=None),
    "no_sub": lambda idp: idp.token(NOW, sub=None),
    "unknown_kid": lambda idp: idp.token(NOW, header={"kid": "nobody"}),
    "bad_signature": lambda idp: tampered(idp.token(NOW), sub="bob"),
    "alg_none": lambda idp: unsigned(idp, NOW),
    "hs256_with_the_public_key": lambda idp: hs256_with_public_key(idp, NOW),
    "rs_key_with_es_alg": lambda idp: idp.token(NOW, alg="ES256", header={"kid": "rsa-1"}),
    "disallowed_alg": lambda idp: idp.token(NOW, alg="RS512"),
    "jku_to_attacker_keys": lambda idp: idp.token(NOW, key=attacker_key(),
                                                  header={"jku": idp.base + "/attacker/keys"}),
    "x5u_to_attacker_keys": lambda idp: idp.token(NOW, key=attacker_key(),
                                                  header={"x5u": idp.base + "/attacker/cert.pem"}),
    "embedded_attacker_jwk": lambda idp: embedded_jwk(idp),
}


def embedded_jwk(idp: FakeIdp) -> str:
    key = attacker_key()
    return idp.token(NOW, key=key, header={"jwk": key.as_dict(private=False)})


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_every_invalid_token_is_the_same_401_invalid_token(
    client: Client, idp: FakeIdp, case: str,
) -> None:
    valid = await client.get("/img/photos/employees/ada.jpg", headers=bearer(idp.token(NOW)))
    assert valid.status == 200  # the keys are loaded; the difference below is the token's
    response = await client.get("/img/photos/employees/ada.jpg", headers=bearer(BAD_TOKENS[case](idp)))
    assert response.status == 401
    assert response.headers[hdrs.WWW_AUTHENTICATE] == 'Bearer realm="imgproxy", error="invalid_token"'
    body = await response.json()
    assert (body["error"], body["message"]) == ("invalid_token", "The bearer token is not valid.")
    assert not [path for path in idp.hits if path.startswith("/attacker")]


async def test_an_opaque_token_that_is_no_static_token_is_401_invalid_token(client: Client) -> None:
    response = await client.get("/img/photos/other/x.jpg", headers=bearer("x" * 40))
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_token"


# --- The keys: fetched, refreshed on rotation (rate-limited), kept through outages ---------------

async def test_discovery_then_the_jwks_are_fetched_once_for_many_requests(
    client: Client, idp: FakeIdp,
) -> None:
    for _ in range(5):
        assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    assert idp.hits["/realms/test/.well-known/openid-configuration"] == 1
    assert idp.jwks_hits == 1


async def test_requests_arriving_during_the_first_fetch_wait_for_it(client: Client, idp: FakeIdp) -> None:
    token = idp.token(NOW)
    answers = await asyncio.gather(*(status_and_code(client, "employees/ada.jpg", token) for _ in range(8)))
    assert answers == [(200, None)] * 8
    assert idp.jwks_hits == 1


async def test_a_rotated_key_is_fetched_once_then_valid(
    client: Client, idp: FakeIdp, clock: ManualClock,
) -> None:
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    idp.rotate()
    clock.advance(MIN_FETCH_INTERVAL + 1)
    token = idp.token(clock())
    assert await status_and_code(client, "employees/ada.jpg", token) == (200, None)
    assert await status_and_code(client, "employees/ada.jpg", token) == (200, None)
    assert idp.jwks_hits == 2


async def test_a_rotation_within_the_refresh_interval_waits_for_it(
    client: Client, idp: FakeIdp, clock: ManualClock,
) -> None:
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    idp.rotate()
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (401, "invalid_token")
    clock.advance(MIN_FETCH_INTERVAL)
    assert await status_and_code(client, "employees/ada.jpg", idp.token(clock())) == (200, None)
    assert idp.jwks_hits == 2


async def test_a_flood_of_unknown_kids_fetches_at_most_once_per_interval(
    client: Client, idp: FakeIdp, clock: ManualClock,
) -> None:
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    for _ in range(40):
        token = idp.token(clock(), header={"kid": random_kid()})
        assert await status_and_code(client, "employees/ada.jpg", token) == (401, "invalid_token")
    assert idp.jwks_hits == 1
    clock.advance(MIN_FETCH_INTERVAL + 1)
    for _ in range(40):
        token = idp.token(clock(), header={"kid": random_kid()})
        assert await status_and_code(client, "employees/ada.jpg", token) == (401, "invalid_token")
    assert idp.jwks_hits == 2


async def test_an_idp_outage_keeps_the_cached_keys(client: Client, idp: FakeIdp, clock: ManualClock) -> None:
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    idp.down = True
    clock.advance(idp.max_age + 60)  # the keys are stale: a fetch is tried, and fails
    assert await status_and_code(client, "employees/ada.jpg", idp.token(clock())) == (200, None)
    assert idp.jwks_hits == 2
    scrape = metric_samples(client.app[METRICS].exposition().decode())
    labels = frozenset({("provider", "corp"), ("result", "error")})
    assert scrape[("imgproxy_jwks_fetches_total", labels)] == 1


async def test_a_reload_keeps_the_keys_held(proxy: ProxyFactory, client: Client, idp: FakeIdp) -> None:
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    reloaded = proxy.config(auth=oidc(idp, clock_skew="5s"))
    await client.app[LIVE].switch(reloaded, "reloaded")
    idp.down = True
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    assert idp.jwks_hits == 1


async def test_keys_never_fetched_are_503_not_ready(client: Client, idp: FakeIdp) -> None:
    idp.down = True
    response = await client.get("/img/photos/employees/ada.jpg", headers=bearer(idp.token(NOW)))
    assert response.status == 503
    assert (await response.json())["error"] == "not_ready"
    assert response.headers["Retry-After"] == "5"


async def test_a_configured_jwks_url_skips_discovery(
    proxy: ProxyFactory, s3: Any, bucket: str, idp: FakeIdp, clock: ManualClock,
) -> None:
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    client = await proxy(clock=clock, auth=oidc(idp, jwks_url=idp.base + "/keys"))
    assert await status_and_code(client, "employees/ada.jpg", idp.token(NOW)) == (200, None)
    assert idp.hits == {"/keys": 1}


async def test_a_discovery_document_naming_another_issuer_gives_no_keys(
    proxy: ProxyFactory, idp: FakeIdp, clock: ManualClock,
) -> None:
    other = FakeIdp()
    try:  # the configured issuer is idp's, but its discovery document is other's (issuer differs)
        client = await proxy(clock=clock, auth=oidc(idp, issuer=other.issuer + "/"))
        token = idp.token(NOW, iss=other.issuer + "/")
        assert await status_and_code(client, "employees/ada.jpg", token) == (503, "not_ready")
        assert other.jwks_hits == 0
    finally:
        other.close()


async def test_an_https_idp_is_trusted_through_its_ca_bundle(
    proxy: ProxyFactory, s3: Any, bucket: str, clock: ManualClock, authority: Authority,
) -> None:
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    secure = FakeIdp(tls=authority)
    try:
        client = await proxy(clock=clock, auth=oidc(secure, ca_bundle=str(authority.ca)))
        assert await status_and_code(client, "employees/ada.jpg", secure.token(NOW)) == (200, None)
    finally:
        secure.close()


async def test_an_https_idp_whose_ca_is_not_trusted_gives_no_keys(
    proxy: ProxyFactory, clock: ManualClock, authority: Authority,
) -> None:
    secure = FakeIdp(tls=authority)
    try:  # the system's CAs do not include the throwaway one: the fetch fails, nothing is trusted
        client = await proxy(clock=clock, auth=oidc(secure))
        assert await status_and_code(client, "employees/ada.jpg", secure.token(NOW)) == (503, "not_ready")
        assert secure.hits["/keys"] == 0
    finally:
        secure.close()


# --- The log and the metrics name the principal and count the failures --------------------------

async def test_the_access_log_names_the_jwt_principal_and_its_sub(
    client: Client, idp: FakeIdp, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="imgproxy.access"):
        response = await client.get("/img/photos/employees/ada.jpg", headers=bearer(idp.token(NOW)))
        await response.read()
    line = next(r.getMessage() for r in caplog.records if r.name == "imgproxy.access")
    assert " auth=jwt:corp:ada " in line
    assert " sub=ada " in line
    assert "eyJ" not in caplog.text


async def test_auth_failures_are_counted_by_reason(client: Client, idp: FakeIdp) -> None:
    await status_and_code(client, "employees/ada.jpg", idp.token(NOW))
    await status_and_code(client, "employees/ada.jpg", idp.token(NOW - 1000))
    await status_and_code(client, "employees/ada.jpg", unsigned(idp, NOW))
    await status_and_code(client, "other/x.jpg", idp.token(NOW))
    await status_and_code(client, "other/x.jpg", "x" * 40)
    await client.get("/img/photos/other/x.jpg")
    scrape = metric_samples(client.app[METRICS].exposition().decode())
    counted = {dict(labels)["reason"]: value for (name, labels), value in scrape.items()
               if name == "imgproxy_auth_failures_total"}
    assert counted == {"jwt_expired": 1, "jwt_algorithm": 1, "invalid_token": 1, "out_of_scope": 1,
                       "unauthorized": 1}
