"""Building ``[auth]``: signing keys, bearer tokens and their scopes, the TTL limits, and where
the revocations come from."""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from imgproxy.config.forward import read_forward
from imgproxy.config.grants import read_grants, read_plain_widths
from imgproxy.config.model import AuthConfig, CacheConfig, KeyLimits, Scope, SourceConfig, TokenConfig
from imgproxy.config.oidc import read_oidc
from imgproxy.config.reader import Table
from imgproxy.config.revocations import parse_revocations
from imgproxy.config.sections import read_revocations_s3
from imgproxy.config.values import (
    MAX_TTL_LIMIT,
    MIN_SIGNING_KEY_BYTES,
    MIN_TOKEN_BYTES,
    NAME_PATTERN,
    ConfigError,
    Secret,
)
from imgproxy.config.webhook import read_webhook

# auth.revocations_interval: how often every serving process asks for the polled object.
MIN_REVOCATIONS_INTERVAL: Final = 1.0
MAX_REVOCATIONS_INTERVAL: Final = 3600.0
_S3_URL: Final = re.compile(r"s3://([A-Za-z0-9][A-Za-z0-9._-]{1,254})/([^\x00-\x1f\x7f]{1,1024})", re.ASCII)


def parse_s3_url(url: str, where: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); the key names one object (not a prefix)."""
    match = _S3_URL.fullmatch(url)
    if match is None or match.group(2).endswith("/"):
        raise ConfigError(f"{where}: expected an object URL such as s3://bucket/revocations.json")
    return match.group(1), match.group(2)


def check_revocations_reach(auth: AuthConfig, sources: Mapping[str, SourceConfig],
                            cache: CacheConfig) -> None:
    """The polled object must not be readable through a source (any signed URL or token for it
    could read the list) nor lie in the variant store's prefix (the proxy writes there)."""
    if auth.revocations_url is None:
        return
    bucket, key = parse_s3_url(auth.revocations_url, "auth.revocations_url")
    places = [(f"sources.{name}", source) for name, source in sources.items()]
    if cache.store is not None:
        places.append(("cache.store", cache.store))
    for where, place in places:
        if place.bucket == bucket and key.startswith(place.prefix):
            raise ConfigError(f"auth.revocations_url: the object is inside {where} (bucket {bucket}, "
                              f"prefix {place.prefix!r}); keep it in a bucket or prefix the proxy "
                              "neither serves nor writes")


def read_key(keys: Table, kid: str, environ: Mapping[str, str], max_ttl: float) -> tuple[Secret, KeyLimits]:
    """``kid = "secret"`` (``env:``/``file:`` allowed), or a table: ``secret``, ``scopes``,
    ``max_ttl`` (at most ``auth.max_ttl``), ``durable``, ``presets_only``."""
    if isinstance(keys.data[kid], dict):
        kt = keys.table(kid)
        secret = kt.secret("secret", environ, required=True)
        where = kt.where("secret")
        scopes = tuple(Scope.parse(s, kt.where("scopes")) for s in kt.string_list("scopes", ()))
        if "scopes" in kt.data and not scopes:
            raise ConfigError(f"{kt.where('scopes')}: an empty list would allow nothing; leave it "
                              "out to allow every source")
        limits = KeyLimits(scopes=scopes, max_ttl=kt.duration("max_ttl", max_ttl, 1, max_ttl),
                           durable=kt.boolean("durable", False),
                           presets_only=kt.boolean("presets_only", False))
        kt.reject_unknown()
    else:
        secret, where = keys.secret(kid, environ, required=True), keys.where(kid)
        limits = KeyLimits(max_ttl=max_ttl)
    assert secret is not None
    if len(secret.reveal().encode()) < MIN_SIGNING_KEY_BYTES:
        raise ConfigError(f"{where}: signing keys must be at least {MIN_SIGNING_KEY_BYTES} bytes")
    return secret, limits


def read_auth(t: Table, environ: Mapping[str, str], server_host: str = "127.0.0.1") -> AuthConfig:
    base = AuthConfig()
    max_ttl = t.duration("max_ttl", base.max_ttl, 1, MAX_TTL_LIMIT)
    keys_table = t.table("keys")
    keys: dict[str, Secret] = {}
    limits: dict[str, KeyLimits] = {}
    for kid in keys_table.data:
        if not NAME_PATTERN.fullmatch(kid):
            raise ConfigError(f"{keys_table.where(kid)}: key ids use letters, digits, '_' and '-'")
        keys[kid], limits[kid] = read_key(keys_table, kid, environ, max_ttl)
    sign_with = t.string("sign_with", next(iter(keys), base.sign_with))
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
                presets_only=tt.boolean("presets_only", False),
            )
        )
        tt.reject_unknown()
    if len({tok.token for tok in tokens}) != len(tokens):
        raise ConfigError(f"{tokens_table.path}: two tokens share the same secret")

    revocations_url = t.optional_string("revocations_url")
    revocations_s3 = t.table("revocations_s3")
    if revocations_url is None and revocations_s3.data:
        raise ConfigError(f"{revocations_s3.path}: only with auth.revocations_url")
    polled_from = None
    if revocations_url is not None:
        bucket, _ = parse_s3_url(revocations_url, t.where("revocations_url"))
        polled_from = read_revocations_s3(revocations_s3, environ, bucket)
    auth = AuthConfig(
        keys=MappingProxyType(keys),
        sign_with=sign_with,
        key_limits=MappingProxyType(limits),
        max_ttl=max_ttl,
        clock_skew=t.duration("clock_skew", base.clock_skew, 0, 3600),
        tokens=tuple(tokens),
        url_window=t.duration("url_window", base.url_window, 0, 86400),
        sign_max_items=t.integer("sign_max_items", base.sign_max_items, 1, 10_000),
        sign_ttl=t.duration("sign_ttl", base.sign_ttl, 1, MAX_TTL_LIMIT),
        sign_max_bytes=t.size("sign_max_bytes", base.sign_max_bytes, 1024, 64 * 1024 * 1024),
        durable_max_age=t.duration("durable_max_age", base.durable_max_age, 0, 7 * 86400),
        revocations=parse_revocations(
            [] if t.raw("revocations") is None else t.raw("revocations"), t.where("revocations")),
        revocations_url=revocations_url,
        revocations_s3=polled_from,
        revocations_interval=t.duration("revocations_interval", base.revocations_interval,
                                        MIN_REVOCATIONS_INTERVAL, MAX_REVOCATIONS_INTERVAL),
        oidc=read_oidc(t.table("oidc")),
        forward=read_forward(t.table("forward")),
        webhook=read_webhook(t.table("webhook"), environ) if "webhook" in t.data else None,
        grants=None if t.raw("grants") is None else read_grants(t.table("grants"), sign_with, limits,
                                                                  server_host),
        plain_widths=read_plain_widths(t),
        plain_any_transform=t.boolean("plain_any_transform", False),
    )
    if auth.sign_ttl + auth.url_window > auth.max_ttl:
        raise ConfigError(f"{t.where('sign_ttl')}: sign_ttl + url_window must not exceed max_ttl "
                          "(the server would refuse the URLs it signs)")
    if keys and auth.sign_ttl + auth.url_window > limits[sign_with].max_ttl:
        raise ConfigError(f"{t.where('sign_ttl')}: sign_ttl + url_window must not exceed the max_ttl "
                          f"of auth.keys.{sign_with} (the server would refuse the URLs it signs)")
    t.reject_unknown()
    return auth
