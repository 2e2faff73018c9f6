"""The pictures the ThumbHash vectors were made from: RGBA bytes computed from a few integers,
so the test and the generator (``make_thumbhash_vectors.py``, under Node with the reference's
``js/thumbhash.js``) build the same bytes without any image file or library."""

from __future__ import annotations

from typing import Final

# name: (width, height, kind)
IMAGES: Final = {
    "gradient-landscape": (100, 75, "gradient"),
    "gradient-portrait": (48, 100, "gradient"),
    "one-pixel": (1, 1, "solid"),
    "solid-square": (32, 32, "solid"),
    "noise-opaque": (100, 100, "noise"),
    "noise-alpha": (90, 60, "noise-alpha"),
    "disc-on-transparent": (64, 64, "disc"),
    "stripes-wide": (100, 10, "stripes"),
}


def pixels(width: int, height: int, kind: str) -> bytes:
    out = bytearray()
    seed = 12345
    for y in range(height):
        for x in range(width):
            if kind == "gradient":
                px = (x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), 128, 255)
            elif kind == "solid":
                px = (200, 80, 40, 255)
            elif kind in ("noise", "noise-alpha"):
                channels = []
                for _ in range(4):
                    seed = (seed * 1103515245 + 12345) % 2**31
                    channels.append(seed >> 23)
                px = (channels[0], channels[1], channels[2], channels[3] if kind == "noise-alpha" else 255)
            elif kind == "disc":
                inside = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (width / 3) ** 2
                px = (30, 144, 255, 255) if inside else (0, 0, 0, 0)
            else:  # stripes
                px = (255, 255, 255, 255) if (x // 5) % 2 else (20, 20, 20, 255)
            out += bytes(px)
    return bytes(out)
