"""Benchmark: what a rate limit charge costs, and whether two processes share one bucket exactly.

- **cost**: ``--charges`` charges timed alone in one process, for each store (this process's
  memory; the host's SQLite table on ``/dev/shm`` and on ``$TMPDIR``) and for one and four
  buckets per charge (a signed URL with ``sub``: signature, key, sub, client), the ids cycling
  over a thousand signatures, a hundred viewers and fifty addresses (rows are read and written,
  not one hot row). Bucket naming (four SHA-256 digests) is timed apart.
- **contention**: two processes, each with its own connection to one table (two serving
  workers), charge one bucket of ``BURST`` (no refill within the run) as fast as they can for
  3 s: exactly ``BURST`` must be charged in all (a failure otherwise), each process's share
  shows they ran at once, and the charges per second of both say what the write lock costs.
  A charge that found the table locked past ``BUSY_MS`` is let through unrecorded (the limits
  fail open, as the host caches miss): counted apart.

    .venv/bin/python bench/bench_limits.py [--charges 20000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from harness import code_state, note, run_main

from imgproxy.auth.principal import Principal
from imgproxy.config import BudgetLimits, Rate
from imgproxy.hostcache.limits import HostBuckets
from imgproxy.hostcache.table import BUSY_MS, HostTable
from imgproxy.limits.buckets import Bucket, Budget, buckets_for
from imgproxy.limits.gcra import ALLOWED
from imgproxy.limits.limiter import BucketStore, LocalBuckets

NOW: Final = 1_800_000_000.0
LOOSE: Final = Rate(1_000_000_000, 86400.0)  # never refuses: the cost of an allowed charge
BURST: Final = 20_000  # more than one process charges before the other has started
CONTENDED: Final = Rate(BURST, 7 * 86400.0)  # no refill within a run: one back every 30 s
CONTENTION_SECONDS: Final = 3.0


def request_buckets(n: int, per_request: int) -> list[tuple[Bucket, ...]]:
    limits = BudgetLimits(per_signature=LOOSE, per_key=LOOSE, per_sub=LOOSE, per_client=LOOSE)
    return [buckets_for(Budget.ORIGINALS, limits,
                        Principal("signature", "k1", sub=f"viewer-{i % 100}", sig=f"sig-{i % 1000}"),
                        f"10.0.{i % 50}.1")[:per_request] for i in range(n)]


def time_charges(store: BucketStore, batches: list[tuple[Bucket, ...]]) -> float:
    """µs per charge."""
    started = time.perf_counter()
    for i, batch in enumerate(batches):
        verdict = store.charge(batch, NOW + i * 1e-4)
        assert verdict.allowed
    return (time.perf_counter() - started) / len(batches) * 1e6


def contender(path: str, start: Any, results: Any) -> None:
    """Charge the one bucket for ``CONTENTION_SECONDS``: (tries, allowed)."""
    table = HostTable(Path(path))
    store = HostBuckets(table, 1000)
    [only] = request_buckets(1, 1)[0]
    bucket = (Bucket(only.dimension, CONTENDED, only.id),)
    start.wait()
    tries = charged = unrecorded = 0
    deadline = time.monotonic() + CONTENTION_SECONDS
    while time.monotonic() < deadline:
        tries += 1
        verdict = store.charge(bucket, time.time())
        unrecorded += verdict is ALLOWED  # the table stayed locked past BUSY_MS: let through
        charged += verdict.allowed and verdict is not ALLOWED
    results.put((tries, charged, unrecorded))
    table.close()


def contention(directory: Path) -> dict[str, Any]:
    path = str(directory / "contended.sqlite")
    HostTable(Path(path)).close()  # the schema, before either process (as the supervisor does)
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=contender, args=(path, start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    each = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    tries = sum(t for t, _, _ in each)
    return {"burst": BURST, "tries": tries, "charged": sum(c for _, c, _ in each),
            "charged_each": [c for _, c, _ in each], "unrecorded": sum(u for _, _, u in each),
            "charges_per_s": round(tries / CONTENTION_SECONDS)}


def bench(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"code": code_state(), "loadavg_start": os.getloadavg()}
    naming_batches = 2000
    request_buckets(naming_batches, 4)  # warm
    started = time.perf_counter()
    request_buckets(naming_batches, 4)
    result["naming_us"] = round((time.perf_counter() - started) / naming_batches * 1e6, 1)
    costs: dict[str, dict[int, float]] = {}
    shm = Path("/dev/shm")  # noqa: S108 (a tmpfs, as cache.dir is advised to be)
    for name, where in (("memory", None), ("table /dev/shm", shm), ("table $TMPDIR", tmp)):
        if where is not None and not where.is_dir():
            continue
        costs[name] = {}
        for per_request in (1, 4):
            with tempfile.TemporaryDirectory(dir=where) as directory:
                table = None if where is None else HostTable(Path(directory) / "t.sqlite")
                store: BucketStore = LocalBuckets(100_000) if table is None else HostBuckets(table, 100_000)
                time_charges(store, request_buckets(1000, per_request))  # warm: the rows exist
                spent = time_charges(store, request_buckets(args.charges, per_request))
                costs[name][per_request] = round(spent, 1)
                if table is not None:
                    table.close()
    result["charge_us"] = costs
    note("contention: two processes on one bucket")
    result["contention"] = contention(tmp)
    result["loadavg_end"] = os.getloadavg()
    c = result["contention"]
    lines = ["store            | 1 bucket µs | 4 buckets µs", "---|---|---"]
    lines += [f"{name:16} | {c[1]:11} | {c[4]:12}" for name, c in costs.items()]
    lines += [f"naming 4 buckets (SHA-256): {result['naming_us']} µs",
              f"contention: {c['charged']} of {c['tries']} charged (burst {BURST}; each "
              f"{c['charged_each']}), {c['unrecorded']} let through unrecorded (locked past "
              f"{BUSY_MS} ms), {c['charges_per_s']} charges/s by 2 processes"]
    print("\n".join(lines), flush=True)
    return result


def failures(result: dict[str, Any]) -> list[str]:
    charged = result["contention"]["charged"]
    return [] if charged == BURST else [f"two processes charged {charged} of a bucket of {BURST}"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=20_000,
                        help="timed charges per store and size (20000)")
    args = parser.parse_args(argv)
    if not 100 <= args.charges <= 10_000_000:
        parser.error("--charges: 100 to 10,000,000")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, failures, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
