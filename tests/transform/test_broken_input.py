"""transform/steps.py on broken client files: broken metadata is ignored, a broken image is a 422.

Each sample here gave a 500 before (an exception that was not a ProxyError). Broken EXIF or ICC
must not stop the pixels from rendering; what a decoder cannot read is ``corrupt_image``.
"""

from __future__ import annotations

import io
import pickle
import signal
import struct
import time
import warnings
import zlib
from collections.abc import Callable

import pytest
from PIL import ExifTags, Image, ImageCms, ImageOps, features
from support import RENDER_SETTINGS as SETTINGS

from imgproxy.errors import ImageTooLarge, NotAnImage, TransformTimeout, UnprocessableImage
from imgproxy.transform import pool, steps
from imgproxy.transform.jobs import Rendered
from imgproxy.transform.params import OutputFormat, TransformSpec
from imgproxy.transform.steps import Job, render

W20 = TransformSpec(width=20, height=None)
needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow build has no AVIF")
EXIF = b"Exif\x00\x00"  # how an APP1 segment's payload says it is EXIF
NOT_TIFF = EXIF + b"this is not a TIFF header"


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def output_of(rendered: Rendered) -> Image.Image:
    return Image.open(io.BytesIO(rendered.body))


def picture(size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, (200, 30, 30))


def with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP1 segment carrying ``payload``, after the JFIF APP0 segment."""
    assert jpeg[2:4] == b"\xff\xe0"  # APP0 (JFIF) first
    end = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:end] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[end:]


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_png_chunk(png: bytes, chunk: bytes) -> bytes:
    """``png`` with ``chunk`` inserted right after IHDR."""
    return png[:33] + chunk + png[33:]


def tiff(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A big-endian TIFF header and one IFD of (tag, type, count, 4-byte value) entries."""
    body = b"MM\x00*" + struct.pack(">IH", 8, len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack(">HHI", tag, kind, count) + value.ljust(4, b"\x00")
    return body + b"\x00\x00\x00\x00"


def orientation(value: int) -> tuple[int, int, int, bytes]:
    return ExifTags.Base.Orientation, 3, 1, struct.pack(">H", value)


# --- the reported samples ---------------------------------------------------------------------

def test_a_jpeg_with_a_jfif_density_and_a_non_tiff_exif_block_renders() -> None:
    # JFIF carries the density, so Pillow does not read the EXIF when opening; the pipeline
    # was the first to (SyntaxError: not a TIFF file).
    data = with_app1(encode(picture(), "JPEG", dpi=(300, 300)), NOT_TIFF)
    assert Image.open(io.BytesIO(data)).info["dpi"] == (300, 300)
    rendered = render(data, W20, None, SETTINGS)
    assert (rendered.width, rendered.height) == (20, 15)  # no EXIF: orientation 1


def test_a_webp_with_a_non_tiff_exif_chunk_renders() -> None:
    data = encode(picture(), "WEBP", exif=NOT_TIFF)
    rendered = render(data, W20, None, SETTINGS)
    assert (rendered.media_type, rendered.width, rendered.height) == ("image/webp", 20, 15)


def test_a_png_with_a_non_tiff_exif_chunk_renders() -> None:
    data = with_png_chunk(encode(picture(), "PNG"), png_chunk(b"eXIf", b"not a TIFF header"))
    rendered = render(data, W20, None, SETTINGS)
    assert (rendered.width, rendered.height) == (20, 15)


def gif_frames(count: int) -> bytes:
    frames = [Image.new("RGB", (20, 20), (60 * i, 0, 0)).convert("P") for i in range(count)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == count
    return data


def cut_at_last_frame(data: bytes, keep: int) -> bytes:
    """``data`` cut ``keep`` bytes into the last frame's graphic control extension (0x21 0xF9).
    (Cut after the label byte as well, Pillow takes it as the end and renders the frames before.)"""
    return data[:data.rindex(b"\x21\xf9\x04") + keep]


@pytest.mark.parametrize(
    "data",
    [
        # First frame intact, then an extension introducer and nothing (IndexError in _seek,
        # when the frames are counted).
        pytest.param(gif_frames(1)[:-1] + b"\x21", id="still-then-0x21"),
        pytest.param(cut_at_last_frame(gif_frames(3), 1), id="animated-cut-after-0x21"),
    ],
)
def test_a_gif_truncated_after_an_extension_introducer_is_corrupt(data: bytes) -> None:
    with pytest.raises(UnprocessableImage) as caught:
        render(data, W20, None, SETTINGS)
    assert caught.value.code == "corrupt_image"


def test_a_gif_cut_before_its_first_frame_is_not_an_image() -> None:
    with pytest.raises(NotAnImage):
        render(gif_frames(1)[:14] + b"\x21", W20, None, SETTINGS)


# --- EXIF that is only partly broken, or broken in other ways ---------------------------------

def test_a_readable_orientation_is_applied_even_when_another_tag_is_corrupt() -> None:
    # Make (ASCII, 100 bytes) points past the end of the block: Pillow warns and skips it.
    block = EXIF + tiff([orientation(6), (ExifTags.Base.Make, 2, 100, struct.pack(">I", 4000))])
    data = with_app1(encode(picture().transpose(Image.Transpose.ROTATE_90), "JPEG"), block)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        Image.open(io.BytesIO(data)).getexif()
    assert seen  # the sample really makes Pillow warn (an error under this suite's filters)
    rendered = render(data, W20, None, SETTINGS)
    assert (rendered.width, rendered.height) == (20, 15)  # stored 30x40, turned upright


def exif_that_exif_transpose_cannot_rewrite() -> bytes:
    """Orientation 6, and a GPS tag whose stored type is not the one Pillow writes it as
    (GPSAltitudeRef as ASCII, where Pillow writes BYTE): found by the fuzz test."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif.get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitudeRef] = "N"
    latitude_ref = struct.pack(">HHI", ExifTags.GPS.GPSLatitudeRef, 2, 2)
    altitude_ref = struct.pack(">HHI", ExifTags.GPS.GPSAltitudeRef, 2, 2)
    return exif.tobytes().replace(latitude_ref, altitude_ref)


def test_exif_that_pillow_reads_but_cannot_rewrite_still_orients_the_image() -> None:
    stored = picture().transpose(Image.Transpose.ROTATE_90)
    data = encode(stored, "WEBP", exif=exif_that_exif_transpose_cannot_rewrite())
    source = Image.open(io.BytesIO(data))
    assert source.getexif()[ExifTags.Base.Orientation] == 6
    with pytest.raises(TypeError):
        ImageOps.exif_transpose(source)  # what orient() used to call
    rendered = render(data, W20, None, SETTINGS)
    assert (rendered.width, rendered.height) == (20, 15)


@pytest.mark.parametrize("value", [0, 9, 255, 65535])
def test_an_orientation_outside_1_to_8_is_ignored(value: int) -> None:
    data = with_app1(encode(picture(), "JPEG"), EXIF + tiff([orientation(value)]))
    rendered = render(data, W20, None, SETTINGS)
    assert (rendered.width, rendered.height) == (20, 15)


@pytest.mark.parametrize(
    "block",
    [
        pytest.param(EXIF, id="empty"),
        pytest.param(EXIF + b"MM\x00*", id="cut-in-header"),
        pytest.param(EXIF + b"MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12", id="cut-in-ifd"),
        pytest.param(EXIF + b"II*\x00\xff\xff\xff\x7f", id="ifd-offset-past-end"),
        pytest.param(EXIF + tiff([(ExifTags.Base.Orientation, 3, 0x40000000, b"")]), id="huge-count"),
        pytest.param(EXIF + tiff([(ExifTags.Base.Orientation, 99, 1, b"\x00\x06")]), id="unknown-type"),
        pytest.param(EXIF + tiff([(ExifTags.IFD.Exif, 4, 1, struct.pack(">I", 8))]), id="ifd-loop"),
    ],
)
def test_broken_exif_in_a_jpeg_is_ignored(block: bytes) -> None:
    data = with_app1(encode(picture(), "JPEG", dpi=(72, 72)), block)
    rendered = render(data, W20, None, SETTINGS)
    assert (rendered.width, rendered.height) == (20, 15)


# --- ICC profiles -----------------------------------------------------------------------------

def test_an_icc_profile_that_does_not_parse_is_dropped() -> None:
    iccp = png_chunk(b"iCCP", b"junk\x00\x00" + zlib.compress(b"not an ICC profile" * 20))
    data = with_png_chunk(encode(picture(), "PNG"), iccp)
    assert Image.open(io.BytesIO(data)).info["icc_profile"].startswith(b"not an ICC")
    rendered = render(data, W20, None, SETTINGS)
    assert "icc_profile" not in output_of(rendered).info


@pytest.mark.parametrize("target", [OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP,
                                    pytest.param(OutputFormat.AVIF, marks=needs_avif)])
def test_a_cmyk_jpeg_whose_profile_is_not_cmyk_renders_without_it(target: OutputFormat) -> None:
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    data = encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", icc_profile=lab)
    rendered = render(data, W20, target, SETTINGS)
    output = output_of(rendered)
    assert output.mode == "RGB"
    assert output.info.get("icc_profile") is None  # PNG used to copy the LAB profile over


def test_an_icc_profile_that_does_not_match_the_pixels_is_dropped() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("L", (40, 30), 128), "PNG", icc_profile=srgb)  # an RGB profile on grey
    rendered = render(data, W20, OutputFormat.PNG, SETTINGS)
    assert output_of(rendered).info.get("icc_profile") is None


# --- the pipeline boundary --------------------------------------------------------------------

def failing_step(exc: BaseException) -> Callable[[Job], None]:
    def load_first_frame(job: Job) -> None:
        raise exc
    return load_first_frame


SMALL_JPEG = encode(picture(), "JPEG")


@pytest.mark.parametrize("exc", [RuntimeError("decoder said b'\\x00secret'"), KeyError(b"\x00secret"),
                                 struct.error("unpack b'\\x00secret'"), AttributeError("x"),
                                 IndexError("index out of range"), ZeroDivisionError()],
                         ids=lambda exc: type(exc).__name__)
def test_any_other_exception_while_processing_is_a_422_naming_the_step_and_class_only(
        monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    monkeypatch.setattr(steps, "STEPS", (steps.draft, failing_step(exc), steps.orient))
    with pytest.raises(UnprocessableImage) as caught:
        render(SMALL_JPEG, W20, None, SETTINGS)
    assert type(caught.value) is UnprocessableImage
    assert str(caught.value) == f"load_first_frame failed: {type(exc).__name__}"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_the_translated_error_survives_the_trip_back_from_a_worker_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "STEPS", (failing_step(RuntimeError("x")),))
    with pytest.raises(UnprocessableImage) as caught:
        render(SMALL_JPEG, W20, None, SETTINGS)
    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 (our own bytes)
    assert (type(copy), copy.status, copy.code, str(copy)) == \
        (UnprocessableImage, 422, "corrupt_image", "load_first_frame failed: RuntimeError")


def test_a_proxy_error_from_a_step_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "STEPS", (failing_step(ImageTooLarge("frame 2")),))
    with pytest.raises(ImageTooLarge, match="frame 2"):
        render(SMALL_JPEG, W20, None, SETTINGS)


def test_a_decompression_bomb_while_decoding_is_image_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(steps, "STEPS", (failing_step(Image.DecompressionBombError("big")),))
    with pytest.raises(ImageTooLarge):
        render(SMALL_JPEG, W20, None, SETTINGS)


def test_memory_exhaustion_is_not_blamed_on_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    # Documented choice (decode.is_data_failure): a MemoryError is the server's problem, a 500.
    monkeypatch.setattr(steps, "STEPS", (failing_step(MemoryError()),))
    with pytest.raises(MemoryError):
        render(SMALL_JPEG, W20, None, SETTINGS)


def slow_step(job: Job) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pass


def test_the_workers_time_limit_is_still_a_transform_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # The alarm is raised inside a step; it must not be mistaken for a broken image.
    monkeypatch.setattr(steps, "STEPS", (steps.load_first_frame, slow_step))
    previous = signal.signal(signal.SIGALRM, pool._on_alarm)  # as pool._init_worker does
    try:
        with pytest.raises(TransformTimeout):
            pool.run_job(SMALL_JPEG, W20, None, SETTINGS, 0.05)
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_pillow_warnings_neither_fail_a_render_nor_leak_out_of_it() -> None:
    # This suite turns warnings into errors; the render must not depend on that setting.
    block = EXIF + tiff([orientation(1), (ExifTags.Base.Make, 2, 100, struct.pack(">I", 4000))])
    data = with_app1(encode(picture(), "JPEG"), block)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        render(data, W20, None, SETTINGS)
        assert warnings.filters == filters
    assert seen == []


def test_a_deprecation_warning_from_a_step_still_reaches_the_callers_filters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Only Pillow's notes on the data are silenced; a deprecated call made by a step is not.
    def deprecated_call(job: Job) -> None:
        warnings.warn("this call is deprecated", DeprecationWarning, stacklevel=1)

    monkeypatch.setattr(steps, "STEPS", (*steps.STEPS, deprecated_call))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        render(SMALL_JPEG, W20, None, SETTINGS)
    assert [w.category for w in seen] == [DeprecationWarning]

