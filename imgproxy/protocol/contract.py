"""What every answer shares, whoever writes it (a handler, the middleware, or the connection
guard for a request the parser refused): the ``Server`` header, the request id, and the error
body ``{"error", "message", "request_id"}``."""

from __future__ import annotations

import re
import secrets
from typing import Final

from aiohttp import hdrs, web

from imgproxy.errors import ProxyError
from imgproxy.protocol.media import NOSNIFF

SERVER_NAME: Final = "imgproxy"  # the Server header: no framework or versions to fingerprint
_CLIENT_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def new_request_id(incoming: str | None) -> str:
    """Keep a well-formed id (the caller passes one only from a trusted proxy); else mint one."""
    if incoming and _CLIENT_REQUEST_ID.match(incoming):
        return incoming
    return secrets.token_hex(8)


def error_response(exc: ProxyError, request_id: str) -> web.Response:
    headers = {hdrs.CACHE_CONTROL: "no-store", **NOSNIFF, **exc.headers}
    body = {"error": exc.code, "message": exc.public_message, "request_id": request_id}
    return web.json_response(body, status=exc.status, headers=headers)
