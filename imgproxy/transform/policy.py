"""``TransformPolicy``: what this server transforms and how, decided once from the config.

Pure and frozen. Built with the settings (``web/live.py``, again at each reload);
``routes.image`` and ``POST /sign`` parse a query with it (``parse``: the transform asked for,
or None for the original), the variant service checks sizes with it, and the benchmarks render
with its settings exactly as the server does.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from imgproxy.config import TransformConfig
from imgproxy.errors import InvalidParameter, SourceTooLarge
from imgproxy.transform.jobs import RenderSettings
from imgproxy.transform.params import OutputFormat, TransformLimits, TransformSpec, parse_transform
from imgproxy.transform.presets import Preset, build_presets, expand_preset


@dataclass(frozen=True, slots=True)
class TransformPolicy:
    enabled: bool
    limits: TransformLimits
    settings: RenderSettings
    max_source_bytes: int
    # What fmt=auto may send besides JPEG/PNG, in the order equal Accept weights go
    # (``transform.auto_prefer``, less what this Pillow build cannot encode).
    auto_formats: tuple[OutputFormat, ...]
    # [transform.presets.NAME], checked: a bad one is a ConfigError when the settings are built.
    presets: Mapping[str, Preset] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: TransformConfig, formats: Collection[OutputFormat]) -> TransformPolicy:
        """``formats``: what this Pillow build can encode (``jobs.available_outputs``); a preset
        this server could not render is a ``ConfigError``."""
        limits = TransformLimits(config.max_width, config.max_height, frozenset(formats))
        return cls(
            enabled=config.enabled,
            limits=limits,
            settings=RenderSettings(
                input_formats=config.input_formats,
                max_source_pixels=config.max_source_pixels,
                jpeg_quality=config.jpeg_quality,
                webp_quality=config.webp_quality,
                avif_quality=config.avif_quality,
                png_compress_level=config.png_compress_level,
            ),
            max_source_bytes=config.max_source_bytes,
            auto_formats=tuple(fmt for name in config.auto_prefer if (fmt := OutputFormat(name)) in formats),
            presets=build_presets(config.presets, limits),
        )

    @property
    def formats(self) -> Collection[OutputFormat]:
        return self.limits.formats

    def parse(self, params: Mapping[str, str]) -> TransformSpec | None:
        """The transform the signed query asks for (a ``preset`` expanded into its definition
        first); None: stream the original untouched."""
        spec = parse_transform(expand_preset(params, self.presets), self.limits)
        if spec is not None and not self.enabled:
            raise InvalidParameter("transforms disabled",
                                   public_message="This server does not transform images.")
        return spec

    def check_size(self, size: int) -> None:
        """Sources over ``max_source_bytes`` are refused before they are read (413)."""
        if size > self.max_source_bytes:
            raise SourceTooLarge(f"{size} bytes > {self.max_source_bytes}",
                                 public_message=f"The source image is larger than "
                                                f"{self.max_source_bytes} bytes, the most "
                                                "this server transforms.")
