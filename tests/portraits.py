"""Generated portraits whose subject's place is known: the focal and attention crop tests.

A plain studio backdrop (a soft vertical gradient, a little fine grain, as a real wall has) and
one face-like subject: a skin-coloured oval with eyes, brows, a mouth and hair, textured with
grain, placed where the test says. What the crop should keep is then exact: the subject's box.
``subject_kept`` measures how much of it a render kept, by counting the subject's skin pixels
(the backdrop is blue-grey, nowhere near skin). Shared by ``tests/test_focal_stack.py``,
``tests/transform/test_attention.py`` and ``bench/bench_focal.py`` (which appends this
directory to ``sys.path``). The same pixels for the same arguments on every run.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageChops, ImageDraw

SKIN = (222, 170, 138)
BACKDROP_TOP, BACKDROP_BOTTOM = (92, 108, 128), (64, 76, 96)


@dataclass(frozen=True)
class Portrait:
    image: Image.Image  # as displayed (upright)
    subject: tuple[int, int, int, int]  # the face's box, in displayed pixels

    def jpeg(self, orientation: int = 1, quality: int = 90) -> bytes:
        """As a JPEG; with ``orientation`` 6 the pixels are stored turned a quarter (as a phone
        held upright stores them) and the EXIF says how to show them."""
        stored = self.image if orientation == 1 else self.image.transpose(_STORED[orientation])
        exif = Image.Exif()
        exif[ExifTags.Base.Orientation] = orientation
        buffer = io.BytesIO()
        stored.save(buffer, "JPEG", quality=quality, exif=exif)
        return buffer.getvalue()


# How an EXIF orientation stores the displayed picture (the inverse of what a viewer applies).
_STORED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def portrait(size: tuple[int, int], centre: tuple[float, float], face: float = 0.22,
             seed: int = 0) -> Portrait:
    """A ``size`` picture with a face centred at ``centre`` (fractions), ``face`` of the short
    side wide (and 1.3 times as tall)."""
    width, height = size
    rng = random.Random(seed)
    top = Image.new("RGB", size, BACKDROP_TOP)
    bottom = Image.new("RGB", size, BACKDROP_BOTTOM)
    image = Image.composite(bottom, top, Image.linear_gradient("L").resize(size))
    grain = Image.frombytes("L", size, rng.randbytes(width * height)).point(lambda v: v // 32)
    image = ImageChops.add(image, Image.merge("RGB", (grain, grain, grain)), offset=-4)

    face_w = face * min(size)
    face_h = face_w * 1.3
    cx, cy = centre[0] * width, centre[1] * height
    box = (round(cx - face_w / 2), round(cy - face_h / 2), round(cx + face_w / 2), round(cy + face_h / 2))
    draw = ImageDraw.Draw(image)
    left, upper, right, lower = box
    w, h = right - left, lower - upper
    draw.chord((left - w * 0.05, upper - h * 0.12, right + w * 0.05, upper + h * 0.55), 180, 360,
               fill=(58, 40, 28))  # hair
    draw.ellipse(box, fill=SKIN)
    # Texture: freckles and pores, so the face has the detail a photographed face has.
    for _ in range(int(w * h / 40)):
        x, y = rng.uniform(left + w * 0.15, right - w * 0.15), rng.uniform(upper + h * 0.3, lower - h * 0.15)
        shade = rng.randrange(-28, 10)
        draw.point((x, y), fill=(SKIN[0] + shade, SKIN[1] + shade, SKIN[2] + shade))
    for side in (0.3, 0.7):  # eyes and brows
        ex, ey = left + w * side, upper + h * 0.42
        draw.ellipse((ex - w * 0.09, ey - h * 0.04, ex + w * 0.09, ey + h * 0.04), fill=(245, 245, 245))
        draw.ellipse((ex - w * 0.04, ey - h * 0.035, ex + w * 0.04, ey + h * 0.035), fill=(40, 60, 90))
        draw.line((ex - w * 0.11, ey - h * 0.09, ex + w * 0.11, ey - h * 0.1), fill=(50, 35, 25),
                  width=max(1, round(w * 0.03)))
    draw.line((left + w * 0.5, upper + h * 0.45, left + w * 0.46, upper + h * 0.62), fill=(170, 120, 95),
              width=max(1, round(w * 0.02)))  # nose
    draw.chord((left + w * 0.32, upper + h * 0.68, left + w * 0.68, upper + h * 0.8), 0, 180,
               fill=(160, 60, 60))  # mouth
    return Portrait(image, box)


def skin_pixels(image: Image.Image) -> int:
    """How many pixels have the face's colour (red well above blue: the backdrop is blue-grey)."""
    red, _, blue = image.convert("RGB").split()
    mask = ImageChops.subtract(red, blue, offset=-45).point(lambda v: 255 if v > 0 else 0)
    bright = red.point(lambda v: 255 if v > 150 else 0)
    return ImageChops.multiply(mask, bright).tobytes().count(255)


def subject_kept(render: Image.Image, source: Portrait) -> float:
    """The fraction of the face's skin a render kept, counted in the render against the same
    count in the whole source scaled to the render's scale (a cover crop scales by the larger
    of the two ratios)."""
    scale = max(render.width / source.image.width, render.height / source.image.height)
    whole = source.image.resize((round(source.image.width * scale), round(source.image.height * scale)),
                                Image.Resampling.LANCZOS)
    return skin_pixels(render) / max(1, skin_pixels(whole))
