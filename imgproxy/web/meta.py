"""``GET|HEAD /meta/{source}/{key}``: an image's width, height, format, frames, size, ETag and
ThumbHash placeholder as JSON, so a page can reserve layout space and paint a placeholder before
any image arrives (``transform/describe.py`` answers it).

Authorized exactly as ``/img`` (``web/access.py``; a signed URL signed for ``/meta``), charged to
the originals budget (it reads the object, as an original does; 429 before S3 is asked), and a
placeholder render to the transforms budget. Errors are the API's JSON (``middleware.py``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from aiohttp import hdrs, web

from imgproxy.auth.batch import BatchItem
from imgproxy.auth.principal import Principal
from imgproxy.errors import ProxyError
from imgproxy.limits.buckets import Budget
from imgproxy.protocol.paths import META
from imgproxy.transform.describe import Asked, Describer, MetaAnswer, wants_placeholder
from imgproxy.web import appkeys
from imgproxy.web.access import authorized
from imgproxy.web.appkeys import FACTS, SETTINGS

NOSNIFF: Final = {"X-Content-Type-Options": "nosniff"}
BATCH_LOOKUPS: Final = 4  # a POST /sign's metadata lookups at once (each: a ranged read, a worker job)


async def describe(request: web.Request) -> web.Response:
    settings = request[SETTINGS]
    facts = request[FACTS]
    # 1-3. Parse, authorize (a signature made for /meta), find the source; nothing read before.
    asked = await authorized(request, META)
    # 4. The one parameter: placeholder=1 (400 for any other).
    placeholder = wants_placeholder(asked.params)
    # 5. The originals budget, before S3 is asked; a placeholder render also spends the transforms one.
    charge_render = charged(request, asked.principal)
    # 6. The answer: a 304, the cached header (and placeholder), or ranged reads in the workers.
    wanted = Asked(asked.source, asked.target.key, settings.transforms, placeholder,
                   request.headers.get(hdrs.IF_NONE_MATCH), charge_render)
    answer = await Describer(request.app[appkeys.VARIANTS]).describe(wanted, facts.durations)
    facts.cache = answer.cache
    return meta_response(answer, asked.source.config.cache_control)


def charged(request: web.Request, principal: Principal) -> Callable[[], None]:
    """Spend one lookup of the originals budget now (429 before S3 is asked); the callable spends
    the transforms budget, for a placeholder render."""
    limiter, clock, facts = request.app[appkeys.LIMITER], request.app[appkeys.CLOCK], request[FACTS]
    limits = request[SETTINGS].config.limits
    limiter.charge(Budget.ORIGINALS, principal, facts.client, clock(), limits)

    def charge_render() -> None:
        limiter.charge(Budget.TRANSFORMS, principal, facts.client, clock(), limits)

    return charge_render


async def describe_items(request: web.Request, principal: Principal, items: Sequence[BatchItem],
                         answers: list[dict[str, Any]]) -> None:
    """``POST /sign``: the metadata of each signed item that asks for it (``"meta": true``), put
    next to its URL, ``BATCH_LOOKUPS`` at a time. A lookup that fails is that item's
    ``meta_error`` (``{"error", "message"}``, as an API error), never the batch's."""
    settings, facts = request[SETTINGS], request[FACTS]
    describer = Describer(request.app[appkeys.VARIANTS])
    slots = asyncio.Semaphore(BATCH_LOOKUPS)

    async def lookup(item: BatchItem, answer: dict[str, Any]) -> None:
        async with slots:
            try:
                charge_render = charged(request, principal)
                wanted = Asked(settings.sources[item.source], item.key, settings.transforms,
                               item.placeholder, None, charge_render)
                found = await describer.describe(wanted, facts.durations)
            except ProxyError as exc:
                answer["meta_error"] = {"error": exc.code, "message": exc.public_message}
                return
            assert found.meta is not None  # no If-None-Match was given
            answer.update({name: value for name, value in found.meta.as_json().items()})

    await asyncio.gather(*(lookup(item, answer) for item, answer in zip(items, answers, strict=True)
                           if item.meta and "url" in answer))


def meta_response(answer: MetaAnswer, cache_control: str) -> web.Response:
    """The JSON (HEAD: its headers, Content-Length included), or 304 when the client has it."""
    headers = {hdrs.CACHE_CONTROL: cache_control, **NOSNIFF}
    if answer.etag is not None:
        headers[hdrs.ETAG] = answer.etag
    if answer.meta is None:
        return web.Response(status=304, headers=headers)
    body = json.dumps(answer.meta.as_json(), separators=(",", ":")).encode()
    return web.Response(body=body, content_type="application/json", headers=headers)
