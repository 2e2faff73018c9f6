"""The ``imgproxy`` command: ``serve``, ``sign``, ``grant``, ``verify-url``, ``key-hash``, ``cors``,
``sql``, ``demo``.

A ``ConfigError`` (or any start-up problem an operator can fix) becomes one line on stderr and
exit status 2; there is never a traceback for a bad config.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Final, TextIO

from imgproxy import __version__
from imgproxy.auth.explain import explain_url
from imgproxy.auth.grants import grant_link, parse_scopes, within_key
from imgproxy.auth.presets import check_presets_only
from imgproxy.auth.signing import RESERVED_PARAMS, UrlSigner
from imgproxy.config import Config, ConfigError, KeyLimits, load_config, parse_duration
from imgproxy.delivery.bucket_cors import bucket_cors, redirecting_buckets
from imgproxy.errors import ProxyError, ReturnNotAllowed
from imgproxy.hostcache.directory import prepare
from imgproxy.process.reload import Reloader, hangup_reloads
from imgproxy.process.server import serve
from imgproxy.process.supervisor import serve_workers, worker_count
from imgproxy.protocol.accesslog import key_hash, key_hash_secret
from imgproxy.protocol.paths import IMG, META
from imgproxy.signers import SQL_DIALECTS, sql_script
from imgproxy.startup import StartupError, os_reason
from imgproxy.transform.describe import wants_placeholder
from imgproxy.transform.jobs import available_outputs
from imgproxy.transform.policy import TransformPolicy
from imgproxy.web.app import create_app
from imgproxy.web.appkeys import LIVE, METRICS
from imgproxy.web.session import check_return

EXIT_CONFIG: Final = 2
EXIT_RUNTIME: Final = 1
log = logging.getLogger("imgproxy")


class UsageError(Exception):
    """A command-line argument problem (not the config's): one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgproxy", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"imgproxy {__version__}")
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    parser.add_argument("--log-level", default="INFO", choices=levels)
    common = argparse.ArgumentParser(add_help=False)  # --log-level also after the command
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=levels)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the proxy", parents=[common])
    serve.add_argument("--config", help="TOML config (default: $IMGPROXY_CONFIG or $IMGPROXY_CONFIG_TOML)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--workers", type=int, help="override server.workers (1: one process, "
                                                   "no supervisor)")

    sign = commands.add_parser("sign", help="print a signed proxy URL for SOURCE and KEY",
                               parents=[common])
    sign.add_argument("--config", help="TOML config (default: $IMGPROXY_CONFIG or $IMGPROXY_CONFIG_TOML)")
    sign.add_argument("source")
    sign.add_argument("key")
    sign.add_argument("params", nargs="*", metavar="param=value", help="extra signed parameters")
    sign.add_argument("--ttl", default="1h", help="lifetime, e.g. 300, 15m, 1h, 7d (default 1h)")
    sign.add_argument("--window", help="round exp up to a multiple of this, so URLs signed within "
                                       "one window are identical (default: auth.url_window)")
    sign.add_argument("--kid", help="signing key id (default: auth.sign_with)")
    sign.add_argument("--base-url", help="URL prefix (default: server.public_url or http://host:port)")
    sign.add_argument("--curl", action="store_true", help="print a ready curl command instead")
    sign.add_argument("--durable", action="store_true",
                      help="no exp: valid while the key (durable = true), its scopes and the "
                           "revocations allow; carries iat")
    sign.add_argument("--sub", help="a signed viewer id, logged with every request for the URL")
    sign.add_argument("--meta", action="store_true",
                      help="a GET /meta/... URL (width, height, placeholder) instead of the image's")

    grant = commands.add_parser("grant", help="print a single-use GET /session link that gives a "
                                              "browser a grant cookie", parents=[common])
    grant.add_argument("--config", help="TOML config (default: $IMGPROXY_CONFIG or $IMGPROXY_CONFIG_TOML)")
    grant.add_argument("--sub", required=True, help="the user the grant is for")
    grant.add_argument("--scope", action="append", required=True, dest="scopes",
                       help="a scope to grant, e.g. 'photos:employees/*' (repeatable)")
    grant.add_argument("--group", action="append", default=[], dest="groups", help="a group (repeatable)")
    grant.add_argument("--ttl", default="60s", help="how long the link may wait to be opened "
                                                    "(default 60s, at most auth.grants.link_ttl)")
    grant.add_argument("--return", dest="return_to", help="where the browser goes next (an origin "
                                                          "in server.cors_origins)")
    grant.add_argument("--base-url", help="URL prefix (default: server.public_url or http://host:port)")

    verify = commands.add_parser("verify-url", help="explain whether the server accepts a signed URL",
                                 parents=[common])
    verify.add_argument("--config", help="TOML config (default: $IMGPROXY_CONFIG or $IMGPROXY_CONFIG_TOML)")
    verify.add_argument("url", help="the URL, or its path and query")

    hashed = commands.add_parser("key-hash", help="the access log's key_hash of SOURCE and KEY",
                                 parents=[common])
    hashed.add_argument("--config", help="TOML config (default: $IMGPROXY_CONFIG or $IMGPROXY_CONFIG_TOML)")
    hashed.add_argument("source")
    hashed.add_argument("key")

    cors = commands.add_parser("cors", help="print the S3 bucket CORS rules (JSON) that redirect "
                                            "delivery needs, for aws s3api put-bucket-cors",
                               parents=[common])
    cors.add_argument("--config", help="TOML config (default: $IMGPROXY_CONFIG or $IMGPROXY_CONFIG_TOML)")

    sql = commands.add_parser("sql", help="print the SQL that installs imgproxy.sign_url in a database "
                                          "(README: signing inside the database)", parents=[common])
    sql.add_argument("dialect", choices=SQL_DIALECTS)

    demo = commands.add_parser("demo", help="run against an in-process S3 with sample images",
                               parents=[common])
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8080, help="proxy port (0 picks a free one)")
    return parser


def _fail(message: str, code: int, stream: TextIO = sys.stderr) -> int:
    stream.write(f"imgproxy: {message}\n")
    return code


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # botocore logs request details (headers, signed URLs) at DEBUG: keep it out of our logs.
    for noisy in ("botocore", "aiobotocore", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"parameter {pair!r}: expected name=value")
        if name in RESERVED_PARAMS:
            raise UsageError(f"parameter {name!r}: is set by signing itself")
        if name in params:
            raise UsageError(f"parameter {name!r}: given twice")
        params[name] = value
    return params


def sign_command(config: Config, args: argparse.Namespace) -> str:
    if not config.auth.keys:
        raise ConfigError("auth.keys: no signing key is configured")
    kid = args.kid or config.auth.sign_with
    if kid not in config.auth.keys:
        raise UsageError(f"--kid: {kid!r} is not a key in auth.keys")
    limits = config.auth.key_limits.get(kid) or KeyLimits(max_ttl=config.auth.max_ttl)
    try:
        ttl = parse_duration(args.ttl, "--ttl")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    try:
        window = config.auth.url_window if args.window is None else parse_duration(args.window, "--window")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if args.durable and not limits.durable:
        raise UsageError(f"--durable: key {kid!r} does not sign durable URLs (set durable = true "
                         f"in [auth.keys.{kid}])")
    max_ttl = min(config.auth.max_ttl, limits.max_ttl)
    if not args.durable and not 1 <= ttl + window <= max_ttl:
        raise UsageError(f"--ttl: ttl + window must be between 1s and the key's max_ttl ({max_ttl:g}s)")
    if args.source not in config.sources:
        raise UsageError(f"source {args.source!r}: not in [sources] (known: {', '.join(config.sources)})")
    if not limits.allows(args.source, args.key):
        raise UsageError(f"out_of_scope: key {kid!r} may not sign {args.source}:{args.key} "
                         f"(its scopes: {', '.join(s.text for s in limits.scopes)})")
    params = parse_params(args.params)
    if args.meta:
        try:
            wants_placeholder(params)  # /meta takes placeholder=1 and nothing else
        except ProxyError as exc:
            raise UsageError(f"--meta: {exc.public_message}") from None
    if limits.presets_only and not args.meta:
        try:
            check_presets_only(params)
        except ProxyError as exc:
            raise UsageError(f"params_not_allowed: key {kid!r} is presets_only: "
                             f"{exc.public_message}") from None
    signer = UrlSigner(config.auth.keys[kid].reveal(), kid, args.base_url or config.server.base_url)
    try:
        url = signer.sign(args.source, args.key, ttl=ttl, params=params, window=window,
                          durable=args.durable, sub=args.sub, route=META if args.meta else IMG)
    except ProxyError as exc:  # paths.check_key refuses keys the server would refuse too
        raise UsageError(f"key {args.key!r}: {exc.public_message}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.curl:
        name = args.key.rsplit("/", 1)[-1] or "image"
        return f"curl -fsS -o {shlex.quote(name)} {shlex.quote(url)}"
    return url


def grant_command(config: Config, args: argparse.Namespace) -> str:
    grants = config.auth.grants
    if grants is None:
        raise ConfigError("auth.grants: cookie grants are off (add an [auth.grants] table)")
    try:
        ttl = parse_duration(args.ttl, "--ttl")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if not 1 <= ttl <= grants.link_ttl:
        raise UsageError(f"--ttl: between 1s and auth.grants.link_ttl ({grants.link_ttl:g}s)")
    limits = config.auth.key_limits.get(grants.key) or KeyLimits(max_ttl=config.auth.max_ttl)
    try:
        scopes = parse_scopes(args.scopes)
        if not within_key(scopes, limits):
            raise ValueError(f"out_of_scope: key {grants.key!r} covers only "
                             f"{', '.join(s.text for s in limits.scopes)}")
        if args.return_to is not None:
            check_return(args.return_to, config.server.cors_origins)
        return grant_link(config.auth.keys[grants.key].reveal(), grants.key, args.sub, args.scopes,
                          base_url=args.base_url or config.server.base_url, ttl=ttl,
                          return_to=args.return_to, groups=args.groups)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except ReturnNotAllowed:
        raise UsageError(f"--return: its origin is not in server.cors_origins "
                         f"({', '.join(config.server.cors_origins) or 'empty'})") from None


def cors_command(config: Config, notes: TextIO) -> str:
    """The bucket CORS document; which buckets need it (and how to apply it) go to ``notes``."""
    buckets = redirecting_buckets(config)
    if not buckets:
        notes.write("imgproxy: no source redirects browsers to S3 (delivery mode stream or accel): "
                    "its buckets need no CORS rules\n")
    for name, (bucket, mode) in buckets.items():
        notes.write(f"imgproxy: source {name} (delivery {mode}) redirects browsers to bucket {bucket}: "
                    f"aws s3api put-bucket-cors --bucket {shlex.quote(bucket)} "
                    "--cors-configuration file://cors.json\n")
    return json.dumps(bucket_cors(config), indent=2) + "\n"


def serve_command(config: Config, args: argparse.Namespace) -> int:
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    if args.workers is not None and not 0 <= args.workers <= 256:
        raise UsageError("--workers: expected 0 (one per CPU) to 256")
    workers = worker_count(config.server.workers if args.workers is None else args.workers)
    TransformPolicy.from_config(config.transform, available_outputs())  # presets: a ConfigError here
    log.info("imgproxy %s starting with sources %s", __version__, ", ".join(config.sources))
    try:
        if workers > 1:
            return serve_workers(config, host, port, workers, args.config)
        held = None if config.cache.dir is None else prepare(config.cache.dir, config.cache.variant_bytes)
        try:  # one process with a cache.dir: it claims and sweeps the directory itself
            app = create_app(config)
            reloader = Reloader(args.config, config, app[LIVE].current.version, app[METRICS].observe_reload)
            app.cleanup_ctx.append(hangup_reloads(reloader))  # SIGHUP: reload, in this process
            asyncio.run(serve(app, host, port))
        finally:
            if held is not None:
                held.release()
    except OSError as exc:
        return _fail(f"cannot listen on {host}:{port}: {os_reason(exc)}", EXIT_RUNTIME)
    except StartupError as exc:
        return _fail(str(exc), EXIT_RUNTIME)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse fills positionals only up to the first option: `sign SRC KEY --ttl 1h w=300`
    # leaves `w=300` over. Those are the sign command's params; anything else is an error.
    if extra:
        if args.command != "sign" or any(arg.startswith("-") for arg in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.params += extra
    configure_logging(args.log_level)
    try:
        if args.command == "demo":
            from imgproxy.demo import run_demo

            return run_demo(args.host, args.port)
        if args.command == "sql":  # no config: the script holds no key
            sys.stdout.write(sql_script(args.dialect))
            return 0
        config = load_config(args.config)
        if args.command == "sign":
            sys.stdout.write(sign_command(config, args) + "\n")
            return 0
        if args.command == "grant":
            sys.stdout.write(grant_command(config, args) + "\n")
            return 0
        if args.command == "verify-url":
            verdict = explain_url(config, args.url, time.time())
            sys.stdout.write(verdict.text + "\n")
            return 0 if verdict.accepted else EXIT_RUNTIME
        if args.command == "cors":
            sys.stdout.write(cors_command(config, sys.stderr))
            return 0
        if args.command == "key-hash":
            sys.stdout.write(key_hash(key_hash_secret(config), args.source, args.key) + "\n")
            return 0
        return serve_command(config, args)
    except ConfigError as exc:
        return _fail(f"config error: {exc}", EXIT_CONFIG)
    except UsageError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except KeyboardInterrupt:
        return 0
