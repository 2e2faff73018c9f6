"""The access log line: one per request, as logfmt or JSON, on the ``imgproxy.access`` logger.

What goes in is decided by the callers (``middleware.observe`` and the handlers' ``LOG_FIELDS``):
never a query string (signatures), a token, a credential or a presigned URL; object keys only
when the operator enables ``server.log_keys``. This module only orders and writes the fields.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Final

from aiohttp import web

access_log = logging.getLogger("imgproxy.access")
LOG_FORMAT: Final = web.AppKey("log_format", str)  # "logfmt" (default) or "json"
NUMERIC: Final = frozenset({"status", "bytes", "duration_ms", "storage_ms", "transform_ms"})
_BARE: Final = re.compile(r"[A-Za-z0-9._:/*@+-]+")


def logfmt_value(value: str) -> str:
    if value and _BARE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_line(fields: Mapping[str, str], fmt: str) -> str:
    """``key=value ...`` (logfmt), or one JSON object whose numeric fields are numbers."""
    if fmt == "json":
        return json.dumps({k: _number(v) if k in NUMERIC else v for k, v in fields.items()},
                          ensure_ascii=False, separators=(",", ":"))
    return " ".join(f"{k}={logfmt_value(v)}" for k, v in fields.items())


def _number(value: str) -> int | float | str:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def write(fields: Mapping[str, str], fmt: str) -> None:
    access_log.info("%s", format_line(fields, fmt))
