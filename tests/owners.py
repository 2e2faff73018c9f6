"""Which worker of an ``imgproxy serve --workers N`` holds a connection, read from /proc (the
socket inode in the worker's fds, matched against /proc/net/tcp), never from a response header;
and asking every worker the same question on new connections until each has answered."""

from __future__ import annotations

import http.client
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from processes import HTTP_TIMEOUT, children
from support import Cluster


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if match := re.fullmatch(r"socket:\[(\d+)\]", target):
            inodes.add(int(match.group(1)))
    return inodes


def server_side_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the accepted socket whose peer is our client's port (IPv4 loopback)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if (local_port, remote_port) == (server_port, client_port):
            return int(fields[9])
    return None


def owner_of(connection: http.client.HTTPConnection, cluster: Cluster) -> int | None:
    assert connection.sock is not None
    inode = server_side_inode(cluster.port, connection.sock.getsockname()[1])
    for pid in children(cluster.pid):
        if inode in socket_inodes(pid):
            return pid
    return None


def open_healthy(cluster: Cluster) -> http.client.HTTPConnection:
    """A keep-alive connection a worker has accepted (it answered /healthz on it)."""
    connection = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=HTTP_TIMEOUT)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    assert response.status == 200
    return connection


def answer_of_a_worker(cluster: Cluster, path: str,
                       headers: Mapping[str, str] | None = None) -> tuple[int | None, int, bytes]:
    """(the worker's pid, status, body) of one GET on a new connection."""
    connection = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=HTTP_TIMEOUT)
    try:
        connection.request("GET", path, headers=dict(headers or {}))
        response = connection.getresponse()
        body = response.read()
        return owner_of(connection, cluster), response.status, body
    finally:
        connection.close()


def every_worker_answers(cluster: Cluster, path: str, status: int, *, timeout: float = 15.0,
                         headers: Mapping[str, str] | None = None) -> None:
    """GETs of ``path`` on new connections until each worker's latest answer was ``status``
    (a worker that answers otherwise has to answer ``status`` again before it counts)."""
    workers = children(cluster.pid)
    answered: set[int] = set()
    seen: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while answered != workers:
        pid, got, _ = answer_of_a_worker(cluster, path, headers)
        if pid is not None:
            seen[pid] = got
            if got == status:
                answered.add(pid)
            else:
                answered.discard(pid)
        if time.monotonic() > deadline:
            pytest.fail(f"not every worker answered {status} within {timeout}s: latest {seen}")
