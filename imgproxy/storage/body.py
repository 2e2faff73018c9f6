"""An open S3 object body: read it chunk by chunk, close it to free its connection at once.

A streamed body can also *detach*: while its client has stopped taking bytes, it closes its S3
response and gives its connection slot back, and the next read reopens the object at the byte
where it stopped (a ranged GET with ``If-Match`` on the same ETag, so a changed object fails the
stream instead of splicing two versions). A client that does not read then holds a socket and a
buffer, but no S3 connection: a handful of such clients cannot starve the source's pool. It
happens only when the pool is at least half taken, so an idle proxy costs no extra GETs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import aiohttp

from imgproxy.config import SourceConfig
from imgproxy.storage.errors import translate
from imgproxy.storage.pool import Slot

DETACH_AFTER: Final = 1.0  # seconds a client must have stalled before its stream lets go ...
DETACH_FOR_WAITER: Final = 0.2  # ... or this long, when a request is waiting for a connection


@dataclass(frozen=True, slots=True)
class ResumeFrom:
    """Where a body lies in its object, so it can be reopened at any byte of it."""

    etag: str  # strong, as S3 gives it: the reopened part must be the same version
    first: int  # the object byte this body started at
    last: int | None  # the last byte it ends at (inclusive); None: the object's end


# (etag, offset, last) -> a response positioned at ``offset``, and the slot it holds.
Reopen = Callable[[str, int, int | None], Awaitable[tuple[aiohttp.ClientResponse, Slot]]]


class ObjectBody:
    """An open S3 response body; ``close()`` frees its connection and its pool slot."""

    def __init__(self, response: aiohttp.ClientResponse, slot: Slot | None, source: SourceConfig,
                 resume: tuple[ResumeFrom, Reopen] | None = None) -> None:
        self._response: aiohttp.ClientResponse | None = response
        self._slot = slot
        self._source = source
        self._resume = resume
        self._consumed = 0
        self._reading = False
        self._closed = False
        self.detaches = 0

    @property
    def is_detached(self) -> bool:
        return self._response is None and not self._closed

    async def read(self, size: int) -> bytes:
        if self._closed:
            return b""
        if self._response is None:
            await self._reattach()
        assert self._response is not None
        self._reading = True
        try:
            data = await self._response.content.read(size)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise translate(self._source, exc, "read") from None
        finally:
            self._reading = False
        self._consumed += len(data)
        if not data and self._slot is not None:  # at its end the connection went back to the pool
            self._slot.release()
        return data

    def on_client_stall(self, stalled_for: float) -> None:
        """The send watch's report: let go only when others need the pool (an idle pool
        keeps the connection, so slow but steady clients cause no extra GETs)."""
        if self._slot is None:
            return
        pool = self._slot.pool
        if (stalled_for >= DETACH_FOR_WAITER and pool.waiting) or (stalled_for >= DETACH_AFTER
                                                                    and pool.is_pressed):
            self.detach()

    def detach(self) -> bool:
        """Let go of the S3 connection now, if this body can pick up later; between reads only."""
        if self._resume is None or self._reading or self._response is None or self._closed:
            return False
        self._response.close()
        self._response = None
        if self._slot is not None:
            self._slot.release()
            self._slot = None
        self.detaches += 1
        return True

    async def _reattach(self) -> None:
        assert self._resume is not None
        where, reopen = self._resume
        self._response, self._slot = await reopen(where.etag, where.first + self._consumed, where.last)

    def close(self) -> None:
        self._closed = True
        if self._response is not None:
            self._response.close()
            self._response = None
        if self._slot is not None:
            self._slot.release()
            self._slot = None
