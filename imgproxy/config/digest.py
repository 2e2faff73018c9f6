"""``config_version``: a short digest naming one validated config, secrets included.

Every worker and replica that loaded the same TOML with the same ``env:``/``file:`` secrets
reports the same version (the ``imgproxy_config_info`` metric), so a reload that reached every
worker is visible. The secrets enter one SHA-256 with everything else and only 48 bits of it
are shown: the version tells nothing about them.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from enum import Enum
from typing import Any

from imgproxy.config.model import Config
from imgproxy.config.values import Secret


def _canonical(value: Any) -> Any:
    if isinstance(value, Secret):
        return ("secret", value.reveal())
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,
                tuple((f.name, _canonical(getattr(value, f.name))) for f in dataclasses.fields(value)))
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, tuple | list):
        return tuple(_canonical(v) for v in value)
    return value


def config_version(config: Config) -> str:
    """12 hex digits; equal for equal configs (values, secrets, order-independent tables)."""
    return hashlib.sha256(repr(_canonical(config)).encode("utf-8")).hexdigest()[:12]
