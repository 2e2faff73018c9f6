"""The attention crop (``gravity=auto``): where in a picture the ``fit=cover`` window should sit.

No model: a saliency map measured on a copy at most ``MAP_SIDE`` px on its long side, made from
the already-reduced pixels (after the JPEG draft, before the final resize), so its cost hardly
depends on the source's size. The map is edge energy (Pillow's ``FIND_EDGES`` Laplacian on the
luminance: detail, as a face, text or a product has and a wall or a studio backdrop has not)
plus ``SKIN_WEIGHT`` where the colour is in the usual YCbCr skin range (Cb 77-127, Cr 133-173).
A cover window of the target's aspect spans the whole of one side, so it slides along the other
axis only: the map is summed across the window into one line, and the position with the largest
sum wins; ties go to the position nearest the centre, so a flat picture is cropped at the centre
as before. Deterministic: the same pixels always give the same point.
"""

from __future__ import annotations

from typing import Final

from PIL import Image, ImageChops, ImageFilter

from imgproxy.transform.geometry import Box

MAP_SIDE: Final = 96  # the saliency map's long side, in pixels
SKIN_WEIGHT: Final = 48  # added to the edge energy (0-255) where the colour looks like skin
CENTRE: Final = (0.5, 0.5)


def saliency(image: Image.Image, region: Box) -> Image.Image:
    """An "L" map of how much each part of ``region`` (the picture inside ``image``) draws the eye."""
    width, height = region[2] - region[0], region[3] - region[1]
    scale = MAP_SIDE / max(width, height, MAP_SIDE)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image.resize(size, Image.Resampling.BOX, box=region, reducing_gap=2.0)
    colour = small.convert("RGB") if small.mode in ("RGB", "RGBA") else None
    edges = small.convert("L").filter(ImageFilter.FIND_EDGES)
    # The filter leaves the outermost pixels as they were (brightness, not detail): no energy there.
    frame = Image.new("L", size, 0)
    if size[0] > 2 and size[1] > 2:
        frame.paste(edges.crop((1, 1, size[0] - 1, size[1] - 1)), (1, 1))
    if colour is None:
        return frame
    _, cb, cr = colour.convert("YCbCr").split()
    skin = ImageChops.multiply(cb.point(lambda v: 255 if 77 <= v <= 127 else 0),
                               cr.point(lambda v: SKIN_WEIGHT if 133 <= v <= 173 else 0))
    return ImageChops.add(frame, skin)


def best_start(line: list[int], length: int) -> int:
    """The start of the ``length``-long run of ``line`` with the largest sum (nearest the centre
    of the possible starts on a tie)."""
    starts = len(line) - length + 1
    if starts <= 1:
        return 0
    total = sum(line[:length])
    sums = [total]
    for start in range(1, starts):
        total += line[start + length - 1] - line[start - 1]
        sums.append(total)
    middle = (starts - 1) / 2
    return max(range(starts), key=lambda s: (sums[s], -abs(s - middle)))


def find_focus(image: Image.Image, region: Box, target: tuple[int, int]) -> tuple[float, float]:
    """The centre of the most salient window of the ``target`` aspect, as fractions of the
    picture's width and height (for ``geometry.focal_crop``)."""
    energy = saliency(image, region)
    width, height = energy.size
    data = energy.tobytes()  # one byte per pixel, row by row
    target_w, target_h = target
    if target_w * height >= target_h * width:  # the window keeps the width and slides down
        rows = [sum(data[r * width:(r + 1) * width]) for r in range(height)]
        length = max(1, min(height, round(width * target_h / target_w)))
        return 0.5, (best_start(rows, length) + length / 2) / height
    columns = [sum(data[c::width]) for c in range(width)]
    length = max(1, min(width, round(height * target_w / target_h)))
    return (best_start(columns, length) + length / 2) / width, 0.5
