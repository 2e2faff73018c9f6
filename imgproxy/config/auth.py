"""Building ``[auth]``: signing keys, bearer tokens and their scopes, and the TTL limits."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from imgproxy.config.model import AuthConfig, KeyLimits, Scope, TokenConfig
from imgproxy.config.reader import Table
from imgproxy.config.revocations import parse_revocations
from imgproxy.config.values import (
    MAX_TTL_LIMIT,
    MIN_SIGNING_KEY_BYTES,
    MIN_TOKEN_BYTES,
    NAME_PATTERN,
    ConfigError,
    Secret,
)


def read_key(keys: Table, kid: str, environ: Mapping[str, str], max_ttl: float) -> tuple[Secret, KeyLimits]:
    """``kid = "secret"`` (``env:``/``file:`` allowed), or a table: ``secret``, ``scopes``,
    ``max_ttl`` (at most ``auth.max_ttl``), ``durable``."""
    if isinstance(keys.data[kid], dict):
        kt = keys.table(kid)
        secret = kt.secret("secret", environ, required=True)
        where = kt.where("secret")
        scopes = tuple(Scope.parse(s, kt.where("scopes")) for s in kt.string_list("scopes", ()))
        if "scopes" in kt.data and not scopes:
            raise ConfigError(f"{kt.where('scopes')}: an empty list would allow nothing; leave it "
                              "out to allow every source")
        limits = KeyLimits(scopes=scopes, max_ttl=kt.duration("max_ttl", max_ttl, 1, max_ttl),
                           durable=kt.boolean("durable", False))
        kt.reject_unknown()
    else:
        secret, where = keys.secret(kid, environ, required=True), keys.where(kid)
        limits = KeyLimits(max_ttl=max_ttl)
    assert secret is not None
    if len(secret.reveal().encode()) < MIN_SIGNING_KEY_BYTES:
        raise ConfigError(f"{where}: signing keys must be at least {MIN_SIGNING_KEY_BYTES} bytes")
    return secret, limits


def read_auth(t: Table, environ: Mapping[str, str]) -> AuthConfig:
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
            )
        )
        tt.reject_unknown()
    if len({tok.token for tok in tokens}) != len(tokens):
        raise ConfigError(f"{tokens_table.path}: two tokens share the same secret")

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
    )
    if auth.sign_ttl + auth.url_window > auth.max_ttl:
        raise ConfigError(f"{t.where('sign_ttl')}: sign_ttl + url_window must not exceed max_ttl "
                          "(the server would refuse the URLs it signs)")
    if keys and auth.sign_ttl + auth.url_window > limits[sign_with].max_ttl:
        raise ConfigError(f"{t.where('sign_ttl')}: sign_ttl + url_window must not exceed the max_ttl "
                          f"of auth.keys.{sign_with} (the server would refuse the URLs it signs)")
    t.reject_unknown()
    return auth
