"""Bad input through a real ``imgproxy serve`` over raw sockets: a 4xx, never a 500, and
ordinary input never fails (issue 10, points 4 and 5, end to end; the unit-level tables are in
tests/transform/test_geometry.py, test_broken_input.py, test_fuzz.py, test_sign_body.py)."""

from __future__ import annotations

import io
import json
import re
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image
from processes import Server, http_get, launch_server
from rawhttp import exchange, get
from support import SIGNING_KEY, TOKEN, config_data, empty_bucket

from imgproxy.auth.signing import UrlSigner

# Dates no UTC datetime can hold (year 10000 in UTC; a year past any calendar): ignored.
UNUSABLE_DATES = ["Fri, 31 Dec 9999 23:59:59 -0100", "Mon, 01 Jan 999999999999 00:00:00 GMT"]


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jfif_with_non_tiff_exif() -> bytes:
    jpeg = encode(Image.new("RGB", (40, 30), (200, 30, 30)), "JPEG", dpi=(300, 300))
    payload = b"Exif\x00\x00this is not a TIFF header"
    end = 4 + struct.unpack(">H", jpeg[4:6])[0]  # after the JFIF APP0 segment
    return jpeg[:end] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[end:]


OBJECTS = {
    "photo-1280x853.jpg": encode(Image.linear_gradient("L").resize((1280, 853)).convert("RGB"), "JPEG"),
    "exif-not-tiff.jpg": jfif_with_non_tiff_exif(),
    "exif-not-tiff.webp": encode(Image.new("RGB", (40, 30)), "WEBP", exif=b"Exif\x00\x00not a TIFF"),
    "truncated.gif": encode(Image.new("P", (20, 20)), "GIF")[:-1] + b"\x21",
    "large.jpg": encode(Image.effect_noise((1200, 900), 60).convert("RGB"), "JPEG", quality=95),
}


@pytest.fixture(scope="module")
def inputs_bucket(s3: Any) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    for key, body in OBJECTS.items():
        s3.put_object(Bucket=name, Key=key, Body=body, ContentType="image/jpeg")
    yield name
    empty_bucket(s3, name)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str,
           inputs_bucket: str) -> Iterator[Server]:
    data = config_data(moto_endpoint, inputs_bucket)
    data["auth"]["tokens"]["signer"] = {"token": "s" * 40, "sign_scopes": ["photos:*"]}
    data["transform"] = {"workers": 1}
    running = launch_server(tmp_path_factory.mktemp("inputs"), data)
    yield running
    running.process.kill()


def signed(server: Server, key: str, **params: str) -> str:
    url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", key, ttl=600, params=params)
    return url[len(server.base_url):]


@pytest.mark.parametrize("size", [64, 100, 128])
def test_cover_thumbnails_of_an_ordinary_3_by_2_photo_are_exact(server: Server, size: int) -> None:
    reply = exchange(server.port, get(signed(server, "photo-1280x853.jpg", w=str(size), h=str(size),
                                             fit="cover")))
    assert reply.status == 200
    assert Image.open(io.BytesIO(reply.body)).size == (size, size)


@pytest.mark.parametrize("key", ["exif-not-tiff.jpg", "exif-not-tiff.webp"])
def test_unreadable_exif_is_ignored(server: Server, key: str) -> None:
    reply = exchange(server.port, get(signed(server, key, w="20")))
    assert reply.status == 200
    assert Image.open(io.BytesIO(reply.body)).size == (20, 15)


def test_a_gif_truncated_after_an_extension_introducer_is_422(server: Server) -> None:
    reply = exchange(server.port, get(signed(server, "truncated.gif", w="10")))
    assert (reply.status, reply.json()["error"]) == (422, "corrupt_image")


@pytest.mark.parametrize("date", UNUSABLE_DATES)
@pytest.mark.parametrize("header", ["If-Modified-Since", "If-Unmodified-Since", "If-Range"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_unusable_http_date_is_ignored(server: Server, header: str, date: str, method: str) -> None:
    extra = ["Range: bytes=0-9"] if header == "If-Range" else []
    request = get(signed(server, "photo-1280x853.jpg"), f"{header}: {date}", *extra)
    reply = exchange(server.port, request.replace(b"GET", method.encode(), 1))
    assert reply.status in (200, 206)


@pytest.mark.parametrize("header", ["If-Modified-Since", "If-Unmodified-Since", "If-Range"])
def test_a_date_at_the_start_of_the_calendar_is_no_server_error(server: Server, header: str) -> None:
    extra = ["Range: bytes=0-9"] if header == "If-Range" else []
    reply = exchange(server.port, get(signed(server, "photo-1280x853.jpg"),
                                      f"{header}: Sat, 01 Jan 0001 00:00:00 +0100", *extra))
    assert reply.status in (200, 206, 412)  # 412: unmodified since year 1 it is not


def post_sign(server: Server, body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    head = (f"POST /sign HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {'s' * 40}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    reply = exchange(server.port, head + body)
    return {"status": reply.status, **reply.json()}


@pytest.mark.parametrize(("body", "content_type", "status", "code"), [
    (b"[" * 50_000 + b"]" * 50_000, "application/json", 400, "bad_request"),
    (b'[{"source": "photos", "key": "a.jpg", "params": {"w": ' + b"9" * 5000 + b"}}]",
     "application/json", 400, "bad_request"),
    (b"[]", "application/json; charset=x-unknown-charset", 415, "unsupported_media_type"),
])
def test_a_sign_body_that_broke_the_parser_is_a_4xx(server: Server, body: bytes, content_type: str,
                                                     status: int, code: str) -> None:
    answer = post_sign(server, body, content_type)
    assert (answer["status"], answer["error"]) == (status, code)


def test_no_bad_input_reached_the_log_as_an_error(server: Server) -> None:
    log = server.process.stderr
    assert "Traceback" not in log
    assert not re.search(r" ERROR .*(unexpected|internal_error)", log)
    assert TOKEN not in log


def metric_total(text: str, name: str, labels: str = "") -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and labels in line)


def test_a_transform_refused_for_a_full_queue_never_reached_s3(
        tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str, inputs_bucket: str) -> None:
    data = config_data(moto_endpoint, inputs_bucket)
    data["transform"] = {"workers": 1, "queue_size": 0}
    data["cache"] = {"variant_bytes": 0, "metadata_ttl": 60}
    served = launch_server(tmp_path_factory.mktemp("admission"), data)
    try:
        assert exchange(served.port, get(signed(served, "large.jpg", w="5"))).status == 200  # HEAD cached
        statuses: list[int] = []

        def one(width: int) -> None:
            statuses.append(exchange(served.port, get(signed(served, "large.jpg", w=str(width),
                                                             fmt="png"))).status)

        threads = [threading.Thread(target=one, args=(1000 - i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics_url = re.search(r"metrics on (http://\S+/metrics)", served.process.stderr)
        assert metrics_url
        text = http_get(metrics_url.group(1)).body.decode()
        gets = metric_total(text, "imgproxy_s3_duration_seconds_count", 'operation="get"')
        assert statuses.count(503) >= 4
        assert gets == 1 + statuses.count(200)  # the warm-up and each admitted job: no other GET
        assert metric_total(text, "imgproxy_transform_rejections_total") == statuses.count(503)
    finally:
        served.process.kill()


def test_the_sign_answer_is_json(server: Server) -> None:
    answer = post_sign(server, json.dumps([{"source": "photos", "key": "photo-1280x853.jpg"}]).encode())
    assert answer["status"] == 200
    assert answer["items"][0]["url"].startswith("http")
