"""transform/steps.py: the Pillow pipeline, called directly (synchronously) on images made here."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from dataclasses import replace

import pytest
from photos import photo_jpeg
from PIL import ExifTags, Image, ImageChops, ImageCms, ImageDraw, ImageStat, PngImagePlugin
from ssim import ssim
from support import RENDER_SETTINGS as SETTINGS

from imgproxy.config import DEFAULT_INPUT_FORMATS, TransformConfig
from imgproxy.errors import ImageTooLarge, NotAnImage, UnprocessableImage
from imgproxy.transform import decode, steps
from imgproxy.transform.jobs import Rendered, RenderSettings, available_outputs
from imgproxy.transform.params import Fit, Gravity, OutputFormat, TransformSpec
from imgproxy.transform.policy import TransformPolicy
from imgproxy.transform.steps import render

HAS_AVIF = OutputFormat.AVIF in available_outputs()
needs_avif = pytest.mark.skipif(not HAS_AVIF, reason="this Pillow build cannot encode AVIF")
ALPHA_FORMATS = [OutputFormat.PNG, OutputFormat.WEBP,
                 pytest.param(OutputFormat.AVIF, marks=needs_avif)]
ALL_FORMATS = [OutputFormat.JPEG, *ALPHA_FORMATS]

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)
SRGB_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def spec(width: int | None = None, height: int | None = None, **fields: object) -> TransformSpec:
    return TransformSpec(width, height, **fields)  # type: ignore[arg-type]


def run(data: bytes, request: TransformSpec, target: OutputFormat | None = None,
        settings: RenderSettings = SETTINGS) -> tuple[Rendered, Image.Image]:
    """Render, and decode the output (first frame, as RGBA for easy pixel checks)."""
    rendered = render(data, request, target if target is not None else request.fmt, settings)
    output = Image.open(io.BytesIO(rendered.body))
    output.load()
    return rendered, output


def near(pixel: object, colour: tuple[int, ...], tolerance: int = 24) -> bool:
    assert isinstance(pixel, tuple), pixel
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=False))


def rgb_at(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    pixel = image.convert("RGB").getpixel(xy)
    assert isinstance(pixel, tuple)
    return pixel


def two_colour(size: tuple[int, int], first: tuple[int, int, int], second: tuple[int, int, int],
               ) -> Image.Image:
    """Left/right halves when wide, top/bottom halves when tall."""
    image = Image.new("RGB", size, first)
    width, height = size
    box = (width // 2, 0, width, height) if width >= height else (0, height // 2, width, height)
    image.paste(second, box)
    return image


# --- fit modes --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("request_spec", "expected"),
    [
        (spec(100), (100, 50)),
        (spec(None, 50), (100, 50)),
        (spec(100, 100), (100, 50)),
        (spec(100, 10), (20, 10)),
        (spec(800), (400, 200)),  # inside never enlarges
        (spec(None, 400), (400, 200)),
        (spec(800, 800), (400, 200)),
        (spec(100, 100, fit=Fit.COVER), (100, 100)),
        (spec(50, 200, fit=Fit.COVER), (50, 200)),
        (spec(800, 800, fit=Fit.COVER), (800, 800)),
        (spec(100, 100, fit=Fit.CONTAIN), (100, 100)),
        (spec(800, 100, fit=Fit.CONTAIN), (800, 100)),
        (spec(100, 100, fit=Fit.FILL), (100, 100)),
        (spec(33, 301, fit=Fit.FILL), (33, 301)),
        (spec(100, 50, fit=Fit.INSIDE), (100, 50)),
    ],
    ids=lambda value: f"{value.fit.value}-{value.width}x{value.height}" if isinstance(value, TransformSpec)
    else "",
)
def test_output_dimensions_for_each_fit_mode(request_spec: TransformSpec, expected: tuple[int, int]) -> None:
    source = encode(two_colour((400, 200), RED, BLUE), "PNG")
    rendered, output = run(source, request_spec)
    assert output.size == expected
    assert (rendered.width, rendered.height) == expected


def test_contain_scales_the_image_into_the_box_before_letterboxing() -> None:
    source = encode(Image.new("RGB", (400, 200), RED), "PNG")
    _, output = run(source, spec(100, 100, fit=Fit.CONTAIN, background=(0, 255, 0, 255)))
    rows_with_red = [y for y in range(100) if near(rgb_at(output, (50, y)), RED)]
    assert (rows_with_red[0], rows_with_red[-1]) == (25, 74)


def test_fill_stretches_without_cropping() -> None:
    source = encode(two_colour((400, 200), RED, BLUE), "PNG")
    _, output = run(source, spec(100, 100, fit=Fit.FILL))
    assert near(rgb_at(output, (10, 50)), RED)
    assert near(rgb_at(output, (90, 50)), BLUE)


WIDE = (200, 100)  # left red, right blue
TALL = (100, 200)  # top red, bottom blue


@pytest.mark.parametrize(
    ("source_size", "gravity", "near_edge", "far_edge"),
    [
        (WIDE, Gravity.CENTER, RED, BLUE),
        (WIDE, Gravity.NORTH, RED, BLUE),
        (WIDE, Gravity.SOUTH, RED, BLUE),
        (WIDE, Gravity.WEST, RED, RED),
        (WIDE, Gravity.NORTHWEST, RED, RED),
        (WIDE, Gravity.SOUTHWEST, RED, RED),
        (WIDE, Gravity.EAST, BLUE, BLUE),
        (WIDE, Gravity.NORTHEAST, BLUE, BLUE),
        (WIDE, Gravity.SOUTHEAST, BLUE, BLUE),
        (TALL, Gravity.CENTER, RED, BLUE),
        (TALL, Gravity.WEST, RED, BLUE),
        (TALL, Gravity.EAST, RED, BLUE),
        (TALL, Gravity.NORTH, RED, RED),
        (TALL, Gravity.NORTHWEST, RED, RED),
        (TALL, Gravity.NORTHEAST, RED, RED),
        (TALL, Gravity.SOUTH, BLUE, BLUE),
        (TALL, Gravity.SOUTHWEST, BLUE, BLUE),
        (TALL, Gravity.SOUTHEAST, BLUE, BLUE),
    ],
)
def test_cover_crops_at_the_gravity(source_size: tuple[int, int], gravity: Gravity,
                                    near_edge: tuple[int, int, int], far_edge: tuple[int, int, int]) -> None:
    source = encode(two_colour(source_size, RED, BLUE), "PNG")
    _, output = run(source, spec(100, 100, fit=Fit.COVER, gravity=gravity))
    first, last = ((12, 50), (88, 50)) if source_size == WIDE else ((50, 12), (50, 88))
    assert output.size == (100, 100)
    assert near(rgb_at(output, first), near_edge)
    assert near(rgb_at(output, last), far_edge)


def test_contain_letterboxes_with_the_bg_colour() -> None:
    source = encode(Image.new("RGB", (200, 100), RED), "PNG")
    _, output = run(source, spec(100, 100, fit=Fit.CONTAIN, background=(0, 255, 0, 255)))
    assert near(rgb_at(output, (50, 5)), GREEN)
    assert near(rgb_at(output, (50, 94)), GREEN)
    assert near(rgb_at(output, (50, 50)), RED)


@pytest.mark.parametrize("target", ALPHA_FORMATS)
def test_contain_without_bg_letterboxes_with_transparency(target: OutputFormat) -> None:
    source = encode(Image.new("RGB", (200, 100), RED), "PNG")
    _, output = run(source, spec(100, 100, fit=Fit.CONTAIN, fmt=target))
    rgba = output.convert("RGBA")
    assert rgba.getchannel("A").getpixel((50, 5)) == 0
    assert near(rgba.getpixel((50, 50)), (*RED, 255))


def test_contain_keeps_half_transparent_pixels_as_they_are() -> None:
    # Composited over the transparent letterbox, not pasted with itself as the mask (which
    # squared the alpha and darkened the colour: (255, 0, 0, 128) became (128, 0, 0, 64)).
    source = encode(Image.new("RGBA", (200, 100), (*RED, 128)), "PNG")
    _, output = run(source, spec(100, 100, fit=Fit.CONTAIN, fmt=OutputFormat.PNG))
    assert output.convert("RGBA").getpixel((50, 50)) == (*RED, 128)
    assert output.convert("RGBA").getpixel((50, 5)) == (0, 0, 0, 0)


def test_contain_composites_half_transparent_pixels_over_a_half_transparent_bg() -> None:
    source = encode(Image.new("RGBA", (200, 100), (*RED, 128)), "PNG")
    _, output = run(source, spec(100, 100, fit=Fit.CONTAIN, fmt=OutputFormat.PNG,
                                 background=(0, 0, 255, 128)))
    # "Over": alpha 128 + 128 * (1 - 128/255) = 192; red 255 * 128 / 192 = 170; blue, the bg
    # showing through, 255 * 128 * (127/255) / 192 = 85.
    assert near(output.convert("RGBA").getpixel((50, 50)), (170, 0, 85, 192), tolerance=2)
    assert output.convert("RGBA").getpixel((50, 5)) == (0, 0, 255, 128)


def test_contain_without_bg_letterboxes_in_white_for_jpeg() -> None:
    source = encode(Image.new("RGB", (200, 100), RED), "PNG")
    rendered, output = run(source, spec(100, 100, fit=Fit.CONTAIN, fmt=OutputFormat.JPEG))
    assert rendered.media_type == "image/jpeg"
    assert near(rgb_at(output, (50, 5)), WHITE)
    assert near(rgb_at(output, (50, 50)), RED)


# --- EXIF orientation -------------------------------------------------------------------------

def displayed() -> Image.Image:
    """What a viewer must see: 120x80, red top-left corner, blue top-right corner."""
    image = Image.new("RGB", (120, 80), WHITE)
    image.paste(RED, (0, 0, 30, 30))
    image.paste(BLUE, (90, 0, 120, 30))
    return image


# How each EXIF orientation stores the displayed picture (TIFF/EXIF 2.32, tag 0x0112, "the 0th
# row / 0th column is the visual ..."); ROTATE_90 is counter-clockwise in Pillow.
STORED: dict[int, Callable[[Image.Image], Image.Image]] = {
    1: lambda im: im,                                           # top / left
    2: lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),  # top / right
    3: lambda im: im.transpose(Image.Transpose.ROTATE_180),       # bottom / right
    4: lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),  # bottom / left
    5: lambda im: im.transpose(Image.Transpose.TRANSPOSE),        # left / top
    6: lambda im: im.transpose(Image.Transpose.ROTATE_90),        # right / top
    7: lambda im: im.transpose(Image.Transpose.TRANSVERSE),       # right / bottom
    8: lambda im: im.transpose(Image.Transpose.ROTATE_270),       # left / bottom
}


def oriented_jpeg(orientation: int, picture: Image.Image | None = None) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(STORED[orientation](picture or displayed()), "JPEG", exif=exif, quality=95)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    _, output = run(oriented_jpeg(orientation), spec(60, fmt=OutputFormat.PNG))
    assert output.size == (60, 40)
    assert near(rgb_at(output, (6, 6)), RED)
    assert near(rgb_at(output, (54, 6)), BLUE)
    assert near(rgb_at(output, (6, 34)), WHITE)
    assert near(rgb_at(output, (54, 34)), WHITE)


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_dct_scaling_of_a_rotated_jpeg_never_decodes_below_the_output_size(orientation: int) -> None:
    # Stored 4000x500 and rotated a quarter turn: displayed 500x4000; w=250 is a 2x downscale.
    picture = Image.linear_gradient("L").resize((500, 4000)).convert("RGB")
    image = decode.open_image(oriented_jpeg(orientation, picture), SETTINGS)
    job = steps.Job(image=image, source_format="JPEG", spec=spec(250), target=None, settings=SETTINGS)
    for step in (steps.draft, steps.load_first_frame, steps.orient):
        step(job)
    assert job.image.size[0] >= 250
    assert job.image.size[1] >= 2000


# --- metadata ---------------------------------------------------------------------------------

SECRET_MAKE = "SecretCam-9000"
SECRET_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">secret-xmp-location</x:xmpmeta>'
SECRET_COMMENT = b"taken at 12 Private Road"


def private_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = SECRET_MAKE
    exif[ExifTags.Base.Orientation] = 1
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 26.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (0.0, 7.0, 39.0)
    return exif


def with_metadata(fmt: str) -> bytes:
    """A photo carrying EXIF (camera, GPS), XMP, an sRGB ICC profile and (JPEG) a comment."""
    image = Image.new("RGB", (64, 48), (200, 120, 40))
    options: dict[str, object] = {"exif": private_exif(), "icc_profile": SRGB_ICC}
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", SECRET_XMP.decode())
        options["pnginfo"] = info
    else:
        options["xmp"] = SECRET_XMP
    if fmt == "JPEG":
        options["comment"] = SECRET_COMMENT
    data = encode(image, fmt, **options)
    source = Image.open(io.BytesIO(data))  # the sample really carries what it should
    assert source.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert source.info.get("xmp")
    assert source.info.get("icc_profile") == SRGB_ICC
    return data


METADATA_SOURCES = ["JPEG", "PNG", "WEBP"]


@pytest.mark.parametrize("source_format", METADATA_SOURCES)
@pytest.mark.parametrize("target", ALL_FORMATS)
def test_exif_and_its_gps_data_are_stripped(source_format: str, target: OutputFormat) -> None:
    rendered, output = run(with_metadata(source_format), spec(32, fmt=target))
    assert len(output.getexif()) == 0
    assert not output.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert SECRET_MAKE.encode() not in rendered.body


@pytest.mark.parametrize("source_format", METADATA_SOURCES)
@pytest.mark.parametrize("target", ALL_FORMATS)
def test_xmp_is_stripped(source_format: str, target: OutputFormat) -> None:
    rendered, output = run(with_metadata(source_format), spec(32, fmt=target))
    assert "xmp" not in output.info
    assert b"secret-xmp-location" not in rendered.body


@pytest.mark.parametrize("target", ALL_FORMATS)
def test_a_jpeg_comment_is_not_carried_over(target: OutputFormat) -> None:
    rendered, _ = run(with_metadata("JPEG"), spec(32, fmt=target))
    assert SECRET_COMMENT not in rendered.body


@pytest.mark.parametrize("source_format", METADATA_SOURCES)
@pytest.mark.parametrize("target", ALL_FORMATS)
def test_the_icc_profile_is_kept(source_format: str, target: OutputFormat) -> None:
    _, output = run(with_metadata(source_format), spec(32, fmt=target))
    assert output.info.get("icc_profile") == SRGB_ICC


# --- colour modes -----------------------------------------------------------------------------

def test_a_cmyk_jpeg_becomes_an_rgb_jpeg_with_the_same_colour() -> None:
    source = encode(Image.new("CMYK", (40, 40), (0, 255, 255, 0)), "JPEG", quality=95)  # red ink
    assert Image.open(io.BytesIO(source)).mode == "CMYK"
    rendered, output = run(source, spec(20))
    assert rendered.media_type == "image/jpeg"
    assert output.mode == "RGB"
    assert near(rgb_at(output, (10, 10)), RED, tolerance=30)


def palette_gif(transparent: bool) -> bytes:
    image = Image.new("P", (60, 60), 0)
    image.putpalette([*RED, *GREEN, *BLUE] + [0, 0, 0] * 253)
    image.paste(1, (20, 0, 40, 60))
    image.paste(2, (40, 0, 60, 60))
    return encode(image, "GIF", **({"transparency": 2} if transparent else {}))


def test_a_palette_gif_becomes_a_jpeg_with_its_colours() -> None:
    rendered, output = run(palette_gif(transparent=False), spec(30))
    assert rendered.media_type == "image/jpeg"
    assert output.size == (30, 30)
    assert near(rgb_at(output, (3, 15)), RED)
    assert near(rgb_at(output, (15, 15)), GREEN)
    assert near(rgb_at(output, (27, 15)), BLUE)


def test_a_palette_gif_with_transparency_becomes_a_png_keeping_it() -> None:
    rendered, output = run(palette_gif(transparent=True), spec(30))
    assert rendered.media_type == "image/png"
    rgba = output.convert("RGBA")
    assert near(rgba.getpixel((3, 15)), (*RED, 255))
    assert rgba.getchannel("A").getpixel((27, 15)) == 0


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (40, 40), colour) for colour in (RED, GREEN, BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    return data


@pytest.mark.parametrize(("source_format", "target"), [("GIF", OutputFormat.WEBP), ("WEBP", None)])
def test_an_animated_image_is_rendered_from_its_first_frame_only(source_format: str,
                                                                 target: OutputFormat | None) -> None:
    # Documented choice (steps.py docstring): a thumbnail is a still of the first frame.
    rendered, output = run(animated(source_format), spec(20), target)
    assert rendered.media_type == "image/webp"
    assert getattr(output, "n_frames", 1) == 1
    assert near(rgb_at(output, (10, 10)), RED)


def sixteen_bit_png() -> bytes:
    ramp = Image.new("I;16", (256, 2))
    for x in range(256):
        for y in range(2):
            ramp.putpixel((x, y), x * 257)  # 0 .. 65535
    data = encode(ramp, "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    return data


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped() -> None:
    rendered, output = run(sixteen_bit_png(), spec(256))
    assert rendered.media_type == "image/png"
    assert output.mode == "L"
    assert [output.getpixel((x, 0)) for x in (0, 1, 64, 128, 200, 255)] == [0, 1, 64, 128, 200, 255]


def test_a_16_bit_png_converted_to_jpeg_keeps_its_mid_tones() -> None:
    _, output = run(sixteen_bit_png(), spec(256, fmt=OutputFormat.JPEG))
    value = output.convert("L").getpixel((128, 1))
    assert isinstance(value, int)
    assert abs(value - 128) <= 6


def half_transparent_png() -> bytes:
    image = Image.new("RGBA", (40, 40), (*RED, 255))
    image.paste((0, 0, 0, 0), (20, 0, 40, 40))
    return encode(image, "PNG")


@pytest.mark.parametrize("target", [None, *ALPHA_FORMATS])
def test_png_alpha_is_kept_in_formats_with_alpha(target: OutputFormat | None) -> None:
    _, output = run(half_transparent_png(), spec(20, fmt=target))
    rgba = output.convert("RGBA")
    assert rgba.getchannel("A").getpixel((17, 10)) == 0
    assert near(rgba.getpixel((3, 10)), (*RED, 255))


def test_png_alpha_is_flattened_onto_bg_for_jpeg() -> None:
    on_blue = spec(20, fmt=OutputFormat.JPEG, background=(0, 0, 255, 255))
    rendered, output = run(half_transparent_png(), on_blue)
    assert rendered.media_type == "image/jpeg"
    assert output.mode == "RGB"
    assert near(rgb_at(output, (17, 10)), BLUE)
    assert near(rgb_at(output, (3, 10)), RED)


def test_png_alpha_is_flattened_onto_white_for_jpeg_by_default() -> None:
    _, output = run(half_transparent_png(), spec(20, fmt=OutputFormat.JPEG))
    assert near(rgb_at(output, (17, 10)), WHITE)


def colour_keyed_png(mode: str) -> bytes:
    """An RGB or greyscale PNG whose right half is transparent through a tRNS colour key."""
    key, solid = ((0, 0, 255), RED) if mode == "RGB" else (0, 200)
    image = Image.new(mode, (40, 40), key)
    image.paste(solid, (0, 0, 20, 40))
    return encode(image, "PNG", transparency=key)


@pytest.mark.parametrize("target", [None, *ALPHA_FORMATS])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_key_transparency_is_kept_in_formats_with_alpha(mode: str,
                                                               target: OutputFormat | None) -> None:
    _, output = run(colour_keyed_png(mode), spec(20, fmt=target))
    assert output.convert("RGBA").getchannel("A").getpixel((17, 10)) == 0


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_colour_key_transparency_is_flattened_onto_bg_for_jpeg(mode: str) -> None:
    _, output = run(colour_keyed_png(mode), spec(20, fmt=OutputFormat.JPEG, background=(0, 255, 0, 255)))
    assert near(rgb_at(output, (17, 10)), GREEN)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_fmt_auto_picks_png_for_colour_key_transparency(mode: str) -> None:
    rendered, _ = run(colour_keyed_png(mode), spec(20, auto_format=True), None)
    assert rendered.media_type == "image/png"


@pytest.mark.parametrize(("alpha", "expected"), [(True, "image/png"), (False, "image/jpeg")])
def test_fmt_auto_without_a_modern_format_picks_png_for_alpha_and_jpeg_otherwise(alpha: bool,
                                                                                 expected: str) -> None:
    source = half_transparent_png() if alpha else encode(Image.new("RGBA", (40, 40), (*RED, 255)), "PNG")
    rendered, _ = run(source, spec(20, auto_format=True), None)
    assert rendered.media_type == expected


# --- hostile and unsupported input ------------------------------------------------------------

def gradient_jpeg(size: tuple[int, int] = (300, 200)) -> bytes:
    return encode(Image.linear_gradient("L").resize(size).convert("RGB"), "JPEG", quality=90)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(gradient_jpeg()[: len(gradient_jpeg()) // 2], id="truncated-jpeg"),
        pytest.param(encode(Image.linear_gradient("L"), "PNG")[:300], id="truncated-png"),
    ],
)
def test_a_truncated_image_is_unprocessable(data: bytes) -> None:
    with pytest.raises(UnprocessableImage) as caught:
        render(data, spec(100), None, SETTINGS)
    assert caught.value.code == "corrupt_image"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"just some text, saved as photo.jpg\n" * 20, id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"<!doctype html><script>alert(1)</script>", id="html"),
        pytest.param(b"\xff\xd8\xff" + b"\x00" * 100, id="jpeg-magic-only"),
    ],
)
def test_something_that_is_not_an_image_is_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImage) as caught:
        render(data, spec(100), None, SETTINGS)
    assert caught.value.status == 415


@pytest.mark.parametrize(
    ("fmt", "allowed"),
    [
        ("BMP", DEFAULT_INPUT_FORMATS),
        ("TIFF", DEFAULT_INPUT_FORMATS),
        ("PNG", ("JPEG",)),
        ("GIF", ("JPEG", "PNG")),
    ],
)
def test_an_input_format_outside_the_allowlist_is_not_an_image(fmt: str, allowed: tuple[str, ...]) -> None:
    data = encode(Image.new("RGB", (20, 20), RED).convert("P" if fmt == "GIF" else "RGB"), fmt)
    with pytest.raises(NotAnImage):
        render(data, spec(10), None, replace(SETTINGS, input_formats=allowed))


def test_an_input_format_on_the_allowlist_is_rendered() -> None:
    data = encode(Image.new("RGB", (20, 20), RED), "BMP")
    rendered, output = run(data, spec(10), settings=replace(SETTINGS, input_formats=("BMP",)))
    assert rendered.media_type == "image/jpeg"
    assert output.size == (10, 10)


def forged_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``x``height`` RGBA pixels (the rows are missing)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    rows = zlib.compress(b"\x00" + b"\x00" * 4 * width)  # one row of the many claimed
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_a_compressed_bomb_is_too_large() -> None:
    data = encode(Image.new("L", (3000, 3000), 0), "PNG")
    assert len(data) < 50_000  # 9 megapixels in a few kilobytes
    with pytest.raises(ImageTooLarge):
        render(data, spec(100), None, replace(SETTINGS, max_source_pixels=1_000_000))


def test_a_header_claiming_more_than_pillows_own_limit_is_too_large() -> None:
    with pytest.raises(ImageTooLarge):
        render(forged_png(20_000, 20_000), spec(100), None, SETTINGS)


def test_an_animated_image_counts_the_pixels_of_every_frame() -> None:
    settings = replace(SETTINGS, max_source_pixels=40 * 40 * 2)  # one frame fits, three do not
    with pytest.raises(ImageTooLarge):
        render(animated("GIF"), spec(20), None, settings)


def test_a_still_image_under_the_pixel_limit_renders() -> None:
    settings = replace(SETTINGS, max_source_pixels=40 * 40 * 2)
    rendered, _ = run(encode(Image.new("RGB", (40, 40), RED), "GIF"), spec(20), settings=settings)
    assert rendered.width == 20


BOMB_SCRIPT = textwrap.dedent("""
    import resource, sys
    from imgproxy.transform import steps
    from imgproxy.transform.jobs import RenderSettings
    from imgproxy.transform.params import TransformSpec
    from imgproxy.config import DEFAULT_INPUT_FORMATS
    data = sys.stdin.buffer.read()
    settings = RenderSettings(DEFAULT_INPUT_FORMATS, 50_000_000, 82, 80, 60, 6)
    with open("/proc/self/status") as status:
        kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    headroom = 200 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (kib * 1024 + headroom, resource.RLIM_INFINITY))
    try:
        steps.render(data, TransformSpec(width=100, height=None), None, settings)
    except Exception as exc:
        print(type(exc).__name__)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_a_pixel_bomb_is_refused_from_its_header_without_allocating_its_pixels() -> None:
    # 9000x9000 RGBA: 81 Mpx, under Pillow's own warning limit (89 Mpx) but over the configured
    # 50 Mpx. Decoding it would need 324 MB; the worker here may allocate only 200 MB more.
    result = subprocess.run([sys.executable, "-c", BOMB_SCRIPT], input=forged_png(9000, 9000),
                            capture_output=True, timeout=60, check=False)
    assert result.stdout.decode().strip() == "ImageTooLarge", result.stderr.decode()


# --- quality of the fast path -----------------------------------------------------------------

@pytest.fixture(scope="module")
def photo_4000x3000() -> bytes:
    """A photo-like 4000x3000 JPEG: smooth gradients, with hard edges, thin lines and text."""
    width, height = 4000, 3000
    channels = (
        Image.linear_gradient("L").resize((width, height), Image.Resampling.BILINEAR),
        Image.radial_gradient("L").resize((width, height), Image.Resampling.BILINEAR),
        Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90)
        .resize((width, height), Image.Resampling.BILINEAR),
    )
    image = Image.merge("RGB", channels)
    draw = ImageDraw.Draw(image)
    for i in range(12):
        x = 300 * i + 50
        draw.ellipse((x, 200 + i * 150, x + 600, 800 + i * 150), fill=(255 - 20 * i, 40 + 15 * i, 120),
                     outline=(0, 0, 0), width=12)
        draw.rectangle((x + 100, 1800, x + 300, 2800 - i * 40), fill=(20 * i, 200, 255 - 20 * i))
        draw.line((0, 100 + i * 240, width, 2900 - i * 200), fill=WHITE, width=8)
        draw.text((x, 2900), f"imgproxy {i}", fill=(0, 0, 0), font_size=60)
    return encode(image, "JPEG", quality=90)


def mean_absolute_difference(one: Image.Image, other: Image.Image) -> float:
    means = ImageStat.Stat(ImageChops.difference(one.convert("RGB"), other.convert("RGB"))).mean
    return sum(means) / len(means)


FULL_FRAME = (0, 0, 4000, 3000)


@pytest.mark.parametrize(
    ("request_spec", "size", "source_box"),
    [
        (spec(96), (96, 72), FULL_FRAME),
        (spec(300), (300, 225), FULL_FRAME),
        (spec(300, 300, fit=Fit.COVER), (300, 300), (500, 0, 3500, 3000)),
        (spec(300, 300, fit=Fit.COVER, gravity=Gravity.EAST), (300, 300), (1000, 0, 4000, 3000)),
        (spec(200, 50, fit=Fit.COVER, gravity=Gravity.SOUTH), (200, 50), (0, 2000, 4000, 3000)),
    ],
    ids=["96w", "300w", "cover", "cover-east", "cover-south"],
)
def test_the_draft_and_reduce_path_matches_a_full_resolution_lanczos_resize(
        photo_4000x3000: bytes, request_spec: TransformSpec, size: tuple[int, int],
        source_box: tuple[int, int, int, int]) -> None:
    # Thresholds: SSIM >= 0.99, the bound the draft and the reducing gap were chosen under
    # (bench/bench_render_quality.py; test_render_quality.py holds a table of sizes to it), and a
    # mean absolute difference (on 0-255, over pixels and channels) under 1.25. Measured on this
    # image: this pipeline 0.34-1.06 and SSIM >= 0.9949 (the 96 px case, where reduce() by 3
    # follows a 1/8 draft, is the worst); a full-resolution BOX resize 1.37-2.56, BILINEAR
    # 1.63-2.58, LANCZOS with the crop one output pixel off 4.0. So the MAD bound still admits
    # only LANCZOS-like, geometrically exact resizes. The output is PNG so that encoder loss
    # stays out of the measurement.
    _, output = run(photo_4000x3000, replace(request_spec, fmt=OutputFormat.PNG))
    reference = Image.open(io.BytesIO(photo_4000x3000)).convert("RGB").resize(
        size, Image.Resampling.LANCZOS, box=source_box)
    assert output.size == size
    assert ssim(output, reference) >= 0.99
    assert mean_absolute_difference(output, reference) < 1.25


def test_a_large_jpeg_is_decoded_at_a_reduced_scale(photo_4000x3000: bytes) -> None:
    image = decode.open_image(photo_4000x3000, SETTINGS)
    job = steps.Job(image=image, source_format="JPEG", spec=spec(300), target=None, settings=SETTINGS)
    steps.draft(job)
    steps.load_first_frame(job)
    assert job.image.size == (500, 375)  # 1/8 DCT scaling: still 1.33x the 300 px target


def test_the_outputs_found_without_importing_pillow_are_what_pillow_can_encode() -> None:
    from PIL import features

    expected = {OutputFormat.JPEG, OutputFormat.PNG}
    expected |= {fmt for fmt, name in ((OutputFormat.WEBP, "webp"), (OutputFormat.AVIF, "avif"))
                 if features.check(name)}
    assert set(available_outputs()) == expected


# --- encoder settings -------------------------------------------------------------------------

# What bench/bench_encoders.py chose (README "fmt=auto and Accept"): the config's default
# qualities, and steps.py's method, speed and one AVIF thread.
MEASURED_OPTIONS = [
    (OutputFormat.WEBP, "WEBP", {"quality": 79, "method": 3}),
    pytest.param(OutputFormat.AVIF, "AVIF", {"quality": 64, "speed": 7, "max_threads": 1}, marks=needs_avif),
]


@pytest.mark.parametrize(("target", "fmt", "options"), MEASURED_OPTIONS)
def test_webp_and_avif_are_encoded_with_the_measured_settings(target: OutputFormat, fmt: str,
                                                              options: dict[str, object]) -> None:
    defaults = TransformPolicy.from_config(TransformConfig(), available_outputs()).settings
    source = photo_jpeg(480, 360, seed=1)
    pixels = Image.open(io.BytesIO(render(source, spec(160, fmt=OutputFormat.PNG), OutputFormat.PNG,
                                          defaults).body))
    rendered = render(source, spec(160, fmt=target), target, defaults)
    assert rendered.body == encode(pixels.convert("RGB"), fmt, icc_profile=None, **options)
