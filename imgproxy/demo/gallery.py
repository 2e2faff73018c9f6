"""The demo's employee directory at ``/``: what a dashboard built on imgproxy looks like, two ways.

Both handlers play the dashboard's backend.

``/`` (``?user=hr`` or ``?user=lead``, HR by default): the logged-in view. The backend gets a JWT
for the user from the demo's identity provider (``demo.idp``) and puts it in the page; the page's
script trades it for a cookie grant (``POST /session``), then shows **plain** URLs
(``/img/demo/employees/Sales/Ada Berg.jpg?preset=thumb``: the proxy's ``[transform.presets.thumb]``,
96x96 ``fit=cover`` ``fmt=auto``, and ``&dpr=2`` for the srcset): no ``exp``, no ``sig``,
the same on every load and for every user, so the browser's cache (``Cache-Control: private``,
``Vary: Cookie``) answers the next load. The backend lists every person but asks for a photo only
where the user's claims earn a scope for it (under the proxy's own ``[auth.oidc.demo]`` rules);
the rest are initials tiles. The proxy enforces the same scopes: a URL outside them is 403.

``/signed``: no login. For each load the backend makes **one** ``POST /sign`` call (a bearer
token with sign scopes only) for every thumbnail and full-size URL; ``auth.url_window`` makes that
call return the same URLs for every load within the window, so here too the second load reaches
the proxy for no image. The same call asks each photo's metadata (``"meta": true``): its size
and ThumbHash, which the page paints before the thumbnail arrives; and every thumbnail URL
carries ``initials=`` (signed), so a new hire without a photo gets an initials avatar, drawn by
the proxy, instead of a broken image (``initials`` changes nothing for a photo that exists),
and the person's focal point (``fp``: the preset's square crop keeps the face).
"""

from __future__ import annotations

import asyncio
import html
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp
from aiohttp import hdrs, web

from imgproxy.auth.claims import claim_scopes
from imgproxy.config import Scope
from imgproxy.config.oidc import OidcConfig
from imgproxy.demo.idp import USERS, DemoIdp, DemoUser, find_user
from imgproxy.demo.page import Card, NavLink, View, render_page
from imgproxy.demo.people import Person
from imgproxy.errors import NotFound, ProxyError
from imgproxy.facts import Durations
from imgproxy.protocol.media import NOSNIFF
from imgproxy.protocol.paths import image_path
from imgproxy.transform.describe import Asked, Describer
from imgproxy.web.appkeys import LIVE, VARIANTS

log = logging.getLogger("imgproxy.demo")
THUMB_PRESET: Final = "thumb"  # demo_config's [transform.presets.thumb]: THUMB px, cover, fmt=auto
THUMB_PARAMS: Final = {"preset": THUMB_PRESET}
SIGN_TIMEOUT: Final = aiohttp.ClientTimeout(total=60)  # a cold page: 200 placeholder renders
SIGNED_PATH: Final = "/signed"


@dataclass(frozen=True, slots=True)
class Login:
    """The logged-in view's identity provider, and the proxy's rules for its tokens."""

    idp: DemoIdp
    provider: OidcConfig


@dataclass(frozen=True, slots=True)
class Gallery:
    people: tuple[Person, ...]
    source: str
    sign_url: str  # this server's POST /sign, on loopback
    token: str  # a token with sign_scopes only: it can sign URLs, not read images
    login: Login | None = None  # None: only the signed view (and / redirects to it)


GALLERY: Final = web.AppKey("demo_gallery", Gallery)
SESSION: Final = web.AppKey("demo_gallery_session", aiohttp.ClientSession)


# --- the logged-in view: a cookie grant and plain URLs ------------------------------------------


def plain_url(source: str, key: str, params: Mapping[str, str] | None = None) -> str:
    """A same-origin URL with no signature: the cookie grant authorizes it."""
    return image_path(source, key) + (f"?{urlencode(params)}" if params else "")


def visible_cards(people: Sequence[Person], source: str, scopes: Sequence[Scope]) -> list[Card]:
    """A card per person, with URLs only where ``scopes`` allow the photo."""
    return [Card(person, plain_url(source, person.key, THUMB_PARAMS),
                 plain_url(source, person.key, {**THUMB_PARAMS, "dpr": "2"}),
                 plain_url(source, person.key))
            if any(scope.allows(source, person.key) for scope in scopes) else Card(person)
            for person in people]


def user_nav(current: str) -> tuple[NavLink, ...]:
    users = tuple(NavLink(f"{user.name} ({user.title})", f"/?user={user.id}", user.id == current)
                  for user in USERS)
    return (*users, NavLink("no login: signed URLs", SIGNED_PATH, current == "signed"))


def user_view(user: DemoUser, token: str, cards: Sequence[Card]) -> View:
    shown = sum(card.is_visible for card in cards)
    summary = (f"Signed in as <b>{html.escape(user.name)}</b> ({html.escape(user.title)}: "
               f"{html.escape(user.sees)}) · "
               f"{shown} of {len(cards)} photos shared with you, the rest are placeholders · one "
               f"<code>POST /session</code> with your JWT, then plain URLs (no <code>sig</code>, no "
               f"<code>exp</code>) that never change")
    return View(f"Employee directory · {user.name}", summary, user_nav(user.id), token=token)


async def user_page(request: web.Request) -> web.Response:
    """GET /?user=ID: a JWT for the user, and the cards their scopes allow."""
    gallery = request.app[GALLERY]
    if gallery.login is None:
        raise web.HTTPFound(SIGNED_PATH)
    user = find_user(request.query.get("user", USERS[0].id))
    if user is None:
        raise NotFound("unknown demo user", public_message=(
            f"No such demo user; try ?user={' or ?user='.join(u.id for u in USERS)}."))
    now = time.time()
    token = gallery.login.idp.token(user, now)
    scopes = claim_scopes(gallery.login.idp.claims(user, now), gallery.login.provider)
    cards = visible_cards(gallery.people, gallery.source, scopes)
    return page_response(cards, user_view(user, token, cards))


# --- the signed view: one POST /sign per load ---------------------------------------------------


def sign_request(people: Sequence[Person], source: str) -> list[dict[str, Any]]:
    """Three URLs per person (1x and 2x thumbnails, the full image), in one batch; the 1x item also
    asks the photo's metadata with its placeholder."""
    items: list[dict[str, Any]] = []
    for person in people:
        thumb = {**THUMB_PARAMS, "fp": person.focus, "initials": person.initials}
        items.append({"source": source, "key": person.key, "params": thumb, "meta": True,
                      "placeholder": True})
        items.append({"source": source, "key": person.key, "params": {**thumb, "dpr": "2"}})
        items.append({"source": source, "key": person.key})
    return items


def signed_cards(people: Sequence[Person], answers: Sequence[Mapping[str, Any]]) -> list[Card]:
    if len(answers) != 3 * len(people):
        raise ValueError(f"POST /sign answered {len(answers)} items for {3 * len(people)}")
    urls = [answer["url"] for answer in answers]  # KeyError: an item failed to sign
    cards = []
    for i, person in enumerate(people):
        meta = answers[3 * i]  # a missing photo: its meta_error (not_found), no placeholder
        missing = meta.get("meta_error", {}).get("error") == "not_found"
        thumb, thumb_2x, full = urls[3 * i:3 * i + 3]
        cards.append(Card(person, thumb, thumb_2x, full, placeholder=meta.get("placeholder") or "",
                          width=meta.get("width", 0), height=meta.get("height", 0), missing=missing))
    return cards


async def warm_placeholders(app: web.Application, people: Sequence[Person], source: str) -> None:
    """Make every photo's placeholder once, at start-up, in this process (what a page's first
    ``"placeholder": true`` would make), four at a time: the first view then finds them cached.
    Cancelled with the demo; a photo that fails is left for the page to try."""
    describer, slots = Describer(app[VARIANTS]), asyncio.Semaphore(4)

    async def warm(person: Person) -> None:
        settings = app[LIVE].current
        wanted = Asked(settings.sources[source], person.key, settings.transforms, True, None, lambda: None)
        async with slots:
            try:
                await describer.describe(wanted, Durations())
            except ProxyError as exc:
                log.warning("demo: no placeholder for a portrait: %s", exc.code)

    await asyncio.gather(*(warm(person) for person in people if person.has_photo))


def signed_view(cards: Sequence[Card], expires: int, sign_ms: float, with_login: bool) -> View:
    until = time.strftime("%H:%M:%S UTC", time.gmtime(expires))
    summary = (f"{len(cards)} people · {3 * len(cards)} URLs signed in one "
               f"<code>POST /sign</code> call ({sign_ms:.0f} ms) · the same URLs until {until}")
    return View("Employee directory", summary, user_nav("signed") if with_login else (), expires=expires)


async def signed_page(request: web.Request) -> web.Response:
    """GET /signed: one batch-signing call, then the page."""
    gallery = request.app[GALLERY]
    started = time.perf_counter()
    # The Host header is passed on, so the URLs have the page's own origin (and the page may
    # read their Server-Timing).
    async with request.app[SESSION].post(
            gallery.sign_url, json={"items": sign_request(gallery.people, gallery.source)},
            headers={hdrs.AUTHORIZATION: f"Bearer {gallery.token}", hdrs.HOST: request.host}) as reply:
        reply.raise_for_status()
        body = await reply.json()
    sign_ms = (time.perf_counter() - started) * 1000
    cards = signed_cards(gallery.people, body["items"])
    return page_response(cards, signed_view(cards, int(body["expires"]), sign_ms, gallery.login is not None))


# --- both ---------------------------------------------------------------------------------------


def page_response(cards: Sequence[Card], view: View) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    return web.Response(text=render_page(cards, view, nonce), content_type="text/html", headers={
        hdrs.CACHE_CONTROL: "no-store",  # it holds a JWT, or signed URLs
        "Content-Security-Policy": f"default-src 'none'; img-src 'self'; connect-src 'self'; "
                                   f"style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
                                   "base-uri 'none'; form-action 'none'",
        **NOSNIFF,
        "Referrer-Policy": "no-referrer",  # signed URLs are not sent on when a full image opens
    })


def add_gallery(app: web.Application, gallery: Gallery) -> None:
    """Serve the directory at ``/`` and ``/signed`` of a proxy app (before it starts)."""
    app[GALLERY] = gallery

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=SIGN_TIMEOUT) as client:
            app[SESSION] = client
            yield

    app.cleanup_ctx.append(session)
    app.router.add_get("/", user_page)
    app.router.add_get(SIGNED_PATH, signed_page)
