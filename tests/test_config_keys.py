"""``[auth.keys.NAME]`` as tables, ``file:`` secrets, ``auth.revocations`` and ``durable_max_age``."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from imgproxy.config import ConfigError, KeyLimits, Scope, parse_config

KEY = "config-keys-test-signing-key-0123456789abcdef"
BASE: dict[str, Any] = {"auth": {"keys": {"k1": KEY}}, "sources": {"photos": {"bucket": "acme-photos"}}}


def with_auth(**auth: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    data["auth"].update(auth)
    return data


def test_a_plain_key_has_no_limits_but_auth_max_ttl() -> None:
    config = parse_config(with_auth(max_ttl="2d"), environ={})
    assert config.auth.key_limits["k1"] == KeyLimits(max_ttl=2 * 86400)
    assert config.auth.key_limits["k1"].allows("any", "thing")


def test_a_key_table() -> None:
    keys = {"k1": KEY, "bi": {"secret": "env:BI_KEY", "scopes": ["photos:employees/*", "logos:*"],
                              "max_ttl": "1h", "durable": True}}
    config = parse_config(with_auth(keys=keys), environ={"BI_KEY": KEY + "-bi"})
    assert config.auth.keys["bi"].reveal() == KEY + "-bi"
    limits = config.auth.key_limits["bi"]
    assert limits == KeyLimits((Scope("photos", "employees/", True), Scope("logos", "", True)), 3600.0, True)
    assert limits.allows("photos", "employees/a.jpg")
    assert not limits.allows("photos", "ids/a.jpg")
    assert KEY not in repr(config)


@pytest.mark.parametrize(("table", "message"), [
    ({"scopes": ["photos:*"]}, "auth.keys.bi.secret: is required"),
    ({"secret": "short", "scopes": ["photos:*"]}, "at least 32 bytes"),
    ({"secret": KEY, "scopes": []}, "would allow nothing"),
    ({"secret": KEY, "scopes": ["photos:a*b"]}, "only at the end"),
    ({"secret": KEY, "max_ttl": "8d"}, "auth.keys.bi.max_ttl"),
    ({"secret": KEY, "durable": "yes"}, "auth.keys.bi.durable"),
    ({"secret": KEY, "scope": ["photos:*"]}, "auth.keys.bi.scope: unknown key"),
])
def test_a_bad_key_table_names_its_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(with_auth(keys={"k1": KEY, "bi": table}), environ={})
    assert KEY not in str(caught.value)


def test_a_key_max_ttl_beyond_auth_max_ttl_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"auth\.keys\.bi\.max_ttl"):
        parse_config(with_auth(max_ttl="1h", keys={"bi": {"secret": KEY, "max_ttl": "2h"}}), environ={})


def test_sign_ttl_must_fit_the_sign_with_keys_max_ttl() -> None:
    with pytest.raises(ConfigError, match=r"auth\.sign_ttl.*auth\.keys\.bi"):
        parse_config(with_auth(keys={"bi": {"secret": KEY, "max_ttl": "10m"}}), environ={})
    parse_config(with_auth(sign_ttl="5m", keys={"bi": {"secret": KEY, "max_ttl": "10m"}}), environ={})


def test_a_file_secret(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text(KEY + "\n", encoding="utf-8")
    config = parse_config(with_auth(keys={"k1": f"file:{path}"}), environ={})
    assert config.auth.keys["k1"].reveal() == KEY
    path.write_text(KEY + "-2\r\n", encoding="utf-8")
    again = parse_config(with_auth(keys={"k1": f"file:{path}"}), environ={})
    assert again.auth.keys["k1"].reveal() == KEY + "-2"


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read"), (b"", "is empty"), (b"\n", "is empty"), (b"\xff" * 40, "not UTF-8"),
    (b"k" * (64 * 1024 + 1), "larger than"),
])
def test_a_bad_file_secret_names_the_key_and_the_file(tmp_path: Path, content: bytes | None,
                                                      message: str) -> None:
    path = tmp_path / "k"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config(with_auth(keys={"k1": f"file:{path}"}), environ={})
    assert "auth.keys.k1" in str(caught.value)


def test_file_without_a_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a path"):
        parse_config(with_auth(keys={"k1": "file:"}), environ={})


def test_revocations_and_durable_max_age() -> None:
    config = parse_config(with_auth(durable_max_age="10m", revocations=[
        {"kid": "k1", "before": "2026-12-01T00:00:00Z"}, {"scope": "photos:x/*"}]), environ={})
    assert config.auth.durable_max_age == 600
    assert [r.kind for r in config.auth.revocations] == ["kid", "scope"]
    assert config.auth.revocations[0].before == 1796083200.0


def test_revocations_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match=r"auth\.revocations: expected a list"):
        parse_config(with_auth(revocations={"kid": "k1"}), environ={})
