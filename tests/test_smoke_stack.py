"""A first end-to-end round trip: signed GET through aiohttp -> aiobotocore -> moto."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from imgproxy.auth.signing import UrlSigner


async def test_signed_get_streams_the_object(client: TestClient[Any, Any], s3: Any, bucket: str,
                                             signer: UrlSigner) -> None:
    s3.put_object(Bucket=bucket, Key="a b.jpg", Body=b"\xff\xd8\xff" + b"x" * 1000,
                  ContentType="image/jpeg")
    response = await client.get(signer.sign("photos", "a b.jpg"))
    assert response.status == 200
    assert await response.read() == b"\xff\xd8\xff" + b"x" * 1000
    assert response.headers["Content-Type"] == "image/jpeg"
