"""Clients that stop reading, or read a trickle, against a real ``imgproxy serve`` over raw
sockets: their answers are cut off by ``send_timeout`` and ``min_send_rate`` and what they held
is let go (issue 10, point 1)."""

from __future__ import annotations

import io
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from processes import Server, http_get, launch_server
from rawhttp import connect, get, is_dropped, read_reply
from support import SIGNING_KEY, ServeFactory, config_data, empty_bucket

from imgproxy.auth.signing import UrlSigner

BIG_KEY = "scans/big.bin"
BIG = os.urandom(24 * 1024 * 1024)  # more than every socket buffer between us and the server
SEND_TIMEOUT = 1.5
MARGIN = 3.0
Start = Callable[..., Server]


@pytest.fixture(scope="module")
def big_bucket(s3: Any) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=BIG_KEY, Body=BIG, ContentType="application/octet-stream")
    yield name
    empty_bucket(s3, name)


@pytest.fixture
def start(serve: ServeFactory, big_bucket: str) -> Start:
    """``start(**server_keys)``: ``imgproxy serve`` streaming originals."""
    return lambda **server: serve(big_bucket, source={"delivery": {"mode": "stream"}}, server=server)


def big_target(server: Server) -> str:
    url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", BIG_KEY, ttl=600)
    return url[len(server.base_url):]


def wait_for_log(server: Server, pattern: str, timeout: float = MARGIN) -> str:
    deadline = time.monotonic() + timeout
    while not (match := re.search(pattern, server.process.stderr)):
        if time.monotonic() > deadline:
            pytest.fail(f"no {pattern!r} in the log:\n{server.process.stderr[-3000:]}")
        time.sleep(0.1)
    return match.group(0)


def test_a_client_that_stops_reading_is_cut_off_after_send_timeout(start: Start) -> None:
    server = start(send_timeout=SEND_TIMEOUT, min_send_rate=0)
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(get(big_target(server)))
        assert read_reply(sock, head_only=True).status == 200
        started = time.monotonic()
        assert is_dropped(sock, 2 * SEND_TIMEOUT + MARGIN)  # reads nothing more
        assert time.monotonic() - started < 2 * SEND_TIMEOUT + MARGIN
    wait_for_log(server, r"status=200 bytes=\d+ .*aborted=send_timeout")


def test_a_client_that_reads_a_trickle_is_cut_off_by_the_minimum_rate(start: Start) -> None:
    # A small kernel buffer, so the trickle reaches the proxy's transport as progress (with
    # megabytes of kernel buffer in between, a trickle looks idle and send_timeout cuts it).
    server = start(send_timeout=2.0, min_send_rate="1MiB", send_buffer="32KiB")
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(get(big_target(server)))
        assert read_reply(sock, head_only=True).status == 200
        deadline, closed, received = time.monotonic() + 3 * 2.0 + 2 * MARGIN, False, 0
        sock.settimeout(1.0)
        while not closed and time.monotonic() < deadline:
            try:
                chunk = sock.recv(2048)  # 2 KiB per 0.05 s, ~40 KiB/s: never idle, too slow
            except (ConnectionResetError, BrokenPipeError):
                closed = True
            except TimeoutError:
                continue
            else:
                closed, received = not chunk, received + len(chunk)
            time.sleep(0.05)
        assert closed
        assert received < len(BIG) // 4
    wait_for_log(server, r"aborted=slow_client")


def test_a_client_that_reads_keeps_its_download(start: Start) -> None:
    server = start(send_timeout=SEND_TIMEOUT, min_send_rate="64KiB")
    reply = http_get(server.base_url + big_target(server))
    assert reply.status == 200
    assert reply.body == BIG


def test_a_whole_answer_is_cut_off_too_when_its_client_stops_reading(
        tmp_path: Path, moto_endpoint: str, big_bucket: str, s3: Any) -> None:
    """A rendered variant is written whole, not streamed: the same limit holds."""
    noise = Image.effect_noise((1600, 1600), 100).convert("RGB")  # ~7 MB as PNG
    key = "scans/noise.png"
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    s3.put_object(Bucket=big_bucket, Key=key, Body=buffer.getvalue(), ContentType="image/png")
    data = config_data(moto_endpoint, big_bucket)
    data["server"].update(send_timeout=SEND_TIMEOUT, min_send_rate=0)
    data["transform"] = {"workers": 1}
    server = launch_server(tmp_path / "serve", data)
    try:
        url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign(
            "photos", key, ttl=600, params={"w": "1599", "fmt": "png"})
        assert http_get(url).status == 200  # rendered once; the next answer comes from the cache
        with connect(server.port, rcvbuf=4096) as sock:
            sock.sendall(get(url[len(server.base_url):]))
            assert read_reply(sock, head_only=True).status == 200
            assert is_dropped(sock, 2 * SEND_TIMEOUT + MARGIN)
        wait_for_log(server, r"status=200 .*aborted=send_timeout")
    finally:
        server.process.kill()


def test_a_stalled_client_does_not_hold_up_a_graceful_stop(start: Start) -> None:
    server = start(send_timeout=60, shutdown_timeout=1)
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(get(big_target(server)))
        assert read_reply(sock, head_only=True).status == 200
        time.sleep(0.5)
        started = time.monotonic()
        assert server.process.stop(signal.SIGTERM, timeout=1 + MARGIN) == 0
        assert time.monotonic() - started < 1 + MARGIN
