"""Shared fixtures: a real moto S3 server on a random loopback port, buckets seeded through the
real boto3 client over HTTP, and ``create_app`` clients that reach S3 through aiobotocore."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from processes import Server, launch_server
from s3_gate import ManualClock, S3Gate
from tcp_relay import Blackhole, TcpRelay
from yarl import URL

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import Config, parse_config
from imgproxy.demo import moto_server
from imgproxy.web.app import create_app

SIGNING_KEY = "test-signing-key-0123456789abcdef-0123456789"  # 44 bytes
OTHER_KEY = "another-signing-key-for-rotation-0123456789ab"
TOKEN = "test-bearer-token-0123456789abcdef0123456789"
SCOPED_TOKEN = "scoped-bearer-token-0123456789abcdef01234567"
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"

# Nothing in the tests may reach a real AWS endpoint or read the developer's AWS profile.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3(moto_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def empty_bucket(s3: Any, name: str) -> None:
    """Delete every object of ``name``: moto keeps object bodies in memory for the session."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def source_table(endpoint: str, bucket: str, **overrides: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "bucket": bucket,
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "addressing_style": "path",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "connect_timeout": 1,
        "read_timeout": 5,
    }
    table.update(overrides)
    return table


def config_data(endpoint: str, bucket: str, **source_overrides: Any) -> dict[str, Any]:
    return {
        # One process unless a test asks for workers (test_workers.py); the default is one per CPU.
        "server": {"host": "127.0.0.1", "port": 0, "ready_cache_seconds": 0, "workers": 1},
        "auth": {
            "keys": {"k1": SIGNING_KEY},
            "max_ttl": "1d",
            "tokens": {
                "ops": {"token": TOKEN, "scopes": ["*"]},
                "hr": {"token": SCOPED_TOKEN, "scopes": ["photos:employees/*"]},
            },
        },
        "sources": {"photos": source_table(endpoint, bucket, **source_overrides)},
        # Workers start on the first transform, so tests that never transform spawn none.
        "transform": {"prestart_workers": False},
        # Any free port: many apps run at once, and 9090 may be taken on the test machine.
        "metrics": {"port": 0},
    }


@pytest.fixture
def make_config(moto_endpoint: str, bucket: str) -> Callable[..., Config]:
    """``make_config(**source_overrides)`` or ``make_config(data=...)`` for a whole table."""

    def build(data: dict[str, Any] | None = None, **source_overrides: Any) -> Config:
        return parse_config(data or config_data(moto_endpoint, bucket, **source_overrides), environ={})

    return build


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    return make_config()


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(SIGNING_KEY, "k1")


ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(aiohttp_client: ClientFactory, config: Config) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(config))


ServeFactory = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path, moto_endpoint: str) -> Iterator[ServeFactory]:
    """``serve(bucket, source={...}, server={...}, transform={...})``: an ``imgproxy serve``
    process on the test config with those overrides, killed when the test ends."""
    started: list[Server] = []

    def launch(bucket: str, *, source: dict[str, Any] | None = None, server: dict[str, Any] | None = None,
               transform: dict[str, Any] | None = None) -> Server:
        data = config_data(moto_endpoint, bucket, **(source or {}))
        data["server"].update(server or {})
        if transform is not None:
            data["transform"] = transform
        started.append(launch_server(tmp_path / f"serve-{len(started)}", data))
        return started[-1]

    yield launch
    for running in started:
        running.process.kill()


RelayFactory = Callable[[str], Awaitable[TcpRelay]]


@pytest.fixture
async def relay_to() -> AsyncIterator[RelayFactory]:
    """``await relay_to(endpoint)``: a byte-counting TCP relay in front of ``endpoint``."""
    relays: list[TcpRelay] = []

    async def start(endpoint: str) -> TcpRelay:
        relay = await TcpRelay(endpoint).start()
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        await relay.close()


@pytest.fixture
async def relay(relay_to: RelayFactory, moto_endpoint: str) -> TcpRelay:
    """A byte-counting relay in front of the moto server."""
    return await relay_to(moto_endpoint)


@pytest.fixture
async def blackhole() -> AsyncIterator[Blackhole]:
    """A storage endpoint that accepts connections and never answers."""
    hole = await Blackhole().start()
    yield hole
    await hole.close()


RawRequest = Callable[..., Awaitable[ClientResponse]]


@pytest.fixture
def raw_request() -> RawRequest:
    """``await raw_request(client, "GET", "/img/photos/../x", headers=...)``, target sent as written.

    ``TestClient.get(path)`` joins paths with yarl, which removes dot segments and requotes
    escapes; attack paths must reach the server exactly as an attacker would send them. The body
    is read before returning (which releases the connection).
    """

    async def send(test_client: TestClient[Any, Any], method: str, target: str,
                   **kwargs: Any) -> ClientResponse:
        root = str(test_client.make_url("/")).rstrip("/")
        resp = await test_client.session.request(method, URL(root + target, encoded=True), **kwargs)
        await resp.read()
        return resp

    return send


# Delivery (issue 5): a test-controlled clock, and an S3 front door that enforces presigned URLs.

DELIVERY_NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a whole hour, so windows start here


@pytest.fixture
def clock() -> ManualClock:
    """Unix time for the app (``create_app(clock=...)``) and the gate; moves only on ``advance``."""
    return ManualClock(DELIVERY_NOW)


@pytest.fixture
async def s3_gate(moto_endpoint: str, clock: ManualClock) -> AsyncIterator[S3Gate]:
    """moto behind a gate that checks presigned URLs' signatures and expiry as S3 does."""
    gate = await S3Gate(moto_endpoint, {ACCESS_KEY: SECRET_KEY}, clock).start()
    yield gate
    await gate.close()
