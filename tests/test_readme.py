"""The README is the operator's manual: its commands, tables and vector must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from imgproxy.auth.signing import canonical_form, sign_url
from imgproxy.config import load_config
from imgproxy.errors import all_error_classes

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines()]


def test_quickstart_has_a_demo_line_and_a_test_line() -> None:
    demo, tests = quickstart_commands()
    assert demo.endswith("imgproxy demo")
    assert "pytest" in tests


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert quickstart_commands()[1] in ci_lines


def test_error_table_matches_the_error_classes() -> None:
    table = README.split("<!-- errors-table:start -->", 1)[1].split("<!-- errors-table:end -->", 1)[0]
    rows = set(re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", table, flags=re.MULTILINE))
    classes = {(str(cls.status), cls.code) for cls in all_error_classes()}
    assert rows == classes


def test_signing_vector_in_readme_is_what_the_code_computes() -> None:
    secret = re.search(r"\| secret \| `([^`]+)` \|", README)
    sig = re.search(r"\| sig \| `([^`]+)` \|", README)
    canonical = re.search(r"\| canonical form \| `([^`]+)` \|", README)
    assert secret
    assert sig
    assert canonical
    params = {"exp": "1767225600", "kid": "k1", "w": "300"}
    assert canonical_form("photos", "employees/Zoë Smith+1.jpg", params) == canonical.group(1)
    url = sign_url("photos", "employees/Zoë Smith+1.jpg", secret=secret.group(1), exp=1767225600,
                   kid="k1", params={"w": "300"})
    assert url.endswith("&sig=" + sig.group(1))


def test_example_config_is_a_working_config() -> None:
    environ = {
        "IMGPROXY_SIGNING_KEY": "s" * 40,
        "IMGPROXY_SIGNING_KEY_BI": "b" * 40,
        "IMGPROXY_TOKEN_HR": "h" * 40,
        "IMGPROXY_TOKEN_OPS": "o" * 40,
    }
    config = load_config(ROOT / "config.example.toml", environ)
    assert set(config.sources) == {"photos", "scans"}
    assert config.sources["photos"].prefix == "public-profile/"
    assert [t.name for t in config.auth.tokens] == ["hr-service", "ops"]
    assert [rule.claim for rule in config.auth.oidc["corp"].rules] == ["groups", None]


def test_example_config_mentions_every_key() -> None:
    from dataclasses import fields

    from imgproxy.config import (
        AuthConfig,
        BudgetLimits,
        CacheConfig,
        DeliveryConfig,
        LimitsConfig,
        LogConfig,
        MetricsConfig,
        ServerConfig,
        SourceConfig,
        TokenConfig,
        TransformConfig,
    )
    from imgproxy.config.forward import ForwardConfig
    from imgproxy.config.grants import GrantsConfig
    from imgproxy.config.oidc import OidcConfig, ScopeRule

    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    sections = (ServerConfig, AuthConfig, SourceConfig, TokenConfig, TransformConfig, CacheConfig,
                DeliveryConfig, MetricsConfig, LogConfig, LimitsConfig, BudgetLimits, OidcConfig, ScopeRule,
                ForwardConfig, GrantsConfig)
    names = {f.name for cls in sections for f in fields(cls)}
    pattern = (r"^(#? ?{0} = |\[(auth|transform)\.{0}\.|\[sources\.\w+\.{0}\]|#? ?\[(cache|limits)\.{0}\]"
               r"|\[\[auth\.oidc\.\w+\.{0}\]\]|# \[auth\.{0}\]$)")
    internal = {"name", "key_limits"}  # key_limits: what the [auth.keys.KID] tables say, not a TOML key
    missing = sorted(n for n in names - internal if not re.search(pattern.format(n), text, re.MULTILINE))
    assert missing == []
