"""A lean client for the API Gateway Management API's ``@connections`` resource.

boto3's ``post_to_connection`` spends several hundred µs of CPU per call
(request serialisation, event hooks, response parsing), which caps one process
at a few hundred to ~900 posts/s whatever the thread count. This adapter sends the
same request (same path, SigV4-signed by botocore for ``execute-api``) over
one persistent HTTP/1.1 connection per thread, and maps error responses to the
error codes boto3 would raise (``GoneException``, ``LimitExceededException``,
``ForbiddenException``, ``PayloadTooLargeException``...).
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

_FALLBACK_CODES = {
    400: "BadRequestException",
    403: "ForbiddenException",
    410: "GoneException",
    413: "PayloadTooLargeException",
    429: "LimitExceededException",
}
CONNECTION_ERROR = "ConnectionError"
_STALE_CONNECTION_ERRORS = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)


class _OneWrite:
    """Send the request line, the headers and a ``bytes`` body in one write.

    ``http.client`` writes the body separately from the headers: with
    ``TCP_NODELAY`` (which it sets) every post becomes two segments (two TLS
    records over https), two send calls here and two reads on the server. This
    joins them; other bodies (none, files, iterables) go through unchanged.
    """

    _buffer: list[bytes]

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        buffer = getattr(self, "_buffer", None)
        if isinstance(message_body, bytes) and not encode_chunked and isinstance(buffer, list):
            buffer.extend((b"", b""))
            request = b"\r\n".join(buffer) + message_body
            del buffer[:]
            self.send(request)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


@dataclass(frozen=True)
class Response:
    status: int
    """HTTP status; 0 when no response arrived (network error, timeout)."""
    error_code: str | None = None
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def gone(self) -> bool:
        return self.status == 410 or self.error_code == "GoneException"

    @property
    def retryable(self) -> bool:
        """Throttling, server errors and network errors are worth another try."""
        return self.status == 0 or self.status == 429 or self.status >= 500


def error_code(status: int, headers: Any, body: bytes) -> str | None:
    """The error code boto3 would raise for this response (None for success)."""
    if 200 <= status < 300:
        return None
    header = headers.get("x-amzn-ErrorType") if headers is not None else None
    if header:
        return str(header).split(":", 1)[0]
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        parsed = {}
    if isinstance(parsed, dict):
        code = parsed.get("__type") or parsed.get("code")
        if isinstance(code, str) and code:
            return code.rsplit("#", 1)[-1]
    if status >= 500:
        return "InternalServerError"
    return _FALLBACK_CODES.get(status, f"HTTP{status}")


def endpoint_from_request(request_context: dict[str, Any]) -> str:
    """The @connections endpoint for a handler invoked by API Gateway:
    ``https://{apiId}.execute-api.{region}.amazonaws.com/{stage}``.

    Never ``domainName``: behind a custom domain that is the custom host, whose mapping
    (and path) the management API does not answer on. ``AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI``
    (the standard override) wins, as it does for boto3. The component sets
    ``MANAGEMENT_ENDPOINT``, so this is only the fallback of a handler deployed without it.
    """
    override = os.environ.get("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", "").strip()
    if override:
        return override
    api_id = request_context.get("apiId")
    stage = request_context.get("stage")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not api_id or not stage or not region:
        raise ValueError(
            "requestContext has no apiId/stage (or AWS_REGION is unset) to build the endpoint"
        )
    return f"https://{api_id}.execute-api.{region}.amazonaws.com/{stage}"


class ManagementApi:
    """Posts to ``{endpoint}/@connections/{id}``; safe to share between threads."""

    def __init__(
        self,
        endpoint: str,
        *,
        region: str,
        credentials: Callable[[], Any] | None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"management endpoint must be an http(s) URL, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self._secure = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._secure else 80)
        self._netloc = parts.netloc
        self._base_path = parts.path.rstrip("/")
        self._region = region
        self._credentials = credentials
        self._timeout = timeout
        self._local = threading.local()
        self._ssl = ssl.create_default_context() if self._secure else None

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._secure:
                conn = _HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl
                )
            else:
                conn = _HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _signed_headers(self, method: str, url: str, body: bytes) -> dict[str, str]:
        headers = {"Host": self._netloc}
        if body:
            headers["Content-Type"] = "application/json"
        if self._credentials is None:
            return headers
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(self._credentials(), "execute-api", self._region).add_auth(request)
        return dict(request.headers.items())

    def request(
        self, method: str, connection_id: str, body: bytes = b"", timeout: float | None = None
    ) -> Response:
        """One signed request; ``timeout`` (seconds) caps this call's socket waits."""
        path = f"{self._base_path}/@connections/{quote(connection_id, safe='')}"
        scheme = "https" if self._secure else "http"
        headers = self._signed_headers(method, f"{scheme}://{self._netloc}{path}", body)
        wait = self._timeout if timeout is None else max(0.05, min(timeout, self._timeout))
        for attempt in (1, 2):
            conn = self._connection()
            reused = conn.sock is not None
            conn.timeout = wait
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(wait)
                conn.request(method, path, body=body or None, headers=headers)
                reply = conn.getresponse()
                payload = reply.read()
            except _STALE_CONNECTION_ERRORS:
                # The server closed a kept-alive connection before reading the request:
                # nothing was delivered, so one more try on a fresh connection is safe.
                self._drop_connection()
                if reused and attempt == 1:
                    continue
                return Response(0, CONNECTION_ERROR)
            except (OSError, http.client.HTTPException):  # timeout, refused, reset mid-reply
                self._drop_connection()
                return Response(0, CONNECTION_ERROR)
            if reply.will_close:
                self._drop_connection()
            return Response(reply.status, error_code(reply.status, reply.headers, payload), payload)
        raise AssertionError("unreachable")

    def post_to_connection(
        self, connection_id: str, data: bytes, timeout: float | None = None
    ) -> Response:
        return self.request("POST", connection_id, data, timeout)

    def get_connection(self, connection_id: str) -> Response:
        return self.request("GET", connection_id)

    def delete_connection(self, connection_id: str) -> Response:
        return self.request("DELETE", connection_id)


def frozen_credentials(session: Any) -> Callable[[], Any]:
    """A provider of the session's current credentials (refreshed when they rotate).

    Credentials are resolved once, here, so concurrent first calls do not each
    walk the provider chain.
    """
    found = session.get_credentials()
    if found is None:
        raise RuntimeError("no AWS credentials found to sign @connections requests")

    def current() -> Any:
        return found.get_frozen_credentials()

    return current
