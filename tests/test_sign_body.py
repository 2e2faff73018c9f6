"""POST /sign bodies through the stack: bad JSON is a 400 naming the problem, a body of another
media type 415, too large 413, too slow 408, one too many at once 503; never a 500.

Tests that must control the wire (a Content-Length nobody sends, a body that stalls, a chunked
body that never ends) speak HTTP/1.1 over a raw socket."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import TOKENS, ProxyFactory

from imgproxy.protocol.jsonbody import MAX_BODIES
from imgproxy.web.appkeys import BODY_SLOTS

DASH_TOKEN = "dashboard-sign-token-0123456789abcdef0123456"
DASH = {"Authorization": f"Bearer {DASH_TOKEN}"}
JSON = {**DASH, "Content-Type": "application/json"}
ITEM = {"source": "photos", "key": "employees/a.png"}
GOOD = json.dumps([ITEM]).encode()
WITH_DASH_TOKEN = {"tokens": {**TOKENS, "dash": {"token": DASH_TOKEN, "sign_scopes": ["photos:employees/*"]}}}


@pytest.fixture
def start(proxy: ProxyFactory) -> ProxyFactory:
    """``await start(auth={...}, server={...})``: the app with a token that may sign employees/*."""
    return proxy.preset(auth=WITH_DASH_TOKEN)


async def post(client: TestClient[Any, Any], body: bytes, headers: dict[str, str] | None = None
               ) -> tuple[int, dict[str, Any]]:
    response = await client.post("/sign", data=body, headers=JSON if headers is None else headers)
    return response.status, await response.json()


def with_params(**params: Any) -> bytes:
    return json.dumps([{**ITEM, "params": params}]).encode()


# --- Bad JSON: 400 naming the problem -----------------------------------------------------------

async def test_json_nested_tens_of_thousands_deep_is_400(start: ProxyFactory) -> None:
    status, body = await post(await start(), b"[" * 50_000 + b"]" * 50_000)
    assert (status, body["error"]) == (400, "bad_request")
    assert "nested too deeply" in body["message"]


async def test_json_objects_nested_tens_of_thousands_deep_are_400(start: ProxyFactory) -> None:
    status, body = await post(await start(), b'{"items":' * 30_000 + b"[]" + b"}" * 30_000)
    assert (status, body["error"]) == (400, "bad_request")
    assert "nested too deeply" in body["message"]


async def test_an_integer_past_pythons_digit_limit_is_400(start: ProxyFactory) -> None:
    body = b'[{"source": "photos", "key": "employees/a.png", "params": {"w": ' + b"9" * 5000 + b"}}]"
    status, answer = await post(await start(), body)
    assert (status, answer["error"]) == (400, "bad_request")
    assert "more than 20 digits" in answer["message"]


async def test_an_integer_of_more_than_20_digits_is_400(start: ProxyFactory) -> None:
    status, body = await post(await start(), b'[{"source": "photos", "key": "employees/a.png", '
                                             b'"params": {"w": -123456789012345678901}}]')
    assert (status, body["error"]) == (400, "bad_request")
    assert "more than 20 digits" in body["message"]


async def test_an_integer_of_20_digits_is_read(start: ProxyFactory) -> None:
    status, body = await post(await start(), with_params(w=12345678901234567890))
    assert status == 200
    assert body["items"][0]["error"] == "invalid_parameter"  # read, then refused as a width


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_are_400(start: ProxyFactory, constant: str) -> None:
    raw = b'[{"source": "photos", "key": "employees/a.png", "params": {"w": ' + constant.encode() + b"}}]"
    status, body = await post(await start(), raw)
    assert (status, body["error"]) == (400, "bad_request")
    assert f"{constant.lstrip('-')} is not a JSON number" in body["message"]


async def test_a_number_too_large_for_a_float_is_400(start: ProxyFactory) -> None:
    raw = b'[{"source": "photos", "key": "employees/a.png", "params": {"w": 1e999}}]'
    status, body = await post(await start(), raw)
    assert (status, body["error"]) == (400, "bad_request")
    assert "a number is too large" in body["message"]


@pytest.mark.parametrize("raw", [b'[{"source": "photos", "key": "employees/\xff.png"}]',
                                 b'["\xc3(',
                                 json.dumps([ITEM]).encode("utf-16")])
async def test_a_body_that_is_not_utf8_is_400(start: ProxyFactory, raw: bytes) -> None:
    status, body = await post(await start(), raw)
    assert (status, body["error"]) == (400, "bad_request")
    assert body["message"].startswith("The body is not UTF-8")


async def test_a_syntax_error_names_its_position_and_not_the_body(start: ProxyFactory) -> None:
    status, body = await post(await start(), b'["SECRET-MARKER" "employees/a.png"]')
    assert status == 400
    assert body["message"] == ("The body is not valid JSON: Expecting ',' delimiter: "
                               "line 1 column 18 (char 17).")


# --- Media type: 415 ----------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "application/json; charset=foo",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/jsonx",
    "json",
])
async def test_a_body_of_another_media_type_or_charset_is_415(start: ProxyFactory, content_type: str) -> None:
    status, body = await post(await start(), GOOD, {**DASH, "Content-Type": content_type})
    assert (status, body["error"]) == (415, "unsupported_media_type")
    assert body["message"] == "The request body must be JSON in UTF-8 (Content-Type: application/json)."


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", 'Application/JSON; Charset="UTF-8"',
    "application/json;charset=utf-8;foo=bar",
])
async def test_json_in_utf8_is_accepted(start: ProxyFactory, content_type: str) -> None:
    status, body = await post(await start(), GOOD, {**DASH, "Content-Type": content_type})
    assert status == 200
    assert "url" in body["items"][0]


async def test_a_body_without_content_type_is_read_as_json(start: ProxyFactory) -> None:
    client = await start()
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(head(len(GOOD), content_type=None) + GOOD)
        status, _, answer = await read_response(reader)
    finally:
        writer.close()
        await writer.wait_closed()
    assert status == 200
    assert "url" in json.loads(answer)["items"][0]


# --- Raw HTTP, for bodies that only a hostile client sends ----------------------------------------

def head(content_length: int | None, *, content_type: str | None = "application/json") -> bytes:
    lines = ["POST /sign HTTP/1.1", "Host: imgproxy", f"Authorization: Bearer {DASH_TOKEN}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {content_length}" if content_length is not None
                 else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader, within: float = 3.0
                        ) -> tuple[int, dict[str, str], bytes]:
    """The next response's status, headers and body; fails if it takes longer than ``within``."""
    async with asyncio.timeout(within):
        status = int((await reader.readline()).split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


@dataclass
class Raw:
    """An open connection that sent part of a request."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    """``await connect(client, first_bytes)``: a raw connection, closed at the end of the test."""
    async with AsyncExitStack() as stack:

        async def open_raw(client: TestClient[Any, Any], data: bytes) -> Raw:
            reader, writer = await asyncio.open_connection(client.host, client.port)

            async def close() -> None:
                writer.close()
                await writer.wait_closed()

            stack.push_async_callback(close)
            writer.write(data)
            await writer.drain()
            return Raw(reader, writer)

        yield open_raw


# --- Size: 413 ----------------------------------------------------------------------------------

async def test_a_content_length_over_sign_max_bytes_is_413_before_the_body_is_read(
        start: ProxyFactory, connect: Callable[..., Any]) -> None:
    raw = await connect(await start(), head(10 * 1024 * 1024) + b"[")  # the rest never comes
    status, _, body = await read_response(raw.reader)
    assert status == 413
    assert json.loads(body)["error"] == "body_too_large"
    assert "1048576 bytes" in json.loads(body)["message"]


async def test_a_body_over_a_configured_sign_max_bytes_is_413(start: ProxyFactory) -> None:
    client = await start(auth={"sign_max_bytes": 1024})
    status, body = await post(client, json.dumps([ITEM] * 40).encode())  # about 1.9 KiB
    assert (status, body["error"]) == (413, "body_too_large")


async def test_a_body_of_exactly_sign_max_bytes_is_read(start: ProxyFactory) -> None:
    client = await start(auth={"sign_max_bytes": 1024})
    status, _ = await post(client, GOOD + b" " * (1024 - len(GOOD)))
    assert status == 200


async def test_a_chunked_body_is_refused_once_it_passes_sign_max_bytes(
        start: ProxyFactory, connect: Callable[..., Any]) -> None:
    client = await start(auth={"sign_max_bytes": 4096})
    chunk = b"[" + b" " * 1023
    raw = await connect(client, head(None) + b"".join(b"400\r\n" + chunk + b"\r\n" for _ in range(5)))
    status, _, body = await read_response(raw.reader)  # the body never ends: refused on the way
    assert status == 413
    assert json.loads(body)["error"] == "body_too_large"


async def test_a_small_chunked_body_is_read(start: ProxyFactory) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield GOOD[:5]
        yield GOOD[5:]

    client = await start()
    response = await client.post("/sign", data=chunks(), headers=JSON)
    assert response.status == 200


async def test_a_malformed_chunk_with_the_head_is_400(start: ProxyFactory,
                                                      connect: Callable[..., Any]) -> None:
    raw = await connect(await start(), head(None) + b"1\r\n[\r\nzz\r\n")  # "zz" is no chunk size
    status, _, _ = await read_response(raw.reader)
    assert status == 400  # aiohttp's parser answers before the handler runs


async def test_a_malformed_chunk_in_mid_body_is_a_4xx_within_body_timeout(
        start: ProxyFactory, connect: Callable[..., Any]) -> None:
    client = await start(server={"body_timeout": 0.5})
    raw = await connect(client, head(None) + b"1\r\n[\r\n")
    await until(lambda: client.app[BODY_SLOTS].in_use == 1)
    raw.writer.write(b"zz\r\n")
    status, _, _ = await read_response(raw.reader)
    assert 400 <= status < 500


async def test_a_client_that_goes_away_mid_body_is_logged_as_a_400_not_a_500(
        proxy: ProxyFactory, caplog: pytest.LogCaptureFixture) -> None:
    # As ``server.serve`` runs the app: the test server would cancel the handler instead.
    app = proxy.app(auth=WITH_DASH_TOKEN)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        with caplog.at_level(logging.INFO):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head(100) + b"[")
            await until(lambda: app[BODY_SLOTS].in_use == 1)
            writer.close()
            await writer.wait_closed()
            await until(lambda: any(r.name == "imgproxy.access" for r in caplog.records))
    finally:
        await runner.cleanup()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    [line] = [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]
    assert "status=400" in line.split()


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


# --- Time: 408 ----------------------------------------------------------------------------------

async def test_a_body_that_stalls_past_body_timeout_is_408(start: ProxyFactory,
                                                           connect: Callable[..., Any]) -> None:
    client = await start(server={"body_timeout": 0.3})
    raw = await connect(client, head(100) + b'[{"source": ')  # 88 bytes never come
    status, _, body = await read_response(raw.reader, within=3.0)
    assert status == 408
    assert json.loads(body) | {"request_id": "-"} == {
        "error": "request_timeout", "message": "The request body did not arrive within 0.3 s.",
        "request_id": "-"}


async def test_a_body_that_arrives_slowly_but_in_time_is_read(start: ProxyFactory,
                                                              connect: Callable[..., Any]) -> None:
    client = await start(server={"body_timeout": 2})
    raw = await connect(client, head(len(GOOD)) + GOOD[:10])
    await asyncio.sleep(0.2)
    raw.writer.write(GOOD[10:])
    status, _, _ = await read_response(raw.reader)
    assert status == 200


# --- Admission: 503 -----------------------------------------------------------------------------

async def test_one_body_more_than_max_bodies_at_once_is_503_and_the_slots_come_back(
        start: ProxyFactory, connect: Callable[..., Any]) -> None:
    client = await start(server={"body_timeout": 30})
    stalled = [await connect(client, head(100) + b"[") for _ in range(MAX_BODIES)]
    slots = client.app[BODY_SLOTS]
    await until(lambda: slots.in_use == MAX_BODIES)
    response = await client.post("/sign", data=GOOD, headers=JSON)
    assert response.status == 503
    assert (await response.json())["error"] == "overloaded"
    assert response.headers["Retry-After"] == "1"
    for raw in stalled:
        raw.writer.close()
    await until(lambda: slots.in_use == 0)
    status, _ = await post(client, GOOD)
    assert status == 200


async def test_a_refused_body_gives_its_slot_back(start: ProxyFactory) -> None:
    client = await start()
    for _ in range(MAX_BODIES + 2):
        status, _ = await post(client, b"[" * 50_000)
        assert status == 400
    assert client.app[BODY_SLOTS].in_use == 0
