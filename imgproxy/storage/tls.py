"""TLS to a source's S3 endpoint: which certificates it is checked against, and what a failed
check is called in the log.

A source's ``ca_bundle`` (a PEM file, checked when the config was loaded) is the trust store of
both of its clients: aiobotocore's (HEAD, LIST: its ``verify=`` parameter) and the body GETs'
aiohttp session (an ``ssl.SSLContext`` made from it). Without one, each keeps its default:
botocore its own bundle (or ``AWS_CA_BUNDLE``), aiohttp the system's. ``verify_tls = false``
checks nothing and says so loudly at start-up.
"""

from __future__ import annotations

import logging
import re
import ssl
from typing import Final

from imgproxy.config import SourceConfig

log = logging.getLogger("imgproxy.storage")
MAX_PROBLEM_CHARS: Final = 200
_OPENSSL_NOISE: Final = re.compile(r"^\[[A-Z0-9_: ]+\]\s*|\s*\(_ssl\.c:\d+\)$")


def botocore_verify(source: SourceConfig) -> bool | str | None:
    """aiobotocore's ``verify=``: the bundle's path, False (no check), or None (its default)."""
    if not source.verify_tls:
        return False
    return source.ca_bundle


def client_ssl(source: SourceConfig) -> ssl.SSLContext | bool:
    """aiohttp's ``ssl=``: a context trusting the bundle, False (no check), or True (the
    default context: the system's CAs)."""
    if not source.verify_tls:
        return False
    if source.ca_bundle is None:
        return True
    return ssl.create_default_context(cafile=source.ca_bundle)


def warn_if_unverified(source: SourceConfig, key_path: str) -> None:
    """The start-up warning of a source (``key_path``: ``sources.NAME``, ``cache.store``) whose
    certificates are not checked."""
    if not source.verify_tls:
        log.warning("%s.verify_tls = false: the TLS certificate of %s is NOT VERIFIED; anyone on "
                    "the network path can read and change its images and see its requests. For a "
                    "private CA, set %s.ca_bundle instead", key_path,
                    source.endpoint_url or "the AWS endpoint", key_path)


def tls_problem(exc: BaseException) -> str | None:
    """What went wrong in a TLS handshake (``certificate verify failed: self-signed certificate
    in certificate chain``), if ``exc`` is, wraps or was caused by an ``ssl`` error; None if not.

    botocore's and urllib3's ``SSLError`` and aiohttp's ``ClientConnectorCertificateError``/
    ``ClientSSLError`` name the URL (which holds the object key); only the ``ssl`` error's own
    words are kept.
    """
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        error = todo.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        # aiohttp's ClientConnectorCertificateError and ClientSSLError hold the ssl error here
        # (looked up by name: image workers use this module, and they import no aiohttp).
        wrapped = getattr(error, "certificate_error", None) or getattr(error, "os_error", None)
        if isinstance(wrapped, BaseException):
            todo.insert(0, wrapped)
            continue
        if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
            return f"certificate verify failed: {error.verify_message}"[:MAX_PROBLEM_CHARS]
        if isinstance(error, ssl.SSLError):
            return _OPENSSL_NOISE.sub("", str(error))[:MAX_PROBLEM_CHARS] or error.__class__.__name__
        kwargs = getattr(error, "kwargs", None)  # botocore's exceptions keep their parts here
        nested = [kwargs.get("error") if isinstance(kwargs, dict) else None, error.__cause__,
                  error.__context__]
        todo += [found for found in nested if isinstance(found, BaseException)]
    return None
