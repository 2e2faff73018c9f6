"""``ca_bundle`` and ``verify_tls`` in a source or ``[cache.store]``: checked when the config loads.

The bundle must exist, be readable and hold PEM certificates that OpenSSL parses; anything else is
a one-line ``ConfigError`` naming the key, before any connection is made.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import nginx_site
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from imgproxy.config import ConfigError, parse_config

KEY = "config-tls-test-signing-key-0123456789abcdef"
HTTPS = "https://minio.internal:9000"


def data_with(source: dict[str, Any], store: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "auth": {"keys": {"k1": KEY}},
        "sources": {"photos": {"bucket": "photos-bucket", "endpoint_url": HTTPS, **source}},
    }
    if store is not None:
        data["cache"] = {"store": {"bucket": "store-bucket", "endpoint_url": HTTPS, **store}}
    return data


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nginx_site.make_authority(tmp_path_factory.mktemp("ca")).ca


def test_a_pem_bundle_is_kept_by_its_path(ca_file: Path) -> None:
    source = parse_config(data_with({"ca_bundle": str(ca_file)}), environ={}).sources["photos"]
    assert (source.ca_bundle, source.verify_tls) == (str(ca_file), True)


def test_a_bundle_of_several_certificates_with_text_between_them_is_accepted(
        tmp_path: Path, ca_file: Path) -> None:
    other = nginx_site.make_authority(tmp_path / "other").ca
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"# company CAs\n" + ca_file.read_bytes() + b"\nsubject=...\n" + other.read_bytes())
    assert parse_config(data_with({"ca_bundle": str(bundle)}), environ={}).sources["photos"].ca_bundle


def test_the_defaults_verify_with_the_default_trust_store() -> None:
    source = parse_config(data_with({}), environ={}).sources["photos"]
    assert (source.ca_bundle, source.verify_tls) == (None, True)


def test_verify_tls_false_is_accepted() -> None:
    assert parse_config(data_with({"verify_tls": False}), environ={}).sources["photos"].verify_tls is False


def test_the_store_takes_its_own_bundle(ca_file: Path) -> None:
    config = parse_config(data_with({}, {"ca_bundle": str(ca_file)}), environ={})
    assert config.cache.store is not None
    assert config.cache.store.ca_bundle == str(ca_file)
    assert config.sources["photos"].ca_bundle is None


def bad_files(directory: Path, ca_file: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a path that is no CA bundle, what the error says)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pem = ca_file.read_bytes()
    lines = pem.splitlines()
    corrupt = b"\n".join([lines[0], lines[1][:10] + b"AAAAAAAAAAAAAAAA" + lines[1][26:], *lines[2:]])
    files = {
        "empty": (b"", "holds no PEM certificate"),
        "text": (b"not a certificate\n", "holds no PEM certificate"),
        "der": (b"0\x82\x01\x0a" + os.urandom(64), "holds no PEM certificate"),
        "key-only": (key, "holds no PEM certificate"),
        "corrupt-certificate": (corrupt, "does not parse"),
        "truncated": (pem[: len(pem) // 2] + b"\n-----END CERTIFICATE-----\n", "does not parse"),
    }
    found: dict[str, tuple[Path, str]] = {}
    for name, (content, message) in files.items():
        path = directory / f"{name}.pem"
        path.write_bytes(content)
        found[name] = (path, message)
    found["missing"] = (directory / "nowhere.pem", "no such file")
    found["directory"] = (directory, "is a directory")
    return found


BAD = ["empty", "text", "der", "key-only", "corrupt-certificate", "truncated", "missing", "directory"]


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("table", ["sources.photos", "cache.store"])
def test_a_file_that_is_no_ca_bundle_is_one_config_line_naming_the_key(
        tmp_path: Path, ca_file: Path, case: str, table: str) -> None:
    path, message = bad_files(tmp_path / "files", ca_file)[case]
    data = data_with({"ca_bundle": str(path)}) if table == "sources.photos" else \
        data_with({}, {"ca_bundle": str(path)})
    with pytest.raises(ConfigError) as caught:
        parse_config(data, environ={})
    text = str(caught.value)
    assert text.startswith(f"{table}.ca_bundle: {path}: ")
    assert message in text
    assert "\n" not in text


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_bundle_is_a_config_error(tmp_path: Path, ca_file: Path) -> None:
    path = tmp_path / "secret.pem"
    path.write_bytes(ca_file.read_bytes())
    path.chmod(0)
    with pytest.raises(ConfigError, match=r"^sources\.photos\.ca_bundle: .*: not readable by this user$"):
        parse_config(data_with({"ca_bundle": str(path)}), environ={})


@pytest.mark.parametrize(("source", "where", "fragment"), [
    ({"ca_bundle": "CA", "verify_tls": False}, "sources.photos.verify_tls", "give one or the other"),
    ({"ca_bundle": "CA", "endpoint_url": "http://minio.internal:9000"}, "sources.photos.ca_bundle",
     "endpoint_url is http://"),
    ({"verify_tls": False, "endpoint_url": "http://minio.internal:9000"}, "sources.photos.verify_tls",
     "endpoint_url is http://"),
    ({"verify_tls": "no"}, "sources.photos.verify_tls", "expected true or false"),
    ({"ca_bundle": 7}, "sources.photos.ca_bundle", "expected a string"),
], ids=["bundle-and-no-verify", "bundle-on-http", "no-verify-on-http", "verify-not-bool", "bundle-not-str"])
def test_contradictory_or_mistyped_tls_keys_are_config_errors(ca_file: Path, source: dict[str, Any],
                                                              where: str, fragment: str) -> None:
    source = {k: str(ca_file) if v == "CA" else v for k, v in copy.deepcopy(source).items()}
    with pytest.raises(ConfigError) as caught:
        parse_config(data_with(source), environ={})
    assert str(caught.value).startswith(f"{where}: ")
    assert fragment in str(caught.value)
