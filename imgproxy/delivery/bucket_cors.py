"""The S3 bucket CORS rules that redirect delivery needs (``imgproxy cors``), from the config.

Pure. With ``redirect`` (or ``auto``) delivery a browser fetches the bytes from S3 itself, and
a script's fetch then needs the bucket's CORS as well as the proxy's. The proxy never redirects
a request that carries ``Origin`` (``policy.choose_delivery``), so what reaches S3 through a
redirect is a request that had none: a same-origin ``fetch()`` on the proxy's own origin
(``server.public_url``), which the browser repeats to S3 with ``Origin: <that origin>``. The
rules allow that origin and ``server.cors_origins`` (for URLs that reach S3 some other way),
``GET``/``HEAD``, the validators and ``Range`` a followed redirect carries (never
``Authorization``: the browser drops it across origins, and S3 refuses it beside a presigned
query), and expose ``ETag`` and ``Content-Range``. The document is what
``aws s3api put-bucket-cors --cors-configuration file://cors.json`` takes.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from imgproxy.config import Config, DeliveryMode
from imgproxy.config.cors import ANY_ORIGIN, DEFAULT_PORTS

REDIRECTING: Final = (DeliveryMode.REDIRECT, DeliveryMode.AUTO)
FOLLOWED_HEADERS: Final = ("Range", "If-Match", "If-None-Match", "If-Modified-Since",
                           "If-Unmodified-Since", "If-Range")
S3_EXPOSED: Final = ("ETag", "Content-Range", "Content-Length", "Accept-Ranges")


def own_origin(base_url: str) -> str:
    """The serialized origin of the proxy's public URL (``https://img.example.com``)."""
    parts = urlsplit(base_url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return f"{scheme}://{host}" if port in (None, DEFAULT_PORTS.get(scheme)) else f"{scheme}://{host}:{port}"


def bucket_cors(config: Config) -> dict[str, Any]:
    """``{"CORSRules": [...]}`` for a bucket that redirect delivery sends browsers to."""
    origins = config.server.cors_origins
    if origins != (ANY_ORIGIN,):
        origins = tuple(dict.fromkeys((own_origin(config.server.base_url), *origins)))
    return {"CORSRules": [{
        "AllowedOrigins": list(origins),
        "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": list(FOLLOWED_HEADERS),
        "ExposeHeaders": list(S3_EXPOSED),
        "MaxAgeSeconds": int(config.server.cors_max_age),
    }]}


def redirecting_buckets(config: Config) -> dict[str, tuple[str, DeliveryMode]]:
    """Per source whose delivery may redirect: its bucket and mode (the buckets to configure)."""
    return {name: (source.bucket, source.delivery.mode) for name, source in config.sources.items()
            if source.delivery.mode in REDIRECTING}
