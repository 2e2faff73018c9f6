"""The demo's employee directory in real headless Chromium: ``imgproxy demo`` as a real process
(moto, the demo IdP, the proxy, the page), each view loaded twice in one browser profile.

The signed view (``/signed``): the first load must decode all 200 thumbnails; the second (URLs
identical, same signing window) must reach the proxy for no image, or only for 304s. The
logged-in views (``/?user=hr``, then ``/?user=lead`` in the same profile): the page trades its
JWT for a cookie grant and shows plain URLs; HR's page decodes all 200 portraits, the team lead's
only their team's, with an initials tile (no <img>, no request) for everyone else; no <img> is
ever broken; and the second load for the same user reaches the proxy for no image at all. Image
requests are counted from the proxy's own metrics. Screenshots (hovering a photo) are saved
under ``artifacts/`` (or ``$IMGPROXY_TEST_ARTIFACTS``); the README's picture is one of these.
"""

from __future__ import annotations

import math
import os
import re
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, Browser, Tab, chromium
from processes import HTTP_TIMEOUT, Process, command
from prometheus_client.parser import text_string_to_metric_families

from imgproxy.demo.gallery import sign_request
from imgproxy.demo.idp import LEAD_TEAM
from imgproxy.demo.page import THUMB, Card, View, render_page
from imgproxy.demo.people import Person, directory

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
ARTIFACTS = Path(os.environ.get("IMGPROXY_TEST_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))
PEOPLE = 200
IMAGE_ROUTE = "/img/{tail}"
PAGE_TIMEOUT = 120.0  # the first load renders 200 thumbnails on a small CI machine


# Per card with an <img>: the mean colour of the image as drawn (32x32) and of its placeholder
# canvas, how many distinct colours (4 bits a channel) the image has, its four corners' colours,
# when each was painted/loaded.
PIXELS_JS = """(() => {
  const mean = (px) => { let r = 0, g = 0, b = 0, n = 0;
    for (let i = 0; i < px.length; i += 4) { if (px[i + 3] < 128) continue; r += px[i]; g += px[i + 1];
      b += px[i + 2]; n++; }
    return n ? [r / n, g / n, b / n] : null; };
  return [...document.querySelectorAll('.card')].filter(card => card.querySelector('img')).map(card => {
    const img = card.querySelector('img'), ph = card.querySelector('canvas.ph');
    const c = document.createElement('canvas'); c.width = 32; c.height = 32;
    const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0, 32, 32);
    const px = ctx.getImageData(0, 0, 32, 32).data, colours = new Set();
    for (let i = 0; i < px.length; i += 4)
      colours.add(((px[i] >> 4) << 8) | ((px[i + 1] >> 4) << 4) | (px[i + 2] >> 4));
    const at = (x, y) => [...px.slice((y * 32 + x) * 4, (y * 32 + x) * 4 + 3)];
    const corners = [at(2, 2), at(29, 2), at(2, 29), at(29, 29)];
    return {missing: card.dataset.photo === 'missing', image: mean(px), colours: colours.size, corners,
            placeholder: ph ? mean(ph.getContext('2d').getImageData(0, 0, ph.width, ph.height).data) : null,
            placeholderWidth: ph ? ph.getBoundingClientRect().width : 0,
            paintedAt: ph ? Number(ph.dataset.paintedAt) : null, loadedAt: Number(img.dataset.loadedAt || 0)};
  }); })()"""


@dataclass
class Load:
    """What one page load did, seen from the page and from the proxy's metrics."""

    images: list[dict[str, Any]]
    tiles: list[dict[str, Any]]  # placeholders: people whose photo the viewer may not see
    body: dict[str, str]
    proxy_statuses: Counter[str]  # image requests the proxy answered during the load, by status
    sign_calls: int
    hover_text: str
    hover_visible: bool
    browser_requests: list[str] = field(default_factory=list)  # image URLs the tab asked for
    pixels: list[dict[str, Any]] = field(default_factory=list)  # PIXELS_JS


def scrape(metrics_url: str) -> tuple[Counter[str], int]:
    """Image requests by status, and POST /sign requests, answered so far."""
    with urllib.request.urlopen(metrics_url, timeout=HTTP_TIMEOUT) as reply:  # noqa: S310 - loopback
        text = reply.read().decode()
    images: Counter[str] = Counter()
    signs = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != "imgproxy_requests_total":
                continue
            if sample.labels["route"] == IMAGE_ROUTE:
                images[sample.labels["status"]] += int(sample.value)
            elif sample.labels["route"] == "/sign":
                signs += int(sample.value)
    return images, signs


IMAGES_JS = """[...document.querySelectorAll('img')].map(img => ({
  src: img.currentSrc, complete: img.complete, naturalWidth: img.naturalWidth,
  naturalHeight: img.naturalHeight, alt: img.alt, href: img.closest('a').href,
  team: img.closest('.card').querySelector('.team').textContent}))"""
TILES_JS = """[...document.querySelectorAll('.card .tile')].map(tile => ({
  text: tile.textContent, width: tile.getBoundingClientRect().width,
  team: tile.closest('.card').querySelector('.team').textContent,
  hasImage: tile.closest('.card').querySelector('img') !== null}))"""
HOVER_JS = """(() => { const img = document.querySelectorAll('.card img')[%d];
  const r = img.getBoundingClientRect();
  return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"""
INFO_JS = """(() => { const card = document.querySelectorAll('.card img')[%d].closest('.card');
  const info = card.querySelector('.info');
  return {text: info.textContent, visible: getComputedStyle(info).display !== 'none'}; })()"""


def load_page(tab: Tab, url: str, metrics_url: str, hover_card: int, screenshot: Path | None) -> Load:
    images_before, signs_before = scrape(metrics_url)
    tab.navigate(url, timeout=PAGE_TIMEOUT)
    body = tab.wait_for("document.body.dataset.ready && {...document.body.dataset}", timeout=PAGE_TIMEOUT)
    assert "loginError" not in body, body
    point = tab.evaluate(HOVER_JS % hover_card)
    tab.hover(point["x"], point["y"])
    info = tab.wait_for(INFO_JS % hover_card)
    if screenshot is not None:
        tab.screenshot(screenshot)
    images_after, signs_after = scrape(metrics_url)
    requested = [r["request"]["url"] for r in tab.network_requests() if "/img/" in r["request"]["url"]]
    return Load(images=tab.evaluate(IMAGES_JS), tiles=tab.evaluate(TILES_JS), body=body,
                proxy_statuses=images_after - images_before, sign_calls=signs_after - signs_before,
                hover_text=info["text"], hover_visible=info["visible"], browser_requests=requested,
                pixels=tab.evaluate(PIXELS_JS))


@dataclass
class Demo:
    page_url: str  # the directory, ending in /
    metrics_url: str
    banner: str


@dataclass
class Visit:
    first: Load
    second: Load
    screenshot: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    process = Process(command("demo", "--port", "0"), tmp_path_factory.mktemp("gallery") / "demo")
    try:
        banner = process.wait_for_output("Press Ctrl-C")
        page_url = re.search(r"Employee directory .*: (http://\S+/)$", banner, re.M)
        metrics_url = re.search(r"Prometheus metrics: (http://\S+)$", banner, re.M)
        assert page_url, banner
        assert metrics_url, banner
        yield Demo(page_url[1], metrics_url[1], banner)
    finally:
        process.kill()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """One profile (one HTTP cache, one cookie jar) for every view."""
    with chromium(tmp_path_factory.mktemp("browser") / "profile") as running:
        yield running


def visit_twice(browser: Browser, demo: Demo, path: str, screenshot: Path, hover: int) -> Visit:
    """Two loads of ``path``; the second hovers the ``hover``-th photo and saves a screenshot."""
    url = demo.page_url + path.removeprefix("/")
    with browser.tab() as tab:
        first = load_page(tab, url, demo.metrics_url, 0, None)
    # A new tab in the same profile: only the HTTP cache and the cookies are shared with the first.
    with browser.tab() as tab:
        second = load_page(tab, url, demo.metrics_url, hover, screenshot)
        if second.body["expires"] != first.body["expires"]:  # signed: the hour turned in between
            second = load_page(tab, url, demo.metrics_url, hover, screenshot)  # once more
    return Visit(first, second, screenshot)


@pytest.fixture(scope="module")
def visit(browser: Browser, demo: Demo) -> Visit:
    """The signed view (``/signed``), twice."""
    return visit_twice(browser, demo, "/signed", ARTIFACTS / "gallery-signed.png", 8)


@pytest.fixture(scope="module")
def logins(browser: Browser, demo: Demo) -> dict[str, Visit]:
    """HR's view twice, then the team lead's twice, in the same profile (switching user)."""
    return {user: visit_twice(browser, demo, f"/?user={user}", ARTIFACTS / f"gallery-{user}.png", 2)
            for user in ("hr", "lead")}


def is_plain(url: str) -> bool:
    return "sig=" not in url and "exp=" not in url and "kid=" not in url


# --- the signed view ------------------------------------------------------------------------------


def test_the_demo_prints_where_the_directory_is(demo: Demo) -> None:
    assert re.search(r"^Employee directory \(200 photos; open it in a browser\): http://127\.0\.0\.1:\d+/$",
                     demo.banner, re.M)
    assert re.search(r"^    Ines Haddad, HR: .*: http://127\.0\.0\.1:\d+/\?user=hr$", demo.banner, re.M)
    assert re.search(r"^    Kwame Okafor, team lead, .*: http://127\.0\.0\.1:\d+/\?user=lead$", demo.banner,
                     re.M)
    assert re.search(r"^  no login, .*: http://127\.0\.0\.1:\d+/signed$", demo.banner, re.M)


def test_the_first_load_decodes_all_200_thumbnails(visit: Visit) -> None:
    images = visit.first.images
    assert len(images) == PEOPLE
    assert all(image["complete"] and image["naturalWidth"] > 0 for image in images), \
        [image for image in images if not image["naturalWidth"]][:3]
    assert {(image["naturalWidth"], image["naturalHeight"]) for image in images} == {(THUMB, THUMB)}
    assert len({image["alt"] for image in images}) == PEOPLE
    for image in images:
        assert "preset=thumb" in image["src"], image["src"]  # [transform.presets.thumb]: THUMB px
        assert "sig=" in image["src"], image["src"]
        assert "fmt=" not in image["href"], image["href"]  # the link opens the full image
    assert visit.first.body["fromProxy"] == str(PEOPLE)
    assert visit.first.body["failed"] == "0"


def test_the_first_load_reached_the_proxy_for_every_thumbnail(visit: Visit) -> None:
    assert visit.first.proxy_statuses["200"] >= PEOPLE
    assert set(visit.first.proxy_statuses) == {"200"}, visit.first.proxy_statuses


def test_each_load_signs_every_url_in_one_batch_call(visit: Visit) -> None:
    assert visit.first.sign_calls == 1
    assert visit.second.sign_calls == 1
    assert [i["src"] for i in visit.second.images] == [i["src"] for i in visit.first.images]
    assert [i["href"] for i in visit.second.images] == [i["href"] for i in visit.first.images]


def test_the_second_load_asks_the_proxy_for_nothing_but_304s(visit: Visit) -> None:
    second = visit.second
    assert len(second.images) == PEOPLE
    assert all(image["complete"] and image["naturalWidth"] > 0 for image in second.images)
    not_modified = second.proxy_statuses.pop("304", 0)
    assert sum(second.proxy_statuses.values()) == 0, second.proxy_statuses
    assert int(second.body["fromBrowserCache"]) + not_modified == PEOPLE, second.body
    assert second.body["failed"] == "0"


def test_hovering_a_photo_shows_its_delivery_and_cache_result(visit: Visit) -> None:
    first, second = visit.first, visit.second
    assert first.hover_visible
    assert second.hover_visible
    assert "from: proxy" in first.hover_text
    assert "delivery: stream" in first.hover_text
    assert re.search(r"proxy cache: (MISS|HIT|STORE)\b", first.hover_text), first.hover_text
    assert "from: browser cache" in second.hover_text
    assert "delivery: stream" in second.hover_text  # remembered from the first load


def test_each_photo_has_its_thumbhash_painted_before_it_arrives(visit: Visit) -> None:
    """The signed view's one POST /sign also asked every photo's metadata: each card with a photo
    has a placeholder canvas, painted (its colours are the photo's: the mean colour within 48 of
    the thumbnail's, of 441 at most), as large as the thumbnail, and painted before the thumbnail
    loaded (on the first load, when the thumbnails come from the proxy)."""
    photos = [card for card in visit.first.pixels if not card["missing"]]
    assert len(photos) == sum(person.has_photo for person in directory())
    assert visit.first.body["placeholders"] == str(len(photos))
    far = [card for card in photos
           if card["placeholder"] is None or math.dist(card["placeholder"], card["image"]) > 48]
    assert far == [], far[:3]
    assert {card["placeholderWidth"] for card in photos} == {THUMB}
    early = [card for card in photos if card["paintedAt"] <= card["loadedAt"]]
    assert len(early) >= 0.9 * len(photos), (len(early), photos[:3])


def test_a_new_hire_without_a_photo_gets_the_proxys_initials_avatar(visit: Visit) -> None:
    """Every thumbnail URL carries initials=: where the photo is missing, the proxy draws a flat
    avatar with the letters (few colours), decoded at the thumbnail's size, with no placeholder."""
    for load in (visit.first, visit.second):
        missing = [card for card in load.pixels if card["missing"]]
        assert len(missing) == sum(not person.has_photo for person in directory()) > 0
        assert all(card["placeholder"] is None for card in missing)
        # An avatar's background is one colour (its four corners alike); a portrait's is a
        # gradient behind a silhouette (its corners far apart).
        avatars = [spread(card["corners"]) for card in missing]
        portraits = sorted(spread(card["corners"]) for card in load.pixels if not card["missing"])
        print("corner spread: avatars", sorted(avatars), "portraits", portraits[::20])
        assert max(avatars) < 12
        assert portraits[len(portraits) // 20] > 3 * max(avatars)


def spread(colours: list[list[float]]) -> float:
    return max(math.dist(a, b) for a in colours for b in colours)


def test_a_screenshot_of_the_page_is_saved(visit: Visit) -> None:
    data = visit.screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image

    with Image.open(visit.screenshot) as shot:
        assert shot.size == (1280, 900)
        colours = shot.convert("RGB").resize((64, 45)).getcolors(maxcolors=64 * 45)
        assert colours is not None
        assert len(colours) > 50


# --- the logged-in views: a cookie grant and plain URLs ---------------------------------------------


def test_hr_sees_all_200_portraits_through_plain_urls(logins: dict[str, Visit]) -> None:
    for load in (logins["hr"].first, logins["hr"].second):
        assert len(load.images) == PEOPLE
        assert load.tiles == []
        assert all(image["complete"] and image["naturalWidth"] > 0 for image in load.images), \
            [image for image in load.images if not image["naturalWidth"]][:3]
        assert {(image["naturalWidth"], image["naturalHeight"]) for image in load.images} == {(THUMB, THUMB)}
        assert all(is_plain(image["src"]) and is_plain(image["href"]) for image in load.images)
        assert load.body["failed"] == "0"
        assert load.sign_calls == 0


def test_the_lead_sees_only_their_teams_portraits_and_tiles_for_the_rest(logins: dict[str, Visit]) -> None:
    team = sum(1 for person in directory() if person.team == LEAD_TEAM)
    for load in (logins["lead"].first, logins["lead"].second):
        assert len(load.images) == team
        assert {image["team"] for image in load.images} == {LEAD_TEAM}
        assert all(image["complete"] and image["naturalWidth"] > 0 for image in load.images)
        assert all(is_plain(image["src"]) for image in load.images)
        assert len(load.tiles) == PEOPLE - team
        assert LEAD_TEAM not in {tile["team"] for tile in load.tiles}
        assert all(not tile["hasImage"] and tile["width"] == THUMB and tile["text"] for tile in load.tiles)
        assert not [url for url in load.browser_requests if f"/{LEAD_TEAM}/" not in url], \
            "the lead's page asked for another team's photo"
        assert load.body["failed"] == "0"


def test_the_first_logged_in_load_reaches_the_proxy(logins: dict[str, Visit]) -> None:
    first = logins["hr"].first
    assert first.proxy_statuses["200"] >= PEOPLE, first.proxy_statuses  # not cached before the cookie
    assert set(first.proxy_statuses) == {"200"}, first.proxy_statuses
    assert first.body["fromProxy"] == str(PEOPLE)


@pytest.mark.parametrize("user", ["hr", "lead"])
def test_the_second_load_for_the_same_user_asks_the_proxy_for_no_image(
        logins: dict[str, Visit], user: str) -> None:
    first, second = logins[user].first, logins[user].second
    assert [i["src"] for i in second.images] == [i["src"] for i in first.images]  # stable URLs
    assert sum(second.proxy_statuses.values()) == 0, second.proxy_statuses  # not even a 304
    assert second.body["fromBrowserCache"] == str(len(second.images)), second.body
    assert "from: browser cache" in second.hover_text


def test_screenshots_of_the_logged_in_views_are_saved(logins: dict[str, Visit]) -> None:
    for visit in logins.values():
        assert visit.screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# --- the page, without a browser ------------------------------------------------------------------


def test_the_page_escapes_what_it_shows() -> None:
    person = Person(name='<img src=x onerror="alert(1)">', team="A&B", key="employees/x.jpg", hue=0.5)
    card = Card(person, 'http://h/img/d/x.jpg?a=1&b="2"', "http://h/2x", "http://h/full")
    page = render_page([card, Card(person)], View("<h>", "s", token='"><x'), nonce="n0nce")
    assert '<img src=x onerror' not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "A&amp;B" in page
    assert 'a=1&amp;b=&quot;2&quot;' in page
    assert 'data-token="&quot;&gt;&lt;x"' in page
    assert "<h1>&lt;h&gt;</h1>" in page


def test_a_hidden_photo_is_a_tile_and_no_image() -> None:
    person = Person(name="Ada Berg", team="Sales", key="employees/Sales/Ada Berg.jpg", hue=0.5)
    page = render_page([Card(person)], View("h", "s", token="t"), nonce="n")
    assert '<span class="tile"' in page
    assert ">AB</span>" in page
    assert "<img" not in page.split("<ul>", 1)[1]


def test_the_logged_in_page_defers_its_images_until_the_grant() -> None:
    person = Person(name="Ada Berg", team="Sales", key="employees/Sales/Ada Berg.jpg", hue=0.5)
    card = Card(person, "/img/a?w=96", "/img/a?w=96&dpr=2", "/img/a")
    logged_in = render_page([card], View("h", "s", token="t"), nonce="n").split("<ul>", 1)[1]
    signed = render_page([card], View("h", "s"), nonce="n").split("<ul>", 1)[1]
    assert 'data-src="/img/a?w=96"' in logged_in
    assert ' src="' not in logged_in
    assert ' src="/img/a?w=96"' in signed


def test_portraits_have_ascii_initials() -> None:
    assert Person("Ada Łukasik", "x", "k", 0).initials == "AL"
    assert Person("Zoë García", "x", "k", 0).initials == "ZG"


def test_portraits_live_in_a_folder_per_team() -> None:
    people = directory()
    assert all(person.key == f"employees/{person.team}/{person.name}.jpg" for person in people)
    assert len({person.team for person in people}) > 2


def test_one_batch_asks_for_two_thumbnails_and_the_original_per_person() -> None:
    people = directory()
    assert len(people) == PEOPLE
    assert len({p.key for p in people}) == PEOPLE
    items = sign_request(people, "demo")
    assert len(items) == 3 * PEOPLE
    initials = people[0].initials
    assert items[0]["params"] == {"preset": "thumb", "fp": "0.5,0.38", "initials": initials}
    assert (items[0]["meta"], items[0]["placeholder"]) == (True, True)
    assert items[1]["params"] == {"preset": "thumb", "fp": "0.5,0.38", "initials": initials, "dpr": "2"}
    assert "meta" not in items[1]
    assert "params" not in items[2]
