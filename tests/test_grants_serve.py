"""Grant links through the real CLI and ``imgproxy serve --workers 2``: ``imgproxy grant`` mints a
link, the link opens once for the whole host (whichever worker each connection lands on, read
from /proc), the cookie it sets is served as ``grant:SUB`` in the access log, and the CLI
refuses what the server would refuse."""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Any

from processes import PHOTO, PHOTO_KEY, run, wait_for
from support import ClusterFactory
from test_rate_limits_workers import connections_on_each_worker

DASH = "https://dash.example.com"
GRANTS: dict[str, Any] = {"grants": {"link_ttl": "2m"}}
SERVER: dict[str, Any] = {"cors_origins": [DASH]}


def request(connection: http.client.HTTPConnection, target: str,
            **headers: str) -> tuple[int, dict[str, str], bytes]:
    connection.request("GET", target, headers=headers)
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def grant(config: str, *args: str) -> Any:
    return run("grant", "--config", config, *args)


def test_a_cli_link_opens_once_for_the_whole_host(start_cluster: ClusterFactory, s3: Any,
                                                  bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key=PHOTO_KEY, Body=PHOTO, ContentType="image/png")
    cluster = start_cluster(workers=2, auth=GRANTS, server=SERVER)
    made = grant(str(cluster.config_path), "--sub", "ada", "--scope", "photos:team/*",
                 "--return", f"{DASH}/directory", "--ttl", "90s")
    assert made.returncode == 0, made.stderr
    link = made.stdout.strip()
    assert link.startswith(cluster.base_url + "/session?grant=g1.k1.")
    target = link.removeprefix(cluster.base_url)
    first, second = connections_on_each_worker(cluster)
    try:
        check_single_use(cluster, target, first, second)
    finally:
        first.close()
        second.close()


def check_single_use(cluster: Any, target: str, first: http.client.HTTPConnection,
                     second: http.client.HTTPConnection) -> None:
    status, headers, _ = request(first, target)
    assert status == 303
    assert headers["location"] == f"{DASH}/directory"
    assert headers["referrer-policy"] == "no-referrer"
    cookie = headers["set-cookie"].split(";")[0]
    assert cookie.startswith("__Host-imgproxy-grant=g1.k1.")
    # The other worker knows the link was opened; so does the first.
    for connection in (second, first, second):
        status, headers, _ = request(connection, target)
        assert status == 401
        assert "set-cookie" not in headers
    key = urllib.parse.quote(PHOTO_KEY)
    for connection in (first, second):
        status, headers, body = request(connection, f"/img/photos/{key}", Cookie=cookie)
        assert (status, body) == (200, PHOTO)
        assert headers["cache-control"].startswith("private")
        assert "Cookie" in headers["vary"]
        status, _, _ = request(connection, "/img/photos/elsewhere.png", Cookie=cookie)
        assert status == 403
    wait_for(lambda: "auth=grant:ada" in cluster.process.stderr, "the access log's grant principal")
    assert cookie.split("=", 1)[1][:30] not in cluster.process.stderr
    assert "grant=g1" not in cluster.process.stderr


def test_the_cli_refuses_links_the_server_would_refuse(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(workers=2, auth=GRANTS, server=SERVER)
    config = str(cluster.config_path)
    for args, said in ((("--return", "https://evil.example.com/"), "--return"),
                       (("--ttl", "10m"), "--ttl"), (("--scope", "no colon*x"), "scope"),
                       (("--sub", "a\x01b"), "sub")):
        arguments = ["--sub", "ada", "--scope", "photos:team/*", *args]
        result = grant(config, *arguments)
        assert result.returncode == 2, (args, result.stdout)
        assert said in result.stderr
        assert result.stdout == ""


def test_the_cli_says_when_grants_are_off(start_cluster: ClusterFactory) -> None:
    cluster = start_cluster(workers=2)
    result = grant(str(cluster.config_path), "--sub", "ada", "--scope", "photos:*")
    assert result.returncode == 2
    assert "auth.grants" in result.stderr
