"""A throwaway PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` binaries,
``initdb`` in a fresh temporary directory, TCP on a free loopback port only (no Unix socket),
password auth, stopped with ``pg_ctl stop`` (its PID killed if that fails) and removed at the end.

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` user (which
the package creates), or ``nobody`` without it; the directory is made theirs. ``psql`` runs as
whoever calls (it only needs the port and the password). Used by tests/signers/ and
bench/bench_sql_signer.py; it imports no pytest.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

SUPERUSER: Final = "postgres"
DATABASE: Final = "imgproxy_test"
TIMEOUT: Final = 60.0
# A default collation that is not code point order (ICU's root locale sorts "a" before "Z"), so a
# query that forgets COLLATE "C" sorts differently here, as it would in most real databases.
LOCALE: Final = ("--locale=C.UTF-8", "--locale-provider=icu", "--icu-locale=und")
# Nothing here must survive a crash, so nothing is flushed to disk.
SETTINGS: Final = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "20",
    "shared_buffers": "'32MB'",
}


class PgError(Exception):
    """The server could not be set up, started or stopped (not: a query failed)."""


def bin_dir() -> Path:
    """The newest installed server's binaries (``/usr/lib/postgresql/<major>/bin``)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise PgError("no PostgreSQL server under /usr/lib/postgresql (apt-get install postgresql)")
    return found[-1].parent


def server_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: this user, unless this is root (initdb refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PgError("running as root, and neither a postgres nor a nobody user exists")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgCluster:
    """A running server: ``psql(sql)`` runs a script as the superuser on ``DATABASE``."""

    directory: Path
    port: int
    password: str
    bin: Path
    user: pwd.struct_passwd | None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _as_server_user(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def run_server_tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=TIMEOUT, check=False, cwd=self.directory, env=env,
                              **self._as_server_user())

    def client(self, database: str = DATABASE) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of a psql reading SQL from stdin (stopping at the first error),
        printing unaligned, tuples-only output: one line per row, fields separated by ``|``."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGPASSWORD": self.password,
               "PGCONNECT_TIMEOUT": "10", "LC_ALL": "C.UTF-8", "PGCLIENTENCODING": "UTF8"}
        return [str(self.bin / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-f", "-"], env

    def psql(self, sql: str, *, database: str = DATABASE,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the script ``sql`` in one psql (``client``); a failure raises unless ``check`` is off."""
        argv, env = self.client(database)
        result = subprocess.run(argv, input=sql, capture_output=True, text=True, encoding="utf-8",
                                timeout=TIMEOUT, check=False, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def rows(self, sql: str) -> list[str]:
        return self.psql(sql).stdout.splitlines()

    def start(self) -> None:
        settings = {**SETTINGS, "port": str(self.port)}
        options = " ".join(f"-c {name}={value}" for name, value in settings.items())
        log = str(self.directory / "server.log")
        started = self.run_server_tool("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w",
                                       "-t", str(int(TIMEOUT)), "start")
        if started.returncode != 0:
            log = (self.directory / "server.log").read_text(errors="replace")[-2000:]
            raise PgError(f"pg_ctl start failed: {started.stderr.strip()}\n{log}")

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; if that fails, SIGKILL the postmaster named in postmaster.pid."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        stopped = self.run_server_tool("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        if stopped.returncode != 0 and pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    """A started server with database ``DATABASE`` (UTF8, ICU root collation); gone afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="imgproxy-pg-"))
    user = server_user()
    cluster = PgCluster(directory, free_port(), secrets.token_urlsafe(24), bin_dir(), user)
    try:
        if user is not None:
            os.chown(directory, user.pw_uid, user.pw_gid)
        password_file = directory / "password"
        password_file.write_text(cluster.password + "\n")
        if user is not None:
            os.chown(password_file, user.pw_uid, user.pw_gid)
        password_file.chmod(0o600)
        made = cluster.run_server_tool("initdb", "-D", str(cluster.data), "-U", SUPERUSER, "--encoding=UTF8",
                                       *LOCALE, "--auth=scram-sha-256", f"--pwfile={password_file}")
        password_file.unlink()
        if made.returncode != 0:
            raise PgError(f"initdb failed: {made.stderr.strip()}")
        cluster.start()
        try:
            cluster.psql(f"CREATE DATABASE {DATABASE}", database="postgres")
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
