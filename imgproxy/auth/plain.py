"""What a plain URL (no signature) may ask for when a grant cookie, a JWT or an auth proxy's user
authorizes it: a bounded set of renders, so a logged-in user cannot make the server render
millions of distinct variants.

Pure. Signed URLs are bounded by whoever signs them, and static tokens belong to services the
operator configured; a user's own credential may ask only for ``auth.plain_widths`` (as ``w``
and ``h``), ``dpr`` 1, 2 or 3, any ``fit`` or ``fmt`` (a handful of values each), any
``preset`` (the operator's ``[transform.presets]``, whose ``allow_override`` then applies) and
``gravity=auto`` (one value: the attention crop), unless ``auth.plain_any_transform`` lifts the
limit. Never ``fp``: a focal point has a million values, so a million renders per size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from imgproxy.errors import ParamsNotAllowed

SIZED: Final = ("w", "h")
ENUMERATED: Final = frozenset({"fit", "fmt", "preset"})
DPRS: Final = frozenset({"1", "2", "3"})
GRAVITIES: Final = frozenset({"auto"})


@dataclass(frozen=True, slots=True)
class PlainPolicy:
    widths: frozenset[str] = frozenset()  # as the query spells them: "96", not "096"
    any_transform: bool = False

    @classmethod
    def of(cls, widths: tuple[int, ...], any_transform: bool) -> PlainPolicy:
        return cls(frozenset(str(w) for w in widths), any_transform)

    def check(self, params: Mapping[str, str]) -> None:
        """``ParamsNotAllowed`` naming the first parameter outside the policy."""
        if self.any_transform:
            return
        for name in sorted(params):
            value = params[name]
            if (name in SIZED and value in self.widths) or (name == "dpr" and value in DPRS) \
                    or (name == "gravity" and value in GRAVITIES) or name in ENUMERATED:
                continue
            raise ParamsNotAllowed(f"plain URL parameter {name}={value[:16]!r} not allowed")
