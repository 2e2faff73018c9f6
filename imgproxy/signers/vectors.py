"""The signing vectors: ``CASES`` signed by ``UrlSigner`` (the reference), as ``vectors.json``.

``vectors.json`` is committed and shipped in the package; every signer's tests read it, and a
test checks it is still what ``render()`` gives, so a change to the signing rule fails loudly.
Rewrite it after a deliberate change with ``python -m imgproxy.signers.vectors``.

The JSON is ASCII (``\\u`` escapes), so no editor or tool can normalise the NFC and NFD cases
into each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from imgproxy.auth.signing import UrlSigner, compute_signature, stamps
from imgproxy.signers.cases import CASES, Case

FILE_NAME: Final = "vectors.json"
ABOUT: Final = ("Signing vectors for imgproxy URLs (README.md, 'Signing spec'). Each case: the inputs "
                "of a signer and what it must produce. Integer params are written in decimal.")


@dataclass(frozen=True, slots=True)
class Expected:
    """What a signer must produce for a case: the stamps, the canonical form, sig and URL."""

    exp: int | None
    iat: int
    canonical: str
    sig: str
    url: str


@dataclass(frozen=True, slots=True)
class Vector:
    case: Case
    expected: Expected


def text_params(params: Mapping[str, str | int]) -> dict[str, str]:
    """The parameters as signed: integers written in decimal (``bool`` is not an integer here)."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"parameter {name!r}: strings and integers only")
        out[name] = str(value)
    return out


def expected_for(case: Case) -> Expected:
    """Sign ``case`` with ``UrlSigner`` and take its URL apart into the canonical form and sig."""
    signer = UrlSigner(case.secret, case.kid, case.base_url)
    url = signer.sign(case.source, case.key, ttl=case.ttl, params=text_params(case.params), now=case.now,
                      window=case.window, durable=case.durable, sub=case.sub, route=case.route)
    exp, iat = stamps(case.now, case.ttl, case.window, durable=case.durable)
    path, _, sig = url[len(case.base_url.rstrip("/")):].rpartition("&sig=")
    if compute_signature(case.secret.encode(), path) != sig:
        raise AssertionError(f"{case.name}: the URL is not its canonical form and sig")
    return Expected(exp=exp, iat=iat, canonical=path, sig=sig, url=url)


def render() -> str:
    """The text of ``vectors.json`` as the current signing rule makes it."""
    cases = [{**asdict(case), "params": dict(case.params), "expected": asdict(expected_for(case))}
             for case in CASES]
    return json.dumps({"about": ABOUT, "cases": cases}, indent=2, ensure_ascii=True) + "\n"


def committed_text() -> str:
    return files(__package__ or "imgproxy.signers").joinpath(FILE_NAME).read_text(encoding="utf-8")


def load_vectors(text: str | None = None) -> list[Vector]:
    """The vectors in ``vectors.json`` (or in ``text``), as typed records."""
    data: dict[str, Any] = json.loads(committed_text() if text is None else text)
    vectors = []
    for entry in data["cases"]:
        fields = dict(entry)
        expected = Expected(**fields.pop("expected"))
        vectors.append(Vector(Case(**fields), expected))
    return vectors


if __name__ == "__main__":
    Path(__file__).with_name(FILE_NAME).write_text(render(), encoding="utf-8")
