"""POST /sign items with "meta": true: the image's metadata next to its URL (the same fields as
GET /meta), a placeholder with "placeholder": true, and per-item errors that never fail the batch."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from s3_gate import ManualClock
from support import TOKENS, ProxyFactory

DASH_TOKEN = "dashboard-sign-token-0123456789abcdef0123456"
DASH = {"Authorization": f"Bearer {DASH_TOKEN}"}


def jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((width, height)).convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def start(proxy: ProxyFactory, clock: ManualClock) -> ProxyFactory:
    dash = {"token": DASH_TOKEN, "sign_scopes": ["photos:employees/*"]}
    return proxy.preset(auth={"tokens": {**TOKENS, "dash": dash}}, transform={"workers": 1}, clock=clock)


async def sign(client: TestClient[Any, Any], items: Any) -> Any:
    response = await client.post("/sign", json=items, headers=DASH)
    assert response.status == 200, await response.text()
    return (await response.json())["items"]


async def test_meta_items_get_the_fields_of_get_meta_next_to_their_url(
        start: ProxyFactory, s3: Any, bucket: str) -> None:
    client = await start()
    body = jpeg(320, 240)
    s3.put_object(Bucket=bucket, Key="employees/ada.jpg", Body=body, ContentType="image/jpeg")
    answer = await sign(client, [{"source": "photos", "key": "employees/ada.jpg", "params": {"w": "96"},
                                  "meta": True},
                                 {"source": "photos", "key": "employees/ada.jpg"}])
    first, second = answer
    assert first["url"].startswith("http")
    assert {k: first[k] for k in ("width", "height", "format", "frames", "bytes", "placeholder")} == \
        {"width": 320, "height": 240, "format": "jpeg", "frames": 1, "bytes": len(body), "placeholder": None}
    assert first["etag"] == s3.head_object(Bucket=bucket, Key="employees/ada.jpg")["ETag"]
    assert set(second) == {"url"}  # no meta asked, none given


async def test_placeholder_true_adds_the_thumbhash(start: ProxyFactory, s3: Any, bucket: str) -> None:
    client = await start()
    s3.put_object(Bucket=bucket, Key="employees/bob.jpg", Body=jpeg(200, 300), ContentType="image/jpeg")
    (entry,) = await sign(client, [{"source": "photos", "key": "employees/bob.jpg", "meta": True,
                                    "placeholder": True}])
    assert len(base64.b64decode(entry["placeholder"])) >= 5
    assert (entry["width"], entry["height"]) == (200, 300)


async def test_a_failed_lookup_is_the_items_meta_error_and_the_others_are_answered(
        start: ProxyFactory, s3: Any, bucket: str) -> None:
    client = await start()
    s3.put_object(Bucket=bucket, Key="employees/a.jpg", Body=jpeg(10, 20), ContentType="image/jpeg")
    s3.put_object(Bucket=bucket, Key="employees/text.jpg", Body=b"not an image at all",
                  ContentType="image/jpeg")
    answer = await sign(client, [
        {"source": "photos", "key": "employees/missing.jpg", "meta": True},
        {"source": "photos", "key": "employees/text.jpg", "meta": True},
        {"source": "photos", "key": "ids/outside.jpg", "meta": True},
        {"source": "photos", "key": "employees/a.jpg", "meta": True},
    ])
    assert answer[0]["meta_error"]["error"] == "not_found"
    assert "url" in answer[0]
    assert answer[1]["meta_error"]["error"] == "unsupported_image"
    assert answer[2]["error"] == "out_of_scope"  # not signed: nothing looked up
    assert "meta_error" not in answer[2]
    assert (answer[3]["width"], answer[3]["height"]) == (10, 20)


@pytest.mark.parametrize("bad", [{"meta": "yes"}, {"placeholder": True}, {"meta": True, "placeholder": 1}])
async def test_malformed_meta_fields_are_a_400(start: ProxyFactory, bad: dict[str, Any]) -> None:
    client = await start()
    response = await client.post("/sign", json=[{"source": "photos", "key": "employees/a.jpg", **bad}],
                                 headers=DASH)
    assert response.status == 400
    assert (await response.json())["error"] == "bad_request"
