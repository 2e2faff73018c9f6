"""``[auth.grants]`` and ``auth.plain_widths``: defaults, and every refusal naming its key."""

from __future__ import annotations

from typing import Any

import pytest
from support import config_data, merged

from imgproxy.config import ConfigError, parse_config
from imgproxy.config.grants import PLAIN_COOKIE, SECURE_COOKIE


def parse(auth: dict[str, Any] | None = None, server: dict[str, Any] | None = None) -> Any:
    data = merged(config_data("http://127.0.0.1:9", "grants-bucket"),
                  {"auth": auth or {}, "server": server or {}})
    return parse_config(data, environ={})


def test_grants_are_off_unless_the_table_is_there() -> None:
    assert parse().auth.grants is None
    assert parse().auth.plain_widths == ()


def test_an_empty_table_turns_grants_on_with_defaults() -> None:
    config = parse({"grants": {}})
    grants = config.auth.grants
    assert grants is not None
    assert (grants.key, grants.ttl, grants.link_ttl, grants.secure) == ("k1", 8 * 3600, 300, True)
    assert grants.cookie_name == SECURE_COOKIE
    assert config.server.cors_credentials  # a cross-origin dashboard sends the cookie


@pytest.mark.parametrize(("auth", "server", "message"), [
    ({"grants": {"key": "nope"}}, {}, r"^auth\.grants\.key: 'nope' is not a key"),
    ({"grants": {"ttl": "30s"}}, {}, r"^auth\.grants\.ttl: must be between"),
    ({"grants": {"ttl": "2d"}}, {}, r"^auth\.grants\.ttl: must be between"),
    ({"grants": {"link_ttl": "2h"}}, {}, r"^auth\.grants\.link_ttl"),
    ({"grants": {"other": 1}}, {}, r"^auth\.grants\.other"),
    ({"grants": {"secure": False}}, {"host": "0.0.0.0"},  # noqa: S104
     r"^auth\.grants\.secure: false only"),
    ({"grants": {}}, {"cors_origins": ["*"]}, r"^server\.cors_origins: '\*' is not allowed"),
    ({"plain_widths": [96, "x"]}, {}, r"^auth\.plain_widths: expected a list of whole numbers"),
    ({"plain_widths": [0]}, {}, r"^auth\.plain_widths: at most"),
    ({"plain_widths": list(range(1, 40))}, {}, r"^auth\.plain_widths: at most"),
])
def test_refusals_name_the_key(auth: dict[str, Any], server: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(auth, server)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_insecure_cookies_only_on_loopback(host: str) -> None:
    grants = parse({"grants": {"secure": False}}, {"host": host}).auth.grants
    assert grants is not None
    assert grants.cookie_name == PLAIN_COOKIE


def test_plain_widths_are_sorted_and_unique() -> None:
    assert parse({"plain_widths": [192, 96, 96]}).auth.plain_widths == (96, 192)
