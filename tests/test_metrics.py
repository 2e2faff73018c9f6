"""Prometheus metrics through the whole stack: the real scrape endpoint over HTTP, real moto S3.

Every test reads the counters, makes its own requests, reads them again and checks the change,
so nothing depends on what other requests the app has answered.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from support import ProxyClient, ProxyFactory

from imgproxy.auth.signing import UrlSigner
from imgproxy.web.appkeys import METRICS_URL

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
IMAGE_ROUTE = "/img/{tail}"


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((width, height)).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


class Metered:
    """A proxy and its metrics: requests in, scrapes of the metrics endpoint out."""

    def __init__(self, client: ProxyClient, signer: UrlSigner) -> None:
        self.client = client
        self.signer = signer

    @property
    def metrics_url(self) -> str:
        assert self.client.app is not None
        return self.client.app[METRICS_URL]

    async def scrape(self) -> Samples:
        async with self.client.session.get(self.metrics_url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        return {(sample.name, frozenset(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    async def get(self, key: str, **params: str) -> tuple[int, bytes]:
        async with self.client.get(self.signer.sign("photos", key, params=params)) as response:
            return response.status, await response.read()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def change(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


MeteredFactory = Callable[..., Awaitable[Metered]]


@pytest.fixture
def make_metered(proxy: ProxyFactory, bucket: str, s3: Any, signer: UrlSigner) -> MeteredFactory:
    """``await make_metered(transform={...})``: a proxy on the test bucket, holding photo.jpg."""
    s3.put_object(Bucket=bucket, Key="photo.jpg", Body=jpeg(1600, 1200), ContentType="image/jpeg")

    async def build(transform: dict[str, Any] | None = None) -> Metered:
        return Metered(await proxy(transform={"workers": 1, **(transform or {})}), signer)

    return build


@pytest.fixture
async def metered(make_metered: MeteredFactory) -> Metered:
    return await make_metered()


async def test_a_streamed_get_counts_one_request_and_its_bytes(metered: Metered) -> None:
    before = await metered.scrape()
    status, body = await metered.get("photo.jpg")
    after = await metered.scrape()
    assert status == 200
    labels = {"route": IMAGE_ROUTE, "status": "200", "delivery": "stream"}
    assert change(before, after, "imgproxy_requests_total", **labels) == 1
    assert change(before, after, "imgproxy_response_bytes_total", delivery="stream") == len(body)
    assert change(before, after, "imgproxy_request_duration_seconds_count", route=IMAGE_ROUTE) == 1
    assert change(before, after, "imgproxy_s3_duration_seconds_count", operation="get") == 1


async def test_a_transform_miss_then_hit_moves_the_cache_counters(metered: Metered) -> None:
    before = await metered.scrape()
    first, _ = await metered.get("photo.jpg", w="64")
    middle = await metered.scrape()
    second, _ = await metered.get("photo.jpg", w="64")
    after = await metered.scrape()
    assert (first, second) == (200, 200)
    assert change(before, middle, "imgproxy_variant_cache_misses_total") == 1
    assert change(before, middle, "imgproxy_variant_cache_hits_total") == 0
    assert change(before, middle, "imgproxy_transform_duration_seconds_count") == 1
    assert value(middle, "imgproxy_variant_cache_bytes") > 0
    assert change(middle, after, "imgproxy_variant_cache_hits_total") == 1
    assert change(middle, after, "imgproxy_variant_cache_misses_total") == 0
    assert change(middle, after, "imgproxy_transform_duration_seconds_count") == 0


async def test_a_missing_object_counts_an_s3_error_by_its_kind(metered: Metered) -> None:
    before = await metered.scrape()
    status, _ = await metered.get(f"missing-{uuid.uuid4().hex}.jpg")
    after = await metered.scrape()
    assert status == 404
    assert change(before, after, "imgproxy_s3_errors_total", operation="get", code="not_found") == 1
    labels = {"route": IMAGE_ROUTE, "status": "404", "delivery": "stream"}
    assert change(before, after, "imgproxy_requests_total", **labels) == 1


async def test_a_saturated_pool_counts_its_rejections(make_metered: MeteredFactory) -> None:
    metered = await make_metered(transform={"workers": 1, "queue_size": 0})
    before = await metered.scrape()
    # Distinct renders at once: one worker, no queue (the first also waits for the worker to start).
    results = await asyncio.gather(*(metered.get("photo.jpg", w=str(900 - i), fmt="png") for i in range(5)))
    after = await metered.scrape()
    rejected = sum(1 for status, _ in results if status == 503)
    assert rejected >= 1
    assert change(before, after, "imgproxy_transform_rejections_total") == rejected
    assert value(after, "imgproxy_transform_queue_depth") == 0


async def test_identical_concurrent_renders_count_the_coalesced_waiters(metered: Metered) -> None:
    before = await metered.scrape()
    results = await asyncio.gather(*(metered.get("photo.jpg", w="120") for _ in range(4)))
    after = await metered.scrape()
    assert [status for status, _ in results] == [200] * 4
    coalesced = change(before, after, "imgproxy_coalesced_waiters_total")
    misses = change(before, after, "imgproxy_variant_cache_misses_total")
    assert change(before, after, "imgproxy_transform_duration_seconds_count") == 1
    assert coalesced == misses - 1  # every lookup that missed but one waited for that one render


async def test_the_metrics_are_not_served_on_the_public_port(metered: Metered) -> None:
    async with metered.client.get("/metrics") as response:
        assert response.status == 404
    assert str(metered.client.make_url("/")).rstrip("/") not in metered.metrics_url


async def test_metrics_can_be_turned_off(proxy: ProxyFactory) -> None:
    client = await proxy(metrics={"enabled": False})
    assert client.app is not None
    assert METRICS_URL not in client.app


def test_with_a_multiprocess_directory_a_scrape_sums_every_process(tmp_path: Path) -> None:
    # prometheus-client chooses its value storage at import, so this runs in fresh interpreters.
    script = (
        "from imgproxy.web.metrics import Metrics, multiprocess_dir\n"
        "m = Metrics(multiprocess_dir())\n"
        "m.observe_request('/img/{tail}', 200, 'stream', 10, 0.01, None)\n"
        "import sys; sys.stdout.write(m.exposition().decode())\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    outputs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              timeout=60, check=True).stdout for _ in range(2)]
    line = 'imgproxy_requests_total{delivery="stream",route="/img/{tail}",status="200"}'
    assert f"{line} 1.0" in outputs[0]
    assert f"{line} 2.0" in outputs[1]
