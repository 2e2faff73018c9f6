"""``imgproxy sign`` against imgproxy/signers/vectors.json. The command reads the clock itself
(and has no way to be given one), so each printed URL is checked by structure: its exp (a
durable URL's iat) is what the rule gives for a moment during the run, and the rest of the URL
is what sign_url makes with that exp and the iat the rule derives from it."""

from __future__ import annotations

import subprocess
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from processes import run, write_config
from support import config_data

from imgproxy.auth.signing import durable_issued_at, issued_at, sign_url, stable_expiry
from imgproxy.signers.vectors import Vector, load_vectors, text_params


def cli_gap(vector: Vector) -> str | None:
    """Why ``imgproxy sign`` cannot make this vector's URL, or None if it can."""
    case = vector.case
    if case.kid is None:
        return "imgproxy sign always names its key (kid)"
    if not case.base_url:
        return "imgproxy sign always prefixes a base URL (--base-url or the config's)"
    if any("=" in name or name.startswith("-") for name in case.params):
        return "a name=value argument cannot carry a name with '=' or starting with '-'"
    return None


def cases() -> list[Any]:
    return [pytest.param(v, id=v.case.name,
                         marks=[pytest.mark.skip(reason=gap)] if (gap := cli_gap(v)) else [])
            for v in load_vectors()]


@dataclass(frozen=True)
class Printed:
    before: float
    after: float
    result: subprocess.CompletedProcess[str]


def sign_with_cli(directory: Path, vector: Vector) -> Printed:
    """``imgproxy sign`` with a config holding only this vector's key and source."""
    case = vector.case
    directory.mkdir()
    data = config_data("http://127.0.0.1:9", "some-bucket")
    key: str | dict[str, Any] = {"secret": case.secret, "durable": True} if case.durable else case.secret
    data["auth"] = {"keys": {case.kid: key}, "max_ttl": "7d"}
    data["sources"] = {case.source: data["sources"]["photos"]}
    params = (f"{name}={value}" for name, value in text_params(case.params).items())
    options = (["--durable"] * case.durable + (["--sub", case.sub] if case.sub is not None else [])
               + ["--meta"] * (case.route == "meta"))
    before = time.time()
    result = run("sign", "--config", str(write_config(directory, data)), case.source, case.key,
                 "--ttl", str(case.ttl), "--window", str(case.window), "--kid", str(case.kid),
                 "--base-url", case.base_url, *options, *params)
    return Printed(before, time.time(), result)


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Printed]:
    """Every vector the CLI can make, signed by it, four processes at a time (each one is an
    interpreter start: about a second)."""
    directory = tmp_path_factory.mktemp("cli-vectors")
    vectors = [v for v in load_vectors() if cli_gap(v) is None]
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = pool.map(lambda v: sign_with_cli(directory / v.case.name, v), vectors)
        return {v.case.name: p for v, p in zip(vectors, done, strict=True)}


@pytest.mark.parametrize("vector", cases())
def test_sign_prints_each_vector_for_the_time_it_ran(printed: dict[str, Printed], vector: Vector) -> None:
    case, run_of = vector.case, printed[vector.case.name]
    assert run_of.result.returncode == 0, run_of.result.stderr
    url = run_of.result.stdout.strip()
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if case.durable:  # no exp; iat is the run's time rounded down to the window
        exp, iat = None, int(query["iat"][0])
        assert "exp" not in query
        assert durable_issued_at(run_of.before, case.window) <= iat
        assert iat <= durable_issued_at(run_of.after, case.window)
    else:
        exp = int(query["exp"][0])
        iat = issued_at(exp, case.ttl, case.window)
        assert stable_expiry(run_of.before, case.ttl, case.window) <= exp
        assert exp <= stable_expiry(run_of.after, case.ttl, case.window)
    assert url == sign_url(case.source, case.key, secret=case.secret, exp=exp, iat=iat, kid=case.kid,
                           params=text_params(case.params), base_url=case.base_url, sub=case.sub,
                           route=case.route)
