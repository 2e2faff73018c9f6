"""Drawing a placeholder (``transform/drawing.py``'s ``Drawing``): the initials avatar or the
neutral silhouette, encoded like any variant.

Synchronous Pillow, run only in the image worker processes. Square and opaque (a page rounds it
with CSS ``border-radius: 50%`` if it wants a circle), the letters in Pillow's bundled font,
white on a dark background and dark on a light one.
"""

from __future__ import annotations

import time
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from imgproxy.transform.drawing import Drawing
from imgproxy.transform.encode import encode
from imgproxy.transform.jobs import Rendered, RenderSettings
from imgproxy.transform.params import OutputFormat

LETTER_HEIGHT: Final = 0.42  # of the shorter side
LIGHT_TEXT: Final = (255, 255, 255)
DARK_TEXT: Final = (0x33, 0x33, 0x33)


def is_light(colour: tuple[int, int, int]) -> bool:
    """Relative luminance (Rec. 709 weights) above one half: dark letters read better."""
    red, green, blue = colour
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.5 * 255


def draw_initials(draw: ImageDraw.ImageDraw, drawing: Drawing) -> None:
    side = min(drawing.width, drawing.height)
    font = ImageFont.load_default(size=max(1, round(side * LETTER_HEIGHT)))
    fill = DARK_TEXT if is_light(drawing.background) else LIGHT_TEXT
    draw.text((drawing.width / 2, drawing.height / 2), drawing.letters, fill=fill, font=font, anchor="mm")


def draw_silhouette(draw: ImageDraw.ImageDraw, drawing: Drawing) -> None:
    """A head and shoulders, centred, in a darker shade of the background."""
    shade = tuple(round(c * 0.72) for c in drawing.background)
    side = min(drawing.width, drawing.height)
    left, top = (drawing.width - side) / 2, (drawing.height - side) / 2
    draw.ellipse((left + side * 0.32, top + side * 0.16, left + side * 0.68, top + side * 0.52), fill=shade)
    draw.ellipse((left + side * 0.14, top + side * 0.60, left + side * 0.86, top + side * 1.30), fill=shade)


def render_drawing(drawing: Drawing, target: OutputFormat | None, quality: int | None,
                   settings: RenderSettings) -> Rendered:
    """``drawing`` as ``target`` (None: PNG, the format flat colour and letters suit)."""
    started = time.perf_counter()
    image = Image.new("RGB", (drawing.width, drawing.height), drawing.background)
    draw = ImageDraw.Draw(image)
    if drawing.letters:
        draw_initials(draw, drawing)
    else:
        draw_silhouette(draw, drawing)
    output = target or OutputFormat.PNG
    body = encode(image, output, quality, settings, None)
    return Rendered(body=body, media_type=output.media_type, width=drawing.width, height=drawing.height,
                    seconds=time.perf_counter() - started)
