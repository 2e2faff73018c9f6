"""The inputs of the signing vectors: the cases every signer (Python, CLI, SQL, JavaScript) signs.

Each case is chosen for one way a signer can go wrong: an encoding (reserved characters, UTF-8,
NFC against NFD: signers never normalise), the order of parameter names (by code point, not by
UTF-16 unit), the integer parameters, the kid, the window and ttl arithmetic (exp rounded up,
iat derived from it; fractional ``now``), durable URLs, ``sub`` and the route (``/meta/...``).
Expected values are never written here: ``vectors.py`` computes them with ``UrlSigner``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

SECRET: Final = "imgproxy-test-vector-secret-0123456789abcdef"  # noqa: S105 - a published vector
BASE_URL: Final = "https://img.example.com"
NOW: Final = 1767222000  # 2025-12-31T23:00:00Z: exp 1767225600 with the default ttl


@dataclass(frozen=True, slots=True)
class Case:
    """What a signer is given. ``params`` values are strings or integers (written in decimal);
    ``ttl`` and ``window`` are whole seconds; ``now`` is unix seconds and may be fractional."""

    name: str
    source: str
    key: str
    params: Mapping[str, str | int] = field(default_factory=dict)
    secret: str = SECRET
    kid: str | None = "k1"
    base_url: str = BASE_URL
    now: float = NOW
    ttl: int = 3600
    window: int = 0
    durable: bool = False
    sub: str | None = None
    route: str = "img"  # "meta": a GET /meta/... URL (the same path, its own signature)


CASES: Final = (
    Case("readme-key", "photos", "employees/Zoë Smith+1.jpg", {"w": 300}),
    Case("nfc-name", "photos", "employees/Zo\u00eb.jpg"),
    Case("nfd-name", "photos", "employees/Zoe\u0308.jpg"),
    Case("plus-percent-equals", "photos", "a+b%20c=d.jpg"),
    Case("ampersand-question-hash", "photos", "q&a?/#1.jpg"),
    Case("spaces", "photos", "team photos/ summer  2026 .jpg"),
    Case("literal-percent-escape", "photos", "100%25 done.png"),
    Case("unreserved-and-sub-delims", "photos", "a-b_c.d~e/!'()*,;:@$.png"),
    Case("deep-path", "photos", "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/deep.jpg"),
    Case("emoji-key", "photos", "emoji/🎉 party 😀.png"),
    Case("cjk-and-rtl", "photos", "社員/写真 عربي.jpg"),
    Case("string-and-integer-params", "photos", "employees/ada.jpg",
         {"w": 300, "h": 200, "fit": "cover", "fmt": "auto", "dpr": 2}),
    Case("negative-and-zero-integers", "photos", "employees/ada.jpg",
         {"n": -5, "z": 0, "big": 9007199254740991}),
    Case("reserved-characters-in-values", "photos", "a.jpg", {"note": "a b&c=d?e#f%g+h/i\tj\nk"}),
    Case("reserved-characters-in-names", "photos", "a.jpg", {"a b": "1", "x=y": "2", "&?#": "3"}),
    Case("names-sorted-by-code-point", "photos", "a.jpg",
         {"\U0001F600": "astral", "\uFF5E": "bmp", "Z": "upper", "a": "lower", "é": "latin1", "_": "low"}),
    Case("no-kid", "photos", "employees/ada.jpg", kid=None),
    Case("kid-with-dash-and-underscore", "photos", "employees/ada.jpg", kid="key-2026_b"),
    Case("unicode-secret", "photos", "employees/ada.jpg",
         secret="sécrét-ключ-🔑-0123456789abcdef-0123456789"),  # noqa: S106 - a published vector
    Case("base-url-trailing-slash", "photos", "a.jpg", base_url="https://img.example.com/"),
    Case("base-url-with-path", "photos", "a.jpg", base_url="https://example.com/media/images//"),
    Case("no-base-url", "photos", "a.jpg", base_url=""),
    Case("source-with-dash-and-underscore", "hr-photos_2026", "a.jpg"),
    Case("window-60", "photos", "a.jpg", now=1767222001, window=60),
    Case("window-60-fractional-now-at-boundary", "photos", "a.jpg", now=1767225599.999, ttl=1, window=60),
    Case("window-3600-odd-ttl", "photos", "a.jpg", now=1767222000.5, ttl=3599, window=3600),
    Case("window-3600-ttl-below-window", "photos", "a.jpg", now=1767222123.25, ttl=7, window=3600),
    Case("window-61-odd-ttl", "photos", "a.jpg", now=1767222123.75, ttl=3601, window=61),
    Case("odd-ttl-no-window", "photos", "a.jpg", now=1767222000.999999, ttl=86399),
    Case("ttl-one-second", "photos", "a.jpg", now=1767222000.000001, ttl=1),
    Case("durable", "photos", "employees/ada.jpg", {"w": 96}, now=1767222123.9, durable=True),
    Case("durable-window-3600", "photos", "employees/ada.jpg", now=1767225599.5, window=3600, durable=True),
    Case("durable-no-kid-sub", "photos", "a.jpg", kid=None, durable=True, window=60, sub="viewer-42"),
    Case("sub-email", "photos", "employees/ada.jpg", sub="ada@example.com"),
    Case("sub-unicode-and-spaces", "photos", "employees/ada.jpg", sub="Zoë Ünïcödé (HR) 社員"),
    Case("sub-reserved-characters-and-emoji", "photos", "a.jpg", {"w": 300}, sub="a+b&c=d?e#f%g/🎉",
         window=60, now=1767222001.5),
    Case("sub-128-characters", "photos", "a.jpg", sub="ë" * 64 + "x" * 64),
    # The route is part of the canonical form: the readme-key case as a /meta URL signs differently.
    Case("meta-readme-key", "photos", "employees/Zoë Smith+1.jpg", route="meta"),
    Case("meta-placeholder", "photos", "employees/ada.jpg", {"placeholder": 1}, window=3600, route="meta"),
    Case("meta-durable-sub", "photos", "team photos/ summer  2026 .jpg", durable=True, sub="viewer-42",
         route="meta"),
)
