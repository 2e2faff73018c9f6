"""An image worker's own read of a source (``storage/worker_read.py``): exact bytes from moto over
a presigned URL, and every way a read can fail, as plain values the serving process maps.

The failures S3 cannot be made to produce (a body shorter than its Content-Length, a stall
after the headers, a 503 then a 200) come from a scripted HTTP server on a loopback socket; the
TLS ones from nginx with a throwaway CA in front of moto (``https_endpoint``).
"""

from __future__ import annotations

import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from nginx_site import Authority
from support import ACCESS_KEY, SECRET_KEY

from imgproxy.config import AddressingStyle
from imgproxy.storage import worker_read
from imgproxy.storage.presign import PresignCredentials, locate, presign_get
from imgproxy.storage.worker_read import ReadMeta, SourceRead, SourceReadFailed, read_source

CREDENTIALS = PresignCredentials(ACCESS_KEY, SECRET_KEY)
BODY = bytes(range(256)) * 4096  # 1 MiB: several reads into the buffer


def reading(url: str, **overrides: Any) -> SourceRead:
    options: dict[str, Any] = {"source": "photos", "max_bytes": 10 * len(BODY), "connect_timeout": 2.0,
                               "read_timeout": 2.0, "attempts": 2, **overrides}
    return SourceRead(url, **options)


def presigned(endpoint: str, bucket: str, key: str) -> str:
    return presign_get(locate(endpoint, "us-east-1", bucket, AddressingStyle.PATH), bucket, key, CREDENTIALS,
                       signed_at=datetime.now(UTC), expires_in=60)


def failure(read: SourceRead) -> SourceReadFailed:
    with pytest.raises(SourceReadFailed) as caught:
        read_source(read)
    return caught.value


def test_the_object_is_read_into_one_bytes_of_its_length(moto_endpoint: str, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="dir/a b+c.jpg", Body=BODY, ContentType="image/jpeg")
    meta, data = read_source(reading(presigned(moto_endpoint, bucket, "dir/a b+c.jpg")))
    assert type(data) is bytes  # what io.BytesIO shares (a bytearray it would copy) for Pillow
    assert data == BODY
    etag = s3.head_object(Bucket=bucket, Key="dir/a b+c.jpg")["ETag"]
    assert (meta.etag, meta.length, meta.content_type) == (etag, len(BODY), "image/jpeg")
    assert meta.seconds > 0


def test_a_missing_key_is_s3s_status_and_code(moto_endpoint: str, bucket: str) -> None:
    failed = failure(reading(presigned(moto_endpoint, bucket, "nobody.jpg")))
    assert (failed.kind, failed.status, failed.code) == ("status", 404, "NoSuchKey")


def test_an_object_over_the_limit_is_refused_from_its_content_length(
        moto_endpoint: str, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="big.jpg", Body=BODY)
    failed = failure(reading(presigned(moto_endpoint, bucket, "big.jpg"), max_bytes=len(BODY) - 1))
    assert (failed.kind, failed.status) == ("too_large", len(BODY))


class Scripted:
    """An HTTP server on a loopback port that answers each connection's request with the next
    of ``replies`` (raw bytes, or a callable given the socket), then closes."""

    def __init__(self, replies: list[bytes | Callable[[socket.socket], None]]) -> None:
        self.replies = list(replies)
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bucket/key.jpg?X-Amz-Signature=secret"

    def _serve(self) -> None:
        while self.replies:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.requests += 1
                reply = self.replies.pop(0)
                if callable(reply):
                    reply(conn)
                else:
                    conn.sendall(reply)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def start(*replies: bytes | Callable[[socket.socket], None]) -> Scripted:
        servers.append(Scripted(list(replies)))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def ok(body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nETag: \"e\"\r\nContent-Type: image/jpeg\r\n"
            "Connection: close\r\n\r\n").encode() + body


class KeptAlive:
    """An HTTP/1.1 server on a loopback port that keeps each connection for ``per_connection``
    requests (each answered ``ok(BODY)`` without ``Connection: close``), then closes it without
    a word, as an endpoint's idle timeout does."""

    def __init__(self, per_connection: int) -> None:
        self.per_connection = per_connection
        self.connections = 0
        self.requests = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bucket/key.jpg?X-Amz-Signature=secret"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                for _ in range(self.per_connection):
                    request = b""
                    while b"\r\n\r\n" not in request:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        request += chunk
                    if not request:
                        break
                    self.requests += 1
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(BODY)}\r\nETag: \"e\"\r\n\r\n"
                    conn.sendall(head.encode() + BODY)


def test_a_kept_alive_connection_is_reused_and_one_closed_meanwhile_is_replaced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    kept: dict[Any, Any] = {}
    monkeypatch.setattr(worker_read, "_CONNECTIONS", kept)  # this test's connections only
    server = KeptAlive(per_connection=2)
    try:
        for _ in range(5):  # connection 1: reads 1 and 2; read 3 finds it closed, so a new one
            _, data = read_source(reading(server.url, attempts=1))
            assert data == BODY
        assert (server.requests, server.connections) == (5, 3)
    finally:
        for conn in kept.values():
            conn.close()
        server.listener.close()


def test_a_body_shorter_than_its_content_length_is_a_failure(scripted: Callable[..., Scripted]) -> None:
    server = scripted(ok(b"x" * 999, length=1000))
    failed = failure(reading(server.url))
    assert failed.kind in ("short", "unreachable")  # urllib3 calls a cut body a protocol error
    assert failed.kind != "short" or "999 of 1000" in failed.detail


def test_a_body_without_content_length_is_refused(scripted: Callable[..., Scripted]) -> None:
    server = scripted(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nendless")
    failed = failure(reading(server.url))
    assert (failed.kind, failed.detail) == ("short", "no Content-Length")


def test_a_5xx_is_retried_and_the_retry_answers(scripted: Callable[..., Scripted]) -> None:
    server = scripted(b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", ok(b"abc"))
    meta, data = read_source(reading(server.url))
    assert (bytes(data), meta.etag, server.requests) == (b"abc", '"e"', 2)


def test_the_last_5xx_is_reported_with_its_code(scripted: Callable[..., Scripted]) -> None:
    error = b"<Error><Code>SlowDown</Code></Error>"
    reply = f"HTTP/1.1 503 Slow Down\r\nContent-Length: {len(error)}\r\n\r\n".encode() + error
    server = scripted(reply, reply)
    failed = failure(reading(server.url))
    assert (failed.kind, failed.status, failed.code, server.requests) == ("status", 503, "SlowDown", 2)


def test_a_stall_after_the_headers_is_a_timeout(scripted: Callable[..., Scripted]) -> None:
    def stall(conn: socket.socket) -> None:
        conn.sendall(ok(b"x" * 100, length=1000))
        time.sleep(1.5)
    server = scripted(stall)
    started = time.monotonic()
    failed = failure(reading(server.url, read_timeout=0.3))
    assert failed.kind == "timeout"
    assert time.monotonic() - started < 1.2


def test_a_refused_connection_is_unreachable_after_its_retries() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    failed = failure(reading(f"http://127.0.0.1:{port}/b/k?X-Amz-Signature=s"))
    assert failed.kind == "unreachable"
    assert failed.detail == "ConnectionRefusedError"


def test_https_with_the_right_ca_reads(https_endpoint: str, authority: Authority, s3: Any,
                                       bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=BODY)
    _, data = read_source(reading(presigned(https_endpoint, bucket, "k.jpg"), ca_bundle=str(authority.ca)))
    assert data == BODY


def test_https_without_the_ca_names_the_certificate_problem(https_endpoint: str, s3: Any,
                                                            bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=BODY)
    failed = failure(reading(presigned(https_endpoint, bucket, "k.jpg")))
    assert failed.kind == "tls"
    assert failed.detail.startswith("certificate verify failed: ")
    assert "X-Amz" not in failed.detail


def test_https_unverified_reads(https_endpoint: str, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k.jpg", Body=BODY)
    _, data = read_source(reading(presigned(https_endpoint, bucket, "k.jpg"), verify_tls=False))
    assert data == BODY


def test_the_url_is_in_no_repr_and_the_values_cross_a_pipe() -> None:
    read = reading("http://s3.example/b/k.jpg?X-Amz-Signature=topsecret")
    assert "topsecret" not in repr(read)
    assert pickle.loads(pickle.dumps(read))  # noqa: S301 - our own bytes == read
    failed = SourceReadFailed("status", 404, "NoSuchKey", seconds=0.5)
    again = pickle.loads(pickle.dumps(failed))  # noqa: S301 - our own bytes
    assert (again.kind, again.status, again.code, again.seconds) == ("status", 404, "NoSuchKey", 0.5)
    meta = ReadMeta('"e"', 3, None, 0.1)
    assert pickle.loads(pickle.dumps(meta))  # noqa: S301 - our own bytes == meta
