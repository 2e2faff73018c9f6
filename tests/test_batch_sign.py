"""POST /sign: a page's worth of signed proxy URLs in one call, with per-item errors, limits and
window-stable URLs; and the same URLs from the Python signer."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image
from s3_gate import ManualClock
from support import DELIVERY_NOW, SIGNING_KEY, TOKEN, TOKENS, ProxyFactory
from yarl import URL

from imgproxy.auth.signing import UrlSigner

DASH_TOKEN = "dashboard-sign-token-0123456789abcdef0123456"
DASH = {"Authorization": f"Bearer {DASH_TOKEN}"}
DASH_JSON = {**DASH, "Content-Type": "application/json"}  # raw bytes from aiohttp are octet-stream
T0 = int(DELIVERY_NOW)


def png(width: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, 20), colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def start(proxy: ProxyFactory, clock: ManualClock) -> ProxyFactory:
    """``await start(auth={"sign_max_items": 3, "url_window": "1h"})``: the app with a dashboard
    token that may sign ``photos:employees/*``, on the test's clock."""
    dash = {"token": DASH_TOKEN, "sign_scopes": ["photos:employees/*"]}
    return proxy.preset(auth={"tokens": {**TOKENS, "dash": dash}}, clock=clock)


async def sign(client: TestClient[Any, Any], items: Any, headers: dict[str, str] | None = None) -> Any:
    response = await client.post("/sign", json=items, headers=DASH if headers is None else headers)
    assert response.status == 200, await response.text()
    return await response.json()


def item(key: str, source: str = "photos", **params: str) -> dict[str, Any]:
    return {"source": source, "key": key, "params": params}


# Signing ---------------------------------------------------------------------------------------

async def test_sign_returns_one_url_per_item_in_order_and_each_one_serves_its_image(
        start: ProxyFactory, s3: Any, bucket: str) -> None:
    client = await start()
    bodies = {f"employees/{name}.png": png(10 + i, (i * 40, 0, 0)) for i, name in enumerate("abcde")}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/png")
    answer = await sign(client, [item(key) for key in reversed(bodies)])
    for key, entry in zip(reversed(bodies), answer["items"], strict=True):
        response = await client.session.get(URL(entry["url"], encoded=True))
        assert response.status == 200
        assert await response.read() == bodies[key]


async def test_a_signed_url_carries_its_transform_params(start: ProxyFactory, s3: Any, bucket: str) -> None:
    client = await start()
    s3.put_object(Bucket=bucket, Key="employees/ada.png", Body=png(40, (0, 90, 0)), ContentType="image/png")
    [entry] = (await sign(client, [item("employees/ada.png", w="8")]))["items"]
    assert parse_qs(urlsplit(entry["url"]).query)["w"] == ["8"]
    response = await client.session.get(URL(entry["url"], encoded=True))
    assert response.status == 200
    assert Image.open(io.BytesIO(await response.read())).width == 8


async def test_a_body_wrapped_in_items_is_accepted(start: ProxyFactory) -> None:
    client = await start()
    answer = await sign(client, {"items": [item("employees/a.png")]})
    assert "url" in answer["items"][0]


@pytest.mark.parametrize(("bad", "code"), [
    (item("other/x.png"), "out_of_scope"),
    (item("employees-x.png"), "out_of_scope"),
    (item("employees/x.png", source="nope"), "unknown_source"),
    (item("employees/../secret/x.png"), "invalid_path"),
    (item("employees/x\\y.png"), "invalid_path"),
    (item("employees/x.png", w="abc"), "invalid_parameter"),
    (item("employees/x.png", exp="1"), "invalid_parameter"),
    (item("employees/x.png", sig="x"), "invalid_parameter"),
    (item("employees/x.png", kid="k1"), "invalid_parameter"),
    (item("employees/x.png", **{"z" * 300: "1"}), "invalid_parameter"),
])
async def test_a_bad_item_gets_its_own_error_and_its_neighbours_their_urls(
        start: ProxyFactory, bad: dict[str, Any], code: str) -> None:
    client = await start()
    answer = await sign(client, [item("employees/a.png"), bad, item("employees/b.png")])
    first, error, last = answer["items"]
    assert set(error) == {"error", "message"}
    assert error["error"] == code
    assert "/img/photos/employees/a.png?" in first["url"]
    assert "/img/photos/employees/b.png?" in last["url"]


# Who may sign ----------------------------------------------------------------------------------

async def test_a_token_without_sign_scopes_is_403(start: ProxyFactory) -> None:
    client = await start()
    response = await client.post("/sign", json=[item("employees/a.png")],
                                 headers={"Authorization": f"Bearer {TOKEN}"})  # may read '*', not sign
    assert response.status == 403
    assert (await response.json())["error"] == "out_of_scope"


async def test_no_token_is_401(start: ProxyFactory) -> None:
    client = await start()
    response = await client.post("/sign", json=[item("employees/a.png")])
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_wrong_token_is_401(start: ProxyFactory) -> None:
    client = await start()
    response = await client.post("/sign", json=[item("employees/a.png")],
                                 headers={"Authorization": f"Bearer {DASH_TOKEN[:-1]}x"})
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_token"


# Bad bodies ------------------------------------------------------------------------------------

async def test_malformed_json_is_400_naming_the_problem(start: ProxyFactory) -> None:
    client = await start()
    response = await client.post("/sign", data=b'[{"source": "photos" "key": "a"}]',
                                 headers=DASH_JSON)
    assert response.status == 400
    message = (await response.json())["message"]
    assert message.startswith("The body is not valid JSON: Expecting ',' delimiter: line 1 column 22")


async def test_more_than_sign_max_items_is_400(start: ProxyFactory) -> None:
    client = await start(auth={"sign_max_items": 3})
    response = await client.post("/sign", json=[item(f"employees/{i}.png") for i in range(4)], headers=DASH)
    assert response.status == 400
    assert (await response.json())["message"] == "At most 3 items per call; got 4."


async def test_exactly_sign_max_items_is_signed(start: ProxyFactory) -> None:
    client = await start(auth={"sign_max_items": 3})
    answer = await sign(client, [item(f"employees/{i}.png") for i in range(3)])
    assert len(answer["items"]) == 3


@pytest.mark.parametrize("body", [
    b'{"source": "photos", "key": "employees/a.png"}', b'"employees/a.png"', b"42", b"null",
    b'{"items": "x"}',
])
async def test_a_body_that_is_not_a_list_is_400(start: ProxyFactory, body: bytes) -> None:
    client = await start()
    response = await client.post("/sign", data=body, headers=DASH_JSON)
    assert response.status == 400
    assert (await response.json())["message"].startswith("The body must be a JSON list")


@pytest.mark.parametrize(("items", "message"), [
    (["employees/a.png"], "items[0] must be an object with source, key and optional params."),
    ([{"source": "photos"}], "items[0].source and items[0].key must be strings."),
    ([item("employees/a.png"), {**item("b"), "extra": 1}], "items[1] has an unknown field 'extra'."),
    ([{**item("b"), "params": {"w": True}}],
     "items[0].params must be an object of string (or integer) values."),
])
async def test_a_malformed_item_is_400_naming_it(start: ProxyFactory, items: list[Any], message: str) -> None:
    client = await start()
    response = await client.post("/sign", json=items, headers=DASH)
    assert response.status == 400
    assert (await response.json())["message"] == message


async def test_a_long_parameter_name_is_not_echoed_in_its_items_error(start: ProxyFactory) -> None:
    client = await start()
    [error] = (await sign(client, [item("employees/x.png", **{"z" * 100_000: "1"})]))["items"]
    assert error == {"error": "invalid_parameter", "message": "A parameter is longer than 256 bytes."}


@pytest.mark.parametrize(("raw", "field"), [
    (b'[{"source": "photos", "key": "employees/\\ud800.png"}]', "key"),
    (b'[{"source": "\\udfff", "key": "employees/a.png"}]', "source"),
    (b'[{"source": "photos", "key": "employees/a.png", "params": {"fmt": "\\ud800"}}]', "params.fmt"),
    (b'[{"source": "photos", "key": "employees/a.png", "params": {"\\ud800": "1"}}]', "params"),
])
async def test_a_lone_surrogate_escape_is_400_naming_the_field(start: ProxyFactory, raw: bytes,
                                                               field: str) -> None:
    client = await start()
    response = await client.post("/sign", data=raw, headers=DASH_JSON)
    assert response.status == 400
    assert (await response.json())["message"] == (
        f"items[0].{field} is not valid Unicode (it holds a lone \\u surrogate escape).")


@pytest.mark.parametrize("body", [{"items": [], "x" * 100_000: 1},
                                  [{**item("employees/a.png"), "y" * 100_000: 1}]])
async def test_an_unknown_field_is_named_but_not_echoed_in_full(start: ProxyFactory, body: Any) -> None:
    client = await start()
    response = await client.post("/sign", json=body, headers=DASH)
    assert response.status == 400
    message = (await response.json())["message"]
    assert "'xxxx" in message or "'yyyy" in message
    assert len(message) < 120


# Stable URLs -----------------------------------------------------------------------------------

async def test_two_calls_in_the_same_url_window_return_identical_urls(start: ProxyFactory,
                                                                      clock: ManualClock) -> None:
    client = await start(auth={"url_window": "1h", "sign_ttl": "1h"})
    items = [item("employees/a.png"), item("employees/b.png", w="8")]
    clock.advance(10)
    first = await sign(client, items)
    clock.advance(3000)
    assert await sign(client, items) == first


async def test_calls_in_different_url_windows_return_different_urls(start: ProxyFactory,
                                                                     clock: ManualClock) -> None:
    client = await start(auth={"url_window": "1h", "sign_ttl": "1h"})
    clock.advance(10)
    first = await sign(client, [item("employees/a.png")])
    clock.advance(3600)
    assert await sign(client, [item("employees/a.png")]) != first


async def test_exp_is_rounded_up_to_the_end_of_the_url_window(start: ProxyFactory,
                                                               clock: ManualClock) -> None:
    client = await start(auth={"url_window": "1h", "sign_ttl": "1h"})
    clock.advance(10)  # now + ttl = T0 + 3610, inside the window that ends at T0 + 7200
    answer = await sign(client, [item("employees/a.png")])
    assert answer["expires"] == T0 + 7200
    assert parse_qs(urlsplit(answer["items"][0]["url"]).query)["exp"] == [str(T0 + 7200)]


async def test_without_a_url_window_exp_is_now_plus_sign_ttl(start: ProxyFactory, clock: ManualClock) -> None:
    client = await start(auth={"sign_ttl": "1h"})
    clock.advance(10)
    answer = await sign(client, [item("employees/a.png")])
    assert answer["expires"] == T0 + 3610


async def test_the_python_signer_gives_the_same_urls_as_post_sign(start: ProxyFactory,
                                                                   clock: ManualClock) -> None:
    client = await start(auth={"url_window": "1h", "sign_ttl": "1h"})
    clock.advance(123.4)
    answer = await sign(client, [item("employees/a.png"), item("employees/Zoë b+c.png", w="8", fmt="webp")])
    signer = UrlSigner(SIGNING_KEY, "k1", base_url=str(client.make_url("/")))
    urls = signer.sign_many([("photos", "employees/a.png", None),
                             ("photos", "employees/Zoë b+c.png", {"w": "8", "fmt": "webp"})],
                            ttl=3600, now=clock(), window=3600)
    assert urls == [entry["url"] for entry in answer["items"]]


# Scoped keys, durable URLs and viewers (issue 13) -----------------------------------------------

SCOPED = {"secret": "scoped-sign-key-0123456789abcdef-0123456789", "scopes": ["photos:employees/ada*"],
          "durable": True}


async def test_items_outside_the_signing_keys_scopes_are_out_of_scope(start: ProxyFactory, s3: Any,
                                                                     bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="employees/ada.png", Body=png(8, (1, 2, 3)), ContentType="image/png")
    client = await start(auth={"keys": {"bi": SCOPED}})
    body = await sign(client, [item("employees/ada.png"), item("employees/bob.png")])
    assert "url" in body["items"][0]
    assert body["items"][1]["error"] == "out_of_scope"
    assert (await client.session.get(URL(body["items"][0]["url"], encoded=True))).status == 200


async def test_a_durable_item_with_a_sub(start: ProxyFactory, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="employees/ada.png", Body=png(8, (1, 2, 3)), ContentType="image/png")
    client = await start(auth={"keys": {"bi": SCOPED}})
    body = await sign(client, [{**item("employees/ada.png"), "durable": True, "sub": "zoë@example.com"}])
    url = body["items"][0]["url"]
    query = parse_qs(urlsplit(url).query)
    assert "exp" not in query
    assert query["sub"] == ["zoë@example.com"]
    response = await client.session.get(URL(url, encoded=True))
    assert response.status == 200
    assert response.headers["Cache-Control"] == "private, max-age=3600"


async def test_a_durable_item_needs_a_durable_key(start: ProxyFactory) -> None:
    client = await start()
    body = await sign(client, [{**item("employees/ada.png"), "durable": True}])
    assert body["items"][0]["error"] == "invalid_parameter"


@pytest.mark.parametrize("value", ["", "a\nb", "x" * 129, "\u2028"])
async def test_a_bad_sub_is_the_items_error(start: ProxyFactory, value: str) -> None:
    client = await start()
    body = await sign(client, [{**item("employees/ada.png"), "sub": value}, item("employees/ada.png")])
    assert body["items"][0]["error"] == "invalid_parameter"
    assert "url" in body["items"][1]


@pytest.mark.parametrize("name", ["iat", "sub", "exp"])
async def test_reserved_names_in_params_are_refused(start: ProxyFactory, name: str) -> None:
    client = await start()
    body = await sign(client, [item("employees/ada.png", **{name: "1"})])
    assert body["items"][0]["error"] == "invalid_parameter"


async def test_a_sub_or_durable_of_the_wrong_type_is_400(start: ProxyFactory) -> None:
    client = await start()
    for extra in ({"sub": 5}, {"durable": "yes"}):
        response = await client.post("/sign", json=[{**item("a.png"), **extra}], headers=DASH)
        assert response.status == 400
