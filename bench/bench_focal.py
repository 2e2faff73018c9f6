#!/usr/bin/env python3
"""Benchmark: what a focal-point crop (fp=x,y) and an attention crop (gravity=auto) cost against
a plain fit=cover crop of the same source to the same size.

Not a test. It measures and prints; it exits non-zero only when something failed (a render
errored or came back the wrong size). One process, no server: the crop's cost lives in the
image worker, so the whole ``imgproxy.transform.steps.render`` (decode with draft, orient,
crop and resize, JPEG encode) is timed in a tight loop on the same bytes, the three sides
interleaved (cover, fp, auto, cover, ...) so drift on a shared host hits them alike.
  cover   ``fit=cover`` at the centre (the default gravity)
  fp      ``fit=cover&fp=X,Y``, the point at the portrait's face
  auto    ``fit=cover&gravity=auto``: the same render plus the attention map
          (``transform/attention.py``: a <= 96 px edge + skin map of the drafted pixels)
Sources: the tests' generated portraits (``tests/portraits.py``: a face off the centre of a
plain backdrop), as JPEG (quality 90, one stored turned with EXIF orientation 6, as phones do)
and as PNG (no draft: the map is made from the full-size pixels). Targets: 96 and 300 px
squares. Per case and side: the median CPU ms (``time.process_time``) of --repeat renders, the
ratio to cover, and the fraction of the face the render kept (``portraits.subject_kept``).

    .venv/bin/python bench/bench_focal.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import PIL
from harness import BenchError, code_state, note, run_main
from PIL import Image

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from portraits import Portrait, portrait, subject_kept  # the focal tests' portraits

from imgproxy.config import DEFAULT_INPUT_FORMATS
from imgproxy.transform.jobs import RenderSettings
from imgproxy.transform.params import OutputFormat, TransformLimits, TransformSpec, parse_transform
from imgproxy.transform.steps import render

SETTINGS: Final = RenderSettings(input_formats=DEFAULT_INPUT_FORMATS, max_source_pixels=50_000_000,
                                 jpeg_quality=82, webp_quality=80, avif_quality=60, png_compress_level=6)
LIMITS: Final = TransformLimits(max_width=4000, max_height=4000, formats=(OutputFormat.JPEG,))
TARGETS: Final = (96, 300)
SIDES: Final = ("cover", "fp", "auto")


@dataclass(frozen=True)
class Source:
    label: str
    picture: Portrait
    centre: tuple[float, float]  # where the face is: the fp side's point
    data: bytes


def sources() -> list[Source]:
    found = []
    for label, size, centre, fmt, orientation in [
        ("jpeg 600x800", (600, 800), (0.5, 0.16), "JPEG", 1),
        ("jpeg 3000x4000", (3000, 4000), (0.6, 0.17), "JPEG", 1),
        ("jpeg 3000x4000 o6", (3000, 4000), (0.4, 0.2), "JPEG", 6),
        ("png 1200x1600", (1200, 1600), (0.3, 0.8), "PNG", 1),
    ]:
        picture = portrait(size, centre)
        if fmt == "JPEG":
            data = picture.jpeg(orientation)
        else:
            buffer = io.BytesIO()
            picture.image.save(buffer, "PNG", compress_level=1)
            data = buffer.getvalue()
        found.append(Source(label, picture, centre, data))
    return found


def spec(side: str, target: int, source: Source) -> TransformSpec:
    query = {"w": str(target), "h": str(target), "fit": "cover"}
    if side == "fp":
        query["fp"] = f"{source.centre[0]:.3f},{source.centre[1]:.3f}"
    elif side == "auto":
        query["gravity"] = "auto"
    parsed = parse_transform(query, LIMITS)
    assert parsed is not None
    return parsed


def render_once(source: Source, request: TransformSpec) -> tuple[float, bytes]:
    started = time.process_time()
    rendered = render(source.data, request, OutputFormat.JPEG, SETTINGS)
    cpu = time.process_time() - started
    if (rendered.width, rendered.height) != (request.width, request.height):
        raise BenchError(f"{request.canonical}: {rendered.width}x{rendered.height}")
    return cpu, rendered.body


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "imgproxy-focal", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "pillow": PIL.__version__, "code": code_state(),
        "options": vars(args),
    }
    started = time.monotonic()
    note("generating the portraits")
    found = sources()
    cases = [(source, target) for source in found for target in TARGETS]
    times: dict[tuple[str, int, str], list[float]] = {}
    kept: dict[tuple[str, int, str], float] = {}
    note(f"rendering {len(cases)} cases x {len(SIDES)} sides x {args.repeat}")
    for source, target in cases:
        for side in SIDES:
            _, body = render_once(source, spec(side, target, source))  # warm-up, and the quality
            kept[(source.label, target, side)] = subject_kept(Image.open(io.BytesIO(body)), source.picture)
    for _ in range(args.repeat):
        for source, target in cases:
            for side in SIDES:
                cpu, _ = render_once(source, spec(side, target, source))
                times.setdefault((source.label, target, side), []).append(cpu)
    lines = [f"{'source':<20}{'target':>7}" + "".join(f"{s + ' ms':>10}" for s in SIDES)
             + f"{'fp x':>7}{'auto x':>8}{'auto +ms':>9}" + "".join(f"{'kept ' + s:>11}" for s in SIDES)]
    rows: dict[str, dict[str, Any]] = {}
    for source, target in cases:
        ms = {side: statistics.median(times[(source.label, target, side)]) * 1000 for side in SIDES}
        faces = {side: kept[(source.label, target, side)] for side in SIDES}
        row = {"ms": {s: round(v, 2) for s, v in ms.items()},
               "fp_x_cover": round(ms["fp"] / ms["cover"], 3),
               "auto_x_cover": round(ms["auto"] / ms["cover"], 3),
               "face_kept": {s: round(v, 3) for s, v in faces.items()}}
        rows[f"{source.label} -> {target}"] = row
        lines.append(f"{source.label:<20}{target:>7}" + "".join(f"{ms[s]:>10.2f}" for s in SIDES)
                     + f"{row['fp_x_cover']:>7.2f}{row['auto_x_cover']:>8.2f}{ms['auto'] - ms['cover']:>9.2f}"
                     + "".join(f"{faces[s]:>11.3f}" for s in SIDES))
    overall = {key: statistics.geometric_mean([row[key] for row in rows.values()])
               for key in ("fp_x_cover", "auto_x_cover")}
    lines.append(f"geometric mean over the cases: fp x {overall['fp_x_cover']:.3f}, "
                 f"auto x {overall['auto_x_cover']:.3f}")
    lines.append(f"(median CPU ms of {args.repeat} renders each, steps.render to JPEG; x: over cover; "
                 "kept: the fraction of the face in the render)")
    print("\n".join(lines), flush=True)
    result.update({"cases": rows, "overall": {k: round(v, 3) for k, v in overall.items()},
                   "seconds": round(time.monotonic() - started, 1),
                   "loadavg_end": os.getloadavg()})
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="renders per case and side, interleaved (15)")
    args = parser.parse_args(argv)
    if not 1 <= args.repeat <= 500:
        parser.error("--repeat is out of range")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, lambda result: [], parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
