"""forwarded.py: X-Forwarded-For / -Proto believed only from trusted proxies, as a pure table and
through the stack (the access log's ``client=`` and the scheme of URLs from ``POST /sign``)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from support import TOKENS, ProxyFactory

from imgproxy.protocol.forwarded import client_address, parse_networks, public_scheme

PROXIES = parse_networks(["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"])
SIGN_TOKEN = "forwarded-sign-token-0123456789abcdef012345"


# Pure ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("remote", "forwarded_for", "expected"), [
    ("203.0.113.7", "198.51.100.1", "203.0.113.7"),  # not a trusted proxy: its header is a claim
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "", "127.0.0.1"),
    ("127.0.0.1", "198.51.100.1", "198.51.100.1"),
    ("127.0.0.1", " 198.51.100.1 ", "198.51.100.1"),
    ("127.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the left part was written by the client
    ("127.0.0.1", "198.51.100.1, 10.1.2.3", "198.51.100.1"),  # skip our own proxies, right to left
    ("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3, 10.0.0.9", "198.51.100.1"),
    ("127.0.0.1", "10.0.0.5, 10.0.0.9", "10.0.0.5"),  # all proxies: the farthest one
    ("127.0.0.1", "not-an-address", "127.0.0.1"),
    ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
    ("127.0.0.1", "[2001:db8::1]", "2001:db8::1"),
    ("fd00::1", "198.51.100.1", "198.51.100.1"),
    ("127.0.0.2", "198.51.100.1", "127.0.0.2"),  # just outside 127.0.0.1/32
    (None, "198.51.100.1", "-"),
])
def test_client_address(remote: str | None, forwarded_for: str | None, expected: str) -> None:
    assert client_address(remote, forwarded_for, PROXIES) == expected


def test_no_trusted_proxies_means_the_header_is_never_believed() -> None:
    assert client_address("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"


@pytest.mark.parametrize(("remote", "forwarded_proto", "scheme", "expected"), [
    ("127.0.0.1", "https", "http", "https"),
    ("127.0.0.1", "HTTPS", "http", "https"),
    ("127.0.0.1", " https ", "http", "https"),
    ("127.0.0.1", "http", "https", "http"),
    ("127.0.0.1", None, "http", "http"),
    ("127.0.0.1", "", "http", "http"),
    ("127.0.0.1", "javascript", "http", "http"),  # only http or https
    ("127.0.0.1", "ftp", "https", "https"),
    ("203.0.113.7", "https", "http", "http"),  # not a trusted proxy
    (None, "https", "http", "http"),
])
def test_public_scheme(remote: str | None, forwarded_proto: str | None, scheme: str, expected: str) -> None:
    assert public_scheme(remote, forwarded_proto, PROXIES, scheme) == expected


# Through the stack (the test client connects from 127.0.0.1) -------------------------------------

@pytest.fixture
def start(proxy: ProxyFactory) -> ProxyFactory:
    """``await start(server={"trusted_proxies": [...], "public_url": ...})``: the app with a token
    that may sign ``photos:*``."""
    dash = {"token": SIGN_TOKEN, "sign_scopes": ["photos:*"]}
    return proxy.preset(auth={"tokens": {**TOKENS, "dash": dash}})


async def logged_client(client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture,
                        forwarded_for: str) -> str:
    with caplog.at_level(logging.INFO, logger="imgproxy.access"):
        response = await client.get("/healthz", headers={"X-Forwarded-For": forwarded_for})
    assert response.status == 200
    [line] = [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]
    return line.split(" client=")[1].split(" ")[0]


async def signed_url(client: TestClient[Any, Any], forwarded_proto: str) -> str:
    response = await client.post("/sign", json=[{"source": "photos", "key": "a.png"}], headers={
        "Authorization": f"Bearer {SIGN_TOKEN}", "X-Forwarded-Proto": forwarded_proto})
    assert response.status == 200
    url: str = (await response.json())["items"][0]["url"]
    return url


async def test_a_trusted_proxys_x_forwarded_for_is_the_logged_client(
        start: ProxyFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = await start(server={"trusted_proxies": ["127.0.0.1/32"]})
    assert await logged_client(client, caplog, "203.0.113.7") == "203.0.113.7"


async def test_a_client_cannot_spoof_its_address_through_a_trusted_proxy(
        start: ProxyFactory, caplog: pytest.LogCaptureFixture) -> None:
    client = await start(server={"trusted_proxies": ["127.0.0.1/32"]})
    assert await logged_client(client, caplog, "6.6.6.6, 203.0.113.7") == "203.0.113.7"


async def test_an_untrusted_peers_x_forwarded_for_is_ignored(start: ProxyFactory,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    client = await start(server={"trusted_proxies": ["10.0.0.0/8"]})
    assert await logged_client(client, caplog, "203.0.113.7") == "127.0.0.1"


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(start: ProxyFactory,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    client = await start()
    assert await logged_client(client, caplog, "203.0.113.7") == "127.0.0.1"


async def test_a_trusted_proxys_x_forwarded_proto_sets_the_scheme_of_signed_urls(start: ProxyFactory) -> None:
    client = await start(server={"trusted_proxies": ["127.0.0.1/32"]})
    url = await signed_url(client, "https")
    assert url.startswith(f"https://{client.host}:{client.port}/img/photos/a.png?")


async def test_an_untrusted_peers_x_forwarded_proto_is_ignored(start: ProxyFactory) -> None:
    client = await start(server={"trusted_proxies": ["10.0.0.0/8"]})
    url = await signed_url(client, "https")
    assert url.startswith(f"http://{client.host}:{client.port}/img/photos/a.png?")


async def test_public_url_beats_x_forwarded_proto(start: ProxyFactory) -> None:
    client = await start(server={"trusted_proxies": ["127.0.0.1/32"],
                                 "public_url": "http://img.example.com/base"})
    url = await signed_url(client, "https")
    assert url.startswith("http://img.example.com/base/img/photos/a.png?")
