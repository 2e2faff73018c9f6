#!/usr/bin/env python3
"""Benchmark: the JPEG draft and reducing gap for thumbnails, chosen by time and by SSIM.

Not a test. It measures and prints; it exits non-zero only when something failed. One process,
no server: the cost and the quality of the pipeline's two resampling choices, alone.
  draft          ``Image.draft`` asks the JPEG decoder for 1/2, 1/4 or 1/8 of the size (DCT
                 scaling) while the decoded image stays >= FACTOR x the target box (1, 1.1,
                 1.15, 1.2, 1.25, 1.33, 1.5, 2, 3; "none": decode at full size)
  reducing gap   ``Image.resize(..., reducing_gap=GAP)`` first ``reduce()``s by a whole factor
                 (a box filter) while the image stays >= GAP x the target, then LANCZOS
                 (1.5, 2, 3; "none": LANCZOS all the way)
Every choice (DRAFTS x GAPS) renders every case: generated photo-like JPEGs (``tests/photos.py``,
quality 90) of several sizes, to widths from 96 to 1200 px (the dpr=2 variants of 96, 150, 300
and 600 included, and bench_transform.py's thumbnail widths 240-359) and to two ``fit=cover``
squares. Per case and choice: the fastest of
--repeat runs (the one least disturbed by other jobs on the host) of a decode+resize and of the
JPEG encode (quality 82, transform/encode.py's options); the quality against the reference render
(full-resolution decode, LANCZOS with no reducing gap: the choice "draft none, gap none") as
SSIM on luminance (``tests/ssim.py``: Wang et al. 2004, an 11x11 Gaussian window) and as the
mean absolute difference on 0-255. Rows to read them against ("anchor"): a BILINEAR and a BOX
resize of the full-resolution image, and the reference itself through the JPEG encode at the
default quality 82 (the loss every JPEG thumbnail pays anyway). The row "steps.render" is
``imgproxy.transform.steps.render`` as this checkout has it (to PNG for the quality, so no
encoder loss is counted; to JPEG, every step, for the time), so a run shows where the code stands.

The choice, among those whose worst SSIM over all cases is >= --bound: first the reducing gap,
the fastest without a draft by total decode+resize time (all that PNG, WebP and AVIF sources
get), then the draft with that gap: the smallest factor within the bound. A smaller factor never
decodes more pixels, so it is never slower; the choice does not depend on the host's noise.

    .venv/bin/python bench/bench_render_quality.py [--repeat 5] [--bound 0.985]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import PIL
from harness import note, run_main
from PIL import Image

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from photos import photo_jpeg  # the tests' photo-like images
from ssim import mean_absolute_difference, ssim  # the tests' metric

from imgproxy.config import DEFAULT_INPUT_FORMATS
from imgproxy.transform.geometry import cover_crop, mapped_box, target_box
from imgproxy.transform.jobs import RenderSettings
from imgproxy.transform.params import Fit, OutputFormat, TransformSpec
from imgproxy.transform.steps import render

SOURCES: Final = ((4000, 3000), (1600, 1200), (1200, 1600), (1280, 853), (800, 600))
# 192, 300, 600, 1200: dpr=2 of 96, 150, 300, 600; 240-359: bench_transform.py's thumbnails
# (260-359), where a 1600 px source's draft decides between 1/4 and 1/2.
WIDTHS: Final = (96, 150, 192, 240, 260, 300, 320, 359, 600, 1200)
COVERS: Final = ((96, 96), (300, 300))
DRAFTS: Final = (None, 1.0, 1.1, 1.15, 1.2, 1.25, 1.33, 1.5, 2.0, 3.0)
# The worst SSIM a choice may have: README "Transforms" says why (0.99 until 2026-12-02).
BOUND: Final = 0.985
GAPS: Final = (None, 1.5, 2.0, 3.0)
# What transform/encode.py writes for a JPEG at the default quality (transform.jpeg_quality).
JPEG_OPTIONS: Final = {"quality": 82, "optimize": False, "progressive": False}
SETTINGS: Final = RenderSettings(input_formats=DEFAULT_INPUT_FORMATS, max_source_pixels=50_000_000,
                                 jpeg_quality=82, webp_quality=80, avif_quality=60, png_compress_level=6)
KEY_CASES: Final = ("4000x3000 w=300", "1600x1200 w=300", "1600x1200 w=359", "1600x1200 w=96",
                    "1280x853 w=260", "1280x853 w=300", "4000x3000 w=1200", "1600x1200 300x300 cover")


@dataclass(frozen=True, slots=True)
class Choice:
    draft: float | None  # decode at >= draft x the target box; None: at full size
    gap: float | None  # resize's reducing_gap; None: LANCZOS all the way
    resample: Image.Resampling = Image.Resampling.LANCZOS  # another filter: an anchor, not a candidate

    @property
    def label(self) -> str:
        if self.resample is not Image.Resampling.LANCZOS:
            return f"anchor: {self.resample.name} at full size"
        draft = "none" if self.draft is None else f"{self.draft:g}x"
        return f"draft {draft}, gap {'none' if self.gap is None else f'{self.gap:g}'}"


REFERENCE: Final = Choice(None, None)
CANDIDATES: Final = tuple(Choice(draft, gap) for draft in DRAFTS for gap in GAPS)
# How far other renders are from the reference, to read the candidates' figures against: plain
# filters on the full image (what "not LANCZOS quality" looks like), and the loss of the JPEG
# encode at the default quality that every JPEG thumbnail pays anyway.
ANCHORS: Final = (Choice(None, None, Image.Resampling.BILINEAR), Choice(None, None, Image.Resampling.BOX))
ENCODED: Final = "anchor: the reference, JPEG q=82"


@dataclass(frozen=True, slots=True)
class Case:
    size: tuple[int, int]
    spec: TransformSpec
    data: bytes = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        w, h = self.size
        if self.spec.fit is Fit.COVER:
            return f"{w}x{h} {self.spec.width}x{self.spec.height} cover"
        return f"{w}x{h} w={self.spec.width}"


@dataclass(slots=True)
class Cell:
    """One choice on one case."""

    resize_ms: float
    encode_ms: float
    ssim: float
    mad: float
    decoded: tuple[int, int]


def cases() -> list[Case]:
    found = []
    for width, height in SOURCES:
        data = photo_jpeg(width, height, seed=width * height)
        found += [Case((width, height), TransformSpec(w, None), data) for w in WIDTHS if w < width]
        found += [Case((width, height), TransformSpec(w, h, fit=Fit.COVER), data) for w, h in COVERS]
    return found


def render_with(case: Case, choice: Choice) -> tuple[Image.Image, tuple[int, int]]:
    """Decode and resize ``case`` as ``choice`` says (the geometry as steps.py computes it: on the
    source's size, moved onto the drafted pixels); the image and the size it was decoded at."""
    image = Image.open(io.BytesIO(case.data))
    full = image.size
    box = target_box(full, case.spec)
    assert box is not None
    region: tuple[float, float, float, float] = (0, 0, *full)
    if choice.draft is not None:
        drafted = image.draft(None, (int(box[0] * choice.draft), int(box[1] * choice.draft)))
        if drafted is not None:
            region = drafted[1]
    image.load()
    decoded = image.size
    spec = case.spec
    if spec.fit is Fit.COVER and spec.width and spec.height:
        size, crop = (spec.width, spec.height), cover_crop(full, (spec.width, spec.height), spec.gravity)
    else:
        size, crop = box, (0, 0, *full)
    resized = image.resize(size, choice.resample, box=mapped_box(crop, full, region),
                           reducing_gap=choice.gap)
    return resized, decoded


def encode(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **JPEG_OPTIONS)
    return buffer.getvalue()


def fastest_ms(run: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` runs: on a host shared with other jobs, the one least disturbed."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def measure_choice(case: Case, choice: Choice, reference: Image.Image, repeat: int) -> Cell:
    image, decoded = render_with(case, choice)  # also the warm-up
    resize_ms = fastest_ms(lambda: render_with(case, choice), repeat)
    encode_ms = fastest_ms(lambda: encode(image), repeat)
    return Cell(resize_ms, encode_ms, ssim(image, reference), mean_absolute_difference(image, reference),
                decoded)


def measure_steps(case: Case, reference: Image.Image, repeat: int) -> Cell:
    """steps.render as checked out: pixels from a PNG render, time of a JPEG render (all steps)."""
    png = render(case.data, replace(case.spec, fmt=OutputFormat.PNG), OutputFormat.PNG, SETTINGS)
    output = Image.open(io.BytesIO(png.body)).convert("RGB")
    jpeg = replace(case.spec, fmt=OutputFormat.JPEG)
    render(case.data, jpeg, OutputFormat.JPEG, SETTINGS)
    total_ms = fastest_ms(lambda: render(case.data, jpeg, OutputFormat.JPEG, SETTINGS), repeat)
    if output.size != reference.size:  # the old geometry could round a side differently
        note(f"steps.render {case.label}: {output.size} instead of {reference.size}")
        return Cell(total_ms, 0.0, float("nan"), float("nan"), (0, 0))
    return Cell(total_ms, 0.0, ssim(output, reference), mean_absolute_difference(output, reference), (0, 0))


STEPS: Final = "steps.render (this checkout)"


def measure(repeat: int) -> tuple[list[Case], dict[str, dict[str, Cell]]]:
    """case label -> choice label -> cell."""
    table: dict[str, dict[str, Cell]] = {}
    found = cases()
    for number, case in enumerate(found, 1):
        note(f"{number}/{len(found)} {case.label}")
        reference, _ = render_with(case, REFERENCE)
        row = {choice.label: measure_choice(case, choice, reference, repeat)
               for choice in (*CANDIDATES, *ANCHORS)}
        row[STEPS] = measure_steps(case, reference, repeat)
        encoded = Image.open(io.BytesIO(encode(reference)))
        row[ENCODED] = Cell(0.0, 0.0, ssim(encoded, reference), mean_absolute_difference(encoded, reference),
                            (0, 0))
        table[case.label] = row
    return found, table


# --- report ----------------------------------------------------------------------------------

def summary(table: dict[str, dict[str, Cell]]) -> dict[str, dict[str, Any]]:
    """Per choice, over every case."""
    out: dict[str, dict[str, Any]] = {}
    for label in next(iter(table.values())):
        cells = {case: row[label] for case, row in table.items()}
        scored = {case: cell for case, cell in cells.items() if cell.ssim == cell.ssim}  # not NaN
        worst = min(scored, key=lambda case: scored[case].ssim)
        ratios = [cell.resize_ms / table[case][REFERENCE.label].resize_ms for case, cell in cells.items()]
        out[label] = {
            "resize_ms": round(sum(c.resize_ms for c in cells.values()), 1),
            "geomean_x_reference": round(statistics.geometric_mean(ratios), 3) if all(ratios) else 0.0,
            "with_encode_ms": round(sum(c.resize_ms + c.encode_ms for c in cells.values()), 1),
            "worst_ssim": round(scored[worst].ssim, 4), "worst_case": worst,
            "mean_ssim": round(statistics.fmean(c.ssim for c in scored.values()), 4),
            "worst_mad": round(max(c.mad for c in scored.values()), 3),
            "unscored": len(cells) - len(scored),
        }
    return out


def choose(totals: dict[str, dict[str, Any]], bound: float) -> Choice | None:
    """The gap first, then the draft, each within ``bound`` (worst SSIM). The gap is the fastest
    on the rows without a draft, since that is all a PNG, WebP or AVIF source gets. The draft is
    the smallest factor within the bound with that gap: a smaller factor never decodes more
    pixels (it only moves the point where the decoder switches to the next DCT scale), so it is
    never slower, and the choice is made without the host's timing noise. (Until 2026-12-02 the
    draft was the fastest by the geometric mean, ties to the largest: that chose 1.33x, which the
    cases' mean barely separates from 1.15x, but which decodes a 1600 px photo at 1/2 for every
    thumbnail from 301 to 359 px.)"""
    def passing(choices: list[Choice]) -> list[Choice]:
        return [c for c in choices if totals[c.label]["worst_ssim"] >= bound]

    gaps = passing([Choice(None, gap) for gap in GAPS])
    if not gaps:
        return None
    gap = min(gaps, key=lambda c: totals[c.label]["resize_ms"]).gap
    drafts = passing([Choice(draft, gap) for draft in DRAFTS if draft is not None])
    if not drafts:
        return None
    return min(drafts, key=lambda c: c.draft or 0.0)


def report(table: dict[str, dict[str, Cell]], bound: float) -> tuple[str, dict[str, Any]]:
    totals = summary(table)
    lines = [f"over all {len(table)} cases (ms: the sum of each case's fastest run; x reference: the "
             "geometric mean of each case's time over the reference's; steps.render: its whole JPEG render):",
             f"{'choice':<40}{'decode+resize ms':>17}{'x reference':>12}{'with encode ms':>15}"
             f"{'worst SSIM':>11}{'mean SSIM':>10}{'worst MAD':>10}  worst case"]
    for label, t in totals.items():
        resize = "-" if label in (STEPS, ENCODED) else f"{t['resize_ms']:.1f}"
        ratio = "-" if label == ENCODED else f"{t['geomean_x_reference']:.3f}"
        total = "-" if label == ENCODED else f"{t['resize_ms' if label == STEPS else 'with_encode_ms']:.1f}"
        lines.append(f"{label:<40}{resize:>17}{ratio:>12}{total:>15}{t['worst_ssim']:>11.4f}"
                     f"{t['mean_ssim']:>10.4f}{t['worst_mad']:>10.3f}  {t['worst_case']}"
                     + (f" ({t['unscored']} of another size)" if t["unscored"] else ""))
    keys = [key for key in KEY_CASES if key in table]
    lines.append("")
    lines.append("key cases, decode+resize ms / SSIM:")
    lines.append(f"{'choice':<40}" + "".join(f"{key:>26}" for key in keys))
    for label in totals:
        lines.append(f"{label:<40}" + "".join(
            f"{table[key][label].resize_ms:>14.1f} / {table[key][label].ssim:.4f}" for key in keys))
    chosen = choose(totals, bound)
    lines.append("")
    if chosen is None:
        lines.append(f"choice (worst SSIM >= {bound}): none within the bound")
    else:
        gap_only, both = totals[Choice(None, chosen.gap).label], totals[chosen.label]
        lines.append(f"choice (worst SSIM >= {bound}): reducing gap {chosen.gap}, the fastest without a "
                     f"draft, as PNG, WebP and AVIF sources get it ({gap_only['resize_ms']:.1f} ms, "
                     f"worst SSIM {gap_only['worst_ssim']:.4f}); draft {chosen.draft}x, with that gap the "
                     f"smallest factor within the bound "
                     f"({both['geomean_x_reference']:.3f}x the reference, {both['resize_ms']:.1f} ms, "
                     f"worst SSIM {both['worst_ssim']:.4f})")
    cells = {case: {label: {"resize_ms": round(c.resize_ms, 2), "encode_ms": round(c.encode_ms, 2),
                            "ssim": round(c.ssim, 5), "mad": round(c.mad, 3), "decoded": c.decoded}
                    for label, c in row.items()} for case, row in table.items()}
    return "\n".join(lines), {"bound": bound, "chosen": chosen.label if chosen else None, "totals": totals,
                              "cases": cells}


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed renders per case and choice (5)")
    parser.add_argument("--bound", type=float, default=BOUND,
                        help=f"the worst SSIM a choice may have ({BOUND})")
    args = parser.parse_args(argv)
    if not (1 <= args.repeat <= 100 and 0 < args.bound <= 1):
        parser.error("an option is out of range")
    return args


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "imgproxy-render-quality", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "pillow": PIL.__version__,
        "options": vars(args),
    }
    started = time.monotonic()
    _, table = measure(args.repeat)
    text, measured = report(table, args.bound)
    result.update(measured)
    print(text, flush=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["loadavg_end"] = os.getloadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, lambda result: [], parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
