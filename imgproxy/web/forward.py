"""Which requests' forward-auth headers are believed: the direct peer's, when it is one of
``auth.forward.trusted_proxies``; anyone else's are ignored, with a log line (rate-limited)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from imgproxy.web import appkeys
from imgproxy.web.appkeys import SETTINGS

log = logging.getLogger("imgproxy.auth")


def believed_headers(request: web.Request) -> Mapping[str, str] | None:
    """The request's headers for ``authorize(forwarded=...)``, or None: forward-auth off, or a
    peer that may not speak for users (``request.remote``, never ``X-Forwarded-For``)."""
    policy = request[SETTINGS].auth.forward
    if policy is None or not policy.is_present(request.headers):
        return None
    peer = request.remote
    if policy.trusts(peer):
        return request.headers
    if request.app[appkeys.UNTRUSTED_PEERS].should_report(peer or "-", request.app[appkeys.CLOCK]()):
        sent = sorted(name for name in policy.config.headers.values() if name in request.headers)
        log.warning("request_id=%s forward-auth headers %s from %s ignored: not in "
                    "auth.forward.trusted_proxies (logged at most once a minute per peer)",
                    request[appkeys.FACTS].request_id, ",".join(sent), peer or "-")
    return None
