"""Presets: ``[transform.presets.NAME]`` definitions, and a ``preset=NAME`` query expanded into them.

Pure. ``build_presets`` checks each definition exactly as a URL's params would be checked
(``parse_transform`` with the server's limits and formats) when the settings are built, at
start-up and at every reload, so a bad preset is a ``ConfigError`` naming
``transform.presets.NAME.KEY``, never a request's 400. ``expand_preset`` runs before the spec
is built: the spec, and so the variant cache key and ETag, come from the preset's *definition*
(editing a preset changes both; two presets defining the same render share a variant).

With ``preset``, a URL may also give the parameters the preset lists in ``allow_override``
(its value replaces the preset's, or adds one the preset leaves out) and the per-image ``fp``
(which replaces the preset's ``gravity``) and ``initials``; any other transform parameter is a
400 naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from imgproxy.auth.presets import PER_IMAGE_PARAMS, PRESET_PARAM
from imgproxy.config import ConfigError, PresetConfig
from imgproxy.errors import InvalidParameter
from imgproxy.transform.params import TRANSFORM_PARAMS, TransformLimits, parse_transform

_NAMED: Final = re.compile(r"[Pp]arameter '([^']+)'")
_SHOWN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    params: Mapping[str, str]  # as a URL spells them, checked
    allow_override: frozenset[str]


def _check(config: PresetConfig, limits: TransformLimits) -> Preset:
    where = f"transform.presets.{config.name}"
    known = ", ".join(sorted(TRANSFORM_PARAMS))
    for key in config.params:
        if key not in TRANSFORM_PARAMS or key in PER_IMAGE_PARAMS:
            raise ConfigError(f"{where}.{key}: not a transform parameter a preset sets (known: {known})")
    for key in config.allow_override:
        if key not in TRANSFORM_PARAMS or key in PER_IMAGE_PARAMS:
            raise ConfigError(f"{where}.allow_override: {key!r} is not a transform parameter "
                              f"(known: {known})")
    try:
        parse_transform(config.params, limits)
    except InvalidParameter as exc:
        named = _NAMED.search(exc.public_message)
        at = f"{where}.{named.group(1)}" if named and named.group(1) in config.params else where
        raise ConfigError(f"{at}: {exc.public_message}") from None
    return Preset(config.name, config.params, frozenset(config.allow_override))


def build_presets(configs: Mapping[str, PresetConfig], limits: TransformLimits) -> Mapping[str, Preset]:
    """Every preset, checked against the transform parser; else ``ConfigError`` naming the key."""
    return MappingProxyType({name: _check(config, limits) for name, config in configs.items()})


def expand_preset(params: Mapping[str, str], presets: Mapping[str, Preset]) -> Mapping[str, str]:
    """``params`` with ``preset=NAME`` replaced by the preset's definition and the URL's allowed
    overrides; ``params`` as given when it names no preset."""
    name = params.get(PRESET_PARAM)
    if name is None:
        return params
    preset = presets.get(name)
    if preset is None:
        shown = f" '{name}'" if _SHOWN.fullmatch(name) else ""
        known = ", ".join(sorted(presets)) or "none are configured"
        raise InvalidParameter(f"unknown preset {name[:64]!r}",
                               public_message=f"Unknown preset{shown} (known: {known}).")
    for key in sorted(params):
        if key in TRANSFORM_PARAMS and key not in preset.allow_override and key not in PER_IMAGE_PARAMS:
            allowed = ", ".join(sorted(preset.allow_override)) or "none"
            raise InvalidParameter(f"param {key} with preset {name}", public_message=(
                f"Parameter '{key}' may not be given with preset={name} (it allows: {allowed})."))
    given = {k: v for k, v in params.items() if k != PRESET_PARAM}
    # A focal point places this image's crop: it replaces the preset's gravity (the two exclude
    # each other), so fp works with every fit=cover preset.
    defined = {k: v for k, v in preset.params.items() if not (k == "gravity" and "fp" in given)}
    return {**defined, **given}
