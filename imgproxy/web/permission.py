"""The application's permission for a request (``[auth.webhook]``): the check an image request
makes after its scope check and before storage, and the refusals of ``POST /sign``'s items.

Only JWT, cookie-grant and forward-auth principals are asked about (``auth.webhook.should_ask``);
the request's settings decide the webhook's config, and the ``WebhookClient`` in the app's state
asks (cached, coalesced). The outcome goes to the request's facts (``webhook=`` in the log).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web

from imgproxy.auth.principal import Principal
from imgproxy.auth.webhook import Verdict, question_for, refusal, should_ask, worst
from imgproxy.config.webhook import WebhookConfig
from imgproxy.errors import ProxyError
from imgproxy.web import appkeys
from imgproxy.web.appkeys import FACTS, SETTINGS

Refusals = Callable[[str, str], ProxyError | None]


def in_force(request: web.Request) -> tuple[WebhookConfig | None, bool]:
    """The request's ``[auth.webhook]`` (None: off), and whether it is the one in force now."""
    config = request[SETTINGS].config.auth.webhook
    return config, config is request.app[appkeys.LIVE].current.config.auth.webhook


async def require_allowed(request: web.Request, principal: Principal, source: str, key: str) -> None:
    """``/img``: after the scope check, before storage: the webhook's allow, or its refusal."""
    config, current = in_force(request)
    if config is None or not should_ask(principal.kind):
        return
    client = request.app[appkeys.WEBHOOK]
    [decision] = await client.decide(config, [question_for(principal, source, key)], current=current)
    request[FACTS].webhook = decision.outcome
    error = refusal(decision.verdict, config.on_error)
    if error is not None:
        raise error


async def sign_refusals(request: web.Request, principal: Principal,
                        paths: Sequence[tuple[str, str]]) -> Refusals:
    """``POST /sign``: the webhook asked once about each (source, key) (batched if it takes
    lists); the refusal each item gets (None: allowed)."""
    config, current = in_force(request)
    if config is None or not should_ask(principal.kind) or not paths:
        return lambda source, key: None
    client = request.app[appkeys.WEBHOOK]
    questions = [question_for(principal, source, key) for source, key in paths]
    decisions = await client.decide(config, questions, current=current)
    request[FACTS].webhook = worst(decisions)
    verdicts = {(q.source, q.key): d.verdict for q, d in zip(questions, decisions, strict=True)}
    on_error = config.on_error
    return lambda source, key: refusal(verdicts.get((source, key), Verdict.ERROR), on_error)
