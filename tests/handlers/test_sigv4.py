"""``handlers.sigv4`` signs exactly as botocore's ``SigV4Auth`` does for ``execute-api``."""

from __future__ import annotations

import calendar
import datetime
from typing import Any
from urllib.parse import quote

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials

from handlers import sigv4
from handlers.sigv4 import Signer, canonical_uri

FROZEN = datetime.datetime(2026, 11, 26, 23, 59, 58, 734_000)  # naive UTC, as botocore reads it
FROZEN_EPOCH = calendar.timegm(FROZEN.timetuple()) + 0.734
WITH_TOKEN = ReadOnlyCredentials(
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "tok/en="
)
WITHOUT_TOKEN = ReadOnlyCredentials("AKIDEXAMPLE", "secret", None)


@pytest.fixture
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore 1.44 reads the time through ``botocore.auth.get_current_datetime``
    (``datetime.now(timezone.utc)`` without tzinfo), imported into ``botocore.auth``."""
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, **__: FROZEN)


def botocore_headers(
    credentials: Any, method: str, url: str, host: str, body: bytes
) -> list[tuple[str, str]]:
    headers = {"Host": host}
    if body:
        headers["Content-Type"] = "application/json"
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(credentials, "execute-api", "eu-west-1").add_auth(request)
    return list(request.headers.items())


CASES = [
    ("POST", "abc=", b'{"hello":"world"}', WITH_TOKEN),
    ("POST", "L0SM9cOFvHcCIhw=", b"{}", WITHOUT_TOKEN),
    ("DELETE", "L0SM9cOFvHcCIhw=", b"", WITH_TOKEN),
    ("GET", "a+b/c=", b"", WITHOUT_TOKEN),
    ("POST", "x+y==", '{"name":"Zoë ✓ 日本"}'.encode(), WITH_TOKEN),
    ("POST", "..", b"{}", WITH_TOKEN),  # a dot segment, which both remove before signing
    ("POST", "id with space~_-.", b"{}", WITH_TOKEN),
    ("POST", "ünï", b"{}", WITH_TOKEN),
]


@pytest.mark.parametrize(("method", "connection_id", "body", "credentials"), CASES)
@pytest.mark.parametrize(
    ("scheme", "host"),
    [("https", "abc123.execute-api.eu-west-1.amazonaws.com"), ("http", "127.0.0.1:4510")],
)
def test_headers_are_byte_identical_to_botocores(
    frozen_botocore: None,
    method: str,
    connection_id: str,
    body: bytes,
    credentials: Any,
    scheme: str,
    host: str,
) -> None:
    path = f"/prod/@connections/{quote(connection_id, safe='')}"
    expected = botocore_headers(credentials, method, f"{scheme}://{host}{path}", host, body)
    signer = Signer(lambda: credentials, "eu-west-1", clock=lambda: FROZEN_EPOCH)
    content_type = "application/json" if body else None
    assert signer.headers(method, host, path, body, content_type=content_type) == expected


def test_canonical_uri_double_encodes_as_botocore_does_for_non_s3() -> None:
    assert canonical_uri("/dev/@connections/abc%3D") == "/dev/%40connections/abc%253D"
    assert canonical_uri("/dev//@connections/./a%2Fb") == "/dev/%40connections/a%252Fb"
    assert canonical_uri("") == "/"
    assert sigv4.remove_dot_segments("/a/b/../c/") == "/a/c/"


def test_the_signing_key_is_derived_once_per_day_and_secret(frozen_botocore: None) -> None:
    now = [FROZEN_EPOCH]
    secret = ReadOnlyCredentials("AKID", "a secret only this test uses", None)
    current = [secret]
    signer = Signer(lambda: current[0], "eu-west-1", clock=lambda: now[0])
    before = sigv4.key_derivations()
    for number in range(50):
        signer.headers("POST", "h", f"/dev/@connections/c{number}", b"{}")
    assert sigv4.key_derivations() == before + 1
    now[0] += 2.0  # past midnight UTC: a new date, a new key
    signer.headers("POST", "h", "/dev/@connections/c", b"{}")
    signer.headers("POST", "h", "/dev/@connections/c", b"{}")
    assert sigv4.key_derivations() == before + 2
    current[0] = ReadOnlyCredentials("AKID", "the rotated secret", "t")  # re-read per request
    headers = dict(signer.headers("POST", "h", "/dev/@connections/c", b"{}"))
    assert sigv4.key_derivations() == before + 3
    assert headers["X-Amz-Security-Token"] == "t"


def test_rotated_credentials_sign_like_botocore_with_the_new_ones(frozen_botocore: None) -> None:
    current = [WITHOUT_TOKEN]
    signer = Signer(lambda: current[0], "eu-west-1", clock=lambda: FROZEN_EPOCH)
    host, path = "h.example", "/dev/@connections/c%3D"
    signer.headers("POST", host, path, b"{}", content_type="application/json")
    current[0] = WITH_TOKEN
    assert signer.headers("POST", host, path, b"{}", content_type="application/json") == (
        botocore_headers(WITH_TOKEN, "POST", f"https://{host}{path}", host, b"{}")
    )
