"""Validators S3 compares as one exact string (lists, weak tags, '*') are evaluated by the proxy
against a HEAD's ETag: 304/412 as RFC 9110 says, and still no object bytes read."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from imgproxy.auth.signing import UrlSigner

BODY = b"\xff\xd8\xff" + bytes(range(256)) * 64


@pytest.fixture
def etag(s3: Any, bucket: str) -> str:
    s3.put_object(Bucket=bucket, Key="pic.jpg", Body=BODY, ContentType="image/jpeg")
    return str(s3.head_object(Bucket=bucket, Key="pic.jpg")["ETag"])


@pytest.mark.parametrize("template", ['"other", {etag}', "W/{etag}", "*", '"a",W/{etag} , "b"'])
async def test_if_none_match_lists_weak_tags_and_star_are_304(
        client: TestClient[Any, Any], signer: UrlSigner, etag: str, template: str) -> None:
    response = await client.get(signer.sign("photos", "pic.jpg"),
                                headers={"If-None-Match": template.format(etag=etag)})
    assert response.status == 304
    assert response.headers["ETag"] == etag
    assert await response.read() == b""


async def test_if_none_match_list_without_the_etag_streams_the_object(
        client: TestClient[Any, Any], signer: UrlSigner, etag: str) -> None:
    response = await client.get(signer.sign("photos", "pic.jpg"),
                                headers={"If-None-Match": '"nope", W/"other"'})
    assert response.status == 200
    assert await response.read() == BODY


@pytest.mark.parametrize("template", ["*", '"other", {etag}'])
async def test_if_match_star_or_list_with_the_etag_serves_the_object(
        client: TestClient[Any, Any], signer: UrlSigner, etag: str, template: str) -> None:
    response = await client.get(signer.sign("photos", "pic.jpg"),
                                headers={"If-Match": template.format(etag=etag)})
    assert response.status == 200
    assert await response.read() == BODY


@pytest.mark.parametrize("template", ['"other", "again"', "W/{etag}"])
async def test_if_match_without_a_strong_match_is_412(
        client: TestClient[Any, Any], signer: UrlSigner, etag: str, template: str) -> None:
    response = await client.get(signer.sign("photos", "pic.jpg"),
                                headers={"If-Match": template.format(etag=etag)})
    assert response.status == 412
    assert (await response.json())["error"] == "precondition_failed"


async def test_if_match_star_on_a_missing_object_is_404(
        client: TestClient[Any, Any], signer: UrlSigner) -> None:
    response = await client.get(signer.sign("photos", "absent.jpg"), headers={"If-Match": "*"})
    assert response.status == 404
