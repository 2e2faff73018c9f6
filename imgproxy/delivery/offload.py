"""Offloaded answers: the proxy authorizes, S3 (or nginx) moves the bytes.

- redirect: ``302``/``307`` to a presigned GET URL that is identical for every request in a
  window, with ``Cache-Control: private, max-age=<seconds left in the window>``.
- accel: ``X-Accel-Redirect`` to an internal nginx location, with the presigned URL in
  ``X-Imgproxy-Upstream``; nginx fetches it and streams it to the client.

The presigned URL carries ``response-cache-control`` (the source's policy, so the browser
caches the bytes S3 sends) and a safe ``response-content-type`` (types outside the inline
allowlist become ``application/octet-stream`` with ``response-content-disposition: attachment``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from aiohttp import hdrs, web

from imgproxy.cache import SourceMeta
from imgproxy.config import DeliveryConfig
from imgproxy.delivery.policy import Delivery, presign_window
from imgproxy.protocol.cachecontrol import cap_cache_control, private_cache_control
from imgproxy.protocol.media import CONTENT_SECURITY_POLICY, NOSNIFF, is_inline
from imgproxy.storage.s3 import S3Source

UPSTREAM_HEADER: Final = "X-Imgproxy-Upstream"


def s3_response_headers(meta: SourceMeta, cache_control: str,
                        inline_types: tuple[str, ...]) -> dict[str, str]:
    content_type = meta.content_type or "application/octet-stream"
    headers = {"response-cache-control": cache_control}
    if is_inline(content_type, inline_types):
        headers["response-content-type"] = content_type
    else:
        headers["response-content-type"] = "application/octet-stream"
        headers["response-content-disposition"] = "attachment"
    return headers


def capped(config: DeliveryConfig, max_age: float | None) -> DeliveryConfig:
    """A durable URL's presigning: window at most half of ``max_age`` and lifetime at most
    ``max_age``, so a copied presigned URL outlives a revocation by at most ``max_age``."""
    if max_age is None:
        return config
    ttl = max(2, min(int(config.presign_ttl), int(max_age)))
    return replace(config, presign_window=max(1, min(int(config.presign_window), ttl // 2)),
                   presign_ttl=ttl)


async def offload(source: S3Source, key: str, meta: SourceMeta, how: Delivery, now: float,
                  inline_types: tuple[str, ...], max_age_cap: float | None = None,
                  private: bool = False) -> web.Response:
    """``private``: the request was a user's own (S3's answer is then ``private`` too)."""
    config = capped(source.config.delivery, max_age_cap)
    cache_control = (source.config.cache_control if max_age_cap is None
                     else cap_cache_control(source.config.cache_control, max_age_cap))
    if private:
        cache_control = private_cache_control(cache_control)
    credentials, credentials_expire = await source.credentials.current()
    plan = presign_window(config, now, credentials_expire)
    url = source.presign(key, plan.signed_at, plan.expires_in,
                         s3_response_headers(meta, cache_control, inline_types), credentials)
    if how is Delivery.ACCEL:
        return web.Response(status=200, headers={
            "X-Accel-Redirect": config.accel_location,
            UPSTREAM_HEADER: url,
            hdrs.CACHE_CONTROL: cache_control,
            "X-Accel-Buffering": "no",
            # For nginx to add to S3's answer (deploy/nginx.conf), as streamed answers carry them.
            **NOSNIFF,
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        })
    return web.Response(status=config.redirect_status, headers={
        hdrs.LOCATION: url,
        hdrs.CACHE_CONTROL: f"private, max-age={plan.max_age}",
        **NOSNIFF,
    })
