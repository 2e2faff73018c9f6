"""``[auth.forward]`` in a whole config: enough auth on its own, and the example and README
blocks are working config."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from imgproxy.config import ConfigError, Scope, parse_config

ROOT = Path(__file__).resolve().parent.parent
SECTION = {"trusted_proxies": ["10.0.0.5/32"], "rules": [{"scopes": ["photos:users/{sub}/*"]}]}


def test_forward_auth_alone_needs_a_key_hash_secret_for_the_access_log() -> None:
    data: dict[str, Any] = {"auth": {"forward": SECTION}, "sources": {"photos": {"bucket": "private-photos"}}}
    with pytest.raises(ConfigError, match=r"^log\.key_hash_secret: required when auth has only"):
        parse_config(data, environ={})
    forward = parse_config({**data, "log": {"key_hash_secret": "h" * 32}}, environ={}).auth.forward
    assert forward is not None
    assert (forward.user_header, forward.groups_header, forward.email_header) == (
        "X-Forwarded-User", "X-Forwarded-Groups", None)


def test_no_forward_table_means_forward_auth_is_off() -> None:
    data: dict[str, Any] = {"auth": {"tokens": {"t": {"token": "t" * 40, "scopes": ["*"]}}},
                            "sources": {"photos": {"bucket": "private-photos"}}}
    assert parse_config(data, environ={}).auth.forward is None


def test_the_example_configs_commented_block_is_a_working_section() -> None:
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    start = text.index("# [auth.forward]\n")
    block = "\n".join(line.removeprefix("# ") for line in text[start:].split("\n\n")[0].splitlines()
                      if line.startswith("# ") and not line.startswith("# Rules"))
    table = tomllib.loads(block)["auth"]["forward"]
    data = {"auth": {"forward": table}, "sources": {"photos": {"bucket": "private-photos"}},
            "log": {"key_hash_secret": "h" * 32}}
    forward = parse_config(data, environ={}).auth.forward
    assert forward is not None
    assert forward.email_header == "X-Forwarded-Email"
    assert dict(forward.extra_headers) == {"tenant_id": "X-Auth-Request-Tenant"}
    assert [rule.equals for rule in forward.rules] == ["employees"]


def test_the_readme_block_is_a_working_section() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```toml\n(\[auth\.forward\]\n.*?)```", readme, re.DOTALL)
    assert match
    data = {**tomllib.loads(match.group(1)), "sources": {"photos": {"bucket": "private-photos"}},
            "log": {"key_hash_secret": "h" * 32}}
    forward = parse_config(data, environ={}).auth.forward
    assert forward is not None
    assert forward.trusted_proxies == ("10.0.0.5/32",)
    assert forward.rules[0].scopes[0].text == "photos:employees/*"
    assert Scope.parse("photos:employees/*", "x").allows("photos", "employees/ada.jpg")
