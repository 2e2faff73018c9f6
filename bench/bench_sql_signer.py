#!/usr/bin/env python3
"""Benchmark: signing URLs inside PostgreSQL (imgproxy/signers/postgres.sql) against UrlSigner.

Not a test. It measures and prints; it exits non-zero only when something failed (the server did
not start, or a URL the database made differs from Python's). A throwaway cluster as the tests
make it (tests/pg_cluster.py: initdb in a temporary directory, a free loopback port), the script
installed as ``imgproxy sql postgres`` prints it, one key. Per round, interleaved:
  sql        ``SELECT imgproxy.sign_url('photos', 'k/' || i || '.jpg', '{"w": 96}', 3600, 3600)
             FROM generate_series(1, --rows)`` in one open psql session, every URL made and only
             their count sent: the CPU time of the server process running it (/proc/PID/stat)
             and the time it took
  python     ``UrlSigner.sign_many`` over the same items in this process (its CPU time and the
             time it took): the baseline
  fetch      the query run by a new psql, every URL read by this process (psql's start and
             connection included) and compared with Python's at the transaction's now()
and the same for a key that needs percent-encoding throughout (``employees/Zoë Smith <i>+1.jpg``:
a space, a non-ASCII letter, a plus). Figures: URLs per second, the median of --repeat rounds,
and SQL's over Python's in the same run (by CPU: the steady figure on a busy host).

    .venv/bin/python bench/bench_sql_signer.py [--rows 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from harness import CLK_TCK, BenchError, code_state, note, run_main

sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from pg_cluster import PgCluster, PgError, throwaway_cluster  # how the tests run PostgreSQL

from imgproxy.auth.signing import UrlSigner

SECRET: Final = "bench-sql-signing-key-0123456789abcdef-0123"  # noqa: S105 - a throwaway key
BASE_URL: Final = "https://img.example.com"
TTL: Final = 3600
WINDOW: Final = 3600
# (name, SQL expression of i for the key, the same in Python)
KEYS: Final = (
    ("plain", "'k/' || i || '.jpg'", "k/{}.jpg"),
    ("encoded", "'employees/Zoë Smith ' || i || '+1.jpg'", "employees/Zoë Smith {}+1.jpg"),
)


def query(key_sql: str, rows: int) -> str:
    return (f"SELECT imgproxy.sign_url('photos', {key_sql}, '{{\"w\": 96}}', {TTL}, {WINDOW}) "
            f"FROM pg_catalog.generate_series(1, {rows}) AS i")


def backend_ticks(pid: int) -> int:
    """utime + stime of a server process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Session:
    """One psql kept open (line-buffered through stdbuf), so the server process that runs the
    queries is known and its CPU time can be read around each one."""

    def __init__(self, pg: PgCluster) -> None:
        argv, env = pg.client()
        self.process = subprocess.Popen(["stdbuf", "-oL", *argv], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, encoding="utf-8", env=env)
        self.pid = int(self.run("SELECT pg_backend_pid();")[0])

    def run(self, sql: str) -> list[str]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{sql}\nSELECT 'bench-done';\n")
        self.process.stdin.flush()
        lines = []
        while (line := self.process.stdout.readline()) != "bench-done\n":
            if not line:
                raise BenchError(f"psql stopped (exit {self.process.wait(timeout=10)})")
            lines.append(line.rstrip("\n"))
        return lines

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


@dataclass(frozen=True)
class Timing:
    cpu: float  # seconds of CPU of the one process that signed (the server's, or this one)
    wall: float


def sql_timing(session: Session, key_sql: str, rows: int) -> Timing:
    """The query in the server: every URL made, only their count sent."""
    ticks, started = backend_ticks(session.pid), time.perf_counter()
    session.run(f"SELECT pg_catalog.count(u) FROM ({query(key_sql, rows)}) AS s(u);")
    return Timing((backend_ticks(session.pid) - ticks) / CLK_TCK, time.perf_counter() - started)


def fetch_seconds(pg: PgCluster, key_sql: str, key_format: str, rows: int, signer: UrlSigner) -> float:
    """A new psql runs the query and this process reads every URL; they must be Python's."""
    started = time.perf_counter()
    lines = pg.rows(f"BEGIN; SELECT extract(epoch FROM now()); {query(key_sql, rows)}; COMMIT;")
    seconds = time.perf_counter() - started
    now, urls = float(lines[0]), lines[1:]
    expected = signer.sign_many([("photos", key_format.format(i), {"w": "96"}) for i in range(1, rows + 1)],
                                ttl=TTL, window=WINDOW, now=now)
    if urls != expected:
        wrong = next((i for i, (a, b) in enumerate(zip(urls, expected, strict=False)) if a != b), len(urls))
        raise BenchError(f"the database's URL #{wrong + 1} differs from Python's ({len(urls)} rows)")
    return seconds


def python_timing(key_format: str, rows: int, signer: UrlSigner) -> Timing:
    items = [("photos", key_format.format(i), {"w": "96"}) for i in range(1, rows + 1)]
    cpu, started = time.process_time(), time.perf_counter()
    signer.sign_many(items, ttl=TTL, window=WINDOW)
    return Timing(time.process_time() - cpu, time.perf_counter() - started)


def postgres_version(pg: PgCluster) -> str:
    return pg.rows("SHOW server_version;")[0]


def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "imgproxy-sql-signer", "cpus": os.cpu_count(),
                              "loadavg_start": os.getloadavg(), "python": platform.python_version(),
                              "code": code_state(), "options": vars(args)}
    signer = UrlSigner(SECRET, "k1", BASE_URL)
    started = time.monotonic()
    sql: dict[str, list[Timing]] = {name: [] for name, _, _ in KEYS}
    python: dict[str, list[Timing]] = {name: [] for name, _, _ in KEYS}
    fetch: dict[str, list[float]] = {name: [] for name, _, _ in KEYS}
    try:
        with throwaway_cluster() as pg:
            script = subprocess.run([sys.executable, "-m", "imgproxy", "sql", "postgres"],
                                    capture_output=True, text=True, timeout=60, check=True).stdout
            pg.psql(script)
            pg.psql(f"INSERT INTO imgproxy.signing_keys VALUES ('k1', '{SECRET}', '{BASE_URL}');")
            result["postgres"] = pg.rows("SHOW server_version;")[0]
            note(f"PostgreSQL {result['postgres']}; {args.repeat} rounds of {args.rows} rows")
            session = Session(pg)
            try:
                for _, key_sql, key_format in KEYS:  # warm-up: plans, caches
                    sql_timing(session, key_sql, args.rows)
                    python_timing(key_format, args.rows, signer)
                for round_ in range(args.repeat):
                    for name, key_sql, key_format in KEYS:
                        sql[name].append(sql_timing(session, key_sql, args.rows))
                        python[name].append(python_timing(key_format, args.rows, signer))
                        fetch[name].append(fetch_seconds(pg, key_sql, key_format, args.rows, signer))
                    note(f"round {round_ + 1}/{args.repeat} done")
            finally:
                session.close()
    except (PgError, AssertionError) as exc:
        raise BenchError(str(exc)) from None

    def rate(seconds: list[float]) -> float:
        return int(args.rows) / statistics.median(seconds)

    rates = {name: {"sql_cpu": rate([t.cpu for t in sql[name]]),
                    "python_cpu": rate([t.cpu for t in python[name]]),
                    "sql_wall": rate([t.wall for t in sql[name]]),
                    "python_wall": rate([t.wall for t in python[name]]),
                    "sql_fetch_wall": rate(fetch[name])}
             for name, _, _ in KEYS}
    lines = [f"{args.rows} URLs per query, median of {args.repeat} rounds, URLs/s by the CPU of the process "
             "that signs (the server's; this one's) and by the clock; x py: over UrlSigner.sign_many:",
             f"{'key':<9}{'sql cpu':>9}{'py cpu':>9}{'x py':>7}{'sql wall':>10}{'py wall':>9}{'x py':>7}"
             f"{'fetch wall':>12}"]
    for name, r in rates.items():
        lines.append(f"{name:<9}{r['sql_cpu']:>9,.0f}{r['python_cpu']:>9,.0f}"
                     f"{r['sql_cpu'] / r['python_cpu']:>7.3f}{r['sql_wall']:>10,.0f}{r['python_wall']:>9,.0f}"
                     f"{r['sql_wall'] / r['python_wall']:>7.3f}{r['sql_fetch_wall']:>12,.0f}")
    print("\n".join(lines), flush=True)
    result.update({
        "urls_per_second": {n: {k: round(v) for k, v in r.items()} for n, r in rates.items()},
        "sql_x_python_cpu": {n: round(r["sql_cpu"] / r["python_cpu"], 3) for n, r in rates.items()},
        "sql_x_python_wall": {n: round(r["sql_wall"] / r["python_wall"], 3) for n, r in rates.items()},
        "seconds": round(time.monotonic() - started, 1), "loadavg_end": os.getloadavg(),
    })
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="URLs per query (10000)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds, interleaved (5)")
    args = parser.parse_args(argv)
    if not (1 <= args.rows <= 1_000_000 and 1 <= args.repeat <= 100):
        parser.error("an option is out of range")
    return args


def main(argv: list[str] | None = None) -> int:
    return run_main(bench, lambda result: [], parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
