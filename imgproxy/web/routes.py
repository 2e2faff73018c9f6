"""HTTP handlers: each is a checklist of calls (parse -> authorize -> fetch -> deliver).

No handler chooses a status code or builds an error body; they raise ``ProxyError`` subclasses
and ``middleware.observe`` renders them. Each reads the settings (config, keys, transform policy,
sources) from ``request[SETTINGS]``: the ones in force when the request began, to its end.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import hdrs, web

from imgproxy.auth.batch import Signer, askable, parse_batch, sign_items
from imgproxy.auth.principal import identify_bearer
from imgproxy.auth.signing import UrlSigner, stable_expiry
from imgproxy.delivery.conversion import converted_spec
from imgproxy.delivery.fallback import choose_placeholder
from imgproxy.delivery.originals import Context, respond_original
from imgproxy.delivery.placeholder import Asked, respond_placeholder
from imgproxy.delivery.policy import Delivery
from imgproxy.delivery.responses import variant_response
from imgproxy.errors import NotFound, NotReady, OutOfScope, ProxyError, Unauthorized
from imgproxy.limits.buckets import Budget
from imgproxy.protocol.jsonbody import read_json
from imgproxy.protocol.paths import IMG
from imgproxy.transform.drawing import parse_initials
from imgproxy.transform.variants import Wanted
from imgproxy.web import appkeys, meta, session
from imgproxy.web.access import authorized, record_principal
from imgproxy.web.appkeys import FACTS, SEND_WATCH, SETTINGS
from imgproxy.web.permission import sign_refusals


async def image(request: web.Request) -> web.StreamResponse:
    settings = request[SETTINGS]
    config = settings.config
    facts = request[FACTS]
    # 1-3. Parse, authorize (nothing touches S3 before), find the source.
    access = await authorized(request, IMG)
    target, params, principal, source = access.target, access.params, access.principal, access.source
    inline = config.server.inline_types
    # 4. A transform (w, h, fmt, ...) is always answered here: 304, cache, store, or one render
    #    (a HEAD renders only if neither cache nor store knows the variant's size).
    #    Only a render spends the transforms budget ([limits]): 429 before its source is read.
    spec = settings.transforms.parse(params)
    initials = parse_initials(params)
    limiter, clock = request.app[appkeys.LIMITER], request.app[appkeys.CLOCK]
    charge = once(lambda: limiter.charge(Budget.TRANSFORMS, principal, facts.client, clock(), config.limits))
    try:
        if spec is None:
            # 4a. An original the source converts ([sources.NAME] convert_originals: HEIC, which
            #     browsers but Safari cannot show) is rendered like a transform, never sent as stored.
            spec = await converted_spec(source, target.key, settings.transforms.limits,
                                        request.app[appkeys.METADATA], facts.durations)
        if spec is not None:
            facts.delivery, facts.transform = Delivery.STREAM, True
            wanted = Wanted(source, target.key, settings.transforms, spec, request.headers.get(hdrs.ACCEPT),
                            request.headers.get(hdrs.IF_NONE_MATCH), request.method == hdrs.METH_HEAD,
                            charge)
            answer = await request.app[appkeys.VARIANTS].answer(wanted, facts.durations)
            facts.cache = answer.cache
            return variant_response(answer, source.config.cache_control, inline)
        # 5. The original: every request spends the originals budget (429 before S3 is asked); then
        #    streamed, or offloaded to S3 (redirect) or nginx (accel).
        now = clock()
        limiter.charge(Budget.ORIGINALS, principal, facts.client, now, config.limits)
        context = Context(request.app[appkeys.METADATA], request.app[appkeys.HOT], inline,
                          now, facts, request.get(SEND_WATCH))
        return await respond_original(request, source, target.key, context)
    except ProxyError as error:
        # 6. A missing photo (or another status [sources.NAME.fallback] lists): its placeholder,
        #    rendered as asked: the initials avatar (initials=), the source's fallback object or
        #    silhouette; else, or if that fails too, the error stands.
        placeholder = choose_placeholder(source.config.fallback, error.status, initials, spec, target.key)
        if placeholder is None:
            raise
        facts.delivery, facts.transform = Delivery.STREAM, spec is not None or placeholder.drawing is not None
        asked = Asked(source, spec, settings.transforms, request.app[appkeys.VARIANTS], charge, inline,
                      facts, request.get(SEND_WATCH))
        return await respond_placeholder(request, error, placeholder, asked)


def once(charge: Callable[[], None]) -> Callable[[], None]:
    """``charge`` called at most once per request (a render and its fallback's cost one)."""
    done = False

    def charge_once() -> None:
        nonlocal done
        if not done:
            done = True
            charge()

    return charge_once


async def sign_batch(request: web.Request) -> web.Response:
    """POST /sign: signed proxy URLs for a list of {source, key, params}, in order."""
    settings = request[SETTINGS]
    config = settings.config
    # 1. Who: a bearer token that has sign scopes, or a JWT (signing for its user, in its scopes).
    #    Forward-auth headers are not read here: a forwarded user authorizes GET/HEAD on /img only.
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        raise Unauthorized("no credentials for /sign")
    jwks = request.app[appkeys.JWKS]
    await jwks.prepare(header, settings.auth.oidc)
    principal = identify_bearer(header, settings.auth, jwks.keys_for, request.app[appkeys.CLOCK]())
    record_principal(request[FACTS], principal, config.auth.durable_max_age)
    if not principal.sign_scopes:
        raise OutOfScope(f"{principal.kind} {principal.name!r} has no sign scopes", public_message=(
            "This token may not sign URLs (it has no sign_scopes)." if principal.kind == "token"
            else "This token's claims grant no scopes to sign."))
    if not config.auth.keys:
        raise NotFound("no signing keys", public_message="This server has no signing appkeys.")
    # 2. What: a JSON body within jsonbody's limits (media type, size, time, admission, strict JSON).
    body = await read_json(request, request.app[appkeys.BODY_SLOTS], max_bytes=config.auth.sign_max_bytes,
                           time_limit=config.server.body_timeout)
    items = parse_batch(body, config.auth.sign_max_items)
    # 3. The application's say ([auth.webhook], for a JWT's user) on each item in scope, once each.
    refused = await sign_refusals(request, principal, askable(items, principal.sign_scopes,
                                                              config.sources.keys()))
    # 4. Sign every item that is valid, in scope and allowed; the others get their own error.
    base_url = config.server.public_url.rstrip("/") or f"{request[FACTS].scheme}://{request.host}"
    kid = config.auth.sign_with
    signer = UrlSigner(config.auth.keys[kid].reveal(), kid, base_url)
    now = request.app[appkeys.CLOCK]()
    limits = settings.auth.key_limits(kid)
    signer_for = Signer(f"{principal.kind} {principal.name!r}", principal.sign_scopes,
                        principal.sub if principal.kind == "jwt" else None)
    answers = sign_items(items, signer_for=signer_for, sources=config.sources.keys(), signer=signer,
                         limits=limits, check_params=settings.transforms.parse, ttl=config.auth.sign_ttl,
                         window=config.auth.url_window, now=now, refused=refused,
                         presets_only=principal.presets_only or limits.presets_only)
    # 5. The metadata of the items that ask for it ("meta": true), next to their URLs.
    await meta.describe_items(request, principal, items, answers)
    expires = stable_expiry(now, config.auth.sign_ttl, config.auth.url_window)
    return web.json_response({"expires": expires, "items": answers},
                             headers={hdrs.CACHE_CONTROL: "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers. Never touches S3."""
    return web.json_response({"status": "ok"}, headers={hdrs.CACHE_CONTROL: "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness for load balancers: every source reachable (cached probe results), and the
    polled revocation list loaded once if there is one. Anonymous clients learn only the
    verdict; which sources exist is on the metrics address."""
    report = await request.app[appkeys.READINESS].report()
    if not report.ready:
        raise NotReady(f"not ready: {report.failing}")
    return web.json_response({"status": "ready"}, headers={hdrs.CACHE_CONTROL: "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/sign", sign_batch)
    app.router.add_post("/session", session.start_session)
    app.router.add_get("/session", session.open_link)
    app.router.add_delete("/session", session.end_session)
    # [\s\S], not ".": a key with an encoded newline (%0A) must reach the path check (400).
    app.router.add_get(r"/img/{tail:[\s\S]+}", image)
    app.router.add_get(r"/meta/{tail:[\s\S]+}", meta.describe)
