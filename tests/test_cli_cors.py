"""``imgproxy cors --config PATH``: the bucket CORS rules redirect delivery needs, through the real
CLI, and applied to a real (moto) bucket as ``aws s3api put-bucket-cors`` would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from processes import run, write_config
from support import config_data

from imgproxy.delivery.bucket_cors import own_origin

DASH = "https://dash.example.com"


def cors_of(tmp_path: Path, data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    result = run("cors", "--config", str(write_config(tmp_path, data)))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_cors_prints_rules_for_the_configured_origins_and_the_proxys_own(tmp_path: Path) -> None:
    data = config_data("http://127.0.0.1:9", "photos-bucket")
    data["server"].update(public_url="https://img.example.com/", cors_origins=[DASH], cors_max_age="1h")
    data["delivery"] = {"mode": "redirect"}
    document, notes = cors_of(tmp_path, data)
    [rule] = document["CORSRules"]
    assert rule["AllowedOrigins"] == ["https://img.example.com", DASH]
    assert rule["AllowedMethods"] == ["GET", "HEAD"]
    assert "Range" in rule["AllowedHeaders"]
    assert "Authorization" not in rule["AllowedHeaders"]
    assert "ETag" in rule["ExposeHeaders"]
    assert rule["MaxAgeSeconds"] == 3600
    assert "source photos (delivery redirect) redirects browsers to bucket photos-bucket" in notes
    assert "aws s3api put-bucket-cors --bucket photos-bucket --cors-configuration file://cors.json" in notes


def test_cors_says_when_no_bucket_needs_rules(tmp_path: Path) -> None:
    data = config_data("http://127.0.0.1:9", "photos-bucket")
    data["server"]["cors_origins"] = ["*"]
    data["delivery"] = {"mode": "stream"}
    document, notes = cors_of(tmp_path, data)
    assert document["CORSRules"][0]["AllowedOrigins"] == ["*"]
    assert "no source redirects browsers to S3" in notes


def test_cors_rules_are_accepted_by_s3(tmp_path: Path, s3: Any, bucket: str) -> None:
    data = config_data("http://127.0.0.1:9", bucket)
    data["server"]["cors_origins"] = [DASH, "http://127.0.0.1:5173"]
    document, _ = cors_of(tmp_path, data)
    s3.put_bucket_cors(Bucket=bucket, CORSConfiguration=document)
    applied = s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    assert applied[0]["AllowedOrigins"] == document["CORSRules"][0]["AllowedOrigins"]
    s3.delete_bucket_cors(Bucket=bucket)


def test_cors_with_a_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data = config_data("http://127.0.0.1:9", "photos-bucket")
    data["server"]["cors_origins"] = ["https://dash.example.com/"]
    result = run("cors", "--config", str(write_config(tmp_path, data)))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "imgproxy: config error: server.cors_origins: 'https://dash.example.com/': an origin has no "
        "path, query or trailing slash (e.g. 'https://dash.example.com')"]


@pytest.mark.parametrize(("base_url", "origin"), [
    ("https://img.example.com", "https://img.example.com"),
    ("https://IMG.example.com:443/prefix/", "https://img.example.com"),
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://[::1]:8080", "http://[::1]:8080"),
])
def test_own_origin_is_the_public_urls_serialized_origin(base_url: str, origin: str) -> None:
    assert own_origin(base_url) == origin
