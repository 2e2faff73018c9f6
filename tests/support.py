"""What the tests share besides fixtures: the test config's secrets and names, the config tables
built from them, and ``ProxyFactory``, the one way a test builds the app under test.

conftest.py holds the fixtures (``proxy`` is a ``ProxyFactory``) and imports from here, as the
test modules do: no test imports conftest. The other support modules are ``processes`` (imgproxy
as a child process), ``rawhttp`` (bytes on a socket), ``tcp_relay`` (the wire to S3 measured),
``s3_gate`` (presigned URLs checked as S3 does), ``nginx_site`` (the deploy configs), ``photos``
(generated photo-like images) and ``ssim`` (how close a render is to a reference).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from processes import Process, Server
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient
from tcp_relay import TcpRelay

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import DEFAULT_INPUT_FORMATS, Config, parse_config
from imgproxy.transform.jobs import RenderSettings
from imgproxy.web.app import create_app

# The render settings of the direct pipeline and pool tests: today's config defaults, spelled out.
RENDER_SETTINGS: Final = RenderSettings(
    input_formats=DEFAULT_INPUT_FORMATS,
    max_source_pixels=50_000_000,
    jpeg_quality=82,
    webp_quality=80,
    avif_quality=60,
    png_compress_level=6,
)

SIGNING_KEY: Final = "test-signing-key-0123456789abcdef-0123456789"  # 44 bytes
OTHER_KEY: Final = "another-signing-key-for-rotation-0123456789ab"
TOKEN: Final = "test-bearer-token-0123456789abcdef0123456789"
SCOPED_TOKEN: Final = "scoped-bearer-token-0123456789abcdef01234567"
ACCESS_KEY: Final = "testing-access-key"
SECRET_KEY: Final = "testing-secret-key"
REGION: Final = "us-east-1"
# The test config's [auth.tokens]: "ops" may read everything, "hr" only photos:employees/*. A
# test adding a token of its own writes ``auth={"tokens": {**TOKENS, "dash": {...}}}``.
TOKENS: Final[Mapping[str, Mapping[str, Any]]] = {
    "ops": {"token": TOKEN, "scopes": ["*"]},
    "hr": {"token": SCOPED_TOKEN, "scopes": ["photos:employees/*"]},
}
DELIVERY_NOW: Final = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a whole hour, so windows start here


def source_table(endpoint: str, bucket: str, **overrides: Any) -> dict[str, Any]:
    """A ``[sources.x]`` (or ``[cache.store]``) table for ``bucket`` on the S3 at ``endpoint``."""
    table: dict[str, Any] = {
        "bucket": bucket,
        "region": REGION,
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
    """The test config as TOML would give it: one source, "photos", on ``bucket``."""
    return {
        # One process unless a test asks for workers (test_workers.py); the default is one per CPU.
        "server": {"host": "127.0.0.1", "port": 0, "ready_cache_seconds": 0, "workers": 1},
        "auth": {
            "keys": {"k1": SIGNING_KEY},
            "max_ttl": "1d",
            "tokens": copy.deepcopy(dict(TOKENS)),
        },
        "sources": {"photos": source_table(endpoint, bucket, **source_overrides)},
        # Workers start on the first transform, so tests that never transform spawn none.
        "transform": {"prestart_workers": False},
        # Any free port: many apps run at once, and 9090 may be taken on the test machine.
        "metrics": {"port": 0},
    }


def dir_of_another_user(parent: Path) -> Path:
    """A 0700 directory owned by nobody (uid 65534); skips the test unless it runs as root."""
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = parent / "theirs"
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)
    return path


def merged(data: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``data`` with each of ``sections`` laid over the top-level table of its name: the keys a
    section names replace the table's (a nested table is replaced whole), the others stay."""
    result = dict(data)
    for name, section in sections.items():
        result[name] = {**result.get(name, {}), **section}
    return result


def empty_bucket(s3: Any, name: str) -> None:
    """Delete every object of ``name``: moto keeps object bodies in memory for the session."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys})


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metric_samples(text: str) -> Samples:
    """A scrape's text as {(sample name, labels): value}."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


ProxyClient = TestClient[web.Request, web.Application]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Overrides:
    """One set of changes to the test config: ``[sources.photos]`` keys, top-level tables, a clock."""

    source: Mapping[str, Any]
    sections: Mapping[str, Mapping[str, Any]]
    clock: Clock | None = None

    def apply(self, data: Mapping[str, Any]) -> dict[str, Any]:
        photos = {**data["sources"]["photos"], **self.source}
        return merged(merged(data, {"sources": {"photos": photos}}), self.sections)


class ProxyFactory:
    """The app under test on the test config: the ``proxy`` fixture.

    ``await proxy()`` is a test client for ``create_app(config)`` whose one source, "photos",
    is the test's bucket on the moto server, reached over HTTP by the real aiobotocore client;
    ``client.app`` is the app. Each keyword changes the config:

    - ``source={...}``: keys of ``[sources.photos]`` (``endpoint_url`` to put a relay or a dead
      port in front of S3, ``bucket``, ``prefix``, ``delivery``, ...);
    - ``transform={...}``, ``server={...}``, ``auth={...}``, any other top-level table: its
      keys replace the test config's (see ``merged``); ``sources={"archive": {...}}`` adds one;
    - ``clock=``: the app's clock (``create_app(clock=...)``), the real time unless given.

    ``proxy.preset(...)`` takes the same keywords and is a factory with them laid under every
    call's (for a module whose apps all share some), ``proxy.app(...)`` gives the app alone (for
    a test that runs it another way than through the test client), and ``proxy.config(...)`` its
    ``Config``.
    """

    def __init__(self, aiohttp_client: AiohttpClient, endpoint: str, bucket: str,
                 presets: tuple[Overrides, ...] = ()) -> None:
        self._aiohttp_client = aiohttp_client
        self._endpoint = endpoint
        self._bucket = bucket
        self._presets = presets

    def preset(self, *, source: Mapping[str, Any] | None = None, clock: Clock | None = None,
               **sections: Mapping[str, Any]) -> ProxyFactory:
        overrides = Overrides(source or {}, sections, clock)
        return ProxyFactory(self._aiohttp_client, self._endpoint, self._bucket, (*self._presets, overrides))

    def config(self, *, source: Mapping[str, Any] | None = None, **sections: Mapping[str, Any]) -> Config:
        data = config_data(self._endpoint, self._bucket)
        for overrides in (*self._presets, Overrides(source or {}, sections)):
            data = overrides.apply(data)
        return parse_config(data, environ={})

    def app(self, *, source: Mapping[str, Any] | None = None, clock: Clock | None = None,
            **sections: Mapping[str, Any]) -> web.Application:
        chosen = clock or next((p.clock for p in reversed(self._presets) if p.clock is not None), time.time)
        return create_app(self.config(source=source, **sections), clock=chosen)

    async def __call__(self, *, source: Mapping[str, Any] | None = None, clock: Clock | None = None,
                       **sections: Mapping[str, Any]) -> ProxyClient:
        return await self._aiohttp_client(self.app(source=source, clock=clock, **sections))


@dataclass(frozen=True)
class Cluster:
    """A running ``imgproxy serve --workers N`` (the ``start_cluster`` fixture's)."""

    process: Process
    port: int
    signer: UrlSigner
    config_path: Path  # its --config file (a reload test rewrites it)

    @property
    def pid(self) -> int:
        return self.process.popen.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, key: str, **params: str) -> str:
        return self.signer.sign("photos", key, params=params)


ClusterFactory = Callable[..., Cluster]
RelayFactory = Callable[[str], Awaitable[TcpRelay]]
ServeFactory = Callable[..., Server]
RawRequest = Callable[..., Awaitable[ClientResponse]]
