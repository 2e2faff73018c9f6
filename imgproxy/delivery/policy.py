"""Delivery policy: stream, redirect or accel for one original, and windowed presign times.

Pure. ``choose_delivery`` turns the source's mode and what the proxy knows (size from the
metadata cache, recent request count) into a ``Delivery``. ``presign_window`` rounds the signing
time down to the window so every request in it gets the identical presigned URL, and says how
long the browser may cache the redirect.

Overlap rule: a URL signed at the window's start is valid for ``presign_ttl``; config requires
``presign_ttl >= presign_window + 60s``, so a URL handed out at the very end of its window still
has at least ``presign_ttl - presign_window`` to run. Temporary credentials cut that short: the
URL never outlives them, and when less than that minimum would remain, the URL is signed "now"
instead of at the window start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from imgproxy.config import MAX_TTL_LIMIT, MIN_PRESIGNED_VALIDITY, DeliveryConfig, DeliveryMode


class Delivery(StrEnum):
    """What one request gets; the configured ``DeliveryMode`` ``auto`` resolves to one of these."""

    STREAM = "stream"
    REDIRECT = "redirect"
    ACCEL = "accel"


def choose_delivery(config: DeliveryConfig, *, size: int | None, recent_requests: int,
                    head: bool = False, has_origin: bool = False) -> Delivery:
    """``size`` None: not known without asking S3 (the first request streams and learns it).
    ``head``: a HEAD is never redirected (headers only are cheap here, and a URL presigned for
    GET answers a HEAD with 403). ``has_origin``: the request carries an ``Origin`` header (a
    script's cross-origin fetch, ``<img crossorigin>``), and is never redirected either: after a
    redirect to another origin the browser sends ``Origin: null``, which no bucket CORS rule can
    allow with credentials, and the page would need the bucket's CORS as well as the proxy's."""
    if config.mode == DeliveryMode.STREAM:
        return Delivery.STREAM
    if config.mode == DeliveryMode.ACCEL:
        return Delivery.ACCEL
    if head or has_origin:
        return Delivery.STREAM
    if config.mode == DeliveryMode.REDIRECT:
        return Delivery.REDIRECT
    is_large = size is not None and size > config.redirect_min_bytes
    is_hot = recent_requests > config.hot_requests
    return Delivery.REDIRECT if is_large or is_hot else Delivery.STREAM


@dataclass(frozen=True, slots=True)
class PresignPlan:
    signed_at: int  # unix seconds
    expires_in: int
    max_age: int  # seconds a browser may cache the redirect itself

    @property
    def valid_until(self) -> int:
        return self.signed_at + self.expires_in


def presign_window(config: DeliveryConfig, now: float,
                   credentials_expire: float | None = None) -> PresignPlan:
    window = max(1, int(config.presign_window))
    ttl = min(int(config.presign_ttl), MAX_TTL_LIMIT)
    signed_at = int(now // window * window)
    window_end = signed_at + window
    valid_until = signed_at + ttl
    if credentials_expire is not None and credentials_expire < valid_until:
        valid_until = int(credentials_expire)
        if valid_until - now < MIN_PRESIGNED_VALIDITY:
            # Not enough left on these credentials for a window-stable URL: sign for now only.
            signed_at = int(now)
            valid_until = max(signed_at + 1, int(credentials_expire))
    max_age = max(0, min(window_end, valid_until) - math.ceil(now))
    return PresignPlan(signed_at=signed_at, expires_in=valid_until - signed_at, max_age=max_age)
