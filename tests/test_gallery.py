"""The demo's employee directory in real headless Chromium: ``imgproxy demo`` as a real process
(moto, the proxy, the page at ``/``), loaded twice in one browser profile.

The first load must decode all 200 thumbnails; the second (URLs identical, same signing window)
must reach the proxy for no image, or only for 304s, counted from the proxy's own metrics. A
screenshot of the page (hovering a photo) is saved under ``artifacts/`` (or
``$IMGPROXY_TEST_ARTIFACTS``); the README's picture is one of these.
"""

from __future__ import annotations

import os
import re
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from browser import Tab, chromium
from processes import HTTP_TIMEOUT, Process, command
from prometheus_client.parser import text_string_to_metric_families

from imgproxy.demo.gallery import THUMB, Card, render_page, sign_request
from imgproxy.demo.people import Person, directory

ARTIFACTS = Path(os.environ.get("IMGPROXY_TEST_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))
PEOPLE = 200
IMAGE_ROUTE = "/img/{tail}"
PAGE_TIMEOUT = 120.0  # the first load renders 200 thumbnails on a small CI machine


@dataclass
class Load:
    """What one page load did, seen from the page and from the proxy's metrics."""

    images: list[dict[str, Any]]
    body: dict[str, str]
    proxy_statuses: Counter[str]  # image requests the proxy answered during the load, by status
    sign_calls: int
    hover_text: str
    hover_visible: bool
    browser_requests: list[str] = field(default_factory=list)  # image URLs the tab asked for


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


IMAGES_JS = """[...document.querySelectorAll('.card img')].map(img => ({
  src: img.currentSrc, complete: img.complete, naturalWidth: img.naturalWidth,
  naturalHeight: img.naturalHeight, alt: img.alt, href: img.closest('a').href}))"""
HOVER_JS = """(() => { const card = document.querySelectorAll('.card')[%d];
  const r = card.querySelector('img').getBoundingClientRect();
  return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"""
INFO_JS = """(() => { const info = document.querySelectorAll('.card .info')[%d];
  return {text: info.textContent, visible: getComputedStyle(info).display !== 'none'}; })()"""


def load_page(tab: Tab, url: str, metrics_url: str, hover_card: int, screenshot: Path | None) -> Load:
    images_before, signs_before = scrape(metrics_url)
    tab.navigate(url, timeout=PAGE_TIMEOUT)
    body = tab.wait_for("document.body.dataset.ready && {...document.body.dataset}")
    point = tab.evaluate(HOVER_JS % hover_card)
    tab.hover(point["x"], point["y"])
    info = tab.wait_for(INFO_JS % hover_card)
    if screenshot is not None:
        tab.screenshot(screenshot)
    images_after, signs_after = scrape(metrics_url)
    requested = [r["request"]["url"] for r in tab.network_requests() if "/img/" in r["request"]["url"]]
    return Load(images=tab.evaluate(IMAGES_JS), body=body, proxy_statuses=images_after - images_before,
                sign_calls=signs_after - signs_before, hover_text=info["text"],
                hover_visible=info["visible"], browser_requests=requested)


@dataclass
class Visit:
    first: Load
    second: Load
    screenshot: Path
    banner: str


@pytest.fixture(scope="module")
def visit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Visit]:
    workdir = tmp_path_factory.mktemp("gallery")
    demo = Process(command("demo", "--port", "0"), workdir / "demo")
    try:
        banner = demo.wait_for_output("Press Ctrl-C")
        page_url = re.search(r"Employee directory .*: (http://\S+/)$", banner, re.M)
        metrics_url = re.search(r"Prometheus metrics: (http://\S+)$", banner, re.M)
        assert page_url, banner
        assert metrics_url, banner
        screenshot = ARTIFACTS / "gallery.png"
        with chromium(workdir / "profile") as browser:
            with browser.tab() as tab:
                first = load_page(tab, page_url[1], metrics_url[1], 0, None)
            # A new tab in the same profile: only the HTTP cache is shared with the first load.
            with browser.tab() as tab:
                second = load_page(tab, page_url[1], metrics_url[1], 8, screenshot)
                if second.body["expires"] != first.body["expires"]:  # the hour turned in between:
                    second = load_page(tab, page_url[1], metrics_url[1], 8, screenshot)  # once more
        yield Visit(first, second, screenshot, banner)
    finally:
        demo.kill()


def test_the_demo_prints_where_the_directory_is(visit: Visit) -> None:
    assert re.search(r"^Employee directory \(200 photos; open it in a browser\): http://127\.0\.0\.1:\d+/$",
                     visit.banner, re.M)


def test_the_first_load_decodes_all_200_thumbnails(visit: Visit) -> None:
    images = visit.first.images
    assert len(images) == PEOPLE
    assert all(image["complete"] and image["naturalWidth"] > 0 for image in images), \
        [image for image in images if not image["naturalWidth"]][:3]
    assert {(image["naturalWidth"], image["naturalHeight"]) for image in images} == {(THUMB, THUMB)}
    assert len({image["alt"] for image in images}) == PEOPLE
    for image in images:
        assert "fmt=auto" in image["src"], image["src"]
        assert f"w={THUMB}" in image["src"], image["src"]
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


def test_a_screenshot_of_the_page_is_saved(visit: Visit) -> None:
    data = visit.screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    from PIL import Image

    with Image.open(visit.screenshot) as shot:
        assert shot.size == (1280, 900)
        colours = shot.convert("RGB").resize((64, 45)).getcolors(maxcolors=64 * 45)
        assert colours is not None
        assert len(colours) > 50


def test_the_page_escapes_what_it_shows() -> None:
    person = Person(name='<img src=x onerror="alert(1)">', team="A&B", key="employees/x.jpg", hue=0.5)
    card = Card(person, 'http://h/img/d/x.jpg?a=1&b="2"', "http://h/2x", "http://h/full")
    page = render_page([card], expires=0, sign_ms=1.0, nonce="n0nce")
    assert '<img src=x onerror' not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page
    assert "A&amp;B" in page
    assert 'a=1&amp;b=&quot;2&quot;' in page


def test_portraits_have_ascii_initials() -> None:
    assert Person("Ada Łukasik", "x", "k", 0).initials == "AL"
    assert Person("Zoë García", "x", "k", 0).initials == "ZG"


def test_one_batch_asks_for_two_thumbnails_and_the_original_per_person() -> None:
    people = directory()
    assert len(people) == PEOPLE
    assert len({p.key for p in people}) == PEOPLE
    items = sign_request(people, "demo")
    assert len(items) == 3 * PEOPLE
    assert items[0]["params"]["fmt"] == "auto"
    assert items[1]["params"]["dpr"] == "2"
    assert "params" not in items[2]
