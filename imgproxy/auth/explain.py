"""``imgproxy verify-url``: why the server accepts or refuses a signed URL, in words.

Pure. It runs the server's own checks (``principal.authorize`` with the config's keys, scopes
and revocations; the polled revocation object, if any, is not fetched) and says which one
decided, with the facts an operator needs (which key, when it expired or was issued, which
revocation kind). It never prints the expected signature, or anything derived from a secret.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from imgproxy.auth.principal import AuthPolicy, authorize
from imgproxy.auth.signing import parse_query
from imgproxy.config import Config
from imgproxy.errors import ProxyError
from imgproxy.protocol.paths import origin_form, parse_image_path


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    text: str


def _when(stamp: str | None, now: float) -> str:
    if stamp is None or not stamp.isdigit():
        return ""
    at = int(stamp)
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    delta = at - now
    return f"{moment} ({'in ' if delta >= 0 else ''}{_span(abs(delta))}{'' if delta >= 0 else ' ago'})"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def explain_url(config: Config, url: str, now: float) -> Verdict:
    try:
        target = origin_form(url)
        path = parse_image_path(target)
        params = parse_query(target.partition("?")[2], config.server.max_query_params)
    except ProxyError as exc:
        return Verdict(False, f"refused: {exc.status} {exc.code}: {exc.public_message}")
    facts = [f"source {path.source!r}", f"key {path.key!r}"]
    if "kid" in params:
        facts.append(f"kid {params['kid']!r}")
    if "exp" in params:
        facts.append(f"exp {_when(params.get('exp'), now)}")
    else:
        facts.append("durable (no exp)")
    if "iat" in params:
        facts.append(f"iat {_when(params.get('iat'), now)}")
    if "sub" in params:
        facts.append(f"sub {params['sub']!r}")
    if "sig" not in params:
        return Verdict(False, "refused: not a signed URL (no sig parameter); " + ", ".join(facts))
    if path.source not in config.sources:
        facts.append("source not in [sources]: the server answers 404 after authorizing")
    try:
        principal = authorize(path.source, path.key, params, None, AuthPolicy.from_config(config), now)
    except ProxyError as exc:
        return Verdict(False, f"refused: {exc.status} {exc.code}: {exc.public_message} ({exc}); "
                       + ", ".join(facts))
    return Verdict(True, f"accepted: signed with key {principal.name!r}; " + ", ".join(facts))
