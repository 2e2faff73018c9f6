"""``GET|HEAD /meta/{source}/{key}``: an image's width, height, format, frames, size, ETag and
ThumbHash placeholder as JSON, so a page can reserve layout space and paint a placeholder before
any image arrives (``transform/describe.py`` answers it).

Authorized exactly as ``/img`` (``web/access.py``; a signed URL signed for ``/meta``), charged to
the originals budget (it reads the object, as an original does; 429 before S3 is asked), and a
placeholder render to the transforms budget. Errors are the API's JSON (``middleware.py``).
"""

from __future__ import annotations

import json

from aiohttp import hdrs, web

from imgproxy.limits.buckets import Budget
from imgproxy.protocol.paths import META
from imgproxy.transform.describe import Asked, Describer, MetaAnswer, wants_placeholder
from imgproxy.web import appkeys
from imgproxy.web.access import authorized
from imgproxy.web.appkeys import FACTS, SETTINGS

NOSNIFF = {"X-Content-Type-Options": "nosniff"}


async def describe(request: web.Request) -> web.Response:
    settings = request[SETTINGS]
    config = settings.config
    facts = request[FACTS]
    # 1-3. Parse, authorize (a signature made for /meta), find the source; nothing read before.
    asked = await authorized(request, META)
    # 4. The one parameter: placeholder=1 (400 for any other).
    placeholder = wants_placeholder(asked.params)
    # 5. The originals budget, before S3 is asked; a placeholder render also spends the transforms one.
    limiter, clock = request.app[appkeys.LIMITER], request.app[appkeys.CLOCK]
    limiter.charge(Budget.ORIGINALS, asked.principal, facts.client, clock(), config.limits)

    def charge_render() -> None:
        limiter.charge(Budget.TRANSFORMS, asked.principal, facts.client, clock(), config.limits)

    # 6. The answer: a 304, the cached header (and placeholder), or ranged reads in the workers.
    wanted = Asked(asked.source, asked.target.key, settings.transforms, placeholder,
                   request.headers.get(hdrs.IF_NONE_MATCH), charge_render)
    answer = await Describer(request.app[appkeys.VARIANTS]).describe(wanted, facts.durations)
    facts.cache = answer.cache
    return meta_response(answer, asked.source.config.cache_control)


def meta_response(answer: MetaAnswer, cache_control: str) -> web.Response:
    """The JSON (HEAD: its headers, Content-Length included), or 304 when the client has it."""
    headers = {hdrs.CACHE_CONTROL: cache_control, **NOSNIFF}
    if answer.etag is not None:
        headers[hdrs.ETAG] = answer.etag
    if answer.meta is None:
        return web.Response(status=304, headers=headers)
    body = json.dumps(answer.meta.as_json(), separators=(",", ":")).encode()
    return web.Response(body=body, content_type="application/json", headers=headers)
