"""Configuration: TOML (or its environment stand-ins) -> frozen, validated, typed dataclasses.

The package splits along its seams: ``values`` (errors, secrets, durations), ``model`` (the
dataclasses), ``reader`` (typed access to one table), ``sections`` (one builder per section);
this module loads and assembles.

This is the only module that reads files or the environment. Every problem is a ``ConfigError``
whose text names the key path (``sources.photos.prefix: must not contain '..'``), so the CLI can
print one line and exit. Secrets are ``Secret`` values: masked in ``repr``/``str``, revealed only
where they are used.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from imgproxy.config.auth import check_revocations_reach, read_auth
from imgproxy.config.limits import parse_rate, read_limits
from imgproxy.config.model import (
    DELIVERY_MODES,
    AddressingStyle,
    AuthConfig,
    BudgetLimits,
    CacheConfig,
    Config,
    ConvertFormat,
    DeliveryConfig,
    DeliveryMode,
    KeyLimits,
    LimitsConfig,
    LogConfig,
    LogFormat,
    MetricsConfig,
    PresetConfig,
    Rate,
    ResourcePolicy,
    Revocation,
    Scope,
    ServerConfig,
    SourceConfig,
    TokenConfig,
    TransformConfig,
)
from imgproxy.config.reader import Table
from imgproxy.config.sections import (
    read_cache,
    read_delivery,
    read_log,
    read_metrics,
    read_server,
    read_source,
    read_transform,
)
from imgproxy.config.values import (
    CONFIG_PATH_ENV,
    CONFIG_TOML_ENV,
    DEFAULT_INLINE_TYPES,
    DEFAULT_INPUT_FORMATS,
    INPUT_FORMATS,
    MAX_TTL_LIMIT,
    MIN_PRESIGNED_VALIDITY,
    MIN_SIGNING_KEY_BYTES,
    MIN_TOKEN_BYTES,
    NAME_PATTERN,
    ConfigError,
    Secret,
    parse_duration,
    parse_size,
    resolve_secret,
)

__all__ = [
    "CONFIG_PATH_ENV", "CONFIG_TOML_ENV", "DEFAULT_INLINE_TYPES", "DEFAULT_INPUT_FORMATS",
    "DELIVERY_MODES", "INPUT_FORMATS", "MAX_TTL_LIMIT", "MIN_PRESIGNED_VALIDITY",
    "MIN_SIGNING_KEY_BYTES", "MIN_TOKEN_BYTES", "NAME_PATTERN", "AddressingStyle", "AuthConfig",
    "BudgetLimits", "CacheConfig", "Config", "ConfigError", "ConvertFormat", "DeliveryConfig", "DeliveryMode",
    "KeyLimits", "LimitsConfig", "LogConfig", "LogFormat", "MetricsConfig", "PresetConfig", "Rate",
    "ResourcePolicy",
    "Revocation", "Scope", "Secret", "ServerConfig", "SourceConfig", "TokenConfig", "TransformConfig",
    "load_config", "parse_config", "parse_duration", "parse_rate", "parse_size", "resolve_secret",
]


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Build and validate a ``Config`` from parsed TOML data."""
    env = os.environ if environ is None else environ
    root = Table(dict(data), "")
    server = read_server(root.table("server"))
    auth = read_auth(root.table("auth"), env, server.host)
    sources_table = root.table("sources")
    delivery = read_delivery(root.table("delivery"), DeliveryConfig())
    sources = {name: read_source(name, sources_table.table(name), env, delivery)
               for name in sources_table.data}
    if not sources:
        raise ConfigError("sources: define at least one [sources.NAME] table")
    if not auth.keys and not auth.tokens and not auth.oidc and auth.forward is None:
        raise ConfigError("auth: define at least one signing key (auth.keys), bearer token (auth.tokens), "
                          "identity provider (auth.oidc) or auth proxy (auth.forward)")
    transform = read_transform(root.table("transform"))
    cache = read_cache(root.table("cache"), env)
    metrics = read_metrics(root.table("metrics"))
    log = read_log(root.table("log"), env)
    limits = read_limits(root.table("limits"))
    root.reject_unknown()
    check_revocations_reach(auth, sources, cache)
    check_conversions(sources, transform)
    if auth.grants is not None:  # a cross-origin dashboard sends its grant cookie: credentialed CORS
        if "*" in server.cors_origins:
            raise ConfigError("server.cors_origins: '*' is not allowed with [auth.grants] (a "
                              "credentialed answer must name one origin)")
        server = dataclasses.replace(server, cors_credentials=True)
    if not auth.keys and not auth.tokens and log.key_hash_secret is None and not server.log_keys:
        raise ConfigError("log.key_hash_secret: required when auth has only [auth.oidc] providers or "
                          "[auth.forward] (the "
                          "access log's key_hash is otherwise derived from a signing key or token)")
    return Config(server=server, auth=auth, sources=MappingProxyType(sources), transform=transform,
                  cache=cache, metrics=metrics, log=log, limits=limits)


def check_conversions(sources: Mapping[str, SourceConfig], transform: TransformConfig) -> None:
    """A source may convert only originals the transforms can read."""
    for name, source in sources.items():
        for fmt in source.convert_originals:
            if not transform.enabled:
                raise ConfigError(f"sources.{name}.convert_originals: needs transform.enabled")
            if fmt not in transform.input_formats:
                raise ConfigError(f"sources.{name}.convert_originals: {fmt} is not in "
                                  "transform.input_formats")


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
