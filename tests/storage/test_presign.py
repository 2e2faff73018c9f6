"""The SigV4 presigner matches botocore's byte for byte at the same instant, and S3 serves it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

import botocore.auth
import botocore.session
import pytest
from botocore.config import Config as BotoConfig

from imgproxy.config import AddressingStyle
from imgproxy.storage.presign import PresignCredentials, locate, presign_get

MOMENT = datetime(2026, 11, 23, 18, 0, 0, tzinfo=UTC)
CREDS = PresignCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def botocore_url(endpoint: str | None, style: str, bucket: str, key: str, monkeypatch: pytest.MonkeyPatch,
                 *, token: str | None = None, params: dict[str, str] | None = None,
                 region: str = "eu-west-1", operation: str = "get_object") -> str:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: MOMENT.replace(tzinfo=None))
    client = botocore.session.get_session().create_client(
        "s3", region_name=region, endpoint_url=endpoint, aws_access_key_id=CREDS.access_key,
        aws_secret_access_key=CREDS.secret_key, aws_session_token=token,
        config=BotoConfig(signature_version="s3v4", s3={"addressing_style": style}))
    url: str = client.generate_presigned_url(
        operation, Params={"Bucket": bucket, "Key": key, **(params or {})}, ExpiresIn=3600)
    return url


def as_parts(url: str) -> tuple[str, str, dict[str, list[str]]]:
    parts = urlsplit(url)
    return parts.netloc, parts.path, parse_qs(parts.query)


@pytest.mark.parametrize(("endpoint", "style"), [
    ("http://127.0.0.1:9000", AddressingStyle.PATH),
    ("https://minio.example.com", AddressingStyle.PATH),
    ("https://r2.example.com", AddressingStyle.VIRTUAL),
    (None, AddressingStyle.VIRTUAL),
    (None, AddressingStyle.PATH),
])
@pytest.mark.parametrize("key", ["plain.jpg", "dir/Zoë Smith+1 (copy)=&.jpg", "a%20b/~c*d!.png"])
def test_signature_equals_botocores(endpoint: str | None, style: AddressingStyle, key: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    expected = botocore_url(endpoint, style, "my-bucket", key, monkeypatch)
    ours = presign_get(locate(endpoint, "eu-west-1", "my-bucket", style), "my-bucket", key, CREDS,
                       signed_at=MOMENT, expires_in=3600)
    assert as_parts(ours) == as_parts(expected)


def test_a_head_url_equals_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = botocore_url("http://127.0.0.1:9000", "path", "b", "dir/k.jpg", monkeypatch,
                            operation="head_object")
    location = locate("http://127.0.0.1:9000", "eu-west-1", "b", AddressingStyle.PATH)
    ours = presign_get(location, "b", "dir/k.jpg", CREDS, signed_at=MOMENT, expires_in=3600, method="HEAD")
    assert as_parts(ours) == as_parts(expected)
    assert ours != presign_get(location, "b", "dir/k.jpg", CREDS, signed_at=MOMENT, expires_in=3600)


def test_session_token_and_response_overrides_are_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = {"ResponseCacheControl": "private, max-age=3600", "ResponseContentType": "image/jpeg"}
    expected = botocore_url("http://127.0.0.1:9000", "path", "b", "k.jpg", monkeypatch,
                            token="session/token+=", params=overrides)
    creds = PresignCredentials(CREDS.access_key, CREDS.secret_key, "session/token+=")
    location = locate("http://127.0.0.1:9000", "eu-west-1", "b", AddressingStyle.PATH)
    ours = presign_get(location, "b", "k.jpg", creds, signed_at=MOMENT, expires_in=3600,
                       response_headers={"response-cache-control": "private, max-age=3600",
                                         "response-content-type": "image/jpeg"})
    assert as_parts(ours) == as_parts(expected)


def test_same_signing_time_gives_the_identical_url() -> None:
    location = locate("http://127.0.0.1:9000", "us-east-1", "b", AddressingStyle.PATH)
    first = presign_get(location, "b", "k", CREDS, signed_at=MOMENT, expires_in=600)
    assert first == presign_get(location, "b", "k", CREDS, signed_at=MOMENT, expires_in=600)
    later = presign_get(location, "b", "k", CREDS, signed_at=MOMENT.replace(hour=19), expires_in=600)
    assert later != first


@pytest.mark.parametrize("expires_in", [0, 7 * 24 * 3600 + 1])
def test_expiry_outside_s3_limits_is_refused(expires_in: int) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        presign_get(locate(None, "us-east-1", "b", AddressingStyle.AUTO), "b", "k", CREDS, signed_at=MOMENT,
                    expires_in=expires_in)


def test_repr_hides_the_secret() -> None:
    assert CREDS.secret_key not in repr(CREDS)


def test_moto_serves_the_presigned_url(moto_endpoint: str, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="dir/a b+c.jpg", Body=b"bytes!")
    location = locate(moto_endpoint, "us-east-1", bucket, AddressingStyle.PATH)
    credentials = PresignCredentials("testing-access-key", "testing-secret-key")
    url = presign_get(location, bucket, "dir/a b+c.jpg", credentials, signed_at=datetime.now(UTC),
                      expires_in=60, response_headers={"response-cache-control": "private, max-age=60"})
    with urlopen(url, timeout=5) as response:  # noqa: S310 - loopback moto
        assert response.read() == b"bytes!"
        assert response.headers["Cache-Control"] == "private, max-age=60"
