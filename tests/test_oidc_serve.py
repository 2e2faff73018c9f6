"""An ``imgproxy serve`` process with ``[auth.oidc]`` pointing at a local IdP: IdP-sized tokens
(several KiB) pass the server's header limits, the access log names the user, and a token past
the bearer cap is refused as a token (401), not as a broken request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from idp import AUDIENCE, FakeIdp
from processes import Server, http_get, launch_server, wait_for
from support import config_data

from imgproxy.auth.tokens import MAX_TOKEN_CHARS

JPEG = b"\xff\xd8\xff\xe0" + b"p" * 400


@pytest.fixture
def server(tmp_path: Path, moto_endpoint: str, s3: Any, bucket: str, idp: FakeIdp) -> Iterator[Server]:
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=JPEG, ContentType="image/jpeg")
    data = config_data(moto_endpoint, bucket)
    data["auth"]["oidc"] = {"corp": {"issuer": idp.issuer, "audience": AUDIENCE, "rules": [
        {"claim": "groups", "equals": "hr", "scopes": ["photos:employees/*"]}]}}
    running = launch_server(tmp_path / "serve", data)
    yield running
    running.process.kill()


def padded_token(idp: FakeIdp, chars: int) -> str:
    """A valid token of exactly ``chars`` characters (a big claim, as IdPs with many groups send)."""
    now = time.time()
    base = len(idp.token(now, pad=""))
    pad = "x" * ((chars - base) * 3 // 4)
    token = idp.token(now, pad=pad)
    while len(token) < chars:
        pad += "x"
        token = idp.token(now, pad=pad)
    assert len(token) >= chars - 4
    return token


def get(server: Server, token: str) -> tuple[int, bytes]:
    reply = http_get(server.base_url + "/img/photos/employees/ada.jpg", {"Authorization": f"Bearer {token}"})
    return reply.status, reply.body


def test_a_several_kib_token_is_served_and_logged_by_its_user(server: Server, idp: FakeIdp) -> None:
    token = padded_token(idp, 6 * 1024)
    assert len(token) > 6000
    assert get(server, token) == (200, JPEG)
    wait_for(lambda: "auth=jwt:corp:ada" in server.process.stderr, "the access log line")
    log = server.process.stderr
    assert " sub=ada " in log
    assert token[:40] not in log + server.process.stdout


def test_a_token_at_the_bearer_cap_passes_the_header_limits(server: Server, idp: FakeIdp) -> None:
    token = padded_token(idp, MAX_TOKEN_CHARS - len("Bearer ") - 4)
    assert len("Bearer " + token) <= MAX_TOKEN_CHARS
    assert get(server, token)[0] == 200


def test_a_token_past_the_bearer_cap_is_401_invalid_token(server: Server, idp: FakeIdp) -> None:
    token = padded_token(idp, MAX_TOKEN_CHARS + 10)
    status, body = get(server, token)
    assert status == 401
    assert b'"invalid_token"' in body
