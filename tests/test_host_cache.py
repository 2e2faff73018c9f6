"""One host, one cache (issue 12, point 5): with ``imgproxy serve --workers 2`` the variant cache,
the metadata cache, the hot counters and the render lock are the host's, whichever worker the
kernel gives a connection to. Real processes, real moto; every request on a new connection.

The directory's own rules (entry format, sweep, eviction, locks) have unit tests in
``tests/hostcache/``; here they are seen through the running server.
"""

from __future__ import annotations

import fcntl
import http.client
import io
import json
import os
import re
import stat
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from multidict import CIMultiDict
from PIL import Image
from processes import HTTP_TIMEOUT, PHOTO, PHOTO_KEY, Reply, http_get, run, wait_for, write_config
from support import Cluster, ClusterFactory, config_data, dir_of_another_user

from imgproxy.hostcache import entries

WIDTHS = range(10, 50)  # 40 distinct thumbnails of one photo


def fetch(url: str, method: str = "GET") -> Reply:
    """One request on a connection of its own (redirects not followed)."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname == "127.0.0.1"
    connection = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=HTTP_TIMEOUT)
    try:
        connection.request(method, f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        return Reply(response.status, CIMultiDict(response.getheaders()), response.read())
    finally:
        connection.close()


def renders(cluster: Cluster) -> float:
    """``imgproxy_transform_renders_total`` summed over the workers (one scrape answers for all)."""
    wait_for(lambda: "metrics on" in cluster.process.stderr, "the metrics address logged")
    match = re.search(r"metrics on (http://\S+/metrics)", cluster.process.stderr)
    assert match is not None
    text = http_get(match.group(1)).body.decode()
    found = re.search(r"^imgproxy_transform_renders_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def decodes(body: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(body)) as picture:
        picture.load()
        return picture.size


def test_a_second_view_on_a_new_connection_is_a_hit_and_renders_once_per_host(
        start_cluster: ClusterFactory, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    cluster = start_cluster(workers=2, metrics={"enabled": True, "port": 0})
    urls = [cluster.url(PHOTO_KEY, w=str(w)) for w in WIDTHS]
    first = [fetch(url) for url in urls]
    second = [fetch(url) for url in urls]
    assert [r.headers["X-Cache"] for r in first] == ["MISS"] * len(urls)
    assert [r.headers["X-Cache"] for r in second] == ["HIT"] * len(urls)
    assert [r.body for r in second] == [r.body for r in first]
    assert [r.headers["ETag"] for r in second] == [r.headers["ETag"] for r in first]
    assert renders(cluster) == len(urls)


def test_concurrent_requests_on_both_workers_render_once(
        start_cluster: ClusterFactory, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    cluster = start_cluster(workers=2, metrics={"enabled": True, "port": 0})
    replies: list[Reply] = []
    lock = threading.Lock()
    for width in (21, 22, 23):
        url = cluster.url(PHOTO_KEY, w=str(width))
        gate = threading.Barrier(12)

        def one(url: str = url, gate: threading.Barrier = gate) -> None:
            gate.wait()
            reply = fetch(url)
            with lock:
                replies.append(reply)

        threads = [threading.Thread(target=one) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [r.status for r in replies] == [200] * 36
    assert sorted(r.headers["X-Cache"] for r in replies).count("MISS") == 3
    assert renders(cluster) == 3


def test_a_hot_object_is_redirected_on_the_request_after_hot_requests_whichever_worker(
        start_cluster: ClusterFactory, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    cluster = start_cluster(workers=2, source={"delivery": {"mode": "auto", "hot_requests": 3,
                                                            "hot_window": "1h"}})
    url = cluster.url(PHOTO_KEY)
    answers = [fetch(url) for _ in range(5)]
    assert [(a.status, a.headers["X-Delivery"]) for a in answers] == [
        (200, "stream"), (200, "stream"), (200, "stream"), (302, "redirect"), (302, "redirect")]


def test_damaged_entries_temporary_files_and_stale_locks_are_never_served_and_are_cleaned(
        start_cluster: ClusterFactory, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    root = tmp_path / "host-cache"
    cluster = start_cluster(workers=2, cache={"dir": str(root)})
    urls = [cluster.url(PHOTO_KEY, w=str(w)) for w in (30, 31, 32)]
    good = [fetch(url).body for url in urls]
    assert cluster.process.stop() == 0
    files = sorted((root / "variants").iterdir(), key=lambda p: p.stat().st_mtime)
    assert len(files) == 3
    truncated, flipped, foreign = files
    truncated.write_bytes(truncated.read_bytes()[:-7])  # a crash mid-write (size != header's)
    data = bytearray(flipped.read_bytes())
    data[-3] ^= 0x55  # the same size, another body: only the checksum tells
    flipped.write_bytes(bytes(data))
    header, start_at = entries.read_header(foreign.read_bytes()) or ({}, 0)
    key_fields = header["key"]
    assert isinstance(key_fields, list)
    header["key"] = [*key_fields[:-1], "webp"]  # another variant's header, this one's name
    text = json.dumps(header).encode()
    body = foreign.read_bytes()[start_at:]
    foreign.write_bytes(entries.MAGIC + entries.LENGTH.pack(len(text)) + text + body)
    temp = root / "variants" / f"{files[0].name}.999.0000.tmp"
    temp.write_bytes(b"half an entry")
    stale = root / "locks" / files[1].name[:3]
    stale.write_bytes(b"")
    root.chmod(0o755)

    again = start_cluster(workers=2, cache={"dir": str(root)})
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert f"cache.dir {root} had mode 755 (readable by others); changed to 700" in again.process.stderr
    assert not temp.exists()
    assert not truncated.exists()
    assert not stale.exists()
    replies = [fetch(again.url(PHOTO_KEY, w=str(w))) for w in (30, 31, 32)]
    assert [r.headers["X-Cache"] for r in replies] == ["MISS"] * 3
    assert [r.body for r in replies] == good
    assert [fetch(again.url(PHOTO_KEY, w=str(w))).headers["X-Cache"] for w in (30, 31, 32)] == ["HIT"] * 3


def test_a_waiter_for_another_process_s_render_gives_up_after_the_transform_timeout(
        start_cluster: ClusterFactory, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    root = tmp_path / "host-cache"
    cluster = start_cluster(workers=2, cache={"dir": str(root)}, transform={"prestart_workers": False,
                                                                           "timeout": "1s"})
    url = cluster.url(PHOTO_KEY, w="40")
    assert fetch(url).headers["X-Cache"] == "MISS"
    (entry,) = (root / "variants").iterdir()
    entry.unlink()
    # A render in progress elsewhere on the host that never ends: this variant's lock, held.
    fd = os.open(root / "locks" / entry.name[:3], os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        reply = fetch(url)
        waited = time.monotonic() - started
    finally:
        os.close(fd)
    assert reply.status == 200
    assert reply.headers["X-Cache"] == "MISS"
    assert decodes(reply.body)[0] == 40
    assert 0.9 <= waited < 5


def test_a_cache_dir_owned_by_another_user_stops_start_up_with_one_line(tmp_path: Path) -> None:
    root = dir_of_another_user(tmp_path)
    data = config_data("http://127.0.0.1:9", "some-bucket")
    data["cache"] = {"dir": str(root)}
    result = run("serve", "--config", str(write_config(tmp_path, data)), "--workers", "2", "--port", "0")
    assert result.returncode == 1
    assert f"cache.dir {root}: owned by uid 65534, not this user" in result.stderr


def test_the_byte_bound_holds_for_the_host_whichever_workers_write(
        start_cluster: ClusterFactory, s3: Any, bucket: str, tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    root, bound = tmp_path / "host-cache", 8 * 1024  # room for about 16 of the 40 (450 B each)
    cluster = start_cluster(workers=2, cache={"dir": str(root), "variant_bytes": bound})
    replies = [fetch(cluster.url(PHOTO_KEY, w=str(w))) for w in WIDTHS]
    assert [r.status for r in replies] == [200] * len(replies)
    def on_disk() -> int:
        return sum(p.stat().st_size for p in (root / "variants").iterdir())

    wait_for(lambda: on_disk() <= bound, "the last eviction (a thread) done", timeout=5)
    assert on_disk() > 0
    assert fetch(cluster.url(PHOTO_KEY, w=str(WIDTHS[-1]))).headers["X-Cache"] == "HIT"  # the newest stay
    assert fetch(cluster.url(PHOTO_KEY, w=str(WIDTHS[0]))).headers["X-Cache"] == "MISS"  # the oldest went
