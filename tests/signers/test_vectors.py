"""imgproxy/signers/vectors.json: still what UrlSigner produces, broad enough, and matched by the
Python signers (UrlSigner, sign_url, verify_signature); shipped as package data."""

from __future__ import annotations

import tomllib
import unicodedata
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from imgproxy.auth.signing import UrlSigner, compute_signature, parse_query, sign_url, verify_url
from imgproxy.errors import InvalidSignature
from imgproxy.protocol.paths import parse_image_path
from imgproxy.signers.cases import CASES
from imgproxy.signers.vectors import Vector, committed_text, load_vectors, render, text_params

ROOT = Path(__file__).resolve().parents[2]
VECTORS = load_vectors()
BY_NAME = {v.case.name: v for v in VECTORS}


def test_committed_vectors_are_what_url_signer_produces() -> None:
    """A change to the signing rule (or to a case) must come with a re-rendered vectors.json:
    ``python -m imgproxy.signers.vectors``."""
    assert committed_text() == render()


def test_vectors_are_the_cases_in_order() -> None:
    assert [v.case for v in VECTORS] == list(CASES)
    assert len(BY_NAME) == len(VECTORS) >= 20


def test_nfc_and_nfd_of_one_name_sign_differently() -> None:
    nfc, nfd = BY_NAME["nfc-name"], BY_NAME["nfd-name"]
    assert unicodedata.normalize("NFC", nfd.case.key) == nfc.case.key != nfd.case.key
    assert nfc.expected.url != nfd.expected.url
    assert "Zo%C3%AB.jpg" in nfc.expected.canonical
    assert "Zoe%CC%88.jpg" in nfd.expected.canonical


def test_the_vectors_cover_each_feature() -> None:
    cases = [v.case for v in VECTORS]
    assert {c.window for c in cases} >= {0, 60, 3600}
    assert any(c.durable for c in cases)
    assert any(c.kid is None for c in cases)
    assert any(c.sub is not None and not c.sub.isascii() for c in cases)
    assert any(isinstance(value, int) for c in cases for value in c.params.values())
    assert any(c.now != int(c.now) for c in cases)
    assert any(ord(char) > 0xFFFF for c in cases for char in "".join(c.params) + c.key)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.case.name for v in VECTORS])
def test_url_signer_produces_each_vector(vector: Vector) -> None:
    case = vector.case
    url = UrlSigner(case.secret, case.kid, case.base_url).sign(
        case.source, case.key, ttl=case.ttl, params=text_params(case.params), now=case.now,
        window=case.window, durable=case.durable, sub=case.sub, route=case.route)
    assert url == vector.expected.url


@pytest.mark.parametrize("vector", VECTORS, ids=[v.case.name for v in VECTORS])
def test_sign_url_with_the_vectors_stamps_produces_it(vector: Vector) -> None:
    case, expected = vector.case, vector.expected
    url = sign_url(case.source, case.key, secret=case.secret, exp=expected.exp, iat=expected.iat,
                   kid=case.kid, params=text_params(case.params), base_url=case.base_url, sub=case.sub,
                   route=case.route)
    assert url == expected.url
    assert url == case.base_url.rstrip("/") + expected.canonical + "&sig=" + expected.sig
    assert compute_signature(case.secret.encode(), expected.canonical) == expected.sig


@pytest.mark.parametrize("vector", [v for v in VECTORS if not v.case.durable],
                         ids=[v.case.name for v in VECTORS if not v.case.durable])
def test_the_server_verifies_each_expiring_vector(vector: Vector) -> None:
    """What the server decodes from the URL rebuilds the same canonical form."""
    case, parts = vector.case, urlsplit(vector.expected.url)
    base_path = urlsplit(case.base_url).path.rstrip("/")
    target = parse_image_path(parts.path[len(base_path):], case.route)
    params = parse_query(parts.query, 32)
    assert params["sig"] == vector.expected.sig
    url = verify_url(target.source, target.key, params, keys={case.kid or "only": case.secret.encode()},
                     now=case.now, max_ttl=case.ttl + case.window, clock_skew=1, route=case.route)
    assert url.kid == (case.kid or "only")


@pytest.mark.parametrize("route", ["img", "meta"])
def test_a_signature_opens_only_its_own_route(route: str) -> None:
    """The route is in the canonical form: the same path and params under the other route fail."""
    vector = next(v for v in VECTORS if v.case.route == route and not v.case.durable)
    case, parts = vector.case, urlsplit(vector.expected.url)
    target = parse_image_path(parts.path, route)
    params = parse_query(parts.query, 32)
    other = "meta" if route == "img" else "img"
    with pytest.raises(InvalidSignature):
        verify_url(target.source, target.key, params, keys={case.kid or "only": case.secret.encode()},
                   now=case.now, max_ttl=case.ttl + case.window, clock_skew=1, route=other)


def test_the_readme_vector_signs_differently_as_a_meta_url() -> None:
    img, meta = BY_NAME["readme-key"], BY_NAME["meta-readme-key"]
    assert img.expected.canonical.startswith("/img/photos/employees/Zo%C3%AB%20Smith%2B1.jpg?")
    assert meta.expected.canonical.startswith("/meta/photos/employees/Zo%C3%AB%20Smith%2B1.jpg?")
    as_image = "/img" + meta.expected.canonical.removeprefix("/meta")
    assert compute_signature(meta.case.secret.encode(), as_image) != meta.expected.sig


def test_vectors_and_signers_are_package_data() -> None:
    """An installed wheel carries every non-Python file of imgproxy/signers."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["imgproxy"]
    data = sorted(p.relative_to(ROOT / "imgproxy").as_posix()
                  for p in (ROOT / "imgproxy" / "signers").iterdir() if p.suffix != ".py" and p.is_file())
    assert {"signers/vectors.json", "signers/postgres.sql", "signers/imgproxy-sign.mjs"} <= set(data)
    assert [name for name in data if not any(fnmatch(name, pattern) for pattern in patterns)] == []
