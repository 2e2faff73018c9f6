"""A source's credentials as plain values, for signing the presigned body GETs and redirects."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aiobotocore.session import AioSession

from imgproxy.config import SourceConfig
from imgproxy.errors import StorageError
from imgproxy.storage.presign import PresignCredentials

log = logging.getLogger("imgproxy.storage")


class Credentials:
    """The source's credentials as plain values for presigning: explicit ones from the config,
    else the standard AWS chain (refreshed by botocore before temporary ones expire)."""

    def __init__(self, source: SourceConfig, session: AioSession) -> None:
        self._source = source
        self._session = session
        self._chain: Any = None

    def __repr__(self) -> str:
        return f"Credentials(source={self._source.name!r})"

    async def current(self) -> tuple[PresignCredentials, float | None]:
        """Frozen credentials and, for temporary ones, when they expire (unix seconds)."""
        src = self._source
        if src.access_key_id is not None and src.secret_access_key is not None:
            token = src.session_token.reveal() if src.session_token else None
            return PresignCredentials(src.access_key_id.reveal(), src.secret_access_key.reveal(), token), None
        if self._chain is None:
            self._chain = await self._session.get_credentials()
        if self._chain is None:
            log.error("no AWS credentials found for presigning (source=%s)", src.name)
            raise StorageError(f"source={src.name}: no credentials")
        frozen = await self._chain.get_frozen_credentials()
        expiry = getattr(self._chain, "_expiry_time", None)
        expires = expiry.timestamp() if isinstance(expiry, datetime) else None
        return PresignCredentials(frozen.access_key, frozen.secret_key, frozen.token), expires
