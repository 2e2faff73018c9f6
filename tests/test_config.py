"""config.py: TOML data -> validated Config; every error names its key path; secrets stay masked."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imgproxy.config import (
    DEFAULT_INLINE_TYPES,
    DELIVERY_MODES,
    AddressingStyle,
    AuthConfig,
    CacheConfig,
    Config,
    ConfigError,
    DeliveryConfig,
    DeliveryMode,
    LogConfig,
    LogFormat,
    MetricsConfig,
    Scope,
    Secret,
    ServerConfig,
    SourceConfig,
    TransformConfig,
    load_config,
    parse_config,
    parse_duration,
)

KEY_1 = "config-test-signing-key-one-0123456789abcdef"
KEY_2 = "config-test-signing-key-two-0123456789abcdef"
OPS_TOKEN = "config-test-ops-token-0123456789abcdef012345"
HR_TOKEN = "config-test-hr-token-0123456789abcdef0123456"
ACCESS_KEY = "AKIACONFIGTESTACCESS"
SECRET_KEY = "config-test-secret-access-key-0123456789"
SESSION = "config-test-session-token-0123456789abcdef"
SHORT_KEY = "too-short-secret-31-bytes-long!"  # one byte short of the minimum
ENVIRON = {"IMGPROXY_K2": KEY_2, "HR_TOKEN": HR_TOKEN, "PHOTOS_SECRET": SECRET_KEY, "EMPTY": ""}
ALL_SECRETS = (KEY_1, KEY_2, OPS_TOKEN, HR_TOKEN, ACCESS_KEY, SECRET_KEY, SESSION, SHORT_KEY)

FULL: dict[str, Any] = {
    "server": {
        "host": "0.0.0.0",  # noqa: S104
        "port": 8443,
        "public_url": "https://img.example.com/",
        "keepalive_timeout": "2m",
        "shutdown_timeout": 10,
        "ready_cache_seconds": "500ms",
        "inline_types": ["image/jpeg", "image/png"],
        "log_keys": True,
        "max_query_params": 16,
    },
    "auth": {
        "keys": {"k1": KEY_1, "k2": "env:IMGPROXY_K2"},
        "sign_with": "k2",
        "max_ttl": "1d",
        "clock_skew": "30s",
        "tokens": {
            "ops": {"token": OPS_TOKEN, "scopes": ["*"]},
            "hr": {"token": "env:HR_TOKEN", "scopes": ["photos:employees/*", "archive:2024/report.jpg"]},
        },
    },
    "sources": {
        "photos": {
            "bucket": "acme-private-photos",
            "region": "eu-west-1",
            "endpoint_url": "http://minio.internal:9000/",
            "addressing_style": "path",
            "prefix": "public-profile",
            "access_key_id": ACCESS_KEY,
            "secret_access_key": "env:PHOTOS_SECRET",
            "session_token": SESSION,
            "cache_control": "private, max-age=60",
            "connect_timeout": "1s",
            "read_timeout": "20s",
            "max_connections": 8,
            "max_attempts": 3,
        },
        "archive": {"bucket": "acme-archive"},
    },
}

MINIMAL: dict[str, Any] = {
    "auth": {"keys": {"k1": KEY_1}},
    "sources": {"photos": {"bucket": "acme-private-photos"}},
}

DELETE = object()


def changed(base: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of ``base`` with the dotted ``path`` set to ``value`` (or removed by DELETE)."""
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    table = data
    for name in parents:
        table = table.setdefault(name, {})
    if value is DELETE:
        del table[last]
    else:
        table[last] = value
    return data


def parse_full() -> Config:
    return parse_config(copy.deepcopy(FULL), environ=ENVIRON)


# --- a valid config ---------------------------------------------------------------------------

PARSED_FULL: list[tuple[str, Callable[[Config], object], object]] = [
    ("host", lambda c: c.server.host, "0.0.0.0"),  # noqa: S104
    ("port", lambda c: c.server.port, 8443),
    ("base_url strips the slash", lambda c: c.server.base_url, "https://img.example.com"),
    ("keepalive in seconds", lambda c: c.server.keepalive_timeout, 120.0),
    ("integer duration", lambda c: c.server.shutdown_timeout, 10.0),
    ("millisecond duration", lambda c: c.server.ready_cache_seconds, 0.5),
    ("inline types", lambda c: c.server.inline_types, ("image/jpeg", "image/png")),
    ("log_keys", lambda c: c.server.log_keys, True),
    ("max_query_params", lambda c: c.server.max_query_params, 16),
    ("literal key", lambda c: c.auth.keys["k1"].reveal(), KEY_1),
    ("env key", lambda c: c.auth.keys["k2"].reveal(), KEY_2),
    ("sign_with", lambda c: c.auth.sign_with, "k2"),
    ("max_ttl", lambda c: c.auth.max_ttl, 86400.0),
    ("clock_skew", lambda c: c.auth.clock_skew, 30.0),
    ("token names", lambda c: [t.name for t in c.auth.tokens], ["ops", "hr"]),
    ("env token", lambda c: c.auth.tokens[1].token.reveal(), HR_TOKEN),
    ("token scopes", lambda c: c.auth.tokens[1].scopes,
     (Scope("photos", "employees/", True), Scope("archive", "2024/report.jpg", False))),
    ("source names", lambda c: list(c.sources), ["photos", "archive"]),
    ("source name field", lambda c: c.sources["photos"].name, "photos"),
    ("bucket", lambda c: c.sources["photos"].bucket, "acme-private-photos"),
    ("region", lambda c: c.sources["photos"].region, "eu-west-1"),
    ("endpoint strips the slash", lambda c: c.sources["photos"].endpoint_url, "http://minio.internal:9000"),
    ("addressing_style", lambda c: c.sources["photos"].addressing_style, "path"),
    ("prefix gains a slash", lambda c: c.sources["photos"].prefix, "public-profile/"),
    ("access key", lambda c: c.sources["photos"].access_key_id, Secret(ACCESS_KEY)),
    ("env secret key", lambda c: c.sources["photos"].secret_access_key, Secret(SECRET_KEY)),
    ("session token", lambda c: c.sources["photos"].session_token, Secret(SESSION)),
    ("cache_control", lambda c: c.sources["photos"].cache_control, "private, max-age=60"),
    ("connect_timeout", lambda c: c.sources["photos"].connect_timeout, 1.0),
    ("read_timeout", lambda c: c.sources["photos"].read_timeout, 20.0),
    ("max_connections", lambda c: c.sources["photos"].max_connections, 8),
    ("max_attempts", lambda c: c.sources["photos"].max_attempts, 3),
]


@pytest.mark.parametrize(("field", "read", "expected"), PARSED_FULL, ids=[row[0] for row in PARSED_FULL])
def test_full_config_parses_every_key(field: str, read: Callable[[Config], object], expected: object) -> None:
    assert read(parse_full()) == expected


DEFAULTS: list[tuple[str, Callable[[Config], object], object]] = [
    ("host", lambda c: c.server.host, "127.0.0.1"),
    ("port", lambda c: c.server.port, 8080),
    ("base_url", lambda c: c.server.base_url, "http://127.0.0.1:8080"),
    ("inline types", lambda c: c.server.inline_types, DEFAULT_INLINE_TYPES),
    ("log_keys", lambda c: c.server.log_keys, False),
    ("sign_with is the first key", lambda c: c.auth.sign_with, "k1"),
    ("max_ttl is seven days", lambda c: c.auth.max_ttl, 7 * 86400.0),
    ("clock_skew", lambda c: c.auth.clock_skew, 60.0),
    ("no tokens", lambda c: c.auth.tokens, ()),
    ("region", lambda c: c.sources["photos"].region, "us-east-1"),
    ("no endpoint", lambda c: c.sources["photos"].endpoint_url, None),
    ("addressing_style", lambda c: c.sources["photos"].addressing_style, "auto"),
    ("no prefix", lambda c: c.sources["photos"].prefix, ""),
    ("no access key", lambda c: c.sources["photos"].access_key_id, None),
    ("cache_control is private", lambda c: c.sources["photos"].cache_control, "private, max-age=3600"),
]


@pytest.mark.parametrize(("field", "read", "expected"), DEFAULTS, ids=[row[0] for row in DEFAULTS])
def test_minimal_config_gets_defaults(field: str, read: Callable[[Config], object], expected: object) -> None:
    assert read(parse_config(copy.deepcopy(MINIMAL), environ={})) == expected


# Each default is stated once, beside its field in config/model.py: an absent key reads it there.
UNSET_SECTIONS: list[tuple[str, Callable[[Config], object], object]] = [
    ("server", lambda c: c.server, ServerConfig()),
    ("transform", lambda c: c.transform, TransformConfig()),
    ("cache", lambda c: c.cache, CacheConfig()),
    ("metrics", lambda c: c.metrics, MetricsConfig()),
    ("log", lambda c: c.log, LogConfig()),
    ("delivery", lambda c: c.sources["photos"].delivery, DeliveryConfig()),
    ("source", lambda c: c.sources["photos"], SourceConfig(name="photos", bucket="acme-private-photos")),
    ("auth but its keys", lambda c: replace(c.auth, keys={}, key_limits={}, sign_with=""), AuthConfig()),
]


@pytest.mark.parametrize(("section", "read", "expected"), UNSET_SECTIONS, ids=[r[0] for r in UNSET_SECTIONS])
def test_unset_keys_take_the_dataclass_defaults(section: str, read: Callable[[Config], object],
                                                expected: object) -> None:
    assert read(parse_config(copy.deepcopy(MINIMAL), environ={})) == expected


def test_a_store_without_optional_keys_takes_the_source_defaults() -> None:
    data = changed(MINIMAL, "cache.store", {"bucket": "acme-variants"})
    store = parse_config(data, environ={}).cache.store
    assert store == SourceConfig(name="store", bucket="acme-variants")


# Fixed sets of values are StrEnums: the TOML spelling is the value, the error lists them all.
CHOICES: list[tuple[str, str, Callable[[Config], object], object]] = [
    ("delivery.mode", "redirect", lambda c: c.sources["photos"].delivery.mode, DeliveryMode.REDIRECT),
    ("sources.photos.delivery.mode", "accel", lambda c: c.sources["photos"].delivery.mode,
     DeliveryMode.ACCEL),
    ("sources.photos.addressing_style", "virtual", lambda c: c.sources["photos"].addressing_style,
     AddressingStyle.VIRTUAL),
    ("log.format", "json", lambda c: c.log.format, LogFormat.JSON),
]


@pytest.mark.parametrize(("path", "value", "read", "member"), CHOICES, ids=[r[0] for r in CHOICES])
def test_a_fixed_choice_is_read_as_its_enum_member(path: str, value: str, read: Callable[[Config], object],
                                                   member: object) -> None:
    assert read(parse_config(changed(MINIMAL, path, value), environ={})) is member


CHOICE_ERRORS: list[tuple[str, object, str]] = [
    ("delivery.mode", "fast", "delivery.mode: must be one of stream, redirect, auto, accel"),
    ("delivery.mode", "STREAM", "delivery.mode: must be one of stream, redirect, auto, accel"),
    ("sources.photos.delivery.mode", "fast",
     "sources.photos.delivery.mode: must be one of stream, redirect, auto, accel"),
    ("delivery.mode", 1, "delivery.mode: expected a string"),
    ("sources.photos.addressing_style", "dns",
     "sources.photos.addressing_style: must be 'auto', 'path' or 'virtual'"),
    ("cache.store", {"bucket": "acme-variants", "addressing_style": "dns"},
     "cache.store.addressing_style: must be 'auto', 'path' or 'virtual'"),
    ("log.format", "xml", "log.format: must be 'logfmt' or 'json'"),
    ("log.format", ["json"], "log.format: expected a string"),
]


@pytest.mark.parametrize(("path", "value", "message"), CHOICE_ERRORS,
                         ids=[f"{p}={v!r}" for p, v, _ in CHOICE_ERRORS])
def test_a_wrong_choice_names_every_allowed_value(path: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(changed(MINIMAL, path, value), environ={})
    assert str(caught.value) == message


def test_delivery_modes_are_listed_in_their_documented_order() -> None:
    assert DELIVERY_MODES == ("stream", "redirect", "auto", "accel")


def test_tokens_alone_are_enough_auth() -> None:
    data = changed(MINIMAL, "auth", {"tokens": {"ops": {"token": OPS_TOKEN, "scopes": ["*"]}}})
    assert parse_config(data, environ={}).auth.keys == {}


def test_signing_key_of_exactly_32_bytes_is_accepted() -> None:
    data = changed(MINIMAL, "auth.keys.k1", "k" * 32)
    assert parse_config(data, environ={}).auth.keys["k1"].reveal() == "k" * 32


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ""),
        ("users", "users/"),
        ("users/", "users/"),
        ("tenants/42", "tenants/42/"),
        ("a..b/c", "a..b/c/"),
    ],
)
def test_prefix_is_normalised_to_end_with_a_slash(prefix: str, expected: str) -> None:
    data = changed(MINIMAL, "sources.photos.prefix", prefix)
    assert parse_config(data, environ={}).sources["photos"].prefix == expected


@pytest.mark.parametrize(
    ("host", "base_url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),  # noqa: S104
        ("::", "http://127.0.0.1:8080"),
        ("::1", "http://[::1]:8080"),
        ("img.local", "http://img.local:8080"),
    ],
)
def test_base_url_defaults_to_a_reachable_host_and_port(host: str, base_url: str) -> None:
    data = changed(MINIMAL, "server.host", host)
    assert parse_config(data, environ={}).server.base_url == base_url


@pytest.mark.parametrize(("value", "expected"), [
    (["avif", "webp"], ("avif", "webp")),
    (["WebP"], ("webp",)),
    ([], ()),
])
def test_auto_prefer_is_read_in_its_order_and_lowercased(value: list[str], expected: tuple[str, ...]) -> None:
    config = parse_config(changed(MINIMAL, "transform.auto_prefer", value), environ={})
    assert config.transform.auto_prefer == expected


def test_inline_types_are_lowercased() -> None:
    data = changed(MINIMAL, "server.inline_types", ["image/jpeg"])
    assert parse_config(data, environ={}).server.inline_types == ("image/jpeg",)


def test_config_is_frozen() -> None:
    config = parse_full()
    with pytest.raises(AttributeError):
        config.server.port = 1  # type: ignore[misc]


def test_sources_mapping_is_read_only() -> None:
    config = parse_full()
    with pytest.raises(TypeError):
        config.sources["evil"] = config.sources["photos"]  # type: ignore[index]


# --- every error names its key path -----------------------------------------------------------

# (change to FULL: dotted path, new value) -> the key path the one-line error must start with,
# and a fragment of what it says is wrong.
ERRORS: list[tuple[str, object, str, str]] = [
    # signing keys
    ("auth.keys.k1", SHORT_KEY, "auth.keys.k1", "at least 32 bytes"),
    ("auth.keys.k1", "", "auth.keys.k1", "non-empty string"),
    ("auth.keys.k1", 12345, "auth.keys.k1", "non-empty string"),
    ("auth.keys.bad kid!", KEY_1, "auth.keys.bad kid!", "key ids"),
    ("auth.keys", "not-a-table", "auth.keys", "expected a table"),
    ("auth.sign_with", "k9", "auth.sign_with", "not a key"),
    ("auth.max_ttl", "8d", "auth.max_ttl", "between"),
    ("auth.max_ttl", "0s", "auth.max_ttl", "between"),
    ("auth.clock_skew", "2h", "auth.clock_skew", "between"),
    # env: secrets
    ("auth.keys.k1", "env:NOT_SET_ANYWHERE", "auth.keys.k1", "NOT_SET_ANYWHERE is not set"),
    ("auth.keys.k1", "env:", "auth.keys.k1", "needs a variable name"),
    ("auth.keys.k1", "env:EMPTY", "auth.keys.k1", "EMPTY is empty"),
    ("sources.photos.secret_access_key", "env:NOPE", "sources.photos.secret_access_key", "NOPE is not set"),
    # bearer tokens
    ("auth.tokens.ops.scopes", DELETE, "auth.tokens.ops.scopes", "at least one scope"),
    ("auth.tokens.ops.scopes", [], "auth.tokens.ops.scopes", "at least one scope"),
    ("auth.tokens.ops.scopes", "*", "auth.tokens.ops.scopes", "list of strings"),
    ("auth.tokens.ops.scopes", ["photos:a*b"], "auth.tokens.ops.scopes", "'*' only at the end"),
    ("auth.tokens.ops.scopes", ["no such source!:x"], "auth.tokens.ops.scopes", "must look like"),
    ("auth.tokens.ops.token", DELETE, "auth.tokens.ops.token", "is required"),
    ("auth.tokens.ops.token", "short", "auth.tokens.ops.token", "at least 32 bytes"),
    ("auth.tokens.ops.token", "env:NOPE", "auth.tokens.ops.token", "NOPE is not set"),
    ("auth.tokens.ops.token", HR_TOKEN, "auth.tokens", "share the same secret"),
    ("auth.tokens.bad name!", {"token": OPS_TOKEN + "x", "scopes": ["*"]}, "auth.tokens.bad name!",
     "token names"),
    ("auth.tokens.ops", OPS_TOKEN, "auth.tokens.ops", "expected a table"),
    # unknown keys, in every table
    ("extra", 1, "extra", "unknown key"),
    ("server.hots", "x", "server.hots", "unknown key"),
    ("auth.max_tll", "1h", "auth.max_tll", "unknown key"),
    ("auth.tokens.ops.comment", "x", "auth.tokens.ops.comment", "unknown key"),
    ("sources.photos.regoin", "x", "sources.photos.regoin", "unknown key"),
    ("sources.archive.acl", "private", "sources.archive.acl", "unknown key"),
    # server
    ("server", ["not", "a", "table"], "server", "expected a table"),
    ("server.host", 8080, "server.host", "expected a string"),
    ("server.port", 70000, "server.port", "between 0 and 65535"),
    ("server.port", -1, "server.port", "between 0 and 65535"),
    ("server.port", "8080", "server.port", "whole number"),
    ("server.port", True, "server.port", "whole number"),
    ("server.port", 80.5, "server.port", "whole number"),
    ("server.keepalive_timeout", "forever", "server.keepalive_timeout", "expected a duration"),
    ("server.keepalive_timeout", "5y", "server.keepalive_timeout", "expected a duration"),
    ("server.keepalive_timeout", -1, "server.keepalive_timeout", "non-negative"),
    ("server.shutdown_timeout", "2h", "server.shutdown_timeout", "between"),
    ("server.public_url", "img.example.com", "server.public_url", "http(s) URL"),
    ("server.public_url", "https://img.example.com?x=1", "server.public_url", "http(s) URL"),
    ("server.inline_types", ["image/svg+xml"], "server.inline_types", "never inline"),
    ("server.inline_types", ["image/png", "text/html"], "server.inline_types", "never inline"),
    ("server.inline_types", ["application/xhtml+xml"], "server.inline_types", "never inline"),
    ("server.inline_types", ["image/*"], "server.inline_types", "not a media type"),
    ("server.inline_types", ["Image/SVG+XML"], "server.inline_types", "not a media type"),
    ("server.inline_types", "image/png", "server.inline_types", "list of strings"),
    ("server.log_keys", "yes", "server.log_keys", "true or false"),
    ("server.max_query_params", 1000, "server.max_query_params", "between"),
    # sources
    ("sources", DELETE, "sources", "at least one"),
    ("sources", {}, "sources", "at least one"),
    ("sources.bad name", {"bucket": "b-1"}, "sources.bad name", "source names"),
    ("sources.photos", "acme-private-photos", "sources.photos", "expected a table"),
    ("sources.photos.bucket", DELETE, "sources.photos.bucket", "is required"),
    ("sources.photos.bucket", "bad bucket!", "sources.photos.bucket", "not a bucket name"),
    ("sources.photos.bucket", "b", "sources.photos.bucket", "not a bucket name"),
    ("sources.photos.bucket", 7, "sources.photos.bucket", "expected a string"),
    ("sources.photos.region", 7, "sources.photos.region", "expected a string"),
    ("sources.photos.prefix", "a/../b", "sources.photos.prefix", "'..'"),
    ("sources.photos.prefix", "..", "sources.photos.prefix", "'..'"),
    ("sources.photos.prefix", "./a", "sources.photos.prefix", "'..'"),
    ("sources.photos.prefix", "/abs/", "sources.photos.prefix", "relative"),
    ("sources.photos.prefix", "a\\b", "sources.photos.prefix", "relative"),
    ("sources.photos.prefix", "a\x00b", "sources.photos.prefix", "control characters"),
    ("sources.photos.endpoint_url", "minio.internal:9000", "sources.photos.endpoint_url", "URL"),
    ("sources.photos.endpoint_url", "ftp://minio.internal", "sources.photos.endpoint_url", "URL"),
    ("sources.photos.endpoint_url", "http://minio.internal/bucket", "sources.photos.endpoint_url", "URL"),
    ("sources.photos.endpoint_url", 9000, "sources.photos.endpoint_url", "expected a string"),
    ("sources.photos.addressing_style", "dns", "sources.photos.addressing_style", "'path'"),
    ("sources.photos.access_key_id", DELETE, "sources.photos", "give both"),
    ("sources.photos.secret_access_key", DELETE, "sources.photos", "give both"),
    ("sources.archive.session_token", SESSION, "sources.archive.session_token", "needs access_key_id"),
    ("sources.photos.profile", "imgproxy", "sources.photos.profile", "not both"),
    ("sources.photos.cache_control", "", "sources.photos.cache_control", "Cache-Control"),
    ("sources.photos.cache_control", "private\r\nX-Evil: 1", "sources.photos.cache_control", "Cache-Control"),
    ("sources.photos.connect_timeout", "10ms", "sources.photos.connect_timeout", "between"),
    ("sources.photos.read_timeout", "soon", "sources.photos.read_timeout", "expected a duration"),
    ("sources.photos.max_connections", 0, "sources.photos.max_connections", "between"),
    ("sources.photos.max_attempts", 11, "sources.photos.max_attempts", "between"),
    # transform
    ("transform.auto_prefer", ["jpeg"], "transform.auto_prefer", "'jpeg' is not one of webp, avif"),
    ("transform.auto_prefer", ["webp", "WebP"], "transform.auto_prefer", "listed twice"),
    ("transform.auto_prefer", "webp", "transform.auto_prefer", "list of strings"),
    # auth as a whole
    ("auth", DELETE, "auth", "at least one signing key"),
    ("auth", {"max_ttl": "1h"}, "auth", "at least one signing key"),
]
ERROR_IDS = [f"{path}={value!r}"[:60] for path, value, _, _ in ERRORS]


@pytest.mark.parametrize(("path", "value", "where", "fragment"), ERRORS, ids=ERROR_IDS)
def test_config_error_names_its_key_path(path: str, value: object, where: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(changed(FULL, path, value), environ=ENVIRON)
    assert str(caught.value).startswith(f"{where}: ")
    assert fragment in str(caught.value)


@pytest.mark.parametrize(("path", "value", "where", "fragment"), ERRORS, ids=ERROR_IDS)
def test_config_error_never_contains_a_secret(path: str, value: object, where: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(changed(FULL, path, value), environ=ENVIRON)
    assert not [secret for secret in ALL_SECRETS if secret in str(caught.value)]


@pytest.mark.parametrize(("path", "value", "where", "fragment"), ERRORS, ids=ERROR_IDS)
def test_config_error_is_one_line(path: str, value: object, where: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(changed(FULL, path, value), environ=ENVIRON)
    assert "\n" not in str(caught.value)


# --- env: secrets and Secret ------------------------------------------------------------------

def test_env_secret_is_read_from_the_given_environ() -> None:
    data = changed(MINIMAL, "auth.keys.k1", "env:MY_SIGNING_KEY")
    config = parse_config(data, environ={"MY_SIGNING_KEY": KEY_2})
    assert config.auth.keys["k1"].reveal() == KEY_2


def test_env_secret_is_not_read_from_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SIGNING_KEY", KEY_2)
    data = changed(MINIMAL, "auth.keys.k1", "env:MY_SIGNING_KEY")
    with pytest.raises(ConfigError, match="MY_SIGNING_KEY is not set"):
        parse_config(data, environ={})


def test_literal_secret_that_merely_mentions_env_is_kept_as_is() -> None:
    literal = "environment-is-not-a-prefix-0123456789abcdef"
    data = changed(MINIMAL, "auth.keys.k1", literal)
    assert parse_config(data, environ={}).auth.keys["k1"].reveal() == literal


def test_secret_repr_is_masked() -> None:
    assert KEY_1 not in repr(Secret(KEY_1))


def test_secret_str_is_masked() -> None:
    assert KEY_1 not in str(Secret(KEY_1))
    assert KEY_1 not in f"{Secret(KEY_1)}"


def test_secret_reveals_its_value() -> None:
    assert Secret(KEY_1).reveal() == KEY_1


def test_secrets_compare_by_value() -> None:
    assert (Secret(KEY_1) == Secret(KEY_1), Secret(KEY_1) == Secret(KEY_2), Secret(KEY_1) == KEY_1) \
        == (True, False, False)


@pytest.mark.parametrize("secret", ALL_SECRETS[:-1])
def test_config_repr_never_shows_a_secret(secret: str) -> None:
    assert secret not in repr(parse_full())


# --- parse_duration ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (0, 0.0),
        (30, 30.0),
        (2.5, 2.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        (" 2 h ", 7200.0),
        ("0s", 0.0),
    ],
)
def test_duration_is_parsed_to_seconds(value: object, seconds: float) -> None:
    assert parse_duration(value, "server.x") == seconds


@pytest.mark.parametrize(
    "value",
    [None, True, False, "", "s", "abc", "5y", "5 minutes", "1h30m", "-1", "-1s", "1e3", "1.5.2s", "5M",
     [1], {"s": 1}],
)
def test_malformed_duration_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^server\.x: expected a duration"):
        parse_duration(value, "server.x")


@pytest.mark.parametrize("value", [-1, -0.5, float("inf"), float("nan")])
def test_negative_or_infinite_duration_is_a_config_error(value: float) -> None:
    with pytest.raises(ConfigError, match=r"^server\.x: must be a finite, non-negative duration"):
        parse_duration(value, "server.x")


# --- load_config ------------------------------------------------------------------------------

MINIMAL_TOML = f"""
[auth.keys]
k1 = "{KEY_1}"

[sources.photos]
bucket = "from-toml"
"""


def bucket_of(config: Config) -> str:
    return config.sources["photos"].bucket


def test_load_config_reads_the_given_file(tmp_path: Path) -> None:
    path = tmp_path / "imgproxy.toml"
    path.write_text(MINIMAL_TOML, encoding="utf-8")
    assert bucket_of(load_config(path, environ={})) == "from-toml"


def test_load_config_accepts_a_string_path(tmp_path: Path) -> None:
    path = tmp_path / "imgproxy.toml"
    path.write_text(MINIMAL_TOML, encoding="utf-8")
    assert bucket_of(load_config(str(path), environ={})) == "from-toml"


def test_load_config_reads_the_file_named_by_imgproxy_config(tmp_path: Path) -> None:
    path = tmp_path / "imgproxy.toml"
    path.write_text(MINIMAL_TOML, encoding="utf-8")
    assert bucket_of(load_config(None, environ={"IMGPROXY_CONFIG": str(path)})) == "from-toml"


def test_load_config_reads_toml_from_imgproxy_config_toml() -> None:
    assert bucket_of(load_config(None, environ={"IMGPROXY_CONFIG_TOML": MINIMAL_TOML})) == "from-toml"


def test_explicit_path_wins_over_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "imgproxy.toml"
    path.write_text(MINIMAL_TOML, encoding="utf-8")
    other = MINIMAL_TOML.replace("from-toml", "from-env")
    environ = {"IMGPROXY_CONFIG": "/nonexistent.toml", "IMGPROXY_CONFIG_TOML": other}
    config = load_config(path, environ=environ)
    assert bucket_of(config) == "from-toml"


def test_imgproxy_config_toml_wins_over_a_baked_in_imgproxy_config(tmp_path: Path) -> None:
    path = tmp_path / "imgproxy.toml"
    path.write_text(MINIMAL_TOML, encoding="utf-8")
    other = MINIMAL_TOML.replace("from-toml", "from-env")
    config = load_config(None, environ={"IMGPROXY_CONFIG": str(path), "IMGPROXY_CONFIG_TOML": other})
    assert bucket_of(config) == "from-env"


def test_loaded_config_resolves_env_secrets_from_the_given_environ(tmp_path: Path) -> None:
    path = tmp_path / "imgproxy.toml"
    path.write_text(MINIMAL_TOML.replace(KEY_1, "env:K1"), encoding="utf-8")
    assert load_config(path, environ={"K1": KEY_2}).auth.keys["k1"].reveal() == KEY_2


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: no such config file$"):
        load_config(path, environ={})


def test_unreadable_config_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: cannot read"):
        load_config(tmp_path, environ={})


def test_non_utf8_config_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path, environ={})


def test_invalid_toml_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[auth.keys]\nk1 = "unterminated\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid TOML"):
        load_config(path, environ={})


def test_invalid_toml_in_imgproxy_config_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^\$IMGPROXY_CONFIG_TOML: not valid TOML"):
        load_config(None, environ={"IMGPROXY_CONFIG_TOML": "[server\nport = 1"})


def test_invalid_toml_error_does_not_echo_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(f'[auth.keys]\nk1 = "{KEY_1}" "{KEY_2}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert KEY_1 not in str(caught.value)
    assert KEY_2 not in str(caught.value)


def test_no_config_source_at_all_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^config: give --config PATH"):
        load_config(None, environ={})


def test_example_config_is_a_working_config() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    environ = {"IMGPROXY_SIGNING_KEY": KEY_1, "IMGPROXY_SIGNING_KEY_BI": KEY_2,
               "IMGPROXY_TOKEN_HR": HR_TOKEN, "IMGPROXY_TOKEN_OPS": OPS_TOKEN}
    config = load_config(example, environ=environ)
    assert set(config.sources) == {"photos", "scans"}
    assert config.auth.key_limits["bi"].durable


def test_cache_dir_is_unset_by_default_and_read_as_given() -> None:
    assert parse_config(copy.deepcopy(MINIMAL), environ={}).cache.dir is None
    assert parse_config(changed(MINIMAL, "cache.dir", "/run/imgproxy/cache"), environ={}).cache.dir == \
        "/run/imgproxy/cache"


@pytest.mark.parametrize("value", ["cache", "./cache", "/run/../etc", "/", "//", 7])
def test_a_cache_dir_must_be_an_absolute_path_without_dot_dot(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^cache\.dir: "):
        parse_config(changed(MINIMAL, "cache.dir", value), environ={})
