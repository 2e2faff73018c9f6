"""support.ProxyFactory, the ``proxy`` fixture every stack test builds its app with: a keyword
changes only the keys it names, a preset lies under every call, the call's clock wins."""

from __future__ import annotations

import time

from s3_gate import ManualClock
from support import TOKENS, ProxyFactory

from imgproxy.web import appkeys as keys


def test_unchanged_it_is_the_test_config_on_the_tests_bucket(proxy: ProxyFactory, bucket: str,
                                                              moto_endpoint: str) -> None:
    config = proxy.config()
    assert list(config.sources) == ["photos"]
    assert (config.sources["photos"].bucket, config.sources["photos"].endpoint_url) == (bucket, moto_endpoint)
    assert [token.name for token in config.auth.tokens] == list(TOKENS)
    assert (config.transform.prestart_workers, config.metrics.port) == (False, 0)


def test_a_table_changes_only_the_keys_it_names(proxy: ProxyFactory) -> None:
    config = proxy.config(server={"log_keys": True}, source={"prefix": "employees/"})
    assert (config.server.log_keys, config.server.host, config.server.workers) == (True, "127.0.0.1", 1)
    assert (config.sources["photos"].prefix, config.sources["photos"].read_timeout) == ("employees/", 5)


def test_sources_adds_a_source_beside_photos(proxy: ProxyFactory) -> None:
    config = proxy.config(sources={"archive": {"bucket": "archive-bucket"}})
    assert sorted(config.sources) == ["archive", "photos"]


def test_a_preset_lies_under_every_call(proxy: ProxyFactory) -> None:
    dash = {"token": "dash-token-0123456789abcdef0123456789abcd", "sign_scopes": ["photos:*"]}
    signing = proxy.preset(auth={"tokens": {**TOKENS, "dash": dash}})
    config = signing.config(auth={"sign_max_items": 3})
    assert config.auth.sign_max_items == 3
    assert [token.name for token in config.auth.tokens] == [*TOKENS, "dash"]
    assert signing.config(auth={"tokens": dict(TOKENS)}).auth.tokens == proxy.config().auth.tokens


def test_the_calls_clock_wins_over_the_presets(proxy: ProxyFactory) -> None:
    preset, call = ManualClock(1.0), ManualClock(2.0)
    assert proxy.app()[keys.CLOCK] is time.time
    assert proxy.preset(clock=preset).app()[keys.CLOCK] is preset
    assert proxy.preset(clock=preset).app(clock=call)[keys.CLOCK] is call


async def test_the_client_serves_the_app_it_built(proxy: ProxyFactory) -> None:
    client = await proxy(server={"inline_types": ["image/png"]})
    assert client.app[keys.CONFIG].server.inline_types == ("image/png",)
    assert (await client.get("/healthz")).status == 200
