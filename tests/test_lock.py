"""The locks in requirements/ against pyproject.toml: the same packages, inside its ranges, hashed.

pyproject.toml keeps ranges for people who install the package as a library; the locks are what CI,
the README and the Docker image install (`pip install --require-hashes -r requirements/X.txt`).
A lock that drifted from pyproject (a dependency added or narrowed without `requirements/refresh`)
fails here, not on a deploy. The checks are pure functions over the lock's text and a dependency
graph, so the table at the end shows each of them failing on a broken lock.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
REFRESH = "requirements/refresh"
# Lock file stem -> the extras of this project it installs beside the runtime dependencies.
LOCKS = {"runtime": ("heif",), "demo": ("demo",), "test": ("test",)}
SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Pin:
    version: Version
    hashes: tuple[str, ...]


def parse_lock(text: str) -> tuple[dict[NormalizedName, Pin], list[str]]:
    """The pins of a requirements file, and what is wrong with its lines (anything but `a==1 --hash`)."""
    pins: dict[NormalizedName, Pin] = {}
    problems: list[str] = []
    for raw in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*", "", raw)  # pip's rule: a comment starts at a `#` after a space
        if not line.strip():
            continue
        spec, *options = line.split()
        hashes = tuple(o.removeprefix("--hash=") for o in options if o.startswith("--hash="))
        name, sep, version = spec.partition("==")
        if not sep or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            problems.append(f"{spec}: not an exact pin (name==version)")
            continue
        try:
            parsed = Version(version)
        except InvalidVersion:
            problems.append(f"{spec}: not an exact pin (name==version)")
            continue
        if len(hashes) != len(options):
            problems.append(f"{name}: options other than --hash")
        if not hashes:
            problems.append(f"{name}: no --hash")
        problems.extend(f"{name}: malformed hash {h}" for h in hashes if not SHA256.fullmatch(h))
        key = canonicalize_name(name)
        if key in pins:
            problems.append(f"{name}: pinned twice")
        pins[key] = Pin(parsed, hashes)
    return pins, problems


def roots(extras: Iterable[str]) -> list[Requirement]:
    """pyproject's requirements for the runtime plus these extras, for this interpreter."""
    declared = list(PROJECT["dependencies"])
    for extra in extras:
        declared += PROJECT["optional-dependencies"][extra]
    return [r for r in map(Requirement, declared) if r.marker is None or r.marker.evaluate({"extra": ""})]


def range_problems(pins: dict[NormalizedName, Pin], wanted: list[Requirement]) -> list[str]:
    """Each requirement pyproject names is pinned, at a version its range allows."""
    problems = []
    for req in wanted:
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            problems.append(f"{req.name}: in pyproject.toml, not in the lock")
        elif not req.specifier.contains(pin.version, prereleases=True):
            problems.append(f"{req.name}=={pin.version}: outside pyproject.toml's {req}")
    return problems


def closure_problems(pins: dict[NormalizedName, Pin], wanted: list[Requirement],
                     requires_of: Callable[[str], list[str]]) -> list[str]:
    """The lock holds exactly what the requirements need, extras' dependencies included."""
    needed: set[NormalizedName] = set()
    seen: set[tuple[NormalizedName, str]] = set()
    todo = [(canonicalize_name(r.name), extra) for r in wanted for extra in ("", *r.extras)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        needed.add(name)
        for dep in map(Requirement, requires_of(name)):
            if dep.marker is None or dep.marker.evaluate({"extra": extra}):
                todo += [(canonicalize_name(dep.name), e) for e in ("", *dep.extras)]
    missing = [f"{name}: needed, not in the lock" for name in sorted(needed - pins.keys())]
    stale = [f"{name}: in the lock, needed by nothing" for name in sorted(pins.keys() - needed)]
    return missing + stale


def installed_requires(name: str) -> list[str]:
    """The dependencies an installed distribution declares (the test venv is the test lock)."""
    try:
        return metadata.distribution(name).requires or []
    except metadata.PackageNotFoundError:
        pytest.fail(f"{name} is not installed: this venv was not installed from requirements/test.txt")


def read_lock(stem: str) -> tuple[str, dict[NormalizedName, Pin]]:
    text = (ROOT / "requirements" / f"{stem}.txt").read_text(encoding="utf-8")
    pins, problems = parse_lock(text)
    assert problems == [], f"requirements/{stem}.txt: {problems}; fix: {REFRESH}"
    return text, pins


@pytest.mark.parametrize("stem", LOCKS)
def test_lock_pins_pyprojects_requirements_inside_their_ranges(stem: str) -> None:
    _, pins = read_lock(stem)
    assert range_problems(pins, roots(LOCKS[stem])) == [], f"fix: {REFRESH}"


@pytest.mark.parametrize("stem", LOCKS)
def test_lock_holds_exactly_what_the_requirements_need(stem: str) -> None:
    _, pins = read_lock(stem)
    assert closure_problems(pins, roots(LOCKS[stem]), installed_requires) == [], f"fix: {REFRESH}"


@pytest.mark.parametrize("stem", LOCKS)
def test_lock_was_written_by_the_refresh_command(stem: str) -> None:
    text, _ = read_lock(stem)
    assert f"#    {REFRESH}\n" in text
    assert "--index-url" not in text
    assert "--find-links" not in text
    assert os.access(ROOT / REFRESH, os.X_OK)


def test_the_smaller_locks_pin_the_versions_ci_tested() -> None:
    # The test lock is a superset of both (runtime.txt has the heif extra, demo.txt does not).
    runtime, demo, test = (read_lock(stem)[1] for stem in ("runtime", "demo", "test"))
    for small in (runtime, demo):
        assert {n: p.version for n, p in small.items()} == {n: test[n].version for n in small if n in test}
        assert small.keys() <= test.keys()


def test_this_venv_is_the_test_lock() -> None:
    """What the tests ran against is what the lock says, transitive dependencies included."""
    _, pins = read_lock("test")
    drift = {}
    for name, pin in pins.items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            drift[name] = (str(pin.version), str(installed))
    assert drift == {}, ("(locked, installed); reinstall: "
                         "pip install --require-hashes -r requirements/test.txt")


H = "--hash=sha256:" + "a" * 64
GRAPH = {"aiohttp": ["yarl>=1.17", 'brotli; extra == "speedups"'], "yarl": ["idna>=2"], "idna": [],
         "brotli": [], "moto": ['flask; extra == "server"'], "flask": []}


@pytest.mark.parametrize(("lock", "wanted", "problem"), [
    (f"aiohttp==3.9.5 {H}\nyarl==1.9 {H}\nidna==3.7 {H}\n", "aiohttp>=3.10,<4",
     "aiohttp==3.9.5: outside pyproject.toml's"),
    (f"yarl==1.9 {H}\nidna==3.7 {H}\n", "aiohttp>=3.10", "aiohttp: in pyproject.toml, not in the lock"),
    (f"aiohttp==3.14.5\nyarl==1.9 {H}\nidna==3.7 {H}\n", "aiohttp", "aiohttp: no --hash"),
    (f"aiohttp==3.14.5 --hash=sha256:abc\nyarl==1.9 {H}\nidna==3.7 {H}\n", "aiohttp",
     "aiohttp: malformed hash sha256:abc"),
    (f"aiohttp>=3.10 {H}\nyarl==1.9 {H}\nidna==3.7 {H}\n", "aiohttp", "aiohttp>=3.10: not an exact pin"),
    (f"aiohttp==3.14.5 {H}\nyarl==1.9 {H}\n", "aiohttp", "idna: needed, not in the lock"),
    (f"aiohttp==3.14.5 {H}\nyarl==1.9 {H}\nidna==3.7 {H}\n", "aiohttp[speedups]",
     "brotli: needed, not in the lock"),
    (f"moto==5.2.5 {H}\n", "moto[server]", "flask: needed, not in the lock"),
    (f"moto==5.2.5 {H}\nflask==3.1 {H}\n", "moto", "flask: in the lock, needed by nothing"),
])
def test_a_broken_lock_is_caught(lock: str, wanted: str, problem: str) -> None:
    pins, problems = parse_lock(lock)
    problems += range_problems(pins, [Requirement(wanted)])
    problems += closure_problems(pins, [Requirement(wanted)], lambda name: GRAPH[name])
    assert any(p.startswith(problem) for p in problems), problems


def test_a_lock_as_pip_compile_writes_it_parses() -> None:
    text = (f"#\n# header\n#\naiohttp==3.14.5 \\\n    {H} \\\n    --hash=sha256:{'b' * 64}\n"
            "    # via\n    #   -c requirements/test.txt\n    #   imgproxy-s3 (pyproject.toml)\n")
    pins, problems = parse_lock(text)
    assert problems == []
    assert pins == {"aiohttp": Pin(Version("3.14.5"), ("sha256:" + "a" * 64, "sha256:" + "b" * 64))}
