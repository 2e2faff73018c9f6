"""CORS in real headless Chromium: a page on one loopback origin fetches images from a real
``imgproxy serve`` on another, with an ``Authorization`` header (so the browser preflights).

The page is served by a small HTTP server on its own port (another origin than the proxy's).
Delivery is ``redirect``: the browser's fetch carries ``Origin``, so the proxy streams it. The
browser itself enforces CORS, so what the page can read (the status, the exposed ``X-Delivery``
and ``X-Cache``, ``Server-Timing`` through the Resource Timing API) is what a dashboard gets; a
page on an origin not in the list cannot read anything (the fetch rejects).
"""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, Browser, chromium
from PIL import Image
from support import TOKEN, ServeFactory

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (apt-get install chromium)")
KEY = "employees/ada.png"
FETCH_JS = """(async () => {
  const url = %s;
  try {
    const r = await fetch(url, {headers: {Authorization: %s}});
    const bytes = (await r.arrayBuffer()).byteLength;
    await new Promise(resolve => setTimeout(resolve, 50));  // the timing entry is added after the body
    const timing = performance.getEntriesByName(url).pop();
    return {status: r.status, bytes, delivery: r.headers.get("X-Delivery"),
            cache: r.headers.get("X-Cache"), requestId: r.headers.get("X-Request-Id"),
            serverTiming: timing ? timing.serverTiming.map(e => e.name) : null};
  } catch (e) { return {error: String(e)}; }
})()"""


class BlankPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>dashboard</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), BlankPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with chromium(tmp_path / "profile") as running:
        yield running


def fetch_from(browser: Browser, page: str, url: str) -> dict[str, Any]:
    with browser.tab() as tab:
        tab.navigate(page)
        result: dict[str, Any] = tab.evaluate(FETCH_JS % (json.dumps(url), json.dumps(f"Bearer {TOKEN}")))
        return result


@pytest.fixture
def proxy_url(serve: ServeFactory, s3: Any, bucket: str, page_port: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (30, 140, 90)).save(buffer, "PNG")
    s3.put_object(Bucket=bucket, Key=KEY, Body=buffer.getvalue(), ContentType="image/png")
    server = serve(bucket, source={"delivery": {"mode": "redirect"}},
                   server={"cors_origins": [f"http://127.0.0.1:{page_port}"]})
    return f"{server.base_url}/img/photos/{KEY}"


def test_a_page_on_an_allowed_origin_reads_an_image_and_its_exposed_headers(
        browser: Browser, page_port: int, proxy_url: str) -> None:
    result = fetch_from(browser, f"http://127.0.0.1:{page_port}/", proxy_url)
    assert result.get("error") is None, result
    assert result["status"] == 200
    assert result["bytes"] > 0
    assert result["delivery"] == "stream"  # redirect delivery, but the fetch carried Origin
    assert result["requestId"]
    assert "delivery" in result["serverTiming"]  # Timing-Allow-Origin named the page's origin


def test_a_page_on_an_allowed_origin_reads_a_variants_x_cache(browser: Browser, page_port: int,
                                                              proxy_url: str) -> None:
    result = fetch_from(browser, f"http://127.0.0.1:{page_port}/", f"{proxy_url}?w=8")
    assert result.get("error") is None, result
    assert (result["status"], result["cache"]) == (200, "MISS")


def test_a_page_on_another_origin_cannot_read_the_image(browser: Browser, page_port: int,
                                                        proxy_url: str) -> None:
    result = fetch_from(browser, f"http://localhost:{page_port}/", proxy_url)
    assert "TypeError" in result["error"], result  # the preflight's 403 carries no CORS header
