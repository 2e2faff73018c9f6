"""What a reload cannot change in a running server: the keys fixed at start-up, and the config in
force after a reload (the new one, with those keys as they were).

Pure. The keys listed here size or open something once (sockets, the connection limits, the
image workers, the caches, the S3 clients, the metrics address); every other key is read per
request and takes effect for the requests that start after the reload. A source's serving
settings (``cache_control``, ``[sources.NAME.delivery]``, ``[sources.NAME.fallback]``,
``convert_originals``, ``convert_format``) reload;
its connection (bucket, prefix, endpoint, credentials, timeouts, pool) does not, nor does
adding or removing a source: its S3 clients are opened once and requests in flight hold them.
Nor do ``hot_entries`` and ``hot_window``: they size the hot counters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeVar

from imgproxy.config.model import Config, SourceConfig

T = TypeVar("T")

# Per section: the fields that need a restart ("*": every one).
FIXED: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "server": ("host", "port", "workers", "keepalive_timeout", "shutdown_timeout", "header_timeout",
               "max_connections", "send_buffer", "send_timeout", "min_send_rate",
               "ready_cache_seconds"),
    "auth": ("sign_max_bytes", "revocations_url", "revocations_s3"),
    "transform": ("workers", "prestart_workers", "queue_size", "timeout", "max_source_pixels"),
    "cache": ("*",),
    "metrics": ("*",),
    "log": ("format",),
    "limits": ("entries",),  # sizes the buckets' store; the rates reload
})
# A source's fields that reload; the others are its connection.
SOURCE_SERVING: Final = ("cache_control", "delivery", "fallback", "convert_originals", "convert_format")
# Within its delivery settings, those that size the hot counters (one per process, made at start).
DELIVERY_FIXED: Final = ("hot_entries", "hot_window")


def _fixed_fields(section: str, value: object) -> tuple[str, ...]:
    names = FIXED.get(section, ())
    return tuple(f.name for f in dataclasses.fields(value)) if names == ("*",) else names  # type: ignore[arg-type]


def _keep(old: T, new: T, names: tuple[str, ...], where: str) -> tuple[T, list[str]]:
    """``new`` with ``names`` as in ``old``; and the key paths among them that differ."""
    changed = [f"{where}.{name}" for name in names if getattr(old, name) != getattr(new, name)]
    return dataclasses.replace(new, **{name: getattr(old, name) for name in names}), changed  # type: ignore[type-var]


def _sources(old: Mapping[str, SourceConfig], new: Mapping[str, SourceConfig]
             ) -> tuple[Mapping[str, SourceConfig], list[str]]:
    if old.keys() != new.keys():
        return old, [f"sources.{name}" for name in sorted(old.keys() ^ new.keys())]
    kept: dict[str, SourceConfig] = {}
    changed: list[str] = []
    for name, source in old.items():
        connection = tuple(f.name for f in dataclasses.fields(source) if f.name not in SOURCE_SERVING)
        delivery, differ = _keep(source.delivery, new[name].delivery, DELIVERY_FIXED,
                                 f"sources.{name}.delivery")
        changed += differ
        kept[name], differ = _keep(source, dataclasses.replace(new[name], delivery=delivery), connection,
                                   f"sources.{name}")
        changed += differ
    return MappingProxyType(kept), changed


def apply_reload(running: Config, loaded: Config) -> tuple[Config, tuple[str, ...]]:
    """The config in force after reloading ``loaded`` into a server running ``running``, and the
    keys whose change waits for a restart (empty: everything took effect)."""
    changed: list[str] = []
    sections: dict[str, object] = {}
    for section in FIXED:
        old, new = getattr(running, section), getattr(loaded, section)
        sections[section], differ = _keep(old, new, _fixed_fields(section, old), section)
        changed += differ
    sources, differ = _sources(running.sources, loaded.sources)
    changed += differ
    return dataclasses.replace(loaded, sources=sources, **sections), tuple(changed)  # type: ignore[arg-type]
