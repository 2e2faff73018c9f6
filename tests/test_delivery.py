"""delivery.py (pure): which way an original leaves, and the windowed presign plan; plus the
config's overlap rule that keeps a URL handed out late in its window usable."""

from __future__ import annotations

from typing import Any

import pytest
from support import config_data

from imgproxy.config import MAX_TTL_LIMIT, ConfigError, DeliveryConfig, DeliveryMode, parse_config
from imgproxy.delivery.policy import Delivery, choose_delivery, presign_window

T0 = 1_800_000_000  # a whole hour (and a whole day's multiple of 3600)
HOUR = DeliveryConfig(presign_window=3600, presign_ttl=7200)
AUTO = DeliveryConfig(mode=DeliveryMode.AUTO, redirect_min_bytes=1000, hot_requests=5)


# choose_delivery -------------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "size", "recent", "expected"), [
    (DeliveryMode.STREAM, 10**12, 10**6, Delivery.STREAM),
    (DeliveryMode.STREAM, None, 1, Delivery.STREAM),
    (DeliveryMode.REDIRECT, None, 1, Delivery.REDIRECT),
    (DeliveryMode.REDIRECT, 1, 1, Delivery.REDIRECT),
    (DeliveryMode.ACCEL, None, 1, Delivery.ACCEL),
    (DeliveryMode.ACCEL, 10**12, 10**6, Delivery.ACCEL),
])
def test_fixed_modes_ignore_size_and_hotness(mode: DeliveryMode, size: int | None, recent: int,
                                             expected: Delivery) -> None:
    config = DeliveryConfig(mode=mode, redirect_min_bytes=1000, hot_requests=5)
    assert choose_delivery(config, size=size, recent_requests=recent) is expected


@pytest.mark.parametrize(("size", "expected"), [
    (None, Delivery.STREAM),  # unknown size: the first request streams and learns it
    (0, Delivery.STREAM),
    (999, Delivery.STREAM),
    (1000, Delivery.STREAM),  # "larger than" redirect_min_bytes: equal is not larger
    (1001, Delivery.REDIRECT),
    (10**12, Delivery.REDIRECT),
])
def test_auto_redirects_only_objects_larger_than_redirect_min_bytes(size: int | None,
                                                                    expected: Delivery) -> None:
    assert choose_delivery(AUTO, size=size, recent_requests=1) is expected


@pytest.mark.parametrize(("recent", "expected"), [
    (1, Delivery.STREAM),
    (5, Delivery.STREAM),  # "more than" hot_requests: equal is not more
    (6, Delivery.REDIRECT),
    (10**6, Delivery.REDIRECT),
])
def test_auto_redirects_objects_requested_more_than_hot_requests_times(recent: int,
                                                                       expected: Delivery) -> None:
    assert choose_delivery(AUTO, size=None, recent_requests=recent) is expected


def test_auto_redirects_a_hot_object_even_when_it_is_small() -> None:
    assert choose_delivery(AUTO, size=10, recent_requests=6) is Delivery.REDIRECT


# presign_window --------------------------------------------------------------------------------

@pytest.mark.parametrize(("first", "second"), [
    (T0, T0 + 3599.999),
    (T0 + 1, T0 + 1800),
    (T0 + 3000.5, T0 + 3001),
])
def test_every_moment_of_a_window_gets_the_same_signing_time_and_lifetime(first: float,
                                                                         second: float) -> None:
    a, b = presign_window(HOUR, first), presign_window(HOUR, second)
    assert (a.signed_at, a.expires_in) == (b.signed_at, b.expires_in) == (T0, 7200)


@pytest.mark.parametrize(("first", "second"), [
    (T0 + 3599.999, T0 + 3600),
    (T0 - 1, T0),
])
def test_a_window_boundary_changes_the_signing_time(first: float, second: float) -> None:
    assert presign_window(HOUR, first).signed_at != presign_window(HOUR, second).signed_at


def test_the_signing_time_is_the_window_start() -> None:
    assert presign_window(HOUR, T0 + 1234.5).signed_at == T0


@pytest.mark.parametrize(("offset", "max_age"), [
    (0, 3600),
    (1, 3599),
    (1000, 2600),
    (1000.5, 2599),  # never a fraction of a second beyond the window
    (3599, 1),
    (3599.5, 0),
])
def test_max_age_is_the_seconds_left_in_the_window(offset: float, max_age: int) -> None:
    assert presign_window(HOUR, T0 + offset).max_age == max_age


def test_the_url_is_valid_for_presign_ttl_from_the_window_start() -> None:
    plan = presign_window(HOUR, T0 + 1000)
    assert (plan.signed_at, plan.expires_in, plan.valid_until) == (T0, 7200, T0 + 7200)


@pytest.mark.parametrize("offset", [0, 1, 1799.5, 3599.999])
def test_a_url_handed_out_late_in_its_window_still_runs_past_the_window(offset: float) -> None:
    plan = presign_window(HOUR, T0 + offset)
    assert plan.valid_until - (T0 + offset) >= 7200 - 3600


@pytest.mark.parametrize(("offset", "credentials_expire"), [
    (0, None),
    (1000, None),
    (1000, T0 + 1800),  # credentials end inside the window
    (1000, T0 + 1061),
    (1000, T0 + 1030),  # too close: signed "now"
    (3599, T0 + 3700),
    (3599.5, None),
])
def test_max_age_never_exceeds_the_urls_remaining_validity(offset: float,
                                                            credentials_expire: float | None) -> None:
    now = T0 + offset
    plan = presign_window(HOUR, now, credentials_expire)
    assert 0 <= plan.max_age <= plan.valid_until - now


def test_temporary_credentials_shorter_than_the_url_cut_its_validity() -> None:
    plan = presign_window(HOUR, T0 + 1000, credentials_expire=T0 + 1800.7)
    assert plan.valid_until == T0 + 1800
    assert plan.signed_at == T0  # still the window start: stable for as long as they last


def test_temporary_credentials_cut_max_age_to_their_expiry() -> None:
    assert presign_window(HOUR, T0 + 1000, credentials_expire=T0 + 1800).max_age == 800


def test_temporary_credentials_still_give_one_url_per_window() -> None:
    early = presign_window(HOUR, T0 + 10, credentials_expire=T0 + 1800)
    late = presign_window(HOUR, T0 + 1000, credentials_expire=T0 + 1800)
    assert (early.signed_at, early.expires_in) == (late.signed_at, late.expires_in)


def test_credentials_outliving_the_url_do_not_change_it() -> None:
    assert presign_window(HOUR, T0 + 1000, credentials_expire=T0 + 86400) == presign_window(HOUR, T0 + 1000)


@pytest.mark.parametrize("left", [1, 30, 59])
def test_credentials_about_to_expire_sign_now_and_expire_with_them(left: int) -> None:
    now = T0 + 1000
    plan = presign_window(HOUR, now, credentials_expire=now + left)
    assert plan.signed_at == now
    assert plan.valid_until == now + left
    assert plan.max_age <= left


def test_credentials_with_a_minute_left_still_sign_at_the_window_start() -> None:
    now = T0 + 1000
    assert presign_window(HOUR, now, credentials_expire=now + 60).signed_at == T0


def test_presigned_validity_never_exceeds_s3s_seven_days() -> None:
    config = DeliveryConfig(presign_window=3600, presign_ttl=8 * 86400)  # beyond what config allows
    assert presign_window(config, T0).expires_in == MAX_TTL_LIMIT


# The overlap rule, enforced at start-up -----------------------------------------------------------

def with_delivery(delivery: dict[str, Any], source_delivery: dict[str, Any] | None = None) -> dict[str, Any]:
    data = config_data("http://127.0.0.1:9000", "bucket")
    data["delivery"] = delivery
    if source_delivery is not None:
        data["sources"]["photos"]["delivery"] = source_delivery
    return data


def test_config_refuses_a_presign_ttl_less_than_the_window_plus_a_minute() -> None:
    message = r"^delivery\.presign_ttl: must exceed presign_window by at least 60s"
    with pytest.raises(ConfigError, match=message):
        parse_config(with_delivery({"presign_window": "1h", "presign_ttl": 3659}), environ={})


def test_config_accepts_a_presign_ttl_of_the_window_plus_a_minute() -> None:
    config = parse_config(with_delivery({"presign_window": "1h", "presign_ttl": 3660}), environ={})
    assert config.sources["photos"].delivery.presign_ttl == 3660


def test_config_refuses_a_source_override_that_breaks_the_overlap_rule() -> None:
    with pytest.raises(ConfigError, match=r"^sources\.photos\.delivery\.presign_ttl: "):
        parse_config(with_delivery({}, {"presign_window": "2h"}), environ={})  # ttl stays 2h


def test_config_refuses_a_presign_ttl_beyond_seven_days() -> None:
    with pytest.raises(ConfigError, match=r"^delivery\.presign_ttl: must be between"):
        parse_config(with_delivery({"presign_ttl": "8d"}), environ={})


def test_a_source_inherits_the_global_delivery_and_overrides_only_what_it_names() -> None:
    config = parse_config(with_delivery({"mode": "redirect", "redirect_status": 307, "hot_requests": 9},
                                        {"mode": "stream"}), environ={})
    delivery = config.sources["photos"].delivery
    assert (delivery.mode, delivery.redirect_status, delivery.hot_requests) == ("stream", 307, 9)


@pytest.mark.parametrize(("delivery", "message"), [
    ({"mode": "fast"}, r"^delivery\.mode: must be one of stream, redirect, auto, accel$"),
    ({"redirect_status": 301}, r"^delivery\.redirect_status: must be 302, 303 or 307$"),
    ({"accel_location": "no-slash"}, r"^delivery\.accel_location: "),
    ({"redirect_min_bytes": "lots"}, r"^delivery\.redirect_min_bytes: "),
    ({"surprise": 1}, r"^delivery\.surprise: unknown key$"),
])
def test_config_names_the_bad_delivery_key(delivery: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(with_delivery(delivery), environ={})


@pytest.mark.parametrize(("mode", "size", "recent", "expected"), [
    (DeliveryMode.REDIRECT, None, 1, Delivery.STREAM),
    (DeliveryMode.AUTO, 10**12, 10**6, Delivery.STREAM),  # large and hot: still not redirected
    (DeliveryMode.ACCEL, None, 1, Delivery.ACCEL),  # nginx answers on the proxy's own origin
    (DeliveryMode.STREAM, None, 1, Delivery.STREAM),
])
def test_a_request_with_an_origin_header_is_never_redirected(mode: DeliveryMode, size: int | None,
                                                             recent: int, expected: Delivery) -> None:
    config = DeliveryConfig(mode=mode, redirect_min_bytes=1000, hot_requests=5)
    assert choose_delivery(config, size=size, recent_requests=recent, has_origin=True) is expected
