"""``[sources.NAME.fallback]``: defaults and every validation error, naming the key path."""

from __future__ import annotations

from typing import Any

import pytest

from imgproxy.config import ConfigError, parse_config
from imgproxy.config.fallback import FallbackConfig
from imgproxy.config.restart import apply_reload


def config(fallback: Any, **extra: Any) -> Any:
    data = {"auth": {"keys": {"k1": "k" * 32}},
            "sources": {"photos": {"bucket": "private-photos", "fallback": fallback}}, **extra}
    return parse_config(data, environ={})


def test_no_table_is_no_fallback_object_and_the_initials_defaults() -> None:
    source = parse_config({"auth": {"keys": {"k1": "k" * 32}},
                           "sources": {"photos": {"bucket": "private-photos"}}}, environ={}).sources["photos"]
    assert source.fallback == FallbackConfig()
    assert not source.fallback.has_object
    assert source.fallback.statuses == (404,)
    assert source.fallback.status is None
    assert source.fallback.cache_control == "private, max-age=60"


def test_a_full_table() -> None:
    fallback = config({"key": "defaults/silhouette.png", "statuses": [504, 404, 502], "status": 200,
                       "cache_control": "public, max-age=30"}).sources["photos"].fallback
    assert fallback == FallbackConfig(key="defaults/silhouette.png", statuses=(404, 502, 504), status=200,
                                      cache_control="public, max-age=30")


def test_auth_statuses_need_allow_auth_statuses() -> None:
    fallback = config({"builtin": "silhouette", "statuses": [403, 404], "allow_auth_statuses": True})
    assert fallback.sources["photos"].fallback.statuses == (403, 404)


@pytest.mark.parametrize(("fallback", "message"), [
    ({"statuses": [404, 403]}, "sources.photos.fallback.statuses: 403 would hide refused credentials"),
    ({"statuses": [401]}, "sources.photos.fallback.statuses: 401 would hide"),
    ({"key": "a.png", "builtin": "silhouette"}, "sources.photos.fallback: give key"),
    ({"builtin": "robot"}, "sources.photos.fallback.builtin: must be 'silhouette'"),
    ({"key": "../escape.png"}, "sources.photos.fallback.key: must be a key inside the source's prefix"),
    ({"key": "/abs.png"}, "sources.photos.fallback.key: must be a key inside"),
    ({"key": "a\nb.png"}, "sources.photos.fallback.key: must not contain control characters"),
    ({"statuses": [200]}, "sources.photos.fallback.statuses: 200 is not an error status"),
    ({"statuses": []}, "sources.photos.fallback.statuses: expected a list"),
    ({"statuses": ["404"]}, "sources.photos.fallback.statuses: expected a list"),
    ({"status": 302}, "sources.photos.fallback.status: must be 200"),
    ({"status": True}, "sources.photos.fallback.status: must be 200"),
    ({"cache_control": "max-age=60\r\nX: y"}, "sources.photos.fallback.cache_control: expected"),
    ({"keys": "a.png"}, "sources.photos.fallback"),
])
def test_invalid_fallback_tables_name_the_key(fallback: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(fallback)
    assert str(caught.value).startswith(message), str(caught.value)


def test_the_variant_store_has_no_fallback() -> None:
    with pytest.raises(ConfigError, match=r"cache\.store\.fallback: only for sources"):
        config({}, cache={"store": {"bucket": "variants", "fallback": {"builtin": "silhouette"}}})


def test_a_fallback_table_reloads_without_a_restart() -> None:
    running, loaded = config({"key": "defaults/a.png"}), config({"builtin": "silhouette", "status": 200})
    in_force, needs_restart = apply_reload(running, loaded)
    assert needs_restart == ()
    assert in_force.sources["photos"].fallback == FallbackConfig(builtin="silhouette", status=200)
