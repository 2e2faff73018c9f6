"""The demo's employee directory page at ``/``: what a dashboard built on imgproxy looks like.

The page handler plays the dashboard's backend: for each load it makes **one** ``POST /sign``
call to the proxy (a bearer token with sign scopes only) for every thumbnail and full-size URL on
the page, then renders them. ``auth.url_window`` makes that call return the same URLs for every
load within the window, so the browser's cache answers the second load: no image request
reaches the proxy. The page's script shows, on hover, how each thumbnail was delivered and
whether the proxy's cache had it (read from ``Server-Timing``), or that the browser's own cache
answered.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import hdrs, web

from imgproxy.demo.people import Person
from imgproxy.protocol.media import NOSNIFF

THUMB: Final = 96  # CSS pixels
THUMB_PARAMS: Final = {"w": str(THUMB), "h": str(THUMB), "fit": "cover", "fmt": "auto"}
SIGN_TIMEOUT: Final = aiohttp.ClientTimeout(total=10)


@dataclass(frozen=True, slots=True)
class Gallery:
    people: tuple[Person, ...]
    source: str
    sign_url: str  # this server's POST /sign, on loopback
    token: str  # a token with sign_scopes only: it can sign URLs, not read images


@dataclass(frozen=True, slots=True)
class Card:
    person: Person
    thumb: str
    thumb_2x: str
    full: str


GALLERY: Final = web.AppKey("demo_gallery", Gallery)
SESSION: Final = web.AppKey("demo_gallery_session", aiohttp.ClientSession)


def sign_request(people: Sequence[Person], source: str) -> list[dict[str, Any]]:
    """Three URLs per person (1x and 2x thumbnails, the full image), in one batch."""
    items: list[dict[str, Any]] = []
    for person in people:
        items.append({"source": source, "key": person.key, "params": THUMB_PARAMS})
        items.append({"source": source, "key": person.key, "params": {**THUMB_PARAMS, "dpr": "2"}})
        items.append({"source": source, "key": person.key})
    return items


def cards(people: Sequence[Person], answers: Sequence[Mapping[str, str]]) -> list[Card]:
    if len(answers) != 3 * len(people):
        raise ValueError(f"POST /sign answered {len(answers)} items for {3 * len(people)}")
    urls = [answer["url"] for answer in answers]  # KeyError: an item failed to sign
    return [Card(person, *urls[3 * i:3 * i + 3]) for i, person in enumerate(people)]


def render_page(page_cards: Sequence[Card], expires: int, sign_ms: float, nonce: str) -> str:
    """The whole page; every interpolated value is HTML-escaped."""
    esc = html.escape
    items = "\n".join(
        f'<li class="card"><a href="{esc(card.full)}" target="_blank" rel="noopener">'
        f'<img src="{esc(card.thumb)}" srcset="{esc(card.thumb)} 1x, {esc(card.thumb_2x)} 2x" '
        f'width="{THUMB}" height="{THUMB}" alt="{esc(card.person.name)}" decoding="async"></a>'
        f'<span class="name">{esc(card.person.name)}</span><span class="team">{esc(card.person.team)}</span>'
        f'<span class="info" role="tooltip">loading…</span></li>'
        for card in page_cards)
    until = time.strftime("%H:%M:%S UTC", time.gmtime(expires))
    summary = (f"{len(page_cards)} people · {3 * len(page_cards)} URLs signed in one "
               f"<code>POST /sign</code> call ({sign_ms:.0f} ms) · the same URLs until {until}")
    return PAGE.format(nonce=nonce, summary=summary, items=items, expires=expires,
                       count=len(page_cards), thumb=THUMB, script=SCRIPT)


async def directory_page(request: web.Request) -> web.Response:
    """GET /: one batch-signing call, then the page."""
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
    nonce = secrets.token_urlsafe(16)
    page = render_page(cards(gallery.people, body["items"]), int(body["expires"]), sign_ms, nonce)
    return web.Response(text=page, content_type="text/html", headers={
        hdrs.CACHE_CONTROL: "no-store",
        "Content-Security-Policy": f"default-src 'none'; img-src 'self'; style-src 'nonce-{nonce}'; "
                                   f"script-src 'nonce-{nonce}'; base-uri 'none'; form-action 'none'",
        **NOSNIFF,
        "Referrer-Policy": "no-referrer",  # signed URLs are not sent on when a full image opens
    })


def add_gallery(app: web.Application, gallery: Gallery) -> None:
    """Serve the directory at ``/`` of a proxy app (before it starts)."""
    app[GALLERY] = gallery

    async def session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=SIGN_TIMEOUT) as client:
            app[SESSION] = client
            yield

    app.cleanup_ctx.append(session)
    app.router.add_get("/", directory_page)


# The page's script: after every image has loaded (or failed), read each one's resource timing
# (a browser-cache hit still carries the Server-Timing it was first served with) and fill its
# hover card; then record the totals in <body data-*> (the browser test reads them).
SCRIPT: Final = """
performance.setResourceTimingBufferSize(5000);
function describe(img) {
  if (!img.complete || img.naturalWidth === 0) return {source: "error", text: "failed to load"};
  const entries = performance.getEntriesByName(img.currentSrc);
  const entry = entries[entries.length - 1];
  const facts = {};  // Server-Timing: delivery;desc=stream, cache;desc=MISS, total;dur=12.3
  for (const t of (entry ? entry.serverTiming : [])) facts[t.name] = t.description || t.duration;
  let source = "proxy";
  if (!entry || (entry.transferSize === 0 && entry.decodedBodySize > 0)) source = "browser cache";
  else if (entry.responseStatus === 304) source = "proxy (304)";
  const lines = [`from: ${source}` + (source === "browser cache" ? " (no request)" : "")];
  if (facts.delivery) lines.push(`delivery: ${facts.delivery}`);
  if (facts.cache) lines.push(`proxy cache: ${facts.cache}`);
  if (facts.total !== undefined) lines.push(`proxy time: ${Number(facts.total).toFixed(1)} ms`);
  lines.push(`${img.naturalWidth} x ${img.naturalHeight} px`);
  return {source, text: lines.join("\\n")};
}
window.addEventListener("load", () => {
  const counts = {"proxy": 0, "proxy (304)": 0, "browser cache": 0, "error": 0};
  for (const card of document.querySelectorAll(".card")) {
    const img = card.querySelector("img");
    const {source, text} = describe(img);
    counts[source] += 1;
    card.querySelector(".info").textContent = text;
    img.title = `${img.alt}\\n${text}`;
    card.dataset.source = source;
  }
  const body = document.body.dataset;
  body.fromProxy = counts["proxy"];
  body.revalidated = counts["proxy (304)"];
  body.fromBrowserCache = counts["browser cache"];
  body.failed = counts["error"];
  document.getElementById("load").textContent =
    `This load: ${counts["proxy"]} thumbnails from the proxy, ${counts["proxy (304)"]} revalidated, ` +
    `${counts["browser cache"]} from the browser's cache` + (counts.error ? `, ${counts.error} failed` : "") +
    ". Load the page again: the URLs are identical, so the browser asks the proxy for nothing.";
  body.ready = "1";
});
"""

PAGE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Employee directory · imgproxy demo</title>
<script nonce="{nonce}">{script}</script>
<style nonce="{nonce}">
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d2330; }}
header {{ padding: 16px 24px; background: #1d2330; color: #fff; }}
header h1 {{ margin: 0 0 4px; font-size: 20px; }}
header p {{ margin: 2px 0; color: #c9cfdb; }}
code {{ color: #fff; }}
ul {{ list-style: none; display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
      gap: 12px; padding: 16px 24px; margin: 0; }}
.card {{ position: relative; background: #fff; border-radius: 8px; padding: 12px 8px;
         text-align: center; box-shadow: 0 1px 2px rgba(0,0,0,.08); }}
.card img {{ width: {thumb}px; height: {thumb}px; border-radius: 50%; display: block; margin: 0 auto 6px;
             background: #e3e6ec; }}
.name {{ display: block; font-weight: 600; }}
.team {{ display: block; color: #667085; font-size: 12px; }}
.info {{ display: none; position: absolute; z-index: 2; left: 4px; right: 4px; top: 100%;
         margin-top: -24px; padding: 8px; border-radius: 6px; background: #1d2330; color: #fff;
         font-size: 12px; white-space: pre-line; box-shadow: 0 4px 12px rgba(0,0,0,.3); }}
.card:hover .info, .card:focus-within .info {{ display: block; }}
.card[data-source="browser cache"] {{ outline: 2px solid #12b76a; }}
.card[data-source="error"] {{ outline: 2px solid #f04438; }}
</style>
</head>
<body data-count="{count}" data-expires="{expires}">
<header>
<h1>Employee directory</h1>
<p>{summary}</p>
<p id="load">Loading thumbnails…</p>
<p>Thumbnails are {thumb} px, <code>fmt=auto</code> (AVIF, WebP or JPEG by what the browser accepts);
each opens the full photo. Hover a photo to see how it was delivered.</p>
</header>
<ul>
{items}
</ul>
</body>
</html>
"""
