"""POST /sign with a JWT: URLs signed on behalf of the token's user, within its claim scopes, with
the token's sub (never an item's) and never durable; each URL then serves its image."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import hdrs
from aiohttp.test_utils import TestClient
from idp import AUDIENCE, FakeIdp
from s3_gate import ManualClock
from support import ProxyFactory
from yarl import URL

NOW = 1_900_000_000.0
JPEG = b"\xff\xd8\xff\xe0" + b"s" * 200
Client = TestClient[Any, Any]


@pytest.fixture
async def client(proxy: ProxyFactory, s3: Any, bucket: str, idp: FakeIdp) -> Client:
    for key in ("employees/ada.jpg", "users/ada/me.jpg"):
        s3.put_object(Bucket=bucket, Key=key, Body=JPEG, ContentType="image/jpeg")
    provider = {"issuer": idp.issuer, "audience": AUDIENCE,
                "rules": [{"claim": "groups", "equals": "hr", "scopes": ["photos:employees/*"]},
                          {"scopes": ["photos:users/{sub}/*"]}]}
    return await proxy(clock=ManualClock(NOW), auth={"oidc": {"corp": provider}})


async def sign(client: Client, token: str, items: list[dict[str, Any]]) -> list[dict[str, str]]:
    response = await client.post("/sign", json=items, headers={hdrs.AUTHORIZATION: f"Bearer {token}"})
    assert response.status == 200, await response.text()
    answer: list[dict[str, str]] = (await response.json())["items"]
    return answer


def item(key: str, **extra: Any) -> dict[str, Any]:
    return {"source": "photos", "key": key, **extra}


async def test_items_in_the_tokens_scopes_are_signed_with_its_sub_and_serve(
    client: Client, idp: FakeIdp, caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="imgproxy.access"):
        answers = await sign(client, idp.token(NOW), [item("employees/ada.jpg"), item("users/ada/me.jpg")])
    assert all("url" in answer for answer in answers), answers
    for answer in answers:
        assert parse_qs(urlsplit(answer["url"]).query)["sub"] == ["ada"]
        response = await client.session.get(URL(answer["url"], encoded=True))
        assert response.status == 200
        assert await response.read() == JPEG
    line = next(r.getMessage() for r in caplog.records if r.name == "imgproxy.access")
    assert " auth=jwt:corp:ada " in line


async def test_an_item_outside_the_tokens_scopes_gets_out_of_scope(client: Client, idp: FakeIdp) -> None:
    token = idp.token(NOW, groups=[])
    answers = await sign(client, token, [item("employees/ada.jpg"), item("users/ada/me.jpg")])
    assert answers[0]["error"] == "out_of_scope"
    assert "url" in answers[1]


async def test_an_items_own_sub_is_refused_for_that_item(client: Client, idp: FakeIdp) -> None:
    items = [item("employees/ada.jpg", sub="bob"), item("employees/ada.jpg")]
    answers = await sign(client, idp.token(NOW), items)
    assert answers[0] == {"error": "invalid_parameter",
                          "message": "'sub' comes from the bearer token; leave it out of the item."}
    assert parse_qs(urlsplit(answers[1]["url"]).query)["sub"] == ["ada"]


async def test_a_durable_item_is_refused_for_a_jwt(client: Client, idp: FakeIdp) -> None:
    answers = await sign(client, idp.token(NOW), [item("employees/ada.jpg", durable=True)])
    assert answers == [{"error": "invalid_parameter",
                        "message": "Durable URLs are not signed for a JWT's user."}]


async def test_a_jwt_whose_claims_grant_nothing_may_not_sign(client: Client, idp: FakeIdp) -> None:
    token = idp.token(NOW, groups=[], sub="x/y")  # the template drops a sub with '/'
    response = await client.post("/sign", json=[item("employees/ada.jpg")],
                                 headers={hdrs.AUTHORIZATION: f"Bearer {token}"})
    assert response.status == 403
    assert (await response.json())["error"] == "out_of_scope"


async def test_an_expired_jwt_is_401_invalid_token_on_sign(client: Client, idp: FakeIdp) -> None:
    response = await client.post("/sign", json=[item("employees/ada.jpg")],
                                 headers={hdrs.AUTHORIZATION: f"Bearer {idp.token(NOW - 1000)}"})
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_token"
