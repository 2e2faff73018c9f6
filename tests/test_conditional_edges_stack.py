"""Validators at the edges, through the stack: never a 5xx.

RFC 9110 13.1.3: a date that cannot be used is ignored. ``Fri, 31 Dec 9999 23:59:59 -0100`` is
a valid-looking date whose UTC instant lies in year 10000; it must be ignored like any other
unusable date, not overflow while it is converted or written back to S3. An entity tag with
bytes outside ASCII (a client may send latin-1 or UTF-8) can never equal an S3 ETag: it is
evaluated by the proxy, never passed to S3, whose request botocore could not sign.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from PIL import Image

from imgproxy.auth.signing import UrlSigner

EDGE_DATES = [
    "Fri, 31 Dec 9999 23:59:59 -0100",  # UTC: year 10000
    "Fri, 31 Dec 9999 23:59:59 -2359",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Fri, 31 Dec 9999 23:59:59 +0100",
    "Fri, 31 Dec 9999 23:59:59 EST",
    "Friday, 31-Dec-99 23:59:59 -0100",
    "Fri Dec 31 23:59:59 9999",
    "Sat, 01 Jan 0001 00:00:00 +2359",
    "Sat, 01 Jan 0000 00:00:00 GMT",
    "Sat, 01 Jan 100 00:00:00 +2359",  # UTC: year 99
    "Sat, 01 Jan 1900 00:00:00 GMT",
    "Thu, 01 Jan 1970 00:00:00 +2359",
    "Fri, 31 Dec 99999 23:59:59 GMT",
    "Fri, 31 Dec 999999999999 23:59:59 GMT",
    "Fri, 31 Dec 2000 23:59:59 +9999",
    "Fri, 31 Dec 2000 23:59:59 -9999",
    "Fri, 31 Dec 2000 23:59:59 +2400",
]
DATE_HEADERS = [hdrs.IF_MODIFIED_SINCE, hdrs.IF_UNMODIFIED_SINCE, hdrs.IF_RANGE]


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), (10, 120, 200)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def url(s3: Any, bucket: str, signer: UrlSigner) -> str:
    s3.put_object(Bucket=bucket, Key="edge.png", Body=png(), ContentType="image/png")
    return signer.sign("photos", "edge.png")


def with_date(header: str, date: str) -> dict[str, str]:
    # If-Range only counts on a range request.
    return {header: date, hdrs.RANGE: "bytes=0-9"} if header == hdrs.IF_RANGE else {header: date}


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("header", DATE_HEADERS)
async def test_an_edge_date_on_an_original_is_never_a_5xx(
        client: TestClient[Any, Any], url: str, method: str, header: str) -> None:
    statuses = {}
    for date in EDGE_DATES:
        response = await client.request(method, url, headers=with_date(header, date))
        await response.read()
        statuses[date] = response.status
    assert {date: status for date, status in statuses.items() if status >= 500} == {}


async def test_a_year_10000_if_modified_since_is_ignored(client: TestClient[Any, Any], url: str) -> None:
    response = await client.get(url, headers={hdrs.IF_MODIFIED_SINCE: EDGE_DATES[0]})
    assert response.status == 200
    assert await response.read() == png()


async def test_a_year_10000_if_unmodified_since_is_ignored(client: TestClient[Any, Any], url: str) -> None:
    response = await client.get(url, headers={hdrs.IF_UNMODIFIED_SINCE: EDGE_DATES[0]})
    assert response.status == 200


async def test_a_year_10000_if_range_never_matches_so_the_whole_object_is_sent(
        client: TestClient[Any, Any], url: str) -> None:
    response = await client.get(url, headers=with_date(hdrs.IF_RANGE, EDGE_DATES[0]))
    assert response.status == 200
    assert await response.read() == png()


@pytest.mark.parametrize("header", DATE_HEADERS)
async def test_an_edge_date_on_a_transform_is_never_a_5xx(
        client: TestClient[Any, Any], s3: Any, bucket: str, signer: UrlSigner, header: str) -> None:
    s3.put_object(Bucket=bucket, Key="edge.png", Body=png(), ContentType="image/png")
    response = await client.get(signer.sign("photos", "edge.png", params={"w": "50"}),
                                headers=with_date(header, EDGE_DATES[0]))
    assert response.status == 200


# --- Entity tags outside ASCII -------------------------------------------------------------------

async def raw_status(client: TestClient[Any, Any], method: str, url: str, header: bytes) -> int:
    """The status for a request with one header line sent as raw bytes (an HTTP library would
    encode it as UTF-8 or refuse it)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(f"{method} {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
                     + header + b"\r\n\r\n")
        status_line = await reader.readline()
        await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


# Not UTF-8 (aiohttp hands these on as lone surrogates), UTF-8, and a space inside the quotes.
ODD_TAGS = [b'"\xff"', b'"\xe9\xff"', '"é"'.encode(), b'"a b"']


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("tag", ODD_TAGS)
async def test_if_none_match_outside_ascii_never_matches_and_is_not_a_5xx(
        client: TestClient[Any, Any], url: str, method: str, tag: bytes) -> None:
    assert await raw_status(client, method, url, b"If-None-Match: " + tag) == 200


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("tag", ODD_TAGS)
async def test_if_match_outside_ascii_never_matches_so_it_is_412(
        client: TestClient[Any, Any], url: str, method: str, tag: bytes) -> None:
    assert await raw_status(client, method, url, b"If-Match: " + tag) == 412


@pytest.mark.parametrize("tag", ODD_TAGS)
async def test_if_range_outside_ascii_never_matches_so_the_whole_object_is_sent(
        client: TestClient[Any, Any], url: str, tag: bytes) -> None:
    assert await raw_status(client, "GET", url, b"Range: bytes=0-9\r\nIf-Range: " + tag) == 200


@pytest.mark.parametrize("tag", ODD_TAGS)
async def test_if_none_match_outside_ascii_on_a_transform_is_200(
        client: TestClient[Any, Any], s3: Any, bucket: str, signer: UrlSigner, tag: bytes) -> None:
    url = signer.sign("photos", "edge.png", params={"w": "50"})
    s3.put_object(Bucket=bucket, Key="edge.png", Body=png(), ContentType="image/png")
    assert await raw_status(client, "GET", url, b"If-None-Match: " + tag) == 200
