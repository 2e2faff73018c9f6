"""``imgproxy demo``'s logged-in directory without a browser: a real ``imgproxy demo`` process, its
page's JWTs traded for cookie grants over real sockets, and what those cookies open (their own
team's photos) and do not (another team's: 403 ``out_of_scope``)."""

from __future__ import annotations

import html
import http.client
import json
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from processes import HTTP_TIMEOUT, RUN_TIMEOUT, Process, command, needs_curl

from imgproxy.demo.gallery import THUMB_PARAMS, plain_url
from imgproxy.demo.idp import LEAD_TEAM
from imgproxy.demo.people import Person, directory

PEOPLE = directory()
OWN = next(person for person in PEOPLE if person.team == LEAD_TEAM)
OTHER = next(person for person in PEOPLE if person.team != LEAD_TEAM)
COOKIE = "imgproxy-grant"  # without Secure: the demo is plain HTTP on loopback


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def error(self) -> str:
        return str(json.loads(self.body)["error"])


@dataclass(frozen=True)
class Demo:
    base_url: str
    banner: str
    workdir: Path


def call(base_url: str, method: str, path: str, headers: Mapping[str, str] | None = None,
         body: bytes | None = None) -> Answer:
    """One request on a fresh loopback connection."""
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1"
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        reply = connection.getresponse()
        return Answer(reply.status, reply.headers, reply.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    workdir = tmp_path_factory.mktemp("demo-login") / "demo"
    process = Process(command("demo", "--port", "0"), workdir)
    try:
        banner = process.wait_for_output("Press Ctrl-C")
        base_url = re.search(r"^imgproxy demo: proxy on (http://\S+)$", banner, re.M)
        assert base_url, banner
        yield Demo(base_url[1], banner, workdir)
    finally:
        process.kill()


def page_token(demo: Demo, user: str) -> str:
    page = call(demo.base_url, "GET", f"/?user={user}")
    assert page.status == 200
    token = re.search(r'data-token="([^"]+)"', page.body.decode())
    assert token, "the logged-in page carries no JWT"
    return html.unescape(token[1])


def grant(demo: Demo, token: str, cookie: str | None = None) -> Answer:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if cookie is not None:
        headers["Cookie"] = cookie
    return call(demo.base_url, "POST", "/session", headers, b"{}")


def cookie_of(answer: Answer) -> str:
    assert answer.status == 204, answer
    jar = SimpleCookie(answer.headers["Set-Cookie"])
    return f"{COOKIE}={jar[COOKIE].value}"


def thumbnail(demo: Demo, person: Person, cookie: str, params: Mapping[str, str] = THUMB_PARAMS) -> Answer:
    return call(demo.base_url, "GET", plain_url("demo", person.key, params), {"Cookie": cookie})


@pytest.fixture(scope="module")
def lead_cookie(demo: Demo) -> str:
    return cookie_of(grant(demo, page_token(demo, "lead")))


def test_the_page_trades_its_jwt_for_a_cookie_without_secure(demo: Demo) -> None:
    answer = grant(demo, page_token(demo, "lead"))
    assert answer.status == 204
    attributes = answer.headers["Set-Cookie"].lower()
    assert attributes.startswith(f"{COOKIE}=")
    assert "httponly" in attributes
    assert "samesite=lax" in attributes
    assert "path=/" in attributes
    assert "secure" not in attributes  # plain-HTTP loopback: the demo's [auth.grants] secure = false


def test_the_leads_cookie_reads_their_teams_photo_privately(demo: Demo, lead_cookie: str) -> None:
    answer = thumbnail(demo, OWN, lead_cookie)
    assert answer.status == 200, answer.body
    assert answer.headers["Content-Type"].startswith("image/")
    assert answer.headers["Cache-Control"].startswith("private")
    assert "cookie" in answer.headers["Vary"].lower()


def test_the_leads_cookie_gets_403_for_another_teams_photo(demo: Demo, lead_cookie: str) -> None:
    answer = thumbnail(demo, OTHER, lead_cookie)
    assert answer.status == 403
    assert answer.error() == "out_of_scope"
    assert call(demo.base_url, "GET", plain_url("demo", OTHER.key), {"Cookie": lead_cookie}).status == 403


def test_hrs_cookie_reads_every_teams_photo(demo: Demo) -> None:
    cookie = cookie_of(grant(demo, page_token(demo, "hr")))
    for person in (OWN, OTHER):
        assert thumbnail(demo, person, cookie).status == 200, person


def test_without_the_cookie_a_plain_url_is_401(demo: Demo) -> None:
    assert call(demo.base_url, "GET", plain_url("demo", OWN.key, THUMB_PARAMS)).status == 401


def test_a_plain_url_only_takes_the_pages_sizes(demo: Demo, lead_cookie: str) -> None:
    answer = thumbnail(demo, OWN, lead_cookie, {"w": "300", "h": "300"})
    assert answer.status == 403
    assert answer.error() == "params_not_allowed"
    assert thumbnail(demo, OWN, lead_cookie, {**THUMB_PARAMS, "dpr": "2"}).status == 200  # the srcset's


def test_a_fresh_grant_is_kept_on_the_next_page_load(demo: Demo, lead_cookie: str) -> None:
    answer = grant(demo, page_token(demo, "lead"), cookie=lead_cookie)
    assert answer.status == 204
    assert "Set-Cookie" not in answer.headers  # the same cookie: Vary: Cookie caching holds


def test_switching_user_replaces_the_cookie(demo: Demo, lead_cookie: str) -> None:
    answer = grant(demo, page_token(demo, "hr"), cookie=lead_cookie)
    assert cookie_of(answer) != lead_cookie


def test_the_leads_page_asks_only_for_their_teams_photos(demo: Demo) -> None:
    page = call(demo.base_url, "GET", "/?user=lead").body.decode()
    wanted = {html.unescape(src) for src in re.findall(r'<img data-src="([^"]+)"', page)}
    team = [person for person in PEOPLE if person.team == LEAD_TEAM]
    assert wanted == {plain_url("demo", person.key, THUMB_PARAMS) for person in team}
    assert page.count('class="tile"') == len(PEOPLE) - len(team)
    assert " src=" not in page.split("<ul>", 1)[1]  # nothing loads before the grant


def test_an_unknown_user_is_404(demo: Demo) -> None:
    answer = call(demo.base_url, "GET", "/?user=mallory")
    assert (answer.status, answer.error()) == (404, "not_found")
    assert "?user=hr" in json.loads(answer.body)["message"]


@needs_curl
def test_the_banners_cookie_grant_curl_commands_work_as_printed(demo: Demo) -> None:
    section = demo.banner.split("Cookie grant with curl", 1)[1].split("Press Ctrl-C", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("curl -")]
    assert len(lines) == 3
    outputs = []
    for line in lines:
        curl = subprocess.run(["sh", "-c", line], cwd=demo.workdir, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT, check=False)
        assert curl.returncode == 0, f"{line}\n{curl.stderr}"
        outputs.append(curl.stdout)
    assert (demo.workdir / "lead-thumbnail.jpg").read_bytes().startswith(b"\xff\xd8")
    assert json.loads(outputs[2])["error"] == "out_of_scope"
