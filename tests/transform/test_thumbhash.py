"""transform/thumbhash.py against the reference encoder: the same bytes for every picture the
reference hashed under Node (thumbhash_vectors.json, made by make_thumbhash_vectors.py)."""

from __future__ import annotations

import base64
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
from thumbhash_images import IMAGES, pixels

from imgproxy.transform.thumbhash import _cos, encode_thumbhash, rgba_to_thumbhash

VECTORS = json.loads(Path(__file__).with_name("thumbhash_vectors.json").read_text(encoding="utf-8"))["hashes"]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_each_hash_is_the_reference_encoders(name: str) -> None:
    width, height, kind = IMAGES[name]
    assert encode_thumbhash(width, height, pixels(width, height, kind)) == VECTORS[name]


def test_every_picture_has_a_vector() -> None:
    assert sorted(VECTORS) == sorted(IMAGES)


def test_a_transparent_picture_sets_the_alpha_bit_and_an_opaque_one_does_not() -> None:
    opaque = rgba_to_thumbhash(32, 32, pixels(32, 32, "solid"))
    clear = rgba_to_thumbhash(64, 64, pixels(64, 64, "disc"))
    assert not opaque[2] & 0x80
    assert clear[2] & 0x80


def test_the_hash_is_deterministic_and_small() -> None:
    rgba = pixels(100, 100, "noise-alpha")
    first = rgba_to_thumbhash(100, 100, rgba)
    assert first == rgba_to_thumbhash(100, 100, rgba)
    assert 5 <= len(first) <= 30
    assert base64.b64decode(encode_thumbhash(100, 100, rgba)) == first


@pytest.mark.parametrize(("width", "height", "size"), [(101, 10, 101 * 10 * 4), (0, 10, 0), (10, 10, 399)])
def test_too_large_or_mis_sized_pixels_are_refused(width: int, height: int, size: int) -> None:
    with pytest.raises(ValueError, match="RGBA"):
        rgba_to_thumbhash(width, height, b"\0" * size)


def test_the_cosine_is_javascripts_for_every_angle_the_dct_takes() -> None:
    """Math.cos under Node (V8's fdlibm) and ``_cos`` agree bit for bit on every angle an image
    of up to 100x100 pixels uses; the host's ``math.cos`` differs on a few of them."""
    script = """
    const out = [];
    for (let w = 1; w <= 100; w++) for (let c = 0; c < 8; c++) for (let x = 0; x < w; x++)
      out.push(Math.cos(Math.PI / w * c * (x + 0.5)));
    process.stdout.write(JSON.stringify(out));
    """
    binary = shutil.which("node")
    assert binary is not None, "node is not installed (CI installs Debian's nodejs: .ci/run)"
    done = subprocess.run([binary, "-e", script], capture_output=True, text=True, timeout=60, check=True)
    expected = json.loads(done.stdout)
    angles = [math.pi / w * c * (x + 0.5) for w in range(1, 101) for c in range(8) for x in range(w)]
    assert [_cos(angle) for angle in angles] == expected
