"""The revocation list as the server checks it: every signed URL and grant, in time independent of
its size.

Pure. Built once per load (config, reload, or the polled object) from ``config.Revocation``
entries into lookups that cost the same with ten entries as with a million: a set of revoked
signatures, the latest cutoff per key id and per ``sub``, and per source the revoked exact keys
and key prefixes (prefixes grouped by length, so a key is checked against each length present,
not against each entry).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from imgproxy.auth.signing import SignedUrl
from imgproxy.config.model import Revocation
from imgproxy.errors import Revoked


@dataclass(frozen=True, slots=True)
class _Paths:
    """Revoked scopes of one source (or of ``*``)."""

    exact: frozenset[str]
    prefixes: dict[int, frozenset[str]]  # length -> prefixes of that length

    def covers(self, key: str) -> bool:
        if key in self.exact:
            return True
        return any(key[:length] in prefixes for length, prefixes in self.prefixes.items()
                   if length <= len(key))


@dataclass(frozen=True, slots=True)
class RevocationList:
    """``check`` raises ``Revoked`` for a revoked URL. ``version``: a digest of the entries,
    the same in every worker and replica that loaded the same list (exported as a metric)."""

    signatures: frozenset[str] = field(default=frozenset(), repr=False)
    kid_before: dict[str, float] = field(default_factory=dict)
    sub_before: dict[str, float] = field(default_factory=dict, repr=False)
    paths: dict[str, _Paths] = field(default_factory=dict, repr=False)
    size: int = 0
    version: str = "0" * 12

    @classmethod
    def build(cls, entries: Iterable[Revocation]) -> RevocationList:
        signatures: set[str] = set()
        kid_before: dict[str, float] = {}
        sub_before: dict[str, float] = {}
        exact: dict[str, set[str]] = {}
        prefixes: dict[str, dict[int, set[str]]] = {}
        digest = hashlib.sha256()
        size = 0
        for entry in entries:
            size += 1
            if entry.kind == "sig":
                signatures.add(entry.value)
                digest.update(b"sig\0" + entry.value.encode())
            elif entry.kind in ("kid", "sub"):
                assert entry.before is not None
                cutoffs = kid_before if entry.kind == "kid" else sub_before
                cutoffs[entry.value] = max(entry.before, cutoffs.get(entry.value, entry.before))
                digest.update(f"{entry.kind}\0{entry.value}\0{entry.before!r}".encode())
            else:
                scope = entry.scope
                assert scope is not None
                if scope.is_prefix:
                    prefixes.setdefault(scope.source, {}).setdefault(len(scope.key), set()).add(scope.key)
                else:
                    exact.setdefault(scope.source, set()).add(scope.key)
                digest.update(f"scope\0{scope.source}\0{scope.key}\0{scope.is_prefix}".encode())
        paths = {
            source: _Paths(frozenset(exact.get(source, ())),
                           {length: frozenset(keys) for length, keys in prefixes.get(source, {}).items()})
            for source in exact.keys() | prefixes.keys()
        }
        return cls(frozenset(signatures), kid_before, sub_before, paths, size,
                   digest.hexdigest()[:12] if size else "0" * 12)

    def check(self, source: str, key: str, url: SignedUrl, issued: float) -> None:
        """``issued``: when ``url`` was signed at the latest (``SignedUrl.issued``)."""
        if url.sig in self.signatures:
            raise Revoked("signature revoked")
        self.check_issued(source, key, url.kid, url.sub, issued)

    def check_issued(self, source: str, key: str, kid: str, sub: str | None, issued: float) -> None:
        """Revoked by key id or ``sub`` (issued before the cutoff), or by path: what applies to a
        signed URL and to a grant cookie alike."""
        self.check_holder(kid, sub, issued)
        for name in (source, "*"):
            paths = self.paths.get(name)
            if paths is not None and paths.covers(key):
                raise Revoked("path revoked")

    def check_holder(self, kid: str, sub: str | None, issued: float) -> None:
        """Revoked by key id or ``sub``: issued before the cutoff (a grant link's check)."""
        cutoff = self.kid_before.get(kid)
        if cutoff is not None and issued < cutoff:
            raise Revoked(f"key {kid!r} revoked for credentials issued before {cutoff:.0f}")
        if sub is not None:
            cutoff = self.sub_before.get(sub)
            if cutoff is not None and issued < cutoff:
                raise Revoked("sub revoked")
