"""The employee directory's HTML: cards, the user switcher, its style and its script.

Pure: ``render_page`` takes the cards and what to say about them and returns the page; every
interpolated value is HTML-escaped. A card whose photo the viewer may not see is an initials tile
drawn in HTML and CSS (no image request, so never a broken image).

The script, in the logged-in view (``View.token`` set), first trades the page's JWT for a cookie
grant (``POST /session``), then sets each thumbnail's ``src`` (the URLs are plain and stable: no
``exp``, no ``sig``); in the signed view the ``src`` attributes are in the HTML already. Either way,
once every image has loaded (or failed) it reads each one's resource timing (a browser-cache hit
still carries the ``Server-Timing`` it was first served with) to fill its hover card, and records
the totals in ``<body data-*>`` (the browser test reads them).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from imgproxy.demo.people import Person

THUMB: Final = 96  # CSS pixels


@dataclass(frozen=True, slots=True)
class Card:
    """One person on the page; empty URLs: the viewer may not see their photo (a placeholder)."""

    person: Person
    thumb: str = ""
    thumb_2x: str = ""
    full: str = ""
    placeholder: str = ""  # the photo's ThumbHash (POST /sign "meta": true), painted before it loads
    width: int = 0  # the photo's size, as displayed (the same answer)
    height: int = 0
    missing: bool = False  # no photo yet: the thumbnail is the proxy's initials avatar

    @property
    def is_visible(self) -> bool:
        return bool(self.thumb)


@dataclass(frozen=True, slots=True)
class NavLink:
    label: str
    href: str
    current: bool = False


@dataclass(frozen=True, slots=True)
class View:
    """What the header says, and how the thumbnails are authorized."""

    heading: str  # plain text
    summary: str  # HTML: the caller escapes what it interpolates
    nav: tuple[NavLink, ...] = ()
    token: str = ""  # a JWT the script trades for a cookie grant; "": the URLs are signed
    expires: int = 0  # the signed URLs' exp (0 in the logged-in view: its URLs never change)


def render_card(card: Card, deferred: bool) -> str:
    esc = html.escape
    person = card.person
    label = (f'<span class="name">{esc(person.name)}</span>'
             f'<span class="team">{esc(person.team)}</span>')
    if not card.is_visible:
        return (f'<li class="card" data-source="hidden"><span class="tile" role="img" '
                f'aria-label="{esc(person.name)}: photo not shared with you" '
                f'title="Not shared with you">{esc(person.initials)}</span>{label}'
                f'<span class="info" role="tooltip">Not shared with you: your identity provider\'s '
                f'claims grant no scope for this photo, so the page asks the proxy for nothing.</span></li>')
    src = "data-src" if deferred else "src"
    # The placeholder: a canvas under the image, painted from the ThumbHash by the script (in
    # the photo's own aspect, cropped to the square as the thumbnail will be).
    canvas = (f'<canvas class="ph" width="{max(1, card.width)}" height="{max(1, card.height)}" '
              f'data-thumbhash="{esc(card.placeholder)}"></canvas>' if card.placeholder else "")
    size = f' data-size="{card.width} x {card.height}"' if card.width else ""
    photo = ' data-photo="missing"' if card.missing else ""
    return (f'<li class="card"{photo}{size}><a href="{esc(card.full)}" target="_blank" rel="noopener">'
            f'<span class="frame">{canvas}'
            f'<img {src}="{esc(card.thumb)}" {src}set="{esc(card.thumb)} 1x, {esc(card.thumb_2x)} 2x" '
            f'width="{THUMB}" height="{THUMB}" alt="{esc(person.name)}"></span></a>{label}'
            f'<span class="info" role="tooltip">loading…</span></li>')


def render_nav(nav: Sequence[NavLink]) -> str:
    esc = html.escape
    links = " · ".join(f'<a href="{esc(link.href)}" aria-current="page">{esc(link.label)}</a>'
                       if link.current else f'<a href="{esc(link.href)}">{esc(link.label)}</a>'
                       for link in nav)
    return f"<nav>View as: {links}</nav>" if links else ""


def render_page(cards: Sequence[Card], view: View, nonce: str) -> str:
    """The whole page."""
    deferred = bool(view.token)
    items = "\n".join(render_card(card, deferred) for card in cards)
    visible = sum(card.is_visible for card in cards)
    return PAGE.format(nonce=nonce, heading=html.escape(view.heading), summary=view.summary,
                       nav=render_nav(view.nav), items=items, expires=view.expires, count=len(cards),
                       visible=visible, token=html.escape(view.token), thumb=THUMB, script=SCRIPT)


SCRIPT: Final = """
performance.setResourceTimingBufferSize(5000);
// ThumbHash (github.com/evanw/thumbhash's format) to RGBA: the DC terms and scales from the header,
// the 4-bit AC terms after it, an inverse DCT at 32 px on the long side.
function thumbHashPixels(hash) {
  const h24 = hash[0] | (hash[1] << 8) | (hash[2] << 16), h16 = hash[3] | (hash[4] << 8);
  const alpha = (h24 >> 23) & 1, landscape = (h16 >> 15) & 1;
  const lDc = (h24 & 63) / 63, pDc = ((h24 >> 6) & 63) / 31.5 - 1, qDc = ((h24 >> 12) & 63) / 31.5 - 1;
  const lScale = ((h24 >> 18) & 31) / 31, pScale = ((h16 >> 3) & 63) / 63, qScale = ((h16 >> 9) & 63) / 63;
  const limit = alpha ? 5 : 7, stored = h16 & 7;
  const lx = Math.max(3, landscape ? limit : stored), ly = Math.max(3, landscape ? stored : limit);
  const aDc = alpha ? (hash[5] & 15) / 15 : 1, aScale = (hash[5] >> 4) / 15;
  let at = alpha ? 6 : 5, nibble = 0;
  const terms = (nx, ny, scale) => {
    const out = [];
    for (let cy = 0; cy < ny; cy++)
      for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++, nibble++)
        out.push((((hash[at + (nibble >> 1)] >> ((nibble & 1) * 4)) & 15) / 7.5 - 1) * scale);
    return out;
  };
  const lAc = terms(lx, ly, lScale), pAc = terms(3, 3, pScale * 1.25), qAc = terms(3, 3, qScale * 1.25);
  const aAc = alpha ? terms(5, 5, aScale) : [];
  const ratio = (landscape ? limit : stored) / (landscape ? stored : limit);
  const w = Math.round(ratio > 1 ? 32 : 32 * ratio), h = Math.round(ratio > 1 ? 32 / ratio : 32);
  const rgba = new Uint8ClampedArray(w * h * 4);
  const sum = (ac, nx, ny, x, y) => {
    let v = 0, j = 0;
    for (let cy = 0; cy < ny; cy++)
      for (let cx = cy ? 0 : 1; cx * ny < nx * (ny - cy); cx++, j++)
        v += ac[j] * Math.cos(Math.PI / w * (x + 0.5) * cx) * Math.cos(Math.PI / h * (y + 0.5) * cy) * 2;
    return v;
  };
  for (let y = 0, i = 0; y < h; y++) {
    for (let x = 0; x < w; x++, i += 4) {
      const l = lDc + sum(lAc, lx, ly, x, y), p = pDc + sum(pAc, 3, 3, x, y), q = qDc + sum(qAc, 3, 3, x, y);
      const b = l - 2 / 3 * p, r = (3 * l - b + q) / 2, g = r - q;
      rgba.set([r * 255, g * 255, b * 255, (alpha ? aDc + sum(aAc, 5, 5, x, y) : 1) * 255], i);
    }
  }
  return {w, h, rgba};
}
function paintPlaceholders() {  // before any thumbnail has arrived: each canvas gets its picture
  let painted = 0;
  for (const canvas of document.querySelectorAll("canvas.ph")) {
    const bytes = Uint8Array.from(atob(canvas.dataset.thumbhash), c => c.charCodeAt(0));
    const {w, h, rgba} = thumbHashPixels(bytes);
    canvas.width = w;
    canvas.height = h;
    canvas.getContext("2d").putImageData(new ImageData(rgba, w, h), 0, 0);
    canvas.dataset.paintedAt = performance.now().toFixed(1);
    painted += 1;
  }
  document.body.dataset.placeholders = painted;
}
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
  const card = img.closest(".card");
  if (card.dataset.size) lines.push(`photo: ${card.dataset.size} px, placeholder painted first`);
  if (card.dataset.photo === "missing") lines.push("no photo yet: the proxy's initials avatar");
  return {source, text: lines.join("\\n")};
}
function settled(img) {  // resolves once the image has loaded or failed
  if (img.complete && img.getAttribute("src")) return Promise.resolve();
  return new Promise(resolve => {
    img.addEventListener("load", resolve, {once: true});
    img.addEventListener("error", resolve, {once: true});
  });
}
async function login(token) {  // a cookie grant for the scopes the token's claims earn
  const reply = await fetch("/session", {
    method: "POST", credentials: "same-origin", body: "{}",
    headers: {"Authorization": `Bearer ${token}`, "Content-Type": "application/json"}});
  if (reply.status !== 204) throw new Error(`POST /session answered ${reply.status}`);
}
function report(note) {
  const counts = {"proxy": 0, "proxy (304)": 0, "browser cache": 0, "error": 0};
  for (const card of document.querySelectorAll(".card")) {
    const img = card.querySelector("img");
    if (!img) continue;  // a placeholder: nothing was asked for
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
    `${note}This load: ${counts["proxy"]} thumbnails from the proxy, ${counts["proxy (304)"]} revalidated, ` +
    `${counts["browser cache"]} from the browser's cache` + (counts.error ? `, ${counts.error} failed` : "") +
    ". Load the page again: the URLs are identical, so the browser asks the proxy for nothing.";
  body.ready = "1";
}
document.addEventListener("DOMContentLoaded", async () => {
  const body = document.body.dataset;
  const images = [...document.querySelectorAll(".card img")];
  paintPlaceholders();
  for (const img of images) {
    const loaded = () => { img.dataset.loadedAt = performance.now().toFixed(1); };
    img.addEventListener("load", loaded, {once: true});
  }
  let note = "";
  if (body.token) {
    try {
      await login(body.token);
    } catch (error) {
      body.loginError = String(error);
      document.getElementById("load").textContent = `Could not get a cookie grant: ${error}`;
      body.ready = "1";
      return;
    }
    note = "Cookie grant in place (POST /session). ";
    for (const img of images) {
      img.srcset = img.dataset.srcset;
      img.src = img.dataset.src;
    }
  }
  await Promise.all(images.map(settled));
  report(note);
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
header p, nav {{ margin: 2px 0; color: #c9cfdb; }}
nav a {{ color: #9ec5fe; }}
nav a[aria-current] {{ color: #fff; font-weight: 600; text-decoration: none; }}
code {{ color: #fff; }}
ul {{ list-style: none; display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
      gap: 12px; padding: 16px 24px; margin: 0; }}
.card {{ position: relative; background: #fff; border-radius: 8px; padding: 12px 8px;
         text-align: center; box-shadow: 0 1px 2px rgba(0,0,0,.08); }}
.card img, .tile {{ width: {thumb}px; height: {thumb}px; border-radius: 50%; display: block;
                    margin: 0 auto 6px; background: #e3e6ec; }}
.frame {{ position: relative; display: block; width: {thumb}px; height: {thumb}px; margin: 0 auto 6px; }}
.frame img {{ position: relative; margin: 0; }}
.frame canvas.ph + img {{ background: transparent; }}
canvas.ph {{ position: absolute; inset: 0; width: {thumb}px; height: {thumb}px; border-radius: 50%;
             object-fit: cover; }}
.tile {{ line-height: {thumb}px; font-size: 28px; font-weight: 600; color: #98a2b3;
         border: 2px dashed #c4cad4; box-sizing: border-box; background: #f2f4f7; }}
.name {{ display: block; font-weight: 600; }}
.team {{ display: block; color: #667085; font-size: 12px; }}
.card[data-source="hidden"] .name {{ color: #98a2b3; }}
.info {{ display: none; position: absolute; z-index: 2; left: 4px; right: 4px; top: 100%;
         margin-top: -24px; padding: 8px; border-radius: 6px; background: #1d2330; color: #fff;
         font-size: 12px; white-space: pre-line; box-shadow: 0 4px 12px rgba(0,0,0,.3); }}
.card:hover .info, .card:focus-within .info {{ display: block; }}
.card[data-source="browser cache"] {{ outline: 2px solid #12b76a; }}
.card[data-source="error"] {{ outline: 2px solid #f04438; }}
</style>
</head>
<body data-count="{count}" data-visible="{visible}" data-expires="{expires}" data-token="{token}">
<header>
<h1>{heading}</h1>
{nav}
<p>{summary}</p>
<p id="load">Loading thumbnails…</p>
<p>Thumbnails are <code>preset=thumb</code>: {thumb} px, <code>fmt=auto</code> (AVIF, WebP or JPEG by
what the browser accepts), defined once in the proxy's config;
each opens the full photo. Hover a photo to see how it was delivered. Without a login, each photo's
ThumbHash placeholder (from <code>POST /sign</code> with <code>"meta": true</code>) is painted
before it loads, and a new hire without a photo gets the proxy's initials avatar.</p>
</header>
<ul>
{items}
</ul>
</body>
</html>
"""
