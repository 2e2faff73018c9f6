"""A local OpenID provider for the tests: discovery and JWKS over real loopback HTTP, its keys
made with ``cryptography`` (through joserfc), rotated or taken down on demand, every request counted.

It runs in its own thread (``http.server``), so it answers both the app under test in the test's
event loop and an ``imgproxy serve`` process while the test blocks on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from nginx_site import Authority

AUDIENCE: Final = "imgproxy"
REALM: Final = "/realms/test"
DISCOVERY: Final = REALM + "/.well-known/openid-configuration"
Key = RSAKey | ECKey


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_keys(generation: int) -> list[Key]:
    return [RSAKey.generate_key(2048, parameters={"kid": f"rsa-{generation}", "use": "sig"}),
            ECKey.generate_key("P-256", parameters={"kid": f"ec-{generation}"})]


class FakeIdp:
    """``issuer`` and ``jwks_url`` on a random loopback port; ``token(...)`` mints a JWT signed with
    its current RSA key (or ``alg="ES256"``: its EC key); ``rotate()`` replaces both keys; ``down``
    answers 503 to everything; ``hits`` counts requests by path."""

    def __init__(self, tls: Authority | None = None) -> None:
        self.generation = 1
        self.keys = new_keys(1)
        self.down = False
        self.max_age = 300
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with idp._lock:
                    idp.hits[self.path] += 1
                body = idp.answer(self.path)
                if body is None:
                    self.send_response(503 if idp.down else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", f"public, max-age={idp.max_age}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.scheme = "http"
        if tls is not None:  # https with a certificate for 127.0.0.1 from a throwaway CA
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(tls.cert, tls.key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-idp", daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.base + REALM

    @property
    def jwks_hits(self) -> int:
        return self.hits["/keys"]

    def answer(self, path: str) -> bytes | None:
        if self.down:
            return None
        if path == DISCOVERY:
            return json.dumps({"issuer": self.issuer, "jwks_uri": self.base + "/keys"}).encode()
        if path == "/keys":
            return json.dumps({"keys": [key.as_dict(private=False) for key in self.keys]}).encode()
        return None

    def rotate(self) -> None:
        self.generation += 1
        self.keys = new_keys(self.generation)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def claims(self, now: float, **overrides: Any) -> dict[str, Any]:
        """Valid claims for user ada in group hr at ``now``; ``name=None`` leaves a claim out."""
        claims: dict[str, Any] = {"iss": self.issuer, "aud": AUDIENCE, "sub": "ada", "iat": int(now),
                                  "exp": int(now) + 300, "groups": ["staff", "hr"]}
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, now: float, *, alg: str = "RS256", header: Mapping[str, Any] | None = None,
              key: Key | None = None, **claims: Any) -> str:
        signing = key or self.keys[0 if alg.startswith(("RS", "PS")) else 1]
        head = {"alg": alg, "kid": signing.kid, **(header or {})}
        return jwt.encode({k: v for k, v in head.items() if v is not None}, self.claims(now, **claims),
                          signing, algorithms=[alg])


def hs256_with_public_key(idp: FakeIdp, now: float) -> str:
    """The algorithm-confusion attack: HS256 'signed' with the IdP's RSA public key as the secret."""
    secret = idp.keys[0].as_pem(private=False)
    head = b64(json.dumps({"alg": "HS256", "kid": idp.keys[0].kid}).encode())
    body = b64(json.dumps(idp.claims(now)).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def unsigned(idp: FakeIdp, now: float) -> str:
    """alg=none: no signature at all."""
    head = b64(json.dumps({"alg": "none", "kid": idp.keys[0].kid}).encode())
    return f"{head}.{b64(json.dumps(idp.claims(now)).encode())}."


def tampered(token: str, **changes: Any) -> str:
    """The token with its claims changed and its signature kept (so it no longer matches)."""
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    return f"{head}.{b64(json.dumps(claims).encode())}.{sig}"


def random_kid() -> str:
    return uuid.uuid4().hex
