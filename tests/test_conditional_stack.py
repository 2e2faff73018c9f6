"""Conditional and range requests through the stack, with the wire to S3 measured.

The proxy reaches moto through a byte-counting ``TcpRelay``: a 304 must move no object bytes and
a 100-byte range must be a ranged GET, so either moves far less than the 1 MiB object.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse, hdrs
from aiohttp.test_utils import TestClient
from support import ProxyFactory, RelayFactory
from tcp_relay import TcpRelay

from imgproxy.auth.signing import UrlSigner

SIZE = 1024 * 1024
DATA = os.urandom(SIZE)
ETAG = f'"{hashlib.md5(DATA).hexdigest()}"'  # noqa: S324 (S3's ETag of a single-part upload)
# Well under the object's size, well over any request/response headers.
FEW_BYTES = 16 * 1024


@dataclass
class Stack:
    client: TestClient[Any, Any]
    relay: TcpRelay
    url: str
    last_modified: str

    async def get(self, **headers: str) -> tuple[ClientResponse, bytes, int]:
        """GET the 1 MiB object; the response, its body, and bytes S3 sent for it."""
        before = self.relay.bytes_from_upstream
        response = await self.client.get(self.url, headers=headers)
        body = await response.read()
        return response, body, self.relay.bytes_from_upstream - before


@pytest.fixture(scope="module")
def stored(s3: Any) -> tuple[str, str]:
    """One bucket holding the 1 MiB object for the whole module: (bucket, its Last-Modified)."""
    name = f"test-cond-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="big.jpg", Body=DATA, ContentType="image/jpeg")
    head = s3.head_object(Bucket=name, Key="big.jpg")
    assert head["ETag"] == ETAG
    return name, head["ResponseMetadata"]["HTTPHeaders"]["last-modified"]


@pytest.fixture
async def stack(proxy: ProxyFactory, relay_to: RelayFactory, moto_endpoint: str,
                stored: tuple[str, str], signer: UrlSigner) -> Stack:
    bucket, last_modified = stored
    relay = await relay_to(moto_endpoint)
    client = await proxy(source={"bucket": bucket, "endpoint_url": relay.endpoint})
    return Stack(client, relay, signer.sign("photos", "big.jpg"), last_modified)


def headers_of(**kwargs: str) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in kwargs.items()}


async def test_an_unconditional_get_moves_the_whole_object_through_the_relay(stack: Stack) -> None:
    response, body, moved = await stack.get()
    assert response.status == 200
    assert body == DATA
    assert moved >= SIZE


# --- 304 --------------------------------------------------------------------------------------

async def test_if_none_match_with_the_etag_is_304(stack: Stack) -> None:
    response, _, _ = await stack.get(**headers_of(If_None_Match=ETAG))
    assert response.status == 304


async def test_a_304_has_no_body(stack: Stack) -> None:
    _, body, _ = await stack.get(**headers_of(If_None_Match=ETAG))
    assert body == b""


async def test_a_304_carries_the_etag_and_caching_headers(stack: Stack) -> None:
    response, _, _ = await stack.get(**headers_of(If_None_Match=ETAG))
    assert response.headers[hdrs.ETAG] == ETAG
    assert response.headers[hdrs.CACHE_CONTROL] == "private, max-age=3600"
    assert response.headers["X-Request-Id"]


async def test_a_304_reads_no_object_bytes_from_s3(stack: Stack) -> None:
    response, _, moved = await stack.get(**headers_of(If_None_Match=ETAG))
    assert response.status == 304
    assert 0 < moved < FEW_BYTES


async def test_if_modified_since_the_last_modification_is_304(stack: Stack) -> None:
    response, body, moved = await stack.get(**headers_of(If_Modified_Since=stack.last_modified))
    assert response.status == 304
    assert body == b""
    assert moved < FEW_BYTES


async def test_if_modified_since_long_ago_is_200(stack: Stack) -> None:
    response, body, _ = await stack.get(**headers_of(If_Modified_Since="Sat, 01 Jan 2000 00:00:00 GMT"))
    assert response.status == 200
    assert body == DATA


async def test_a_stale_if_none_match_is_200_with_the_whole_object(stack: Stack) -> None:
    response, body, _ = await stack.get(**headers_of(If_None_Match='"0123456789abcdef0123456789abcdef"'))
    assert response.status == 200
    assert body == DATA


async def test_a_stale_if_none_match_wins_over_a_fresh_if_modified_since(stack: Stack) -> None:
    response, _, _ = await stack.get(**headers_of(If_None_Match='"stale"',
                                                  If_Modified_Since=stack.last_modified))
    assert response.status == 200


async def test_head_with_if_none_match_is_304(stack: Stack) -> None:
    response = await stack.client.head(stack.url, headers={hdrs.IF_NONE_MATCH: ETAG})
    assert response.status == 304
    assert response.headers[hdrs.ETAG] == ETAG


async def test_head_with_if_modified_since_is_304(stack: Stack) -> None:
    response = await stack.client.head(stack.url, headers={hdrs.IF_MODIFIED_SINCE: stack.last_modified})
    assert response.status == 304


# --- 206 ----------------------------------------------------------------------------------------

async def test_a_first_bytes_range_is_206_with_exactly_those_bytes(stack: Stack) -> None:
    response, body, _ = await stack.get(Range="bytes=0-99")
    assert response.status == 206
    assert body == DATA[:100]
    assert response.headers[hdrs.CONTENT_RANGE] == f"bytes 0-99/{SIZE}"
    assert response.headers[hdrs.CONTENT_LENGTH] == "100"


async def test_a_middle_range_is_206_with_exactly_those_bytes(stack: Stack) -> None:
    response, body, _ = await stack.get(Range="bytes=1000-1999")
    assert response.status == 206
    assert body == DATA[1000:2000]
    assert response.headers[hdrs.CONTENT_RANGE] == f"bytes 1000-1999/{SIZE}"


async def test_a_range_is_a_ranged_get_not_a_read_and_discard(stack: Stack) -> None:
    response, _, moved = await stack.get(Range="bytes=0-99")
    assert response.status == 206
    assert 100 < moved < FEW_BYTES


async def test_a_range_far_into_the_object_is_still_a_ranged_get(stack: Stack) -> None:
    response, body, moved = await stack.get(Range=f"bytes={SIZE - 200}-{SIZE - 101}")
    assert response.status == 206
    assert body == DATA[SIZE - 200:SIZE - 100]
    assert moved < FEW_BYTES


async def test_a_range_keeps_the_object_headers(stack: Stack) -> None:
    response, _, _ = await stack.get(Range="bytes=0-99")
    assert response.headers[hdrs.ETAG] == ETAG
    assert response.headers[hdrs.CONTENT_TYPE] == "image/jpeg"
    assert response.headers[hdrs.ACCEPT_RANGES] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_suffix_range_is_the_last_bytes(stack: Stack) -> None:
    response, body, moved = await stack.get(Range="bytes=-100")
    assert response.status == 206
    assert body == DATA[-100:]
    assert response.headers[hdrs.CONTENT_RANGE] == f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}"
    assert moved < FEW_BYTES


async def test_an_open_range_runs_to_the_end(stack: Stack) -> None:
    response, body, moved = await stack.get(Range=f"bytes={SIZE - 100}-")
    assert response.status == 206
    assert body == DATA[SIZE - 100:]
    assert response.headers[hdrs.CONTENT_RANGE] == f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}"
    assert moved < FEW_BYTES


async def test_a_range_past_the_end_is_clipped_to_the_object(stack: Stack) -> None:
    response, body, _ = await stack.get(Range=f"bytes={SIZE - 10}-{SIZE + 1000}")
    assert response.status == 206
    assert body == DATA[SIZE - 10:]
    assert response.headers[hdrs.CONTENT_RANGE] == f"bytes {SIZE - 10}-{SIZE - 1}/{SIZE}"


# --- 416 ----------------------------------------------------------------------------------------

async def test_a_range_starting_past_the_end_is_416(stack: Stack) -> None:
    response, _, _ = await stack.get(Range=f"bytes={SIZE}-")
    assert response.status == 416


async def test_a_416_names_the_object_size_in_content_range(stack: Stack) -> None:
    response, _, _ = await stack.get(Range=f"bytes={SIZE + 5}-{SIZE + 10}")
    assert response.headers[hdrs.CONTENT_RANGE] == f"bytes */{SIZE}"


async def test_a_416_has_a_json_error_body(stack: Stack) -> None:
    response, _, _ = await stack.get(Range=f"bytes={SIZE}-")
    body = await response.json()
    assert body["error"] == "range_not_satisfiable"
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert set(body) == {"error", "message", "request_id"}


# --- Ranges the proxy answers in full ----------------------------------------------------------

async def test_a_multi_range_request_is_200_with_the_whole_object(stack: Stack) -> None:
    response, body, _ = await stack.get(Range="bytes=0-9,20-29")
    assert response.status == 200
    assert body == DATA
    assert hdrs.CONTENT_RANGE not in response.headers


@pytest.mark.parametrize("value", ["bytes=9-0", "items=0-9", "bytes=abc", "bytes=-0"])
async def test_a_malformed_range_is_ignored_and_the_whole_object_sent(stack: Stack, value: str) -> None:
    response, body, _ = await stack.get(Range=value)
    assert response.status == 200
    assert body == DATA


# --- If-Range and If-Match ------------------------------------------------------------------------

async def test_if_range_with_the_current_etag_is_206(stack: Stack) -> None:
    response, body, _ = await stack.get(Range="bytes=0-99", **headers_of(If_Range=ETAG))
    assert response.status == 206
    assert body == DATA[:100]


async def test_if_range_with_another_etag_is_200_with_the_whole_object(stack: Stack) -> None:
    response, body, _ = await stack.get(Range="bytes=0-99", **headers_of(If_Range='"an-older-version"'))
    assert response.status == 200
    assert body == DATA
    assert hdrs.CONTENT_RANGE not in response.headers


async def test_if_range_with_a_weak_etag_is_200_with_the_whole_object(stack: Stack) -> None:
    # RFC 9110 13.1.5: If-Range needs a strong validator; a weak one never matches.
    response, body, _ = await stack.get(Range="bytes=0-99", **headers_of(If_Range=f"W/{ETAG}"))
    assert response.status == 200
    assert body == DATA


async def test_if_range_with_the_last_modified_date_is_206(stack: Stack) -> None:
    response, body, _ = await stack.get(Range="bytes=0-99", **headers_of(If_Range=stack.last_modified))
    assert response.status == 206
    assert body == DATA[:100]


async def test_if_range_with_an_old_date_is_200_with_the_whole_object(stack: Stack) -> None:
    response, body, _ = await stack.get(Range="bytes=0-99",
                                        **headers_of(If_Range="Sat, 01 Jan 2000 00:00:00 GMT"))
    assert response.status == 200
    assert body == DATA


async def test_if_match_with_another_etag_is_412(stack: Stack) -> None:
    response, _, moved = await stack.get(**headers_of(If_Match='"an-older-version"'))
    assert response.status == 412
    assert (await response.json())["error"] == "precondition_failed"
    assert moved < FEW_BYTES


async def test_if_match_with_the_current_etag_is_200(stack: Stack) -> None:
    response, body, _ = await stack.get(**headers_of(If_Match=ETAG))
    assert response.status == 200
    assert body == DATA


async def test_if_unmodified_since_long_ago_is_412(stack: Stack) -> None:
    response, _, _ = await stack.get(**headers_of(If_Unmodified_Since="Sat, 01 Jan 2000 00:00:00 GMT"))
    assert response.status == 412
