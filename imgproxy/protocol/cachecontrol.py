"""Capping a ``Cache-Control`` value (what answers to durable URLs carry) and making one private
(what answers to a user's own credential carry: a grant cookie, a JWT, an auth proxy's user).

Pure. A durable URL never expires, so whatever caches its answer decides how long a revocation
takes to bite: the cap keeps that bounded. ``public``, ``s-maxage`` and ``immutable`` are
dropped (no shared cache may keep the answer, no browser may skip revalidating it), ``private``
is added, and ``max-age`` becomes at most the cap; ``no-store``/``no-cache`` are kept as they are.
"""

from __future__ import annotations

import re
from typing import Final

_DROPPED: Final = frozenset({"public", "s-maxage", "immutable", "private", "max-age"})
_NUMBER: Final = re.compile(r"[0-9]{1,12}")


def cap_cache_control(value: str | None, max_age: float) -> str:
    """``value`` with ``max-age`` at most ``max_age`` seconds, ``private``, and no directive
    that lets a shared cache keep it or a browser skip revalidation."""
    cap = max(0, int(max_age))
    kept: list[str] = []
    age: int | None = None
    for part in (value or "").split(","):
        directive = part.strip()
        if not directive:
            continue
        name, _, argument = directive.partition("=")
        name = name.strip().lower()
        if name == "max-age":
            argument = argument.strip().strip('"')
            age = int(argument) if _NUMBER.fullmatch(argument) else 0
        if name not in _DROPPED:
            kept.append(directive)
    age = cap if age is None else min(age, cap)
    return ", ".join(["private", f"max-age={age}", *kept])


_SHARED: Final = frozenset({"public", "private", "s-maxage", "proxy-revalidate"})


def private_cache_control(value: str | None) -> str:
    """``value`` for one user's browser only: ``private`` first, and no directive meant for
    shared caches; ``max-age``, ``immutable``, ``no-cache``, ... are kept."""
    kept = [part.strip() for part in (value or "").split(",")
            if part.strip() and part.strip().partition("=")[0].strip().lower() not in _SHARED]
    return ", ".join(["private", *kept])
