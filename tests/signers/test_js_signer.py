"""imgproxy/signers/imgproxy-sign.mjs under Debian's node: every vector, byte for byte, through
signUrl and through createSigner's sign and signMany; what it refuses.

No skip: CI installs nodejs (.ci/run), so a missing node fails here."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from imgproxy.signers.vectors import committed_text, load_vectors

MODULE = Path(str(files("imgproxy.signers").joinpath("imgproxy-sign.mjs")))
VECTORS = load_vectors()

# Reads the vectors on stdin; prints, per case, what signUrl, sign and signMany made.
SIGN_VECTORS = """
import { readFileSync } from "node:fs";
import { createSigner, signUrl } from "%(module)s";
const { cases } = JSON.parse(readFileSync(0, "utf8"));
const out = cases.map((c) => {
  const opts = { ttl: c.ttl, window: c.window, durable: c.durable, sub: c.sub, now: c.now, params: c.params,
                 route: c.route };
  const signer = createSigner({ secret: c.secret, kid: c.kid, baseUrl: c.base_url });
  const { params, ...batchOpts } = opts;
  return {
    signUrl: signUrl({ ...opts, secret: c.secret, kid: c.kid, baseUrl: c.base_url, source: c.source,
                       key: c.key }),
    sign: signer.sign(c.source, c.key, opts),
    signMany: signer.signMany([[c.source, c.key, params], [c.source, c.key, params]], batchOpts),
  };
});
process.stdout.write(JSON.stringify(out));
"""

# One signUrl call per line of stdin (a JSON object of arguments); prints the error's name or "ok".
REFUSALS = """
import { readFileSync } from "node:fs";
import { signUrl } from "%(module)s";
for (const line of readFileSync(0, "utf8").split("\\n").filter(Boolean)) {
  const revive = (k, v) => (typeof v === "string" && v.startsWith("bigint:") ? BigInt(v.slice(7)) : v);
  const args = JSON.parse(line, revive);
  try { signUrl(args); console.log("ok"); } catch (e) { console.log(e.name); }
}
"""


def node(script: str, stdin: str) -> str:
    binary = shutil.which("node")
    assert binary is not None, "node is not installed (CI installs Debian's nodejs: .ci/run)"
    result = subprocess.run([binary, "--input-type=module", "-e", script % {"module": MODULE.as_uri()}],
                            input=stdin, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def signed_by_node() -> list[dict[str, Any]]:
    return json.loads(node(SIGN_VECTORS, committed_text()))  # type: ignore[no-any-return]


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=[v.case.name for v in VECTORS])
def test_sign_url_produces_each_vector(signed_by_node: list[dict[str, Any]], index: int) -> None:
    assert signed_by_node[index]["signUrl"] == VECTORS[index].expected.url


@pytest.mark.parametrize("index", range(len(VECTORS)), ids=[v.case.name for v in VECTORS])
def test_create_signer_sign_and_sign_many_produce_each_vector(signed_by_node: list[dict[str, Any]],
                                                              index: int) -> None:
    url = VECTORS[index].expected.url
    assert signed_by_node[index]["sign"] == url
    assert signed_by_node[index]["signMany"] == [url, url]


BASE = {"secret": "s" * 40, "kid": "k1", "source": "photos", "key": "a.jpg", "now": 1767222000}
REFUSED: dict[str, dict[str, Any]] = {
    "reserved-exp": {"params": {"exp": "1"}},
    "reserved-iat": {"params": {"iat": "1"}},
    "reserved-kid": {"params": {"kid": "k2"}},
    "reserved-sig": {"params": {"sig": "x"}},
    "reserved-sub": {"params": {"sub": "x"}},
    "empty-name": {"params": {"": "x"}},
    "lone-high-surrogate-in-key": {"key": "a\ud800.jpg"},
    "lone-low-surrogate-in-value": {"params": {"w": "\udc00"}},
    "lone-surrogate-in-name": {"params": {"\ud83d": "x"}},
    "lone-surrogate-in-sub": {"sub": "x\udfff"},
    "fractional-number": {"params": {"w": 1.5}},
    "unsafe-integer": {"params": {"w": 9007199254740993}},
    "boolean-param": {"params": {"w": True}},
    "null-param": {"params": {"w": None}},
    "object-param": {"params": {"w": {"a": 1}}},
    "fractional-ttl": {"ttl": 1.5},
    "zero-ttl": {"ttl": 0},
    "negative-window": {"window": -60},
    "dot-dot-key": {"key": "a/../b.jpg"},
    "control-character-in-key": {"key": "a\nb.jpg"},
    "sub-too-long": {"sub": "x" * 129},
    "sub-with-control-character": {"sub": "a\u0085b"},
}
ACCEPTED: dict[str, dict[str, Any]] = {
    "bigint-param": {"params": {"w": "bigint:123456789012345678901234567890"}},
    "surrogate-pair": {"key": "\U0001F600.jpg", "sub": "\U0001F600"},
    "durable-ignores-ttl": {"durable": True, "ttl": 0},
    "sub-of-128-astral-characters": {"sub": "\U0001F600" * 128},
}


def run_refusals(cases: dict[str, dict[str, Any]]) -> list[str]:
    # json.dumps writes lone surrogates as \\udXXX escapes, which JSON.parse keeps as lone units.
    lines = "".join(json.dumps({**BASE, **case}) + "\n" for case in cases.values())
    return node(REFUSALS, lines).split()


def test_what_the_spec_refuses_is_refused() -> None:
    outcomes = dict(zip(REFUSED, run_refusals(REFUSED), strict=True))
    assert {name: outcome for name, outcome in outcomes.items() if outcome == "ok"} == {}


def test_what_the_spec_allows_is_accepted() -> None:
    assert run_refusals(ACCEPTED) == ["ok"] * len(ACCEPTED)


def test_the_signer_imports_nothing_but_node_crypto() -> None:
    imports = [line for line in MODULE.read_text(encoding="utf-8").splitlines() if line.startswith("import ")]
    assert imports == ['import { createHmac } from "node:crypto";']
