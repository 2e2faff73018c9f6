"""``[auth.webhook]`` in a whole config: defaults, bounds and errors naming the key path, the URL
and headers as secrets (never in an error or a repr), and the example and README blocks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from nginx_site import Authority

from imgproxy.config import ConfigError, parse_config
from imgproxy.config.webhook import OnError, WebhookConfig

ROOT = Path(__file__).resolve().parent.parent
URL = "https://imgproxy:pw-in-url-s3cret@app.example.com/authz?token=q-s3cret"
TOKENS = {"t": {"token": "t" * 40, "scopes": ["*"]}}


def webhook(environ: dict[str, str] | None = None, **section: Any) -> WebhookConfig:
    data = {"auth": {"tokens": TOKENS, "webhook": {"url": URL, **section}},
            "sources": {"photos": {"bucket": "private-photos"}}}
    config = parse_config(data, environ=environ or {}).auth.webhook
    assert config is not None
    return config


def refused(section: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    data = {"auth": {"tokens": TOKENS, "webhook": section},
            "sources": {"photos": {"bucket": "private-photos"}}}
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ=environ or {})
    return str(caught.value)


def test_the_defaults() -> None:
    config = webhook()
    assert config.url.reveal() == URL
    assert (config.timeout, config.cache_ttl, config.cache_entries, config.on_error, config.batch,
            config.ca_bundle, dict(config.headers)) == (0.2, 60.0, 100_000, OnError.DENY, False, None, {})


def test_no_webhook_table_means_no_webhook() -> None:
    data = {"auth": {"tokens": TOKENS}, "sources": {"photos": {"bucket": "private-photos"}}}
    assert parse_config(data, environ={}).auth.webhook is None


def test_the_url_and_headers_come_from_the_environment_and_stay_masked() -> None:
    environ = {"HOOK_URL": URL.replace("imgproxy:pw-in-url-s3cret@", ""), "HOOK_TOKEN": "Bearer h-s3cret"}
    config = webhook(environ, url="env:HOOK_URL", headers={"Authorization": "env:HOOK_TOKEN"})
    assert config.headers["Authorization"].reveal() == "Bearer h-s3cret"
    shown = repr(config) + str(config)
    for secret in ("pw-in-url-s3cret", "q-s3cret", "h-s3cret", "app.example.com"):
        assert secret not in shown


@pytest.mark.parametrize(("section", "message"), [
    ({}, r"^auth\.webhook\.url: is required$"),
    ({"url": "ftp://app/allow"}, r"^auth\.webhook\.url: must be an http:// or https:// URL"),
    ({"url": "https:///allow"}, r"^auth\.webhook\.url: must be an http:// or https:// URL"),
    ({"url": URL, "timeout": "0ms"}, r"^auth\.webhook\.timeout: must be between 0\.01s and 10s$"),
    ({"url": URL, "timeout": "30s"}, r"^auth\.webhook\.timeout: must be between"),
    ({"url": URL, "cache_ttl": "2h"}, r"^auth\.webhook\.cache_ttl: must be between 0s and 3600s$"),
    ({"url": URL, "cache_entries": 0}, r"^auth\.webhook\.cache_entries: must be between 1 and"),
    ({"url": URL, "on_error": "allow"}, r"^auth\.webhook\.on_error: choose deny \(403\) or unavailable"),
    ({"url": URL, "batch": "yes"}, r"^auth\.webhook\.batch: expected true or false$"),
    ({"url": URL, "retries": 3}, r"^auth\.webhook\.retries: unknown key$"),
    ({"url": URL, "headers": {"Bad Name": "x"}}, r"^auth\.webhook\.headers\.Bad Name: 'Bad Name' is not"),
    ({"url": URL, "headers": {"Content-Type": "text/plain"}}, r"^auth\.webhook\.headers\.Content-Type: "),
    ({"url": URL, "headers": {"X-Key": "env:NOPE"}},
     r"^auth\.webhook\.headers\.X-Key: environment variable NOPE is not set$"),
    ({"url": URL, "headers": {"X-Key": "a\nb"}},
     r"^auth\.webhook\.headers\.X-Key: the value holds a control"),
    ({"url": URL, "headers": {"Authorization": "Bearer x"}},
     r"^auth\.webhook\.headers: Authorization and credentials in url exclude each other"),
    ({"url": "http://app/allow", "ca_bundle": "/etc/hosts"}, r"^auth\.webhook\.ca_bundle: only for an https"),
    ({"url": URL, "ca_bundle": "/nonexistent.pem"}, r"^auth\.webhook\.ca_bundle: /nonexistent\.pem: no such"),
], ids=["no-url", "ftp", "no-host", "timeout-zero", "timeout-long", "ttl-long", "entries-zero", "on-error",
        "batch-type", "unknown-key", "header-name", "reserved-header", "header-env", "header-newline",
        "auth-twice", "ca-for-http", "ca-missing"])
def test_a_wrong_value_is_refused_naming_its_key(section: dict[str, Any], message: str) -> None:
    error = refused(section)
    assert re.search(message, error), error
    for secret in ("pw-in-url-s3cret", "q-s3cret", "app.example.com"):
        assert secret not in error


def test_a_bad_url_is_refused_without_showing_it() -> None:
    error = refused({"url": "gopher://user:pw-s3cret@host/x"})
    assert "pw-s3cret" not in error
    assert "(not shown: it is a secret)" in error


def test_an_https_url_may_name_a_ca_bundle(authority: Authority) -> None:
    assert webhook(ca_bundle=str(authority.ca)).ca_bundle == str(authority.ca)


def test_a_providers_groups_claim_is_a_claim_name() -> None:
    provider = {"issuer": "https://id.example.com/", "audience": "imgproxy", "scopes_claim": "s"}
    data: dict[str, Any] = {"auth": {"tokens": TOKENS, "oidc": {"corp": {**provider, "groups_claim": "a b"}}},
                            "sources": {"photos": {"bucket": "private-photos"}}}
    with pytest.raises(ConfigError, match=r"^auth\.oidc\.corp\.groups_claim: 'a b' is not a claim name$"):
        parse_config(data, environ={})
    data["auth"]["oidc"]["corp"]["groups_claim"] = "roles"
    assert parse_config(data, environ={}).auth.oidc["corp"].groups_claim == "roles"


def test_the_example_configs_commented_block_is_a_working_section() -> None:
    text = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    start = text.index("# [auth.webhook]\n")
    block = "\n".join(line.removeprefix("# ") for line in text[start:].split("\n\n")[0].splitlines()
                      if line.startswith("# ") and "ca_bundle" not in line)
    table = tomllib.loads(block)["auth"]["webhook"]
    config = webhook({"IMGPROXY_WEBHOOK_URL": "https://app.example.com/authz",
                      "IMGPROXY_WEBHOOK_TOKEN": "Bearer x"}, **table)
    assert config.headers["Authorization"].reveal() == "Bearer x"
    assert (config.timeout, config.on_error) == (0.2, OnError.DENY)


def test_the_readme_block_is_a_working_section() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```toml\n(\[auth\.webhook\]\n.*?)```", readme, re.DOTALL)
    assert match
    table = tomllib.loads(match.group(1))["auth"]["webhook"]
    config = webhook({"IMGPROXY_WEBHOOK_URL": "https://app.example.com/authz",
                      "IMGPROXY_WEBHOOK_TOKEN": "Bearer x"}, **table)
    assert config.cache_ttl == 60.0
