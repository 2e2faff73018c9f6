"""The demo's identity provider: made-up users, a signing key made at start-up, and its JWKS on loopback.

For ``imgproxy demo`` only, never part of a real deployment. It stands in for the dashboard's
own IdP (Keycloak, Auth0, Entra ID...): an EC P-256 key generated for each run, its public half
served as a JWKS (and an OpenID discovery document) on a loopback port of its own, and JWTs
(ES256, a few minutes long) minted in-process for the directory page's backend and the banner's
curl commands. There is no login and no token endpoint: whoever can reach the page can be any
demo user, which is exactly what a demo wants and nothing else should.

The users' claims differ the way real ones do (``groups``, ``team``); ``SCOPE_RULES`` is the
``[[auth.oidc.demo.rules]]`` list that turns them into scopes, so the proxy, not the page,
decides what each user may see.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import hdrs, web
from joserfc import jwt
from joserfc.jwk import ECKey

AUDIENCE: Final = "imgproxy-demo"
ALGORITHM: Final = "ES256"
TOKEN_TTL: Final = 300  # seconds: the page's script trades its token for a cookie grant at once
JWKS_PATH: Final = "/jwks.json"
DISCOVERY_PATH: Final = "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class DemoUser:
    """One person who can log in to the demo dashboard."""

    id: str  # the page's ?user= value
    sub: str
    name: str
    title: str  # "HR", "team lead, Engineering"
    sees: str  # what the page and banner say they may see
    claims: Mapping[str, Any] = field(default_factory=dict)  # besides iss, aud, sub, iat, exp


LEAD_TEAM: Final = "Engineering"
HR: Final = DemoUser("hr", "ines.haddad", "Ines Haddad", "HR", "sees every employee's photo",
                     {"name": "Ines Haddad", "groups": ["staff", "hr"]})
LEAD: Final = DemoUser("lead", "kwame.okafor", "Kwame Okafor", f"team lead, {LEAD_TEAM}",
                       f"sees only the {LEAD_TEAM} team's photos",
                       {"name": "Kwame Okafor", "groups": ["staff", "team-leads"], "team": LEAD_TEAM})
USERS: Final = (HR, LEAD)  # the first is the page's default


def scope_rules(source: str) -> list[dict[str, Any]]:
    """``[[auth.oidc.demo.rules]]``: HR reads every portrait, a team lead their own team's folder."""
    return [
        {"claim": "groups", "equals": "hr", "scopes": [f"{source}:employees/*"]},
        {"claim": "groups", "equals": "team-leads", "scopes": [f"{source}:employees/{{team}}/*"]},
    ]


def find_user(user_id: str) -> DemoUser | None:
    return next((user for user in USERS if user.id == user_id), None)


class DemoIdp:
    """The key and the tokens; ``issuer`` is where ``serve_idp`` serves the keys."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.key = ECKey.generate_key("P-256", parameters={"kid": f"demo-{secrets.token_hex(4)}",
                                                          "use": "sig", "alg": ALGORITHM})

    @property
    def jwks_url(self) -> str:
        return self.issuer + JWKS_PATH

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def discovery(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "jwks_uri": self.jwks_url,
                "id_token_signing_alg_values_supported": [ALGORITHM]}

    def claims(self, user: DemoUser, now: float, ttl: int = TOKEN_TTL) -> dict[str, Any]:
        return {**user.claims, "iss": self.issuer, "aud": AUDIENCE, "sub": user.sub,
                "iat": int(now), "exp": int(now) + ttl}

    def token(self, user: DemoUser, now: float, ttl: int = TOKEN_TTL) -> str:
        """A JWT for ``user``, valid ``ttl`` seconds from ``now``."""
        return jwt.encode({"alg": ALGORITHM, "kid": self.key.kid, "typ": "JWT"},
                          self.claims(user, now, ttl), self.key, algorithms=[ALGORITHM])

    def provider_config(self, source: str) -> dict[str, Any]:
        """The ``[auth.oidc.demo]`` table that trusts this IdP."""
        return {"issuer": self.issuer, "audience": AUDIENCE, "jwks_url": self.jwks_url,
                "algorithms": [ALGORITHM], "rules": scope_rules(source)}


def idp_app(idp: DemoIdp) -> web.Application:
    def answer(document: dict[str, Any]) -> web.Response:
        return web.Response(text=json.dumps(document), content_type="application/json",
                            headers={hdrs.CACHE_CONTROL: "public, max-age=300"})

    async def jwks(request: web.Request) -> web.Response:
        return answer(idp.jwks())

    async def discovery(request: web.Request) -> web.Response:
        return answer(idp.discovery())

    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks)
    app.router.add_get(DISCOVERY_PATH, discovery)
    return app


@asynccontextmanager
async def serve_idp(host: str = "127.0.0.1") -> AsyncIterator[DemoIdp]:
    """A ``DemoIdp`` whose issuer is ``http://127.0.0.1:PORT`` (any free loopback port), serving
    its JWKS there until the block ends."""
    with socket.create_server((host, 0)) as sock:
        idp = DemoIdp(f"http://{host}:{sock.getsockname()[1]}")
        runner = web.AppRunner(idp_app(idp), access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            yield idp
        finally:
            await runner.cleanup()
