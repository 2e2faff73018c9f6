"""The typed ``web.AppKey`` constants under which the application keeps its state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from aiohttp import web

from imgproxy.auth.principal import AuthPolicy
from imgproxy.cache import HotCounter, MetadataCache
from imgproxy.config import Config
from imgproxy.storage.s3 import S3Source
from imgproxy.storage.variant_store import VariantStore
from imgproxy.transform.policy import TransformPolicy
from imgproxy.transform.variants import VariantService
from imgproxy.web.health import Readiness

CONFIG: Final = web.AppKey("config", Config)
AUTH: Final = web.AppKey("auth", AuthPolicy)
CLOCK: Final[web.AppKey[Callable[[], float]]] = web.AppKey("clock")
SOURCES: Final[web.AppKey[Mapping[str, S3Source]]] = web.AppKey("sources")
READINESS: Final = web.AppKey("readiness", Readiness)
TRANSFORMS: Final = web.AppKey("transforms", TransformPolicy)
VARIANTS: Final = web.AppKey("variants", VariantService)
METADATA: Final = web.AppKey("metadata", MetadataCache)
HOT: Final = web.AppKey("hot", HotCounter)
STORE: Final = web.AppKey("store", VariantStore)  # only with [cache.store]
