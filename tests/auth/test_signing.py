"""auth/signing.py: the canonical form and its fixed vector, sign_url/UrlSigner, verify, parse_query."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import urlsplit

import pytest

from imgproxy.auth.signing import (
    MAX_PARAM_BYTES,
    UrlSigner,
    canonical_form,
    parse_query,
    sign_url,
    verify_signature,
)
from imgproxy.errors import (
    BadRequest,
    ExpiredSignature,
    ExpiryTooFar,
    InvalidParameter,
    InvalidPath,
    InvalidSignature,
    UnknownKeyId,
)
from imgproxy.protocol.paths import parse_image_path

# The fixed test vector: the README's "Signing spec" shows exactly these values.
VECTOR_SECRET = "imgproxy-test-vector-secret-0123456789abcdef"
VECTOR_SOURCE = "photos"
VECTOR_KEY = "employees/Zoë Smith+1.jpg"
VECTOR_EXP = 1767225600
VECTOR_KID = "k1"
VECTOR_PARAMS = {"w": "300"}
VECTOR_BASE_URL = "https://img.example.com"
VECTOR_CANONICAL = "/img/photos/employees/Zo%C3%AB%20Smith%2B1.jpg?exp=1767225600&kid=k1&w=300"
VECTOR_SIG = "D03MHBwmafOnoZD_Dh37nPUR-vsbQfaZ0SFjDYjoFZI"
VECTOR_URL = (
    "https://img.example.com/img/photos/employees/Zo%C3%AB%20Smith%2B1.jpg"
    "?exp=1767225600&kid=k1&w=300&sig=D03MHBwmafOnoZD_Dh37nPUR-vsbQfaZ0SFjDYjoFZI"
)

SECRET_1 = b"first-signing-key-0123456789abcdef-0123"
SECRET_2 = b"second-signing-key-0123456789abcdef-012"
NOW = 1_700_000_000.0
MAX_TTL = 3600.0
CLOCK_SKEW = 60.0


def sign_vector() -> str:
    return sign_url(VECTOR_SOURCE, VECTOR_KEY, secret=VECTOR_SECRET, exp=VECTOR_EXP, kid=VECTOR_KID,
                    params=VECTOR_PARAMS, base_url=VECTOR_BASE_URL)


def request_parts(url: str, max_params: int = 32) -> tuple[str, str, dict[str, str]]:
    """What the server sees of a URL: (source, key, params), decoded as in the request path."""
    parts = urlsplit(url)
    target = parse_image_path(parts.path)
    return target.source, target.key, parse_query(parts.query, max_params)


def verify(
    source: str,
    key: str,
    params: Mapping[str, str],
    keys: Mapping[str, bytes] | None = None,
    now: float = NOW,
) -> str:
    return verify_signature(source, key, params, keys={"k1": SECRET_1} if keys is None else keys,
                            now=now, max_ttl=MAX_TTL, clock_skew=CLOCK_SKEW)


def signed(
    key: str = "employees/ada.jpg",
    *,
    exp: int = int(NOW) + 600,
    kid: str | None = "k1",
    secret: bytes = SECRET_1,
    params: Mapping[str, str] | None = None,
    source: str = "photos",
) -> dict[str, str]:
    """The decoded query parameters of a freshly signed URL."""
    return request_parts(sign_url(source, key, secret=secret, exp=exp, kid=kid, params=params))[2]


# --- the fixed vector -------------------------------------------------------------------------

def test_vector_canonical_form_is_fixed() -> None:
    params = {**VECTOR_PARAMS, "exp": str(VECTOR_EXP), "kid": VECTOR_KID}
    assert canonical_form(VECTOR_SOURCE, VECTOR_KEY, params) == VECTOR_CANONICAL


def test_vector_sig_is_hmac_sha256_of_canonical_form_in_unpadded_base64url() -> None:
    digest = hmac.new(VECTOR_SECRET.encode("utf-8"), VECTOR_CANONICAL.encode("utf-8"), hashlib.sha256)
    independent = base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")
    assert independent == VECTOR_SIG


def test_vector_signed_url_is_fixed() -> None:
    assert sign_vector() == VECTOR_URL


def test_vector_url_is_canonical_form_plus_sig() -> None:
    assert sign_vector() == f"{VECTOR_BASE_URL}{VECTOR_CANONICAL}&sig={VECTOR_SIG}"


def test_vector_url_verifies_with_its_key() -> None:
    source, key, params = request_parts(VECTOR_URL)
    kid = verify_signature(source, key, params, keys={"k1": VECTOR_SECRET.encode()},
                           now=VECTOR_EXP - 60, max_ttl=3600, clock_skew=0)
    assert kid == "k1"


def test_url_signer_adds_iat_to_the_vector() -> None:
    """UrlSigner stamps ``iat`` (exp - ttl without a window) beside ``exp``: the vector's URL
    with one more signed parameter."""
    signer = UrlSigner(VECTOR_SECRET, kid=VECTOR_KID, base_url=VECTOR_BASE_URL + "/")
    url = signer.sign(VECTOR_SOURCE, VECTOR_KEY, ttl=600, params=VECTOR_PARAMS, now=VECTOR_EXP - 600)
    assert url == sign_url(VECTOR_SOURCE, VECTOR_KEY, secret=VECTOR_SECRET, exp=VECTOR_EXP,
                           iat=VECTOR_EXP - 600, kid=VECTOR_KID, params=VECTOR_PARAMS,
                           base_url=VECTOR_BASE_URL)
    assert f"?exp={VECTOR_EXP}&iat={VECTOR_EXP - 600}&kid=k1&w=300&sig=" in url


def test_bytes_and_str_secrets_sign_the_same() -> None:
    as_bytes = sign_url(VECTOR_SOURCE, VECTOR_KEY, secret=VECTOR_SECRET.encode(), exp=VECTOR_EXP,
                        kid=VECTOR_KID, params=VECTOR_PARAMS, base_url=VECTOR_BASE_URL)
    assert as_bytes == VECTOR_URL


# --- verify_signature -------------------------------------------------------------------------

def test_valid_signature_returns_its_key_id() -> None:
    assert verify("photos", "employees/ada.jpg", signed()) == "k1"


def test_signature_without_kid_verifies_when_one_key_is_active() -> None:
    assert verify("photos", "employees/ada.jpg", signed(kid=None)) == "k1"


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ("photos", "employees/bob.jpg"),
        ("photos", "employees/ada.jpeg"),
        ("photos", "Employees/ada.jpg"),
        ("photos", "employees//ada.jpg"),
        ("photos", "employees/ada.jpg/"),
        ("archive", "employees/ada.jpg"),
    ],
)
def test_tampered_path_is_rejected(source: str, key: str) -> None:
    with pytest.raises(InvalidSignature):
        verify(source, key, signed("employees/ada.jpg"))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("w", "301"),
        ("w", "300 "),
        ("w", ""),
        ("exp", str(int(NOW) + 601)),
        ("exp", str(int(NOW) + 599)),
        ("exp", f"0{int(NOW) + 600}"),
        ("sig", "A" * 43),
    ],
)
def test_tampered_parameter_is_rejected(name: str, value: str) -> None:
    params = {**signed(params={"w": "300"}), name: value}
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params)


def test_tampered_kid_is_rejected() -> None:
    keys = {"k1": SECRET_1, "k2": SECRET_2}
    params = {**signed(kid="k1"), "kid": "k2"}
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params, keys=keys)


def test_added_parameter_is_rejected() -> None:
    params = {**signed(params={"w": "300"}), "h": "200"}
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params)


def test_removed_parameter_is_rejected() -> None:
    params = signed(params={"w": "300", "h": "200"})
    del params["h"]
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params)


def test_removed_kid_is_rejected() -> None:
    params = signed(kid="k1")
    del params["kid"]
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params)


def test_missing_sig_is_rejected() -> None:
    params = signed()
    del params["sig"]
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params)


def test_signature_made_with_another_secret_is_rejected() -> None:
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", signed(secret=SECRET_2))


def test_padded_signature_is_rejected() -> None:
    params = signed()
    params["sig"] += "="
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params)


def test_non_ascii_signature_is_rejected_not_crashing() -> None:
    params = {**signed(), "sig": "é" * 43}
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params)


def test_signature_error_does_not_reveal_the_expected_signature() -> None:
    good = signed()
    with pytest.raises(InvalidSignature) as caught:
        verify("photos", "employees/ada.jpg", {**good, "sig": "A" * 43})
    text = f"{caught.value} {caught.value.public_message} {caught.value.headers}"
    assert good["sig"] not in text


def test_expired_signature_is_rejected() -> None:
    with pytest.raises(ExpiredSignature):
        verify("photos", "employees/ada.jpg", signed(exp=int(NOW) - 1))


def test_signature_expiring_this_second_is_still_valid() -> None:
    assert verify("photos", "employees/ada.jpg", signed(exp=int(NOW))) == "k1"


def test_expired_signature_with_wrong_sig_is_a_signature_error() -> None:
    params = {**signed(exp=int(NOW) - 1), "sig": "A" * 43}
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", params)


def test_exp_further_ahead_than_max_ttl_plus_clock_skew_is_rejected() -> None:
    exp = int(NOW + MAX_TTL + CLOCK_SKEW) + 1
    with pytest.raises(ExpiryTooFar):
        verify("photos", "employees/ada.jpg", signed(exp=exp))


def test_exp_exactly_max_ttl_plus_clock_skew_ahead_is_accepted() -> None:
    exp = int(NOW + MAX_TTL + CLOCK_SKEW)
    assert verify("photos", "employees/ada.jpg", signed(exp=exp)) == "k1"


def test_unknown_kid_is_rejected() -> None:
    with pytest.raises(UnknownKeyId):
        verify("photos", "employees/ada.jpg", signed(kid="k9"))


def test_missing_kid_with_several_keys_is_rejected() -> None:
    with pytest.raises(UnknownKeyId, match="several keys"):
        verify("photos", "employees/ada.jpg", signed(kid=None), keys={"k1": SECRET_1, "k2": SECRET_2})


def test_missing_exp_is_a_bad_parameter() -> None:
    params = signed()
    del params["exp"]
    with pytest.raises(InvalidParameter, match="missing exp"):
        verify("photos", "employees/ada.jpg", params)


@pytest.mark.parametrize(
    "exp",
    ["", "soon", "-1", "+1767225600", "1767225600.0", "1e9", " 1767225600", "1767225600\n",
     "1" * 13, "١٧٦٧٢٢٥٦٠٠"],
)
def test_malformed_exp_is_a_bad_parameter(exp: str) -> None:
    params = {**signed(), "exp": exp}
    with pytest.raises(InvalidParameter, match="malformed exp"):
        verify("photos", "employees/ada.jpg", params)


@pytest.mark.parametrize(
    ("kid", "secret"),
    [
        ("k1", SECRET_1),
        ("k2", SECRET_2),
    ],
)
def test_each_active_key_verifies_urls_signed_with_it(kid: str, secret: bytes) -> None:
    keys = {"k1": SECRET_1, "k2": SECRET_2}
    assert verify("photos", "employees/ada.jpg", signed(kid=kid, secret=secret), keys=keys) == kid


def test_url_signed_with_one_key_does_not_verify_under_the_other_kid() -> None:
    keys = {"k1": SECRET_1, "k2": SECRET_2}
    with pytest.raises(InvalidSignature):
        verify("photos", "employees/ada.jpg", signed(kid="k2", secret=SECRET_1), keys=keys)


@pytest.mark.parametrize(
    "raw_path",
    [
        "/img/photos/employees/Zo%C3%AB%20Smith%2B1.jpg",
        "/img/photos/employees/Zo%c3%ab%20Smith%2b1.jpg",
        "/img/photos/employees/Zoë%20Smith+1.jpg",
        "/img/photos/employees/Zo%C3%AB Smith+1.jpg",
        "/img/photos/employees%2FZo%C3%AB%20Smith%2B1.jpg",
        "/img/%70hotos/%65mployees/%5A%6F%C3%AB%20%53mith%2B%31%2E%6A%70%67",
    ],
)
def test_equivalent_encoding_of_the_same_key_verifies(raw_path: str) -> None:
    _, _, params = request_parts(VECTOR_URL)
    target = parse_image_path(raw_path)
    kid = verify_signature(target.source, target.key, params, keys={"k1": VECTOR_SECRET.encode()},
                           now=VECTOR_EXP - 60, max_ttl=3600, clock_skew=0)
    assert kid == "k1"


@pytest.mark.parametrize(
    "raw_query",
    [
        "exp=1767225600&kid=k1&w=300&sig=D03MHBwmafOnoZD_Dh37nPUR-vsbQfaZ0SFjDYjoFZI",
        "sig=D03MHBwmafOnoZD_Dh37nPUR-vsbQfaZ0SFjDYjoFZI&w=300&kid=k1&exp=1767225600",
        "exp=1767225600&kid=%6B1&w=%33%30%30&sig=D03MHBwmafOnoZD_Dh37nPUR-vsbQfaZ0SFjDYjoFZI",
    ],
)
def test_equivalent_encoding_or_order_of_the_query_verifies(raw_query: str) -> None:
    kid = verify_signature(VECTOR_SOURCE, VECTOR_KEY, parse_query(raw_query, 32),
                           keys={"k1": VECTOR_SECRET.encode()}, now=VECTOR_EXP - 60, max_ttl=3600,
                           clock_skew=0)
    assert kid == "k1"


@pytest.mark.parametrize(
    "params",
    [
        {"text": "a b"},
        {"text": "a+b"},
        {"text": "100%"},
        {"text": "x=y&z"},
        {"tëxt": "日本"},
        {"a b": "c"},
    ],
)
def test_unusual_parameters_survive_signing_and_verification(params: dict[str, str]) -> None:
    query = signed(params=params)
    assert {name: query[name] for name in params} == params
    assert verify("photos", "employees/ada.jpg", query) == "k1"


@pytest.mark.parametrize("key", ["a b.jpg", "Zoë+1.jpg", "100%.jpg", "w=300.jpg", "q?x#y.jpg", "日本/猫.png"])
def test_unusual_keys_survive_signing_and_verification(key: str) -> None:
    source, decoded_key, params = request_parts(
        sign_url("photos", key, secret=SECRET_1, exp=int(NOW) + 60, kid="k1"))
    assert decoded_key == key
    assert verify(source, decoded_key, params) == "k1"


# --- sign_url and UrlSigner -------------------------------------------------------------------

def test_url_signer_repr_hides_the_secret() -> None:
    signer = UrlSigner(VECTOR_SECRET, kid="k1", base_url=VECTOR_BASE_URL)
    assert VECTOR_SECRET not in repr(signer)
    assert VECTOR_SECRET not in str(signer)
    assert VECTOR_SECRET not in f"{[signer]}"


def test_url_signer_repr_shows_its_kid() -> None:
    assert "'k1'" in repr(UrlSigner(VECTOR_SECRET, kid="k1"))


@pytest.mark.parametrize("name", ["exp", "kid", "sig"])
def test_sign_url_refuses_reserved_parameters(name: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        sign_url("photos", "a.jpg", secret=SECRET_1, exp=VECTOR_EXP, params={name: "1"})


@pytest.mark.parametrize("key", ["../secret.jpg", "a\\b", "a\x00b", ""])
def test_sign_url_refuses_keys_the_server_would_reject(key: str) -> None:
    with pytest.raises(InvalidPath):
        sign_url("photos", key, secret=SECRET_1, exp=VECTOR_EXP)


def test_url_signer_sets_exp_to_now_plus_ttl() -> None:
    url = UrlSigner(SECRET_1, kid="k1").sign("photos", "a.jpg", ttl=90, now=NOW)
    assert request_parts(url)[2]["exp"] == str(int(NOW) + 90)


def test_url_signer_without_kid_leaves_kid_out() -> None:
    url = UrlSigner(SECRET_1).sign("photos", "a.jpg", now=NOW)
    assert "kid" not in request_parts(url)[2]


def test_sign_many_gives_the_same_urls_as_repeated_sign() -> None:
    signer = UrlSigner(VECTOR_SECRET, kid="k1", base_url=VECTOR_BASE_URL)
    items: list[tuple[str, str, Mapping[str, str] | None]] = [
        ("photos", "a.jpg", None),
        ("photos", "employees/Zoë Smith+1.jpg", {"w": "300"}),
        ("archive", "b c.png", {"w": "10", "h": "20"}),
    ]
    expected = [signer.sign(s, k, ttl=600, params=p, now=NOW) for s, k, p in items]
    assert signer.sign_many(items, ttl=600, now=NOW) == expected


def test_sign_many_uses_one_expiry_for_every_url() -> None:
    urls = UrlSigner(SECRET_1).sign_many([("photos", f"{i}.jpg", None) for i in range(3)], ttl=60)
    assert len({request_parts(url)[2]["exp"] for url in urls}) == 1


# --- parse_query ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw_query", "expected"),
    [
        ("", {}),
        ("w=300", {"w": "300"}),
        ("w=300&h=200", {"w": "300", "h": "200"}),
        ("text=a+b", {"text": "a b"}),
        ("text=a%2Bb", {"text": "a+b"}),
        ("text=a%20b", {"text": "a b"}),
        ("a+b=c", {"a b": "c"}),
        ("text=100%25", {"text": "100%"}),
        ("text=x%3Dy", {"text": "x=y"}),
        ("text=x=y", {"text": "x=y"}),
        ("flag", {"flag": ""}),
        ("flag=", {"flag": ""}),
        ("w=300&&h=200&", {"w": "300", "h": "200"}),
        ("t%C3%ABxt=%E6%97%A5", {"tëxt": "日"}),
    ],
)
def test_parse_query_decodes_parameters(raw_query: str, expected: dict[str, str]) -> None:
    assert parse_query(raw_query, 32) == expected


@pytest.mark.parametrize("raw_query", ["w=1&w=2", "w=1&h=2&w=1", "w=1&%77=2", "a+b=1&a%20b=2"])
def test_duplicate_parameter_is_rejected(raw_query: str) -> None:
    with pytest.raises(InvalidParameter, match="duplicate"):
        parse_query(raw_query, 32)


def test_more_parameters_than_allowed_are_rejected() -> None:
    raw_query = "&".join(f"p{i}=1" for i in range(5))
    with pytest.raises(InvalidParameter, match="too many"):
        parse_query(raw_query, 4)


def test_exactly_the_allowed_number_of_parameters_is_accepted() -> None:
    raw_query = "&".join(f"p{i}=1" for i in range(4))
    assert len(parse_query(raw_query, 4)) == 4


@pytest.mark.parametrize("raw_query", ["=1", "=", "w=1&=2", "w=1&=&h=2"])
def test_parameter_without_a_name_is_rejected(raw_query: str) -> None:
    with pytest.raises(InvalidParameter, match="empty parameter name"):
        parse_query(raw_query, 32)


@pytest.mark.parametrize(
    "raw_query",
    [
        "text=" + "a" * MAX_PARAM_BYTES,
        "a" * (MAX_PARAM_BYTES + 1),
        "text=" + "%41" * MAX_PARAM_BYTES,
    ],
)
def test_too_long_parameter_is_rejected(raw_query: str) -> None:
    with pytest.raises(InvalidParameter, match="too long"):
        parse_query(raw_query, 32)


def test_parameter_of_exactly_the_maximum_length_is_accepted() -> None:
    value = "a" * (MAX_PARAM_BYTES - len("text"))
    assert parse_query(f"text={value}", 32) == {"text": value}


@pytest.mark.parametrize("raw_query", ["w=%zz", "w=%", "%zz=1", "w=%C3%28"])
def test_malformed_escape_in_query_is_a_bad_request(raw_query: str) -> None:
    with pytest.raises(BadRequest):
        parse_query(raw_query, 32)


# --- iat, durable URLs and sub (issue 13) ----------------------------------------------------------

@pytest.mark.parametrize("window", [0, 1, 60, 300, 3600, 0.5])
@pytest.mark.parametrize("ttl", [1, 59.5, 600, 3600, 7 * 86400])
def test_iat_is_never_after_signing_and_changes_only_with_exp(window: float, ttl: float) -> None:
    from imgproxy.auth.signing import stamps
    for step in range(0, 7200, 37):
        now = NOW + step + 0.25
        exp, iat = stamps(now, ttl, window)
        assert exp is not None
        assert iat <= now < exp
        later_exp, later_iat = stamps(now + 0.7, ttl, window)
        if later_exp == exp:
            assert later_iat == iat


def test_a_durable_url_has_iat_rounded_down_to_the_window_and_no_exp() -> None:
    signer = UrlSigner(SECRET_1, "k1")
    start = int(NOW) // 60 * 60
    url = signer.sign("photos", "a.jpg", now=start + 59.5, window=60, durable=True)
    assert "exp=" not in url
    assert f"iat={start}&" in url
    assert url == signer.sign("photos", "a.jpg", now=start, window=60, durable=True)
    assert url != signer.sign("photos", "a.jpg", now=start + 60, window=60, durable=True)


def test_sub_is_signed() -> None:
    url = UrlSigner(SECRET_1, "k1").sign("photos", "a.jpg", now=NOW, sub="zoë@example.com")
    assert "&sub=zo%C3%AB%40example.com&sig=" in url
    source, key, params = request_parts(url)
    assert params["sub"] == "zoë@example.com"
    assert verify_signature(source, key, params, keys={"k1": SECRET_1}, now=NOW, max_ttl=MAX_TTL,
                            clock_skew=CLOCK_SKEW) == "k1"
    params["sub"] = "someone else"
    with pytest.raises(InvalidSignature):
        verify_signature(source, key, params, keys={"k1": SECRET_1}, now=NOW, max_ttl=MAX_TTL,
                         clock_skew=CLOCK_SKEW)


@pytest.mark.parametrize("sub", ["", "x" * 129, "a\nb", "a\x00", "\u2028", "\x85"])
def test_a_bad_sub_is_refused_by_the_signer(sub: str) -> None:
    with pytest.raises(ValueError, match="sub"):
        UrlSigner(SECRET_1, "k1").sign("photos", "a.jpg", now=NOW, sub=sub)


@pytest.mark.parametrize("name", ["iat", "sub"])
def test_iat_and_sub_are_reserved(name: str) -> None:
    with pytest.raises(ValueError, match="reserved"):
        sign_url("photos", "a.jpg", secret=SECRET_1, exp=VECTOR_EXP, params={name: "1"})


def test_a_malformed_iat_is_400() -> None:
    url = sign_url("photos", "a.jpg", secret=SECRET_1, exp=int(NOW) + 60, kid="k1")
    source, key, params = request_parts(url)
    params["iat"] = "soon"
    with pytest.raises(InvalidParameter, match="iat"):
        verify_signature(source, key, params, keys={"k1": SECRET_1}, now=NOW, max_ttl=MAX_TTL,
                         clock_skew=CLOCK_SKEW)
