"""``imgproxy serve --workers 2``: several processes on one port, supervised, stopped gracefully.

Real processes, real sockets, real moto. Which worker holds a connection is read from /proc
(``owners.py``), never from a response header.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from owners import open_healthy, owner_of, server_side_inode, socket_inodes
from PIL import Image
from processes import (
    CLUSTER_GRACE,
    HTTP_TIMEOUT,
    children,
    free_port,
    http_get,
    reap_group,
    run,
    wait_for,
    write_config,
)
from support import Cluster, config_data

from imgproxy.process.sockets import listen_on, reserve_addresses

GRACE = CLUSTER_GRACE  # server.shutdown_timeout in these tests
BIG_KEY = "archive/big.bin"
BIG_SIZE = 64 * 1024 * 1024


def wait_exit(cluster: Cluster, timeout: float) -> int:
    try:
        code = cluster.process.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {timeout}s after SIGTERM\n{cluster.process.describe()}")
    reap_group(cluster.pid, "imgproxy serve --workers")
    return code


def noisy_jpeg(width: int, height: int) -> bytes:
    rng = random.Random(7)
    picture = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# --- tests -------------------------------------------------------------------------------------


def test_two_workers_each_accept_connections_on_the_one_port(start_cluster: Any) -> None:
    cluster = start_cluster(workers=2)
    workers = children(cluster.pid)
    assert len(workers) == 2
    owners: set[int | None] = set()
    connections: list[http.client.HTTPConnection] = []
    try:
        for _ in range(10):  # which worker accepts is the kernel's choice: open a few in bursts
            burst = [open_healthy(cluster) for _ in range(8)]
            connections += burst
            owners |= {owner_of(connection, cluster) for connection in burst}
            if owners >= workers:
                break
    finally:
        for connection in connections:
            connection.close()
    assert owners == workers
    assert cluster.process.stop() == 0


def test_a_burst_of_connections_is_shared_by_the_workers(start_cluster: Any) -> None:
    # 32 connections opened at the same instant (a load balancer's pool filling up). On one
    # shared socket the first worker to wake accepted them all (asyncio accepts in a loop) and
    # keep-alive pinned them there; the kernel spreads them over per-worker SO_REUSEPORT
    # sockets by a hash (binomial: at least 6 of 32 each fails with odds of about 1 in 10,000).
    cluster = start_cluster(workers=2)
    workers = children(cluster.pid)
    sockets = []
    try:
        for _ in range(32):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", cluster.port))
            sockets.append(sock)
        time.sleep(0.5)  # accepted by now; nothing has been sent yet
        owners: list[int | None] = []
        for sock in sockets:
            inode = server_side_inode(cluster.port, sock.getsockname()[1])
            owners.append(next((pid for pid in workers if inode in socket_inodes(pid)), None))
    finally:
        for sock in sockets:
            sock.close()
    counts = {pid: owners.count(pid) for pid in workers}
    assert None not in owners, owners
    assert min(counts.values()) >= 6, counts
    assert cluster.process.stop() == 0


def test_a_killed_worker_is_restarted_and_the_restart_logged(start_cluster: Any) -> None:
    cluster = start_cluster(workers=2)
    victim = min(children(cluster.pid))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(cluster.pid)) == 2 and victim not in children(cluster.pid),
             "a replacement worker")
    wait_for(lambda: re.search(rf"worker \d \(pid {victim}\) died with signal SIGKILL; restarting",
                               cluster.process.stderr) is not None, "the restart logged")
    for _ in range(6):
        assert http_get(f"http://127.0.0.1:{cluster.port}/healthz").status == 200
    assert cluster.process.stop() == 0


def test_sigterm_mid_download_lets_the_stream_finish_and_exits_0(start_cluster: Any, s3: Any,
                                                                bucket: str, tmp_path: Path) -> None:
    body = random.Random(1).randbytes(BIG_SIZE)
    s3.put_object(Bucket=bucket, Key=BIG_KEY, Body=body, ContentType="application/octet-stream")
    cluster = start_cluster(workers=2)
    url = cluster.url(BIG_KEY)
    connection = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=HTTP_TIMEOUT)
    connection.request("GET", url.removeprefix(f"http://127.0.0.1:{cluster.port}"))
    response = connection.getresponse()
    assert response.status == 200
    digest = hashlib.sha256(received := response.read(1024 * 1024))
    total = len(received)
    cluster.process.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    while chunk := response.read(1024 * 1024):  # slowly: about 2 s for the rest
        digest.update(chunk)
        total += len(chunk)
        time.sleep(0.03)
    connection.close()
    assert time.monotonic() - signalled > 1.0  # the signal really came mid-stream
    assert total == BIG_SIZE
    assert digest.hexdigest() == hashlib.sha256(body).hexdigest()
    assert wait_exit(cluster, GRACE) == 0
    assert "all workers stopped" in cluster.process.stderr
    assert not list(tmp_path.glob("imgproxy-metrics-*"))  # the multi-process metrics directory


def test_sigterm_during_a_burst_of_transforms_completes_every_request(start_cluster: Any, s3: Any,
                                                                      bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="big.jpg", Body=noisy_jpeg(2400, 1600), ContentType="image/jpeg")
    cluster = start_cluster(workers=2)
    prefix = f"http://127.0.0.1:{cluster.port}"
    connections = [open_healthy(cluster) for _ in range(10)]
    statuses: list[int] = []
    sent = threading.Barrier(len(connections) + 1)

    def transform(connection: http.client.HTTPConnection, width: int) -> None:
        try:
            connection.request("GET", cluster.url("big.jpg", w=str(width)).removeprefix(prefix))
            sent.wait()
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
        finally:
            connection.close()

    threads = [threading.Thread(target=transform, args=(connection, 200 + 10 * i))
               for i, connection in enumerate(connections)]
    for thread in threads:
        thread.start()
    sent.wait()
    time.sleep(0.3)  # every request read by its worker (an unread one is an idle connection)
    cluster.process.popen.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(GRACE)
    assert statuses == [200] * len(connections)
    assert wait_exit(cluster, GRACE) == 0


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="this host has no IPv6 loopback")


@needs_ipv6
def test_workers_listen_on_every_address_the_host_names(start_cluster: Any) -> None:
    # "" is every address, as for a single process (aiohttp binds each): 0.0.0.0 and ::.
    cluster = start_cluster(workers=2, host="")
    for base_url in (f"http://127.0.0.1:{cluster.port}", f"http://[::1]:{cluster.port}"):
        assert http_get(base_url + "/healthz").status == 200, base_url
    assert re.search(rf"listening on http://0\.0\.0\.0:{cluster.port}, http://\[::\]:{cluster.port} "
                     r"with 2 workers", cluster.process.stderr)
    assert cluster.process.stop() == 0


@needs_ipv6
def test_the_parent_reserves_every_address_on_one_port_for_the_workers() -> None:
    reserved = reserve_addresses("", 0)
    listening: list[socket.socket] = []
    try:
        assert [sock.family for sock in reserved] == [socket.AF_INET, socket.AF_INET6]
        port = reserved[0].getsockname()[1]
        assert {sock.getsockname()[1] for sock in reserved} == {port}
        with socket.socket() as probe:  # reserved, not listening: nobody answers yet
            assert probe.connect_ex(("127.0.0.1", port)) != 0
        listening = listen_on(reserved) + listen_on(reserved)  # two workers' sockets
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family) as client:
                client.connect((address, port))
        with socket.socket() as squatter, pytest.raises(OSError, match="in use"):  # not for others
            squatter.bind(("127.0.0.1", port))
    finally:
        for sock in reserved + listening:
            sock.close()


def test_a_negative_worker_count_is_a_usage_error(tmp_path: Path, moto_endpoint: str,
                                                  bucket: str) -> None:
    path = write_config(tmp_path, config_data(moto_endpoint, bucket))
    result = run("serve", "--config", str(path), "--workers", "-1")
    assert result.returncode == 2
    assert "--workers: expected 0 (one per CPU) to 256" in result.stderr


def test_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        data = config_data(moto_endpoint, bucket)
        data["server"].update(port=taken.getsockname()[1], workers=2)
        path = write_config(tmp_path, data)
        result = run("serve", "--config", str(path))
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_a_metrics_port_in_use_stops_the_server_with_one_line_and_exit_1(
        tmp_path: Path, moto_endpoint: str, bucket: str, workers: int) -> None:
    # Start-up fails after the S3 clients and the pool started: they are closed again, no
    # traceback, and a supervisor gives up instead of restarting workers that cannot start.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        data = config_data(moto_endpoint, bucket)
        data["server"].update(port=free_port(), workers=workers)
        metrics_port = taken.getsockname()[1]
        data["metrics"] = {"host": "127.0.0.1", "port": metrics_port}
        path = write_config(tmp_path, data)
        started = time.monotonic()
        result = run("serve", "--config", str(path))
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 20
    assert f"cannot listen on 127.0.0.1:{metrics_port} for metrics: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    if workers > 1:
        assert "could not start; stopping every worker" in result.stderr
        assert "restarting it" not in result.stderr
