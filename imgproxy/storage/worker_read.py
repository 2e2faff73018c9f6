"""A transform's source, read by the image worker that renders it: one blocking presigned GET.

The serving process used to read each source (an aiohttp GET into one buffer) and hand the bytes
to a worker by pickling them through a pipe: 3-8 ms of its CPU per thumbnail, most of what it
spent on one. Now it only authorizes, checks the caches, admits the job and signs a URL
(``S3Source.worker_read``); the worker that renders the job GETs the object itself, over a
kept-alive connection of its own, into one ``bytes`` of the object's Content-Length, and sends back
the rendering with what S3 said about the object (``ReadMeta``). The source never crosses a pipe.

Every limit stays where it was: the serving process admits the job before a byte is read (and at
most ``2 * workers`` admitted jobs are handed to workers at once); the worker refuses an object
over ``max_bytes`` from its Content-Length before reading its body, and reads at most that many
bytes; connect and read timeouts are the source's, and the whole read is bounded by
``budget`` (the worker's alarm, ``transform/pool.py``). What fails is reported as a
``SourceReadFailed`` with plain values (a status and S3's ``<Code>``, a TLS problem, a timeout),
which the serving process turns into the same ``ProxyError`` and log line a GET of its own would
give (``storage/errors.translate_read``). The presigned URL is a credential for a few minutes: it
is in no repr, message or log.

This module runs in the image workers: the standard library's ``http.client`` for direct reads
(one kept-alive connection per endpoint and trust), urllib3 (botocore's own HTTP library) for
reads through an ``HTTPS_PROXY``; no aiohttp, no event loop.
"""

from __future__ import annotations

import functools
import http.client
import re
import ssl
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    InsecureRequestWarning,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from imgproxy.storage.tls import tls_problem

ERROR_BODY_BYTES: Final = 16 * 1024
RETRY_BACKOFF: Final = 0.05
_CODE: Final = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")


@dataclass(frozen=True, slots=True)
class SourceRead:
    """Where and how a worker reads one source (picklable: it crosses to the worker)."""

    url: str = field(repr=False)  # presigned for this job only; never logged
    source: str  # the source's name, for messages
    max_bytes: int  # a larger object is refused from its Content-Length
    connect_timeout: float
    read_timeout: float  # per read of the socket
    attempts: int  # connection failures and 5xx answers are retried up to this many times
    ca_bundle: str | None = None
    verify_tls: bool = True

    @property
    def budget(self) -> float:
        """The most the whole read may take, retries included: the worker's alarm for it."""
        return self.attempts * (self.connect_timeout + self.read_timeout) + self.read_timeout


@dataclass(frozen=True, slots=True)
class ReadMeta:
    """What S3 said about the object read, and how long reading it took."""

    etag: str | None
    length: int
    content_type: str | None
    seconds: float


class SourceReadFailed(Exception):
    """A read that gave no source. ``kind``: ``status`` (S3 answered ``status`` with ``code``),
    ``tls`` (``detail``: the certificate problem), ``timeout``, ``unreachable`` (``detail``: the
    exception's class), ``too_large`` (``status``: the Content-Length), ``short`` (the body ended
    before its Content-Length, or had none: ``detail`` says where)."""

    def __init__(self, kind: str, status: int = 0, code: str = "", detail: str = "",
                 seconds: float = 0.0) -> None:
        super().__init__(kind, status, code, detail, seconds)
        self.kind, self.status, self.code, self.detail, self.seconds = kind, status, code, detail, seconds

    def __str__(self) -> str:
        return f"{self.kind} status={self.status} code={self.code} {self.detail}".rstrip()

    def took(self, seconds: float) -> SourceReadFailed:
        """The same failure, with how long the read ran until it."""
        return SourceReadFailed(self.kind, self.status, self.code, self.detail, seconds)


_MANAGERS: dict[tuple[str | None, bool, str | None], urllib3.PoolManager] = {}


def _ssl_context(ca_bundle: str | None, verify_tls: bool) -> ssl.SSLContext:
    """The same trust as the serving process's GETs (``storage/tls.client_ssl``)."""
    context = ssl.create_default_context(cafile=ca_bundle)
    if not verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _proxy_for(url: str) -> str | None:
    """``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, as aiohttp's ``trust_env`` and botocore read them."""
    parts = urlsplit(url)
    return _proxy(parts.scheme, parts.hostname or "")


@functools.lru_cache(maxsize=64)
def _proxy(scheme: str, hostname: str) -> str | None:
    """Per (scheme, host), once per worker: a worker's environment is the server's at its start,
    and reading it walks all of ``os.environ`` twice (0.4 ms per read before)."""
    proxies = urllib.request.getproxies_environment()
    if not proxies or urllib.request.proxy_bypass(hostname):  # NO_PROXY, on POSIX
        return None
    return proxies.get(scheme)


def _manager(read: SourceRead) -> urllib3.PoolManager:
    """This worker's kept-alive connections, one pool per (trust, proxy): one connection per host
    is enough, a worker reads one source at a time."""
    proxy = _proxy_for(read.url)
    key = (read.ca_bundle, read.verify_tls, proxy)
    manager = _MANAGERS.get(key)
    if manager is None:
        if not read.verify_tls:  # said loudly once, at start-up (storage/tls.warn_if_unverified)
            urllib3.disable_warnings(InsecureRequestWarning)
        context = _ssl_context(read.ca_bundle, read.verify_tls)
        options = {"num_pools": 4, "maxsize": 1, "ssl_context": context,
                   "cert_reqs": ssl.CERT_REQUIRED if read.verify_tls else ssl.CERT_NONE,
                   "assert_hostname": None if read.verify_tls else False}
        manager = (urllib3.ProxyManager(proxy, **options) if proxy is not None  # type: ignore[arg-type]
                   else urllib3.PoolManager(**options))  # type: ignore[arg-type]
        _MANAGERS[key] = manager
    return manager


def read_source(read: SourceRead) -> tuple[ReadMeta, bytes]:
    """GET the object into one ``bytes`` of its Content-Length, or raise ``SourceReadFailed`` (with
    the seconds the read ran)."""
    started = time.perf_counter()
    try:
        return _read(read, started)
    except SourceReadFailed as failed:
        raise failed.took(time.perf_counter() - started) from None


def _read(read: SourceRead, started: float) -> tuple[ReadMeta, bytes]:
    response, done = _open(read)
    kept = False
    try:
        if response.status != 200:
            body = response.read(ERROR_BODY_BYTES) if response.status >= 300 else b""
            match = _CODE.search(body or b"")
            raise SourceReadFailed("status", response.status, match.group(1).decode() if match else "")
        text = response.headers.get("Content-Length", "")
        if not text.isdigit():
            raise SourceReadFailed("short", detail="no Content-Length")
        length = int(text)
        if length > read.max_bytes:
            raise SourceReadFailed("too_large", length)
        buffer = _read_exactly(response, length)
        kept = True
    finally:
        done(kept)  # a half-read connection is closed, never reused
    meta = ReadMeta(response.headers.get("ETag"), length, response.headers.get("Content-Type"),
                    time.perf_counter() - started)
    return meta, buffer


Response = http.client.HTTPResponse | urllib3.BaseHTTPResponse
Done = Callable[[bool], None]  # called once the body is read (True) or abandoned (False)


def _open(read: SourceRead) -> tuple[Response, Done]:
    """The response to the GET, and what to call when done with it. Direct to the endpoint (the
    usual case) over this worker's own ``http.client`` connection; through ``HTTPS_PROXY`` and
    the like, by urllib3's proxy manager."""
    if _proxy_for(read.url) is not None:
        return _open_proxied(read)
    return _open_direct(read)


# --- direct: one kept-alive http.client connection per endpoint and trust ---------------------
#
# urllib3 parses and re-encodes the URL byte by byte in Python, twice per request (PoolManager,
# then the pool): for a presigned URL's 600-character query that was a third of a 0.54 MB read's
# CPU (1.6 ms with urllib3, 1.1 ms with http.client, 0.7 ms on a bare socket, against moto). A
# presigned URL is already in the canonical encoding S3 signed, so it is sent as it is.

_Route = tuple[str, str, int, str | None, bool]  # scheme, host, port, ca_bundle, verify_tls
_CONNECTIONS: dict[_Route, http.client.HTTPConnection] = {}


def _connection(route: _Route, read: SourceRead) -> http.client.HTTPConnection:
    """A new connection for ``route``, not yet connected (its timeout is the connect timeout)."""
    scheme, host, port, ca_bundle, verify_tls = route
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=read.connect_timeout,
                                           context=_ssl_context(ca_bundle, verify_tls))
    return http.client.HTTPConnection(host, port, timeout=read.connect_timeout)


def _open_direct(read: SourceRead) -> tuple[Response, Done]:
    parts = urlsplit(read.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceReadFailed("unreachable", detail="not an http(s) URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise SourceReadFailed("unreachable", detail="bad port") from None
    route: _Route = (parts.scheme, parts.hostname, port, read.ca_bundle, read.verify_tls)
    target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
    headers = {"Host": parts.netloc.rpartition("@")[2], "Accept-Encoding": "identity"}
    attempt = 1
    while True:
        conn = _CONNECTIONS.pop(route, None)
        reused = conn is not None
        if conn is None:
            conn = _connection(route, read)
            try:
                conn.connect()
            except ssl.SSLError as exc:  # the same certificate fails the same way: not retried
                conn.close()
                raise SourceReadFailed("tls", detail=tls_problem(exc) or "TLS error") from None
            except OSError as exc:  # refused, unreachable, or over the connect timeout
                conn.close()
                if attempt >= read.attempts:
                    kind = "timeout" if isinstance(exc, TimeoutError) else "unreachable"
                    raise SourceReadFailed(kind, detail=exc.__class__.__name__) from None
                attempt = _backoff(attempt)
                continue
        assert conn.sock is not None
        conn.sock.settimeout(read.read_timeout)
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
        except TimeoutError:
            conn.close()
            raise SourceReadFailed("timeout") from None
        except (http.client.HTTPException, OSError) as exc:  # refused, reset, closed (RemoteDisconnected)
            conn.close()
            if reused:  # the endpoint closed a kept-alive connection: once more, on a new one
                continue
            if attempt >= read.attempts:
                raise SourceReadFailed("unreachable", detail=exc.__class__.__name__) from None
            attempt = _backoff(attempt)
            continue
        if response.status >= 500 and attempt < read.attempts:
            response.close()
            conn.close()
            attempt = _backoff(attempt)
            continue
        return response, _returning(route, conn, response)


def _backoff(attempt: int) -> int:
    time.sleep(RETRY_BACKOFF * 2 ** (attempt - 1))
    return attempt + 1


def _returning(route: _Route, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> Done:
    def done(read_whole: bool) -> None:
        if read_whole and not response.will_close and response.isclosed():
            old = _CONNECTIONS.pop(route, None)
            if old is not None:
                old.close()
            _CONNECTIONS[route] = conn  # the body is read to its end: the next read may reuse it
        else:
            response.close()  # the response holds the socket's file (a will_close response, all of it)
            conn.close()
    return done


# --- through a proxy: urllib3's ProxyManager (CONNECT for https, proxy auth) ------------------

def _open_proxied(read: SourceRead) -> tuple[Response, Done]:
    response = _open_with(_manager(read), read)

    def done(read_whole: bool) -> None:
        if not read_whole:
            response.close()  # a half-read connection must not go back to the pool
        response.release_conn()
    return response, done


def _open_with(manager: urllib3.PoolManager, read: SourceRead) -> urllib3.BaseHTTPResponse:
    timeout = urllib3.Timeout(connect=read.connect_timeout, read=read.read_timeout)
    for attempt in range(1, read.attempts + 1):
        try:
            response = manager.request("GET", read.url, preload_content=False, decode_content=False,
                                       redirect=False, retries=False, timeout=timeout)
        except SSLError as exc:  # the same certificate fails the same way: not retried
            raise SourceReadFailed("tls", detail=tls_problem(exc) or "TLS error") from None
        except ReadTimeoutError:
            raise SourceReadFailed("timeout") from None
        except (ConnectTimeoutError, NewConnectionError, ProtocolError) as exc:
            if attempt == read.attempts:
                # (urllib3's NewConnectionError, a refused connection, is a ConnectTimeoutError too)
                timed_out = isinstance(exc, ConnectTimeoutError) and not isinstance(exc, NewConnectionError)
                kind = "timeout" if timed_out else "unreachable"
                raise SourceReadFailed(kind, detail=exc.__class__.__name__) from None
        except (HTTPError, OSError) as exc:
            raise SourceReadFailed("unreachable", detail=exc.__class__.__name__) from None
        else:
            if response.status < 500 or attempt == read.attempts:
                return response
            response.drain_conn()
            response.release_conn()
        _backoff(attempt)
    raise AssertionError("unreachable")


def _read_exactly(response: Response, length: int) -> bytes:
    """``length`` bytes as one ``bytes``; a body that ends early is a failure (HTTP/1.1 framing
    by Content-Length: bytes past it are not this body's).

    Read by an ``http.client`` response (the direct one, or the one under urllib3's): its
    buffered reader allocates the result once and fills it from the socket directly. A
    ``bytes`` and not a ``bytearray``: ``io.BytesIO`` shares a ``bytes`` but copies a
    ``bytearray``, so Pillow would otherwise open a second copy of the source
    (``bench/bench_transform.py``'s 2.7 MB source: 0.9 ms of the worker's CPU for the
    zero-filled buffer and the copy)."""
    raw = response if isinstance(response, http.client.HTTPResponse) else getattr(response, "_fp", None)
    read = raw.read if isinstance(raw, http.client.HTTPResponse) else response.read
    try:
        body = read(length)
    except ReadTimeoutError:
        raise SourceReadFailed("timeout") from None
    except TimeoutError:  # the socket's own timeout, from http.client's read
        raise SourceReadFailed("timeout") from None
    except (ProtocolError, HTTPError, http.client.HTTPException, OSError) as exc:
        raise SourceReadFailed("unreachable", detail=exc.__class__.__name__) from None
    if len(body) != length:
        raise SourceReadFailed("short", detail=f"body ended after {len(body)} of {length} bytes")
    return body
