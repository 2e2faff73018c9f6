"""Batch signing: one call returns the signed proxy URLs for a whole page of images (no N+1).

Pure. ``parse_batch`` checks the JSON shape; ``sign_items`` checks each item (source exists,
key valid, parameters valid (a ``preset`` as a URL's would be), inside the caller's sign
scopes, by preset only for a presets-only token or signing key) and signs it, returning a
per-item error instead of failing the whole batch. For a JWT's user the ``sub`` of every URL is
the token's (an item may not name one) and no URL is durable.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from imgproxy.auth.presets import check_presets_only
from imgproxy.auth.signing import MAX_PARAM_BYTES, MAX_SUB_CHARS, RESERVED_PARAMS, UrlSigner, check_sub
from imgproxy.config.model import KeyLimits, Scope
from imgproxy.errors import BadRequest, InvalidParameter, OutOfScope, ProxyError, UnknownSource
from imgproxy.protocol.paths import check_key

MAX_ECHO_CHARS: Final = 40


@dataclass(frozen=True, slots=True)
class Signer:
    """On whose behalf a batch is signed: ``who`` (for the log), the scopes it may sign, and for a
    JWT's user the ``sub`` every URL carries (then no item names its own, and none is durable)."""

    who: str
    scopes: tuple[Scope, ...]
    sub: str | None = None

    @property
    def on_behalf(self) -> bool:
        return self.sub is not None


@dataclass(frozen=True, slots=True)
class BatchItem:
    source: str
    key: str
    params: Mapping[str, str]
    sub: str | None = None  # a signed viewer id
    durable: bool = False  # no exp (only with a durable signing key)
    meta: bool = False  # the image's metadata next to its URL, as GET /meta answers it
    placeholder: bool = False  # ... with its ThumbHash made if not cached (placeholder=1)


def _bad(message: str) -> BadRequest:
    return BadRequest(message, public_message=message)


def _name(field: str) -> str:
    """A field name from the body, quoted and cut short: messages never echo the body at length."""
    return repr(field if len(field) <= MAX_ECHO_CHARS else field[:MAX_ECHO_CHARS] + "...")


def _is_text(value: str) -> bool:
    """False for a string JSON allows but Unicode does not: a lone surrogate (``"\\ud800"``),
    which no key, URL or signature can encode."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_batch(body: Any, max_items: int) -> list[BatchItem]:
    """A JSON list of ``{source, key, params}`` (or ``{"items": [...]}``) -> items, or 400. An item
    may add ``"meta": true`` (and ``"placeholder": true``): ``web/meta.py`` then looks it up."""
    items = body.get("items") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise _bad('The body must be a JSON list of {source, key, params} objects (or {"items": [...]}).')
    if isinstance(body, dict) and set(body) - {"items"}:
        raise _bad(f"Unknown field {_name(sorted(set(body) - {'items'})[0])} in the body.")
    if len(items) > max_items:
        raise _bad(f"At most {max_items} items per call; got {len(items)}.")
    parsed = []
    for index, item in enumerate(items):
        where = f"items[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object with source, key and optional params.")
        unknown = set(item) - {"source", "key", "params", "sub", "durable", "meta", "placeholder"}
        if unknown:
            raise _bad(f"{where} has an unknown field {_name(sorted(unknown)[0])}.")
        source, key, params = item.get("source"), item.get("key"), item.get("params", {})
        sub, durable = item.get("sub"), item.get("durable", False)
        meta, placeholder = item.get("meta", False), item.get("placeholder", False)
        if not isinstance(source, str) or not isinstance(key, str):
            raise _bad(f"{where}.source and {where}.key must be strings.")
        if sub is not None and not isinstance(sub, str):
            raise _bad(f"{where}.sub must be a string.")
        if not isinstance(durable, bool):
            raise _bad(f"{where}.durable must be true or false.")
        if not isinstance(meta, bool) or not isinstance(placeholder, bool):
            raise _bad(f"{where}.meta and {where}.placeholder must be true or false.")
        if placeholder and not meta:
            raise _bad(f"{where}.placeholder needs {where}.meta.")
        if not isinstance(params, dict) or not all(
                isinstance(k, str) and isinstance(v, str | int) and not isinstance(v, bool)
                for k, v in params.items()):
            raise _bad(f"{where}.params must be an object of string (or integer) values.")
        texts = [("source", source), ("key", key), ("sub", sub or ""), *(("params", name) for name in params),
                 *((f"params.{name}", value) for name, value in params.items() if isinstance(value, str))]
        for field, text in texts:
            if not _is_text(text):
                shown = field if len(field) <= MAX_ECHO_CHARS and _is_text(field) else "params"
                raise _bad(f"{where}.{shown} is not valid Unicode (it holds a lone \\u surrogate escape).")
        parsed.append(BatchItem(source, key, {k: str(v) for k, v in params.items()}, sub, durable, meta,
                                placeholder))
    return parsed


def _covers(scopes: Sequence[Scope], source: str, key: str) -> bool:
    return any(scope.allows(source, key) for scope in scopes)


def _is_sub(sub: str) -> bool:
    try:
        check_sub(sub)
    except ValueError:
        return False
    return True


def askable(items: Sequence[BatchItem], scopes: Sequence[Scope], sources: Collection[str]
            ) -> list[tuple[str, str]]:
    """The distinct (source, key) of the items that could be signed as far as their path goes
    (known source, valid key, inside ``scopes``): what ``[auth.webhook]`` is asked about."""
    paths: dict[tuple[str, str], None] = {}
    for item in items:
        if item.source in sources and _covers(scopes, item.source, item.key):
            try:
                check_key(item.key)
            except ProxyError:
                continue
            paths[item.source, item.key] = None
    return list(paths)


def no_refusal(source: str, key: str) -> ProxyError | None:
    return None


def sign_items(
    items: list[BatchItem],
    *,
    signer_for: Signer,
    sources: Collection[str],
    signer: UrlSigner,
    limits: KeyLimits,
    check_params: Callable[[Mapping[str, str]], object],
    ttl: float,
    window: float,
    now: float,
    refused: Callable[[str, str], ProxyError | None] = no_refusal,
    presets_only: bool = False,
) -> list[dict[str, Any]]:
    """One entry per item, in order: ``{"url": ...}`` or ``{"error": code, "message": ...}``.
    ``refused``: the webhook's refusal of an item's path (asked about ``askable``'s paths).
    ``presets_only``: the caller's token or the signing key is; items may transform by preset only."""
    answers: list[dict[str, Any]] = []
    for item in items:
        try:
            if item.source not in sources:
                raise UnknownSource(f"unknown source {item.source!r}")
            check_key(item.key)
            if any(len(k.encode()) + len(v.encode()) > MAX_PARAM_BYTES for k, v in item.params.items()):
                raise InvalidParameter("param too long",  # parse_query would refuse the signed URL
                                       public_message=f"A parameter is longer than {MAX_PARAM_BYTES} bytes.")
            if RESERVED_PARAMS & item.params.keys():
                raise InvalidParameter("reserved param", public_message=(
                    "Parameters exp, iat, kid, sig and sub are set by signing (sub: the item's 'sub')."))
            if item.sub is not None and signer_for.on_behalf:
                raise InvalidParameter("item sub with a JWT", public_message=(
                    "'sub' comes from the bearer token; leave it out of the item."))
            if item.durable and signer_for.on_behalf:
                raise InvalidParameter("durable with a JWT", public_message=(
                    "Durable URLs are not signed for a JWT's user."))
            if item.sub is not None and not _is_sub(item.sub):
                raise InvalidParameter("bad sub", public_message=(
                    f"'sub' must be 1-{MAX_SUB_CHARS} characters without control characters."))
            if presets_only:
                check_presets_only(item.params)
            check_params(item.params)
            if not _covers(signer_for.scopes, item.source, item.key):
                raise OutOfScope(f"{signer_for.who} may not sign this path",
                                 public_message="The token's sign scopes do not cover this item.")
            if not limits.allows(item.source, item.key):
                raise OutOfScope(f"signing key {signer.kid!r} has no scope for this path",
                                 public_message="The server's signing key may not sign this item.")
            refusal = refused(item.source, item.key)
            if refusal is not None:
                raise refusal
            if item.durable and not limits.durable:
                raise InvalidParameter("durable with a non-durable key", public_message=(
                    "This server's signing key does not sign durable URLs."))
            answers.append({"url": signer.sign(item.source, item.key, ttl=ttl, params=item.params,
                                               now=now, window=window, durable=item.durable,
                                               sub=signer_for.sub or item.sub)})
        except ProxyError as exc:
            answers.append({"error": exc.code, "message": exc.public_message})
    return answers
