"""The benchmarks' shared harness: processes (moto, ``imgproxy serve``), CPU accounting, load loop.

Imported by the ``bench_*.py`` scripts (run as scripts, so this directory is on ``sys.path``).
Everything runs on 127.0.0.1 in separate processes, so each one's CPU is visible: moto (the S3
server), the proxy (and its image workers), and the bench process itself. With ``--s3-tls``
(``add_s3_options``, ``s3_server``) S3 is HTTPS, as in production: nginx terminates TLS with a
throwaway CA in front of moto, and the proxy and the direct side trust that CA.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import hashlib
import http.client
import json
import multiprocessing
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import aiohttp
import boto3
from botocore.config import Config as BotoConfig

TESTS: Final = Path(__file__).resolve().parent.parent / "tests"  # nginx_site: how tests run nginx
HOST: Final = "127.0.0.1"
BUCKET: Final = "bench-private"
SOURCE: Final = "bench"
ACCESS_KEY: Final = "bench-access-key"
SECRET_KEY: Final = "bench-secret-key"  # noqa: S105 - moto accepts any credentials
MIB: Final = 1024 * 1024
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
MAX_ERRORS: Final = 50  # a phase stops early after this many failed requests
NOT_CPU: Final = frozenset({"others", "steal", "idle"})  # CpuMeter figures that are not a process

# moto in its own process; the port goes to stdout, then stdout is quiet; EOF on stdin stops it.
MOTO_SNIPPET: Final = """
import logging, sys
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address=sys.argv[1], port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdout = sys.stderr
sys.stdin.read()
server.stop()
"""


class BenchError(Exception):
    """Something failed (not: a target was missed)."""


def note(text: str) -> None:
    sys.stderr.write(f"[bench] {text}\n")
    sys.stderr.flush()


# --- processes -------------------------------------------------------------------------------

def _die_with_parent() -> None:
    """In the child: get SIGTERM if the bench process dies, even by SIGKILL (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, PYTHONUNBUFFERED="1")
    return env


@contextmanager
def running(argv: list[str], log_path: Path, **popen: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess in its own session (Ctrl-C reaches only us), always ended on exit."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stderr=log, env=child_env(), start_new_session=True,
                                preexec_fn=_die_with_parent, **popen)
        try:
            yield proc
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def moto(workdir: Path, name: str = "moto") -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """moto on a free port: (process, endpoint URL); ``name`` names its log file in workdir."""
    log_path = workdir / f"{name}.log"
    with running([sys.executable, "-c", MOTO_SNIPPET, HOST], log_path,
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.isdigit():
            raise BenchError(f"moto did not start:\n{log_tail(log_path)}")
        yield proc, f"http://{HOST}:{line}"


@dataclass(frozen=True)
class S3Server:
    """Where the benchmark's S3 answers: moto itself (``http://``), or nginx terminating TLS in
    front of it (``https://``, its certificate signed by the CA in ``ca_bundle``)."""

    endpoint: str
    moto_pid: int
    tls_pids: tuple[int, ...] = ()  # nginx's master and worker: the TLS costs, counted apart
    ca_bundle: Path | None = None

    def client_ssl(self) -> ssl.SSLContext | None:
        """For a load generator's connector: a context trusting the CA (None: plain HTTP)."""
        return None if self.ca_bundle is None else ssl.create_default_context(cafile=str(self.ca_bundle))


def add_s3_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--s3-tls", action="store_true",
                        help="S3 over HTTPS: nginx terminating TLS with a throwaway CA in front of moto")


@contextmanager
def s3_server(workdir: Path, tls: bool = False) -> Iterator[S3Server]:
    """moto (``moto()``), and with ``tls`` nginx in front of it on another port: HTTPS with a
    server certificate from a CA made here, in ``workdir/ca`` (``tests/nginx_site.py``)."""
    with moto(workdir) as (moto_proc, endpoint):
        if not tls:
            yield S3Server(endpoint, moto_proc.pid)
            return
        if str(TESTS) not in sys.path:
            sys.path.append(str(TESTS))
        import nginx_site  # here: only --s3-tls needs nginx and cryptography

        if nginx_site.NGINX is None:
            raise BenchError("--s3-tls needs the nginx binary (Debian: apt-get install nginx)")
        authority = nginx_site.make_authority(workdir / "ca")
        prefix, port = workdir / "s3-tls", free_port()
        main = nginx_site.tls_front(prefix, port, endpoint.removeprefix("http://"), authority)
        checked = nginx_site.check_config(prefix, main)
        if checked.returncode != 0:
            raise BenchError(f"nginx -t failed for the S3 TLS front:\n{checked.stderr}")
        argv = nginx_site.command(prefix, main)
        with running(argv, workdir / "s3-tls.log", stdin=subprocess.DEVNULL) as nginx:
            try:
                nginx_site.wait_until_listening(prefix, port, nginx.poll,
                                                ready=lambda: bool(descendants(nginx.pid)))
            except nginx_site.NginxError as exc:
                raise BenchError(str(exc)) from None
            yield S3Server(f"https://{HOST}:{port}", moto_proc.pid, (nginx.pid, *descendants(nginx.pid)),
                           authority.ca)


def source_toml(name: str, endpoint: str, ca_bundle: Path | None = None) -> str:
    """A ``[sources.NAME]`` table for BUCKET on moto (more sources for ``proxy_toml``'s extra);
    ``ca_bundle``: the CA of an https endpoint."""
    q = json.dumps  # TOML basic strings accept JSON's escapes for these ASCII values
    return "\n".join([
        f"[sources.{name}]", f"bucket = {q(BUCKET)}", 'region = "us-east-1"',
        f"endpoint_url = {q(endpoint)}", 'addressing_style = "path"',
        f"access_key_id = {q(ACCESS_KEY)}", f"secret_access_key = {q(SECRET_KEY)}",
        "connect_timeout = 2", "read_timeout = 60",
        *([f"ca_bundle = {q(str(ca_bundle))}"] if ca_bundle is not None else []), "",
    ])


def proxy_toml(endpoint: str, port: int, signing_key: str, extra: str = "", *, workers: int = 1,
               metrics_port: int | None = None, server: Sequence[str] = (),
               ca_bundle: Path | None = None, auth: str | None = None) -> str:
    """The proxy's config: one source (SOURCE) on moto; ``extra`` is appended (more TOML tables).
    ``metrics_port``: the Prometheus listener on that port (default: none). ``server``: more
    ``key = value`` lines for the ``[server]`` table. ``ca_bundle``: the CA of an https
    ``endpoint``. ``auth``: the ``[auth]`` tables instead of one key ``bench = signing_key``."""
    q = json.dumps
    auth_lines = ["[auth]", f"keys = {{ bench = {q(signing_key)} }}", 'max_ttl = "1d"', ""] \
        if auth is None else [auth]
    metrics = ["enabled = false"] if metrics_port is None else [
        "enabled = true", f"host = {q(HOST)}", f"port = {metrics_port}"]
    return "\n".join([
        # One server process by default: the figures in README.md measure one event loop (serve
        # --workers defaults to one per CPU); ``workers`` > 1 runs the supervisor and its workers.
        "[server]", f"host = {q(HOST)}", f"port = {port}", "shutdown_timeout = 1", f"workers = {workers}",
        *server, "",
        "[metrics]", *metrics, "",
        *auth_lines, "",
    ]) + source_toml(SOURCE, endpoint, ca_bundle) + extra


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"imgproxy serve exited with {proc.returncode}:\n{log_tail(log_path)}")
        conn = http.client.HTTPConnection(HOST, port, timeout=1)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise BenchError(f"imgproxy serve not healthy after {timeout:g}s:\n{log_tail(log_path)}")


# The serving process under cProfile timed by its own CPU time, not the wall clock: on a shared
# 2-core host a wall-clock profile charges every preemption to the call it interrupted (a pipe
# write "took" 1.2 ms). ``-c`` leaves ``sys.argv[1:]`` as the command's arguments.
PROFILED: Final = ("import cProfile, sys, time; from imgproxy.cli import main; "
                   "profile = cProfile.Profile(time.process_time); "
                   "code = profile.runcall(main, sys.argv[1:]); profile.dump_stats({path!r}); sys.exit(code)")


@contextmanager
def proxy(workdir: Path, endpoint: str, signing_key: str, profile: Path | None = None, *,
          extra_toml: str = "", name: str = "imgproxy", workers: int = 1,
          metrics_port: int | None = None, server: Sequence[str] = (),
          ca_bundle: Path | None = None,
          auth: str | None = None) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``imgproxy serve`` on a free port; ``name`` names its config and log files in workdir;
    ``workers``, ``metrics_port``, ``server``, ``ca_bundle`` and ``auth`` as in ``proxy_toml``."""
    port = free_port()
    config_path = workdir / f"{name}.toml"
    config_path.write_text(proxy_toml(endpoint, port, signing_key, extra_toml, workers=workers,
                                      metrics_port=metrics_port, server=server, ca_bundle=ca_bundle,
                                      auth=auth))
    log_path = workdir / f"{name}.log"
    argv = [sys.executable, "-m", "imgproxy", "serve", "--config", str(config_path)]
    if profile is not None:  # the stats are written when SIGTERM makes serve return
        argv[1:3] = ["-c", PROFILED.format(path=str(profile.resolve()))]
    with running(argv, log_path, stdin=None) as proc:
        wait_healthy(proc, port, log_path)
        yield proc, f"http://{HOST}:{port}"


@contextmanager
def spawned(target: Callable[..., None], *args: Any, name: str | None = None, stop: object = None,
            join_timeout: float = 10.0) -> Iterator[tuple[Connection, int]]:
    """``target(conn, *args)`` in a child process started by spawn (a fresh interpreter: none of
    this one's threads, sockets or event loop), ``conn`` its end of a pipe: yields our end and its
    pid. On exit ``stop`` is sent (the child's cue to end), then it has ``join_timeout`` s before
    it is killed."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=target, args=(theirs, *args), daemon=True, name=name)
    process.start()
    theirs.close()
    try:
        yield ours, process.pid or 0
    finally:
        with contextlib.suppress(OSError):
            ours.send(stop)
        ours.close()
        process.join(timeout=join_timeout)
        if process.is_alive():
            process.kill()
            process.join()


def receive(conn: Connection, on_eof: object = None) -> object:
    """In a ``spawned`` child: the next command from the bench process; ``on_eof`` if it has gone."""
    try:
        return conn.recv()
    except EOFError:
        return on_eof


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), from /proc/*/stat."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return sorted(found)


# --- CPU and memory from /proc ---------------------------------------------------------------

def proc_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def _ticks_or_none(pid: int) -> int | None:
    try:
        return proc_ticks(pid)
    except (OSError, IndexError, ValueError):
        return None  # the process has gone


def ticks_of(pids: Iterable[int]) -> dict[int, int]:
    """CPU ticks (``proc_ticks``) of each process still running."""
    return {pid: ticks for pid in pids if (ticks := _ticks_or_none(pid)) is not None}


def system_ticks() -> tuple[int, int]:
    """(busy, steal) ticks over all CPUs: busy excludes idle, iowait and steal."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return sum(values) - values[3] - values[4] - values[7], values[7]


def status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {name}")


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, Pss) of a process in KiB; None if it has gone."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        pss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return rss, pss


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, own processes); False if not possible."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


ROLES: Final = ("supervisor", "http workers", "image pools")


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    processes: Mapping[int, tuple[str, int, int]]  # pid -> (role, VmRSS KiB, Pss KiB)

    @property
    def rss_kib(self) -> int:
        return sum(rss for _, rss, _ in self.processes.values())

    @property
    def pss_kib(self) -> int:
        return sum(pss for _, _, pss in self.processes.values())

    def by_role(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for role in ROLES:
            members = [(rss, pss) for r, rss, pss in self.processes.values() if r == role]
            out[role] = {"processes": len(members), "rss_mib": round(sum(m[0] for m in members) / 1024, 1),
                         "pss_mib": round(sum(m[1] for m in members) / 1024, 1)}
        return out


class TreeSampler:
    """VmRSS and PSS of the server's whole process tree every ``interval`` s, in a thread. Roles
    assume the supervisor's layout (its children are HTTP workers); with one serving process
    (``server.workers = 1``) its direct children (the forkserver, the resource tracker) count as
    "http workers"."""

    def __init__(self, root: int, interval: float = 1.0) -> None:
        self.root = root
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def take(self) -> Sample:
        processes: dict[int, tuple[str, int, int]] = {}
        for pid in (self.root, *descendants(self.root)):
            role = ("supervisor" if pid == self.root
                    else "http workers" if parent_of(pid) == self.root else "image pools")
            memory = memory_kib(pid)
            if memory is not None:
                processes[pid] = (role, *memory)
        return Sample(time.monotonic(), processes)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.take())
            self._stop.wait(self.interval)

    def latest(self) -> Sample:
        return self.samples[-1] if self.samples else self.take()

    def at_or_after(self, moment: float) -> Sample:
        return next((s for s in self.samples if s.at >= moment), self.latest())

    def before(self, moment: float) -> Sample:
        return next((s for s in reversed(self.samples) if s.at < moment), self.samples[0])

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass
class CpuMeter:
    """CPU used between start() and stop(), in % of one core: each named process (or group of
    processes, summed), 'others' (other tenants, kernel work such as loopback softirq), 'idle'
    (what no one used). A process that exits in between is counted up to its last reading (at
    start(), or a later read()); one started in between is counted once add()ed."""

    pids: Mapping[str, int | Collection[int]]
    _start: dict[int, int] = field(default_factory=dict)
    _last: dict[int, int] = field(default_factory=dict)
    _added: dict[str, set[int]] = field(default_factory=dict)
    _sys: tuple[int, int] = (0, 0)
    _wall: float = 0.0

    def _groups(self) -> dict[str, set[int]]:
        groups = {name: {pid} if isinstance(pid, int) else set(pid) for name, pid in self.pids.items()}
        for name, added in self._added.items():
            groups.setdefault(name, set()).update(added)
        return groups

    def start(self) -> None:
        self._added = {}
        self._start = ticks_of(pid for group in self._groups().values() for pid in group)
        self._last = dict(self._start)
        self._sys = system_ticks()
        self._wall = time.monotonic()

    def read(self) -> None:
        """Take a reading now: a process about to be killed is counted up to here."""
        for group in self._groups().values():
            for pid in group:
                if pid in self._start and (ticks := _ticks_or_none(pid)) is not None:
                    self._last[pid] = ticks

    def add(self, name: str, pid: int) -> None:
        """Count a process started since start() (all of its CPU time) in ``name``'s group."""
        self._added.setdefault(name, set()).add(pid)
        self._start.setdefault(pid, 0)

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._wall, 1e-6)
        used: dict[str, int] = {}
        for name, group in self._groups().items():
            used[name] = 0
            for pid in group:
                now = _ticks_or_none(pid)
                if now is None:
                    now = self._last.get(pid)
                if now is not None and pid in self._start:
                    used[name] += now - self._start[pid]
        busy_now, steal_now = system_ticks()
        busy = busy_now - self._sys[0]
        used["others"] = max(0, busy - sum(used.values()))
        used["steal"] = steal_now - self._sys[1]
        pct = {name: round(100.0 * ticks / CLK_TCK / wall, 1) for name, ticks in used.items()}
        capacity = 100.0 * (os.cpu_count() or 1)
        pct["idle"] = round(max(0.0, capacity - 100.0 * busy / CLK_TCK / wall - pct["steal"]), 1)
        return pct


# --- S3 --------------------------------------------------------------------------------------

def s3_client(endpoint: str, ca_bundle: Path | None = None) -> Any:
    """boto3 on the bench's S3 (``ca_bundle``: the CA of an https endpoint)."""
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        verify=str(ca_bundle) if ca_bundle is not None else None,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
    )


# --- load generation -------------------------------------------------------------------------

@dataclass
class Phase:
    side: str
    round: int
    wall: float = 0.0
    requests: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    tally: Counter[str] = field(default_factory=Counter)  # values of one response header

    @property
    def rps(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    def cpu_ms_per_request(self) -> dict[str, float]:
        """CPU time each of our processes spent per completed request (contention-robust)."""
        if not self.requests:
            return {}
        return {name: round(10.0 * pct * self.wall / self.requests, 2)
                for name, pct in self.cpu.items() if name not in NOT_CPU}

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile of request latency, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# A response's verdict: "" when it is right, else what is wrong with it.
Check = Callable[[aiohttp.ClientResponse, bytes], str]


def expect_size(size: int) -> Check:
    def check(response: aiohttp.ClientResponse, body: bytes) -> str:
        if response.status != 200:
            return f"HTTP {response.status}"
        return "" if len(body) == size else f"{len(body)} bytes instead of {size}"
    return check


def session_for(concurrency: int, timeout: float = 60.0,
                ssl_context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """Keep-alive connections (at most ``concurrency``); ``timeout``: per request, in seconds;
    ``ssl_context``: what https servers are checked against (default: the system's CAs)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency,
                                       ssl=ssl_context if ssl_context is not None else True),
        timeout=aiohttp.ClientTimeout(total=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
    )


# One measured exchange on a session (a request, or a request and the redirect it answers): what
# is wrong with it ("" when it is right) and the label to tally for it (None: no tally).
Exchange = Callable[[aiohttp.ClientSession], Awaitable[tuple[str, str | None]]]


def get_checked(url: str, check: Check, tally_header: str | None = None) -> Exchange:
    """GET ``url``, read the whole body, ``check`` it; the tally is ``tally_header``'s value."""
    async def exchange(session: aiohttp.ClientSession) -> tuple[str, str | None]:
        async with session.get(url, allow_redirects=False) as response:  # a 3xx is a failure
            body = await response.read()
            problem = check(response, body)
            return problem, None if tally_header is None else response.headers.get(tally_header, "-")
    return exchange


async def fetch_until(session: aiohttp.ClientSession, exchange: Exchange, end: float, phase: Phase) -> None:
    """One connection's loop: run the exchange, record it; until the phase's end (an exchange
    under way is finished)."""
    while (started := time.perf_counter()) < end and phase.errors < MAX_ERRORS:
        try:
            problem, label = await exchange(session)
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem, label = f"{exc.__class__.__name__}: {exc}", None
        if problem:
            phase.errors += 1
            phase.first_error = phase.first_error or problem
            continue
        phase.latencies.append(time.perf_counter() - started)
        phase.requests += 1
        if label is not None:
            phase.tally[label] += 1


async def run_exchanges(session: aiohttp.ClientSession, phase: Phase, exchanges: Sequence[Exchange],
                        seconds: float, concurrency: int, meter: CpuMeter) -> Phase:
    """``concurrency`` connections for ``seconds``; connection i runs exchanges[i % len(exchanges)]."""
    meter.start()
    started = time.perf_counter()
    end = started + seconds
    await asyncio.gather(*(fetch_until(session, exchanges[i % len(exchanges)], end, phase)
                           for i in range(concurrency)))
    phase.wall = time.perf_counter() - started
    phase.cpu = meter.stop()
    return phase


async def run_phase(session: aiohttp.ClientSession, phase: Phase, urls: Sequence[str], seconds: float,
                    concurrency: int, meter: CpuMeter, check: Check,
                    tally_header: str | None = None) -> Phase:
    """``concurrency`` connections for ``seconds``; connection i GETs urls[i % len(urls)]."""
    return await run_exchanges(session, phase, [get_checked(url, check, tally_header) for url in urls],
                               seconds, concurrency, meter)


def merged(phases: list[Phase], side: str) -> Phase:
    """All of one side's phases as one: counts summed, CPU averaged over their wall time."""
    total = Phase(side, 0)
    for phase in (p for p in phases if p.side == side):
        total.wall += phase.wall
        total.requests += phase.requests
        total.errors += phase.errors
        total.first_error = total.first_error or phase.first_error
        total.latencies += phase.latencies
        total.tally += phase.tally
        for name, pct in phase.cpu.items():
            total.cpu[name] = total.cpu.get(name, 0.0) + pct * phase.wall
    total.cpu = {name: round(v / total.wall, 1) for name, v in total.cpu.items()} if total.wall else {}
    return total


# --- main ------------------------------------------------------------------------------------

def keep_logs(workdir: Path, target: Path) -> None:
    """Copy the logs and configs a run left in ``workdir`` to ``target`` (made if missing)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in workdir.iterdir():
        if path.suffix in (".log", ".toml"):
            shutil.copy2(path, target / path.name)


def code_state() -> str:
    """What was measured: HEAD, "+dirty" if imgproxy/ differs from it, and a digest of its source
    (the package may change between runs while someone works on it)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted((root / "imgproxy").rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "imgproxy"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = "unknown", ""
    return f"{head}{'+dirty' if dirty else ''} (imgproxy/*.py sha256 {digest.hexdigest()[:12]})"


def run_main(bench: Callable[[argparse.Namespace, Path], dict[str, Any]],
             failures: Callable[[dict[str, Any]], list[str]], args: argparse.Namespace) -> int:
    """Run ``bench`` in a temporary directory; print its JSON line; 1 on failure, 130 if stopped."""

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        with tempfile.TemporaryDirectory(prefix="imgproxy-bench-") as tmp:
            result = bench(args, Path(tmp))
    except BenchError as exc:
        note(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        note("interrupted; subprocesses stopped")
        return 130
    problems = failures(result)
    result["ok"] = not problems
    for problem in problems:
        note(f"error: {problem}")
    print(json.dumps(result, separators=(",", ":")))
    return 1 if problems else 0


def add_load_options(parser: argparse.ArgumentParser, *, warmup: float, rounds_help: str) -> None:
    """The options every benchmark shares: phase length, warm-up, rounds and concurrency."""
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase (10)")
    parser.add_argument("--warmup", type=float, default=warmup, help=f"warm-up seconds per side ({warmup:g})")
    parser.add_argument("--rounds", type=int, default=2, help=f"{rounds_help}, interleaved (2)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent connections (16)")
