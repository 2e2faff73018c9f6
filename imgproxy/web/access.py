"""Who asks for which object: the steps every object route (``/img``, ``/meta``) takes first.

Parse the path and query, authorize (signature over the route's own path, bearer token or JWT,
grant cookie, forward-auth; then the webhook), and find the source: nothing touches S3 before,
so an unauthorized answer never tells whether an object exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from imgproxy.auth.principal import Principal, authorize
from imgproxy.auth.signing import parse_query
from imgproxy.errors import UnknownSource
from imgproxy.facts import RequestFacts
from imgproxy.protocol.accesslog import key_hash
from imgproxy.protocol.paths import ImagePath, origin_form, parse_image_path
from imgproxy.storage.s3 import S3Source
from imgproxy.web import appkeys
from imgproxy.web.appkeys import FACTS, SETTINGS
from imgproxy.web.forward import believed_headers
from imgproxy.web.live import Settings
from imgproxy.web.permission import require_allowed


@dataclass(frozen=True, slots=True)
class Authorized:
    """A request for one object, parsed and authorized (``/img`` and ``/meta`` alike)."""

    target: ImagePath
    params: dict[str, str]
    principal: Principal
    source: S3Source


async def authorized(request: web.Request, route: str) -> Authorized:
    """Steps 1-3 of every object route: parse, authorize, find the source. ``route`` (``img`` or
    ``meta``) is the path's first segment, and the one a signature must have been made for."""
    settings = request[SETTINGS]
    config = settings.config
    facts = request[FACTS]
    # 1. What is asked for: a checked source name and key, and the decoded query.
    raw_target = origin_form(request.raw_path)
    target = parse_image_path(raw_target, route)
    params = parse_query(raw_target.partition("?")[2], config.server.max_query_params)
    facts.source = target.source
    if config.server.log_keys:
        facts.key = target.key
    else:
        facts.key_hash = key_hash(settings.key_hash_secret, target.source, target.key)
    # 2. Who asks, and may they: signature (key, scopes, revocations), bearer token or JWT (its
    #    provider's keys fetched first if the token names one not held), a grant cookie
    #    ([auth.grants]), or the user a trusted auth proxy names ([auth.forward]); nothing
    #    touches S3 before.
    authorization, jwks = request.headers.get(hdrs.AUTHORIZATION), request.app[appkeys.JWKS]
    forwarded = cookie = None
    if "sig" not in params:
        await jwks.prepare(authorization, settings.auth.oidc)
        if authorization is None:
            cookie = grant_cookie(request, settings)
            forwarded = believed_headers(request) if cookie is None else None
    principal = authorize(target.source, target.key, params, authorization, settings.auth,
                          request.app[appkeys.CLOCK](), jwks.keys_for, forwarded, cookie, route)
    record_principal(facts, principal, config.auth.durable_max_age)
    # 2b. The application's say ([auth.webhook]) for a JWT, grant or forwarded user: 403 or 503.
    await require_allowed(request, principal, target.source, target.key)
    # 3. Which bucket: unknown sources are 404 only after authorization succeeded.
    return Authorized(target, params, principal, find_source(settings, target.source))


def grant_cookie(request: web.Request, settings: Settings) -> str | None:
    """The grant cookie's value, when grants are on (cookies authorize only GET and HEAD)."""
    grants = settings.auth.grants
    if grants is None or request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        return None
    return request.cookies.get(grants.cookie_name)


def record_principal(facts: RequestFacts, principal: Principal, durable_max_age: float) -> None:
    """Who asked, for the access log (key id, token name, ``jwt:PROVIDER:SUB``, ``grant:SUB`` or
    ``forward:USER``, and the viewer); a durable URL's answers are cached at most
    ``durable_max_age`` (``middleware.stamp_facts``, ``offload``); a user's own credential's
    answers are private, and a grant's vary by cookie."""
    facts.principal = f"{principal.kind}:{principal.name}"
    if principal.kind == "signature":
        facts.kid = principal.name
    elif principal.kind == "token":
        facts.token = principal.name
    elif principal.kind == "jwt":
        facts.principal = f"jwt:{principal.name}:{principal.sub}"
    facts.sub = principal.sub
    facts.private = principal.is_user
    if principal.kind == "grant":
        facts.vary = "Cookie"
    if principal.durable:
        facts.max_age_cap = durable_max_age


def find_source(settings: Settings, name: str) -> S3Source:
    source = settings.sources.get(name)
    if source is None:
        raise UnknownSource(f"unknown source {name!r}")
    return source
