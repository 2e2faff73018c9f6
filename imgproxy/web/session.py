"""``/session``: cookie grants handed to a browser, so pages can use plain, never-changing image URLs.

- ``POST /session`` (``Authorization: Bearer`` a JWT, or a token with ``sign_scopes``; body
  ``application/json``: ``{}`` or ``{"scopes": [...]}``, a token's also ``"sub"``) sets the grant
  cookie, or answers ``204`` without ``Set-Cookie`` while the cookie the browser sent grants the
  same and has more than half its life left (so the cookie, and what browsers cached under
  ``Vary: Cookie``, stays the same across page loads).
- ``GET /session?grant=LINK[&return=URL]`` opens a single-use link a dashboard backend minted
  (``auth.grants.grant_link``), sets the cookie and sends the browser back to ``return`` (an
  origin in ``server.cors_origins``) with ``303``.
- ``DELETE /session`` clears the cookie.

A grant minted by a presets-only token (or link, or sealed with a presets-only key) is itself
presets-only: the sealed grant carries it, and its plain URLs may transform by ``preset`` only.

Every answer is ``no-store`` with ``Referrer-Policy: no-referrer`` (``middleware.stamp_facts``):
a grant link must not leak through a ``Referer`` header or a cache.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import hdrs, web

from imgproxy.auth.grants import COOKIE, LINK, Grant, covered, parse_scopes, seal, unseal, within_key
from imgproxy.auth.principal import Principal, identify_bearer
from imgproxy.auth.signing import parse_query
from imgproxy.config.cors import check_origin
from imgproxy.config.grants import GrantsConfig
from imgproxy.config.model import Scope
from imgproxy.config.values import ConfigError
from imgproxy.errors import (
    BadRequest,
    InvalidGrant,
    NotFound,
    OutOfScope,
    ReturnNotAllowed,
    RevocationsUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from imgproxy.protocol.jsonbody import read_json
from imgproxy.web import appkeys
from imgproxy.web.appkeys import FACTS, SETTINGS
from imgproxy.web.live import Settings

MAX_BODY: Final = 16 * 1024
MAX_RETURN: Final = 2048
NO_STORE: Final = {hdrs.CACHE_CONTROL: "no-store"}


def grants_of(settings: Settings) -> GrantsConfig:
    grants = settings.auth.grants
    if grants is None:
        raise NotFound("grants off", public_message="This server has no cookie grants ([auth.grants]).")
    return grants


def current_grant(request: web.Request, settings: Settings, now: float) -> Grant | None:
    """The grant the request's cookie holds, if it still verifies."""
    grants = grants_of(settings)
    cookie = request.cookies.get(grants.cookie_name)
    if cookie is None:
        return None
    try:
        return settings.auth.open_grant(cookie, now)
    except InvalidGrant:
        return None


def set_grant_cookie(response: web.StreamResponse, grants: GrantsConfig, value: str, max_age: int) -> None:
    response.set_cookie(grants.cookie_name, value, max_age=max_age, path="/", secure=grants.secure,
                        httponly=True, samesite="Lax")


def requested(body: Any, principal: Principal) -> tuple[str, tuple[Scope, ...]]:
    """(sub, scopes) a ``POST /session`` body asks for, within what the principal may grant."""
    if not isinstance(body, dict) or set(body) - {"scopes", "sub"}:
        raise BadRequest("session body", public_message='The body must be a JSON object with '
                         'optional "scopes" (a list of scope strings) and, for a token, "sub".')
    allowed = principal.scopes if principal.kind == "jwt" else principal.sign_scopes
    if not allowed:
        raise OutOfScope(f"{principal.kind} {principal.name!r} has nothing to grant", public_message=(
            "This token may not grant scopes (it has no sign_scopes)." if principal.kind == "token"
            else "This token's claims grant no scopes."))
    if principal.kind == "jwt":
        if "sub" in body:
            raise BadRequest("sub in a JWT's session body", public_message=(
                'A JWT\'s grant is for its own "sub"; leave "sub" out of the body.'))
        sub = principal.sub or principal.name
    else:
        named = body.get("sub")
        if not isinstance(named, str):
            raise BadRequest("no sub", public_message='A token\'s grant names its user: "sub".')
        sub = named
    texts = body.get("scopes")
    if texts is None:
        return sub, allowed
    if not isinstance(texts, list) or not texts:
        raise BadRequest("scopes", public_message='"scopes" must be a non-empty list of strings.')
    try:
        scopes = parse_scopes(texts)
    except ValueError as exc:
        raise BadRequest(f"scopes: {exc}", public_message=f'"scopes": {exc}.') from None
    for scope in scopes:
        if not covered(scope, allowed):
            raise OutOfScope(f"{principal.kind} {principal.name!r} may not grant {scope.text!r}",
                             public_message=f"The credentials may not grant {scope.text!r}.")
    return sub, scopes


def mint(grant: Grant, settings: Settings) -> str:
    """The cookie value: ``grant`` sealed with ``auth.grants.key``, within that key's scopes."""
    if not within_key(grant.scopes, settings.auth.key_limits(grant.kid)):
        raise OutOfScope(f"grant key {grant.kid!r} does not cover the scopes asked for",
                         public_message="The grant key does not cover the scopes asked for.")
    try:
        return seal(grant, settings.auth.keys[grant.kid], COOKIE)
    except ValueError as exc:
        raise BadRequest(f"grant: {exc}", public_message=f"The grant cannot be made: {exc}.") from None


def fitting(grant: Grant, settings: Settings) -> Grant:
    """``grant``, without its groups (a JWT's, for ``[auth.webhook]``) if they would not fit a
    cookie (more than 32, a long one, or too many bytes): a user with many groups still gets one."""
    if grant.groups:
        try:
            seal(grant, settings.auth.keys[grant.kid], COOKIE)
        except ValueError:
            return dataclasses.replace(grant, groups=())
    return grant


async def start_session(request: web.Request) -> web.Response:
    """POST /session: a grant cookie for the bearer (a JWT's user, or a token's named user)."""
    settings = request[SETTINGS]
    grants = grants_of(settings)
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        raise Unauthorized("no credentials for /session")
    if not (request.headers.get(hdrs.CONTENT_TYPE) or "").strip():  # read_json then checks it is JSON
        raise UnsupportedMediaType("no content-type on POST /session", public_message=(
            "POST /session needs Content-Type: application/json."))
    jwks, now = request.app[appkeys.JWKS], request.app[appkeys.CLOCK]()
    await jwks.prepare(header, settings.auth.oidc)
    principal = identify_bearer(header, settings.auth, jwks.keys_for, now)
    facts = request[FACTS]
    facts.principal, facts.sub = f"{principal.kind}:{principal.name}", principal.sub
    body = await read_json(request, request.app[appkeys.BODY_SLOTS], max_bytes=MAX_BODY,
                           time_limit=settings.config.server.body_timeout)
    sub, scopes = requested(body, principal)
    issued = int(now)
    grant = fitting(Grant(grants.key, sub, scopes, issued, issued + int(grants.ttl), principal.groups,
                          f"{principal.kind}:{principal.name}", presets_only=principal.presets_only),
                    settings)
    held = current_grant(request, settings, now)
    if held is not None and held.kid == grants.key and held.same_access(grant) \
            and held.exp - now > grants.ttl / 2:
        return web.Response(status=204, headers=NO_STORE)
    value = mint(grant, settings)
    response = web.Response(status=204, headers=NO_STORE)
    set_grant_cookie(response, grants, value, int(grants.ttl))
    return response


async def open_link(request: web.Request) -> web.Response:
    """GET /session?grant=...: a dashboard's single-use link becomes the browser's cookie."""
    settings = request[SETTINGS]
    grants = grants_of(settings)
    query = parse_query(request.raw_path.partition("?")[2], 4)
    if "grant" not in query or set(query) - {"grant", "return"}:
        raise BadRequest("session link query", public_message=(
            "GET /session takes grant= (a grant link) and optionally return= (where to go next)."))
    back = query.get("return")
    if back is not None:
        check_return(back, settings.cors.origins)
    now = request.app[appkeys.CLOCK]()
    auth = settings.auth
    link = unseal(query["grant"], auth.keys, LINK, now, auth.clock_skew, grants.link_ttl)
    facts = request[FACTS]
    facts.principal, facts.sub = f"grant:{link.sub}", link.sub
    if link.nonce is None:
        raise InvalidGrant("malformed")
    if auth.revocations is None:
        raise RevocationsUnavailable("revocation list not loaded yet")
    auth.revocations.check_holder(link.kid, link.sub, link.iat)
    limits = auth.key_limits(link.kid)
    if not within_key(link.scopes, limits):
        raise OutOfScope(f"link key {link.kid!r} does not cover its scopes")
    if not request.app[appkeys.LEDGER].first_use(link.nonce, link.exp + auth.clock_skew, now):
        raise InvalidGrant("used")
    issued = int(now)
    value = mint(Grant(grants.key, link.sub, link.scopes, issued, issued + int(grants.ttl),
                       link.groups, "link", presets_only=link.presets_only or limits.presets_only),
                 settings)
    response = web.Response(status=204 if back is None else 303,
                            headers=NO_STORE if back is None else {**NO_STORE, hdrs.LOCATION: back})
    set_grant_cookie(response, grants, value, int(grants.ttl))
    return response


async def end_session(request: web.Request) -> web.Response:
    """DELETE /session: the cookie cleared (whatever it held)."""
    grants = grants_of(request[SETTINGS])
    response = web.Response(status=204, headers=NO_STORE)
    set_grant_cookie(response, grants, "", 0)
    return response


def check_return(url: str, origins: tuple[str, ...]) -> None:
    """``url`` is an absolute http(s) URL whose origin is byte for byte one of ``origins``."""
    parts = None
    if len(url) <= MAX_RETURN and url.isascii() and url.isprintable() and "\\" not in url:
        try:
            parts = urlsplit(url)
            origin = check_origin(f"{parts.scheme}://{parts.netloc}", "return") \
                if parts.scheme in ("http", "https") and "@" not in parts.netloc else None
        except (ValueError, ConfigError):
            origin = None
    if parts is None or origin is None or origin not in origins or "*" in origins:
        raise ReturnNotAllowed(f"return to {url[:100]!r}")
