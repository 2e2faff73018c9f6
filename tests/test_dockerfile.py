"""The Dockerfile's promises, checked without a Docker engine: base, user, entry point, health."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from support import SIGNING_KEY

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    result: list[tuple[str, str]] = []
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        if line.strip():
            name, _, args = line.strip().partition(" ")
            result.append((name.upper(), args.strip()))
    return result


def only(name: str) -> list[str]:
    return [args for instruction, args in instructions() if instruction == name]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in only("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_base_is_python_311_slim() -> None:
    assert only("FROM")[-1].split()[0] == "python:3.11-slim"


def test_runs_as_a_non_root_user() -> None:
    user = only("USER")[-1].split(":")[0]
    assert user not in ("", "root", "0")


def test_entrypoint_is_imgproxy_serve() -> None:
    assert json.loads(only("ENTRYPOINT")[-1]) == ["imgproxy", "serve"]


def test_healthcheck_probes_healthz_with_python() -> None:
    [check] = only("HEALTHCHECK")
    assert "CMD" in check
    assert "/healthz" in check
    assert '["python"' in check.replace(" ", "")  # slim has no curl
    assert "8080" in only("EXPOSE")[-1].split()


def test_dockerignore_keeps_the_venv_git_and_caches_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    for entry in (".venv", ".git", ".pytest_cache", "**/__pycache__"):
        assert entry in ignored


def test_config_toml_from_env_works_despite_the_images_default_path(tmp_path: Path) -> None:
    """``docker run -e IMGPROXY_CONFIG_TOML=…`` (no file mounted) with the image's ENV."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGPROXY_")}
    env.update(image_env())
    assert not Path(env["IMGPROXY_CONFIG"]).exists(), "this test needs the default path unmounted"
    env["IMGPROXY_CONFIG_TOML"] = (
        '[server]\nhost = "0.0.0.0"\n[auth.keys]\n'
        f'k1 = "{SIGNING_KEY}"\n'
        '[sources.photos]\nbucket = "private-images"\n'
    )
    result = subprocess.run([sys.executable, "-m", "imgproxy", "sign", "photos", "a.png"],
                            capture_output=True, text=True, timeout=30, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("http://127.0.0.1:8080/img/photos/a.png?exp=")


def test_the_image_installs_the_runtime_lock_then_the_package_without_resolving() -> None:
    runs = only("RUN")
    [locked] = [i for i, run in enumerate(runs) if "--require-hashes -r /tmp/runtime.txt" in run]
    [package] = [i for i, run in enumerate(runs) if "/tmp/imgproxy-src" in run and "pip install" in run]
    assert locked < package
    assert "--no-deps" in runs[package].split()
    assert "requirements/runtime.txt /tmp/runtime.txt" in only("COPY")
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert not any(entry.startswith("requirements") for entry in ignored)
