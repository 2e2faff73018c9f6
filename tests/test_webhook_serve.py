"""An ``imgproxy serve`` process with ``[auth.webhook]``: its URL's credentials and its header
secrets (from the environment) appear nowhere in what the process writes, neither when a call
fails nor when the config is refused."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idp import AUDIENCE, FakeIdp
from processes import Server, free_port, http_get, launch_server, run, wait_for, write_config
from support import config_data

JPEG = b"\xff\xd8\xff\xe0" + b"v" * 200
PASSWORD = "url-pw-s3cret"
HEADER_SECRET = "hdr-s3cret-value"


def webhook_config(moto_endpoint: str, bucket: str, idp: FakeIdp, url: str) -> dict[str, Any]:
    data = config_data(moto_endpoint, bucket)
    data["auth"]["oidc"] = {"corp": {"issuer": idp.issuer, "audience": AUDIENCE, "rules": [
        {"claim": "groups", "equals": "hr", "scopes": ["photos:employees/*"]}]}}
    data["auth"]["webhook"] = {"url": url, "headers": {"X-Api-Key": "env:WEBHOOK_KEY"}}
    return data


@pytest.fixture
def server(tmp_path: Path, moto_endpoint: str, s3: Any, bucket: str, idp: FakeIdp) -> Iterator[Server]:
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    dead = f"http://imgproxy:{PASSWORD}@127.0.0.1:{free_port()}/allow"
    running = launch_server(tmp_path / "serve", webhook_config(moto_endpoint, bucket, idp, dead),
                            env={"WEBHOOK_KEY": HEADER_SECRET})
    yield running
    running.process.kill()


def test_a_failed_call_is_denied_and_logged_without_the_url_or_headers(server: Server, idp: FakeIdp) -> None:
    token = idp.token(time.time())
    reply = http_get(server.base_url + "/img/photos/employees/ada.jpg", {"Authorization": f"Bearer {token}"})
    assert reply.status == 403
    assert b'"webhook_denied"' in reply.body
    wait_for(lambda: "webhook=error" in server.process.stderr, "the access log line")
    output = server.process.stderr + server.process.stdout
    assert "auth.webhook: a call failed (connect)" in output
    for secret in (PASSWORD, HEADER_SECRET):
        assert secret not in output
        assert secret.encode() not in reply.body


def test_a_refused_webhook_url_is_not_shown(tmp_path: Path, moto_endpoint: str, bucket: str,
                                            idp: FakeIdp) -> None:
    data = webhook_config(moto_endpoint, bucket, idp, f"gopher://imgproxy:{PASSWORD}@app.example/allow")
    result = run("serve", "--config", str(write_config(tmp_path, data)), env={"WEBHOOK_KEY": HEADER_SECRET})
    assert result.returncode != 0
    assert "auth.webhook.url: must be an http:// or https:// URL" in result.stderr
    assert PASSWORD not in result.stderr + result.stdout
