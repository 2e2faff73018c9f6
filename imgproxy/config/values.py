"""Configuration values: the error type, masked secrets, durations, sizes, CA bundles and fixed
limits.

Imports nothing of ours (``errors`` and ``config`` sit at the bottom of the import graph).
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Mapping
from typing import Final

CONFIG_PATH_ENV: Final = "IMGPROXY_CONFIG"
CONFIG_TOML_ENV: Final = "IMGPROXY_CONFIG_TOML"
MIN_SIGNING_KEY_BYTES: Final = 32
MIN_TOKEN_BYTES: Final = 32
# Seven days: S3 refuses presigned URLs valid for longer, and no TTL of ours (auth.max_ttl,
# auth.sign_ttl, delivery.presign_ttl) may exceed it either.
MAX_TTL_LIMIT: Final = 7 * 24 * 3600
NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", re.ASCII)
DEFAULT_INLINE_TYPES: Final = (
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/bmp",
    "image/x-icon",
    "image/vnd.microsoft.icon",
)
_SIZE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS: Final = {"B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2,
                      "GB": 1000**3, "GiB": 1024**3}
INPUT_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "BMP", "TIFF", "HEIF")
# Input formats whose decoder is an extra, not Pillow itself: format -> (its modules, the extra).
PLUGIN_FORMATS: Final = {"HEIF": (("pillow_heif", "_pillow_heif"), "heif")}
# What sources.NAME.convert_originals may list: formats browsers (but Safari) cannot show.
CONVERTIBLE_FORMATS: Final = ("HEIF",)
DEFAULT_INPUT_FORMATS: Final = ("JPEG", "PNG", "GIF", "WEBP", "AVIF")
AUTO_FORMATS: Final = ("webp", "avif")  # what fmt=auto may send besides JPEG/PNG
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MIN_PRESIGNED_VALIDITY: Final = 60.0  # a presigned URL handed out must work at least this long
MAX_CA_BUNDLE_BYTES: Final = 16 * 1024 * 1024  # a system bundle is a few hundred KiB
_PEM_CERTIFICATE: Final = re.compile(
    rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]*?-----END CERTIFICATE-----")


class ConfigError(Exception):
    """A configuration problem, worded for one line of output: ``key.path: what is wrong``."""


class Secret:
    """A secret string whose ``repr`` and ``str`` are masked; ``reveal()`` at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration such as 30, \"30s\", \"5m\" or \"1h\"")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise ConfigError(f"{where}: expected a duration such as 30, \"30s\", \"5m\" or \"1h\"")
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{where}: must be a finite, non-negative duration")
    return seconds


def parse_size(value: object, where: str) -> int:
    """Bytes from a whole number or a string like ``"512KiB"``, ``"40MB"``, ``"1GiB"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size such as 1048576, \"512KiB\" or \"40MiB\"")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or "B"])
    else:
        raise ConfigError(f"{where}: expected a size such as 1048576, \"512KiB\" or \"40MiB\"")
    if size < 0:
        raise ConfigError(f"{where}: must not be negative")
    return size


MAX_SECRET_FILE_BYTES: Final = 64 * 1024


def _read_secret_file(path: str, where: str) -> Secret:
    """``file:PATH``: the file's text, one trailing newline dropped (as ``echo`` writes it).
    Read at start-up and at every reload, so a rotated file takes effect without a restart."""
    if not path:
        raise ConfigError(f"{where}: 'file:' needs a path")
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc.__class__.__name__}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{where}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path} is not UTF-8 text") from None
    text = text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text
    if not text:
        raise ConfigError(f"{where}: {path} is empty")
    return Secret(text)


def resolve_secret(value: object, where: str, environ: Mapping[str, str]) -> Secret:
    """A literal string, ``env:VAR_NAME`` read from the environment, or ``file:PATH`` read from
    a file."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, 'env:VAR_NAME' or 'file:PATH'")
    if value.startswith("file:"):
        return _read_secret_file(value[5:], where)
    if value.startswith("env:"):
        var = value[4:]
        if not var:
            raise ConfigError(f"{where}: 'env:' needs a variable name")
        if var not in environ:
            raise ConfigError(f"{where}: environment variable {var} is not set")
        if not environ[var]:
            raise ConfigError(f"{where}: environment variable {var} is empty")
        return Secret(environ[var])
    return Secret(value)


def check_ca_bundle(path: str, where: str) -> None:
    """``path`` is a readable PEM file of certificates that OpenSSL parses (as botocore, the body
    GETs and nginx will read it at start-up); otherwise a ConfigError saying which of these fails."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CA_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{where}: {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: {path}: is a directory, not a PEM file") from None
    except PermissionError:
        raise ConfigError(f"{where}: {path}: not readable by this user") from None
    except OSError as exc:
        raise ConfigError(f"{where}: {path}: cannot read: {exc.__class__.__name__}") from None
    if len(data) > MAX_CA_BUNDLE_BYTES:
        raise ConfigError(f"{where}: {path}: over {MAX_CA_BUNDLE_BYTES >> 20} MiB, not a CA bundle")
    certificates = _PEM_CERTIFICATE.findall(data)
    if not certificates:
        raise ConfigError(f"{where}: {path}: holds no PEM certificate ('-----BEGIN CERTIFICATE-----')")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=b"\n".join(certificates).decode("ascii"))
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise ConfigError(f"{where}: {path}: a certificate in it does not parse ({reason})") from None
