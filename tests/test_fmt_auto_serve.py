"""fmt=auto through an ``imgproxy serve`` process: WebP wins a tie with AVIF unless the config
says otherwise (``transform.auto_prefer``); the client's higher ``q`` and an explicit ``fmt``
still decide.

Why WebP first: at JPEG's quality a 300 px AVIF is a few per cent smaller than the WebP and costs
several times its CPU (README "fmt=auto and Accept", ``bench/bench_encoders.py``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from PIL import Image
from processes import Process, command, free_port, http_get, write_config
from support import SIGNING_KEY, config_data

from imgproxy.auth.signing import UrlSigner
from imgproxy.transform.jobs import available_outputs
from imgproxy.transform.params import OutputFormat

pytestmark = pytest.mark.skipif(OutputFormat.AVIF not in available_outputs(), reason="no AVIF encoder")

KEY: Final = "employees/ada.jpg"
CHROME: Final = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
Serve = Callable[..., UrlSigner]


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize((400, 300)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture
def serve(tmp_path: Path, moto_endpoint: str, bucket: str, s3: Any) -> Iterator[Serve]:
    """``serve(**transform)``: an ``imgproxy serve`` process with those ``[transform]`` keys; its
    signer for this bucket's photo."""
    s3.put_object(Bucket=bucket, Key=KEY, Body=jpeg(), ContentType="image/jpeg")
    processes: list[Process] = []

    def start(**transform: Any) -> UrlSigner:
        port = free_port()
        data = config_data(moto_endpoint, bucket)
        data["server"]["port"] = port
        data["transform"] = {"workers": 1, **transform}
        name = f"serve-{len(processes)}"
        process = Process(command("serve", "--config", str(write_config(tmp_path, data, f"{name}.toml"))),
                          tmp_path / name)
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        process.wait_until_healthy(base)
        return UrlSigner(SIGNING_KEY, "k1", base)

    try:
        yield start
        for process in processes:
            assert process.stop() == 0
    finally:
        for process in processes:
            process.kill()


def media_type(signer: UrlSigner, accept: str, fmt: str = "auto") -> str:
    reply = http_get(signer.sign("photos", KEY, params={"w": "100", "fmt": fmt}), {"Accept": accept})
    assert reply.status == 200
    assert Image.MIME[Image.open(io.BytesIO(reply.body)).format or ""] == reply.headers["Content-Type"]
    return reply.headers["Content-Type"]


def test_serve_sends_webp_to_a_browser_that_takes_both_unless_its_q_says_avif(serve: Serve) -> None:
    signer = serve()
    assert media_type(signer, CHROME) == "image/webp"
    assert media_type(signer, "image/avif;q=0.9, image/webp;q=0.8") == "image/avif"
    assert media_type(signer, CHROME, fmt="avif") == "image/avif"


def test_serve_sends_avif_on_a_tie_when_auto_prefer_puts_it_first(serve: Serve) -> None:
    signer = serve(auto_prefer=["avif", "webp"])
    assert media_type(signer, CHROME) == "image/avif"
    assert media_type(signer, "image/webp;q=0.9, image/avif;q=0.8") == "image/webp"


def test_serve_never_sends_by_auto_a_format_auto_prefer_leaves_out(serve: Serve) -> None:
    signer = serve(auto_prefer=["webp"])
    assert media_type(signer, "image/avif, image/webp;q=0.1") == "image/webp"
    assert media_type(signer, "image/avif", fmt="avif") == "image/avif"
