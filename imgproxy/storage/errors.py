"""Storage failures in the error tree: a botocore or aiohttp exception, or an S3 error answer,
becomes the ``ProxyError`` a client sees. The log gets the detail (for a failed TLS handshake,
the certificate problem); the client a fixed sentence."""

from __future__ import annotations

import logging
from typing import Final

from botocore.exceptions import ClientError, ConnectTimeoutError, NoCredentialsError, ReadTimeoutError

from imgproxy.config import SourceConfig
from imgproxy.errors import ObjectNotFound, PreconditionFailed, ProxyError, StorageError, StorageTimeout
from imgproxy.storage.tls import tls_problem
from imgproxy.storage.worker_read import SourceReadFailed

log = logging.getLogger("imgproxy.storage")
_NOT_FOUND: Final = frozenset({"404", "NoSuchKey", "NotFound"})
_DENIED: Final = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                            "ExpiredToken", "InvalidToken", "AccountProblem", "AllAccessDisabled"})


def translate_status(source: SourceConfig, status: int, code: str, operation: str) -> ProxyError:
    """An S3 error answer (HTTP status and the XML ``<Code>``) -> the ProxyError a client sees."""
    where = f"source={source.name} op={operation}"
    if code in _NOT_FOUND or (status == 404 and not code):
        return ObjectNotFound(f"{where}: no such key")
    if code in ("PreconditionFailed", "412") or status == 412:
        return PreconditionFailed(f"{where}: precondition failed")
    if code in _DENIED or status == 403:
        log.error("storage denied the proxy's credentials (%s, code=%s)", where, code)
        return StorageError(f"{where}: access denied ({code})")
    if code == "NoSuchBucket":
        log.error("storage says the bucket does not exist (%s)", where)
        return StorageError(f"{where}: no such bucket")
    if status in (301, 307):
        log.error("storage redirected: is sources.%s.region right? (%s, code=%s)", source.name, where, code)
        return StorageError(f"{where}: redirected ({code})")
    log.error("storage error (%s, code=%s, status=%s)", where, code, status)
    return StorageError(f"{where}: {code or status}")


def translate(source: SourceConfig, exc: BaseException, operation: str) -> ProxyError:
    """One botocore/aiohttp/timeout exception -> the ProxyError a client may see."""
    where = f"source={source.name} op={operation}"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return translate_status(source, int(status or 0), str(error.get("Code", "")), operation)
    if (problem := tls_problem(exc)) is not None:
        return tls_failure(source, problem, where)
    if isinstance(exc, (TimeoutError, ReadTimeoutError, ConnectTimeoutError)):
        return timed_out(where)
    if isinstance(exc, NoCredentialsError):
        log.error("no AWS credentials found for the source (%s)", where)
        return StorageError(f"{where}: no credentials")
    return unreachable(where, exc.__class__.__name__)


def translate_read(source: SourceConfig, failed: SourceReadFailed) -> ProxyError:
    """An image worker's failed read of a source -> what a GET of the serving process's own would
    have raised, with the same log line. (``too_large`` is the caller's: a policy's 413.)"""
    where = f"source={source.name} op=get"
    if failed.kind == "status":
        return translate_status(source, failed.status, failed.code, "get")
    if failed.kind == "tls":
        return tls_failure(source, failed.detail, where)
    if failed.kind == "timeout":
        return timed_out(where)
    if failed.kind == "short":
        return StorageError(f"{where}: {failed.detail}")
    return unreachable(where, failed.detail or failed.kind)


def tls_failure(source: SourceConfig, problem: str, where: str) -> ProxyError:
    log.error("storage TLS handshake failed (%s): %s; does sources.%s.ca_bundle hold the CA "
              "that signed %s's certificate?", where, problem, source.name,
              source.endpoint_url or "the endpoint")
    return StorageError(f"{where}: TLS: {problem}")


def timed_out(where: str) -> ProxyError:
    log.error("storage timed out (%s)", where)
    return StorageTimeout(f"{where}: timed out")


def unreachable(where: str, what: str) -> ProxyError:
    log.error("storage unreachable (%s): %s", where, what)
    return StorageError(f"{where}: {what}")
