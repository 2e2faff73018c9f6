"""``imgproxy sign --durable/--sub``, scoped keys refused locally, ``verify-url`` and ``key-hash``,
through the real CLI and a real ``imgproxy serve`` against moto."""

from __future__ import annotations

import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from processes import PHOTO, PHOTO_KEY, Server, http_get, launch_server, run, write_config
from support import SIGNING_KEY, config_data

from imgproxy.auth.signing import sign_url

BI_KEY = "bi-cli-signing-key-0123456789abcdef-0123456"
KEYS: dict[str, Any] = {
    "k1": SIGNING_KEY,
    "bi": {"secret": "file:SECRET_FILE", "scopes": [f"photos:{PHOTO_KEY.split('/')[0]}/*"], "durable": True,
           "max_ttl": "2h"},
}


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def bi_data(endpoint: str, bucket: str, secret_file: Path, **auth: Any) -> dict[str, Any]:
    secret_file.write_text(BI_KEY + "\n", encoding="utf-8")
    data = config_data(endpoint, bucket)
    keys = {**KEYS, "bi": {**KEYS["bi"], "secret": f"file:{secret_file}"}}
    data["auth"].update({"keys": keys, "sign_with": "k1", **auth})
    return data


@pytest.fixture
def served(tmp_path: Path, moto_endpoint: str, bucket: str, s3: Any) -> Iterator[Server]:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    s3.put_object(Bucket=bucket, Key="elsewhere/x.png", Body=PHOTO, ContentType="image/png")
    server = launch_server(tmp_path / "serve", bi_data(moto_endpoint, bucket, tmp_path / "bi.key",
                                                       durable_max_age="20m"))
    try:
        yield server
    finally:
        server.process.kill()


def sign(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return run("sign", "--config", str(server.config_path), *args)


def test_a_durable_url_from_the_cli_is_served_with_a_capped_cache_life(served: Server) -> None:
    result = sign(served, "photos", PHOTO_KEY, "--kid", "bi", "--durable", "--sub", "ada@example.com")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    query = query_of(url)
    assert "exp" not in query
    assert query["sub"] == "ada@example.com"
    assert query["kid"] == "bi"
    assert int(query["iat"]) <= time.time()
    reply = http_get(url)
    assert (reply.status, reply.body) == (200, PHOTO)
    assert reply.headers["Cache-Control"] == "private, max-age=1200"


def test_the_cli_refuses_a_path_outside_the_keys_scopes(served: Server) -> None:
    result = sign(served, "photos", "elsewhere/x.png", "--kid", "bi", "--ttl", "10m")
    assert result.returncode == 2
    assert "out_of_scope" in result.stderr
    assert "photos:" in result.stderr
    assert BI_KEY not in result.stderr + result.stdout
    # The server would refuse it as well, whatever the signature.
    forged = sign_url("photos", "elsewhere/x.png", secret=BI_KEY, exp=int(time.time()) + 60, kid="bi",
                      base_url=served.base_url)
    assert http_get(forged).status == 403


def test_the_cli_refuses_durable_with_a_key_that_is_not(served: Server) -> None:
    result = sign(served, "photos", PHOTO_KEY, "--kid", "k1", "--durable")
    assert result.returncode == 2
    assert "durable" in result.stderr


def test_the_cli_holds_the_keys_own_max_ttl(served: Server) -> None:
    assert sign(served, "photos", PHOTO_KEY, "--kid", "bi", "--ttl", "1h").returncode == 0
    result = sign(served, "photos", PHOTO_KEY, "--kid", "bi", "--ttl", "3h")
    assert result.returncode == 2
    assert "max_ttl" in result.stderr


def test_verify_url_explains_acceptance_and_refusal(served: Server) -> None:
    url = sign(served, "photos", PHOTO_KEY, "--kid", "bi", "--ttl", "10m").stdout.strip()
    accepted = run("verify-url", "--config", str(served.config_path), url)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.startswith("accepted: signed with key 'bi'")
    expired = sign_url("photos", PHOTO_KEY, secret=BI_KEY, exp=int(time.time()) - 7200, kid="bi",
                       base_url=served.base_url)
    refused = run("verify-url", "--config", str(served.config_path), expired)
    assert refused.returncode == 1
    assert "403 expired" in refused.stdout
    assert "ago" in refused.stdout
    outside = sign_url("photos", "elsewhere/x.png", secret=BI_KEY, exp=int(time.time()) + 60, kid="bi")
    assert "403 out_of_scope" in run("verify-url", "--config", str(served.config_path), outside).stdout
    tampered = url.replace("/img/photos/team/", "/img/photos/team/x")
    result = run("verify-url", "--config", str(served.config_path), tampered)
    assert "403 invalid_signature" in result.stdout
    expected_sig = query_of(url)["sig"]
    assert expected_sig not in result.stdout + result.stderr  # never the signature it expected


def test_verify_url_names_a_revocation(tmp_path: Path) -> None:
    data = bi_data("http://127.0.0.1:9", "some-bucket", tmp_path / "bi.key",
                   revocations=[{"kid": "bi", "before": "2099-01-01T00:00:00Z"}])
    path = write_config(tmp_path, data)
    url = run("sign", "--config", str(path), "photos", PHOTO_KEY, "--kid", "bi", "--durable").stdout.strip()
    result = run("verify-url", "--config", str(path), url)
    assert result.returncode == 1
    assert "403 revoked" in result.stdout


def test_a_file_secret_is_read_from_its_file(tmp_path: Path) -> None:
    data = bi_data("http://127.0.0.1:9", "some-bucket", tmp_path / "bi.key")
    path = write_config(tmp_path, data)
    url = run("sign", "--config", str(path), "photos", PHOTO_KEY, "--kid", "bi", "--ttl", "1m").stdout.strip()
    query = query_of(url)
    assert url.endswith(sign_url("photos", PHOTO_KEY, secret=BI_KEY, exp=int(query["exp"]),
                                 iat=int(query["iat"]), kid="bi"))
    (tmp_path / "bi.key").unlink()
    missing = run("sign", "--config", str(path), "photos", PHOTO_KEY)
    assert missing.returncode == 2
    assert "auth.keys.bi.secret" in missing.stderr
    assert "cannot read" in missing.stderr


def test_key_hash_matches_the_access_log(served: Server) -> None:
    url = sign(served, "photos", PHOTO_KEY, "--ttl", "10m").stdout.strip()
    assert http_get(url).status == 200
    printed = run("key-hash", "--config", str(served.config_path), "photos", PHOTO_KEY)
    assert printed.returncode == 0
    wanted = f"key_hash={printed.stdout.strip()}"
    deadline = time.monotonic() + 5
    while wanted not in served.process.stderr and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wanted in served.process.stderr
    assert PHOTO_KEY not in served.process.stderr

