"""The configuration as frozen, typed dataclasses: one per TOML section, defaults beside fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from imgproxy.config.fallback import FallbackConfig
from imgproxy.config.values import (
    DEFAULT_INLINE_TYPES,
    DEFAULT_INPUT_FORMATS,
    MAX_TTL_LIMIT,
    NAME_PATTERN,
    ConfigError,
    Secret,
)

if TYPE_CHECKING:
    from imgproxy.config.forward import ForwardConfig
    from imgproxy.config.grants import GrantsConfig
    from imgproxy.config.oidc import OidcConfig
    from imgproxy.config.webhook import WebhookConfig


class DeliveryMode(StrEnum):
    """``delivery.mode``: how originals reach the client; ``auto`` chooses per request."""

    STREAM = "stream"  # always through the proxy
    REDIRECT = "redirect"  # always a presigned S3 URL
    AUTO = "auto"  # redirect large or hot objects, stream the rest
    ACCEL = "accel"  # X-Accel-Redirect to an nginx internal location


DELIVERY_MODES: Final = tuple(DeliveryMode)


class AddressingStyle(StrEnum):
    """``sources.NAME.addressing_style``: the bucket in the path or in the host name."""

    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"


class ConvertFormat(StrEnum):
    """``sources.NAME.convert_format``: what a converted original (``convert_originals``) becomes."""

    JPEG = "jpeg"
    AUTO = "auto"  # as fmt=auto chooses from Accept (with Vary: Accept)


class ResourcePolicy(StrEnum):
    """``server.cross_origin_resource_policy``: who may embed the proxy's answers (no-cors)."""

    SAME_ORIGIN = "same-origin"
    SAME_SITE = "same-site"
    CROSS_ORIGIN = "cross-origin"


class LogFormat(StrEnum):
    """``log.format``: how the access log line is written."""

    LOGFMT = "logfmt"
    JSON = "json"


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

    @property
    def text(self) -> str:
        """As written in config: ``source:key`` with a trailing ``*`` for a prefix."""
        return f"{self.source}:{self.key}{'*' if self.is_prefix else ''}"

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
    presets_only: bool = False  # its requests, grants and /sign items: transforms by preset only


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    keepalive_timeout: float = 75.0
    shutdown_timeout: float = 30.0
    workers: int = 0  # serving processes on one port; 0: one per CPU, 1: no supervisor
    ready_cache_seconds: float = 5.0
    inline_types: tuple[str, ...] = DEFAULT_INLINE_TYPES
    log_keys: bool = False
    max_query_params: int = 32
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For/-Proto are believed
    # Hostile clients: how long a request may take to arrive, how slowly an answer may leave.
    header_timeout: float = 10.0  # a request head must be complete this long after it began
    body_timeout: float = 30.0  # a request body (POST /sign) must be complete within this
    send_timeout: float = 30.0  # an answer whose client accepts no byte for this long is cut
    min_send_rate: int = 1024  # bytes/s over each send_timeout while bytes wait; 0: no minimum
    max_connections: int = 1024  # per serving process; beyond it the oldest idle one is closed
    send_buffer: int = 0  # SO_SNDBUF of client sockets (kernel memory per connection); 0: kernel's
    # CORS (protocol/cors.py): exact origins as browsers send them, or "*" alone (no credentials).
    cors_origins: tuple[str, ...] = ()
    cors_credentials: bool = False  # Access-Control-Allow-Credentials: true (for cookie grants)
    cors_max_age: float = 600.0  # how long a browser may reuse a preflight's answer
    cross_origin_resource_policy: ResourcePolicy | None = None  # None: no such header

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """What URLs signed with one key may do (``[auth.keys.NAME]`` as a table)."""

    scopes: tuple[Scope, ...] = ()  # () : every source and key
    max_ttl: float = float(MAX_TTL_LIMIT)  # at most auth.max_ttl
    durable: bool = False  # may sign URLs without exp (they carry iat)
    presets_only: bool = False  # its URLs may transform only by preset= (no w, h, fmt, ...)

    def allows(self, source: str, key: str) -> bool:
        return not self.scopes or any(scope.allows(source, key) for scope in self.scopes)


@dataclass(frozen=True, slots=True)
class Revocation:
    """One entry of ``auth.revocations`` (or of the polled revocation object). ``kind``:
    ``kid``/``sub`` (``value``'s URLs issued before ``before``), ``scope`` (every signed URL for
    a path inside ``scope``), ``sig`` (one exact URL signature, ``value``)."""

    kind: str
    value: str = field(default="", repr=False)  # a signature is a credential's part: not shown
    before: float | None = None
    scope: Scope | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    keys: Mapping[str, Secret] = field(default_factory=lambda: MappingProxyType({}))
    key_limits: Mapping[str, KeyLimits] = field(default_factory=lambda: MappingProxyType({}))
    sign_with: str = ""
    max_ttl: float = float(MAX_TTL_LIMIT)
    clock_skew: float = 60.0
    tokens: tuple[TokenConfig, ...] = ()
    url_window: float = 0.0  # >0: signed proxy URLs' exp rounds up to a multiple of this
    sign_max_items: int = 500
    sign_ttl: float = 3600.0
    sign_max_bytes: int = 1024 * 1024  # POST /sign bodies larger than this are 413
    # Responses to durable URLs (no exp) are cached at most this long, presigned redirects included.
    durable_max_age: float = 3600.0
    revocations: tuple[Revocation, ...] = ()
    # An S3 object of revocations every replica polls ("s3://bucket/key"), read with
    # revocations_s3's connection settings (configured like a source; bucket from the URL).
    revocations_url: str | None = None
    revocations_s3: SourceConfig | None = None
    revocations_interval: float = 30.0
    # [auth.oidc.NAME]: identity providers whose JWTs are bearer tokens (config/oidc.py).
    oidc: Mapping[str, OidcConfig] = field(default_factory=lambda: MappingProxyType({}))
    # [auth.forward]: an auth proxy's user and groups headers (config/forward.py); None: off.
    forward: ForwardConfig | None = None
    # [auth.webhook]: the application asked per user and object (config/webhook.py); None: off.
    webhook: WebhookConfig | None = None
    # [auth.grants]: cookie grants (config/grants.py); None: off.
    grants: GrantsConfig | None = None
    # What a plain URL (no sig) authorized by a grant, a JWT or forward-auth may ask for: only
    # these w/h values (with fit, fmt, dpr 1-3), or anything with plain_any_transform.
    plain_widths: tuple[int, ...] = ()
    plain_any_transform: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How originals reach the client; ``[delivery]`` with ``[sources.NAME.delivery]`` overrides."""

    mode: DeliveryMode = DeliveryMode.AUTO
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
    addressing_style: AddressingStyle = AddressingStyle.AUTO
    prefix: str = ""
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None
    cache_control: str = "private, max-age=3600"
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_connections: int = 32  # per pool: streamed bodies, transform reads, HEAD/LIST
    pool_timeout: float = 1.0  # waiting longer for a free connection is 503 overloaded
    max_attempts: int = 2
    ca_bundle: str | None = None  # PEM file of the CAs an https endpoint's certificate must chain to
    verify_tls: bool = True  # False: no certificate check at all (a warning at start-up)
    delivery: DeliveryConfig = DeliveryConfig()
    fallback: FallbackConfig = field(default_factory=FallbackConfig)  # [sources.NAME.fallback]
    # Originals in these input formats (HEIF) are always rendered (as large as the output limits
    # allow), never sent as stored: delivery/conversion.py.
    convert_originals: tuple[str, ...] = ()
    convert_format: ConvertFormat = ConvertFormat.JPEG


@dataclass(frozen=True, slots=True)
class PresetConfig:
    """``[transform.presets.NAME]``: transform params as a URL spells them (checked against the
    transform parser when the settings are built, ``transform/presets.py``), and which of them
    a URL naming the preset may give itself."""

    name: str
    params: Mapping[str, str]
    allow_override: tuple[str, ...] = ()


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
    # WebP and AVIF: the lowest qualities at JPEG q=82's SSIM on 300 px photos (transform/steps.py)
    webp_quality: int = 79
    avif_quality: int = 64
    # fmt=auto: the formats it may send besides JPEG/PNG, in the order equal Accept weights go;
    # one left out is never chosen by auto (fmt=webp / fmt=avif still give it).
    auto_prefer: tuple[str, ...] = ("webp", "avif")
    png_compress_level: int = 6
    presets: Mapping[str, PresetConfig] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class CacheConfig:
    variant_bytes: int = 256 * 1024 * 1024  # per host (every serving worker's); 0 disables it
    # Where the host's caches live (variants, metadata, hot counters), shared by the serving
    # workers. None: with server.workers > 1, a private temporary directory the supervisor makes
    # and removes; with one worker, that process's memory.
    dir: str | None = None
    metadata_ttl: float = 30.0
    metadata_entries: int = 100_000
    # ``[cache.store]``: a bucket/prefix shared by replicas; None (no table): memory only.
    store: SourceConfig | None = None
    store_pending_writes: int = 64  # background writes in flight; beyond this they are dropped


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics on their own address, never the public port (``port`` 0: any free)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9090


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: LogFormat = LogFormat.LOGFMT
    # The key of the access log's key_hash (with server.log_keys = false); None: derived from the
    # signing key auth.sign_with (or the first token), so replicas sharing it log the same hashes.
    key_hash_secret: Secret | None = None


@dataclass(frozen=True, slots=True)
class Rate:
    """A rate limit such as ``"600/min"``: ``count`` requests per ``period`` seconds. An idle
    bucket holds one period's worth, so up to ``count`` may come at once (the burst)."""

    count: int
    period: float

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """One budget's rates, per dimension (``[limits.originals]``, ``[limits.transforms]``);
    None: that dimension is not limited."""

    per_signature: Rate | None = None  # one signed URL (checked first)
    per_key: Rate | None = None  # every URL signed with one key id
    per_token: Rate | None = None  # one bearer token
    per_sub: Rate | None = None  # one signed viewer id (sub)
    per_client: Rate | None = None  # one client address (after server.trusted_proxies)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """``[limits]``: request rates per host; originals count every request, transforms renders."""

    originals: BudgetLimits = BudgetLimits()
    transforms: BudgetLimits = BudgetLimits()
    entries: int = 100_000  # buckets kept per host at most (beyond it, the fullest are forgotten)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    auth: AuthConfig
    sources: Mapping[str, SourceConfig]
    transform: TransformConfig = TransformConfig()
    cache: CacheConfig = CacheConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    limits: LimitsConfig = LimitsConfig()
