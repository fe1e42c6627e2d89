"""SigV4 (``AWS4-HMAC-SHA256``) header signing for ``execute-api`` requests, hashlib/hmac only.

Produces the headers botocore's ``SigV4Auth(credentials, service, region).add_auth(
AWSRequest(method, url, data=body, headers={"Host": ..., "Content-Type": ...}))``
produces for the same request at the same second, in the same order: ``Host``,
``Content-Type`` (when given), ``X-Amz-Date``, ``X-Amz-Security-Token`` (when the
credentials carry a session token), ``Authorization``.

What it saves over botocore: no ``AWSRequest``/``HTTPHeaders`` objects, and the
signing key (``kDate -> kRegion -> kService -> kSigning``, four HMACs) is derived
once per (date, secret key, region, service) instead of on every request, which
SigV4 allows: the key only depends on those four. Per request there remain one
SHA-256 of the body, one of the canonical request and one HMAC.

The canonical URI is the one botocore signs for services other than S3: the
request path as sent (already percent-encoded), dot segments and empty segments
removed, then percent-encoded *again* (``safe='/~'``). So a connection id
``abc=`` is sent as ``/dev/@connections/abc%3D`` and signed as
``/dev/%40connections/abc%253D`` (``@`` encoded, ``%`` encoded again).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class Credentials(Protocol):
    """botocore's ``ReadOnlyCredentials`` shape (what ``frozen_credentials`` returns)."""

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def token(self) -> str | None: ...


_key_lock = threading.Lock()
_keys: dict[tuple[str, str, str, str], bytes] = {}
_MAX_KEYS = 64
_derivations = 0


def key_derivations() -> int:
    """How many signing keys were derived in this process (a cache miss each)."""
    return _derivations


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """``kSigning`` for ``date`` (``YYYYMMDD``), derived once per (date, key, region, service)."""
    cache_key = (date, secret_key, region, service)
    key = _keys.get(cache_key)
    if key is not None:
        return key
    global _derivations
    k_date = hmac.digest(f"AWS4{secret_key}".encode(), date.encode(), "sha256")
    k_region = hmac.digest(k_date, region.encode(), "sha256")
    k_service = hmac.digest(k_region, service.encode(), "sha256")
    key = hmac.digest(k_service, b"aws4_request", "sha256")
    with _key_lock:
        if len(_keys) >= _MAX_KEYS:  # old dates and rotated secrets: start afresh
            _keys.clear()
        _keys[cache_key] = key
        _derivations += 1
    return key


def remove_dot_segments(path: str) -> str:
    """botocore's ``normalize_url_path``: RFC 3986 dot segments and empty segments removed."""
    if not path:
        return "/"
    output: list[str] = []
    for segment in path.split("/"):
        if segment and segment != ".":
            if segment == "..":
                if output:
                    output.pop()
            else:
                output.append(segment)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and output else ""
    return first + "/".join(output) + last


def canonical_uri(path: str) -> str:
    """The canonical URI SigV4 signs for ``path`` (the path as sent, percent-encoded)."""
    return quote(remove_dot_segments(path), safe="/~")


def _trim(value: str) -> str:
    return " ".join(value.split())


_stamp_lock = threading.Lock()
_stamp: tuple[int, str] = (-1, "")


def amz_date(now: float) -> str:
    """``YYYYMMDDTHHMMSSZ`` (UTC) for a ``time.time()`` value, formatted once per second."""
    global _stamp
    second = int(now // 1)
    cached = _stamp
    if cached[0] == second:
        return cached[1]
    text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
    with _stamp_lock:
        _stamp = (second, text)
    return text


class Signer:
    """Signs requests for one service and region with the provider's current credentials.

    ``credentials`` is called on every request (botocore's frozen credentials are
    cheap to read) so rotated credentials are picked up; ``clock`` gives
    ``time.time()`` values.
    """

    def __init__(
        self,
        credentials: Callable[[], Any],
        region: str,
        service: str = "execute-api",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self.clock = clock
        self._scope_tail = f"/{region}/{service}/aws4_request"

    def headers(
        self,
        method: str,
        host: str,
        path: str,
        body: bytes = b"",
        *,
        content_type: str | None = None,
        query: str = "",
    ) -> list[tuple[str, str]]:
        """The signed headers, in botocore's order, for ``method host path[?query]``.

        ``path`` is the path as sent (percent-encoded); ``host`` the ``Host`` header
        as sent; ``query`` an already canonical query string (sorted, encoded);
        ``content_type`` is sent and signed when given.
        """
        credentials = self.credentials()
        access_key: str = credentials.access_key
        secret_key: str = credentials.secret_key
        token: str | None = credentials.token
        stamp = amz_date(self.clock())
        date = stamp[:8]
        headers = [("Host", host)]
        if content_type is not None:
            headers.append(("Content-Type", content_type))
        headers.append(("X-Amz-Date", stamp))
        if token:
            headers.append(("X-Amz-Security-Token", token))
        canonical = sorted((name.lower(), _trim(value)) for name, value in headers)
        signed = ";".join(name for name, _ in canonical)
        payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        canonical_request = "\n".join(
            (
                method.upper(),
                canonical_uri(path),
                query,
                "".join(f"{name}:{value}\n" for name, value in canonical),
                signed,
                payload_hash,
            )
        )
        scope = date + self._scope_tail
        string_to_sign = "\n".join(
            (
                ALGORITHM,
                stamp,
                scope,
                hashlib.sha256(canonical_request.encode()).hexdigest(),
            )
        )
        key = signing_key(secret_key, date, self.region, self.service)
        signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        headers.append(
            (
                "Authorization",
                f"{ALGORITHM} Credential={access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}",
            )
        )
        return headers
