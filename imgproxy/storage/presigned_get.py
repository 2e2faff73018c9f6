"""Object GETs and HEADs: a presigned URL fetched over one shared aiohttp session per source.

botocore's fixed cost per call (request building, endpoint rules, signing, parsing) was three
quarters of the proxy's CPU per streamed image; a GET of a body needs none of it, and neither
does a HEAD (a cold thumbnail's first call: about 2 ms of the serving process's CPU through
botocore). The URL is
signed for this request only (``storage/presign.py``, valid a few minutes, never logged or
returned), conditional and range headers ride along unsigned as S3 allows, and connections are
kept alive in a bounded pool. HEAD, LIST and credentials stay with aiobotocore.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal

import aiohttp
from yarl import URL

from imgproxy.config import SourceConfig
from imgproxy.storage.presign import PresignCredentials, S3Location, presign_get
from imgproxy.storage.tls import client_ssl

URL_LIFETIME: Final = 300  # seconds; the URL is used at once, by this process only
RETRY_BACKOFF: Final = 0.05
ERROR_BODY_BYTES: Final = 16 * 1024
_CODE: Final = re.compile(rb"<Code>([A-Za-z0-9.]{1,64})</Code>")


def open_session(source: SourceConfig) -> aiohttp.ClientSession:
    """The source's keep-alive connections for body GETs, with connect and read timeouts and the
    source's TLS trust (``storage/tls.py``). Room for the streams and the reads pools both
    (``storage/pool.py`` bounds each)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=2 * source.max_connections, ttl_dns_cache=60,
                                       ssl=client_ssl(source)),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=source.connect_timeout,
                                      sock_read=source.read_timeout),
        auto_decompress=False,
        trust_env=True,  # HTTPS_PROXY and friends, as botocore honours them
    )


async def fetch(
    session: aiohttp.ClientSession,
    location: S3Location,
    bucket: str,
    key: str,
    credentials: PresignCredentials,
    headers: Mapping[str, str],
    attempts: int,
    now: float,
    method: Literal["GET", "HEAD"] = "GET",
) -> aiohttp.ClientResponse:
    """GET (or HEAD) ``key``; connection failures and 5xx answers are retried up to ``attempts`` times (a
    failed TLS handshake is not: the same certificate fails the same way). Any other answer is
    returned as it is, body unread: the caller reads or releases it."""
    url = URL(presign_get(location, bucket, key, credentials, signed_at=datetime.fromtimestamp(now, UTC),
                          expires_in=URL_LIFETIME, method=method), encoded=True)
    for attempt in range(1, attempts + 1):
        try:
            response = await session.request(method, url, headers=dict(headers), allow_redirects=False)
        except aiohttp.ClientSSLError:
            raise
        except aiohttp.ClientConnectorError:
            if attempt == attempts:
                raise
        else:
            if response.status < 500 or attempt == attempts:
                return response
            response.release()
        await asyncio.sleep(RETRY_BACKOFF * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


async def error_code(response: aiohttp.ClientResponse) -> str:
    """The ``<Code>`` of an S3 error answer (read from at most 16 KiB of body), or ''."""
    try:
        body = await response.content.read(ERROR_BODY_BYTES)
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    finally:
        response.release()
    match = _CODE.search(body)
    return match.group(1).decode("ascii") if match else ""
