"""``imgproxy demo``: an in-process S3 (moto) with a private bucket of sample images, and the proxy.

Needs no AWS account and nothing running: it starts moto's threaded server on loopback, creates
the bucket, uploads generated images (three samples and 200 employee portraits), starts a tiny
identity provider of its own (``demo.idp``: made-up users, a key made for this run, its JWKS on
another loopback port), the proxy with fresh random credentials that trusts it, and the employee
directory page at ``/`` (``demo.gallery``), and prints URLs and curl commands that work as printed
(``demo.banner``). Ctrl-C (or SIGTERM) stops everything.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from imgproxy.auth.signing import UrlSigner
from imgproxy.background import running
from imgproxy.config import Config, parse_config
from imgproxy.config.grants import is_loopback
from imgproxy.demo.banner import Banner, banner
from imgproxy.demo.gallery import THUMB_PRESET, Gallery, Login, add_gallery, warm_placeholders
from imgproxy.demo.idp import DemoIdp, serve_idp
from imgproxy.demo.page import THUMB
from imgproxy.demo.people import Person, directory, portrait
from imgproxy.process.server import make_runner
from imgproxy.storage.clients import s3_client
from imgproxy.web.app import create_app
from imgproxy.web.appkeys import METRICS_URL

URL_WINDOW: Final = "1h"  # the directory page's URLs are identical for a whole hour
BUCKET: Final = "demo-private"
SOURCE: Final = "demo"
UPLOADS: Final = 16  # concurrent uploads while seeding


def sample_images() -> dict[str, tuple[bytes, str]]:
    """Generated samples: key -> (bytes, content type). Pillow is imported only here."""
    from PIL import Image, ImageDraw

    def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    photo = Image.linear_gradient("L").resize((1200, 800)).convert("RGB")
    draw = ImageDraw.Draw(photo)
    draw.ellipse((450, 250, 750, 550), fill=(220, 120, 40))
    draw.text((40, 40), "imgproxy demo: private photo", fill=(255, 255, 255))

    badge = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    ImageDraw.Draw(badge).ellipse((16, 16, 240, 240), fill=(30, 140, 220, 200))

    large = Image.effect_noise((4000, 3000), 64).convert("RGB")
    return {
        "photos/employee photo.jpg": (encode(photo, "JPEG", quality=88), "image/jpeg"),
        "badges/badge+alpha.png": (encode(badge, "PNG"), "image/png"),
        "large/scan-4000x3000.jpg": (encode(large, "JPEG", quality=95), "image/jpeg"),
    }


@contextmanager
def moto_server(host: str = "127.0.0.1") -> Iterator[str]:
    """moto's threaded S3-compatible server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    server.start()
    try:
        bound_host, port = server.get_host_and_port()
        yield f"http://{bound_host}:{port}"
    finally:
        server.stop()


@dataclass(frozen=True, slots=True)
class DemoSecrets:
    signing_key: str
    token: str  # reads every image (the curl examples)
    gallery_token: str  # signs URLs for the directory page, reads nothing


def demo_config(endpoint: str, host: str, port: int,
                idp: DemoIdp | None = None) -> tuple[Config, DemoSecrets]:
    """A config for the demo, with a fresh signing key and bearer tokens; with ``idp``, its JWTs
    are accepted (``[auth.oidc.demo]``) and may be traded for cookie grants, which a plain-HTTP
    loopback demo sends without ``Secure``."""
    demo = DemoSecrets(*(secrets.token_urlsafe(32) for _ in range(3)))
    data: dict[str, Any] = {
        "server": {"host": host, "port": port},
        "metrics": {"host": host, "port": 0},  # any free port: a demo must start anywhere
        # The directory's thumbnails (gallery.THUMB_PARAMS): one definition, 1x and 2x (dpr=2).
        "transform": {"presets": {THUMB_PRESET: {"w": THUMB, "h": THUMB, "fit": "cover", "fmt": "auto",
                                                 "allow_override": ["dpr"]}}},
        "auth": {
            "keys": {"demo": demo.signing_key},
            "max_ttl": "1d",
            "url_window": URL_WINDOW,
            "sign_max_items": 1000,
            "tokens": {
                "curl": {"token": demo.token, "scopes": [f"{SOURCE}:*"]},
                "gallery": {"token": demo.gallery_token, "sign_scopes": [f"{SOURCE}:employees/*"]},
            },
        },
        "sources": {
            SOURCE: {
                "bucket": BUCKET,
                "region": "us-east-1",
                "endpoint_url": endpoint,
                "addressing_style": "path",
                "access_key_id": "demo-access-key",
                "secret_access_key": "demo-secret-key",
                "connect_timeout": 2,
                "read_timeout": 10,
                # A new hire's photo is not there yet: a drawn silhouette instead of a broken
                # image (an initials avatar where the URL asks for one), answered 200 so the
                # browser caches it like a photo, for an hour.
                "fallback": {"builtin": "silhouette", "status": 200,
                             "cache_control": "private, max-age=3600"},
            }
        },
    }
    if idp is not None:
        data["auth"] |= {
            "oidc": {"demo": idp.provider_config(SOURCE)},
            "grants": {"secure": False},  # plain URLs then take preset= (and no other sizes)
        }
    return parse_config(data, environ={}), demo


async def seed_bucket(config: Config, images: dict[str, tuple[bytes, str]],
                      people: tuple[Person, ...] = ()) -> None:
    """The samples and one portrait per person (drawn in a thread while earlier ones upload)."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(UPLOADS)
    async with s3_client(config.sources[SOURCE]) as client:
        await client.create_bucket(Bucket=BUCKET)

        async def upload(key: str, body: bytes, content_type: str) -> None:
            async with limit:
                await client.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType=content_type)

        async def upload_portrait(person: Person) -> None:
            await upload(person.key, await loop.run_in_executor(None, portrait, person), "image/jpeg")

        await asyncio.gather(*(upload(key, body, kind) for key, (body, kind) in images.items()),
                             *(upload_portrait(person) for person in people if person.has_photo))


def listen(host: str, port: int) -> tuple[socket.socket, str]:
    """The demo's listening socket, bound first: the page and banner need its URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family)
    bound = sock.getsockname()[1]
    return sock, f"http://[{host}]:{bound}" if family == socket.AF_INET6 else f"http://{host}:{bound}"


async def serve_demo(host: str, port: int) -> None:
    sock, base_url = listen(host, port)
    images = sample_images()
    people = directory()
    async with AsyncExitStack() as stack:
        stack.enter_context(sock)
        endpoint = stack.enter_context(moto_server())
        # The log-in view needs cookies without Secure, which only a loopback demo may send.
        idp = await stack.enter_async_context(serve_idp()) if is_loopback(host) else None
        config, demo = demo_config(endpoint, host, port, idp)
        await seed_bucket(config, images, people)
        app = create_app(config)
        login = Login(idp, config.auth.oidc["demo"]) if idp is not None else None
        add_gallery(app, Gallery(people, SOURCE, f"{base_url}/sign", demo.gallery_token, login))
        runner = make_runner(app)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, sock).start()
        # The directory's placeholders (ThumbHash), made once in the background while the banner
        # is read, so the first view rarely waits for them (if it does, it shares their renders).
        await stack.enter_async_context(running(warm_placeholders(app, people, SOURCE), "placeholder-warmup"))
        signer = UrlSigner(demo.signing_key, "demo", base_url)
        sys.stdout.write(banner(Banner(base_url, endpoint, BUCKET, SOURCE, signer, demo.token, images,
                                       app.get(METRICS_URL), people, idp)))
        sys.stdout.flush()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()


def run_demo(host: str, port: int) -> int:
    try:
        asyncio.run(serve_demo(host, port))
    except OSError as exc:
        sys.stderr.write(f"imgproxy: demo cannot listen on {host}:{port}: {exc.strerror or exc}\n")
        return 1
    sys.stdout.write("imgproxy demo stopped.\n")
    return 0
