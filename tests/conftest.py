"""Shared fixtures: a real moto S3 server on a random loopback port, buckets seeded through the
real boto3 client over HTTP, and ``proxy``: the app under test (``create_app``) as a test client,
reaching S3 through aiobotocore; the same moto behind nginx terminating TLS with a throwaway
private CA (``https_endpoint``), for HTTPS S3. Constants and types live in support.py, imported
from there."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import nginx_site
import pytest
from aiohttp import ClientResponse, web_app
from aiohttp.test_utils import TestClient
from idp import FakeIdp
from nginx_site import NGINX, Authority, NginxError
from processes import (
    CLUSTER_GRACE,
    Process,
    Server,
    children,
    command,
    free_port,
    launch_server,
    wait_for,
    write_config,
)
from pytest_aiohttp import AiohttpClient
from s3_gate import ManualClock, S3Gate
from support import (
    ACCESS_KEY,
    DELIVERY_NOW,
    REGION,
    SECRET_KEY,
    SIGNING_KEY,
    Cluster,
    ClusterFactory,
    ProxyClient,
    ProxyFactory,
    RawRequest,
    RelayFactory,
    ServeFactory,
    config_data,
    empty_bucket,
    merged,
)
from tcp_relay import Blackhole, TcpRelay
from yarl import URL

from imgproxy.auth.signing import UrlSigner
from imgproxy.demo import moto_server

# Nothing in the tests may reach a real AWS endpoint or read the developer's AWS profile.
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


@pytest.fixture(autouse=True)
def _forget_finished_apps() -> Iterator[None]:
    """aiohttp memoises each app's middleware chain (``web_app._cached_build_middleware``, an
    ``lru_cache`` of 1,024 entries keyed by the apps themselves), which keeps every finished test
    app alive, with its botocore session (about 10 MiB of parsed service model). One app per
    process in production, so only the suite pays: it reached 6 GiB, and its final garbage
    collection took minutes."""
    yield
    web_app._cached_build_middleware.cache_clear()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


# HTTPS S3 (issue 12): moto behind nginx terminating TLS with a throwaway private CA.

@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """The CA that signed ``https_endpoint``'s certificate."""
    return nginx_site.make_authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def other_authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A CA that did not: a misconfigured ca_bundle."""
    return nginx_site.make_authority(tmp_path_factory.mktemp("other-ca"), "some other company CA")


@pytest.fixture(scope="module")
def https_endpoint(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str,
                   authority: Authority) -> Iterator[str]:
    """``https://127.0.0.1:PORT``: nginx terminating TLS (``authority``'s certificate) in front of
    moto, for the module; skipped where nginx is not installed."""
    if NGINX is None:
        pytest.skip("the nginx binary is not installed (Debian: apt-get install nginx; .ci/run does)")
    prefix, port = tmp_path_factory.mktemp("s3-tls"), free_port()
    main = nginx_site.tls_front(prefix, port, moto_endpoint.removeprefix("http://"), authority)
    checked = nginx_site.check_config(prefix, main)
    assert checked.returncode == 0, checked.stderr
    nginx = Process(nginx_site.command(prefix, main), prefix / "process")
    try:
        try:
            nginx_site.wait_until_listening(prefix, port, nginx.popen.poll)
        except NginxError as exc:
            pytest.fail(f"{exc}\n{nginx.describe()}")
        yield f"https://127.0.0.1:{port}"
    finally:
        if nginx.popen.poll() is None:
            nginx.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            nginx.popen.wait(timeout=10)
        nginx.kill()


@pytest.fixture(scope="session")
def s3(moto_endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A fresh bucket per test, emptied at teardown (moto keeps every body in this process's
    memory for the session: without this the suite's process grew past 6 GiB, and its final
    garbage collection alone took minutes)."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    empty_bucket(s3, name)


@pytest.fixture
def proxy(aiohttp_client: AiohttpClient, moto_endpoint: str, bucket: str) -> ProxyFactory:
    """``await proxy(transform={...}, source={...}, clock=...)``: the app on the test config,
    its source the test's bucket (support.ProxyFactory says what each keyword changes)."""
    return ProxyFactory(aiohttp_client, moto_endpoint, bucket)


@pytest.fixture
async def client(proxy: ProxyFactory) -> ProxyClient:
    """The app on the test config, unchanged."""
    return await proxy()


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(SIGNING_KEY, "k1")


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


@pytest.fixture
def start_cluster(tmp_path: Path, moto_endpoint: str, bucket: str) -> Iterator[ClusterFactory]:
    """``start_cluster(workers=2, source={...}, cache={...}, ...)``: ``imgproxy serve --workers N``
    on the test config (streamed delivery, no metrics unless asked) with those overrides, once
    /healthz answers and every worker runs; killed when the test ends."""
    started: list[Process] = []

    def start(workers: int = 2, host: str = "127.0.0.1", *, source: dict[str, Any] | None = None,
              **sections: dict[str, Any]) -> Cluster:
        port = free_port()
        data = config_data(moto_endpoint, bucket, **{"delivery": {"mode": "stream"}, **(source or {})})
        data["server"].update(host=host, port=port, shutdown_timeout=CLUSTER_GRACE)
        del data["server"]["workers"]  # from --workers
        data["metrics"] = {"enabled": False}
        data = merged(data, sections)
        path = write_config(tmp_path, data, f"cluster-{len(started)}.toml")
        process = Process(command("serve", "--config", str(path), "--workers", str(workers)),
                          tmp_path / f"serve-{len(started)}", {"TMPDIR": str(tmp_path)})
        started.append(process)
        base_url = f"http://127.0.0.1:{port}"
        process.wait_until_healthy(base_url)
        cluster = Cluster(process, port, UrlSigner(SIGNING_KEY, "k1", base_url), path)
        wait_for(lambda: len(children(cluster.pid)) == workers, "all workers running")
        return cluster

    try:
        yield start
    finally:
        for process in started:
            process.kill()


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

@pytest.fixture
def clock() -> ManualClock:
    """Unix time for the app (``proxy(clock=clock)``) and the gate; moves only on ``advance``."""
    return ManualClock(DELIVERY_NOW)


@pytest.fixture
async def s3_gate(moto_endpoint: str, clock: ManualClock) -> AsyncIterator[S3Gate]:
    """moto behind a gate that checks presigned URLs' signatures and expiry as S3 does."""
    gate = await S3Gate(moto_endpoint, {ACCESS_KEY: SECRET_KEY}, clock).start()
    yield gate
    await gate.close()


@pytest.fixture
def idp() -> Iterator[FakeIdp]:
    """A local OpenID provider (discovery, JWKS) on a random loopback port, in its own thread."""
    provider = FakeIdp()
    yield provider
    provider.close()
