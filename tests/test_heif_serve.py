"""HEIF input in a real ``imgproxy serve``: a HEIC rendered over a real socket, and the libraries
it took (libheif, libde265, x265) mapped into the image workers only, never into the serving
process, as /proc/PID/maps shows."""

from __future__ import annotations

import io
import urllib.request
from pathlib import Path
from typing import Any

from heic import heic, marked
from PIL import Image
from processes import children
from support import SIGNING_KEY, ServeFactory

from imgproxy.auth.signing import UrlSigner
from imgproxy.config import DEFAULT_INPUT_FORMATS


def descendants(pid: int) -> set[int]:
    found = children(pid)
    for child in set(found):
        found |= descendants(child)
    return found


def maps_libheif(pid: int) -> bool:
    return "libheif" in Path(f"/proc/{pid}/maps").read_text(encoding="utf-8", errors="replace")


def test_a_served_heic_decodes_in_the_workers_and_never_in_the_serving_process(
        serve: ServeFactory, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="ada.heic", Body=heic(marked(600, 400)), ContentType="image/heic")
    server = serve(bucket, transform={"input_formats": [*DEFAULT_INPUT_FORMATS, "HEIF"], "workers": 1})
    url = UrlSigner(SIGNING_KEY, "k1", server.base_url).sign("photos", "ada.heic", params={"w": "150"})
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (a loopback URL of ours)
        assert response.headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(response.read())).size == (150, 100)
    serving = server.process.popen.pid
    workers = descendants(serving)
    assert workers  # the forkserver and the image worker
    assert any(maps_libheif(pid) for pid in workers)
    assert not maps_libheif(serving)
