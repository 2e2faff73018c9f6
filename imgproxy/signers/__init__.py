"""Signers for other runtimes (JavaScript, PostgreSQL) and the vectors every signer must match.

The files here are package data: ``vectors.json`` (rendered from ``UrlSigner`` by
``vectors.py``), ``imgproxy-sign.mjs`` and ``postgres.sql`` (printed by ``imgproxy sql postgres``).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Final

SQL_DIALECTS: Final = ("postgres",)


def sql_script(dialect: str) -> str:
    """The install script of ``dialect`` (one of ``SQL_DIALECTS``), as shipped in the package."""
    if dialect not in SQL_DIALECTS:
        raise ValueError(f"no SQL signer for {dialect!r} (known: {', '.join(SQL_DIALECTS)})")
    return files(__name__).joinpath(f"{dialect}.sql").read_text(encoding="utf-8")
