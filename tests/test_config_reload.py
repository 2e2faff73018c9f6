"""What a reload may change (config/restart.py), the config's version (config/digest.py), and
the polled revocation object's keys ([auth] revocations_url, revocations_interval,
[auth.revocations_s3]) and JSON format (config/revocations.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from imgproxy.config import ConfigError, parse_config
from imgproxy.config.digest import config_version
from imgproxy.config.restart import apply_reload
from imgproxy.config.revocations import MAX_OBJECT_BYTES, parse_revocation_object

KEY = "reload-test-signing-key-0123456789abcdef0123"
NEW_KEY = "reload-test-new-signing-key-0123456789abcdef"
BASE: dict[str, Any] = {
    "server": {"port": 8080},
    "auth": {"keys": {"k1": KEY}},
    "sources": {"photos": {"bucket": "photos-bucket", "prefix": "public/"}},
}


def config(**sections: dict[str, Any]) -> Any:
    data = copy.deepcopy(BASE)
    for name, table in sections.items():
        data[name] = {**data.get(name, {}), **table}
    return parse_config(data, environ={})


def with_source(**keys: Any) -> Any:
    return config(sources={"photos": {**BASE["sources"]["photos"], **keys}})


# --- apply_reload: the config in force, and what waits for a restart ----------------------

@pytest.mark.parametrize(("loaded", "restart"), [
    (config(auth={"keys": {"k1": KEY, "k2": NEW_KEY}}), ()),
    (config(auth={"durable_max_age": "10m"}), ()),
    (config(server={"public_url": "https://img.example.com"}), ()),
    (config(transform={"max_width": 100, "jpeg_quality": 50}), ()),
    (with_source(cache_control="no-store"), ()),
    (with_source(delivery={"mode": "stream"}), ()),
    (config(server={"port": 9000}), ("server.port",)),
    (config(server={"workers": 4, "send_timeout": 5}), ("server.workers", "server.send_timeout")),
    (config(transform={"workers": 3}), ("transform.workers",)),
    (config(cache={"variant_bytes": 0}), ("cache.variant_bytes",)),
    (config(metrics={"port": 9999}), ("metrics.port",)),
    (config(log={"format": "json"}), ("log.format",)),
    (config(auth={"sign_max_bytes": "2MiB"}), ("auth.sign_max_bytes",)),
    (with_source(bucket="other-bucket"), ("sources.photos.bucket",)),
    (with_source(prefix="private/"), ("sources.photos.prefix",)),
    (with_source(endpoint_url="http://minio.local:9000"), ("sources.photos.endpoint_url",)),
    (with_source(delivery={"hot_window": "5m", "hot_requests": 3}), ("sources.photos.delivery.hot_window",)),
])
def test_a_reload_names_exactly_the_keys_that_need_a_restart(loaded: Any, restart: tuple[str, ...]) -> None:
    _, changed = apply_reload(config(), loaded)
    assert changed == restart


def test_a_reload_applies_what_it_can_and_keeps_the_rest_as_running() -> None:
    loaded = parse_config({**copy.deepcopy(BASE), "server": {"port": 9000, "public_url": "https://a.example"},
                           "auth": {"keys": {"k2": NEW_KEY}},
                           "sources": {"photos": {"bucket": "elsewhere", "cache_control": "no-store"}}},
                          environ={})
    in_force, _ = apply_reload(config(), loaded)
    assert in_force.server.port == 8080
    assert in_force.server.public_url == "https://a.example"
    assert list(in_force.auth.keys) == ["k2"]
    assert in_force.sources["photos"].bucket == "photos-bucket"
    assert in_force.sources["photos"].prefix == "public/"
    assert in_force.sources["photos"].cache_control == "no-store"


def test_adding_a_source_needs_a_restart_and_keeps_the_running_sources() -> None:
    loaded = config(sources={"photos": BASE["sources"]["photos"], "archive": {"bucket": "archive-bucket"}})
    in_force, changed = apply_reload(config(), loaded)
    assert changed == ("sources.archive",)
    assert list(in_force.sources) == ["photos"]


def test_an_unchanged_config_reloads_to_an_equal_one() -> None:
    in_force, changed = apply_reload(config(), config())
    assert changed == ()
    assert in_force == config()


# --- config_version ----------------------------------------------------------------------

def test_the_same_config_has_the_same_version() -> None:
    assert config_version(config()) == config_version(config())
    assert len(config_version(config())) == 12


def test_a_changed_secret_changes_the_version_without_showing_it() -> None:
    other = config(auth={"keys": {"k1": NEW_KEY}})
    assert config_version(other) != config_version(config())
    assert KEY not in config_version(config())


def test_table_order_does_not_change_the_version() -> None:
    two = {"k1": KEY, "k2": NEW_KEY}
    assert config_version(config(auth={"keys": two, "sign_with": "k1"})) == config_version(
        config(auth={"keys": dict(reversed(two.items())), "sign_with": "k1"}))


# --- auth.revocations_url, revocations_interval, [auth.revocations_s3] --------------------

def polled(**auth: Any) -> Any:
    return config(auth={"revocations_url": "s3://revocations-bucket/bi/list.json", **auth})


def test_revocations_url_gives_the_bucket_to_revocations_s3() -> None:
    auth = polled(revocations_interval="1s", revocations_s3={"region": "eu-west-1"}).auth
    assert auth.revocations_url == "s3://revocations-bucket/bi/list.json"
    assert auth.revocations_s3.bucket == "revocations-bucket"
    assert auth.revocations_s3.region == "eu-west-1"
    assert auth.revocations_interval == 1.0


def test_revocations_interval_defaults_to_30_seconds() -> None:
    assert polled().auth.revocations_interval == 30.0


@pytest.mark.parametrize(("auth", "message"), [
    ({"revocations_url": "https://bucket/list.json"}, "auth.revocations_url: expected an object URL"),
    ({"revocations_url": "s3://bucket/"}, "auth.revocations_url: expected an object URL"),
    ({"revocations_url": "s3://bucket/dir/"}, "auth.revocations_url: expected an object URL"),
    ({"revocations_url": "s3://bucket"}, "auth.revocations_url: expected an object URL"),
    ({"revocations_url": "s3://b/list.json"}, "auth.revocations_url: expected an object URL"),
    ({"revocations_url": "s3://revocations-bucket/a\nb"}, "auth.revocations_url: expected an object URL"),
    ({"revocations_s3": {"region": "eu-west-1"}}, "auth.revocations_s3: only with auth.revocations_url"),
    ({"revocations_url": "s3://revocations-bucket/l.json", "revocations_interval": "0.5s"},
     "auth.revocations_interval: must be between 1s and 3600s"),
    ({"revocations_url": "s3://revocations-bucket/l.json", "revocations_interval": "2h"},
     "auth.revocations_interval: must be between 1s and 3600s"),
    ({"revocations_url": "s3://revocations-bucket/l.json", "revocations_s3": {"bucket": "x-bucket"}},
     "auth.revocations_s3.bucket: the bucket and key come from auth.revocations_url"),
    ({"revocations_url": "s3://revocations-bucket/l.json", "revocations_s3": {"prefix": "a/"}},
     "auth.revocations_s3.prefix: the bucket and key come from auth.revocations_url"),
    ({"revocations_url": "s3://revocations-bucket/l.json", "revocations_s3": {"cache_control": "x"}},
     "auth.revocations_s3.cache_control: only for sources"),
    ({"revocations_url": "s3://revocations-bucket/l.json", "revocations_s3": {"colour": "red"}},
     "auth.revocations_s3.colour: unknown key"),
])
def test_bad_revocation_object_settings_are_refused(auth: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config(auth=auth)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("url", ["s3://photos-bucket/public/revocations.json",
                                 "s3://photos-bucket/public/deep/list.json"])
def test_a_revocation_object_a_source_serves_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^auth.revocations_url: the object is inside sources.photos"):
        config(auth={"revocations_url": url})


def test_a_revocation_object_beside_a_sources_prefix_is_accepted() -> None:
    assert config(auth={"revocations_url": "s3://photos-bucket/private/revocations.json"}).auth.revocations_s3


def test_a_revocation_object_in_the_variant_store_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^auth.revocations_url: the object is inside cache.store"):
        config(auth={"revocations_url": "s3://variants/v/revocations.json"},
               cache={"store": {"bucket": "variants", "prefix": "v/"}})


# --- the polled object's JSON ------------------------------------------------------------

def test_the_polled_object_holds_entries_as_the_config_does() -> None:
    body = (b'{"revocations": [{"kid": "bi", "before": "2026-12-01T00:00:00Z"},'
            b' {"scope": "photos:employees/bob*", "note": "left"}], "note": "ticket 13"}')
    entries = parse_revocation_object(body, "auth.revocations_url")
    assert [entry.kind for entry in entries] == ["kid", "scope"]
    assert entries[0].before == 1796083200.0


@pytest.mark.parametrize(("body", "message"), [
    (b"{", "rev: not valid JSON (line 1)"),
    (b"\xff", "rev: not UTF-8"),
    (b'{"revocations": NaN}', "rev: not valid JSON (bad value)"),
    (b"[]", 'rev: expected an object {"revocations": [...]}'),
    (b"{}", 'rev: expected an object {"revocations": [...]}'),
    (b'{"revocations": {}}', "rev.revocations: expected a list of tables"),
    (b'{"revocations": [], "extra": 1}', "rev.extra: unknown key"),
    (b'{"revocations": [{"kid": "bi"}]}', "rev.revocations[0]: a kid revocation needs 'before'"),
    (b'{"revocations": [{"sig": "short"}]}', "rev.revocations[0].sig: expected a URL's 43-character"),
    (b" " * (MAX_OBJECT_BYTES + 1), f"rev: larger than {MAX_OBJECT_BYTES} bytes"),
])
def test_a_bad_polled_object_is_refused_with_where(body: bytes, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_revocation_object(body, "rev")
    assert str(raised.value).startswith(message)


def test_a_bad_signature_entry_is_not_echoed() -> None:
    secretish = "x" * 42 + "!"
    with pytest.raises(ConfigError) as raised:
        parse_revocation_object(f'{{"revocations": [{{"sig": "{secretish}"}}]}}'.encode(), "rev")
    assert secretish not in str(raised.value)
