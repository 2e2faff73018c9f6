"""Seeded garbage through the whole stack: whatever a client puts in a header, the query, the path
or a /sign body that aiohttp's parser lets through, the answer is never a 5xx.

Each request is written to a raw socket as bytes, so values can hold what a real client can
send and an HTTP library would not: latin-1 bytes that are not UTF-8, tabs, odd spacing, values
up to just under aiohttp's 8190-byte field limit. Bytes aiohttp's parser refuses on its own
(CR, LF, NUL, other controls; non-ASCII in the target) are left out, since the parser's answer
is not the app's; where the parser refuses anyway, its 400 is a pass. A connection closed with
no answer at all counts as a failure, like a 5xx.

``IMGPROXY_GARBAGE_SEED`` replays another sequence and ``IMGPROXY_GARBAGE_SECONDS`` runs longer
(default 4 s); a failure names the seed, the request and its status.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from PIL import Image
from support import SIGNING_KEY, TOKEN, TOKENS, ProxyFactory

from imgproxy.auth.signing import UrlSigner

SEED = int(os.environ.get("IMGPROXY_GARBAGE_SEED", "20261201"))
SECONDS = float(os.environ.get("IMGPROXY_GARBAGE_SECONDS", "4"))
KEY = "fuzz/image.png"
SIGN_TOKEN = "garbage-sign-token-0123456789abcdef012345678"
# What aiohttp's parser accepts in a header value: visible ASCII, space, tab, and 0x80-0xff.
HEADER_BYTES = bytes([9, *range(0x20, 0x7F), *range(0x80, 0x100)])
# What it accepts in a request target: visible ASCII only.
TARGET_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "#")
NUMBERS = ["0", "-0", "1", "-1", "00", "01", "1.5", ".5", "5.", "1e3", "1e999", "-1e999", "1E-999", "nan",
           "NaN", "inf", "-inf", "Infinity", "0x10", "1_000", "+1", " 1", "1 ", "\t1", "\u0661",
           "4294967296", "9223372036854775808", "18446744073709551616", "9" * 19, "9" * 20, "9" * 25,
           "9" * 5000, "-" + "9" * 30, "1" * 12, "1" * 13, "\u00b2", "\uff11"]
# Near-valid transform values, so that garbage elsewhere reaches the renderer too.
VALID_PARAMS = {
    "w": ["1", "7", "50", "4096", "4097", "999999"], "h": ["1", "30", "300", "0"],
    "dpr": ["1", "2", "1.5", "4", "4.01", "0.5"], "fit": ["cover", "contain", "fill", "inside", "COVER"],
    "gravity": ["north", "center", "southwest", "up"], "fmt": ["auto", "webp", "avif", "png", "jpeg", "gif"],
    "q": ["1", "82", "100", "101"], "bg": ["ff00ff", "ff00ff80", "FFFFFF", "fff"],
}
MAX_VALUE_BYTES = 8000  # aiohttp refuses a longer field and closes: a reset, not an answer
UTF8_TEXT = ["é", "Zoë", "日本", "🙂", "\u200b", "\ufeff", "\u2028", "ß", "Ω"]
T = TypeVar("T")


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (40, 30), (10, 120, 200, 128)).save(buffer, "PNG")
    return buffer.getvalue()


class Garbage:
    """Values for each input, from one seeded generator: random bytes, boundary numbers, and
    near-misses of the valid syntax (more likely to reach deep into a parser)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, *options: T) -> T:
        return self.rng.choice(options)

    def number(self) -> str:
        return self.rng.choice(NUMBERS) if self.rng.random() < 0.7 else str(self.rng.randint(-10**6, 10**12))

    def raw_bytes(self, longest: int = 40) -> bytes:
        size = self.rng.choice([0, 1, 2, 5, longest, self.rng.randint(0, longest)])
        return bytes(self.rng.choice(HEADER_BYTES) for _ in range(size))

    def text(self) -> bytes:
        """Header-safe bytes: random, a number, UTF-8 text, or a few of them glued together."""
        makers: tuple[Callable[[], bytes], ...] = (
            self.raw_bytes, lambda: self.number().encode(), lambda: self.rng.choice(UTF8_TEXT).encode())
        parts = [self.pick(*makers)() for _ in range(self.rng.randint(1, 3))]
        return self.rng.choice([b"", b" ", b",", b";", b"=", b"-", b":"]).join(parts)

    def date(self) -> bytes:
        day = self.pick("Mon", "Fri", "Sunday", "xyz", "")
        year = self.pick("9999", "10000", "0000", "0001", "1", "99", "100", "1969", "2015", self.number())
        zone = self.pick("GMT", "UT", "-0100", "+0100", "-2359", "+9999", "-9999", "+2400", "EST", "Z",
                         "-0000", "", self.number())
        hms = self.pick("23:59:59", "00:00:00", "24:00:00", "23:59:60", "99:99:99", "1:2:3", self.number())
        month = self.pick("Dec", "Jan", "Foo", "")
        date = self.pick(f"{day}, 31 {month} {year} {hms} {zone}", f"{day}, 31-{month}-{year} {hms} {zone}",
                         f"{day} {month} 31 {hms} {year}", f"{day}, {self.number()} {month} {year} {hms}")
        return date.encode() if self.rng.random() < 0.8 else date.encode() + self.text()

    def etags(self) -> bytes:
        tags = [self.pick(b'"abc"', b'W/"abc"', b"*", b'"', b'""', b"W/", b'w/"x"', b'"a,b"', b'"\xff"',
                          b'"' + self.raw_bytes() + b'"', self.raw_bytes())
                for _ in range(self.rng.randint(1, 4))]
        return self.rng.choice([b",", b", ", b" ", b""]).join(tags)

    def byte_range(self) -> bytes:
        unit = self.pick(b"bytes", b"Bytes", b"items", b"", b"bytes ")
        first = self.pick(self.number().encode(), b"", b"0")
        last = self.pick(self.number().encode(), b"", b"99")
        spec = unit + b"=" + first + b"-" + last
        return self.pick(spec, spec + b"," + spec, spec + self.text())

    def accept(self) -> bytes:
        items = [self.pick(b"image/webp", b"image/avif", b"image/*", b"*/*", self.raw_bytes(10))
                 + self.pick(b"", b";q=" + self.number().encode(), b"; q=" + self.text(), b";" + self.text())
                 for _ in range(self.rng.randint(1, 5))]
        return b",".join(items)

    def authorization(self) -> bytes:
        return self.pick(b"Bearer " + TOKEN.encode(), b"Bearer " + self.raw_bytes(),
                         b"bearer  " + self.text(), b"Basic " + self.text(), self.text(),
                         b"Bearer " + b"a" * 2000 + b"==", b"Bearer " + TOKEN.encode() + self.text())

    def forwarded_for(self) -> bytes:
        hops = [self.pick(b"1.2.3.4", b"::1", b"[::1]", b"fe80::1%eth0", b"fe80::1%\xff", b"127.0.0.1",
                          b"10.0.0.1:80", b"unknown", b"", b"999.1.1.1", self.text())
                for _ in range(self.rng.randint(1, 40))]
        return self.rng.choice([b",", b", "]).join(hops)

    def proto(self) -> bytes:
        return self.pick(b"https", b"HTTP", b"https, http", b"", b"ftp", self.text())

    def header_value(self, name: str) -> bytes:
        makers: dict[str, Callable[[], bytes]] = {
            hdrs.IF_MODIFIED_SINCE: self.date, hdrs.IF_UNMODIFIED_SINCE: self.date,
            hdrs.IF_RANGE: lambda: self.pick(self.date, self.etags)(),
            hdrs.IF_NONE_MATCH: self.etags, hdrs.IF_MATCH: self.etags, hdrs.RANGE: self.byte_range,
            hdrs.ACCEPT: self.accept, hdrs.AUTHORIZATION: self.authorization,
            "X-Forwarded-For": self.forwarded_for, "X-Forwarded-Proto": self.proto,
            "X-Request-Id": self.text, hdrs.CONTENT_TYPE: self.text,
        }
        value = makers.get(name, self.text)() if self.rng.random() < 0.85 else self.text()
        if self.rng.random() < 0.02:
            value *= 1000  # long: up to just under the parser's field limit (8190 bytes)
        value = value[:MAX_VALUE_BYTES]
        return value.strip(b" \t") if self.rng.random() < 0.5 else value

    def param_value(self, name: str = "") -> str:
        if name in VALID_PARAMS and self.rng.random() < 0.6:
            return self.rng.choice(VALID_PARAMS[name])
        makers: tuple[Callable[[], str], ...] = (
            self.number, lambda: self.pick(*(v for vs in VALID_PARAMS.values() for v in vs)),
            lambda: self.text().decode("utf-8", "replace"))
        return self.pick(*makers)()

    def transform_params(self) -> dict[str, str]:
        chosen = self.rng.sample(sorted(VALID_PARAMS), self.rng.randint(1, 4))
        params = {name: self.param_value(name) for name in chosen}
        if self.rng.random() < 0.1:
            params[self.pick("x", "W", "w ", "é", "")] = self.param_value()
        return {k: v for k, v in params.items() if k}

    def raw_query(self) -> str:
        pieces = []
        for _ in range(self.rng.randint(0, 6)):
            name = self.pick("exp", "kid", "sig", "w", "", "%", "%zz", "%ff", "%c3%a9", "%ed%a0%80", "a+b")
            value = self.pick(quote(self.number(), safe=""),
                              "".join(self.rng.choice(TARGET_CHARS) for _ in range(8)),
                              "%" + self.pick("", "0", "zz", "ff", "C3%A9", "e2%82", "00"), "1" * 300)
            pieces.append(f"{name}={value}" if self.rng.random() < 0.9 else name)
        return "&".join(pieces).replace("?", "%3F")

    def raw_path(self) -> str:
        junk = "".join(self.rng.choice(TARGET_CHARS) for _ in range(self.rng.randint(0, 30)))
        return self.pick(f"/img/photos/{junk}", f"/img/{junk}", f"/img/photos/fuzz/{quote(junk)}",
                         "/img/photos/" + "%".join(["", "zz", "ff", "c3", "ed%a0%80", "2e%2e", "00", "5c"]),
                         "/img/%2e%2e/" + junk, "/img//" + junk)


def request_bytes(method: str, target: str, headers: list[tuple[str, bytes]],
                  body: bytes | None = None) -> bytes:
    head = [f"{method} {target} HTTP/1.1".encode(), b"Host: imgproxy", b"Connection: close"]
    head += [name.encode() + b": " + value for name, value in headers]
    if body is not None:
        head.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + (body or b"")


async def status_of(client: TestClient[Any, Any], raw: bytes) -> int:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(raw)
        async with asyncio.timeout(10):
            line = await reader.readline()
            await reader.read()  # to the close: the whole answer
        return int(line.split()[1]) if line else 0
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def garbage_client(proxy: ProxyFactory, bucket: str, s3: Any) -> TestClient[Any, Any]:
    """The app with one image, a sign token, and loopback as a trusted proxy (so X-Forwarded-*
    headers are parsed, not ignored)."""
    s3.put_object(Bucket=bucket, Key=KEY, Body=png(), ContentType="image/png")
    return await proxy(
        server={"trusted_proxies": ["127.0.0.1/32", "::1/128"]},
        auth={"tokens": {**TOKENS, "dash": {"token": SIGN_TOKEN, "sign_scopes": ["photos:*"]}}},
        transform={"workers": 1},
        # Always streamed: a hot key would otherwise be redirected, and its validators never reach S3.
        source={"delivery": {"mode": "stream"}},
    )


IMAGE_HEADERS = [hdrs.IF_MODIFIED_SINCE, hdrs.IF_UNMODIFIED_SINCE, hdrs.IF_RANGE, hdrs.IF_NONE_MATCH,
                 hdrs.IF_MATCH, hdrs.RANGE, hdrs.ACCEPT, "X-Forwarded-For", "X-Forwarded-Proto",
                 "X-Request-Id"]


def one_request(garbage: Garbage, signer: UrlSigner) -> tuple[str, bytes]:
    """A random request: (what it exercises, its bytes)."""
    rng = garbage.rng
    kind = rng.choices(["original", "transform", "query", "path", "token", "sign"], [5, 3, 2, 2, 1, 2])[0]
    headers = [(name, garbage.header_value(name)) for name in rng.sample(IMAGE_HEADERS, rng.randint(1, 4))]
    method = rng.choice(["GET", "GET", "HEAD"])
    if kind == "original":
        target = signer.sign("photos", KEY)
    elif kind == "transform":
        target = signer.sign("photos", KEY, params=garbage.transform_params())
    elif kind == "query":
        target = f"/img/photos/{KEY}?{garbage.raw_query()}"
    elif kind == "path":
        target = garbage.raw_path() + rng.choice(["", "?w=10", "?" + garbage.raw_query()])
    elif kind == "token":
        target = f"/img/photos/{KEY}" + rng.choice(["", "?w=10", "?fmt=auto&w=5"])
        headers.append((hdrs.AUTHORIZATION, garbage.authorization()))
    else:
        return kind, sign_request(garbage)
    return kind, request_bytes(method, target, headers)


def sign_request(garbage: Garbage) -> bytes:
    rng = garbage.rng
    item: dict[str, Any] = {"source": rng.choice(["photos", "nope", ""]),
                            "key": rng.choice([KEY, "a/../b", "x"])}
    if rng.random() < 0.7:
        item["params"] = garbage.transform_params()
    body = json.dumps(rng.choice([[item], {"items": [item]}, item, [item] * 3])).encode()
    body = rng.choice([body, body[: rng.randint(0, len(body))], body.replace(b'"', b"'"),
                       body.replace(b"}", b"," + garbage.number().encode() + b"}"),
                       b"[" * rng.randint(1, 5000), garbage.raw_bytes(200), garbage.number().encode()])
    token = b"Bearer " + SIGN_TOKEN.encode() if rng.random() < 0.85 else garbage.authorization()
    headers: list[tuple[str, bytes]] = [(hdrs.AUTHORIZATION, token)]
    if rng.random() < 0.8:
        content_type = rng.choice([b"application/json", b"application/json; charset=utf-8",
                                   garbage.header_value(hdrs.CONTENT_TYPE),
                                   b"application/json; charset=" + garbage.text()])
        headers.append((hdrs.CONTENT_TYPE, content_type))
    return request_bytes("POST", "/sign", headers, body)


async def test_garbage_in_any_header_param_path_or_body_is_never_a_5xx(garbage_client: TestClient[Any, Any]
                                                                       ) -> None:
    garbage = Garbage(random.Random(SEED))
    signer = UrlSigner(SIGNING_KEY, "k1")
    failures: list[str] = []
    sent = 0
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and len(failures) < 5:
        kind, raw = one_request(garbage, signer)
        status = await status_of(garbage_client, raw)
        sent += 1
        if status >= 500 or status == 0:
            failures.append(f"#{sent} {kind} -> {status}: {raw[:600]!r}")
    assert sent > 50
    assert failures == [], f"seed {SEED}, {sent} requests:\n" + "\n".join(failures)
