"""Running ``imgproxy`` as real child processes in tests: TOML configs, process groups that are
always reaped, waiting for /healthz, and plain HTTP helpers. Shared by the CLI and nginx tests."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from PIL import Image

START_TIMEOUT = 30.0  # seconds until /healthz answers (or the demo prints its banner)
STOP_TIMEOUT = 10.0  # seconds from a signal to the process's exit
RUN_TIMEOUT = 30.0  # seconds for a one-shot command (bad config, sign, curl)
HTTP_TIMEOUT = 10.0
GROUP_GRACE = 5.0  # seconds a child's own helper processes may outlive it
CLUSTER_GRACE = 10.0  # server.shutdown_timeout of an `imgproxy serve --workers N` under test
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="the curl binary is not installed")


# --- helpers: TOML, HTTP, processes ----------------------------------------------------------


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):  # a JSON string (no \uD8xx pairs with ensure_ascii off) is TOML too
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # only inside a list: an inline table (revocation entries)
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> str:
    """Just enough TOML for a config dict: scalars and lists first, then one [table] per dict."""
    lines = [f"[{'.'.join(_toml_key(p) for p in path)}]"] if path else []
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + "\n"
    for key, value in data.items():
        if isinstance(value, dict):
            text += "\n" + to_toml(value, (*path, key))
    return text


def write_config(directory: Path, data: Mapping[str, Any], name: str = "config.toml") -> Path:
    path = directory / name
    path.write_text(to_toml(data), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


def http_get(url: str, headers: Mapping[str, str] | None = None, method: str = "GET") -> Reply:
    if not url.startswith(("http://127.0.0.1:", "http://[::1]:")):
        raise ValueError(f"tests only talk to loopback servers, not {url!r}")
    request = urllib.request.Request(url, headers=dict(headers or {}), method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            return Reply(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return Reply(exc.code, dict(exc.headers.items()), exc.read())


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "imgproxy", *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment (AWS files already pointed at /dev/null) minus any config the shell set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGPROXY_")}
    env.update(extra or {})
    return env


def is_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def reap_group(pgid: int, what: str) -> None:
    """After the leader exited: its helpers (worker pool, forkserver) must follow it, not linger."""
    deadline = time.monotonic() + GROUP_GRACE
    while is_group_alive(pgid):
        if time.monotonic() > deadline:
            kill_group(pgid)
            pytest.fail(f"{what}: processes it started were still running {GROUP_GRACE}s after it exited")
        time.sleep(0.05)


def wait_for(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def children(pid: int) -> set[int]:
    """The live (not zombie) direct children of ``pid``, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.add(int(entry))
    return found


def run(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A one-shot command in its own process group, which must be empty when it returns."""
    argv = command(*args)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL, env=child_env(env), start_new_session=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.communicate()
            pytest.fail(f"{shlex.join(args)}: still running after {RUN_TIMEOUT}s")
    reap_group(proc.pid, shlex.join(args))
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


class Process:
    """A long-running child whose stdout and stderr go to files we can read at any time.

    It leads its own process group, so a kill also reaches whatever it started (worker pools).
    """

    def __init__(self, args: list[str], directory: Path, env: Mapping[str, str] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.stdout_path = directory / "stdout.txt"
        self.stderr_path = directory / "stderr.txt"
        self._files: list[IO[bytes]] = [self.stdout_path.open("wb"), self.stderr_path.open("wb")]
        self.popen = subprocess.Popen(args, stdout=self._files[0], stderr=self._files[1],
                                      stdin=subprocess.DEVNULL, cwd=directory, env=child_env(env),
                                      start_new_session=True)

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        return f"exit={self.popen.poll()}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def wait_for_output(self, marker: str, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while marker not in (out := self.stdout):
            if self.popen.poll() is not None:
                pytest.fail(f"process exited before printing {marker!r}\n{self.describe()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {marker!r} within {timeout}s\n{self.describe()}")
            time.sleep(0.05)
        return out

    def wait_until_healthy(self, base_url: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                pytest.fail(f"server exited during start-up\n{self.describe()}")
            try:
                if http_get(base_url + "/healthz").status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"/healthz did not answer within {timeout}s\n{self.describe()}")
            time.sleep(0.05)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``signum`` and wait; a process that ignores it fails the test (and is killed)."""
        self.popen.send_signal(signum)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running {timeout}s after signal {signum}\n{self.describe()}")
        reap_group(self.popen.pid, f"stopped by signal {signum}")
        return code

    def kill(self) -> None:
        """SIGKILL the whole group (an idempotent last resort for fixtures)."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=STOP_TIMEOUT)
        kill_group(self.popen.pid)
        for file in self._files:
            file.close()


@dataclass(frozen=True)
class Server:
    """A running ``imgproxy serve`` whose /healthz answered."""

    process: Process
    base_url: str
    config_path: Path
    bucket: str

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])


def free_port() -> int:
    """A loopback port nothing listens on (for a server to take, or a 'storage is down' test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_server(directory: Path, data: dict[str, Any], env: Mapping[str, str] | None = None,
                  global_args: tuple[str, ...] = (), via: str = "--config") -> Server:
    """``imgproxy serve`` on a free port with ``data`` as its config, once /healthz answers.

    ``via`` is how the config reaches it: ``--config``, ``IMGPROXY_CONFIG`` or
    ``IMGPROXY_CONFIG_TOML``. The caller kills ``server.process`` when done.
    """
    port = free_port()
    data["server"]["port"] = port
    directory.mkdir(parents=True, exist_ok=True)
    config_path = write_config(directory, data)
    args, env = [*global_args, "serve"], dict(env or {})
    if via == "--config":
        args += ["--config", str(config_path)]
    elif via == "IMGPROXY_CONFIG":
        env["IMGPROXY_CONFIG"] = str(config_path)
    else:
        env["IMGPROXY_CONFIG_TOML"] = config_path.read_text(encoding="utf-8")
    process = Process(command(*args), directory / "process", env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        process.wait_until_healthy(base_url)
    except BaseException:
        process.kill()
        raise
    return Server(process, base_url, config_path, data["sources"]["photos"]["bucket"])


def png_bytes(width: int = 60, height: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 40, 90, 180)).save(buffer, "PNG")
    return buffer.getvalue()


PHOTO = png_bytes()
PHOTO_KEY = "team/ada lovelace+1.png"
