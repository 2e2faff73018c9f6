"""delivery/conversion.py's decisions: which originals a converting source renders, and as what."""

from __future__ import annotations

import pytest

from imgproxy.config import ConvertFormat
from imgproxy.delivery.conversion import conversion_spec, is_named_as, is_typed_as
from imgproxy.transform.params import Fit, OutputFormat, TransformLimits, TransformSpec

LIMITS = TransformLimits(4096, 2048, frozenset(OutputFormat))


@pytest.mark.parametrize(("key", "expected"), [
    ("employees/ada.heic", True), ("IMG_0001.HEIC", True), ("a.heif", True), ("a.hif", True),
    ("burst.heics", True), ("a.jpg", False), ("heic", False), ("a.heic.jpg", False), ("a.heic/", False),
])
def test_keys_are_heif_by_their_suffix(key: str, expected: bool) -> None:
    assert is_named_as(("HEIF",), key) is expected
    assert is_named_as((), key) is False


@pytest.mark.parametrize(("content_type", "expected"), [
    ("image/heic", True), ("image/HEIF", True), ("image/heic-sequence", True), (" image/heif ; x=1", True),
    ("image/avif", False), ("image/jpeg", False), ("", False), (None, False),
])
def test_objects_are_heif_by_their_media_type(content_type: str | None, expected: bool) -> None:
    assert is_typed_as(("HEIF",), content_type) is expected


@pytest.mark.parametrize(("output", "expected"), [
    (ConvertFormat.JPEG, TransformSpec(4096, 2048, Fit.INSIDE, fmt=OutputFormat.JPEG)),
    (ConvertFormat.AUTO, TransformSpec(4096, 2048, Fit.INSIDE, auto_format=True)),
])
def test_a_converted_original_is_the_whole_picture_within_the_output_limits(
        output: ConvertFormat, expected: TransformSpec) -> None:
    assert conversion_spec(LIMITS, output) == expected
