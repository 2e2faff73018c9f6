"""transform/policy.py: what fmt=auto may choose, from the config and what Pillow can encode."""

from __future__ import annotations

import pytest

from imgproxy.config import TransformConfig
from imgproxy.transform.params import OutputFormat
from imgproxy.transform.policy import TransformPolicy

WEBP, AVIF = OutputFormat.WEBP, OutputFormat.AVIF
EVERY = frozenset(OutputFormat)
NO_AVIF = frozenset({OutputFormat.JPEG, OutputFormat.PNG, OutputFormat.WEBP})


@pytest.mark.parametrize(
    ("prefer", "formats", "expected"),
    [
        (TransformConfig().auto_prefer, EVERY, (WEBP, AVIF)),  # the default: WebP wins a tie
        (("avif", "webp"), EVERY, (AVIF, WEBP)),
        (("webp",), EVERY, (WEBP,)),
        ((), EVERY, ()),
        (("avif", "webp"), NO_AVIF, (WEBP,)),  # what this Pillow build cannot encode is left out
    ],
)
def test_auto_formats_follow_auto_prefer_less_what_cannot_be_encoded(
        prefer: tuple[str, ...], formats: frozenset[OutputFormat],
        expected: tuple[OutputFormat, ...]) -> None:
    policy = TransformPolicy.from_config(TransformConfig(auto_prefer=prefer), formats)
    assert policy.auto_formats == expected


def test_an_explicit_format_stays_allowed_when_auto_leaves_it_out() -> None:
    policy = TransformPolicy.from_config(TransformConfig(auto_prefer=("webp",)), EVERY)
    spec = policy.parse({"w": "100", "fmt": "avif"})
    assert spec is not None
    assert spec.fmt is AVIF
