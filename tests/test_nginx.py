"""Real nginx in front of a real ``imgproxy serve``, configured by the shipped ``deploy/`` files.

Each file is rendered (its ``${NAME}`` placeholders filled), checked with ``nginx -t`` and run as
a foreground child of the test: prefix, logs and temp paths under tmp, HTTPS with a throwaway
certificate on a free loopback port, nothing system-wide touched (``nginx_site``, which
bench/bench_delivery.py runs the files with too). Behind them, moto's S3 server.

- stream (``deploy/nginx-stream.conf``): bytes, headers, ranges through nginx; the client's
  X-Forwarded-For and X-Forwarded-Proto believed only from imgproxy's trusted proxies. Clients
  connect from 127.0.0.3, so nginx (127.0.0.1 to imgproxy) and "the client" are different hops.
- accel (``deploy/nginx.conf``): imgproxy authorizes and answers ``X-Accel-Redirect``; nginx
  fetches the presigned URL from S3 and the client gets S3's bytes. S3 is moto behind
  ``S3Gate`` (which checks presigned signatures, host and method as S3 does) behind a recorder
  that shows exactly what nginx sent to S3; and, for HTTPS S3, moto behind TLS with a private CA
  (``conftest.https_endpoint``) that ``${S3_CA_BUNDLE}`` must name.

Skipped only where the nginx binary is missing (``.ci/run`` installs the Debian package).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, ClassVar, Final, TypeVar

import nginx_site
import pytest
from aiohttp import hdrs, web
from multidict import CIMultiDict
from nginx_site import NGINX, Authority, NginxError, Tls, make_tls
from processes import PHOTO, PHOTO_KEY, Process, command, free_port, http_get, write_config
from s3_gate import Forwarder, S3Gate
from support import ACCESS_KEY, SECRET_KEY, SIGNING_KEY, TOKEN, config_data
from yarl import URL

from imgproxy.auth.grants import grant_link
from imgproxy.auth.signing import UrlSigner
from imgproxy.errors import ObjectNotFound, ProxyError, StorageError, StorageTimeout
from imgproxy.protocol.media import CONTENT_SECURITY_POLICY

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="the nginx binary is not installed (Debian: apt-get install nginx; .ci/run does)")

CLIENT: Final = "127.0.0.3"  # where the test's client connects from: not nginx's address
SPOOFED: Final = "203.0.113.7"  # what that client claims in its own X-Forwarded-For
START_TIMEOUT: Final = nginx_site.START_TIMEOUT
STOP_TIMEOUT: Final = 10.0
HTTP_TIMEOUT: Final = 10.0
T = TypeVar("T")


# --- HTTP through nginx ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message  # case-insensitive; get_all() shows duplicates
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Stack:
    """nginx (HTTPS on ``port``) in front of one ``imgproxy serve``."""

    imgproxy: Process
    nginx: Process
    port: int
    prefix: Path
    tls: Tls

    def request(self, target: str, headers: Mapping[str, str] | None = None, method: str = "GET",
                body: bytes | None = None, source: str = "127.0.0.1") -> Answer:
        """``target`` is sent as written (path and query); ``source`` is the client's address."""
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT,
                                                 context=self.tls.context, source_address=(source, 0))
        try:
            connection.request(method, target, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def access_log(self, request_id: str) -> dict[str, str]:
        """The fields of imgproxy's access-log line for ``request_id`` (written after the answer)."""
        deadline = time.monotonic() + 5.0
        while True:
            for line in self.imgproxy.stderr.splitlines():
                if " imgproxy.access " in line and f"request_id={request_id} " in line:
                    fields = line.split(" imgproxy.access ", 1)[1]
                    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', fields)}
            if time.monotonic() > deadline:
                pytest.fail(f"no access-log line for request_id={request_id}\n{self.imgproxy.stderr}")
            time.sleep(0.05)

    @property
    def nginx_access_log(self) -> str:
        return (self.prefix / "imgproxy.access.log").read_text(encoding="utf-8", errors="replace")


Launch = Callable[..., Stack]  # (name, deploy file, imgproxy config, s3_ca_bundle=...)
StreamStacks = Callable[[str], Stack]  # trust -> stack


def signed(key: str, **params: str) -> str:
    return UrlSigner(SIGNING_KEY, "k1").sign("photos", key, params=params)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[Launch]:
    """``launch(name, site_file, imgproxy_config, s3_ca_bundle=...)``: imgproxy, then nginx in
    front (its accel fetch trusting ``s3_ca_bundle``); both killed at the end of the module,
    whatever happened."""
    processes: list[Process] = []

    def start(name: str, site_name: str, data: dict[str, Any],
              s3_ca_bundle: str = nginx_site.SYSTEM_CA_BUNDLE) -> Stack:
        directory = tmp_path_factory.mktemp(name)
        imgproxy_port, nginx_port = free_port(), free_port()
        data["server"]["port"] = imgproxy_port
        config = write_config(directory, data)
        imgproxy = Process(command("serve", "--config", str(config)), directory / "imgproxy")
        processes.append(imgproxy)
        imgproxy.wait_until_healthy(f"http://127.0.0.1:{imgproxy_port}")
        prefix = directory / "nginx"
        values = nginx_site.site_values(prefix, nginx_port, f"127.0.0.1:{imgproxy_port}", tls, s3_ca_bundle)
        main = nginx_site.prepare(prefix, site_name, values)
        checked = nginx_site.check_config(prefix, main)
        assert checked.returncode == 0, checked.stderr
        nginx = Process(nginx_site.command(prefix, main), directory / "nginx-process")
        processes.append(nginx)
        try:
            nginx_site.wait_until_listening(prefix, nginx_port, nginx.popen.poll)
        except NginxError as exc:
            pytest.fail(f"{exc}\n{nginx.describe()}")
        return Stack(imgproxy, nginx, nginx_port, prefix, tls)

    try:
        yield start
    finally:
        for process in reversed(processes):  # nginx first; SIGTERM lets its master reap workers
            if process.popen.poll() is None:
                process.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=STOP_TIMEOUT)
            process.kill()


@pytest.fixture(scope="module")
def nginx_bucket(s3: Any) -> str:
    name = f"nginx-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    return name


def etag_of(s3: Any, bucket: str, key: str) -> str:
    return str(s3.head_object(Bucket=bucket, Key=key)["ETag"])


# --- the shipped files are valid nginx ---------------------------------------------------------------


@pytest.mark.parametrize("site_name", ["nginx.conf", "nginx-stream.conf"])
def test_shipped_config_passes_nginx_t(tmp_path: Path, tls: Tls, site_name: str) -> None:
    prefix = tmp_path / "nginx"
    values = nginx_site.site_values(prefix, free_port(), "127.0.0.1:8080", tls)
    main = nginx_site.prepare(prefix, site_name, values)
    checked = nginx_site.check_config(prefix, main)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


# --- stream: nginx-stream.conf ----------------------------------------------------------------------

TRUSTED: Final = {
    "nginx": ["127.0.0.1/32"],  # imgproxy trusts nginx only
    "nginx-and-cdn": ["127.0.0.1/32", f"{CLIENT}/32"],  # ... and a CDN hop in front of nginx
    "nobody": [],
}


@pytest.fixture(scope="module")
def stream_stack(launch: Launch, moto_endpoint: str, nginx_bucket: str) -> StreamStacks:
    """``stream_stack(trust)``: a stream-mode stack whose imgproxy trusts ``TRUSTED[trust]``."""
    stacks: dict[str, Stack] = {}

    def get(trust: str) -> Stack:
        if trust not in stacks:
            data = config_data(moto_endpoint, nginx_bucket)
            data["server"]["trusted_proxies"] = TRUSTED[trust]
            data["delivery"] = {"mode": "stream"}
            data["auth"]["tokens"]["ops"]["sign_scopes"] = ["*"]
            stacks[trust] = launch(f"stream-{trust}", "nginx-stream.conf", data)
        return stacks[trust]

    return get


def test_stream_through_nginx_sends_the_objects_bytes_and_headers(
        stream_stack: StreamStacks, s3: Any, nginx_bucket: str) -> None:
    stack = stream_stack("nginx")
    answer = stack.request(signed(PHOTO_KEY))
    assert answer.status == 200
    assert answer.body == PHOTO
    assert answer.headers["Content-Length"] == str(len(PHOTO))
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.headers["ETag"] == etag_of(s3, nginx_bucket, PHOTO_KEY)
    assert answer.headers["X-Delivery"] == "stream"
    fields = stack.access_log(answer.headers["X-Request-Id"])
    assert (fields["delivery"], fields["bytes"]) == ("stream", str(len(PHOTO)))


def test_meta_through_nginx_is_imgproxys_json(stream_stack: StreamStacks, s3: Any, nginx_bucket: str) -> None:
    """deploy/nginx-stream.conf passes /meta/ (its encoded path as signed) to imgproxy."""
    stack = stream_stack("nginx")
    url = UrlSigner(SIGNING_KEY, "k1").sign("photos", PHOTO_KEY, route="meta")
    answer = stack.request(url)
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    meta = answer.json()
    assert (meta["format"], meta["bytes"], meta["etag"]) == ("png", len(PHOTO),
                                                            etag_of(s3, nginx_bucket, PHOTO_KEY))


def test_accel_config_passes_meta_too_and_logs_no_key(accel: Stack) -> None:
    url = UrlSigner(SIGNING_KEY, "k1").sign("photos", PHOTO_KEY, route="meta")
    answer = accel.request(url)
    assert answer.status == 200, answer.body
    assert answer.json()["format"] == "png"
    request_id = answer.headers["X-Request-Id"]
    deadline = time.monotonic() + 5.0
    while request_id not in (log := accel.nginx_access_log) and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [line for line in log.splitlines() if request_id in line]
    assert '"GET /meta/photos/..." 200' in line  # as for /img: no key, no query (signature)
    assert "lovelace" not in line


def test_stream_range_through_nginx_is_206(stream_stack: StreamStacks) -> None:
    answer = stream_stack("nginx").request(signed(PHOTO_KEY), {"Range": "bytes=10-29"})
    assert answer.status == 206
    assert answer.headers["Content-Range"] == f"bytes 10-29/{len(PHOTO)}"
    assert answer.body == PHOTO[10:30]


def test_stream_revalidation_through_nginx_is_304(stream_stack: StreamStacks, s3: Any,
                                                 nginx_bucket: str) -> None:
    etag = etag_of(s3, nginx_bucket, PHOTO_KEY)
    answer = stream_stack("nginx").request(signed(PHOTO_KEY), {"If-None-Match": etag})
    assert (answer.status, answer.body) == (304, b"")
    assert answer.headers["ETag"] == etag


@pytest.mark.parametrize(("trust", "logged"), [
    ("nginx", CLIENT),  # nginx appends the address it saw: the client's own claim is ignored
    ("nginx-and-cdn", SPOOFED),  # the client is a trusted hop itself, so its claim is believed
    ("nobody", "127.0.0.1"),  # nginx is not trusted: imgproxy sees only nginx
], ids=["trusts-nginx", "trusts-nginx-and-cdn", "trusts-nobody"])
def test_access_log_names_the_client_the_trusted_proxies_vouch_for(
        stream_stack: StreamStacks, trust: str, logged: str) -> None:
    stack = stream_stack(trust)
    answer = stack.request(signed(PHOTO_KEY), {"X-Forwarded-For": SPOOFED}, source=CLIENT)
    assert answer.status == 200
    assert stack.access_log(answer.headers["X-Request-Id"])["client"] == logged


@pytest.mark.parametrize(("trust", "scheme"), [("nginx", "https"), ("nobody", "http")],
                         ids=["trusts-nginx", "trusts-nobody"])
def test_signed_urls_use_the_scheme_the_trusted_proxy_reports(
        stream_stack: StreamStacks, trust: str, scheme: str) -> None:
    """nginx terminates TLS and says so (X-Forwarded-Proto: https, whatever the client sent);
    POST /sign builds its URLs from that only if nginx is trusted."""
    stack = stream_stack(trust)
    body = json.dumps([{"source": "photos", "key": PHOTO_KEY}]).encode()
    answer = stack.request("/sign", {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                                     "X-Forwarded-Proto": "http"}, method="POST", body=body, source=CLIENT)
    assert answer.status == 200, answer.body
    [item] = answer.json()["items"]
    assert item["url"].startswith(f"{scheme}://127.0.0.1:{stack.port}/img/photos/")


def test_url_signed_through_nginx_is_served_through_nginx(stream_stack: StreamStacks) -> None:
    stack = stream_stack("nginx")
    body = json.dumps([{"source": "photos", "key": PHOTO_KEY}]).encode()
    signing = stack.request("/sign", {"Authorization": f"Bearer {TOKEN}"}, method="POST", body=body)
    url = URL(signing.json()["items"][0]["url"], encoded=True)
    assert (url.scheme, url.host, url.port) == ("https", "127.0.0.1", stack.port)
    answer = stack.request(url.raw_path_qs)
    assert (answer.status, answer.body) == (200, PHOTO)


# --- accel: nginx.conf, with S3 behind a recorder and the signature-checking gate ---------------------


@dataclass(frozen=True)
class SeenRequest:
    method: str
    target: str  # path and query, as sent
    headers: CIMultiDict[str]

    @property
    def is_presigned(self) -> bool:
        return "X-Amz-Signature=" in self.target


class S3Recorder(Forwarder):
    """Records what reaches S3, then passes it on as sent (Host included, so signatures hold).

    Refuses, as S3 does, a presigned URL that also carries an Authorization header; answers a
    presigned GET of a path in ``errors`` with that S3 error instead of passing it on (imgproxy's
    own presigned HEAD, which proves the object exists, passes).
    """

    dropped: ClassVar[frozenset[str]] = frozenset({"connection", "keep-alive", "transfer-encoding", "te",
                                                   "upgrade"})

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.seen: list[SeenRequest] = []
        self.errors: dict[str, tuple[int, str]] = {}  # path -> (status, S3 error code)

    def presigned_since(self, mark: int) -> list[SeenRequest]:
        return [seen for seen in self.seen[mark:] if seen.is_presigned]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        seen = SeenRequest(request.method, request.raw_path, CIMultiDict(request.headers))
        self.seen.append(seen)
        if seen.is_presigned and hdrs.AUTHORIZATION in request.headers:
            return web.Response(status=400, content_type="application/xml", text=(
                "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only "
                "the X-Amz-Algorithm query parameter, Signature query string parameter or the "
                "Authorization header should be specified</Message></Error>"))
        path = request.raw_path.partition("?")[0]
        if seen.is_presigned and request.method == "GET" and path in self.errors:
            status, code = self.errors[path]
            return web.Response(status=status, content_type="application/xml", text=(
                f"<Error><Code>{code}</Code><Message>S3 says no</Message><Key>{path}</Key>"
                f"<AWSAccessKeyId>{ACCESS_KEY}</AWSAccessKeyId></Error>"))
        return await self.forward(request)


class BackgroundLoop:
    """An event loop in a thread: the S3 front servers answer while the test blocks on HTTP."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="s3-front", daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=START_TIMEOUT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=START_TIMEOUT)
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


@dataclass(frozen=True)
class S3Front:
    recorder: S3Recorder
    gate: S3Gate


@pytest.fixture(scope="module")
def s3_front(moto_endpoint: str) -> Iterator[S3Front]:
    """recorder -> S3Gate (real clock: imgproxy signs with it) -> moto."""
    loop = BackgroundLoop()
    gate = S3Gate(moto_endpoint, {ACCESS_KEY: SECRET_KEY}, time.time)
    recorder = S3Recorder("")
    try:
        loop.run(gate.start())
        recorder.upstream = gate.endpoint
        loop.run(recorder.start())
        yield S3Front(recorder, gate)
    finally:
        loop.run(recorder.close())
        loop.run(gate.close())
        loop.close()


@pytest.fixture(scope="module")
def accel(launch: Launch, s3_front: S3Front, nginx_bucket: str) -> Stack:
    data = config_data(s3_front.recorder.endpoint, nginx_bucket)
    data["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    data["delivery"] = {"mode": "accel"}
    return launch("accel", "nginx.conf", data)


def test_accel_client_gets_the_objects_bytes_from_s3_through_nginx(
        accel: Stack, s3_front: S3Front, s3: Any, nginx_bucket: str) -> None:
    mark = len(s3_front.recorder.seen)
    answer = accel.request(signed(PHOTO_KEY))
    assert answer.status == 200
    assert answer.body == PHOTO
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.headers["Content-Length"] == str(len(PHOTO))
    assert answer.headers["ETag"] == etag_of(s3, nginx_bucket, PHOTO_KEY)
    assert answer.headers.get_all("Cache-Control") == ["private, max-age=3600"]
    assert answer.headers["X-Delivery"] == "accel"
    # nginx fetched the presigned URL (its signature checked by the gate); imgproxy sent no bytes.
    *proved, fetched = s3_front.recorder.presigned_since(mark)
    assert ([seen.method for seen in proved], fetched.method) == (["HEAD"] * len(proved), "GET")
    assert fetched.target.startswith(f"/{nginx_bucket}/team/ada%20lovelace%2B1.png?")
    assert s3_front.gate.accepted[-1] == f"GET /{nginx_bucket}/team/ada%20lovelace%2B1.png"
    fields = accel.access_log(answer.headers["X-Request-Id"])
    assert (fields["delivery"], fields["bytes"], fields["status"]) == ("accel", "0", "200")


def test_accel_answer_reaches_the_client_without_internal_headers(accel: Stack) -> None:
    answer = accel.request(signed(PHOTO_KEY))
    assert answer.status == 200
    names = {name.lower() for name in answer.headers}
    assert "x-imgproxy-upstream" not in names
    assert not {name for name in names if name.startswith(("x-accel-", "x-amz", "access-control-"))}
    assert not any("X-Amz-Signature" in value for value in answer.headers.values())
    # What imgproxy's streamed answers carry, added by nginx to S3's answer.
    assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["X-Request-Id"]


def test_accel_range_is_answered_206_by_s3_through_nginx(accel: Stack, s3_front: S3Front) -> None:
    mark = len(s3_front.recorder.seen)
    answer = accel.request(signed(PHOTO_KEY), {"Range": "bytes=0-99"})
    assert answer.status == 206
    assert answer.headers["Content-Range"] == f"bytes 0-99/{len(PHOTO)}"
    assert answer.body == PHOTO[:100]
    [fetched] = s3_front.recorder.presigned_since(mark)
    assert fetched.headers["Range"] == "bytes=0-99"


def test_accel_unsatisfiable_range_is_s3s_416(accel: Stack) -> None:
    answer = accel.request(signed(PHOTO_KEY), {"Range": "bytes=100000-"})
    assert answer.status == 416
    assert b"lovelace" not in answer.body
    assert ACCESS_KEY.encode() not in answer.body


def test_accel_head_gets_the_headers_from_a_presigned_get(accel: Stack, s3_front: S3Front) -> None:
    """The URL is presigned for GET (S3 refuses it for HEAD); nginx sends GET, the client gets
    HEAD's answer."""
    mark = len(s3_front.recorder.seen)
    answer = accel.request(signed(PHOTO_KEY), method="HEAD")
    assert (answer.status, answer.body) == (200, b"")
    assert answer.headers["Content-Length"] == str(len(PHOTO))
    assert answer.headers["X-Delivery"] == "accel"
    # nginx's fetch is a GET; imgproxy's own HEAD (unless the object's metadata was cached) passes.
    seen = s3_front.recorder.presigned_since(mark)
    assert [fetched.method for fetched in seen if fetched.method != "HEAD"] == ["GET"]


def test_accel_bearer_token_and_cookies_never_reach_s3(accel: Stack, s3_front: S3Front) -> None:
    mark = len(s3_front.recorder.seen)
    path = "/img/photos/team/ada%20lovelace%2B1.png"
    answer = accel.request(path, {"Authorization": f"Bearer {TOKEN}", "Cookie": "session=secret"})
    assert answer.status == 200, answer.body
    assert answer.body == PHOTO
    [fetched] = s3_front.recorder.presigned_since(mark)
    assert fetched.headers["Host"] == s3_front.recorder.endpoint.removeprefix("http://")
    for name in ("Authorization", "Cookie", "X-Forwarded-For", "X-Request-Id"):
        assert name not in fetched.headers


def test_accel_unauthorized_request_is_imgproxys_401_json(accel: Stack, s3_front: S3Front) -> None:
    mark = len(s3_front.recorder.seen)
    answer = accel.request("/img/photos/team/ada%20lovelace%2B1.png")
    assert answer.status == 401
    assert answer.headers["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["error"] == "unauthorized"
    assert body["request_id"] == answer.headers["X-Request-Id"]
    assert s3_front.recorder.seen[mark:] == []


def test_accel_revalidation_is_304(accel: Stack, s3: Any, nginx_bucket: str) -> None:
    etag = etag_of(s3, nginx_bucket, PHOTO_KEY)
    answer = accel.request(signed(PHOTO_KEY), {"If-None-Match": etag})
    assert (answer.status, answer.body) == (304, b"")
    assert answer.headers["ETag"] == etag


def test_accel_type_outside_the_inline_list_is_an_attachment(accel: Stack, s3: Any,
                                                             nginx_bucket: str) -> None:
    page = b"<html><script>alert(1)</script></html>"
    s3.put_object(Bucket=nginx_bucket, Key="notes/page.html", Body=page, ContentType="text/html")
    answer = accel.request(signed("notes/page.html"))
    assert (answer.status, answer.body) == (200, page)
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert answer.headers["Content-Disposition"] == "attachment"
    assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize(("s3_status", "s3_code", "error"), [
    (404, "NoSuchKey", ObjectNotFound),  # deleted after imgproxy presigned it
    (403, "AccessDenied", StorageError),  # expired, or no s3:ListBucket for a missing key
    (503, "SlowDown", StorageError),
    (504, "GatewayTimeout", StorageTimeout),
], ids=["404", "403", "503", "504"])
def test_accel_s3_error_is_answered_in_imgproxys_shape(
        accel: Stack, s3_front: S3Front, s3: Any, nginx_bucket: str, s3_status: int, s3_code: str,
        error: type[ProxyError]) -> None:
    """S3's error bodies name keys and access key ids: the client gets what imgproxy would say."""
    key = f"errors/{s3_code}.png"
    s3.put_object(Bucket=nginx_bucket, Key=key, Body=PHOTO, ContentType="image/png")
    s3_front.recorder.errors[f"/{nginx_bucket}/{key}"] = (s3_status, s3_code)
    answer = accel.request(signed(key))
    assert answer.status == error.status
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == {"error": error.code, "message": error.public_message,
                             "request_id": answer.headers["X-Request-Id"]}
    assert ACCESS_KEY.encode() not in answer.body


def test_internal_s3_location_is_not_reachable_from_outside(accel: Stack, s3_front: S3Front) -> None:
    mark = len(s3_front.recorder.seen)
    answer = accel.request("/_imgproxy_s3", {"X-Imgproxy-Upstream": s3_front.recorder.endpoint + "/"})
    assert answer.status == 404
    assert s3_front.recorder.seen[mark:] == []


def test_nginx_access_log_holds_no_signature_or_key(accel: Stack) -> None:
    answer = accel.request(signed(PHOTO_KEY))
    assert answer.status == 200
    request_id = answer.headers["X-Request-Id"]
    deadline = time.monotonic() + 5.0
    while request_id not in (log := accel.nginx_access_log) and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = [line for line in log.splitlines() if request_id in line]
    assert '"GET /img/photos/..." 200' in line
    assert "sig=" not in log
    assert "lovelace" not in log


# --- accel over HTTPS S3 with a private CA: ${S3_CA_BUNDLE} -----------------------------------------

@pytest.fixture(scope="module")
def https_accel(launch: Launch, https_endpoint: str, nginx_bucket: str, authority: Authority) -> Launch:
    """``https_accel(name, s3_ca_bundle)``: an accel stack whose S3 is HTTPS with a private CA
    (imgproxy trusts it through ca_bundle; nginx through ``s3_ca_bundle``)."""
    def start(name: str, s3_ca_bundle: str) -> Stack:
        data = config_data(https_endpoint, nginx_bucket, ca_bundle=str(authority.ca))
        data["server"]["trusted_proxies"] = ["127.0.0.1/32"]
        data["delivery"] = {"mode": "accel"}
        return launch(name, "nginx.conf", data, s3_ca_bundle=s3_ca_bundle)
    return start


def test_accel_fetch_from_https_s3_trusts_the_ca_named_by_s3_ca_bundle(
        https_accel: Launch, authority: Authority) -> None:
    stack = https_accel("accel-https", str(authority.ca))
    answer = stack.request(signed(PHOTO_KEY))
    assert (answer.status, answer.body) == (200, PHOTO)
    assert answer.headers["X-Delivery"] == "accel"
    fields = stack.access_log(answer.headers["X-Request-Id"])
    assert (fields["delivery"], fields["bytes"]) == ("accel", "0")  # nginx fetched it over HTTPS


def test_accel_fetch_from_https_s3_with_a_ca_nginx_does_not_trust_is_imgproxys_502(
        https_accel: Launch) -> None:
    stack = https_accel("accel-https-untrusted", nginx_site.SYSTEM_CA_BUNDLE)
    answer = stack.request(signed(PHOTO_KEY))
    assert answer.status == StorageError.status
    assert answer.json() == {"error": StorageError.code, "message": StorageError.public_message,
                             "request_id": answer.headers["X-Request-Id"]}
    deadline = time.monotonic() + 5.0
    while "certificate verify" not in (log := (stack.prefix / "imgproxy.error.log").read_text()):
        assert time.monotonic() < deadline, log
        time.sleep(0.05)
    assert "upstream SSL certificate verify error" in log


# --- accel with CORS: imgproxy's CORS headers reach the client on S3's answer ----------------------

DASH: Final = "https://dash.example.com"


@pytest.fixture(scope="module")
def accel_cors(launch: Launch, s3_front: S3Front, nginx_bucket: str) -> Stack:
    data = config_data(s3_front.recorder.endpoint, nginx_bucket)
    data["server"]["trusted_proxies"] = ["127.0.0.1/32"]
    data["server"]["cors_origins"] = [DASH, "http://127.0.0.1:5173"]
    data["server"]["cross_origin_resource_policy"] = "same-site"
    data["delivery"] = {"mode": "accel"}
    return launch("accel-cors", "nginx.conf", data)


def assert_cors_for_dash(answer: Answer) -> None:
    assert answer.headers.get_all("Access-Control-Allow-Origin") == [DASH]
    assert answer.headers.get_all("Timing-Allow-Origin") == [DASH]
    assert answer.headers.get_all("Vary") == ["Origin"]  # imgproxy's, once; not S3's
    assert "X-Cache" in answer.headers["Access-Control-Expose-Headers"].split(", ")
    assert answer.headers.get_all("Cross-Origin-Resource-Policy") == ["same-site"]


def test_accel_answer_carries_imgproxys_cors_headers(accel_cors: Stack) -> None:
    answer = accel_cors.request(signed(PHOTO_KEY), {"Origin": DASH})
    assert (answer.status, answer.body) == (200, PHOTO)
    assert answer.headers["X-Delivery"] == "accel"
    assert_cors_for_dash(answer)
    assert "Access-Control-Allow-Credentials" not in answer.headers


def test_accel_answer_without_origin_names_the_origins_that_may_read_its_timing(accel_cors: Stack) -> None:
    answer = accel_cors.request(signed(PHOTO_KEY))
    assert answer.status == 200
    assert "Access-Control-Allow-Origin" not in answer.headers
    assert answer.headers["Timing-Allow-Origin"] == f"{DASH}, http://127.0.0.1:5173"
    assert answer.headers.get_all("Vary") == ["Origin"]


def test_accel_answer_to_another_origin_has_no_allow_origin(accel_cors: Stack) -> None:
    answer = accel_cors.request(signed(PHOTO_KEY), {"Origin": "null"})
    assert answer.status == 200
    names = {name.lower() for name in answer.headers}
    assert not {name for name in names if name.startswith("access-control-")}
    assert "timing-allow-origin" not in names


def test_accel_range_from_s3_carries_cors_headers(accel_cors: Stack) -> None:
    answer = accel_cors.request(signed(PHOTO_KEY), {"Origin": DASH, "Range": "bytes=0-9"})
    assert (answer.status, answer.body) == (206, PHOTO[:10])
    assert_cors_for_dash(answer)


def test_accel_revalidation_carries_cors_headers(accel_cors: Stack, s3: Any, nginx_bucket: str) -> None:
    etag = etag_of(s3, nginx_bucket, PHOTO_KEY)
    answer = accel_cors.request(signed(PHOTO_KEY), {"Origin": DASH, "If-None-Match": etag})
    assert answer.status == 304  # imgproxy's own (it knows the ETag)
    assert_cors_for_dash(answer)


def test_accel_revalidation_answered_by_s3_carries_cors_headers(accel_cors: Stack) -> None:
    answer = accel_cors.request(signed(PHOTO_KEY), {"Origin": DASH,
                                                    "If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert answer.status == 304  # S3's, through nginx
    assert answer.headers["X-Delivery"] == "accel"
    assert_cors_for_dash(answer)


def test_accel_s3_error_answer_carries_cors_headers(accel_cors: Stack, s3_front: S3Front, s3: Any,
                                                   nginx_bucket: str) -> None:
    key = "errors/cors-gone.png"
    s3.put_object(Bucket=nginx_bucket, Key=key, Body=PHOTO, ContentType="image/png")
    s3_front.recorder.errors[f"/{nginx_bucket}/{key}"] = (404, "NoSuchKey")
    answer = accel_cors.request(signed(key), {"Origin": DASH})
    assert answer.status == 404
    assert answer.json()["error"] == "not_found"
    assert_cors_for_dash(answer)


def test_preflight_through_nginx_is_imgproxys(accel_cors: Stack) -> None:
    answer = accel_cors.request(signed(PHOTO_KEY), {
        "Origin": DASH, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"}, method="OPTIONS")
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == DASH
    assert "Authorization" in answer.headers["Access-Control-Allow-Headers"].split(", ")


# --- forward-auth: a client's own identity headers never pass the shipped configs -----------------

FORWARD_KEY: Final = "employees/ada.png"
FORWARDED: Final = {"X-Forwarded-User": "mallory", "X-Forwarded-Groups": "employees",
                    "X-Auth-Request-User": "mallory"}


@pytest.fixture(scope="module")
def forward_stacks(launch: Launch, moto_endpoint: str, nginx_bucket: str,
                   s3: Any) -> Callable[[str], tuple[Stack, int]]:
    """``forward_stacks(site_file)``: imgproxy with ``[auth.forward]`` trusting nginx (127.0.0.1)
    for X-Forwarded-User and X-Auth-Request-User, behind the shipped ``site_file``; and
    imgproxy's own port."""
    s3.put_object(Bucket=nginx_bucket, Key=FORWARD_KEY, Body=PHOTO, ContentType="image/png")
    stacks: dict[str, tuple[Stack, int]] = {}

    def get(site_name: str) -> tuple[Stack, int]:
        if site_name not in stacks:
            data = config_data(moto_endpoint, nginx_bucket)
            data["server"]["trusted_proxies"] = ["127.0.0.1/32"]
            data["delivery"] = {"mode": "stream"}
            data["auth"]["forward"] = {
                "trusted_proxies": ["127.0.0.1/32"], "extra_headers": {"proxy_user": "X-Auth-Request-User"},
                "rules": [{"claim": "groups", "equals": "employees", "scopes": ["photos:employees/*"]},
                          {"claim": "proxy_user", "equals": "mallory", "scopes": ["photos:employees/*"]}]}
            stack = launch(f"forward-{site_name}", site_name, data)
            stacks[site_name] = stack, data["server"]["port"]
        return stacks[site_name]

    return get


@pytest.mark.parametrize("site_name", ["nginx.conf", "nginx-stream.conf"])
def test_client_sent_forward_auth_headers_do_not_pass_nginx(
        forward_stacks: Callable[[str], tuple[Stack, int]], site_name: str) -> None:
    stack, imgproxy_port = forward_stacks(site_name)
    # The same headers straight from 127.0.0.1 (a trusted peer) would be believed...
    direct = http_get(f"http://127.0.0.1:{imgproxy_port}/img/photos/{FORWARD_KEY}", FORWARDED)
    assert direct.status == 200
    assert stack.access_log(direct.headers["X-Request-Id"])["auth"] == "forward:mallory"
    # ... but nginx clears them, so through it the request has no credentials.
    answer = stack.request(f"/img/photos/{FORWARD_KEY}", FORWARDED, source=CLIENT)
    assert answer.status == 401
    assert answer.json()["error"] == "unauthorized"
    assert "auth" not in stack.access_log(answer.headers["X-Request-Id"])


# --- cookie grants: /session through the shipped configs --------------------------------------------

GRANT_KEY: Final = "employees/grace.png"


@pytest.mark.parametrize("site_name", ["nginx.conf", "nginx-stream.conf"])
def test_grant_links_and_cookies_pass_the_shipped_configs(
        launch: Launch, moto_endpoint: str, nginx_bucket: str, s3: Any, site_name: str) -> None:
    s3.put_object(Bucket=nginx_bucket, Key=GRANT_KEY, Body=PHOTO, ContentType="image/png")
    data = config_data(moto_endpoint, nginx_bucket)
    data["server"].update(trusted_proxies=["127.0.0.1/32"], cors_origins=["https://dash.example.com"])
    data["delivery"] = {"mode": "stream"}
    data["auth"]["grants"] = {}
    stack = launch(f"grants-{site_name}", site_name, data)
    link = grant_link(SIGNING_KEY, "k1", "grace", ["photos:employees/*"], base_url="",
                      return_to="https://dash.example.com/")
    opened = stack.request(link, source=CLIENT)
    assert opened.status == 303, opened.body
    assert opened.headers["Location"] == "https://dash.example.com/"
    assert opened.headers["Referrer-Policy"] == "no-referrer"
    cookie = opened.headers["Set-Cookie"].split(";")[0]
    assert cookie.startswith("__Host-imgproxy-grant=")
    assert stack.request(link, source=CLIENT).status == 401  # single use, through nginx too
    image = stack.request(f"/img/photos/{GRANT_KEY}", {"Cookie": cookie}, source=CLIENT)
    assert (image.status, image.body) == (200, PHOTO)
    assert image.headers["Cache-Control"].startswith("private")
    assert "Cookie" in image.headers["Vary"]
    assert stack.access_log(image.headers["X-Request-Id"])["auth"] == "grant:grace"
    cleared = stack.request("/session", {"Cookie": cookie}, method="DELETE", source=CLIENT)
    assert cleared.status == 204
    assert "Max-Age=0" in cleared.headers["Set-Cookie"]
    assert "grant=" not in stack.nginx_access_log  # the link's query is never logged
