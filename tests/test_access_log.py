"""The access log line through the whole stack: one per request, logfmt or JSON, no secrets."""

from __future__ import annotations

import io
import json
import logging
import shlex
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from support import TOKEN, ProxyFactory, config_data

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import ConfigError, LogFormat, parse_config
from imgproxy.protocol.accesslog import format_line

KEY = "employees/Zoë Smith.jpg"


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 240), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def make_proxy(proxy: ProxyFactory, s3: Any, bucket: str) -> ProxyFactory:
    """``await make_proxy(log={...}, server={...})``: a proxy on a bucket holding KEY."""
    s3.put_object(Bucket=bucket, Key=KEY, Body=jpeg(), ContentType="image/jpeg")
    return proxy.preset(transform={"workers": 1})


async def access_lines(client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture, url: str,
                       headers: dict[str, str] | None = None) -> list[str]:
    with caplog.at_level(logging.INFO, logger="imgproxy.access"):
        async with client.get(url, headers=headers or {}) as response:
            await response.read()
    return [r.getMessage() for r in caplog.records if r.name == "imgproxy.access"]


def logfmt(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(line))


async def test_a_json_line_has_every_field_of_a_transform(
        make_proxy: ProxyFactory, signer: UrlSigner, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_proxy(log={"format": "json"})
    [line] = await access_lines(client, caplog, signer.sign("photos", KEY, params={"w": "100"}))
    fields = json.loads(line)
    assert fields["method"] == "GET"
    assert fields["source"] == "photos"
    assert fields["status"] == 200
    assert fields["bytes"] > 0
    assert fields["delivery"] == "stream"
    assert fields["cache"] == "MISS"
    assert fields["auth"] == "signature:k1"
    assert len(fields["request_id"]) >= 8
    assert fields["duration_ms"] >= fields["transform_ms"] > 0
    assert fields["storage_ms"] > 0


async def test_a_json_line_of_a_streamed_original_has_its_delivery_and_bytes(
        make_proxy: ProxyFactory, signer: UrlSigner, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_proxy(log={"format": "json"})
    [line] = await access_lines(client, caplog, signer.sign("photos", KEY))
    fields = json.loads(line)
    assert (fields["status"], fields["delivery"], fields["bytes"]) == (200, "stream", len(jpeg()))
    assert "cache" not in fields
    assert 0 < fields["storage_ms"] <= fields["duration_ms"]  # S3's answer to the GET


async def test_logfmt_is_the_default_and_carries_the_same_fields(
        make_proxy: ProxyFactory, signer: UrlSigner, caplog: pytest.LogCaptureFixture) -> None:
    client = await make_proxy()
    [line] = await access_lines(client, caplog, signer.sign("photos", KEY, params={"w": "100"}))
    fields = logfmt(line)
    assert {"request_id", "method", "route", "status", "bytes", "duration_ms", "source", "auth",
            "delivery", "cache", "storage_ms", "transform_ms", "client"} <= set(fields)
    assert (fields["status"], fields["cache"], fields["source"]) == ("200", "MISS", "photos")


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
async def test_no_signature_or_token_is_logged(
        make_proxy: ProxyFactory, signer: UrlSigner, caplog: pytest.LogCaptureFixture, fmt: str) -> None:
    client = await make_proxy(log={"format": fmt})
    url = signer.sign("photos", KEY, params={"w": "90"})
    sig = parse_qs(urlsplit(url).query)["sig"][0]
    with caplog.at_level(logging.DEBUG, logger="imgproxy"):
        for target, headers in ((url, {}), (f"/img/photos/{KEY}", {"Authorization": f"Bearer {TOKEN}"}),
                                (url.replace(sig, "A" * len(sig)), {})):
            async with client.get(target, headers=headers) as response:
                await response.read()
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("imgproxy"))
    assert len([r for r in caplog.records if r.name == "imgproxy.access"]) == 3
    assert sig not in ours
    assert TOKEN not in ours
    assert "sig=" not in ours
    assert "Zo" not in ours  # the key: personal data, not logged unless enabled


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
async def test_object_keys_are_logged_only_when_enabled(
        make_proxy: ProxyFactory, signer: UrlSigner, caplog: pytest.LogCaptureFixture, fmt: str) -> None:
    client = await make_proxy(log={"format": fmt}, server={"log_keys": True})
    [line] = await access_lines(client, caplog, signer.sign("photos", KEY))
    fields = json.loads(line) if fmt == "json" else logfmt(line)
    assert fields["key"] == KEY


@pytest.mark.parametrize(("fields", "fmt", "expected"), [
    ({"status": "200", "key": "a b\"c"}, LogFormat.LOGFMT, 'status=200 key="a b\\"c"'),
    ({"status": "200", "key": "line\nbreak"}, LogFormat.LOGFMT, 'status=200 key="line\\nbreak"'),
    ({"status": "200", "duration_ms": "1.5", "key": "Zoë"}, LogFormat.JSON,
     '{"status":200,"duration_ms":1.5,"key":"Zoë"}'),
])
def test_format_line(fields: dict[str, str], fmt: LogFormat, expected: str) -> None:
    assert format_line(fields, fmt) == expected


def test_an_unknown_log_format_is_a_config_error(moto_endpoint: str) -> None:
    data = config_data(moto_endpoint, "b1")
    data["log"] = {"format": "xml"}
    with pytest.raises(ConfigError, match=r"^log\.format: must be 'logfmt' or 'json'"):
        parse_config(data, environ={})
