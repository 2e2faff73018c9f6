"""Configuration: TOML (or its environment stand-ins) -> frozen, validated, typed dataclasses.

This is the only module that reads files or the environment. Every problem is a ``ConfigError``
whose text names the key path (``sources.photos.prefix: must not contain '..'``), so the CLI can
print one line and exit. Secrets are ``Secret`` values: masked in ``repr``/``str``, revealed only
where they are used.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

CONFIG_PATH_ENV: Final = "IMGPROXY_CONFIG"
CONFIG_TOML_ENV: Final = "IMGPROXY_CONFIG_TOML"
MIN_SIGNING_KEY_BYTES: Final = 32
MIN_TOKEN_BYTES: Final = 32
MAX_TTL_LIMIT: Final = 7 * 24 * 3600  # S3 presigned URLs cannot outlive seven days either
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
DEFAULT_INLINE_TYPES: Final = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
    "image/x-icon",
    "image/vnd.microsoft.icon",
)
_SIZE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS: Final = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2,
                      "GB": 1000**3, "GiB": 1024**3}
INPUT_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF")
DEFAULT_INPUT_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "AVIF")
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ConfigError(Exception):
    """A configuration problem, worded for one line of output: ``key.path: what is wrong``."""


class Secret:
    """A secret string whose ``repr`` and ``str`` are masked; ``reveal()`` at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration such as 30, \"30s\", \"5m\" or \"1h\"")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ConfigError(f"{where}: expected a duration such as 30, \"30s\", \"5m\" or \"1h\"")
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{where}: must be a finite, non-negative duration")
    return seconds


def parse_size(value: object, where: str) -> int:
    """Bytes from a whole number or a string like ``"512KiB"``, ``"40MB"``, ``"1GiB"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size such as 1048576, \"512KiB\" or \"40MiB\"")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "B"])
    else:
        raise ConfigError(f"{where}: expected a size such as 1048576, \"512KiB\" or \"40MiB\"")
    if size < 0:
        raise ConfigError(f"{where}: must not be negative")
    return size


@dataclass(frozen=True, slots=True)
class Scope:
    """What a bearer token may read: one source (or ``*``) and a key prefix or exact key."""

    source: str
    key: str
    is_prefix: bool

    @classmethod
    def parse(cls, text: str, where: str) -> Scope:
        source, sep, key = text.partition(":")
        if not sep:
            key = "*"
        if source != "*" and not NAME_PATTERN.fullmatch(source):
            raise ConfigError(f"{where}: {text!r} must look like 'SOURCE:PREFIX*' or '*'")
        if not key:
            raise ConfigError(f"{where}: {text!r} names no key; use '{source}:*' for the whole source")
        if "*" in key[:-1]:
            raise ConfigError(f"{where}: {text!r} may hold '*' only at the end")
        is_prefix = key.endswith("*")
        return cls(source=source, key=key[:-1] if is_prefix else key, is_prefix=is_prefix)

    def allows(self, source: str, key: str) -> bool:
        if self.source not in ("*", source):
            return False
        return key.startswith(self.key) if self.is_prefix else key == self.key


@dataclass(frozen=True, slots=True)
class TokenConfig:
    name: str
    token: Secret
    scopes: tuple[Scope, ...]
    sign_scopes: tuple[Scope, ...] = ()  # what POST /sign may sign with this token


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    keepalive_timeout: float = 75.0
    shutdown_timeout: float = 30.0
    ready_cache_seconds: float = 5.0
    inline_types: tuple[str, ...] = DEFAULT_INLINE_TYPES
    log_keys: bool = False
    max_query_params: int = 32
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For/-Proto are believed

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class AuthConfig:
    keys: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))
    sign_with: str = ""
    max_ttl: float = 7 * 24 * 3600.0
    clock_skew: float = 60.0
    tokens: tuple[TokenConfig, ...] = ()
    url_window: float = 0.0  # >0: signed proxy URLs' exp rounds up to a multiple of this
    sign_max_items: int = 500
    sign_ttl: float = 3600.0


DELIVERY_MODES: Final = ("stream", "redirect", "auto", "accel")


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How originals reach the client; ``[delivery]`` with ``[sources.NAME.delivery]`` overrides."""

    mode: str = "auto"
    redirect_status: int = 302
    redirect_min_bytes: int = 8 * 1024 * 1024
    hot_requests: int = 50
    hot_window: float = 60.0
    hot_entries: int = 100_000
    presign_window: float = 3600.0
    presign_ttl: float = 2 * 3600.0
    accel_location: str = "/_imgproxy_s3"


@dataclass(frozen=True, slots=True)
class SourceConfig:
    name: str
    bucket: str
    region: str = "us-east-1"
    endpoint_url: str | None = None
    addressing_style: str = "auto"
    prefix: str = ""
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None
    cache_control: str = "private, max-age=3600"
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_connections: int = 32
    max_attempts: int = 2
    delivery: DeliveryConfig = DeliveryConfig()


@dataclass(frozen=True, slots=True)
class TransformConfig:
    enabled: bool = True
    workers: int = 0  # 0: one per CPU
    prestart_workers: bool = True
    queue_size: int = 32
    timeout: float = 10.0
    max_width: int = 4096
    max_height: int = 4096
    max_source_bytes: int = 40 * 1024 * 1024
    max_source_pixels: int = 50_000_000
    input_formats: tuple[str, ...] = DEFAULT_INPUT_FORMATS
    jpeg_quality: int = 82
    webp_quality: int = 80
    avif_quality: int = 60
    png_compress_level: int = 6


@dataclass(frozen=True, slots=True)
class CacheConfig:
    variant_bytes: int = 256 * 1024 * 1024  # 0 disables the variant cache
    metadata_ttl: float = 30.0
    metadata_entries: int = 100_000


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    auth: AuthConfig
    sources: Mapping[str, SourceConfig]
    transform: TransformConfig = TransformConfig()
    cache: CacheConfig = CacheConfig()


class _Table:
    """A TOML table being read: typed getters that name the key path, and unknown-key checks."""

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a table")
        self.data: dict[str, Any] = data
        self.path = path
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str) -> object:
        self.seen.add(key)
        return self.data.get(key)

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str:
        value = self.raw(key)
        if value is None:
            if required or default is None:
                raise ConfigError(f"{self.where(key)}: is required")
            return default
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self.raw(key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{self.where(key)}: expected a string")
        return value or None

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{self.where(key)}: expected a whole number")
        if not low <= value <= high:
            raise ConfigError(f"{self.where(key)}: must be between {low} and {high}")
        return value

    def size(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        size = parse_size(value, self.where(key))
        if not low <= size <= high:
            raise ConfigError(f"{self.where(key)}: must be between {low} and {high} bytes")
        return size

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(f"{self.where(key)}: expected true or false")
        return value

    def duration(self, key: str, default: float, low: float = 0.0, high: float = 1e9) -> float:
        value = self.raw(key)
        if value is None:
            return default
        seconds = parse_duration(value, self.where(key))
        if not low <= seconds <= high:
            raise ConfigError(f"{self.where(key)}: must be between {low:g}s and {high:g}s")
        return seconds

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{self.where(key)}: expected a list of strings")
        return tuple(value)

    def secret(self, key: str, environ: Mapping[str, str], *, required: bool = False) -> Secret | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise ConfigError(f"{self.where(key)}: is required")
            return None
        return resolve_secret(value, self.where(key), environ)

    def table(self, key: str) -> _Table:
        value = self.raw(key)
        return _Table({} if value is None else value, self.where(key))

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise ConfigError(f"{self.where(unknown[0])}: unknown key")


def resolve_secret(value: object, where: str, environ: Mapping[str, str]) -> Secret:
    """A literal string, or ``env:VAR_NAME`` read from the environment."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string or 'env:VAR_NAME'")
    if value.startswith("env:"):
        var = value[4:]
        if not var:
            raise ConfigError(f"{where}: 'env:' needs a variable name")
        if var not in environ:
            raise ConfigError(f"{where}: environment variable {var} is not set")
        if not environ[var]:
            raise ConfigError(f"{where}: environment variable {var} is empty")
        return Secret(environ[var])
    return Secret(value)


def _networks(t: _Table, key: str) -> tuple[str, ...]:
    networks = t.string_list(key, ())
    for cidr in networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{t.where(key)}: {cidr!r} is not an IP address or CIDR") from None
    return networks


def _server(t: _Table) -> ServerConfig:
    public_url = t.string("public_url", "")
    if public_url and not re.fullmatch(r"https?://[^/?#\s]+(/[^?#\s]*)?", public_url, re.ASCII):
        raise ConfigError(f"{t.where('public_url')}: expected an http(s) URL such as https://img.example.com")
    inline = t.string_list("inline_types", DEFAULT_INLINE_TYPES)
    for mime in inline:
        if not re.fullmatch(r"[a-z0-9.+-]+/[a-z0-9.+-]+", mime, re.ASCII):
            raise ConfigError(f"{t.where('inline_types')}: {mime!r} is not a media type")
        if mime in ("image/svg+xml", "text/html", "application/xhtml+xml", "text/xml"):
            raise ConfigError(f"{t.where('inline_types')}: {mime} can run scripts; it is never inline")
    server = ServerConfig(
        host=t.string("host", "127.0.0.1"),
        port=t.integer("port", 8080, 0, 65535),
        public_url=public_url,
        keepalive_timeout=t.duration("keepalive_timeout", 75.0, 0, 3600),
        shutdown_timeout=t.duration("shutdown_timeout", 30.0, 0, 3600),
        ready_cache_seconds=t.duration("ready_cache_seconds", 5.0, 0, 3600),
        inline_types=tuple(m.lower() for m in inline),
        log_keys=t.boolean("log_keys", False),
        max_query_params=t.integer("max_query_params", 32, 4, 256),
        trusted_proxies=_networks(t, "trusted_proxies"),
    )
    t.reject_unknown()
    return server


def _auth(t: _Table, environ: Mapping[str, str]) -> AuthConfig:
    keys_table = t.table("keys")
    keys: dict[str, Secret] = {}
    for kid in keys_table.data:
        if not NAME_PATTERN.fullmatch(kid):
            raise ConfigError(f"{keys_table.where(kid)}: key ids use letters, digits, '_' and '-'")
        secret = keys_table.secret(kid, environ, required=True)
        assert secret is not None
        if len(secret.reveal().encode()) < MIN_SIGNING_KEY_BYTES:
            raise ConfigError(
                f"{keys_table.where(kid)}: signing keys must be at least {MIN_SIGNING_KEY_BYTES} bytes"
            )
        keys[kid] = secret
    sign_with = t.string("sign_with", next(iter(keys), ""))
    if keys and sign_with not in keys:
        raise ConfigError(f"{t.where('sign_with')}: {sign_with!r} is not a key in auth.keys")

    tokens_table = t.table("tokens")
    tokens: list[TokenConfig] = []
    for name in tokens_table.data:
        if not NAME_PATTERN.fullmatch(name):
            raise ConfigError(f"{tokens_table.where(name)}: token names use letters, digits, '_' and '-'")
        tt = tokens_table.table(name)
        token = tt.secret("token", environ, required=True)
        assert token is not None
        if len(token.reveal().encode()) < MIN_TOKEN_BYTES:
            raise ConfigError(f"{tt.where('token')}: tokens must be at least {MIN_TOKEN_BYTES} bytes")
        scopes = tt.string_list("scopes", ())
        sign_scopes = tt.string_list("sign_scopes", ())
        if not scopes and not sign_scopes:
            raise ConfigError(f"{tt.where('scopes')}: list at least one scope, e.g. 'photos:employees/*'")
        tokens.append(
            TokenConfig(
                name=name,
                token=token,
                scopes=tuple(Scope.parse(s, tt.where("scopes")) for s in scopes),
                sign_scopes=tuple(Scope.parse(s, tt.where("sign_scopes")) for s in sign_scopes),
            )
        )
        tt.reject_unknown()
    if len({tok.token for tok in tokens}) != len(tokens):
        raise ConfigError(f"{tokens_table.path}: two tokens share the same secret")

    auth = AuthConfig(
        keys=MappingProxyType(keys),
        sign_with=sign_with,
        max_ttl=t.duration("max_ttl", 7 * 24 * 3600.0, 1, MAX_TTL_LIMIT),
        clock_skew=t.duration("clock_skew", 60.0, 0, 3600),
        tokens=tuple(tokens),
        url_window=t.duration("url_window", 0.0, 0, 86400),
        sign_max_items=t.integer("sign_max_items", 500, 1, 10_000),
        sign_ttl=t.duration("sign_ttl", 3600.0, 1, MAX_TTL_LIMIT),
    )
    if auth.sign_ttl + auth.url_window > auth.max_ttl:
        raise ConfigError(f"{t.where('sign_ttl')}: sign_ttl + url_window must not exceed max_ttl "
                          "(the server would refuse the URLs it signs)")
    t.reject_unknown()
    return auth


MIN_PRESIGNED_VALIDITY: Final = 60.0


def _delivery(t: _Table, base: DeliveryConfig) -> DeliveryConfig:
    mode = t.string("mode", base.mode)
    if mode not in DELIVERY_MODES:
        raise ConfigError(f"{t.where('mode')}: must be one of {', '.join(DELIVERY_MODES)}")
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


def _source(name: str, t: _Table, environ: Mapping[str, str], delivery: DeliveryConfig) -> SourceConfig:
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{t.path}: source names use letters, digits, '_' and '-' (at most 64)")
    bucket = t.string("bucket", required=True)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", bucket, re.ASCII):
        raise ConfigError(f"{t.where('bucket')}: {bucket!r} is not a bucket name")
    endpoint_url = t.optional_string("endpoint_url")
    if endpoint_url and not re.fullmatch(r"https?://[^/?#\s]+/?", endpoint_url, re.ASCII):
        raise ConfigError(f"{t.where('endpoint_url')}: expected a URL such as https://minio.local:9000")
    style = t.string("addressing_style", "auto")
    if style not in ("auto", "path", "virtual"):
        raise ConfigError(f"{t.where('addressing_style')}: must be 'auto', 'path' or 'virtual'")
    prefix = t.string("prefix", "")
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
    cache_control = t.string("cache_control", "private, max-age=3600")
    if not cache_control or any(ord(c) < 0x20 for c in cache_control):
        raise ConfigError(f"{t.where('cache_control')}: expected a Cache-Control header value")
    source = SourceConfig(
        name=name,
        bucket=bucket,
        region=t.string("region", "us-east-1"),
        endpoint_url=endpoint_url.rstrip("/") if endpoint_url else None,
        addressing_style=style,
        prefix=prefix,
        access_key_id=access_key,
        secret_access_key=secret_key,
        session_token=session_token,
        profile=profile,
        cache_control=cache_control,
        connect_timeout=t.duration("connect_timeout", 3.0, 0.05, 300),
        read_timeout=t.duration("read_timeout", 10.0, 0.05, 3600),
        max_connections=t.integer("max_connections", 32, 1, 1024),
        max_attempts=t.integer("max_attempts", 2, 1, 10),
        delivery=_delivery(t.table("delivery"), delivery),
    )
    t.reject_unknown()
    return source


def _transform(t: _Table) -> TransformConfig:
    formats = tuple(f.upper() for f in t.string_list("input_formats", DEFAULT_INPUT_FORMATS))
    for fmt in formats:
        if fmt not in INPUT_FORMATS:
            raise ConfigError(f"{t.where('input_formats')}: {fmt!r} is not one of {', '.join(INPUT_FORMATS)}")
    transform = TransformConfig(
        enabled=t.boolean("enabled", True),
        workers=t.integer("workers", 0, 0, 256),
        prestart_workers=t.boolean("prestart_workers", True),
        queue_size=t.integer("queue_size", 32, 0, 100_000),
        timeout=t.duration("timeout", 10.0, 0.1, 600),
        max_width=t.integer("max_width", 4096, 1, 16384),
        max_height=t.integer("max_height", 4096, 1, 16384),
        max_source_bytes=t.size("max_source_bytes", 40 * 1024 * 1024, 1024, 1024**3),
        max_source_pixels=t.integer("max_source_pixels", 50_000_000, 1, 1_000_000_000),
        input_formats=formats,
        jpeg_quality=t.integer("jpeg_quality", 82, 1, 100),
        webp_quality=t.integer("webp_quality", 80, 1, 100),
        avif_quality=t.integer("avif_quality", 60, 1, 100),
        png_compress_level=t.integer("png_compress_level", 6, 0, 9),
    )
    t.reject_unknown()
    return transform


def _cache(t: _Table) -> CacheConfig:
    cache = CacheConfig(
        variant_bytes=t.size("variant_bytes", 256 * 1024 * 1024, 0, 64 * 1024**3),
        metadata_ttl=t.duration("metadata_ttl", 30.0, 0, 86400),
        metadata_entries=t.integer("metadata_entries", 100_000, 1, 10_000_000),
    )
    t.reject_unknown()
    return cache


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate a ``Config`` from parsed TOML data."""
    env = os.environ if environ is None else environ
    root = _Table(dict(data), "")
    server = _server(root.table("server"))
    auth = _auth(root.table("auth"), env)
    sources_table = root.table("sources")
    delivery = _delivery(root.table("delivery"), DeliveryConfig())
    sources = {name: _source(name, sources_table.table(name), env, delivery)
               for name in sources_table.data}
    if not sources:
        raise ConfigError("sources: define at least one [sources.NAME] table")
    if not auth.keys and not auth.tokens:
        raise ConfigError("auth: define at least one signing key (auth.keys) or bearer token (auth.tokens)")
    transform = _transform(root.table("transform"))
    cache = _cache(root.table("cache"))
    root.reject_unknown()
    return Config(server=server, auth=auth, sources=MappingProxyType(sources), transform=transform,
                  cache=cache)


def load_config(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the config from ``path``, else ``$IMGPROXY_CONFIG_TOML``, else ``$IMGPROXY_CONFIG``.

    The TOML text beats the path variable, which is often a baked-in default (the Docker image's
    ``/etc/imgproxy/config.toml``) that a ``-e IMGPROXY_CONFIG_TOML=…`` must be able to replace.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_PATH_ENV) and not env.get(CONFIG_TOML_ENV):
        path = env[CONFIG_PATH_ENV]
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{os.fspath(path)}: no such config file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{os.fspath(path)}: cannot read: {exc.__class__.__name__}") from None
        origin = os.fspath(path)
    elif env.get(CONFIG_TOML_ENV):
        text, origin = env[CONFIG_TOML_ENV], f"${CONFIG_TOML_ENV}"
    else:
        raise ConfigError(f"config: give --config PATH, or set {CONFIG_PATH_ENV} or {CONFIG_TOML_ENV}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}") from None
    return parse_config(data, env)
