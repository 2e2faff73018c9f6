"""An S3 front door that checks presigned URLs the way S3 does, because moto does not.

``S3Gate`` listens on loopback in front of the moto server. A request carrying a SigV4 *query*
signature (``X-Amz-Signature``) is verified first: the signature is recomputed with botocore's
own presigner (``S3SigV4QueryAuth``) at the instant the URL claims (``X-Amz-Date``), not with
imgproxy's code, and the URL is refused once the gate's clock passes ``X-Amz-Date +
X-Amz-Expires``. Refusals are S3-style XML errors; everything else (including the proxy's own
header-signed calls) is forwarded to moto and its answer streamed back unchanged, by
``Forwarder``: the loopback server and pass-through it shares with tests/test_nginx.py's recorder.

The clock is the test's (``ManualClock``), so "this URL stops working after expiry" is a
statement about the URL, not about waiting.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import ClassVar, Final, Self
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict
from yarl import URL

S3_MAX_EXPIRES: Final = 7 * 24 * 3600
AMZ_DATE: Final = "%Y%m%dT%H%M%SZ"
HOP_BY_HOP: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                               "upgrade", "proxy-authorization", "proxy-authenticate", "host"})


class ManualClock:
    """Unix time that moves only when the test says so; callable like ``time.time``."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class S3Refusal(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def expected_signature(method: str, url: str, params: Mapping[str, str], headers: Mapping[str, str],
                       credentials: Credentials, region: str, amz_date: str, expires: int) -> str:
    """botocore's presigned-URL signature for this request, as if signed at ``amz_date``.

    ``url`` is scheme://host/path exactly as sent; ``params`` are the non-``X-Amz-*`` query
    parameters (decoded). botocore signs "now"; the only change is the timestamp it signs with.
    """
    auth = S3SigV4QueryAuth(credentials, "s3", region, expires=expires)
    request = AWSRequest(method=method, url=url, headers=dict(headers), params=dict(params))
    request.context["timestamp"] = amz_date
    auth._modify_request_before_signing(request)  # adds the X-Amz-* parameters, as add_auth does
    canonical = auth.canonical_request(request)
    signature: str = auth.signature(auth.string_to_sign(request, canonical), request)
    return signature


class Forwarder:
    """An aiohttp server on a free loopback port that passes each request on to ``upstream`` as
    sent, but for the hop-by-hop headers in ``dropped``, and streams the answer back the same way.
    A subclass looks at each request first, in ``handle``."""

    dropped: ClassVar[frozenset[str]] = HOP_BY_HOP

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.endpoint = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> Self:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        return await self.forward(request)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in self.dropped)
        body = await request.read()
        target = URL(self.upstream + request.raw_path, encoded=True)
        async with self._session.request(request.method, target, headers=headers, data=body or None,
                                         allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status, headers=CIMultiDict(
                (k, v) for k, v in upstream.headers.items() if k.lower() not in self.dropped))
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(64 * 1024):
                await response.write(chunk)
            await response.write_eof()
            return response


class S3Gate(Forwarder):
    """Verifies presigned GETs (signature, expiry) against ``secrets``; forwards to ``upstream``."""

    def __init__(self, upstream: str, secrets: Mapping[str, str],
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(upstream)
        self.secrets = dict(secrets)  # access key id -> secret access key
        self.clock = clock
        self.accepted: list[str] = []  # "METHOD path" of each presigned request that passed
        self.refused: list[str] = []  # S3 error codes sent instead

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path, _, query = request.raw_path.partition("?")
        params = dict(_split(query))
        if "X-Amz-Signature" in params:
            try:
                self._verify(request.method, request.scheme, path, params, request.headers)
            except S3Refusal as refusal:
                self.refused.append(refusal.code)
                return _error(refusal)
            self.accepted.append(f"{request.method} {path}")
        return await self.forward(request)

    def _verify(self, method: str, scheme: str, path: str, params: Mapping[str, str],
                headers: Mapping[str, str]) -> None:
        """S3's checks of a presigned request, in S3's words."""
        required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                    "X-Amz-SignedHeaders")
        if any(name not in params for name in required) or params["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            raise S3Refusal(400, "AuthorizationQueryParametersError",
                            "Query-string authentication version 4 requires the X-Amz-* parameters.")
        expires_text, amz_date = params["X-Amz-Expires"], params["X-Amz-Date"]
        if not expires_text.isdigit() or not 1 <= int(expires_text) <= S3_MAX_EXPIRES:
            raise S3Refusal(400, "AuthorizationQueryParametersError",
                            "X-Amz-Expires must be between 1 and 604800 seconds.")
        try:
            signed_at = datetime.strptime(amz_date, AMZ_DATE).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise S3Refusal(400, "AuthorizationQueryParametersError", "X-Amz-Date is malformed.") from None
        access_key, day, region, service, terminal = (params["X-Amz-Credential"].split("/") + [""] * 5)[:5]
        if (day, service, terminal) != (amz_date[:8], "s3", "aws4_request"):
            raise S3Refusal(400, "AuthorizationQueryParametersError", "X-Amz-Credential is malformed.")
        secret = self.secrets.get(access_key)
        if secret is None:
            raise S3Refusal(403, "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.")
        if self.clock() > signed_at + int(expires_text):
            raise S3Refusal(403, "AccessDenied", "Request has expired")
        signed_headers = {name: headers.get(name, "") for name in params["X-Amz-SignedHeaders"].split(";")}
        operation = {k: v for k, v in params.items() if not k.startswith("X-Amz-")}
        credentials = Credentials(access_key, secret, params.get("X-Amz-Security-Token"))
        expected = expected_signature(method, f"{scheme}://{headers.get('Host', '')}{path}", operation,
                                      signed_headers, credentials, region, amz_date, int(expires_text))
        if not hmac.compare_digest(expected, params["X-Amz-Signature"]):
            raise S3Refusal(403, "SignatureDoesNotMatch", "The request signature we calculated does "
                            "not match the signature you provided.")


def _split(query: str) -> list[tuple[str, str]]:
    pairs = []
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _error(refusal: S3Refusal) -> web.Response:
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{refusal.code}</Code><Message>{refusal.message}</Message>"
            f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>")
    return web.Response(status=refusal.status, text=body, content_type="application/xml")
