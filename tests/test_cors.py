"""protocol/cors.py: byte-exact origin matching and the headers each answer carries (pure)."""

from __future__ import annotations

import pytest

from imgproxy.config import ResourcePolicy
from imgproxy.errors import MethodNotAllowed, OriginNotAllowed
from imgproxy.protocol.cors import EXPOSED, CorsPolicy, merge_vary

DASH = "https://dash.example.com"
LOCAL = "http://127.0.0.1:5173"
POLICY = CorsPolicy(origins=(DASH, LOCAL))


@pytest.mark.parametrize(("sent", "allowed"), [
    ([DASH], DASH),
    ([LOCAL], LOCAL),
    ([], None),
    (["null"], None),
    (["https://DASH.example.com"], None),  # browsers lowercase: this is not a browser's Origin
    (["https://dash.example.com/"], None),
    (["https://dash.example.com:443"], None),
    (["http://dash.example.com"], None),
    (["https://dash.example.com.evil.example"], None),
    (["https://evil.dash.example.com"], None),
    (["http://127.0.0.1:5174"], None),
    ([DASH, DASH], None),  # two Origin headers: no browser sends that
    ([f"{DASH}, {LOCAL}"], None),
])
def test_only_a_listed_origin_byte_for_byte_is_allowed(sent: list[str], allowed: str | None) -> None:
    assert POLICY.allowed_origin(sent) == allowed


def test_star_allows_every_origin_but_null() -> None:
    policy = CorsPolicy(origins=("*",))
    assert policy.allowed_origin(["https://anyone.example"]) == "https://anyone.example"
    assert policy.allowed_origin(["null"]) is None


def test_an_allowed_origin_gets_its_own_origin_and_the_exposed_headers() -> None:
    assert POLICY.answer_headers([DASH]) == {
        "Vary": "Origin",
        "Access-Control-Allow-Origin": DASH,
        "Access-Control-Expose-Headers": ", ".join(EXPOSED),
        "Timing-Allow-Origin": DASH,
    }


def test_credentials_are_allowed_only_when_configured() -> None:
    assert "Access-Control-Allow-Credentials" not in POLICY.answer_headers([DASH])
    policy = CorsPolicy(origins=(DASH,), credentials=True)
    assert policy.answer_headers([DASH])["Access-Control-Allow-Credentials"] == "true"
    assert "Access-Control-Allow-Credentials" not in policy.answer_headers(["https://other.example"])


def test_star_answers_star() -> None:
    headers = CorsPolicy(origins=("*",)).answer_headers(["https://anyone.example"])
    assert (headers["Access-Control-Allow-Origin"], headers["Timing-Allow-Origin"]) == ("*", "*")


@pytest.mark.parametrize("sent", [["https://other.example"], ["null"]])
def test_another_origin_gets_only_vary(sent: list[str]) -> None:
    assert POLICY.answer_headers(sent) == {"Vary": "Origin"}


def test_an_answer_without_origin_lets_every_configured_origin_read_its_timing() -> None:
    """An <img> sends no Origin; its page reads Server-Timing only if Timing-Allow-Origin names it."""
    assert POLICY.answer_headers([]) == {"Vary": "Origin", "Timing-Allow-Origin": f"{DASH}, {LOCAL}"}


def test_without_origins_there_is_no_cors_header_at_all() -> None:
    assert CorsPolicy().answer_headers([DASH]) == {}


def test_resource_policy_is_on_every_answer_cors_or_not() -> None:
    policy = CorsPolicy(resource_policy=ResourcePolicy.SAME_SITE)
    assert policy.answer_headers([]) == {"Cross-Origin-Resource-Policy": "same-site"}
    assert CorsPolicy(origins=(DASH,), resource_policy=ResourcePolicy.CROSS_ORIGIN).answer_headers(
        ["https://other.example"])["Cross-Origin-Resource-Policy"] == "cross-origin"


def test_preflight_for_post_allows_authorization_and_content_type() -> None:
    headers = CorsPolicy(origins=(DASH,), max_age=900).preflight_headers([DASH], "POST", {"POST"})
    assert headers == {
        "Access-Control-Allow-Origin": DASH,
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Authorization, Content-Type",
        "Access-Control-Max-Age": "900",
        "Vary": "Origin, Access-Control-Request-Method",
    }


def test_preflight_for_get_allows_authorization_validators_and_range() -> None:
    headers = POLICY.preflight_headers([DASH], "GET", {"GET", "HEAD"})
    assert headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert headers["Access-Control-Allow-Headers"].split(", ") == [
        "Authorization", "If-Match", "If-Modified-Since", "If-None-Match", "If-Range",
        "If-Unmodified-Since", "Range"]


@pytest.mark.parametrize("sent", [["https://other.example"], ["null"], [], [DASH, DASH]])
def test_preflight_from_another_origin_is_refused(sent: list[str]) -> None:
    with pytest.raises(OriginNotAllowed):
        POLICY.preflight_headers(sent, "GET", {"GET", "HEAD"})


def test_preflight_without_any_configured_origin_is_refused() -> None:
    with pytest.raises(OriginNotAllowed):
        CorsPolicy().preflight_headers([DASH], "GET", {"GET", "HEAD"})


def test_preflight_for_a_method_the_route_does_not_answer_is_405() -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        POLICY.preflight_headers([DASH], "PUT", {"GET", "HEAD"})
    assert caught.value.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(("existing", "expected"), [
    (None, "Origin"),
    ("", "Origin"),
    ("Accept", "Accept, Origin"),
    ("accept, origin", "accept, origin"),
])
def test_merge_vary_adds_each_name_once(existing: str | None, expected: str) -> None:
    assert merge_vary(existing, "Origin") == expected
