#!/usr/bin/env python3
"""Benchmark: WebP and AVIF encoder settings against JPEG at equal visual quality, by bytes and CPU.

Not a test. It measures and prints; it exits non-zero only when something failed. One process,
no server: the encoders alone, on the thumbnails the pipeline makes.
  cases        generated photo-like JPEGs (``tests/photos.py``, quality 90) of five sizes, rendered
               by ``steps.render`` to a lossless PNG at w=300 (the deciding width) and 96, 160, 600
  reference    that PNG, decoded: the resized image before any encoder loss
  JPEG         what ``encode.encode`` writes at the default quality (82, baseline, 4:2:0)
  WebP grid    method 0..6, each at the lowest quality whose SSIM is >= JPEG's on every photo
  AVIF grid    speed 6..10 (libaom; slower speeds cost 100+ ms per 300 px thumbnail here),
               one encoder thread, each at its lowest quality as for WebP; then, at the chosen
               speed and quality, Pillow's default thread count (one per CPU) and 4:4:4 chroma
Quality is SSIM on luminance (``tests/ssim.py``: Wang et al. 2004, an 11x11 Gaussian window) of
the decoded output against the reference. Every format here subsamples chroma 4:2:0 (JPEG as
``encode`` writes it, lossy WebP always, AVIF by default), so a luminance metric compares like
with like; it cannot credit 4:4:4, whose row is there for its bytes and CPU only. The lowest
passing quality is found by bisection (SSIM rises with quality; the neighbours are checked).

CPU is ``time.process_time`` (this process, every thread: an encoder thread on another core is
counted, not hidden) of one encode, the median of --repeat rounds; each round runs every setting
on every case in a rotated order, so drift over the run falls on all settings alike. Fast
encodes are timed in batches of at least 2 ms and divided. Bytes are the encoded length. The
last lines name, per format, the choice: among the settings at JPEG's quality whose bytes are
within --slack of the format's smallest (an encoder setting that spends 3x the CPU for 2 % fewer
bytes is not worth it for thumbnails; one that gives back most of the saving is no reason to
send the format), the one with the least CPU; settings within --tie of that CPU count as equal
(the host's noise would otherwise pick between them) and the fewest bytes among them wins.

    .venv/bin/python bench/bench_encoders.py [--repeat 15] [--slack 0.05] [--tie 0.05]
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import PIL
from harness import code_state, note, run_main
from PIL import Image, features

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from photos import photo_jpeg  # the tests' photo-like images
from ssim import ssim  # the tests' metric

from imgproxy.config import DEFAULT_INPUT_FORMATS, TransformConfig
from imgproxy.transform.encode import encode
from imgproxy.transform.jobs import RenderSettings
from imgproxy.transform.params import OutputFormat, TransformSpec
from imgproxy.transform.steps import render

SOURCES: Final = ((4000, 3000), (1600, 1200), (1200, 1600), (1280, 853), (800, 600))
DECIDING_WIDTH: Final = 300
OTHER_WIDTHS: Final = (96, 160, 600)
WEBP_METHODS: Final = tuple(range(7))
AVIF_SPEEDS: Final = (6, 7, 8, 9, 10)
_CONFIG: Final = TransformConfig()
# The checkout's defaults (config/model.py), for the rows "encode (this checkout)".
SETTINGS: Final = RenderSettings(input_formats=DEFAULT_INPUT_FORMATS, max_source_pixels=50_000_000,
                                 jpeg_quality=_CONFIG.jpeg_quality, webp_quality=_CONFIG.webp_quality,
                                 avif_quality=_CONFIG.avif_quality, png_compress_level=6)
BATCH_SECONDS: Final = 0.002


@dataclass(frozen=True, slots=True)
class Setting:
    """One encoder configuration; ``quality`` None: the checkout's ``encode.encode``."""

    fmt: str  # JPEG, WEBP, AVIF
    quality: int | None
    knobs: tuple[tuple[str, object], ...] = ()
    note: str = ""

    @property
    def label(self) -> str:
        if self.quality is None:
            return f"{self.fmt} encode (this checkout)"
        knobs = " ".join(f"{k}={v}" for k, v in self.knobs)
        return f"{self.fmt} q={self.quality} {knobs}".rstrip() + (f" ({self.note})" if self.note else "")

    def at(self, quality: int) -> Setting:
        return replace(self, quality=quality)


JPEG: Final = Setting("JPEG", _CONFIG.jpeg_quality, (("optimize", False), ("progressive", False)),
                      "the reference")


@dataclass(frozen=True, slots=True)
class Case:
    size: tuple[int, int]
    width: int
    reference: Image.Image = field(repr=False, compare=False)
    render_ms: float = field(compare=False)  # steps.render to JPEG, all steps, CPU

    @property
    def label(self) -> str:
        return f"{self.size[0]}x{self.size[1]} w={self.width}"


@dataclass(slots=True)
class Cell:
    """One setting on one case."""

    size: int
    ssim: float
    cpu_ms: float = math.nan


def cpu_ms(run: Callable[[], object]) -> float:
    """CPU of one ``run()`` (every thread of this process); a faster one over a batch of >= 2 ms."""
    started = time.process_time()
    run()
    once = time.process_time() - started
    if once >= BATCH_SECONDS:
        return 1000 * once
    batch = max(1, math.ceil(BATCH_SECONDS / max(once, 1e-6)))
    started = time.process_time()
    for _ in range(batch):
        run()
    return 1000 * (time.process_time() - started) / batch


def cases(widths: Iterable[int]) -> list[Case]:
    found = []
    for width, height in SOURCES:
        data = photo_jpeg(width, height, seed=width * height)
        for w in widths:
            png = render(data, TransformSpec(w, None, fmt=OutputFormat.PNG), OutputFormat.PNG, SETTINGS)
            reference = Image.open(io.BytesIO(png.body)).convert("RGB")
            jpeg = TransformSpec(w, None, fmt=OutputFormat.JPEG)
            run = functools.partial(render, data, jpeg, OutputFormat.JPEG, SETTINGS)
            render_ms = statistics.median(cpu_ms(run) for _ in range(5))
            found.append(Case((width, height), w, reference, render_ms))
    return found


def encoder(setting: Setting, image: Image.Image) -> Callable[[], bytes]:
    if setting.quality is None:
        target = OutputFormat[setting.fmt]
        return lambda: encode(image, target, None, SETTINGS, None)

    def run() -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, setting.fmt, quality=setting.quality, icc_profile=None, **dict(setting.knobs))
        return buffer.getvalue()
    return run


def score(setting: Setting, case: Case) -> Cell:
    body = encoder(setting, case.reference)()
    decoded = Image.open(io.BytesIO(body)).convert("RGB")
    return Cell(len(body), ssim(decoded, case.reference))


class Scores:
    """Bytes and SSIM per (setting, case), computed once."""

    def __init__(self) -> None:
        self.cells: dict[tuple[Setting, str], Cell] = {}

    def get(self, setting: Setting, case: Case) -> Cell:
        key = (setting, case.label)
        if key not in self.cells:
            self.cells[key] = score(setting, case)
        return self.cells[key]

    def passes(self, setting: Setting, found: list[Case]) -> bool:
        """SSIM >= JPEG's on every case."""
        return all(self.get(setting, c).ssim >= self.get(JPEG, c).ssim for c in found)


def lowest_quality(base: Setting, found: list[Case], scores: Scores) -> Setting | None:
    """The lowest quality at which ``base`` passes on every case (bisection, then a look below)."""
    low, high = 1, 100
    if not scores.passes(base.at(high), found):
        return None
    while low < high:
        middle = (low + high) // 2
        if scores.passes(base.at(middle), found):
            high = middle
        else:
            low = middle + 1
    for lower in range(low - 1, max(0, low - 3), -1):  # SSIM is not strictly monotone in quality
        if scores.passes(base.at(lower), found):
            low = lower
    return base.at(low)


def time_all(settings: list[Setting], found: list[Case], repeat: int, scores: Scores) -> None:
    """Median CPU per (setting, case), rounds interleaved and rotated."""
    samples: dict[tuple[Setting, str], list[float]] = {}
    runs = {(s, c.label): encoder(s, c.reference) for s in settings for c in found}
    for run in runs.values():
        run()  # warm-up
    for number in range(repeat):
        note(f"timing round {number + 1}/{repeat}")
        shift = number % len(settings)
        for setting in settings[shift:] + settings[:shift]:
            for case in found:
                samples.setdefault((setting, case.label), []).append(cpu_ms(runs[setting, case.label]))
    for (setting, label), times in samples.items():
        case = next(c for c in found if c.label == label)
        scores.get(setting, case).cpu_ms = statistics.median(times)


# --- report ----------------------------------------------------------------------------------

def relative(setting: Setting, found: list[Case], scores: Scores) -> dict[str, Any]:
    """Over the cases: geometric means of bytes and CPU over JPEG's, worst SSIM margin."""
    cells = [(scores.get(setting, c), scores.get(JPEG, c), c) for c in found]
    return {
        "bytes": sum(x.size for x, _, _ in cells) // len(cells),
        "bytes_x_jpeg": round(statistics.geometric_mean(x.size / j.size for x, j, _ in cells), 3),
        "cpu_ms": round(statistics.fmean(x.cpu_ms for x, _, _ in cells), 3),
        "cpu_x_jpeg": round(statistics.geometric_mean(x.cpu_ms / j.cpu_ms for x, j, _ in cells), 2),
        "render_x_jpeg": round(statistics.geometric_mean((c.render_ms - j.cpu_ms + x.cpu_ms) / c.render_ms
                                                         for x, j, c in cells), 2),
        "mean_ssim": round(statistics.fmean(x.ssim for x, _, _ in cells), 4),
        "worst_margin": round(min(x.ssim - j.ssim for x, j, _ in cells), 4),
    }


def choose(candidates: list[Setting], found: list[Case], scores: Scores, slack: float,
           tie: float) -> Setting | None:
    """Among those whose bytes are within ``slack`` of the smallest, the least CPU; within ``tie``
    of it, the fewest bytes."""
    if not candidates:
        return None
    rel = {s: relative(s, found, scores) for s in candidates}
    smallest = min(r["bytes_x_jpeg"] for r in rel.values())
    near = [s for s in candidates if rel[s]["bytes_x_jpeg"] <= smallest + slack]
    least = min(rel[s]["cpu_ms"] for s in near)
    tied = [s for s in near if rel[s]["cpu_ms"] <= least * (1 + tie)]
    return min(tied, key=lambda s: (rel[s]["bytes"], rel[s]["cpu_ms"]))


def table(title: str, settings: list[Setting], found: list[Case], scores: Scores) -> list[str]:
    lines = [title, f"{'setting':<58}{'bytes':>8}{'x JPEG':>8}{'CPU ms':>9}{'x JPEG':>8}"
                    f"{'render x':>10}{'mean SSIM':>10}{'worst margin':>13}"]
    for s in settings:
        r = relative(s, found, scores)
        lines.append(f"{s.label:<58}{r['bytes']:>8}{r['bytes_x_jpeg']:>8.3f}{r['cpu_ms']:>9.2f}"
                     f"{r['cpu_x_jpeg']:>8.2f}{r['render_x_jpeg']:>10.2f}{r['mean_ssim']:>10.4f}"
                     f"{r['worst_margin']:>+13.4f}")
    return lines


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "imgproxy-encoders", "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "python": platform.python_version(), "pillow": PIL.__version__,
        "webp": features.version("webp"), "avif": features.version("avif"), "code": code_state(),
        "options": vars(args),
    }
    started = time.monotonic()
    scores = Scores()
    note("rendering the cases")
    deciding = cases((DECIDING_WIDTH,))
    note("finding the lowest quality at JPEG's SSIM per setting")
    webp = [s for m in WEBP_METHODS
            if (s := lowest_quality(Setting("WEBP", None, (("method", m),)), deciding, scores))]
    avif = [s for speed in AVIF_SPEEDS
            if (s := lowest_quality(Setting("AVIF", None, (("speed", speed), ("max_threads", 1))),
                                    deciding, scores))]
    current = [Setting("WEBP", None), Setting("AVIF", None)]
    note("timing")
    time_all([JPEG, *current, *webp, *avif], deciding, args.repeat, scores)
    chosen = {"WEBP": choose(webp, deciding, scores, args.slack, args.tie),
              "AVIF": choose(avif, deciding, scores, args.slack, args.tie)}
    extras: list[Setting] = []
    if (best_avif := chosen["AVIF"]) is not None:
        knobs = dict(best_avif.knobs)
        extras = [replace(best_avif, knobs=(("speed", knobs["speed"]),),
                          note="Pillow's threads: one per CPU"),
                  replace(best_avif, knobs=(*best_avif.knobs, ("subsampling", "4:4:4")),
                          note="4:4:4 chroma")]
        time_all([JPEG, *extras], deciding, args.repeat, scores)
    lines = table(f"w={DECIDING_WIDTH}, {len(deciding)} photos (bytes and CPU ms: the mean; x JPEG: the "
                  "geometric mean of each photo's ratio; render x: the whole steps.render with it over one "
                  "with JPEG; worst margin: the least SSIM over JPEG's):",
                  [JPEG, *current, *webp, *avif, *extras], deciding, scores)
    lines.append("")
    for fmt, setting in chosen.items():
        lines.append(f"choice {fmt} (within {args.slack:g} of the smallest bytes, the least CPU, "
                     f"ties within {args.tie:.0%} to the fewest bytes): "
                     + (setting.label if setting else "none reaches JPEG's SSIM"))
    others = cases(OTHER_WIDTHS)
    chosen_settings = [s for s in chosen.values() if s is not None]
    time_all([JPEG, *current, *chosen_settings], others, max(3, args.repeat // 3), scores)
    per_width: dict[int, dict[str, Any]] = {}
    for w in OTHER_WIDTHS:
        at_width = [c for c in others if c.width == w]
        lines.append("")
        lines += table(f"w={w}, the same settings:", [JPEG, *current, *chosen_settings], at_width, scores)
        per_width[w] = {s.label: relative(s, at_width, scores) for s in [JPEG, *current, *chosen_settings]}
    print("\n".join(lines), flush=True)
    result.update({
        "chosen": {fmt: s.label if s else None for fmt, s in chosen.items()},
        "deciding": {s.label: relative(s, deciding, scores) for s in [JPEG, *current, *webp, *avif, *extras]},
        "other_widths": per_width,
        "cases": {f"{s.label} | {label}": {"bytes": c.size, "ssim": round(c.ssim, 5),
                                            "cpu_ms": round(c.cpu_ms, 3)}
                  for (s, label), c in scores.cells.items() if not math.isnan(c.cpu_ms)},
        "render_ms": {c.label: round(c.render_ms, 2) for c in deciding + others},
        "seconds": round(time.monotonic() - started, 1), "loadavg_end": os.getloadavg(),
    })
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timing rounds, interleaved (15)")
    parser.add_argument("--slack", type=float, default=0.05,
                        help="bytes (x JPEG) a choice may have over the format's smallest (0.05)")
    parser.add_argument("--tie", type=float, default=0.05,
                        help="CPU over the least that still counts as equal, a fraction (0.05)")
    args = parser.parse_args(argv)
    if not (1 <= args.repeat <= 200 and 0 <= args.slack <= 1 and 0 <= args.tie <= 1):
        parser.error("an option is out of range")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, lambda result: [], parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
