"""SIGHUP reloads the config of a running ``imgproxy serve``: real processes, real moto.

With ``--workers 2`` the supervisor validates the file once and hands the config to each worker;
which worker answered is read from /proc (``owners.py``), and every check asks on new
connections until each worker has answered. With ``--workers 1`` the one process reloads itself.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import signal
import time
import tomllib
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from owners import answer_of_a_worker, every_worker_answers
from processes import (
    HTTP_TIMEOUT,
    PHOTO,
    PHOTO_KEY,
    Process,
    Server,
    children,
    free_port,
    http_get,
    launch_server,
    to_toml,
    wait_for,
)
from support import OTHER_KEY, SIGNING_KEY, TOKEN, Cluster, ClusterFactory, config_data, metric_samples

from imgproxy.auth.signing import UrlSigner, parse_query

NEW_KID = "k2"


@pytest.fixture
def photo(s3: Any, bucket: str) -> str:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    return PHOTO_KEY


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def rewrite(config_path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    change(data)
    config_path.write_text(to_toml(data), encoding="utf-8")


def reload_lines(process: Process) -> list[str]:
    return [line for line in process.stderr.splitlines() if " imgproxy.reload " in line]


def reload(process: Process) -> str:
    """SIGHUP the process (the supervisor, or the one process); its reload's log line."""
    before = len(reload_lines(process))
    process.popen.send_signal(signal.SIGHUP)
    wait_for(lambda: len(reload_lines(process)) > before, "the reload's log line")
    time.sleep(0.2)  # a second line would be a bug: let it be written if there is one
    lines = reload_lines(process)
    assert len(lines) == before + 1, lines[before:]
    return lines[-1]


def add_key(data: dict[str, Any]) -> None:
    data["auth"]["keys"][NEW_KID] = OTHER_KEY


def metrics_cluster(start_cluster: ClusterFactory, **sections: dict[str, Any]) -> tuple[Cluster, str]:
    port = free_port()
    cluster = start_cluster(workers=2, metrics={"enabled": True, "port": port}, **sections)
    return cluster, f"http://127.0.0.1:{port}/metrics"


def versions_in_force(metrics_url: str) -> dict[str, str]:
    """pid -> the config version whose imgproxy_config_info is 1 in that worker."""
    samples = metric_samples(http_get(metrics_url).body.decode())
    return {dict(labels)["pid"]: dict(labels)["version"] for (name, labels), value in samples.items()
            if name == "imgproxy_config_info" and value == 1}


def reloads_counted(metrics_url: str, result: str) -> float:
    samples = metric_samples(http_get(metrics_url).body.decode())
    return samples.get(("imgproxy_reloads_total", frozenset({("result", result)})), 0.0)


# --- keys: added, removed, rotated through a file: secret -------------------------------------

def test_a_key_added_on_reload_signs_urls_on_every_worker(start_cluster: ClusterFactory, photo: str) -> None:
    cluster = start_cluster(workers=2)
    url = path_of(UrlSigner(OTHER_KEY, NEW_KID, cluster.base_url).sign("photos", photo))
    every_worker_answers(cluster, url, 403)
    _, _, body = answer_of_a_worker(cluster, url)
    assert b'"unknown_key"' in body
    rewrite(cluster.config_path, add_key)
    line = reload(cluster.process)
    assert "INFO imgproxy.reload reload: config version" in line
    every_worker_answers(cluster, url, 200)
    every_worker_answers(cluster, path_of(cluster.url(photo)), 200)  # the old key still signs


def test_metrics_show_every_worker_on_the_new_version_after_a_reload(start_cluster: ClusterFactory) -> None:
    cluster, metrics_url = metrics_cluster(start_cluster)
    workers = {str(pid) for pid in children(cluster.pid)}
    wait_for(lambda: versions_in_force(metrics_url).keys() == workers, "every worker's version")
    (before,) = set(versions_in_force(metrics_url).values())
    rewrite(cluster.config_path, add_key)
    new = re.search(r"config version ([0-9a-f]{12}) in force", reload(cluster.process))
    assert new
    assert new.group(1) != before
    wait_for(lambda: versions_in_force(metrics_url) == dict.fromkeys(workers, new.group(1)),
             "every worker on the new version")
    assert reloads_counted(metrics_url, "ok") == 1


def test_a_key_removed_on_reload_is_refused_on_every_worker(start_cluster: ClusterFactory,
                                                            photo: str) -> None:
    cluster = start_cluster(workers=2, auth={"keys": {"k1": SIGNING_KEY, NEW_KID: OTHER_KEY}})
    url = path_of(UrlSigner(OTHER_KEY, NEW_KID, cluster.base_url).sign("photos", photo))
    every_worker_answers(cluster, url, 200)
    rewrite(cluster.config_path, lambda data: data["auth"]["keys"].pop(NEW_KID))
    reload(cluster.process)
    every_worker_answers(cluster, url, 403)


def test_a_file_secret_changed_on_disk_takes_effect_after_sighup(start_cluster: ClusterFactory, photo: str,
                                                                 tmp_path: Path) -> None:
    secret_file = tmp_path / "k1.key"
    secret_file.write_text(SIGNING_KEY + "\n", encoding="utf-8")
    cluster = start_cluster(workers=2, auth={"keys": {"k1": f"file:{secret_file}"}})
    old = path_of(cluster.url(photo))
    rotated = path_of(UrlSigner(OTHER_KEY, "k1", cluster.base_url).sign("photos", photo))
    every_worker_answers(cluster, old, 200)
    secret_file.write_text(OTHER_KEY + "\n", encoding="utf-8")
    every_worker_answers(cluster, old, 200, timeout=1)  # nothing changes before the SIGHUP
    reload(cluster.process)
    every_worker_answers(cluster, rotated, 200)
    every_worker_answers(cluster, old, 403)


def test_a_revocation_added_on_reload_is_403_revoked_on_every_worker(start_cluster: ClusterFactory,
                                                                     photo: str) -> None:
    cluster = start_cluster(workers=2)
    url = path_of(cluster.url(photo))
    every_worker_answers(cluster, url, 200)
    sig = parse_query(url.partition("?")[2], 32)["sig"]
    rewrite(cluster.config_path, lambda data: data["auth"].update(revocations=[{"sig": sig}]))
    reload(cluster.process)
    every_worker_answers(cluster, url, 403)
    _, _, body = answer_of_a_worker(cluster, url)
    assert b'"revoked"' in body


def test_a_worker_restarted_after_a_reload_serves_the_new_config_and_gets_the_next(
        start_cluster: ClusterFactory, photo: str) -> None:
    cluster = start_cluster(workers=2)
    url = path_of(UrlSigner(OTHER_KEY, NEW_KID, cluster.base_url).sign("photos", photo))
    rewrite(cluster.config_path, add_key)
    reload(cluster.process)
    every_worker_answers(cluster, url, 200)
    victim = min(children(cluster.pid))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in children(cluster.pid) and len(children(cluster.pid)) == 2,
             "the killed worker replaced")
    every_worker_answers(cluster, url, 200)  # forked with the config in force, not the first one
    rewrite(cluster.config_path, lambda data: data["auth"]["keys"].pop(NEW_KID))
    reload(cluster.process)
    every_worker_answers(cluster, url, 403)  # the new worker's pipe works too


def test_a_worker_that_does_not_take_the_new_config_is_replaced_by_one_that_has_it(
        start_cluster: ClusterFactory, photo: str) -> None:
    cluster = start_cluster(workers=2)
    url = path_of(cluster.url(photo))
    every_worker_answers(cluster, url, 200)
    # Enough revocations that the message overflows a pipe's 64 KiB while its worker is stopped.
    rng = random.Random(5)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
    filler = ["".join(rng.choices(alphabet, k=43)) for _ in range(3000)]
    sig = parse_query(url.partition("?")[2], 32)["sig"]
    entries = [{"sig": value} for value in [*filler, sig]]
    rewrite(cluster.config_path, lambda data: data["auth"].update(revocations=entries))
    stuck = min(children(cluster.pid))
    os.kill(stuck, signal.SIGSTOP)
    try:
        reload(cluster.process)
        wait_for(lambda: f"(pid {stuck}) did not take the new config" in cluster.process.stderr,
                 "the stuck worker named", timeout=15)
    finally:
        os.kill(stuck, signal.SIGCONT)
    wait_for(lambda: stuck not in children(cluster.pid) and len(children(cluster.pid)) == 2,
             "the stuck worker replaced")
    every_worker_answers(cluster, url, 403)


# --- what is in flight finishes as it began -------------------------------------------------

def test_a_download_in_flight_during_a_reload_completes(start_cluster: ClusterFactory, s3: Any,
                                                        bucket: str) -> None:
    size = 16 * 1024 * 1024
    body = random.Random(13).randbytes(size)
    s3.put_object(Bucket=bucket, Key="archive/big.bin", Body=body, ContentType="application/octet-stream")
    cluster = start_cluster(workers=2)
    url = path_of(cluster.url("archive/big.bin"))
    connection = http.client.HTTPConnection("127.0.0.1", cluster.port, timeout=HTTP_TIMEOUT)
    connection.request("GET", url)
    response = connection.getresponse()
    assert response.status == 200
    digest = hashlib.sha256(received := response.read(1024 * 1024))
    total = len(received)
    # k1 goes: once every worker refuses new k1 URLs, the download that began with k1 goes on.
    rewrite(cluster.config_path, lambda data: data["auth"].update(keys={NEW_KID: OTHER_KEY}))
    reload(cluster.process)
    every_worker_answers(cluster, url, 403)
    while chunk := response.read(1024 * 1024):
        digest.update(chunk)
        total += len(chunk)
    connection.close()
    assert total == size
    assert digest.hexdigest() == hashlib.sha256(body).hexdigest()


# --- a config that does not load, or needs a restart ----------------------------------------

def test_an_invalid_config_on_reload_keeps_the_old_one_and_logs_one_line(start_cluster: ClusterFactory,
                                                                         photo: str) -> None:
    cluster, metrics_url = metrics_cluster(start_cluster)
    url = path_of(cluster.url(photo))
    text = cluster.config_path.read_text(encoding="utf-8")
    # A new key whose secret the log must never show, on a line TOML refuses.
    cluster.config_path.write_text(text.replace("[auth.keys]", f'[auth.keys]\nk2 = "{OTHER_KEY}" ='),
                                   encoding="utf-8")
    line = reload(cluster.process)
    assert re.search(r"WARNING imgproxy\.reload reload refused, config version [0-9a-f]{12} stays in force: "
                     r".*cluster-0\.toml: not valid TOML", line), line
    assert OTHER_KEY not in cluster.process.stderr
    assert SIGNING_KEY not in cluster.process.stderr
    every_worker_answers(cluster, url, 200)
    assert reloads_counted(metrics_url, "invalid") == 1


def single(tmp_path: Path, moto_endpoint: str, bucket: str, **auth: Any) -> Server:
    data = config_data(moto_endpoint, bucket)
    data["auth"].update(auth)
    return launch_server(tmp_path / "single", data)


def test_a_missing_file_secret_on_reload_keeps_the_old_config(tmp_path: Path, moto_endpoint: str,
                                                              bucket: str, photo: str) -> None:
    secret_file = tmp_path / "k1.key"
    secret_file.write_text(SIGNING_KEY, encoding="utf-8")
    server = single(tmp_path, moto_endpoint, bucket, keys={"k1": f"file:{secret_file}"})
    try:
        url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", photo)
        secret_file.unlink()
        line = reload(server.process)
        assert "reload refused" in line
        assert f"auth.keys.k1: cannot read {secret_file}" in line
        assert http_get(url).status == 200
        assert server.process.popen.poll() is None
    finally:
        server.process.kill()


def test_one_process_reloads_itself_and_names_what_needs_a_restart(tmp_path: Path, moto_endpoint: str,
                                                                   bucket: str, photo: str) -> None:
    server = single(tmp_path, moto_endpoint, bucket)
    try:
        url = UrlSigner(OTHER_KEY, NEW_KID, server.base_url).sign("photos", photo)
        assert http_get(url).status == 403

        def change(data: dict[str, Any]) -> None:
            add_key(data)
            data["server"]["shutdown_timeout"] = 7
            data["transform"]["queue_size"] = 3

        rewrite(server.config_path, change)
        line = reload(server.process)
        assert line.endswith("except what needs a restart to change: server.shutdown_timeout, "
                             "transform.queue_size")
        assert "WARNING" in line
        assert http_get(url).status == 200
        token_url = f"{server.base_url}/img/photos/{urllib.parse.quote(photo)}"
        assert http_get(token_url, {"Authorization": f"Bearer {TOKEN}"}).status == 200
    finally:
        server.process.kill()
