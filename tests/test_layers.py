"""The package's layers, read from its source: imports point down, pure modules stay pure, and the
serving (event-loop) process never imports Pillow.

Ranks, lowest first (README "Layout"): a module may import its own rank and those below.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "imgproxy"

# (rank, module-name prefixes); the longest matching prefix decides a module's rank.
RANKS: list[tuple[int, tuple[str, ...]]] = [
    (0, ("imgproxy.config", "imgproxy.errors", "imgproxy.startup", "imgproxy.memory",
         "imgproxy.background")),
    (1, ("imgproxy.auth", "imgproxy.cache", "imgproxy.delivery.policy", "imgproxy.facts",
         "imgproxy.hostcache", "imgproxy.limits", "imgproxy.protocol", "imgproxy.signers",
         "imgproxy.storage", "imgproxy.transform")),
    (2, ("imgproxy.delivery", "imgproxy.transform.variants", "imgproxy.transform.describe")),
    (3, ("imgproxy.web",)),
    (4, ("imgproxy.process",)),
    (5, ("imgproxy.cli", "imgproxy.demo", "imgproxy.__main__", "imgproxy")),
]

# Decisions and parsers: no web framework, no image library, no S3 client in them, so each can be
# read, tested and reused on its own.
PURE = ("imgproxy.config", "imgproxy.errors", "imgproxy.facts", "imgproxy.cache", "imgproxy.hostcache",
        "imgproxy.limits",
        "imgproxy.delivery.policy", "imgproxy.delivery.fallback",
        "imgproxy.protocol.conditional", "imgproxy.protocol.media",
        "imgproxy.protocol.paths", "imgproxy.protocol.forwarded", "imgproxy.protocol.accesslog",
        "imgproxy.protocol.cors",
        "imgproxy.auth.signing", "imgproxy.auth.tokens", "imgproxy.auth.principal", "imgproxy.auth.batch",
        "imgproxy.auth.oidc", "imgproxy.auth.claims", "imgproxy.auth.jwks", "imgproxy.auth.forward",
        "imgproxy.auth.webhook",
        "imgproxy.signers",
        "imgproxy.transform.params", "imgproxy.transform.policy", "imgproxy.transform.jobs",
        "imgproxy.transform.negotiate", "imgproxy.transform.variants", "imgproxy.transform.geometry",
        "imgproxy.transform.drawing", "imgproxy.transform.header", "imgproxy.transform.thumbhash",
        "imgproxy.transform.describe",
        "imgproxy.storage.presign",
        "imgproxy.storage.metadata")
HEAVY = ("aiohttp", "PIL", "aiobotocore", "botocore", "yarl")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def rank(module: str) -> int:
    best = max((prefix for _, prefixes in RANKS for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), key=len)
    return next(r for r, prefixes in RANKS if best in prefixes)


def imports(module: str) -> set[str]:
    """Every module ``module`` imports, at the top or inside a function; ``from a import b`` counts
    as ``a.b`` when that is a module."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in MODULES)
    return found


def test_every_module_has_a_rank() -> None:
    assert {m: rank(m) for m in MODULES if m != "imgproxy"}  # raises on a module outside the table


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    upward = sorted(name for name in imports(module)
                    if name in MODULES and not module.startswith(name + ".") and rank(name) > rank(module))
    assert upward == [], f"{module} (rank {rank(module)}) imports a higher layer"


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if within(m, PURE)))
def test_pure_modules_import_no_framework(module: str) -> None:
    heavy = sorted(name for name in imports(module) if name.split(".")[0] in HEAVY)
    assert heavy == []


def test_a_module_importing_upward_is_caught() -> None:
    """The rank table is not vacuous: the web layer ranks above what delivery may import."""
    assert rank("imgproxy.web.appkeys") > rank("imgproxy.delivery.originals")
    assert rank("imgproxy.delivery.originals") > rank("imgproxy.delivery.policy")
    assert "imgproxy.web.appkeys" in imports("imgproxy.web.routes")


def test_the_serving_process_does_not_import_pillow(tmp_path: Path) -> None:
    """Everything the event loop runs, app built with transforms on and HEIF input (its config
    check finds pillow-heif without importing it): Pillow and its HEIF plugin stay in the workers."""
    script = textwrap.dedent("""
        import sys
        from imgproxy import cli
        from imgproxy.config import parse_config
        from imgproxy.process import server, supervisor
        from imgproxy.web.app import create_app
        config = parse_config({"auth": {"keys": {"k1": "k" * 32}},
                               "sources": {"photos": {"bucket": "private-photos",
                                                      "convert_originals": ["HEIF"]}},
                               "transform": {"enabled": True, "input_formats": ["JPEG", "HEIF"]}},
                              environ={})
        create_app(config)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("PIL", "pillow_heif", "_pillow_heif")))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
