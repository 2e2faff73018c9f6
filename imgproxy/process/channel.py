"""The pipe from the supervisor to one worker: each message a config the supervisor validated.

A reload reads and checks the config once, in the supervisor, and hands every worker that very
``Config`` (secrets resolved, restart-only keys already kept as they were), so no worker reads
the file again and none can load other content than the one validated. A message is a 4-byte
length and a pickle; only our own parent writes to the pipe (it was made before the fork).
The supervisor never blocks long on a worker that does not read: a write that cannot finish
within ``SEND_SECONDS`` is abandoned, and the supervisor stops that worker gracefully (its pipe
may hold half a message); its replacement is forked with the new config.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import pickle
import select
import struct
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Final

from imgproxy.config import Config

log = logging.getLogger("imgproxy.reload")
SEND_SECONDS: Final = 5.0
_HEADER: Final = struct.Struct(">I")


def _mapping_proxy(items: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(items)


class _Pickler(pickle.Pickler):
    """The config's read-only tables (``MappingProxyType``) travel as dicts and arrive read-only."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, MappingProxyType):
            return _mapping_proxy, (dict(obj),)
        return NotImplemented


def encode(config: Config, version: str) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((config, version))
    payload = buffer.getvalue()
    return _HEADER.pack(len(payload)) + payload


def send(fd: int, message: bytes, timeout: float = SEND_SECONDS) -> bool:
    """Write all of ``message`` to a non-blocking pipe within ``timeout``; False if it could not."""
    deadline = time.monotonic() + timeout
    view = memoryview(message)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        _, ready, _ = select.select([], [fd], [], remaining)
        if not ready:
            continue
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
        except OSError:  # the worker is gone (EPIPE): its replacement starts with the new config
            return False
    return True


class Receiver:
    """The worker's end: reads messages on the loop and hands each ``(config, version)`` on."""

    def __init__(self, fd: int, deliver: Callable[[Config, str], None]) -> None:
        self._fd = fd
        self._deliver = deliver
        self._buffer = bytearray()
        os.set_blocking(fd, False)

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._fd)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return
        if not data:  # the supervisor is gone; the orphan watch stops this worker
            asyncio.get_running_loop().remove_reader(self._fd)
            return
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < _HEADER.size + size:
                return
            payload = bytes(self._buffer[_HEADER.size:_HEADER.size + size])
            del self._buffer[:_HEADER.size + size]
            try:
                config, version = pickle.loads(payload)  # noqa: S301 (our parent wrote it)
            except Exception as exc:
                log.warning("reload: this worker (pid %d) could not read the config its supervisor "
                            "sent (%s); it keeps its config", os.getpid(), exc.__class__.__name__)
                continue
            self._deliver(config, version)
