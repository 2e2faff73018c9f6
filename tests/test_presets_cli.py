"""Presets outside a request: ``imgproxy sign`` with a presets-only key refuses other params
locally, and a config whose preset does not parse is refused at start-up and on reload (the
running config stays)."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from processes import write_config
from support import SIGNING_KEY, config_data

from imgproxy.cli import EXIT_CONFIG, UsageError, main, serve_command, sign_command
from imgproxy.config import ConfigError, load_config
from imgproxy.process.reload import Reloader

THUMB = {"w": 96, "h": 96, "fit": "cover", "allow_override": ["dpr"]}


def with_presets(presets: dict[str, Any], **key: Any) -> dict[str, Any]:
    data = copy.deepcopy(config_data("http://127.0.0.1:9", "some-bucket"))
    data["auth"]["keys"] = {"k1": {"secret": SIGNING_KEY, **key}}
    data["transform"]["presets"] = presets
    return data


def sign_args(path: Path, *params: str) -> argparse.Namespace:
    return argparse.Namespace(config=str(path), source="photos", key="a.jpg", ttl="1h", window=None,
                              kid=None, durable=False, sub=None, base_url=None, curl=False,
                              params=list(params), meta=False)


def test_sign_with_a_presets_only_key_refuses_other_params(tmp_path: Path,
                                                           capfd: pytest.CaptureFixture[str]) -> None:
    """capfd: main's messages go to the stderr it bound at import; its stdout is read here."""
    path = write_config(tmp_path, with_presets({"thumb": THUMB}, presets_only=True))
    with pytest.raises(UsageError, match=r"^params_not_allowed: key 'k1' is presets_only: Parameter 'w'"):
        sign_command(load_config(path), sign_args(path, "w=96"))
    assert main(["sign", "--config", str(path), "photos", "a.jpg", "--ttl", "1h", "w=96"]) == EXIT_CONFIG
    assert main(["sign", "--config", str(path), "photos", "a.jpg", "--ttl", "1h", "preset=thumb"]) == 0
    query = parse_qs(urlsplit(capfd.readouterr().out.strip()).query)
    assert set(query) - {"exp", "iat", "kid", "sig"} == {"preset"}


def test_sign_with_another_key_signs_any_param(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, with_presets({"thumb": THUMB}))
    assert main(["sign", "--config", str(path), "photos", "a.jpg", "--ttl", "1h", "w=96"]) == 0
    assert parse_qs(urlsplit(capfd.readouterr().out.strip()).query)["w"] == ["96"]


def test_serve_with_a_bad_preset_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = write_config(tmp_path, with_presets({"thumb": {**THUMB, "w": 0}}))
    args = argparse.Namespace(config=str(path), host=None, port=None, workers=None)
    with pytest.raises(ConfigError, match=r"^transform\.presets\.thumb\.w: Parameter 'w'"):
        serve_command(load_config(path), args)
    assert main(["serve", "--config", str(path)]) == EXIT_CONFIG


def test_a_reload_with_a_bad_preset_is_refused_and_the_running_config_stays(tmp_path: Path) -> None:
    path = write_config(tmp_path, with_presets({"thumb": THUMB}))
    running = load_config(path)
    results: list[str] = []
    reloader = Reloader(str(path), running, "v1", results.append)
    write_config(tmp_path, with_presets({"thumb": {**THUMB, "gravity": "north", "fit": "inside"}}))
    assert reloader.reload() is None
    assert results == ["invalid"]
    assert reloader.config is running
    write_config(tmp_path, with_presets({"thumb": {**THUMB, "w": 64}}))
    reloaded = reloader.reload()
    assert reloaded is not None
    assert reloaded.config.transform.presets["thumb"].params["w"] == "64"


def test_sign_meta_signs_placeholder_and_refuses_transform_params(tmp_path: Path) -> None:
    """``imgproxy sign --meta``: a /meta URL, even with a presets-only key; its one parameter is
    placeholder (the server would answer anything else 400)."""
    path = write_config(tmp_path, with_presets({"thumb": THUMB}, presets_only=True))
    args = sign_args(path, "placeholder=1")
    args.meta = True
    url = sign_command(load_config(path), args)
    assert urlsplit(url).path == "/meta/photos/a.jpg"
    assert parse_qs(urlsplit(url).query)["placeholder"] == ["1"]
    args = sign_args(path, "w=96")
    args.meta = True
    with pytest.raises(UsageError, match=r"^--meta: Parameter 'w' is not known here"):
        sign_command(load_config(path), args)

