"""The proxy's error tree: every failure a client can see, with its status, code and public message.

    ProxyError (500 internal_error)
    ├── BadRequest (400 bad_request)
    │   ├── InvalidPath (400 invalid_path)
    │   ├── InvalidParameter (400 invalid_parameter)
    │   ├── MalformedRequest (400 malformed_request)
    │   └── ReturnNotAllowed (400 return_not_allowed)
    ├── Unauthorized (401 unauthorized)
    │   ├── InvalidToken (401 invalid_token)
    │   │   └── InvalidJwt (401 invalid_token)
    │   └── InvalidGrant (401 invalid_grant)
    ├── Forbidden (403 forbidden)
    │   ├── InvalidSignature (403 invalid_signature)
    │   ├── ExpiredSignature (403 expired)
    │   ├── ExpiryTooFar (403 expiry_too_far)
    │   ├── UnknownKeyId (403 unknown_key)
    │   ├── OutOfScope (403 out_of_scope)
    │   ├── Revoked (403 revoked)
    │   ├── ParamsNotAllowed (403 params_not_allowed)
    │   ├── OriginNotAllowed (403 origin_not_allowed)
    │   └── WebhookDenied (403 webhook_denied)
    ├── NotFound (404 not_found)
    │   ├── UnknownSource (404 unknown_source)
    │   └── ObjectNotFound (404 not_found)
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── RequestTimeout (408 request_timeout)
    ├── PreconditionFailed (412 precondition_failed)
    ├── SourceTooLarge (413 source_too_large)
    ├── BodyTooLarge (413 body_too_large)
    ├── UriTooLong (414 uri_too_long)
    ├── NotAnImage (415 unsupported_image)
    ├── UnsupportedMediaType (415 unsupported_media_type)
    ├── RangeNotSatisfiable (416 range_not_satisfiable)
    ├── UnprocessableImage (422 corrupt_image)
    │   ├── ImageTooLarge (422 image_too_large)
    │   └── TransformTimeout (422 transform_timeout)
    ├── RateLimited (429 rate_limited)
    ├── HeaderTooLarge (431 header_too_large)
    ├── StorageError (502 storage_error)
    ├── NotReady (503 not_ready)
    │   ├── Overloaded (503 overloaded)
    │   │   ├── StorageBusy (503 overloaded)
    │   │   └── LedgerFull (503 overloaded)
    │   ├── RevocationsUnavailable (503 not_ready)
    │   ├── KeysUnavailable (503 not_ready)
    │   └── WebhookUnavailable (503 webhook_unavailable)
    └── StorageTimeout (504 storage_timeout)

The constructor's text goes to the log only; a client sees ``public_message``, which never
carries internal detail (keys, bucket names, botocore messages). ``middleware.py`` is the one
place an error becomes a response. This module imports nothing of ours.
"""

from __future__ import annotations

from collections.abc import Mapping


class ProxyError(Exception):
    """Base of every error with a public face. Subclasses set the three class attributes."""

    status: int = 500
    code: str = "internal_error"
    public_message: str = "The server hit an unexpected error."

    def __init__(
        self,
        log_detail: str = "",
        *,
        public_message: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(log_detail or self.public_message)
        if public_message is not None:
            self.public_message = public_message
        self.headers: dict[str, str] = {**self.implied_headers(), **(headers or {})}

    def implied_headers(self) -> dict[str, str]:
        """Headers every answer of this class carries (a challenge, a retry delay)."""
        return {}


class BadRequest(ProxyError):
    status = 400
    code = "bad_request"
    public_message = "The request is malformed."


class InvalidPath(BadRequest):
    code = "invalid_path"
    public_message = "The image path is not valid."


class InvalidParameter(BadRequest):
    code = "invalid_parameter"
    public_message = "A query parameter is not valid."


class MalformedRequest(BadRequest):
    """The HTTP parser refused the request (a bad byte, framing, or request line)."""

    code = "malformed_request"
    public_message = "The HTTP request is malformed."


class ReturnNotAllowed(BadRequest):
    """``GET /session?return=`` naming a place outside ``server.cors_origins``."""

    code = "return_not_allowed"
    public_message = "The return address is not one of this server's allowed origins."


class Unauthorized(ProxyError):
    status = 401
    code = "unauthorized"
    public_message = "This request needs a signed URL or an Authorization: Bearer token."
    challenge = 'Bearer realm="imgproxy"'

    def implied_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class InvalidToken(Unauthorized):
    code = "invalid_token"
    public_message = "The bearer token is not valid."
    challenge = 'Bearer realm="imgproxy", error="invalid_token"'


class InvalidJwt(InvalidToken):
    """A JWT that failed one check. The client sees ``invalid_token`` like any bad token;
    ``reason`` (which check: ``expired``, ``signature``, ``unknown_kid``, ...) is for the log and
    the failures metric only."""

    def __init__(self, reason: str, log_detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"jwt: {log_detail or reason}")


class InvalidGrant(Unauthorized):
    """A grant cookie or link that failed one check; ``reason`` (``signature``, ``expired``,
    ``used``, ...) is for the log and the failures metric only."""

    code = "invalid_grant"
    public_message = "The grant is not valid; ask for a new one (POST /session)."
    challenge = 'Bearer realm="imgproxy"'

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"grant: {reason}")


class Forbidden(ProxyError):
    status = 403
    code = "forbidden"
    public_message = "Access denied."


class InvalidSignature(Forbidden):
    code = "invalid_signature"
    public_message = "The URL signature does not match."


class ExpiredSignature(Forbidden):
    code = "expired"
    public_message = "The signed URL has expired."


class ExpiryTooFar(Forbidden):
    code = "expiry_too_far"
    public_message = "The signed URL's expiry lies further ahead than the server allows."


class UnknownKeyId(Forbidden):
    code = "unknown_key"
    public_message = "The URL was signed with a key this server does not know."


class OutOfScope(Forbidden):
    code = "out_of_scope"
    public_message = "The credentials do not grant access to this path."


class Revoked(Forbidden):
    code = "revoked"
    public_message = "This URL has been revoked."


class ParamsNotAllowed(Forbidden):
    """A plain URL (no signature) asking a cookie, JWT or forward-auth principal for a transform
    outside ``auth.plain_widths`` and the presets (each distinct render costs the server; signed
    URLs are bounded by whoever signs them); or a presets-only key, token or grant asking for
    anything but a preset."""

    code = "params_not_allowed"
    public_message = ("Plain URLs may ask only for a preset or the widths in auth.plain_widths "
                      "(with fit, fmt and dpr 1-3); use a signed URL for other transforms.")


class OriginNotAllowed(Forbidden):
    """A CORS preflight from an origin outside ``server.cors_origins`` (or ``null``)."""

    code = "origin_not_allowed"
    public_message = "Cross-origin requests from this origin are not allowed."


class WebhookDenied(Forbidden):
    """``[auth.webhook]`` answered false (or failed, with ``on_error = "deny"``)."""

    code = "webhook_denied"
    public_message = "The application does not allow this user to read this image."


class NotFound(ProxyError):
    status = 404
    code = "not_found"
    public_message = "No such resource."


class UnknownSource(NotFound):
    code = "unknown_source"
    public_message = "No such image source."


class ObjectNotFound(NotFound):
    code = "not_found"
    public_message = "No such image."


class MethodNotAllowed(ProxyError):
    status = 405
    code = "method_not_allowed"
    public_message = "This method is not allowed here."


class RequestTimeout(ProxyError):
    status = 408
    code = "request_timeout"
    public_message = "The request did not arrive in time."


class PreconditionFailed(ProxyError):
    status = 412
    code = "precondition_failed"
    public_message = "A request precondition did not hold."


class SourceTooLarge(ProxyError):
    status = 413
    code = "source_too_large"
    public_message = "The source image is larger than this server transforms."


class BodyTooLarge(ProxyError):
    status = 413
    code = "body_too_large"
    public_message = "The request body is larger than this server accepts."


class UriTooLong(ProxyError):
    status = 414
    code = "uri_too_long"
    public_message = "The request target is longer than this server accepts."


class NotAnImage(ProxyError):
    status = 415
    code = "unsupported_image"
    public_message = "The object is not an image in a format this server transforms."


class UnsupportedMediaType(ProxyError):
    status = 415
    code = "unsupported_media_type"
    public_message = "The request body must be JSON in UTF-8 (Content-Type: application/json)."


class RangeNotSatisfiable(ProxyError):
    status = 416
    code = "range_not_satisfiable"
    public_message = "The requested range lies outside the object."


class UnprocessableImage(ProxyError):
    status = 422
    code = "corrupt_image"
    public_message = "The image is corrupt or truncated and cannot be transformed."


class ImageTooLarge(UnprocessableImage):
    code = "image_too_large"
    public_message = "The image has more pixels than this server decodes."


class TransformTimeout(UnprocessableImage):
    code = "transform_timeout"
    public_message = "The image took too long to transform."


class RateLimited(ProxyError):
    """Over a rate limit (``[limits]``): refused for now, with ``Retry-After`` (whole seconds);
    ``budget`` and ``dimension`` say which limit, for the access log and the metrics."""

    status = 429
    code = "rate_limited"
    public_message = "Too many requests; retry later."

    def __init__(self, log_detail: str = "", *, budget: str = "", dimension: str = "", retry_after: int = 1,
                 public_message: str | None = None) -> None:
        self.budget, self.dimension = budget, dimension
        self.retry_after = str(max(1, retry_after))
        super().__init__(log_detail, public_message=public_message)

    def implied_headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after}


class HeaderTooLarge(ProxyError):
    status = 431
    code = "header_too_large"
    public_message = "A request header is longer than this server accepts."


class StorageError(ProxyError):
    status = 502
    code = "storage_error"
    public_message = "The image storage refused or failed the request."


class NotReady(ProxyError):
    status = 503
    code = "not_ready"
    public_message = "The server cannot reach all of its image sources (details on the metrics address)."


class Overloaded(NotReady):
    """Refused for now, not failed: always carries ``Retry-After``."""

    code = "overloaded"
    public_message = "The image workers are saturated; retry shortly."
    retry_after = "1"

    def implied_headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after}


class LedgerFull(Overloaded):
    """The single-use grant links ledger is full or cannot be written: a link is refused rather
    than risked being opened twice."""

    public_message = "Too many grant links are being opened; try again shortly."


class RevocationsUnavailable(NotReady):
    """The revocation list has never been loaded: a signed URL cannot be checked (fail closed)."""

    public_message = "The server has not loaded its revocation list yet; retry shortly."

    def implied_headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class KeysUnavailable(NotReady):
    """An identity provider's keys (JWKS) have never been fetched: a JWT cannot be checked."""

    public_message = "The server has not loaded its identity provider's keys yet; retry shortly."

    def implied_headers(self) -> dict[str, str]:
        return {"Retry-After": "5"}


class WebhookUnavailable(NotReady):
    """``[auth.webhook]`` failed (timeout, refused, a bad answer) with ``on_error = "unavailable"``:
    nothing was decided, so nothing is allowed."""

    code = "webhook_unavailable"
    public_message = "The application's authorization service did not answer; retry shortly."

    def implied_headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class StorageBusy(Overloaded):
    """Every connection of a source's pool stayed busy for ``pool_timeout``: an overload of
    this proxy, not a slow S3 (which is ``StorageTimeout``)."""

    public_message = "Every connection to the image storage is busy; retry shortly."


class StorageTimeout(ProxyError):
    status = 504
    code = "storage_timeout"
    public_message = "The image storage did not answer in time."


def all_error_classes() -> list[type[ProxyError]]:
    """Every class in the tree, base first: the README's error table is checked against this."""
    found: list[type[ProxyError]] = []
    pending: list[type[ProxyError]] = [ProxyError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found
