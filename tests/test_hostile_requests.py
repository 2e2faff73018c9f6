"""Requests the HTTP parser refuses, and values chosen to forge log lines, against a real
``imgproxy serve`` over raw sockets: the error contract holds, and nothing the client sent
reaches the log verbatim (issue 10, points 2, 3 and 6)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import PHOTO, PHOTO_KEY, Server, http_get, launch_server
from rawhttp import exchange, get
from support import SIGNING_KEY, TOKEN, config_data

from imgproxy.auth.signing import UrlSigner

LOG_SETTLE = 0.3  # seconds for the server's log lines to reach its stderr file


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str, s3: Any) -> Iterator[Server]:
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    running = launch_server(tmp_path_factory.mktemp("hostile"), config_data(moto_endpoint, bucket))
    yield running
    running.process.kill()


@pytest.fixture
def signed(server: Server) -> str:
    """A signed URL's target (path and query), as a client puts it on the request line."""
    url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", PHOTO_KEY, ttl=600)
    return url[len(server.base_url):]


class LogWatch:
    """The server's stderr written since the watch began."""

    def __init__(self, server: Server) -> None:
        self.path: Path = server.process.stderr_path
        self.offset = self.path.stat().st_size

    def text(self) -> str:
        time.sleep(LOG_SETTLE)
        with self.path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode("utf-8", errors="replace")

    def access_lines(self) -> list[str]:
        return [line for line in self.text().splitlines() if " imgproxy.access " in line]


def signature_of(target: str) -> str:
    match = re.search(r"[?&]sig=([^&]+)", target)
    assert match
    return match.group(1)


Attack = Callable[[str], bytes]  # the signed target -> the raw request
ATTACKS: dict[str, tuple[Attack, int, str]] = {
    "control byte after the signature": (
        lambda t: get(t + "\x01"), 400, "malformed_request"),
    "raw non-ASCII byte in the path": (
        lambda t: get(t.replace("/img/photos/", "/img/photos/\xff")), 400, "malformed_request"),
    "control byte in the bearer token": (
        lambda t: get("/img/photos/x.png", f"Authorization: Bearer {TOKEN}\x01"), 400, "malformed_request"),
    "DEL in a header beside the token": (
        lambda t: get(t, f"X-Trace: {TOKEN}\x7f"), 400, "malformed_request"),
    "request line over the limit": (
        lambda t: get(t + "&pad=" + "a" * 9000), 414, "uri_too_long"),
    "header line over the limit": (
        lambda t: get(t, "Authorization: Bearer " + TOKEN + "b" * 9000), 431, "header_too_large"),
    "request head over 32 KiB in many headers, still arriving": (  # no blank line: never complete
        lambda t: get(t, *(f"X-Pad-{i}: {TOKEN}{'c' * 900}" for i in range(40)))[:-4], 431,
        "header_too_large"),
    "too many headers": (
        lambda t: get(t, *(f"X-Many-{i}: 1" for i in range(70))), 400, "malformed_request"),
    "Content-Length and Transfer-Encoding together": (
        lambda t: (f"POST /sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                   "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").encode(),
        400, "malformed_request"),
    "two different Content-Lengths": (
        lambda t: (f"POST /sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                   "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello").encode(), 400, "malformed_request"),
    "a control byte in the method": (
        lambda t: get(t).replace(b"GET", b"G\x01T", 1), 400, "malformed_request"),
    "TLS on the plain port": (
        lambda t: bytes.fromhex("16030100c4010000c00303") + t.encode(), 400, "malformed_request"),
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_a_refused_request_gets_the_error_contract_without_an_echo(server: Server, signed: str,
                                                                   attack: str) -> None:
    build, status, code = ATTACKS[attack]
    reply = exchange(server.port, build(signed))
    assert reply.status == status
    body = reply.json()
    assert body == {"error": code, "message": body["message"], "request_id": body["request_id"]}
    assert reply.headers["x-request-id"] == body["request_id"]
    assert reply.headers["cache-control"] == "no-store"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.headers["server"] == "imgproxy"
    assert reply.headers.get("connection") == "close" or reply.raw.startswith(b"HTTP/1.0")
    for secret in (signature_of(signed), TOKEN, "lovelace", "\\x"):
        assert secret not in reply.raw.decode("latin-1")


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_a_refused_request_is_one_info_line_with_no_request_bytes(server: Server, signed: str,
                                                                  attack: str) -> None:
    build, status, code = ATTACKS[attack]
    watch = LogWatch(server)
    request_id = exchange(server.port, build(signed)).json()["request_id"]
    text = watch.text()
    [line] = watch.access_lines()
    assert f"request_id={request_id} " in line
    assert " INFO imgproxy.access " in line
    assert f"status={status} " in line
    assert f"error={code} " in line
    assert "client=127.0.0.1" in line
    assert re.search(r" reason=[a-z0-9_]+( |$)", line)
    assert len(text.strip().splitlines()) == 1, text  # no traceback, no second line
    for secret in (signature_of(signed), TOKEN, "lovelace", "Traceback", "ERROR", "aiohttp.server"):
        assert secret not in text


def test_a_flood_of_refused_requests_writes_one_line_each(server: Server, signed: str) -> None:
    watch = LogWatch(server)
    for _ in range(20):
        assert exchange(server.port, get(signed + "\x01")).status == 400
    text = watch.text()
    assert len(text.strip().splitlines()) == 20
    assert "Traceback" not in text


def access_line(watch: LogWatch, request_id: str) -> str:
    [line] = [line for line in watch.access_lines()
              if f"request_id={request_id} " in line or f'"request_id":"{request_id}"' in line]
    return line


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_values_from_the_request_cannot_forge_or_split_a_log_line(
        tmp_path: Path, moto_endpoint: str, bucket: str, fmt: str) -> None:
    data = config_data(moto_endpoint, bucket)
    data["log"] = {"format": fmt}
    data["server"]["log_keys"] = True
    server = launch_server(tmp_path / "serve", data)
    try:
        watch = LogWatch(server)
        # The source is logged before authorization: ESC, a newline, a forged field, C1 and bidi.
        target = "/img/%1B%5B31mEVIL%0Astatus=200%C2%9B%E2%80%AE%7F/%E2%80%AEgnp.exe"
        # A header can carry no C0 byte (the parser refuses it), but C1 and bidi in UTF-8 it can.
        agent = "curl/8 \x85\xc2\x9b[2J \xe2\x80\xae"
        reply = exchange(server.port, get(target, f"User-Agent: {agent}"))
        assert reply.status == 401
        text = watch.text()
        lines = [line for line in text.splitlines() if line.strip()]
        line = access_line(watch, reply.json()["request_id"])
        assert len([entry for entry in lines if "imgproxy.access" in entry and "healthz" not in entry]) == 1
        assert line.isprintable(), repr(line)
        assert not any(0x80 <= ord(c) <= 0x9F or c in "\x1b\x7f\u202e\r" for c in text)
        assert "status=200" not in line.split("source")[0]
        assert "EVIL" in line  # escaped, not dropped
        assert "\\u202egnp.exe" in line  # the key, its bidi override escaped
        assert ("\\x1b" if fmt == "logfmt" else "\\u001b") in line
    finally:
        server.process.kill()


def test_an_absolute_form_request_target_is_served(server: Server, signed: str) -> None:
    reply = exchange(server.port, get(f"http://127.0.0.1:{server.port}{signed}"))
    assert reply.status == 200
    assert reply.body == PHOTO


def test_an_absolute_form_target_is_authorized_like_any_other(server: Server, signed: str) -> None:
    tampered = signed.replace("sig=", "sig=A")
    reply = exchange(server.port, get(f"http://127.0.0.1:{server.port}{tampered}"))
    assert (reply.status, reply.json()["error"]) == (403, "invalid_signature")


def test_answers_name_the_server_without_versions(server: Server, signed: str) -> None:
    for reply in (exchange(server.port, get(signed)), exchange(server.port, get("/nowhere"))):
        assert reply.headers["server"] == "imgproxy"


def test_a_request_id_from_an_untrusted_client_is_replaced(server: Server, signed: str) -> None:
    reply = exchange(server.port, get(signed, "X-Request-Id: forged-id-1"))
    assert reply.status == 200
    assert reply.headers["x-request-id"] != "forged-id-1"


def test_a_request_id_from_a_trusted_proxy_is_kept(tmp_path: Path, moto_endpoint: str, bucket: str,
                                                   s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    data = config_data(moto_endpoint, bucket)
    data["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    server = launch_server(tmp_path / "serve", data)
    try:
        url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", PHOTO_KEY, ttl=600)
        reply = http_get(url, {"X-Request-Id": "nginx-7f3a"})
        assert (reply.status, reply.headers["X-Request-Id"]) == (200, "nginx-7f3a")
    finally:
        server.process.kill()


