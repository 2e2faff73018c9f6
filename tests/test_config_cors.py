"""``server.cors_origins`` and friends: origins as browsers serialize them, or a ConfigError."""

from __future__ import annotations

from typing import Any

import pytest
from support import config_data

from imgproxy.config import ConfigError, ResourcePolicy, parse_config


def server(**keys: Any) -> Any:
    data = config_data("http://127.0.0.1:9", "bucket")
    data["server"].update(keys)
    return parse_config(data, environ={}).server


@pytest.mark.parametrize(("written", "kept"), [
    ("https://dash.example.com", "https://dash.example.com"),
    ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
    ("http://[::1]:8000", "http://[::1]:8000"),
    ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ("HTTPS://Dash.Example.COM", "https://dash.example.com"),  # browsers send it lowercased
    ("https://dash.example.com:8443", "https://dash.example.com:8443"),
])
def test_an_origin_is_kept_as_the_browser_serializes_it(written: str, kept: str) -> None:
    assert server(cors_origins=[written]).cors_origins == (kept,)


@pytest.mark.parametrize(("written", "says"), [
    ("https://dash.example.com/", "no path"),
    ("https://dash.example.com/app", "no path"),
    ("https://dash.example.com?x=1", "no path"),
    ("null", "never matches"),
    ("dash.example.com", "is not an origin"),
    ("ftp://dash.example.com", "is not an origin"),
    ("https://user@dash.example.com", "is not an origin"),
    ("https://dash.example.com:443", "default port"),
    ("http://dash.example.com:80", "default port"),
    ("https://dash.example.com:70000", "out of range"),
    ("https://bücher.example", "punycode"),
    ("https://dash.example.com ", "is not an origin"),
    ("https://*.example.com", "is not an origin"),
    ("", "is not an origin"),
])
def test_an_origin_a_browser_never_sends_is_refused(written: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"^server.cors_origins: .*{says}"):
        server(cors_origins=[written])


def test_star_is_any_origin_without_credentials() -> None:
    assert server(cors_origins=["*"]).cors_origins == ("*",)


def test_star_with_credentials_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^server\.cors_origins: '\*' with server\.cors_credentials"):
        server(cors_origins=["*"], cors_credentials=True)


def test_star_beside_other_origins_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'\*' alone"):
        server(cors_origins=["*", "https://dash.example.com"])


def test_an_origin_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        server(cors_origins=["https://dash.example.com", "https://DASH.example.com"])


def test_exact_origins_with_credentials_are_accepted() -> None:
    config = server(cors_origins=["https://dash.example.com"], cors_credentials=True, cors_max_age="1h")
    assert (config.cors_credentials, config.cors_max_age) == (True, 3600.0)


def test_cors_is_off_by_default() -> None:
    config = server()
    assert (config.cors_origins, config.cors_credentials, config.cross_origin_resource_policy) == \
        ((), False, None)


@pytest.mark.parametrize("policy", ["same-origin", "same-site", "cross-origin"])
def test_cross_origin_resource_policy_takes_the_three_values(policy: str) -> None:
    assert server(cross_origin_resource_policy=policy).cross_origin_resource_policy is ResourcePolicy(policy)


def test_another_cross_origin_resource_policy_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^server\.cross_origin_resource_policy: must be"):
        server(cross_origin_resource_policy="same-host")
