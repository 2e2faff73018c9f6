"""HEIF in ``transform.input_formats`` and ``sources.NAME.convert_originals``: defaults, the extra
it needs, and every validation error, naming the key path."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest

from imgproxy.config import DEFAULT_INPUT_FORMATS, ConfigError, ConvertFormat, parse_config
from imgproxy.config.restart import apply_reload

HEIF_INPUT = {"input_formats": [*DEFAULT_INPUT_FORMATS, "heif"]}


def config(source: dict[str, Any] | None = None, transform: dict[str, Any] | None = None) -> Any:
    data = {"auth": {"keys": {"k1": "k" * 32}},
            "sources": {"photos": {"bucket": "private-photos", **(source or {})}},
            "transform": transform or {}}
    return parse_config(data, environ={})


def test_heif_is_opt_in_and_no_source_converts_by_default() -> None:
    parsed = config()
    assert "HEIF" not in parsed.transform.input_formats
    assert parsed.sources["photos"].convert_originals == ()
    assert parsed.sources["photos"].convert_format is ConvertFormat.JPEG


def test_heif_may_be_listed_when_the_extra_is_installed() -> None:
    parsed = config({"convert_originals": ["heif"], "convert_format": "auto"}, HEIF_INPUT)
    assert parsed.transform.input_formats[-1] == "HEIF"
    assert parsed.sources["photos"].convert_originals == ("HEIF",)
    assert parsed.sources["photos"].convert_format is ConvertFormat.AUTO


@pytest.mark.parametrize("missing", ["pillow_heif", "_pillow_heif"])
def test_heif_without_the_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    # A None in sys.modules is how the import system spells "cannot be imported".
    monkeypatch.setitem(sys.modules, missing, None)
    with pytest.raises(ConfigError) as caught:
        config(transform=HEIF_INPUT)
    assert str(caught.value) == ("transform.input_formats: HEIF needs the heif extra (pillow_heif), which "
                                 "is not installed: pip install 'imgproxy-s3[heif]'")
    assert config().transform.input_formats == DEFAULT_INPUT_FORMATS  # without HEIF: fine


@pytest.mark.parametrize(("source", "transform", "message"), [
    ({"convert_originals": ["HEIF"]}, {},
     "sources.photos.convert_originals: HEIF is not in transform.input_formats"),
    ({"convert_originals": ["HEIF"]}, {**HEIF_INPUT, "enabled": False},
     "sources.photos.convert_originals: needs transform.enabled"),
    ({"convert_originals": ["TIFF"]}, {}, "sources.photos.convert_originals: 'TIFF' is not one of HEIF"),
    ({"convert_originals": "HEIF"}, {}, "sources.photos.convert_originals: expected a list of strings"),
    ({"convert_format": "png"}, {}, "sources.photos.convert_format: must be 'jpeg' or 'auto'"),
])
def test_invalid_conversions_name_the_key(source: dict[str, Any], transform: dict[str, Any],
                                          message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(source, transform)
    assert str(caught.value) == message


@pytest.mark.parametrize("key", ["convert_originals", "convert_format"])
def test_the_variant_store_takes_no_conversion_keys(key: str) -> None:
    with pytest.raises(ConfigError, match=f"cache.store.{key}: only for sources"):
        parse_config({"auth": {"keys": {"k1": "k" * 32}}, "sources": {"photos": {"bucket": "private-photos"}},
                      "cache": {"store": {"bucket": "variants", key: ["HEIF"]}}}, environ={})


def test_a_reload_changes_the_conversions() -> None:
    running = config(transform=HEIF_INPUT)
    loaded = config({"convert_originals": ["HEIF"]}, HEIF_INPUT)
    applied, waiting = apply_reload(running, loaded)
    assert applied.sources["photos"].convert_originals == ("HEIF",)
    assert waiting == ()
    assert dataclasses.replace(applied.sources["photos"], convert_originals=()) == running.sources["photos"]
