"""What ``imgproxy demo`` prints: where everything is, and URLs and curl commands that work as printed."""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from imgproxy.auth.signing import UrlSigner
from imgproxy.demo.gallery import SIGNED_PATH, THUMB_PARAMS, plain_url
from imgproxy.demo.idp import LEAD, LEAD_TEAM, USERS, DemoIdp
from imgproxy.demo.people import Person
from imgproxy.protocol.paths import image_path

DEMO_TTL: Final = 3600  # seconds: the printed signed URLs and JWTs
COOKIE_JAR: Final = "lead.cookies"


@dataclass(frozen=True, slots=True)
class Banner:
    base_url: str
    endpoint: str  # moto's
    bucket: str
    source: str
    signer: UrlSigner
    token: str  # reads every image
    images: Mapping[str, tuple[bytes, str]]  # the samples: key -> (bytes, content type)
    metrics_url: str | None = None
    people: tuple[Person, ...] = ()
    idp: DemoIdp | None = None  # None: no log-in view (the demo is not on loopback)


def banner(b: Banner) -> str:
    lines = [
        f"imgproxy demo: proxy on {b.base_url}",
        f"  in-process S3 (moto) on {b.endpoint}, private bucket {b.bucket!r}, source {b.source!r}",
        "",
    ]
    if b.people:
        lines += [f"Employee directory ({len(b.people)} photos; open it in a browser): {b.base_url}/"]
        lines += [*directory_lines(b), ""]
    if b.metrics_url:
        lines += [f"Prometheus metrics: {b.metrics_url}", ""]
    lines += sample_lines(b)
    if b.idp is not None and b.people:
        lines += ["", *grant_lines(b, b.idp)]
    lines += ["", "Press Ctrl-C to stop."]
    return "\n".join(lines) + "\n"


def directory_lines(b: Banner) -> list[str]:
    if b.idp is None:
        return ["  (signed URLs only: logging in needs cookies without Secure, so a loopback --host)"]
    return [
        f"  log in as a demo user (a built-in identity provider, for `imgproxy demo` only; keys at "
        f"{b.idp.jwks_url}):",
        *(f"    {user.name}, {user.title}: {user.sees}: {b.base_url}/?user={user.id}" for user in USERS),
        f"  no login, signed URLs from one POST /sign per view: {b.base_url}{SIGNED_PATH}",
    ]


def sample_lines(b: Banner) -> list[str]:
    lines = [f"Signed URLs (valid {DEMO_TTL // 60} minutes; open them in a browser or <img src>):"]
    urls = {key: b.signer.sign(b.source, key, ttl=DEMO_TTL) for key in b.images}
    for key, url in urls.items():
        lines.append(f"  {key} ({len(b.images[key][0]):,} bytes)")
        lines.append(f"    {url}")
    lines += ["", "Thumbnails (resized and converted on the fly; fmt=auto picks AVIF/WebP/JPEG/PNG):"]
    for key in b.images:
        lines.append(f"  {b.signer.sign(b.source, key, ttl=DEMO_TTL, params={'w': '300', 'fmt': 'auto'})}")
    first_key, first_url = next(iter(urls.items()))
    name = first_key.rsplit("/", 1)[-1]
    plain = b.base_url + image_path(b.source, first_key)
    return [
        *lines,
        "",
        "curl commands:",
        f"  curl -fsS -o {shlex.quote(name)} {shlex.quote(first_url)}",
        f"  curl -sS -D - -o /dev/null {shlex.quote(first_url)}",
        f"  curl -sS -D - -o /dev/null -H 'Range: bytes=0-99' {shlex.quote(first_url)}",
        f"  curl -fsS -H {shlex.quote('Authorization: Bearer ' + b.token)} -o {shlex.quote('token-' + name)} "
        f"{shlex.quote(plain)}",
        f"  curl -sS {shlex.quote(plain)}    # no credentials: 401",
    ]


def grant_lines(b: Banner, idp: DemoIdp) -> list[str]:
    """The team lead's log-in with curl: a JWT for a cookie grant, then plain URLs."""
    own = next(p for p in b.people if p.team == LEAD_TEAM)
    other = next(p for p in b.people if p.team != LEAD_TEAM)
    jwt = idp.token(LEAD, time.time(), ttl=DEMO_TTL)
    session = f"{b.base_url}/session"
    own_url = b.base_url + plain_url(b.source, own.key, THUMB_PARAMS)
    other_url = b.base_url + plain_url(b.source, other.key, THUMB_PARAMS)
    return [
        f"Cookie grant with curl, as {LEAD.name} ({LEAD.title}; the JWT is valid "
        f"{DEMO_TTL // 60} minutes):",
        f"  curl -fsS -c {COOKIE_JAR} -X POST -H {shlex.quote('Authorization: Bearer ' + jwt)} "
        f"-H 'Content-Type: application/json' -d '{{}}' {shlex.quote(session)}",
        f"  curl -fsS -b {COOKIE_JAR} -o lead-thumbnail.jpg {shlex.quote(own_url)}",
        f"  curl -sS -b {COOKIE_JAR} {shlex.quote(other_url)}    # {other.team}, not {LEAD_TEAM}: 403",
    ]
