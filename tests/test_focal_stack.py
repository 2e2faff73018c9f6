"""fp=x,y and gravity=auto through the whole stack: aiohttp on a real socket -> VariantService ->
worker pool, the portraits stored in moto (tests/portraits.py). The crop's quality is reported
against a centre crop: the fraction of the face each render kept."""

from __future__ import annotations

import io
from typing import Any

import pytest
from aiohttp import hdrs
from PIL import Image, ImageChops, ImageStat
from portraits import Portrait, portrait, subject_kept
from support import ProxyFactory

from imgproxy.auth.signing import UrlSigner
from imgproxy.transform.geometry import focal_crop

COVER = {"w": "120", "h": "120", "fit": "cover"}
# (key, picture, orientation): faces off the centre, in portraits and a landscape, some stored
# turned a quarter with EXIF orientation 6 (as phones store them); 2400x3200 is large enough
# for the JPEG draft to decode at 1/8 before the attention map is measured.
PORTRAITS: dict[str, tuple[Portrait, int]] = {
    "top.jpg": (portrait((600, 800), (0.5, 0.16)), 1),
    "top-turned.jpg": (portrait((600, 800), (0.45, 0.18), seed=1), 6),
    "left.jpg": (portrait((800, 600), (0.15, 0.45), seed=2), 1),
    "phone.jpg": (portrait((2400, 3200), (0.6, 0.17), seed=3), 6),
}


class Photos:
    def __init__(self, client: Any, signer: UrlSigner) -> None:
        self.client, self.signer = client, signer

    async def get(self, key: str, **params: str) -> tuple[int, dict[str, str], bytes]:
        response = await self.client.get(self.signer.sign("photos", key, params=params))
        return response.status, dict(response.headers), await response.read()

    async def image(self, key: str, **params: str) -> Image.Image:
        status, _, body = await self.get(key, **params)
        assert status == 200, body
        image = Image.open(io.BytesIO(body))
        image.load()
        return image.convert("RGB")


@pytest.fixture
async def photos(proxy: ProxyFactory, s3: Any, bucket: str, signer: UrlSigner) -> Photos:
    for key, (picture, orientation) in PORTRAITS.items():
        s3.put_object(Bucket=bucket, Key=key, Body=picture.jpeg(orientation), ContentType="image/jpeg")
    client = await proxy(transform={"workers": 1, "prestart_workers": True})
    return Photos(client, signer)


def difference(one: Image.Image, other: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(one, other)).mean) / 3


@pytest.mark.parametrize("key", list(PORTRAITS))
async def test_gravity_auto_keeps_more_of_the_face_than_a_centre_crop(photos: Photos, key: str) -> None:
    picture, _ = PORTRAITS[key]
    auto = await photos.image(key, **COVER, gravity="auto")
    centre = await photos.image(key, **COVER)
    assert auto.size == centre.size == (120, 120)
    kept_auto, kept_centre = subject_kept(auto, picture), subject_kept(centre, picture)
    print(f"{key}: face kept by gravity=auto {kept_auto:.3f}, by the centre crop {kept_centre:.3f}")
    assert kept_auto >= 0.9
    assert kept_auto >= kept_centre + 0.1


@pytest.mark.parametrize("key", ["top.jpg", "top-turned.jpg", "left.jpg"])
@pytest.mark.parametrize("fp", ["0,0", "1,1", "0,1", "0.5,0.5", "0.3,0.7"])
async def test_fp_centres_the_crop_on_the_point_of_the_displayed_picture(photos: Photos, key: str,
                                                                         fp: str) -> None:
    # Fractions of the picture as shown (after EXIF orientation): the same crop for the turned file.
    picture, _ = PORTRAITS[key]
    point = tuple(float(v) for v in fp.split(","))
    box = focal_crop(picture.image.size, (120, 120), (point[0], point[1]))
    expected = picture.image.resize((120, 120), Image.Resampling.LANCZOS, box=box)
    elsewhere = picture.image.resize(
        (120, 120), Image.Resampling.LANCZOS,
        box=focal_crop(picture.image.size, (120, 120), (1 - point[0], 1 - point[1])))
    render = await photos.image(key, **COVER, fp=fp)
    assert difference(render, expected) < 3
    if box != focal_crop(picture.image.size, (120, 120), (1 - point[0], 1 - point[1])):
        assert difference(render, elsewhere) > 3 * difference(render, expected)


async def test_fp_at_the_face_keeps_it_and_a_corner_away_from_it_does_not(photos: Photos) -> None:
    picture, _ = PORTRAITS["top-turned.jpg"]
    at_face = await photos.image("top-turned.jpg", **COVER, fp="0.45,0.18")
    away = await photos.image("top-turned.jpg", **COVER, fp="1,1")
    kept_face, kept_away = subject_kept(at_face, picture), subject_kept(away, picture)
    print(f"top-turned.jpg: face kept with fp at it {kept_face:.3f}, with fp=1,1 {kept_away:.3f}")
    assert kept_face >= 0.9 > kept_away


async def test_fp_is_in_the_variant_key_and_etag(photos: Photos) -> None:
    _, first, _ = await photos.get("top.jpg", **COVER, fp="0.5,0.25")
    _, same, _ = await photos.get("top.jpg", **COVER, fp="0.500,0.250")
    _, other, _ = await photos.get("top.jpg", **COVER, fp="0.5,0.75")
    _, auto, _ = await photos.get("top.jpg", **COVER, gravity="auto")
    assert first[hdrs.ETAG] == same[hdrs.ETAG]
    assert (first["X-Cache"], same["X-Cache"]) == ("MISS", "HIT")
    assert len({first[hdrs.ETAG], other[hdrs.ETAG], auto[hdrs.ETAG]}) == 3


@pytest.mark.parametrize(("params", "message"), [
    ({"w": "120", "h": "120", "fp": "0.5,0.5"}, "Parameter 'fp' only applies to fit=cover."),
    ({**COVER, "fp": "0.5,0.5", "gravity": "north"}, "Parameter 'fp' cannot be combined with gravity."),
    ({**COVER, "fp": "1.0001,0.5"},
     "Parameter 'fp' must be x,y: two fractions from 0 to 1 with at most 3 decimals (0.5,0.25)."),
])
async def test_a_bad_fp_is_400_invalid_parameter(photos: Photos, params: dict[str, str],
                                                 message: str) -> None:
    status, _, body = await photos.get("top.jpg", **params)
    assert status == 400
    assert b'"invalid_parameter"' in body
    assert message.encode() in body
