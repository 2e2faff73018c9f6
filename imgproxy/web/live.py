"""``Live``: the settings in force now, swapped whole by a reload or a new polled revocation list.

A request reads ``live.current`` once, at its start (``middleware.observe`` puts it in the
request as ``SETTINGS``), and is served with that ``Settings`` to its end: a reload during a
long download or a render changes nothing for it. What a reload may not change (sockets, pools,
caches, S3 connections) is kept as it was by ``config.restart.apply_reload`` before it gets
here, so ``Settings.config`` always describes what is running.

Building ``Settings`` is pure and runs in a thread (a large revocation list takes a while);
installing it is one assignment on the loop thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from imgproxy.auth.principal import AuthPolicy
from imgproxy.config import Config, Revocation
from imgproxy.protocol.accesslog import key_hash_secret
from imgproxy.protocol.cors import CorsPolicy
from imgproxy.protocol.forwarded import Network, parse_networks
from imgproxy.storage.s3 import S3Source
from imgproxy.transform.jobs import available_outputs
from imgproxy.transform.policy import TransformPolicy


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a request is served with, from one config (``version``) and one revocation list."""

    config: Config
    version: str  # config.digest.config_version of the config as loaded
    auth: AuthPolicy
    transforms: TransformPolicy
    sources: Mapping[str, S3Source]  # the running sources with this config's serving settings
    trusted_proxies: tuple[Network, ...]
    cors: CorsPolicy
    key_hash_secret: bytes = field(repr=False)  # the access log's key_hash

    @classmethod
    def build(cls, config: Config, version: str, polled: tuple[Revocation, ...] | None,
              running: Mapping[str, S3Source]) -> Settings:
        return cls(
            config=config,
            version=version,
            auth=AuthPolicy.from_config(config, polled),
            transforms=TransformPolicy.from_config(config.transform, available_outputs()),
            sources={name: source.serving(config.sources[name]) for name, source in running.items()},
            trusted_proxies=parse_networks(config.server.trusted_proxies),
            cors=CorsPolicy.from_config(config.server),
            key_hash_secret=key_hash_secret(config),
        )


class Live:
    """The current ``Settings``, and what they are built from: the config in force, the polled
    revocation entries (None: configured but never loaded) and the running sources. Updates
    are built one at a time, off the loop thread, then installed at once."""

    def __init__(self, config: Config, version: str) -> None:
        self.polled: tuple[Revocation, ...] | None = None if config.auth.revocations_url else ()
        self.sources: Mapping[str, S3Source] = {}
        self.current = Settings.build(config, version, self.polled, self.sources)
        self._updating = asyncio.Lock()

    def attach(self, sources: Mapping[str, S3Source]) -> None:
        """The sources' clients are open (``app.s3_sources``): requests may reach them now."""
        self.sources = sources
        now = self.current
        self.current = Settings.build(now.config, now.version, self.polled, sources)

    async def switch(self, config: Config, version: str) -> Settings:
        """A reloaded config, in force for the requests that start from now on."""
        async with self._updating:
            settings = await asyncio.to_thread(Settings.build, config, version, self.polled, self.sources)
            self.current = settings
            return settings

    async def revoke(self, polled: tuple[Revocation, ...]) -> Settings:
        """A newly loaded polled revocation list, with the config in force."""
        async with self._updating:
            now = self.current
            settings = await asyncio.to_thread(Settings.build, now.config, now.version, polled,
                                               self.sources)
            self.polled, self.current = polled, settings
            return settings
