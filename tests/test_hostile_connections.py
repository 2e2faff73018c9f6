"""Slow request heads, silent and idle connections, and more connections than the cap, against a
real ``imgproxy serve`` over raw sockets (issue 10, point 1: slowloris and idle keep-alive)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from processes import PHOTO, PHOTO_KEY, Server, http_get
from rawhttp import connect, exchange, get, is_closed, read_reply
from support import SIGNING_KEY, ServeFactory

from imgproxy.auth.signing import UrlSigner

HEADER_TIMEOUT = 1.0
MARGIN = 2.0  # seconds of slack on a loaded 2-core machine
Start = Callable[..., Server]


@pytest.fixture
def start(serve: ServeFactory, bucket: str, s3: Any) -> Start:
    """``start(**server_keys)``: ``imgproxy serve`` with those ``[server]`` keys."""
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    return lambda **server: serve(bucket, server=server)


def signed_target(server: Server) -> str:
    url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", PHOTO_KEY, ttl=600)
    return url[len(server.base_url):]


def test_a_request_head_that_never_completes_gets_408_and_is_closed(start: Start) -> None:
    server = start(header_timeout=HEADER_TIMEOUT)
    with connect(server.port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(20):  # a byte now and then: the connection is never idle
            sock.sendall(b"X")
            time.sleep(0.2)
            sock.setblocking(False)
            try:
                if sock.recv(1, 2):  # MSG_PEEK: the answer has arrived
                    break
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        sock.settimeout(MARGIN)
        reply = read_reply(sock)
        assert time.monotonic() - started < HEADER_TIMEOUT + MARGIN
        assert (reply.status, reply.json()["error"]) == (408, "request_timeout")
        assert reply.headers["connection"] == "close"
        assert is_closed(sock, MARGIN)
    time.sleep(0.3)
    assert re.search(r"status=408 .*error=request_timeout reason=header_timeout", server.process.stderr)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(start: Start) -> None:
    server = start(header_timeout=HEADER_TIMEOUT)
    with connect(server.port) as sock:
        started = time.monotonic()
        sock.settimeout(HEADER_TIMEOUT + MARGIN)
        assert sock.recv(100) == b""
        assert HEADER_TIMEOUT - 0.2 < time.monotonic() - started < HEADER_TIMEOUT + MARGIN


def test_a_head_sent_in_pieces_within_the_timeout_is_answered(start: Start) -> None:
    server = start(header_timeout=HEADER_TIMEOUT)
    request = get(signed_target(server))
    with connect(server.port) as sock:
        for piece in (request[:10], request[10:40], request[40:]):
            sock.sendall(piece)
            time.sleep(0.2)
        reply = read_reply(sock)
    assert (reply.status, reply.body) == (200, PHOTO)


def test_an_idle_keep_alive_connection_lives_until_keepalive_timeout_not_header_timeout(
        start: Start) -> None:
    server = start(header_timeout=HEADER_TIMEOUT, keepalive_timeout=HEADER_TIMEOUT * 3)
    with connect(server.port) as sock:
        sock.sendall(get("/healthz"))
        assert read_reply(sock).status == 200
        time.sleep(HEADER_TIMEOUT * 1.5)  # idle, between requests: no head has begun
        sock.sendall(get("/healthz"))
        assert read_reply(sock).status == 200
        assert is_closed(sock, HEADER_TIMEOUT * 3 + MARGIN)


def test_a_new_connection_beyond_the_cap_closes_the_oldest_idle_one(start: Start) -> None:
    server = start(max_connections=4)
    idle = [connect(server.port) for _ in range(4)]
    try:
        for sock in idle:
            sock.sendall(get("/healthz"))
            assert read_reply(sock).status == 200
            time.sleep(0.05)  # so "oldest" is well defined
        reply = exchange(server.port, get(signed_target(server)))
        assert (reply.status, reply.body) == (200, PHOTO)
        assert is_closed(idle[0], MARGIN)  # the one idle the longest
        for sock in idle[2:]:
            sock.sendall(get("/healthz"))
            assert read_reply(sock).status == 200
    finally:
        for sock in idle:
            sock.close()


def test_slow_heads_cannot_lock_out_a_normal_client(start: Start) -> None:
    server = start(max_connections=20, header_timeout=30)
    lorises = [connect(server.port) for _ in range(40)]
    try:
        for sock in lorises:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        started = time.monotonic()
        reply = http_get(server.base_url + signed_target(server))
        assert (reply.status, reply.body) == (200, PHOTO)
        assert time.monotonic() - started < MARGIN
    finally:
        for sock in lorises:
            sock.close()
