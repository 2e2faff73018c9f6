"""``[auth.forward]`` through the whole stack: the app on a real socket (the test client connects
from 127.0.0.1, the direct peer), moto behind it. Headers are believed only from a trusted
peer; from anyone else they are ignored (401) and logged; a bearer or a signature wins over
them; bad values are refused."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import rawhttp
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from support import SCOPED_TOKEN, ProxyFactory

from imgproxy.auth.signing import UrlSigner
from imgproxy.web.appkeys import LIVE

JPEG = b"\xff\xd8\xff\xe0" + b"f" * 300
Client = TestClient[Any, Any]
ADA = {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "staff, employees"}


def forward(trusted: list[str], **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "trusted_proxies": trusted,
        "extra_headers": {"tenant_id": "X-Auth-Request-Tenant"},
        "rules": [{"claim": "groups", "equals": "employees", "scopes": ["photos:employees/*"]},
                  {"scopes": ["photos:users/{sub}/*", "photos:tenants/{tenant_id}/*"]}],
    }
    section.update(overrides)
    return {"forward": section}


@pytest.fixture
def seeded(s3: Any, bucket: str) -> None:
    for key in ("employees/ada.jpg", "other/x.jpg", "users/ada/me.jpg", "tenants/acme/logo.jpg",
                "tenants/a/b/logo.jpg"):
        s3.put_object(Bucket=bucket, Key=key, Body=JPEG, ContentType="image/jpeg")


@pytest.fixture
async def client(proxy: ProxyFactory, seeded: None) -> Client:
    return await proxy(auth=forward(["127.0.0.1/32"]))


@pytest.fixture
async def untrusting(proxy: ProxyFactory, seeded: None) -> Client:
    return await proxy(auth=forward(["10.0.0.0/8"]))


async def status_and_code(client: Client, key: str, headers: dict[str, str]) -> tuple[int, str | None]:
    response = await client.get(f"/img/photos/{key}", headers=headers)
    if response.status < 400:
        assert await response.read() == JPEG
        return response.status, None
    return response.status, (await response.json())["error"]


async def test_a_trusted_peers_user_reads_what_its_group_rule_grants(client: Client) -> None:
    assert await status_and_code(client, "employees/ada.jpg", ADA) == (200, None)


async def test_a_path_outside_the_forwarded_users_scopes_is_403(client: Client) -> None:
    assert await status_and_code(client, "other/x.jpg", ADA) == (403, "out_of_scope")


async def test_without_the_group_the_rule_grants_nothing(client: Client) -> None:
    headers = {"X-Forwarded-User": "ada", "X-Forwarded-Groups": "staff,employeesx"}
    assert await status_and_code(client, "employees/ada.jpg", headers) == (403, "out_of_scope")


async def test_the_user_template_reaches_only_the_users_own_prefix(client: Client) -> None:
    assert await status_and_code(client, "users/ada/me.jpg", ADA) == (200, None)
    bob = {"X-Forwarded-User": "bob"}
    assert await status_and_code(client, "users/ada/me.jpg", bob) == (403, "out_of_scope")


async def test_an_extra_header_fills_the_tenant_template(client: Client) -> None:
    headers = {**ADA, "X-Auth-Request-Tenant": "acme"}
    assert await status_and_code(client, "tenants/acme/logo.jpg", headers) == (200, None)


@pytest.mark.parametrize("tenant", ["a/b", "*", "..", ""])
async def test_a_widening_tenant_value_grants_no_tenant_scope(client: Client, tenant: str) -> None:
    headers = {**ADA, "X-Auth-Request-Tenant": tenant}
    assert await status_and_code(client, "tenants/a/b/logo.jpg", headers) == (403, "out_of_scope")
    assert await status_and_code(client, "tenants/acme/logo.jpg", headers) == (403, "out_of_scope")


async def test_headers_from_an_untrusted_peer_are_ignored_and_logged(
        untrusting: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="imgproxy.auth"):
        assert await status_and_code(untrusting, "employees/ada.jpg", ADA) == (401, "unauthorized")
        assert await status_and_code(untrusting, "employees/ada.jpg", ADA) == (401, "unauthorized")
    lines = [r.getMessage() for r in caplog.records if r.name == "imgproxy.auth"]
    assert len(lines) == 1  # at most once a minute per peer
    assert "X-Forwarded-Groups,X-Forwarded-User" in lines[0]
    assert "127.0.0.1" in lines[0]
    assert "employees" not in lines[0].replace("X-Forwarded", "")  # names, never values


async def test_a_bad_bearer_is_401_even_with_valid_forward_headers(client: Client) -> None:
    headers = {**ADA, hdrs.AUTHORIZATION: "Bearer " + "n" * 40}
    assert await status_and_code(client, "employees/ada.jpg", headers) == (401, "invalid_token")


async def test_a_bearer_is_judged_alone_when_forward_headers_come_too(client: Client) -> None:
    # The token "hr" reads employees/* only; the forwarded user's scopes include users/ada/.
    headers = {**ADA, hdrs.AUTHORIZATION: f"Bearer {SCOPED_TOKEN}"}
    assert await status_and_code(client, "users/ada/me.jpg", headers) == (403, "out_of_scope")


async def test_a_signed_url_ignores_forward_headers(client: Client, signer: UrlSigner) -> None:
    signed = signer.sign("photos", "other/x.jpg")
    response = await client.get(signed, headers=ADA)
    assert response.status == 200  # outside the forwarded user's scopes: the signature decided
    tampered = signed.replace("other/x.jpg", "employees/ada.jpg")
    response = await client.get(tampered, headers=ADA)
    assert response.status == 403  # inside them, but a bad signature is not rescued


@pytest.mark.parametrize("headers", [
    ("X-Forwarded-User: a\tda",),
    ("X-Forwarded-User: " + "a" * 257,),
    ("X-Forwarded-User: ada", "X-Forwarded-Groups: employees,st\taff"),
    ("X-Forwarded-User: ada", "X-Forwarded-Groups: " + ",".join(["g"] * 101)),
    ("X-Forwarded-User: ada", "X-Auth-Request-Tenant: ac\tme"),
], ids=["tab-in-user", "long-user", "tab-in-groups", "too-many-groups", "tab-in-extra"])
async def test_a_control_character_or_oversized_value_is_401(client: Client,
                                                             headers: tuple[str, ...]) -> None:
    # Written as raw bytes: no client library sends control characters in a header. (A tab is
    # the one the HTTP parser lets through; the others are refused before us: tests/auth.)
    assert client.port is not None
    request = rawhttp.get("/img/photos/employees/ada.jpg", *headers, "Connection: close")
    reply = await asyncio.to_thread(rawhttp.exchange, client.port, request)
    assert (reply.status, reply.json()["error"]) == (401, "invalid_token")


async def test_the_access_log_names_the_forwarded_user(
        client: Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="imgproxy.access"):
        assert await status_and_code(client, "employees/ada.jpg", ADA) == (200, None)
    [line] = [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]
    assert "auth=forward:ada" in line
    assert " sub=ada" in line


async def test_post_sign_does_not_read_forward_headers(client: Client) -> None:
    response = await client.post("/sign", json={"items": [{"source": "photos", "key": "users/ada/me.jpg"}]},
                                 headers=ADA)
    assert response.status == 401


async def test_a_reload_changes_which_peers_are_trusted(proxy: ProxyFactory, client: Client) -> None:
    assert await status_and_code(client, "employees/ada.jpg", ADA) == (200, None)
    await client.app[LIVE].switch(proxy.config(auth=forward(["10.0.0.0/8"])), "reloaded")
    assert await status_and_code(client, "employees/ada.jpg", ADA) == (401, "unauthorized")
