"""The ``imgproxy`` command as an operator runs it: real processes, real sockets, real moto S3.

Every process is started with ``sys.executable -m imgproxy`` (so the tests use the venv they run
in), writes its output to files (no pipe can fill up and stall it), is waited for with a timeout,
and is killed in a ``finally`` if a test fails half-way.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from processes import (
    PHOTO,
    PHOTO_KEY,
    RUN_TIMEOUT,
    Process,
    Server,
    command,
    http_get,
    launch_server,
    needs_curl,
    run,
    write_config,
)
from support import SIGNING_KEY, config_data

import imgproxy
from imgproxy.auth.signing import UrlSigner, sign_url


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Any]:
    """``start_server(data, env=…, global_args=…, via=…)``: ``imgproxy serve`` with /healthz up."""
    started: list[Process] = []

    def start(data: dict[str, Any], env: Mapping[str, str] | None = None,
              global_args: tuple[str, ...] = (), via: str = "--config") -> Server:
        server = launch_server(tmp_path / f"serve-{len(started)}", data, env, global_args, via)
        started.append(server.process)
        return server

    try:
        yield start
    finally:
        for process in started:
            process.kill()


@pytest.fixture
def served(start_server: Any, moto_endpoint: str, bucket: str, s3: Any) -> Server:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    return start_server(config_data(moto_endpoint, bucket))  # type: ignore[no-any-return]


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


# --- serve ------------------------------------------------------------------------------------


def test_serve_answers_a_signed_get_with_the_objects_bytes(served: Server) -> None:
    url = UrlSigner(SIGNING_KEY, "k1", served.base_url).sign("photos", PHOTO_KEY)
    reply = http_get(url)
    assert reply.status == 200
    assert reply.body == PHOTO
    assert reply.headers["Content-Type"] == "image/png"


@pytest.mark.parametrize("via", ["IMGPROXY_CONFIG", "IMGPROXY_CONFIG_TOML"])
def test_serve_reads_its_config_from_the_environment(start_server: Any, moto_endpoint: str,
                                                      bucket: str, s3: Any, via: str) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    server = start_server(config_data(moto_endpoint, bucket), via=via)
    reply = http_get(UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", PHOTO_KEY))
    assert (reply.status, reply.body) == (200, PHOTO)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_signal(served: Server, signum: int) -> None:
    assert http_get(UrlSigner(SIGNING_KEY, "k1", served.base_url).sign("photos", PHOTO_KEY)).status == 200
    assert served.process.stop(signum) == 0
    assert "Traceback" not in served.process.stderr + served.process.stdout


def test_serve_on_a_port_in_use_fails_with_one_line(tmp_path: Path, moto_endpoint: str,
                                                    bucket: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = config_data(moto_endpoint, bucket)
        data["server"]["port"] = port
        result = run("serve", "--config", str(write_config(tmp_path, data)))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("imgproxy:")]
    assert len(errors) == 1, result.stderr
    assert f"127.0.0.1:{port}" in errors[0]


# --- bad configs --------------------------------------------------------------------------------


def _short_key(data: dict[str, Any]) -> None:
    data["auth"]["keys"]["k1"] = "0123456789"


def _escaping_prefix(data: dict[str, Any]) -> None:
    data["sources"]["photos"]["prefix"] = "uploads/../other"


def _port_out_of_range(data: dict[str, Any]) -> None:
    data["server"]["port"] = 70000


def _unknown_key(data: dict[str, Any]) -> None:
    data["server"]["hots"] = "localhost"


def _unset_env_secret(data: dict[str, Any]) -> None:
    data["auth"]["keys"]["k1"] = "env:IMGPROXY_TEST_NEVER_SET"


def _short_token(data: dict[str, Any]) -> None:
    data["auth"]["tokens"]["ops"]["token"] = "short"


def _missing_bucket(data: dict[str, Any]) -> None:
    del data["sources"]["photos"]["bucket"]


def _bad_duration(data: dict[str, Any]) -> None:
    data["sources"]["photos"]["read_timeout"] = "soon"


def _missing_ca_bundle(data: dict[str, Any]) -> None:
    data["sources"]["photos"].update(endpoint_url="https://127.0.0.1:9", ca_bundle="/nonexistent/ca.pem")


BAD_CONFIGS = {
    "short-signing-key": (_short_key, ["auth.keys.k1", "32 bytes"]),
    "prefix-with-dotdot": (_escaping_prefix, ["sources.photos.prefix"]),
    "port-out-of-range": (_port_out_of_range, ["server.port"]),
    "unknown-key": (_unknown_key, ["server.hots", "unknown key"]),
    "env-var-not-set": (_unset_env_secret, ["auth.keys.k1", "IMGPROXY_TEST_NEVER_SET"]),
    "short-token": (_short_token, ["auth.tokens.ops.token"]),
    "missing-bucket": (_missing_bucket, ["sources.photos.bucket", "required"]),
    "bad-duration": (_bad_duration, ["sources.photos.read_timeout"]),
    "missing-ca-bundle": (_missing_ca_bundle,
                          ["sources.photos.ca_bundle", "/nonexistent/ca.pem", "no such file"]),
}


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, nothing on stdout, exactly one stderr line holding every needle."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_bad_config_fails_fast_with_one_line_naming_the_key(tmp_path: Path, case: str) -> None:
    mutate, needles = BAD_CONFIGS[case]
    data = config_data("http://127.0.0.1:9", "some-bucket")
    mutate(data)
    started = time.monotonic()
    result = run("serve", "--config", str(write_config(tmp_path, data)))
    assert_one_line_failure(result, *needles)
    assert time.monotonic() - started < 10


def test_invalid_toml_fails_with_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[server]\nport = = 8080\n", encoding="utf-8")
    assert_one_line_failure(run("serve", "--config", str(path)), str(path), "TOML")


def test_missing_config_file_fails_with_one_line_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    assert_one_line_failure(run("serve", "--config", str(path)), str(path), "no such")


def test_no_config_at_all_says_how_to_give_one() -> None:
    assert_one_line_failure(run("serve"), "--config", "IMGPROXY_CONFIG")


# --- secrets from the environment -----------------------------------------------------------------


def test_env_secrets_work_and_never_reach_the_output(start_server: Any, moto_endpoint: str,
                                                     bucket: str, s3: Any) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    secret_values = {
        "IMGPROXY_TEST_SIGNING_KEY": "sk-" + secrets.token_urlsafe(32),
        "IMGPROXY_TEST_TOKEN": "tok-" + secrets.token_urlsafe(32),
        "IMGPROXY_TEST_ACCESS_KEY": "AKIA" + secrets.token_hex(8).upper(),
        "IMGPROXY_TEST_SECRET_KEY": "s3-" + secrets.token_urlsafe(30),
    }
    data = config_data(moto_endpoint, bucket,
                       access_key_id="env:IMGPROXY_TEST_ACCESS_KEY",
                       secret_access_key="env:IMGPROXY_TEST_SECRET_KEY")
    data["auth"]["keys"] = {"k1": "env:IMGPROXY_TEST_SIGNING_KEY"}
    data["auth"]["tokens"] = {"ops": {"token": "env:IMGPROXY_TEST_TOKEN", "scopes": ["*"]}}
    server = start_server(data, env=secret_values, global_args=("--log-level", "DEBUG"))

    signer = UrlSigner(secret_values["IMGPROXY_TEST_SIGNING_KEY"], "k1", server.base_url)
    good_url = signer.sign("photos", PHOTO_KEY)
    bad_sig_url = good_url[:-4] + ("AAAA" if not good_url.endswith("AAAA") else "BBBB")
    near_token = secret_values["IMGPROXY_TEST_TOKEN"][:-3] + "xyz"
    plain_url = f"{server.base_url}/img/photos/" + urllib.parse.quote(PHOTO_KEY)
    bearer = {"Authorization": "Bearer " + secret_values["IMGPROXY_TEST_TOKEN"]}

    good = http_get(good_url)
    assert (good.status, good.body) == (200, PHOTO)
    assert http_get(plain_url, bearer).body == PHOTO  # the env token works
    assert http_get(good_url, method="HEAD").status == 200
    assert http_get(server.base_url + "/readyz").status == 200  # the env S3 keys work
    assert http_get(bad_sig_url).status == 403
    assert http_get(plain_url, {"Authorization": f"Bearer {near_token}"}).status in (401, 403)
    assert http_get(plain_url).status == 401
    assert http_get(plain_url.replace("ada", "nobody"), bearer).status == 404
    assert server.process.stop() == 0

    output = server.process.stdout + server.process.stderr
    assert "status=403" in output  # the DEBUG log was captured, so the checks below mean something
    leaks = {name: value for name, value in {**secret_values, "near_token": near_token}.items()
             if value in output}
    assert leaks == {}
    for url in (good_url, bad_sig_url):  # the signatures themselves are never logged either
        assert query_of(url)["sig"] not in output
    assert "Traceback" not in output


# --- sign -------------------------------------------------------------------------------------------


def test_signed_url_printed_by_sign_is_answered_200(served: Server) -> None:
    result = run("sign", "--config", str(served.config_path), "photos", PHOTO_KEY, "--ttl", "1h")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert url.startswith(served.base_url + "/img/photos/")
    reply = http_get(url)
    assert (reply.status, reply.body) == (200, PHOTO)


def test_sign_with_a_parameter_is_answered_200(served: Server) -> None:
    result = run("sign", "--config", str(served.config_path), "photos", PHOTO_KEY, "--ttl", "1h",
                 "w=300")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert query_of(url)["w"] == "300"
    assert http_get(url).status == 200


@pytest.fixture
def sign_config(tmp_path: Path) -> Path:
    """A config for ``imgproxy sign`` alone: signing needs no S3 and no server."""
    data = config_data("http://127.0.0.1:9", "some-bucket")
    data["server"]["port"] = 8080
    return write_config(tmp_path, data)


def test_sign_with_a_window_prints_the_same_url_within_the_window(sign_config: Path) -> None:
    args = ("sign", "--config", str(sign_config), "photos", PHOTO_KEY, "--ttl", "1h", "--window", "6h")
    first, second = run(*args), run(*args)
    assert first.returncode == 0, first.stderr
    exp = int(query_of(first.stdout.strip())["exp"])
    assert exp % (6 * 3600) == 0
    assert exp - time.time() >= 3600 - 5
    if exp == int(query_of(second.stdout.strip())["exp"]):  # not straddling a window boundary
        assert first.stdout == second.stdout


@pytest.mark.parametrize("params", [[], ["w=300"]], ids=["no-params", "w=300"])
def test_sign_prints_what_the_python_signers_produce(sign_config: Path, params: list[str]) -> None:
    base_url = "http://127.0.0.1:8080"  # server.base_url of sign_config
    before = time.time()
    result = run("sign", "--config", str(sign_config), "photos", PHOTO_KEY, "--ttl", "1h", *params)
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    exp = int(query_of(printed)["exp"])
    assert before + 3600 - 1 <= exp <= time.time() + 3600
    extra = dict(p.split("=", 1) for p in params)
    assert printed == sign_url("photos", PHOTO_KEY, secret=SIGNING_KEY, exp=exp, iat=exp - 3600,
                               kid="k1", params=extra, base_url=base_url)
    assert printed == UrlSigner(SIGNING_KEY, "k1", base_url).sign(
        "photos", PHOTO_KEY, ttl=3600, params=extra, now=exp - 3600)


@needs_curl
def test_sign_curl_command_downloads_the_exact_bytes(served: Server, tmp_path: Path) -> None:
    result = run("sign", "--config", str(served.config_path), "photos", PHOTO_KEY, "--curl")
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("curl ")
    workdir = tmp_path / "download"
    workdir.mkdir()
    curl = subprocess.run(["sh", "-c", line], cwd=workdir, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)
    assert curl.returncode == 0, curl.stderr
    downloaded = list(workdir.iterdir())
    assert [p.name for p in downloaded] == [PHOTO_KEY.rsplit("/", 1)[-1]]
    assert downloaded[0].read_bytes() == PHOTO


def test_sign_ttl_beyond_max_ttl_fails_with_one_line(sign_config: Path) -> None:
    result = run("sign", "--config", str(sign_config), "photos", "a.png", "--ttl", "2d")
    assert_one_line_failure(result, "--ttl", "max_ttl")


def test_sign_unknown_source_fails_with_one_line(sign_config: Path) -> None:
    result = run("sign", "--config", str(sign_config), "nope", "a.png")
    assert_one_line_failure(result, "nope")


@pytest.mark.parametrize("key", ["../secret.png", "a/../b.png", "a/./b.png"])
def test_sign_refuses_a_key_the_server_would_refuse(sign_config: Path, key: str) -> None:
    result = run("sign", "--config", str(sign_config), "photos", key)
    assert_one_line_failure(result, "key")


# --- version ------------------------------------------------------------------------------------------


def test_python_m_imgproxy_version_prints_the_version() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"imgproxy {imgproxy.__version__}"


def test_console_script_is_installed_beside_the_interpreter() -> None:
    script = shutil.which("imgproxy", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("no imgproxy console script next to sys.executable (package not installed)")
    result = subprocess.run([script, "--version"], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, f"imgproxy {imgproxy.__version__}")


# --- demo -----------------------------------------------------------------------------------------------


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Process, list[str]]]:
    """``imgproxy demo --port 0`` running in ``tmp_path/demo``, and its banner's stripped lines."""
    process = Process(command("demo", "--port", "0"), tmp_path / "demo")
    try:
        banner = process.wait_for_output("Press Ctrl-C")
        yield process, [line.strip() for line in banner.splitlines()]
    finally:
        process.kill()


def test_demo_signed_urls_answer_200_with_images(demo: tuple[Process, list[str]]) -> None:
    _, banner = demo
    urls = [line for line in banner if line.startswith("http://")]
    assert len(urls) >= 3
    for url in urls:
        reply = http_get(url)
        assert reply.status == 200, url
        assert reply.headers["Content-Type"].startswith("image/"), url
        assert len(reply.body) > 0


@needs_curl
def test_demo_curl_commands_work_as_printed(demo: tuple[Process, list[str]]) -> None:
    process, banner = demo
    workdir = process.stdout_path.parent
    first_image = http_get(next(line for line in banner if line.startswith("http://"))).body
    outputs: dict[str, str] = {}
    signed = banner[:banner.index(next(line for line in banner if line.startswith("Cookie grant with curl")))]
    for line in (line for line in signed if line.startswith("curl -")):
        for leftover in workdir.glob("*.jpg"):
            leftover.unlink()
        curl = subprocess.run(["sh", "-c", line], cwd=workdir, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT, check=False)
        assert curl.returncode == 0, f"{line}\n{curl.stderr}"
        for downloaded in workdir.glob("*.jpg"):  # the '-o NAME' commands save the first image
            assert downloaded.read_bytes() == first_image, line
        outputs[line] = curl.stdout
    assert len(outputs) == 5
    assert sum(1 for line in outputs if " -o /dev/null" not in line and "-o " in line) == 2
    [headers] = [out for line, out in outputs.items() if "-D -" in line and "Range" not in line]
    assert headers.startswith("HTTP/1.1 200")
    [ranged] = [out for line, out in outputs.items() if "Range: bytes=0-99" in line]
    assert ranged.startswith("HTTP/1.1 206")
    assert "content-range: bytes 0-99/" in ranged.lower()
    [unauthorized] = [out for line, out in outputs.items() if line.endswith("# no credentials: 401")]
    assert json.loads(unauthorized)["error"] == "unauthorized"


def test_demo_stops_cleanly_on_ctrl_c(demo: tuple[Process, list[str]]) -> None:
    process, banner = demo
    assert http_get(next(line for line in banner if line.startswith("http://"))).status == 200
    assert process.stop(signal.SIGINT) == 0
    assert "Traceback" not in process.stderr + process.stdout
    assert process.stdout.rstrip().endswith("imgproxy demo stopped.")
