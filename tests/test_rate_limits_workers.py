"""Rate limits hold per host (issue 13, point 6): with ``imgproxy serve --workers 2`` both
workers charge the same buckets (the host table under ``cache.dir``), so the total allowed is
the limit, not twice it. Real processes, real moto, real time; which worker holds a connection
is read from /proc, never from a response.
"""

from __future__ import annotations

import http.client
import time
import urllib.parse
from typing import Any

from owners import server_side_inode, socket_inodes
from processes import HTTP_TIMEOUT, PHOTO, children
from support import TOKEN, Cluster, ClusterFactory

KEYS = [f"team/{n}.png" for n in range(8)]


def connections_on_each_worker(cluster: Cluster) -> tuple[http.client.HTTPConnection, ...]:
    """One keep-alive connection held by each worker (the kernel chooses: open a few in bursts)."""
    workers = children(cluster.pid)
    held: dict[int, http.client.HTTPConnection] = {}
    for _ in range(10):
        for _ in range(8):
            connection = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=HTTP_TIMEOUT)
            assert send(connection, "/healthz")[0] == 200
            assert connection.sock is not None
            inode = server_side_inode(cluster.port, connection.sock.getsockname()[1])
            owner = next(pid for pid in workers if inode in socket_inodes(pid))
            if owner in held:
                connection.close()
            else:
                held[owner] = connection
        if set(held) == workers:
            break
    assert set(held) == workers
    return tuple(held.values())


def send(connection: http.client.HTTPConnection, url: str, **headers: str) -> tuple[int, str | None]:
    """One request on ``connection``: its status and Retry-After."""
    parts = urllib.parse.urlsplit(url)
    connection.request("GET", f"{parts.path}?{parts.query}" if parts.query else parts.path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status, response.getheader("Retry-After")


def test_a_limit_holds_for_the_host_whichever_worker_answers(
        start_cluster: ClusterFactory, s3: Any, bucket: str) -> None:
    for key in KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=PHOTO, ContentType="image/png")
    cluster = start_cluster(workers=2, limits={"originals": {"per_key": "4/h"}})
    first, second = connections_on_each_worker(cluster)
    # Five URLs (five signatures) on the first worker spend the key's 4; its next three on the
    # other worker are refused: one bucket for the host (per process, they would pass).
    on_first = [send(first, cluster.url(key))[0] for key in KEYS[:5]]
    on_second = [send(second, cluster.url(key))[0] for key in KEYS[5:]]
    assert on_first == [200, 200, 200, 200, 429]
    assert on_second == [429, 429, 429]
    first.close()
    second.close()


def test_a_bucket_refills_for_the_host_with_real_time(
        start_cluster: ClusterFactory, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key=KEYS[0], Body=PHOTO, ContentType="image/png")
    cluster = start_cluster(workers=2, limits={"originals": {"per_token": "2/5s"}})
    first, second = connections_on_each_worker(cluster)
    path, bearer = f"/img/photos/{KEYS[0]}", {"Authorization": f"Bearer {TOKEN}"}
    assert [send(c, path, **bearer)[0] for c in (first, second)] == [200, 200]
    status, retry_after = send(first, path, **bearer)
    assert status == 429
    assert retry_after is not None
    assert 1 <= int(retry_after) <= 3  # one back every 2.5 s, less what the requests took
    time.sleep(2.6)  # a spacing and a little: whatever the first two took, one is back
    assert send(second, path, **bearer)[0] == 200
    first.close()
    second.close()
