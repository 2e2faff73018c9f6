"""Building each section's dataclass from its TOML table, with the checks that span keys."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from imgproxy.config.cors import check_origins
from imgproxy.config.fallback import read_fallback
from imgproxy.config.model import (
    AddressingStyle,
    CacheConfig,
    ConvertFormat,
    DeliveryConfig,
    DeliveryMode,
    LogConfig,
    LogFormat,
    MetricsConfig,
    PresetConfig,
    ResourcePolicy,
    ServerConfig,
    SourceConfig,
    TransformConfig,
)
from imgproxy.config.reader import Table
from imgproxy.config.values import (
    AUTO_FORMATS,
    CONVERTIBLE_FORMATS,
    INPUT_FORMATS,
    MAX_TTL_LIMIT,
    MIN_PRESIGNED_VALIDITY,
    MIN_SIGNING_KEY_BYTES,
    NAME_PATTERN,
    PLUGIN_FORMATS,
    ConfigError,
    check_ca_bundle,
)


def _alternatives(kind: type[StrEnum]) -> str:
    """An enum's values for an error message: ``'a', 'b' or 'c'``."""
    *others, last = (repr(member.value) for member in kind)
    return f"{', '.join(others)} or {last}" if others else last


def read_networks(t: Table, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    networks = t.string_list(key, default)
    for cidr in networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{t.where(key)}: {cidr!r} is not an IP address or CIDR") from None
    return networks


def read_server(t: Table) -> ServerConfig:
    base = ServerConfig()
    public_url = t.string("public_url", base.public_url)
    if public_url and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", public_url, re.ASCII):
        raise ConfigError(f"{t.where('public_url')}: expected an http(s) URL such as https://img.example.com")
    inline = t.string_list("inline_types", base.inline_types)
    for mime in inline:
        if not re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", mime, re.ASCII):
            raise ConfigError(f"{t.where('inline_types')}: {mime!r} is not a media type")
        if mime in ("image/svg+xml", "text/html", "application/xhtml+xml", "text/xml"):
            raise ConfigError(f"{t.where('inline_types')}: {mime} can run scripts; it is never inline")
    credentials = t.boolean("cors_credentials", base.cors_credentials)
    origins = check_origins(t.string_list("cors_origins", base.cors_origins), credentials,
                            t.where("cors_origins"))
    resource_policy = t.optional_string("cross_origin_resource_policy")
    if resource_policy is not None and resource_policy not in tuple(ResourcePolicy):
        raise ConfigError(f"{t.where('cross_origin_resource_policy')}: must be "
                          f"{_alternatives(ResourcePolicy)} (or left out: no header)")
    server = ServerConfig(
        host=t.string("host", base.host),
        port=t.integer("port", base.port, 0, 65535),
        public_url=public_url,
        keepalive_timeout=t.duration("keepalive_timeout", base.keepalive_timeout, 0, 3600),
        shutdown_timeout=t.duration("shutdown_timeout", base.shutdown_timeout, 0, 3600),
        workers=t.integer("workers", base.workers, 0, 256),
        ready_cache_seconds=t.duration("ready_cache_seconds", base.ready_cache_seconds, 0, 3600),
        inline_types=tuple(m.lower() for m in inline),
        log_keys=t.boolean("log_keys", base.log_keys),
        max_query_params=t.integer("max_query_params", base.max_query_params, 4, 256),
        trusted_proxies=read_networks(t, "trusted_proxies", base.trusted_proxies),
        header_timeout=t.duration("header_timeout", base.header_timeout, 0.1, 3600),
        body_timeout=t.duration("body_timeout", base.body_timeout, 0.1, 3600),
        send_timeout=t.duration("send_timeout", base.send_timeout, 0.1, 3600),
        min_send_rate=t.size("min_send_rate", base.min_send_rate, 0, 1 << 30),
        max_connections=t.integer("max_connections", base.max_connections, 1, 1_000_000),
        send_buffer=t.size("send_buffer", base.send_buffer, 0, 64 * 1024 * 1024),
        cors_origins=origins,
        cors_credentials=credentials,
        cors_max_age=t.duration("cors_max_age", base.cors_max_age, 0, 86400),
        cross_origin_resource_policy=None if resource_policy is None else ResourcePolicy(resource_policy),
    )
    t.reject_unknown()
    return server


def read_delivery(t: Table, base: DeliveryConfig) -> DeliveryConfig:
    mode = t.choice("mode", base.mode, f"must be one of {', '.join(DeliveryMode)}")
    status = t.integer("redirect_status", base.redirect_status, 300, 399)
    if status not in (302, 303, 307):
        raise ConfigError(f"{t.where('redirect_status')}: must be 302, 303 or 307")
    accel = t.string("accel_location", base.accel_location)
    if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", accel, re.ASCII):
        raise ConfigError(f"{t.where('accel_location')}: expected an nginx location path like /_imgproxy_s3")
    delivery = DeliveryConfig(
        mode=mode,
        redirect_status=status,
        redirect_min_bytes=t.size("redirect_min_bytes", base.redirect_min_bytes, 0, 1 << 50),
        hot_requests=t.integer("hot_requests", base.hot_requests, 1, 10_000_000),
        hot_window=t.duration("hot_window", base.hot_window, 1, 86400),
        hot_entries=t.integer("hot_entries", base.hot_entries, 1, 10_000_000),
        presign_window=t.duration("presign_window", base.presign_window, 1, MAX_TTL_LIMIT / 2),
        presign_ttl=t.duration("presign_ttl", base.presign_ttl, 2, MAX_TTL_LIMIT),
        accel_location=accel.rstrip("/") or "/",
    )
    if delivery.presign_ttl - delivery.presign_window < MIN_PRESIGNED_VALIDITY:
        raise ConfigError(
            f"{t.where('presign_ttl')}: must exceed presign_window by at least "
            f"{MIN_PRESIGNED_VALIDITY:g}s, so a URL handed out late in a window still works")
    t.reject_unknown()
    return delivery


def read_source(name: str, t: Table, environ: Mapping[str, str], delivery: DeliveryConfig) -> SourceConfig:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{t.path}: source names use letters, digits, '_' and '-' (at most 64)")
    bucket = t.string("bucket", required=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", bucket, re.ASCII):
        raise ConfigError(f"{t.where('bucket')}: {bucket!r} is not a bucket name")
    base = SourceConfig(name=name, bucket=bucket)
    endpoint_url = t.optional_string("endpoint_url")
    if endpoint_url and not re.fullmatch(r"https?://[^/?#\s]+/?", endpoint_url, re.ASCII):
        raise ConfigError(f"{t.where('endpoint_url')}: expected a URL such as https://minio.local:9000")
    style = t.choice("addressing_style", base.addressing_style, f"must be {_alternatives(AddressingStyle)}")
    prefix = t.string("prefix", base.prefix)
    if prefix.startswith("/") or "\\" in prefix or any(s in (".", "..") for s in prefix.split("/")):
        raise ConfigError(f"{t.where('prefix')}: must be a relative key prefix without '.' or '..'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in prefix):
        raise ConfigError(f"{t.where('prefix')}: must not contain control characters")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    access_key = t.secret("access_key_id", environ)
    secret_key = t.secret("secret_access_key", environ)
    if (access_key is None) != (secret_key is None):
        raise ConfigError(f"{t.path}: give both access_key_id and secret_access_key, or neither")
    session_token = t.secret("session_token", environ)
    if session_token is not None and access_key is None:
        raise ConfigError(f"{t.where('session_token')}: needs access_key_id and secret_access_key")
    profile = t.optional_string("profile")
    if profile and access_key is not None:
        raise ConfigError(f"{t.where('profile')}: give explicit keys or a profile, not both")
    ca_bundle, verify_tls = t.optional_string("ca_bundle"), t.boolean("verify_tls", base.verify_tls)
    plain_http = bool(endpoint_url and endpoint_url.startswith("http://"))
    if ca_bundle is not None and not verify_tls:
        raise ConfigError(f"{t.where('verify_tls')}: false turns off the very check ca_bundle is for; "
                          "give one or the other")
    for key, given in (("ca_bundle", ca_bundle is not None), ("verify_tls", not verify_tls)):
        if given and plain_http:
            raise ConfigError(f"{t.where(key)}: endpoint_url is http://, there is no certificate to check")
    if ca_bundle is not None:
        check_ca_bundle(ca_bundle, t.where("ca_bundle"))
    cache_control = t.string("cache_control", base.cache_control)
    if not cache_control or any(ord(c) < 0x20 for c in cache_control):
        raise ConfigError(f"{t.where('cache_control')}: expected a Cache-Control header value")
    convert = tuple(f.upper() for f in t.string_list("convert_originals", base.convert_originals))
    for fmt in convert:
        if fmt not in CONVERTIBLE_FORMATS:
            raise ConfigError(f"{t.where('convert_originals')}: {fmt!r} is not one of "
                              f"{', '.join(CONVERTIBLE_FORMATS)}")
    source = SourceConfig(
        name=name,
        bucket=bucket,
        region=t.string("region", base.region),
        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
        addressing_style=style,
        prefix=prefix,
        access_key_id=access_key,
        secret_access_key=secret_key,
        session_token=session_token,
        profile=profile,
        cache_control=cache_control,
        connect_timeout=t.duration("connect_timeout", base.connect_timeout, 0.05, 300),
        read_timeout=t.duration("read_timeout", base.read_timeout, 0.05, 3600),
        max_connections=t.integer("max_connections", base.max_connections, 1, 1024),
        pool_timeout=t.duration("pool_timeout", base.pool_timeout, 0.01, 60),
        max_attempts=t.integer("max_attempts", base.max_attempts, 1, 10),
        ca_bundle=ca_bundle,
        verify_tls=verify_tls,
        delivery=read_delivery(t.table("delivery"), delivery),
        fallback=read_fallback(t.table("fallback")),
        convert_originals=convert,
        convert_format=t.choice("convert_format", base.convert_format,
                                f"must be {_alternatives(ConvertFormat)}"),
    )
    t.reject_unknown()
    return source


# A source's keys about serving originals, which the variant store and the revocation object lack.
SERVING_KEYS: Final = ("cache_control", "delivery", "fallback", "convert_originals", "convert_format")


def is_installed(modules: tuple[str, ...]) -> bool:
    """Whether every one of ``modules`` can be found, without importing any (the serving process
    never loads an image decoder; the workers do)."""
    return all(importlib.util.find_spec(module) is not None for module in modules)


PRESET_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
MAX_PRESETS: Final = 256


def read_preset(name: str, t: Table) -> PresetConfig:
    """One ``[transform.presets.NAME]``: its params in a URL's spelling (``w = 96`` -> ``"96"``,
    ``dpr = 1.5`` -> ``"1.5"``). Which names and values are valid is the transform parser's to
    say (``transform.presets.build_presets``, run where the settings are built and on reload)."""
    if not PRESET_NAME.fullmatch(name):
        raise ConfigError(f"{t.path}: preset names use letters, digits, '_' and '-' (at most 64)")
    allow = t.string_list("allow_override", ())
    params: dict[str, str] = {}
    for key, value in t.data.items():
        if key == "allow_override":
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ConfigError(f"{t.where(key)}: expected a string or a number, as in a URL")
        params[key] = f"{value:g}" if isinstance(value, float) else str(value)
    if not params:
        raise ConfigError(f"{t.path}: a preset sets at least one transform parameter (w, h, ...)")
    return PresetConfig(name=name, params=MappingProxyType(params), allow_override=allow)


def read_transform(t: Table) -> TransformConfig:
    base = TransformConfig()
    formats = tuple(f.upper() for f in t.string_list("input_formats", base.input_formats))
    for fmt in formats:
        if fmt not in INPUT_FORMATS:
            raise ConfigError(f"{t.where('input_formats')}: {fmt!r} is not one of {', '.join(INPUT_FORMATS)}")
        if fmt in PLUGIN_FORMATS and not is_installed(PLUGIN_FORMATS[fmt][0]):
            (module, *_), extra = PLUGIN_FORMATS[fmt]
            raise ConfigError(f"{t.where('input_formats')}: {fmt} needs the {extra} extra ({module}), "
                              f"which is not installed: pip install 'imgproxy-s3[{extra}]'")
    prefer = tuple(f.lower() for f in t.string_list("auto_prefer", base.auto_prefer))
    for fmt in prefer:
        if fmt not in AUTO_FORMATS:
            raise ConfigError(f"{t.where('auto_prefer')}: {fmt!r} is not one of {', '.join(AUTO_FORMATS)}")
    if len(set(prefer)) != len(prefer):
        raise ConfigError(f"{t.where('auto_prefer')}: a format is listed twice")
    presets = t.table("presets")
    if len(presets.data) > MAX_PRESETS:
        raise ConfigError(f"{presets.path}: at most {MAX_PRESETS} presets")
    transform = TransformConfig(
        enabled=t.boolean("enabled", base.enabled),
        workers=t.integer("workers", base.workers, 0, 256),
        prestart_workers=t.boolean("prestart_workers", base.prestart_workers),
        queue_size=t.integer("queue_size", base.queue_size, 0, 100_000),
        timeout=t.duration("timeout", base.timeout, 0.1, 600),
        max_width=t.integer("max_width", base.max_width, 1, 16384),
        max_height=t.integer("max_height", base.max_height, 1, 16384),
        max_source_bytes=t.size("max_source_bytes", base.max_source_bytes, 1024, 1024**3),
        max_source_pixels=t.integer("max_source_pixels", base.max_source_pixels, 1, 1_000_000_000),
        input_formats=formats,
        jpeg_quality=t.integer("jpeg_quality", base.jpeg_quality, 1, 100),
        webp_quality=t.integer("webp_quality", base.webp_quality, 1, 100),
        avif_quality=t.integer("avif_quality", base.avif_quality, 1, 100),
        auto_prefer=prefer,
        png_compress_level=t.integer("png_compress_level", base.png_compress_level, 0, 9),
        presets=MappingProxyType({name: read_preset(name, presets.table(name)) for name in presets.data}),
    )
    t.reject_unknown()
    return transform


def read_store(t: Table, environ: Mapping[str, str]) -> SourceConfig | None:
    """``[cache.store]``: the same keys as a source (bucket, endpoint, credentials, timeouts),
    minus what only concerns serving originals."""
    if not t.data:
        return None
    for key in SERVING_KEYS:
        if key in t.data:
            raise ConfigError(f"{t.where(key)}: only for sources, not the variant store")
    return read_source("store", t, environ, DeliveryConfig())


def read_revocations_s3(t: Table, environ: Mapping[str, str], bucket: str) -> SourceConfig:
    """``[auth.revocations_s3]``: how to reach the polled revocation object, keyed like a source
    (endpoint, region, credentials, timeouts); its bucket and key come from the URL."""
    for key in ("bucket", "prefix"):
        if key in t.data:
            raise ConfigError(f"{t.where(key)}: the bucket and key come from auth.revocations_url")
    for key in SERVING_KEYS:
        if key in t.data:
            raise ConfigError(f"{t.where(key)}: only for sources, not the revocation object")
    return read_source("revocations", Table({**t.data, "bucket": bucket}, t.path), environ, DeliveryConfig())


def _cache_dir(t: Table) -> str | None:
    """``cache.dir``: an absolute path (created 0700 at start-up if missing), or unset."""
    if t.raw("dir") is None:
        return None
    path = t.string("dir")
    if not path.startswith("/") or "\0" in path or any(part == ".." for part in path.split("/")):
        raise ConfigError(f"{t.where('dir')}: expected an absolute path without '..', such as "
                          "\"/run/imgproxy/cache\"")
    if path.rstrip("/") == "":
        raise ConfigError(f"{t.where('dir')}: not the root directory")
    return path


def read_cache(t: Table, environ: Mapping[str, str]) -> CacheConfig:
    base = CacheConfig()
    cache = CacheConfig(
        variant_bytes=t.size("variant_bytes", base.variant_bytes, 0, 64 * 1024**3),
        dir=_cache_dir(t),
        metadata_ttl=t.duration("metadata_ttl", base.metadata_ttl, 0, 86400),
        metadata_entries=t.integer("metadata_entries", base.metadata_entries, 1, 10_000_000),
        store=read_store(t.table("store"), environ),
        store_pending_writes=t.integer("store_pending_writes", base.store_pending_writes, 1, 100_000),
    )
    t.reject_unknown()
    return cache


def read_metrics(t: Table) -> MetricsConfig:
    base = MetricsConfig()
    metrics = MetricsConfig(
        enabled=t.boolean("enabled", base.enabled),
        host=t.string("host", base.host),
        port=t.integer("port", base.port, 0, 65535),
    )
    t.reject_unknown()
    return metrics


def read_log(t: Table, environ: Mapping[str, str]) -> LogConfig:
    fmt = t.choice("format", LogConfig().format, f"must be {_alternatives(LogFormat)}")
    secret = t.secret("key_hash_secret", environ)
    if secret is not None and len(secret.reveal().encode()) < MIN_SIGNING_KEY_BYTES:
        raise ConfigError(f"{t.where('key_hash_secret')}: must be at least {MIN_SIGNING_KEY_BYTES} bytes")
    t.reject_unknown()
    return LogConfig(format=fmt, key_hash_secret=secret)
