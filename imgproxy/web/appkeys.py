"""Every typed key under which the application keeps its state (``web.AppKey``) and a request its
record (``web.RequestKey``). Only the ``web`` and ``process`` layers read them: the handlers below
(``delivery``, ``transform.variants``) get what they need as arguments."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web

from imgproxy.auth.forward import UntrustedPeers
from imgproxy.auth.ledger import Ledger
from imgproxy.cache import Flight, HotCounting, MetadataCaching, VariantCaching
from imgproxy.config import Config, LogFormat
from imgproxy.facts import RequestFacts
from imgproxy.limits.limiter import Limiter
from imgproxy.protocol.jsonbody import BodySlots
from imgproxy.protocol.sendwatch import SendWatch, SendWatchdog
from imgproxy.storage.s3 import S3Source
from imgproxy.storage.variant_store import VariantStore
from imgproxy.transform.variants import VariantService
from imgproxy.web.health import Readiness
from imgproxy.web.jwks import JwksCache
from imgproxy.web.live import Live, Settings
from imgproxy.web.metrics import Metrics
from imgproxy.web.polling import PolledRevocations
from imgproxy.web.webhook import WebhookClient

# Set by create_app, for the app's lifetime. CONFIG is the config the app started with: what
# sized and opened its resources. Per request, read SETTINGS (a reload replaces LIVE's).
CONFIG: Final = web.AppKey("config", Config)
LIVE: Final = web.AppKey("imgproxy.live", Live)
CLOCK: Final[web.AppKey[Callable[[], float]]] = web.AppKey("clock")
LOG_FORMAT: Final = web.AppKey("log_format", LogFormat)
METRICS: Final = web.AppKey("metrics", Metrics)
SEND_WATCHDOG: Final = web.AppKey("send_watchdog", SendWatchdog)
BODY_SLOTS: Final = web.AppKey("imgproxy.body_slots", BodySlots)
UNTRUSTED_PEERS: Final = web.AppKey("imgproxy.untrusted_peers", UntrustedPeers)  # forward-auth's log
# Set by the cleanup contexts, once started.
SOURCES: Final[web.AppKey[Mapping[str, S3Source]]] = web.AppKey("sources")
READINESS: Final = web.AppKey("readiness", Readiness)
# The caches: this process's, or the host's (hostcache/) when cache.dir is set.
METADATA: Final[web.AppKey[MetadataCaching]] = web.AppKey("metadata")
HOT: Final[web.AppKey[HotCounting]] = web.AppKey("hot")
VARIANT_CACHE: Final[web.AppKey[VariantCaching]] = web.AppKey("variant_cache")
FLIGHT: Final[web.AppKey[Flight]] = web.AppKey("flight")
LEDGER: Final[web.AppKey[Ledger]] = web.AppKey("imgproxy.ledger")  # grant links opened (host's)
LIMITER: Final = web.AppKey("limiter", Limiter)  # [limits]: on the host's table like the caches
VARIANTS: Final = web.AppKey("variants", VariantService)
STORE: Final = web.AppKey("store", VariantStore)  # only with [cache.store]
POLLED: Final = web.AppKey("imgproxy.polled", PolledRevocations)  # only with auth.revocations_url
JWKS: Final = web.AppKey("imgproxy.jwks", JwksCache)  # [auth.oidc] keys, kept across reloads
WEBHOOK: Final = web.AppKey("imgproxy.webhook", WebhookClient)  # [auth.webhook] calls and decisions
METRICS_URL: Final = web.AppKey("metrics_url", str)  # where the metrics endpoint listens

# Per request, set by middleware.observe.
FACTS: Final = web.RequestKey("imgproxy.facts", RequestFacts)
SETTINGS: Final = web.RequestKey("imgproxy.settings", Settings)  # LIVE's, when the request began
SEND_WATCH: Final[web.RequestKey[SendWatch | None]] = web.RequestKey("imgproxy.send_watch")
