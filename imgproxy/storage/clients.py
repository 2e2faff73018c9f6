"""The aiobotocore side of a source: its session and long-lived client (HEAD, LIST)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession

from imgproxy.config import SourceConfig
from imgproxy.storage.tls import botocore_verify

log = logging.getLogger("imgproxy.storage")


def new_session(source: SourceConfig) -> AioSession:
    return AioSession(profile=source.profile) if source.profile else AioSession()


@asynccontextmanager
async def s3_client(source: SourceConfig, session: AioSession | None = None) -> AsyncIterator[Any]:
    """One aiobotocore client for the source's lifetime: bounded pool, timeouts, retries, and
    the source's TLS trust (``storage/tls.py``)."""
    session = session or new_session(source)
    config = AioConfig(
        region_name=source.region,
        signature_version="s3v4",
        connect_timeout=source.connect_timeout,
        read_timeout=source.read_timeout,
        max_pool_connections=source.max_connections,
        retries={"total_max_attempts": source.max_attempts, "mode": "standard"},
        s3={"addressing_style": source.addressing_style.value},
        # botocore >= 1.36 adds CRC checksums by default; MinIO/R2/older stores reject or
        # mangle them. Only send or check checksums where the API requires them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    kwargs: dict[str, Any] = {"config": config, "region_name": source.region}
    if (verify := botocore_verify(source)) is not None:
        kwargs["verify"] = verify  # the source's CA bundle, or no check at all
    if source.endpoint_url:
        kwargs["endpoint_url"] = source.endpoint_url
    if source.access_key_id is not None and source.secret_access_key is not None:
        kwargs["aws_access_key_id"] = source.access_key_id.reveal()
        kwargs["aws_secret_access_key"] = source.secret_access_key.reveal()
        if source.session_token is not None:
            kwargs["aws_session_token"] = source.session_token.reveal()
    async with session.create_client("s3", **kwargs) as client:
        yield client
