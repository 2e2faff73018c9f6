"""Placeholders the proxy draws instead of reading an object: the initials avatar and the
neutral silhouette, as the values that cross to an image worker (``transform/avatar.py`` draws).

Pure. ``initials=`` is parsed here, not in ``params.TransformSpec``: it changes only what a
missing photo renders, so it is not part of the spec's canonical form, and a URL with it and one
without share the photo's variant. Initials are 1 to 3 letters; Latin letters with accents are
folded to their base letter (``É`` -> ``E``, ``Ł`` -> ``L``) and everything is uppercased, since
the bundled font (Pillow's Aileron) has ASCII glyphs only; other scripts are refused (400), not
drawn as empty boxes.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from imgproxy.errors import InvalidParameter
from imgproxy.transform.params import Fit, TransformSpec

MAX_INITIALS: Final = 3
DEFAULT_SIZE: Final = 256  # an untransformed request's avatar (no w or h): px, square
DRAWING_VERSION: Final = "1"  # bump when a drawing changes, so its ETag and cache key do
_FOLD: Final = str.maketrans({"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d", "ß": "s",
                              "Æ": "A", "æ": "a", "Œ": "O", "œ": "o", "Þ": "T", "þ": "t"})
# Avatar backgrounds when the URL gives no bg: mid-tone colours white letters read well on,
# chosen per object key, so one person keeps one colour.
PALETTE: Final = ((0x1F, 0x77, 0xB4), (0x2C, 0xA0, 0x2C), (0xD6, 0x27, 0x28), (0x94, 0x67, 0xBD),
                  (0x8C, 0x56, 0x4B), (0xE3, 0x77, 0xC2), (0x7F, 0x7F, 0x7F), (0x17, 0xBE, 0xCF),
                  (0xBC, 0xBD, 0x22), (0xFF, 0x7F, 0x0E))
SILHOUETTE_BACKGROUND: Final = (0xDD, 0xE1, 0xE6)


@dataclass(frozen=True, slots=True)
class Drawing:
    """What to draw: ``letters`` on ``background`` (an initials avatar), or no letters: the
    silhouette; ``width`` x ``height`` output pixels."""

    letters: str
    background: tuple[int, int, int]
    width: int
    height: int

    @property
    def kind(self) -> str:
        return "initials" if self.letters else "silhouette"

    @property
    def canonical(self) -> str:
        """Everything that decides its pixels (with the output format): its cache key and ETag."""
        colour = "".join(f"{c:02x}" for c in self.background)
        return f"drawing/{DRAWING_VERSION}/{self.kind}/{self.letters}/{colour}/{self.width}x{self.height}"


def parse_initials(params: Mapping[str, str]) -> str | None:
    """``initials=`` folded and uppercased, or None when absent; ``InvalidParameter`` otherwise."""
    text = params.get("initials")
    if text is None:
        return None
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.translate(_FOLD))
                     if not unicodedata.combining(c)).upper()
    if not 1 <= len(folded) <= MAX_INITIALS or not (folded.isascii() and folded.isalpha()):
        raise InvalidParameter(f"param initials: {text[:16]!r}", public_message=(
            f"Parameter 'initials' must be 1 to {MAX_INITIALS} Latin letters (accents are dropped)."))
    return folded


def drawing_size(spec: TransformSpec | None) -> tuple[int, int]:
    """The request's box (w x h); one side given: a square of it; neither: ``DEFAULT_SIZE``."""
    if spec is None or (spec.width is None and spec.height is None):
        return DEFAULT_SIZE, DEFAULT_SIZE
    width = spec.width or spec.height
    height = spec.height or spec.width
    assert width is not None
    assert height is not None
    if spec.fit is Fit.INSIDE and spec.width and spec.height:
        side = min(spec.width, spec.height)  # inside a box: a square that fits it
        return side, side
    return width, height


def avatar_background(spec: TransformSpec | None, key: str) -> tuple[int, int, int]:
    """The URL's ``bg`` (its alpha ignored: an avatar is opaque), else a palette colour chosen by
    the object key."""
    if spec is not None and spec.background is not None:
        return spec.background[:3]
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return PALETTE[int.from_bytes(digest, "big") % len(PALETTE)]


def initials_drawing(letters: str, spec: TransformSpec | None, key: str) -> Drawing:
    return Drawing(letters, avatar_background(spec, key), *drawing_size(spec))


def silhouette_drawing(spec: TransformSpec | None) -> Drawing:
    return Drawing("", SILHOUETTE_BACKGROUND if spec is None or spec.background is None
                   else spec.background[:3], *drawing_size(spec))
