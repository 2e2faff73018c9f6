"""Slow readers against the S3 pools, through a real ``imgproxy serve``: stalled streams let go of
their connections, so originals, transforms, HEADs and readiness stay prompt; a resumed stream
is byte-exact; a full pool is 503 ``overloaded`` with Retry-After, not a storage timeout
(issue 10, point 1)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from PIL import Image
from processes import Server, http_get
from rawhttp import connect, get, read_reply
from support import SIGNING_KEY, ProxyFactory, ServeFactory, empty_bucket
from tcp_relay import Blackhole

from imgproxy.auth.signing import UrlSigner

BIG_KEY = "scans/big.bin"
BIG = os.urandom(24 * 1024 * 1024)
PHOTO_KEY = "team/photo.jpg"
POOL = 4
PROMPT = 3.0  # seconds a normal request may take on a loaded 2-core machine
Start = Callable[..., Server]


def jpeg(width: int = 640, height: int = 480) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


PHOTO = jpeg()


@pytest.fixture(scope="module")
def pool_bucket(s3: Any) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=BIG_KEY, Body=BIG, ContentType="application/octet-stream")
    s3.put_object(Bucket=name, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/jpeg")
    yield name
    empty_bucket(s3, name)


@pytest.fixture
def start(serve: ServeFactory, pool_bucket: str) -> Start:
    """``start(pool=N, **server_keys)``: ``imgproxy serve`` streaming, pools of ``pool``."""
    def launch(pool: int = POOL, **server: Any) -> Server:
        source = {"delivery": {"mode": "stream"}, "max_connections": pool, "pool_timeout": 1}
        return serve(pool_bucket, source=source, server=server, transform={"workers": 1})
    return launch


def sign(server: Server, key: str, **params: str) -> str:
    return UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", key, ttl=600, params=params)


def stall(server: Server, count: int) -> list[socket.socket]:
    """``count`` clients that ask for the big object, read its head, and stop reading."""
    stalled = []
    for _ in range(count):
        sock = connect(server.port, rcvbuf=4096)
        sock.sendall(get(sign(server, BIG_KEY)[len(server.base_url):]))
        assert read_reply(sock, head_only=True).status == 200
        stalled.append(sock)
    return stalled


def timed(url: str, method: str = "GET") -> tuple[int, float, bytes]:
    started = time.monotonic()
    reply = http_get(url, method=method)
    return reply.status, time.monotonic() - started, reply.body


def metric(server: Server, name: str, labels: str = "") -> float:
    match = re.search(r"metrics on (http://\S+/metrics)", server.process.stderr)
    assert match
    text = http_get(match.group(1)).body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_stalled_streams_leave_the_pool_to_everyone_else(start: Start) -> None:
    server = start(send_timeout=60)  # the stalled clients stay connected throughout
    stalled = stall(server, 3 * POOL)
    try:
        time.sleep(2.5)  # stalled past DETACH_AFTER: their S3 connections are let go
        for url, method, expected in ((sign(server, PHOTO_KEY), "GET", PHOTO),
                                      (sign(server, PHOTO_KEY, w="64"), "GET", None),
                                      (sign(server, PHOTO_KEY), "HEAD", b""),
                                      (sign(server, BIG_KEY), "HEAD", b"")):
            status, seconds, body = timed(url, method)
            assert status == 200, (url, method)
            assert seconds < PROMPT, (url, method, seconds)
            assert expected is None or body == expected
        assert timed(server.base_url + "/readyz")[0] == 200
        status, seconds, body = timed(sign(server, BIG_KEY))  # a whole original, streamed
        assert (status, hashlib.sha256(body).digest()) == (200, hashlib.sha256(BIG).digest())
    finally:
        for sock in stalled:
            sock.close()


def test_a_stream_that_let_go_resumes_byte_exact(start: Start) -> None:
    server = start(pool=2, send_timeout=60)  # one stream is half the pool: it lets go
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(get(sign(server, BIG_KEY)[len(server.base_url):]))
        reply = read_reply(sock, head_only=True)
        time.sleep(2.5)
        body, digest = reply.body, hashlib.sha256()
        digest.update(body)
        received = len(body)
        sock.settimeout(10)
        while received < len(BIG) and (chunk := sock.recv(1 << 20)):
            digest.update(chunk)
            received += len(chunk)
    assert received == len(BIG)
    assert digest.digest() == hashlib.sha256(BIG).digest()
    assert metric(server, "imgproxy_s3_duration_seconds_count", 'operation="resume"') >= 1


def test_an_object_replaced_while_a_stream_let_go_is_cut_not_spliced(
        start: Start, s3: Any, pool_bucket: str) -> None:
    key = "scans/replaced.bin"
    old, new = os.urandom(len(BIG)), os.urandom(len(BIG))
    s3.put_object(Bucket=pool_bucket, Key=key, Body=old)
    server = start(pool=2, send_timeout=60)
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(get(sign(server, key)[len(server.base_url):]))
        reply = read_reply(sock, head_only=True)
        time.sleep(2.5)
        s3.put_object(Bucket=pool_bucket, Key=key, Body=new)
        data = bytearray(reply.body)
        sock.settimeout(10)
        try:
            while chunk := sock.recv(1 << 20):
                data += chunk
        except ConnectionResetError:
            pass
    assert len(data) < len(old)
    assert bytes(data) == old[:len(data)]
    time.sleep(0.3)
    assert "aborted=storage_failed" in server.process.stderr


async def test_a_full_pool_is_503_overloaded_with_retry_after_not_a_timeout(
        proxy: ProxyFactory, blackhole: Blackhole) -> None:
    client = await proxy(source={"bucket": "b1", "endpoint_url": blackhole.endpoint, "max_connections": 1,
                                 "pool_timeout": 0.3, "read_timeout": 5, "delivery": {"mode": "stream"}})
    signer = UrlSigner(SIGNING_KEY, "k1")
    first = asyncio.ensure_future(client.get(signer.sign("photos", "a.jpg")))  # holds the slot
    await asyncio.sleep(0.1)
    started = time.monotonic()
    response = await client.get(signer.sign("photos", "b.jpg"))
    waited = time.monotonic() - started
    body = await response.json()
    assert (response.status, body["error"]) == (503, "overloaded")
    assert response.headers["Retry-After"] == "1"
    assert 0.25 < waited < 2.0  # pool_timeout, not connect + read timeout
    first.cancel()
