"""Transform parameters: the signed query -> a frozen, normalised ``TransformSpec``.

Pure. Every problem is an ``InvalidParameter`` naming the parameter. The spec's ``canonical``
string is what the variant cache key and the variant ETag are built from, so two requests that
ask for the same pixels (``w=150&dpr=2`` and ``w=300``) share one variant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, TypeVar

from imgproxy.auth.signing import RESERVED_PARAMS
from imgproxy.errors import InvalidParameter

TRANSFORM_PARAMS: Final = frozenset({"w", "h", "dpr", "fit", "gravity", "fp", "fmt", "q", "bg"})
# What only a missing object's placeholder uses (``transform/drawing.py``): allowed beside the
# transform, never part of the spec (a URL with it shares the photo's variant).
PLACEHOLDER_PARAMS: Final = frozenset({"initials"})
_INT: Final = re.compile(r"^[0-9]{1,6}$")
_DPR: Final = re.compile(r"^[0-9](?:\.[0-9]{1,2})?$")
_COLOR: Final = re.compile(r"^([0-9a-fA-F]{6})([0-9a-fA-F]{2})?$")
# One fp coordinate: 0 or 1, or 0 or 1 with a point and 1-3 digits, at most 1 ("0.5", "0.250",
# "1.000"); no sign, no bare ".5", no exponent. Kept in thousandths, so "0.5" and "0.500" share
# a variant.
_FRACTION: Final = r"(0(?:\.[0-9]{1,3})?|1(?:\.0{1,3})?)"
_FOCUS: Final = re.compile(rf"^{_FRACTION},{_FRACTION}$")
E = TypeVar("E", bound=StrEnum)


class Fit(StrEnum):
    COVER = "cover"      # fill the box, crop the overflow at ``gravity``
    CONTAIN = "contain"  # fit inside the box, letterbox with ``bg`` (or transparency)
    FILL = "fill"        # stretch to the box
    INSIDE = "inside"    # fit inside, never enlarge (the default)


class Gravity(StrEnum):
    CENTER = "center"
    NORTH = "north"
    SOUTH = "south"
    EAST = "east"
    WEST = "west"
    NORTHEAST = "northeast"
    NORTHWEST = "northwest"
    SOUTHEAST = "southeast"
    SOUTHWEST = "southwest"
    AUTO = "auto"  # an attention crop: the window with the most detail (transform/attention.py)

    @property
    def is_fixed(self) -> bool:
        return self is not Gravity.AUTO


class OutputFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    AVIF = "avif"

    @property
    def media_type(self) -> str:
        return f"image/{self.value}"

    @property
    def has_alpha(self) -> bool:
        return self is not OutputFormat.JPEG

    @property
    def has_quality(self) -> bool:
        return self in (OutputFormat.JPEG, OutputFormat.WEBP, OutputFormat.AVIF)


@dataclass(frozen=True, slots=True)
class TransformLimits:
    max_width: int
    max_height: int
    formats: Collection[OutputFormat]  # what this Pillow build can encode


@dataclass(frozen=True, slots=True)
class TransformSpec:
    """What the client asked for, in output pixels (``dpr`` already applied)."""

    width: int | None
    height: int | None
    fit: Fit = Fit.INSIDE
    gravity: Gravity = Gravity.CENTER
    fmt: OutputFormat | None = None  # None: keep the source's format family
    auto_format: bool = False        # fmt=auto: choose from Accept (and send Vary: Accept)
    quality: int | None = None
    background: tuple[int, int, int, int] | None = None
    # fp=x,y: the point the fit=cover crop is centred on, in thousandths of the displayed
    # (upright) picture's width and height.
    focus: tuple[int, int] | None = None

    @property
    def canonical(self) -> str:
        parts = [
            f"w={self.width or 0}",
            f"h={self.height or 0}",
            f"fit={self.fit.value}",
            f"g={self.gravity.value}",
            f"fmt={'auto' if self.auto_format else (self.fmt.value if self.fmt else 'src')}",
            f"q={self.quality or 0}",
            "bg=" + ("".join(f"{c:02x}" for c in self.background) if self.background else "none"),
        ]
        if self.focus is not None:  # only when set: the keys of every other variant stay as they were
            parts.append(f"fp={self.focus[0]}:{self.focus[1]}")
        return ",".join(parts)


def _bad(name: str, why: str) -> InvalidParameter:
    return InvalidParameter(f"param {name}: {why}", public_message=f"Parameter '{name}' {why}.")


def _dimension(params: Mapping[str, str], name: str, limit: int, dpr: float) -> int | None:
    text = params.get(name)
    if text is None:
        return None
    if not _INT.fullmatch(text) or int(text) < 1:
        raise _bad(name, "must be a whole number of pixels, at least 1")
    pixels = math.ceil(int(text) * dpr - 1e-9)
    if pixels > limit:
        raise _bad(name, f"times dpr must be at most {limit}")
    return pixels


def _choice(params: Mapping[str, str], name: str, enum: type[E], default: E) -> E:
    text = params.get(name)
    if text is None:
        return default
    try:
        return enum(text.lower())
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise _bad(name, f"must be one of: {allowed}") from None


def _focus(params: Mapping[str, str], fit: Fit) -> tuple[int, int] | None:
    text = params.get("fp")
    if text is None:
        return None
    match = _FOCUS.fullmatch(text)
    if match is None:
        raise _bad("fp", "must be x,y: two fractions from 0 to 1 with at most 3 decimals (0.5,0.25)")
    if fit is not Fit.COVER:
        raise _bad("fp", "only applies to fit=cover")
    if "gravity" in params:
        raise _bad("fp", "cannot be combined with gravity")
    x, y = (round(float(group) * 1000) for group in match.groups())
    return x, y


def parse_transform(params: Mapping[str, str], limits: TransformLimits) -> TransformSpec | None:
    """The requested transform, or ``None`` when the query asks for the original."""
    unknown = sorted(set(params) - RESERVED_PARAMS - TRANSFORM_PARAMS - PLACEHOLDER_PARAMS)
    if unknown:
        allowed = ", ".join(sorted(TRANSFORM_PARAMS | PLACEHOLDER_PARAMS))
        raise InvalidParameter(f"unknown param {unknown[0]}",
                               public_message=f"Unknown parameter '{unknown[0]}' (known: {allowed}).")
    if not TRANSFORM_PARAMS & params.keys():
        return None
    dpr = 1.0
    if "dpr" in params:
        if not _DPR.fullmatch(params["dpr"]) or not 1 <= float(params["dpr"]) <= 4:
            raise _bad("dpr", "must be a number from 1 to 4")
        dpr = float(params["dpr"])
    width = _dimension(params, "w", limits.max_width, dpr)
    height = _dimension(params, "h", limits.max_height, dpr)
    fit = _choice(params, "fit", Fit, Fit.INSIDE)
    gravity = _choice(params, "gravity", Gravity, Gravity.CENTER)
    if "gravity" in params and fit is not Fit.COVER:
        raise _bad("gravity", "only applies to fit=cover")
    focus = _focus(params, fit)
    if fit in (Fit.COVER, Fit.CONTAIN, Fit.FILL) and (width is None or height is None):
        raise _bad("fit", f"={fit.value} needs both w and h")
    if "dpr" in params and width is None and height is None:
        raise _bad("dpr", "needs w or h")

    fmt: OutputFormat | None = None
    auto = False
    fmt_text = params.get("fmt")
    if fmt_text is not None:
        if fmt_text.lower() == "auto":
            auto = True
        else:
            fmt = next((f for f in OutputFormat if f.value == fmt_text.lower()), None)
            if fmt is None or fmt not in limits.formats:
                supported = ", ".join(["auto", *(f.value for f in OutputFormat if f in limits.formats)])
                what = f"{fmt.value} is not supported by this server" if fmt else "is not a known format"
                raise _bad("fmt", f"{what} (supported: {supported})")

    quality: int | None = None
    if "q" in params:
        if not _INT.fullmatch(params["q"]) or not 1 <= int(params["q"]) <= 100:
            raise _bad("q", "must be a whole number from 1 to 100")
        if fmt is not None and not fmt.has_quality:
            raise _bad("q", f"does not apply to fmt={fmt.value}")
        quality = int(params["q"])

    background: tuple[int, int, int, int] | None = None
    if "bg" in params:
        match = _COLOR.fullmatch(params["bg"])
        if match is None:
            raise _bad("bg", "must be a hex colour RRGGBB or RRGGBBAA")
        rgb, alpha = match.group(1), match.group(2) or "ff"
        background = (int(rgb[0:2], 16), int(rgb[2:4], 16), int(rgb[4:6], 16), int(alpha, 16))

    return TransformSpec(width=width, height=height, fit=fit, gravity=gravity, fmt=fmt,
                         auto_format=auto, quality=quality, background=background, focus=focus)
