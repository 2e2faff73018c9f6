"""Generated photo-like test images, the same pixels for the same arguments on every run.

Shared by the render-quality tests (``tests/transform/test_render_quality.py``) and the benchmark
that chose the pipeline's draft and reducing gap (``bench/bench_render_quality.py``, which
appends this directory to ``sys.path``), so the tests hold the pipeline to the bound measured on
the same kind of picture. What a thumbnail of a photo can get wrong, each layer provokes:
smooth gradients and out-of-focus shapes (banding, ringing), hard edges, thin lines and text
(blur, aliasing, a shifted edge), a fine stripe pattern like fabric or a brick wall (moiré:
the worst case for a decoder that averages 8x8 blocks), and grain at two scales (what makes a
photo's JPEG large and its decode slow). The noise comes from ``random.Random(seed)``, not
``Image.effect_noise``, whose C ``rand()`` depends on what ran before in the process.
"""

from __future__ import annotations

import io
import random
import string

from PIL import Image, ImageDraw, ImageFilter, ImageFont

JPEG_QUALITY = 90


def noise(size: tuple[int, int], rng: random.Random) -> Image.Image:
    """Uniform 8-bit noise, one value per pixel."""
    return Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB picture of ``width`` x ``height``; the layout scales with the size, the grain does not."""
    rng = random.Random(seed)
    unit = max(width, height) / 1000  # the layout's length unit: 1 at 1000 px
    gradient = Image.linear_gradient("L")
    image = Image.merge("RGB", (
        gradient.rotate(90).resize((width, height), Image.Resampling.BICUBIC),
        Image.radial_gradient("L").resize((width, height), Image.Resampling.BICUBIC),
        gradient.resize((width, height), Image.Resampling.BICUBIC),
    ))

    def colour() -> tuple[int, int, int]:
        return rng.randrange(256), rng.randrange(256), rng.randrange(256)

    def box(largest: float) -> tuple[float, float, float, float]:
        x, y = rng.uniform(-0.1, 1) * width, rng.uniform(-0.1, 1) * height
        return x, y, x + rng.uniform(20, largest) * unit, y + rng.uniform(20, largest) * unit

    # Out of focus: large soft shapes.
    background = image.copy()
    draw = ImageDraw.Draw(background)
    for _ in range(25):
        draw.ellipse(box(400), fill=colour())
    image = Image.blend(image, background.filter(ImageFilter.GaussianBlur(12 * unit)), 0.6)
    # In focus: hard-edged shapes, thin lines, text.
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        shape = box(250)
        if rng.random() < 0.5:
            draw.rectangle(shape, fill=colour(), outline=colour(), width=max(1, round(2 * unit)))
        else:
            draw.ellipse(shape, fill=colour())
    for _ in range(80):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        length = rng.uniform(50, 500) * unit
        draw.line((x, y, x + rng.uniform(-1, 1) * length, y + rng.uniform(-1, 1) * length),
                  fill=colour(), width=rng.randrange(1, 4))
    for _ in range(30):
        words = " ".join("".join(rng.choices(string.ascii_letters, k=rng.randrange(3, 9)))
                         for _ in range(4))
        font = ImageFont.load_default(size=max(8, round(rng.uniform(8, 40) * unit)))
        draw.text((rng.uniform(0, 0.8) * width, rng.uniform(0, 0.95) * height), words, fill=colour(),
                  font=font)
    # Fabric: stripes 2 to 6 px apart in a patch about a tenth of the picture wide.
    patch = (round(rng.uniform(0.1, 0.6) * width), round(rng.uniform(0.1, 0.6) * height))
    side = round(100 * unit)
    period = rng.randrange(2, 7)
    stripes = Image.new("L", (side, side), 40)
    stripe_draw = ImageDraw.Draw(stripes)
    for x in range(0, side, period):
        stripe_draw.line((x, 0, x, side), fill=220)
    image.paste(Image.merge("RGB", (stripes, stripes, stripes)).rotate(30, Image.Resampling.BICUBIC),
                patch)
    # A lens is never perfectly sharp; then grain, coarse (mottling) and fine (sensor noise).
    image = image.filter(ImageFilter.GaussianBlur(0.5))
    coarse = noise((max(1, width // 8), max(1, height // 8)), rng).resize((width, height),
                                                                          Image.Resampling.BICUBIC)
    grain = Image.blend(coarse, noise((width, height), rng), 0.5)
    return Image.blend(image, Image.merge("RGB", (grain, grain, grain)), 0.09)


def photo_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """``photo`` as a baseline JPEG (quality 90, 4:2:0 chroma: what cameras and phones write)."""
    buffer = io.BytesIO()
    photo(width, height, seed).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
