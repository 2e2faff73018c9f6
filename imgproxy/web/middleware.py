"""The one place a request's facts and errors become headers, a log line and metrics.

Every error a client sees is ``{"error", "message", "request_id"}`` with the status of its
``ProxyError`` class; anything unexpected is logged with its traceback and answered as a bare 500.
Handlers record what happened in the request's ``RequestFacts`` (``facts.py``); this module alone
turns it into the access log line, the metrics, and the informational headers (``X-Request-Id``,
``X-Delivery``, ``X-Cache``, ``Server-Timing``); it adds the CORS headers of the request's
``CorsPolicy`` (``protocol.cors``) to every answer and answers preflights before any route. The
access log never holds a query string (signatures), a token, or (unless the operator opts in) an
object key.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from imgproxy.config import LogFormat
from imgproxy.errors import (
    BodyTooLarge,
    Forbidden,
    InvalidGrant,
    InvalidJwt,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    ProxyError,
    RateLimited,
    Unauthorized,
)
from imgproxy.facts import Part, RequestFacts
from imgproxy.protocol import accesslog
from imgproxy.protocol.cachecontrol import cap_cache_control, private_cache_control
from imgproxy.protocol.contract import SERVER_NAME, error_response, new_request_id
from imgproxy.protocol.cors import CorsPolicy, merge_vary
from imgproxy.protocol.forwarded import Network, client_address, is_trusted, public_scheme
from imgproxy.protocol.sendwatch import SendWatch
from imgproxy.web.appkeys import FACTS, LIVE, LOG_FORMAT, METRICS, SEND_WATCH, SEND_WATCHDOG, SETTINGS

log = logging.getLogger("imgproxy.error")
MAX_USER_AGENT: Final = 256  # characters of User-Agent kept in the access log
CLIENT_GONE: Final = 499  # the log's status for a client that left before its answer (as nginx)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    # The settings in force now serve this request to its end, whatever a reload does meanwhile.
    live = request.app.get(LIVE)
    trusted: tuple[Network, ...] = ()
    if live is not None:
        settings = request[SETTINGS] = live.current
        trusted = settings.trusted_proxies
    remote = request.remote
    facts = request[FACTS] = RequestFacts(
        # Only a trusted front proxy may name the request (it ties its log to ours).
        request_id=new_request_id(request.headers.get("X-Request-Id") if is_trusted(remote, trusted)
                                  else None),
        client=client_address(remote, request.headers.get("X-Forwarded-For"), trusted),
        scheme=public_scheme(remote, request.headers.get("X-Forwarded-Proto"), trusted, request.scheme),
        user_agent=(request.headers.get(hdrs.USER_AGENT) or "")[:MAX_USER_AGENT] or None,
    )
    watchdog = request.app.get(SEND_WATCHDOG)
    with watchdog.watch(request.transport) if watchdog is not None else contextlib.nullcontext() as watch:
        request[SEND_WATCH] = watch
        response = await answer(request, preflight if is_preflight(request) else handler, facts)
        if not response.prepared:  # written here, under the watch (a stream wrote itself)
            await send_whole(request, response, watch, facts)
    write_access_log(request, response, facts)
    return response


async def answer(request: web.Request, handler: Handler, facts: RequestFacts) -> web.StreamResponse:
    """The handler's response, or the error it raised as a response."""
    request_id = facts.request_id
    try:
        return await handler(request)
    except ProxyError as exc:
        response: web.StreamResponse = error_response(exc, request_id)
        if isinstance(exc, RateLimited):
            facts.limited = (exc.budget, exc.dimension)
        if isinstance(exc, Unauthorized | Forbidden):  # the failures metric's reason
            facts.denied = (f"jwt_{exc.reason}" if isinstance(exc, InvalidJwt)
                           else f"grant_{exc.reason}" if isinstance(exc, InvalidGrant) else exc.code)
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
        facts.aborted = "client_gone"
        response = web.Response(status=CLIENT_GONE)
    except (HttpProcessingError, RequestPayloadError):  # a body the parser refused (bad chunking)
        response = error_response(MalformedRequest("request body refused by the parser"), request_id)
        response.force_close()
    except Exception:
        log.exception("request_id=%s unexpected error", request_id)
        response = error_response(ProxyError("unexpected"), request_id)
    return response


def is_preflight(request: web.Request) -> bool:
    """A CORS preflight: ``OPTIONS`` asking for another method, on a path where no route answers
    ``OPTIONS`` itself (the router resolved it to its 404 or 405)."""
    return (request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
            and request.match_info.http_exception is not None)


async def preflight(request: web.Request) -> web.StreamResponse:
    """``204`` for an allowed origin and a method the path's route answers (a 404 stays one)."""
    routed = request.match_info.http_exception
    settings = request.get(SETTINGS)
    if not isinstance(routed, web.HTTPMethodNotAllowed) or settings is None:
        assert routed is not None  # is_preflight
        raise routed
    headers = settings.cors.preflight_headers(request.headers.getall(hdrs.ORIGIN, []),
                                              request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD],
                                              routed.allowed_methods)
    return web.Response(status=204, headers=headers)


async def send_whole(request: web.Request, response: web.StreamResponse, watch: SendWatch | None,
                     facts: RequestFacts) -> None:
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
        facts.aborted = (watch.reason if watch is not None else None) or "client_gone"
    else:
        facts.body_bytes = size


async def stamp_facts(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every answer carries its request id and ``Server: imgproxy``;
    image answers say how they were delivered (``X-Delivery: stream|redirect|accel``) and, for a
    variant, where it came from (``X-Cache``). Both are repeated in ``Server-Timing``
    (``delivery;desc=stream, cache;desc=HIT, storage;dur=…``), the one response header a page's
    script can read for an ``<img>`` (``PerformanceResourceTiming.serverTiming``)."""
    response.headers[hdrs.SERVER] = SERVER_NAME
    facts = request.get(FACTS)
    if facts is None:
        return
    response.headers["X-Request-Id"] = facts.request_id
    if request.path == "/session":  # a grant link must leak neither by Referer nor by a cache
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers[hdrs.CACHE_CONTROL] = "no-store"
    settings = request.get(SETTINGS)
    if settings is not None:
        stamp_cors(settings.cors, request.headers.getall(hdrs.ORIGIN, []), response)
    if facts.max_age_cap is not None and response.status < 400:
        response.headers[hdrs.CACHE_CONTROL] = cap_cache_control(
            response.headers.get(hdrs.CACHE_CONTROL), facts.max_age_cap)
    if facts.private and response.status < 400 and hdrs.CACHE_CONTROL in response.headers:
        response.headers[hdrs.CACHE_CONTROL] = private_cache_control(response.headers[hdrs.CACHE_CONTROL])
    if facts.vary is not None:
        response.headers[hdrs.VARY] = merge_vary(response.headers.get(hdrs.VARY), facts.vary)
    if facts.cache is not None:
        response.headers["X-Cache"] = facts.cache.value
    if facts.delivery is not None and response.status < 400:
        response.headers["X-Delivery"] = facts.delivery.value
        response.headers["Server-Timing"] = server_timing(facts)


def stamp_cors(policy: CorsPolicy, origins: list[str], response: web.StreamResponse) -> None:
    """The policy's CORS headers for the request's ``Origin`` headers; ``Vary`` merged."""
    for name, value in policy.answer_headers(origins).items():
        if name == hdrs.VARY:
            response.headers[hdrs.VARY] = merge_vary(response.headers.get(hdrs.VARY), value)
        else:
            response.headers[name] = value


def server_timing(facts: RequestFacts) -> str:
    """``delivery;desc=…`` [``cache;desc=…``], then the measured parts: an original's storage
    time if S3 was asked; a transform's storage and transform time (0.0 when none) and total."""
    entries = [f"delivery;desc={facts.delivery}"]
    if facts.cache is not None:
        entries.append(f"cache;desc={facts.cache}")
    seconds = dict(facts.durations.seconds)
    if facts.transform:
        seconds = {Part.STORAGE: seconds.get(Part.STORAGE, 0.0),
                   Part.TRANSFORM: seconds.get(Part.TRANSFORM, 0.0)}
    entries += [f"{part};dur={spent * 1000:.1f}" for part, spent in seconds.items()]
    if facts.transform:
        entries.append(f"total;dur={facts.elapsed() * 1000:.1f}")
    return ", ".join(entries)


def access_fields(request: web.Request, response: web.StreamResponse, facts: RequestFacts,
                  route: str) -> dict[str, str]:
    """The access log line's fields, in their documented order."""
    fields = {
        "request_id": facts.request_id,
        "method": request.method,
        "route": route,
        "status": str(response.status),
        "bytes": str(facts.body_bytes),
        "duration_ms": f"{facts.elapsed() * 1000:.1f}",
        **{f"{part}_ms": f"{seconds * 1000:.1f}" for part, seconds in facts.durations.seconds.items()},
        "client": facts.client,
    }
    optional = (("user_agent", facts.user_agent), ("source", facts.source), ("key", facts.key),
                ("key_hash", facts.key_hash), ("auth", facts.principal), ("kid", facts.kid),
                ("token", facts.token), ("sub", facts.sub), ("webhook", facts.webhook),
                ("delivery", facts.delivery),
                ("transform", "1" if facts.transform else None), ("cache", facts.cache),
                ("aborted", facts.aborted),
                ("limited", "/".join(facts.limited) if facts.limited else None))
    fields.update((name, str(value)) for name, value in optional if value is not None)
    return fields


def write_access_log(request: web.Request, response: web.StreamResponse, facts: RequestFacts) -> None:
    """The request's access log line, and the same facts counted in the app's metrics."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "-"
    accesslog.write(access_fields(request, response, facts, route),
                    request.app.get(LOG_FORMAT, LogFormat.LOGFMT))
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.observe_request(route, response.status, facts.delivery or "none", facts.body_bytes,
                                facts.elapsed(), facts.durations.get(Part.TRANSFORM))
        if facts.aborted == "storage_failed":  # S3 failed after the headers were sent
            metrics.observe_s3_interrupted()
        if facts.limited is not None:
            metrics.observe_rate_limited(*facts.limited)
        if facts.denied is not None:
            metrics.observe_auth_failure(facts.denied)
