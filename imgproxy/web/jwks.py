"""``JwksCache``: every ``[auth.oidc]`` provider's signing keys, fetched over HTTPS and kept for the
app's lifetime (across reloads: keyed by provider name, issuer and JWKS URL).

Keys are fetched when a request brings a JWT of a provider whose keys are missing, stale, or lack
the token's ``kid`` (the IdP may have rotated) — at most once per ``MIN_FETCH_INTERVAL`` per
provider, however many tokens with unknown kids arrive, and one fetch at a time (a request whose
key may come with the fetch under way waits for it, at most its time limit). A failed fetch (IdP
down, a bad answer) keeps the keys already held. Each fetch has a time limit and a size limit,
follows no redirect, and checks the certificate against the system's CAs (or the provider's
``ca_bundle``). Without ``jwks_url``, the JWKS URL comes from the issuer's
``/.well-known/openid-configuration``, whose ``issuer`` must equal the configured one exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Final

import aiohttp
from aiohttp import hdrs

from imgproxy.auth.jwks import MAX_JWKS_BYTES, BadKeySet, JwkSet, Keyring, fresh_for, parse_jwks
from imgproxy.auth.oidc import find_provider, peek
from imgproxy.auth.tokens import parse_bearer
from imgproxy.config.oidc import OidcConfig, check_fetch_url
from imgproxy.config.values import ConfigError
from imgproxy.errors import ProxyError

log = logging.getLogger("imgproxy.jwks")
FETCH_TIMEOUT: Final = 5.0  # seconds for one discovery or JWKS request, connecting included
DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
ProviderKey = tuple[str, str, str | None]


class FetchFailed(Exception):
    """A discovery or JWKS fetch that gave nothing usable (the text is for the log)."""


def provider_key(provider: OidcConfig) -> ProviderKey:
    return provider.name, provider.issuer, provider.jwks_url


class JwksCache:
    """The keyrings of every provider seen, and the one HTTP client that fills them."""

    def __init__(self, session: aiohttp.ClientSession, clock: Callable[[], float]) -> None:
        self.session = session
        self.clock = clock
        self.rings: dict[ProviderKey, Keyring] = {}
        self._locks: dict[ProviderKey, asyncio.Lock] = {}
        self._tls: dict[str | None, ssl.SSLContext] = {}
        self.on_fetch: Callable[[str, str], None] = lambda provider, result: None

    def keys_for(self, provider: OidcConfig) -> JwkSet | None:
        """The keys held for ``provider`` (``auth.oidc.KeyLookup``)."""
        ring = self.rings.get(provider_key(provider))
        return ring.keys if ring is not None else None

    async def prepare(self, authorization: str | None, providers: Mapping[str, OidcConfig]) -> None:
        """Before ``authorize``: if the request carries a JWT of one of ``providers`` whose key
        may be missing, fetch that provider's keys now (within the rate limit). Never raises for
        the token: ``authorize`` judges it."""
        if authorization is None or not providers:
            return
        try:
            seen = peek(parse_bearer(authorization))
        except ProxyError:
            return
        provider = find_provider(providers, seen.issuer) if seen is not None else None
        if seen is None or provider is None:
            return
        key = provider_key(provider)
        ring = self.rings.setdefault(key, Keyring())
        lock = self._locks.setdefault(key, asyncio.Lock())
        if not ring.should_fetch(seen.kid, self.clock()):
            if lock.locked() and not ring.has(seen.kid):
                async with lock:  # a fetch is under way that may bring this token's key: wait for it
                    return
            return
        async with lock:
            now = self.clock()
            if ring.should_fetch(seen.kid, now):  # not already done by the fetch we waited for
                ring.started(now)
                await self.refresh(provider, ring)

    async def refresh(self, provider: OidcConfig, ring: Keyring) -> None:
        try:
            url = ring.jwks_url or provider.jwks_url or await self.discover(provider)
            body, cache_control = await self.get(provider, url)
            keys = parse_jwks(body)
        except (FetchFailed, BadKeySet) as exc:
            ring.jwks_url = None  # discover again next time: the IdP may have moved its keys
            held = "keeping the keys held" if ring.keys is not None else "no keys yet"
            log.warning("auth.oidc.%s: fetching keys failed (%s); %s", provider.name, exc, held)
            self.on_fetch(provider.name, "error")
            return
        ring.jwks_url = url if provider.jwks_url is None else None
        ring.loaded(keys, fresh_for(cache_control), self.clock())
        log.info("auth.oidc.%s: %d keys loaded (%s)", provider.name, len(keys.keys),
                 ",".join(str(k.kid) for k in keys.keys))
        self.on_fetch(provider.name, "ok")

    async def discover(self, provider: OidcConfig) -> str:
        body, _ = await self.get(provider, provider.issuer.rstrip("/") + DISCOVERY_PATH)
        try:
            document = json.loads(body)
        except ValueError:
            raise FetchFailed("discovery document is not JSON") from None
        if not isinstance(document, dict) or document.get("issuer") != provider.issuer:
            raise FetchFailed("discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        try:
            return check_fetch_url(jwks_uri if isinstance(jwks_uri, str) else "", "jwks_uri")
        except ConfigError as exc:
            raise FetchFailed(f"discovery document: {exc}") from None

    async def get(self, provider: OidcConfig, url: str) -> tuple[bytes, str | None]:
        """The body (at most ``MAX_JWKS_BYTES``) and Cache-Control of a 200 answer to GET ``url``."""
        try:
            async with asyncio.timeout(FETCH_TIMEOUT), self.session.get(
                    url, allow_redirects=False, ssl=self.tls(provider.ca_bundle),
                    headers={hdrs.ACCEPT: "application/json"}) as response:
                if response.status != 200:
                    raise FetchFailed(f"GET {url}: status {response.status}")
                body = bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise FetchFailed(f"GET {url}: more than {MAX_JWKS_BYTES} bytes")
                return bytes(body), response.headers.get(hdrs.CACHE_CONTROL)
        except TimeoutError:
            raise FetchFailed(f"GET {url}: no answer within {FETCH_TIMEOUT:g}s") from None
        except aiohttp.ClientError as exc:
            raise FetchFailed(f"GET {url}: {exc.__class__.__name__}") from None

    def tls(self, ca_bundle: str | None) -> ssl.SSLContext:
        context = self._tls.get(ca_bundle)
        if context is None:
            context = self._tls[ca_bundle] = ssl.create_default_context(cafile=ca_bundle)
        return context


@asynccontextmanager
async def open_jwks(clock: Callable[[], float]) -> AsyncIterator[JwksCache]:
    """A ``JwksCache`` with its HTTP client, for the app's lifetime."""
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=FETCH_TIMEOUT),
                                     trust_env=False) as session:
        yield JwksCache(session, clock)
