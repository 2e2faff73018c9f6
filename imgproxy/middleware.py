"""Request ids, the access log, and the one place an error becomes a response.

Every error a client sees is ``{"error", "message", "request_id"}`` with the status of its
``ProxyError`` class; anything unexpected is logged with its traceback and answered as a bare 500.
The access log never holds a query string (signatures), a token, or (unless the operator opts
in) an object key.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from imgproxy import accesslog
from imgproxy.errors import (
    BodyTooLarge,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    ProxyError,
)
from imgproxy.forwarded import Network, client_address, is_trusted, public_scheme
from imgproxy.metrics import METRICS
from imgproxy.sendwatch import SendWatch, SendWatchdog

log = logging.getLogger("imgproxy.error")
REQUEST_ID: Final = web.RequestKey("imgproxy.request_id", str)
LOG_FIELDS: Final[web.RequestKey[dict[str, str]]] = web.RequestKey("imgproxy.log_fields", dict)
BODY_BYTES: Final = web.RequestKey("imgproxy.body_bytes", int)  # set by handlers that stream
# Seconds spent on parts of the work, when a handler knows them: "storage", "transform".
DURATIONS: Final[web.RequestKey[dict[str, float]]] = web.RequestKey("imgproxy.durations", dict)
SCHEME: Final = web.RequestKey("imgproxy.scheme", str)  # the client's, through trusted proxies
TRUSTED_PROXIES: Final[web.AppKey[tuple[Network, ...]]] = web.AppKey("trusted_proxies")
SEND_WATCHDOG: Final = web.AppKey("send_watchdog", SendWatchdog)
SEND_WATCH: Final[web.RequestKey[SendWatch | None]] = web.RequestKey("imgproxy.send_watch")
_CLIENT_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
SERVER_NAME: Final = "imgproxy"  # the Server header: no framework or versions to fingerprint
MAX_USER_AGENT: Final = 256  # characters of User-Agent kept in the access log
CLIENT_GONE: Final = 499  # the log's status for a client that left before its answer (as nginx)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_request_id(incoming: str | None) -> str:
    """Keep a well-formed id (the caller passes one only from a trusted proxy); else mint one."""
    if incoming and _CLIENT_REQUEST_ID.match(incoming):
        return incoming
    return secrets.token_hex(8)


def error_response(exc: ProxyError, request_id: str) -> web.Response:
    headers = {hdrs.CACHE_CONTROL: "no-store", "X-Content-Type-Options": "nosniff", **exc.headers}
    body = {"error": exc.code, "message": exc.public_message, "request_id": request_id}
    return web.json_response(body, status=exc.status, headers=headers)


def from_http_exception(exc: web.HTTPException) -> ProxyError:
    """aiohttp's own routing errors (no such route, wrong method) in our shape."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"method {exc.method}",
                                headers={hdrs.ALLOW: ", ".join(sorted(exc.allowed_methods))})
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("no such route")
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return BodyTooLarge("body over client_max_size")
    error = ProxyError(f"aiohttp {exc.status}", public_message=exc.reason)
    error.status = exc.status
    error.code = re.sub(r"[^a-z0-9]+", "_", exc.reason.lower()).strip("_") or "error"
    return error


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    trusted = request.app.get(TRUSTED_PROXIES, ())
    # Only a trusted front proxy may name the request (it ties its log to ours).
    request_id = new_request_id(request.headers.get("X-Request-Id")
                                if is_trusted(request.remote, trusted) else None)
    request[REQUEST_ID] = request_id
    request[LOG_FIELDS] = {
        "client": client_address(request.remote, request.headers.get("X-Forwarded-For"), trusted)}
    if agent := request.headers.get(hdrs.USER_AGENT):
        request[LOG_FIELDS]["user_agent"] = agent[:MAX_USER_AGENT]
    request[DURATIONS] = {}
    request[SCHEME] = public_scheme(request.remote, request.headers.get("X-Forwarded-Proto"), trusted,
                                    request.scheme)
    started = time.perf_counter()
    watchdog = request.app.get(SEND_WATCHDOG)
    with watchdog.watch(request.transport) if watchdog is not None else contextlib.nullcontext() as watch:
        request[SEND_WATCH] = watch
        response = await answer(request, handler, request_id)
        if not response.prepared:  # written here, under the watch (a stream wrote itself)
            await send_whole(request, response, watch)
    write_access_log(request, response, time.perf_counter() - started)
    return response


async def answer(request: web.Request, handler: Handler, request_id: str) -> web.StreamResponse:
    """The handler's response, or the error it raised as a response."""
    try:
        return await handler(request)
    except ProxyError as exc:
        response: web.StreamResponse = error_response(exc, request_id)
        # An overload is the limits working (WARNING); other 5xx need an operator (ERROR).
        level = (logging.WARNING if isinstance(exc, Overloaded) else logging.ERROR) \
            if exc.status >= 500 else logging.INFO
        log.log(level, "request_id=%s status=%d error=%s detail=%r",
                request_id, exc.status, exc.code, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(from_http_exception(exc), request_id)
    except ConnectionError:  # the client left before its answer began: nobody to answer
        request[LOG_FIELDS]["aborted"] = "client_gone"
        response = web.Response(status=CLIENT_GONE)
    except (HttpProcessingError, RequestPayloadError):  # a body the parser refused (bad chunking)
        response = error_response(MalformedRequest("request body refused by the parser"), request_id)
        response.force_close()
    except Exception:
        log.exception("request_id=%s unexpected error", request_id)
        response = error_response(ProxyError("unexpected"), request_id)
    return response


async def send_whole(request: web.Request, response: web.StreamResponse, watch: SendWatch | None) -> None:
    """Write a whole (not streamed) response: headers and body, under the client's send watch."""
    body = getattr(response, "body", None)
    size = len(body) if isinstance(body, bytes | bytearray) and request.method != hdrs.METH_HEAD else 0
    try:
        await response.prepare(request)
        if watch is not None:
            watch.handed += size
        await response.write_eof()
        if watch is not None and watch.reason:  # the reset woke the write up without an error
            raise ConnectionResetError(watch.reason)
    except ConnectionError:
        request[LOG_FIELDS]["aborted"] = (watch.reason if watch is not None else None) or "client_gone"
    else:
        request[BODY_BYTES] = size


async def stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer carries its request id; image answers say how they
    were delivered (``X-Delivery: stream|redirect|accel``). The delivery and the cache result are
    repeated in ``Server-Timing`` (``delivery;desc=stream, cache;desc=HIT``), the one response
    header a page's script can read for an ``<img>`` (``PerformanceResourceTiming.serverTiming``)."""
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-Id"] = request_id
    response.headers[hdrs.SERVER] = SERVER_NAME
    delivery = request.get(LOG_FIELDS, {}).get("delivery")
    if delivery and response.status < 400:
        response.headers["X-Delivery"] = delivery
        facts = [f"delivery;desc={delivery}"]
        if cache := response.headers.get("X-Cache"):
            facts.append(f"cache;desc={cache}")
        if timing := response.headers.get("Server-Timing"):
            facts.append(timing)
        elif storage := request.get(DURATIONS, {}).get("storage"):
            facts.append(f"storage;dur={storage * 1000:.1f}")
        response.headers["Server-Timing"] = ", ".join(facts)


def write_access_log(request: web.Request, response: web.StreamResponse, seconds: float) -> None:
    """The request's access log line, and the same facts counted in the app's metrics."""
    if response.prepared:
        sent = request.get(BODY_BYTES, 0)
    else:
        sent = 0 if request.method == "HEAD" else (response.content_length or 0)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "-"
    extra = request.get(LOG_FIELDS, {})
    durations = request.get(DURATIONS, {})
    fields = {
        "request_id": request.get(REQUEST_ID, "-"),
        "method": request.method,
        "route": route,
        "status": str(response.status),
        "bytes": str(sent),
        "duration_ms": f"{seconds * 1000:.1f}",
        **{f"{part}_ms": f"{spent * 1000:.1f}" for part, spent in durations.items()},
        **extra,
    }
    accesslog.write(fields, request.app.get(accesslog.LOG_FORMAT, "logfmt"))
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.observe_request(route, response.status, extra.get("delivery", "none"), sent, seconds,
                                durations.get("transform"))
        if extra.get("aborted") == "storage_failed":  # S3 failed after the headers were sent
            metrics.observe_s3_interrupted()
