"""Lazily created, reused AWS clients.

Clients come from one botocore session per container, so they honour the
standard configuration: ``AWS_REGION``, credentials from the environment, and
the ``AWS_ENDPOINT_URL_<SERVICE>`` overrides the emulator uses to point the
handlers at local services. botocore clients are thread-safe.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_lock = threading.RLock()
_session: Any = None
_clients: dict[str, Any] = {}


def session() -> Any:
    global _session
    with _lock:
        if _session is None:
            import botocore.session  # deferred: keeps imports of pure modules cheap

            _session = botocore.session.get_session()
        return _session


def region() -> str:
    configured = session().get_config_variable("region")
    return str(configured or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


def client(service: str) -> Any:
    """The container's client for ``service``, created on first use."""
    current = session()
    with _lock:
        found = _clients.get(service)
        if found is None:
            from botocore.config import Config

            found = current.create_client(
                service,
                region_name=region() if service != "sts" else None,
                config=Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    max_pool_connections=16,
                    connect_timeout=3,
                    read_timeout=10,
                ),
            )
            _clients[service] = found
        return found


_parameters: dict[str, str] = {}
SSM_ATTEMPTS = 3


class ParameterError(RuntimeError):
    """SSM did not answer the parameter's value (its error code, or a connection error)."""


def ssm_endpoint() -> str:
    """Where SSM is: the standard ``AWS_ENDPOINT_URL_SSM`` / ``AWS_ENDPOINT_URL`` overrides
    (the emulator's), else the region's public endpoint."""
    for name in ("AWS_ENDPOINT_URL_SSM", "AWS_ENDPOINT_URL"):
        override = os.environ.get(name, "").strip()
        if override:
            return override.rstrip("/")
    return f"https://ssm.{region()}.amazonaws.com"


def _get_parameter(name: str) -> str:
    """One SigV4-signed ``GetParameter`` (``WithDecryption``) over ``http.client``.

    The same request a boto3 SSM client sends, without creating one: a client loads
    SSM's service model, about 50 ms of a cold start, for the one call a container makes.
    Throttling, server and connection errors are retried; others raise ``ParameterError``.
    """
    import http.client
    import json
    from urllib.parse import urlsplit

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    endpoint = ssm_endpoint()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParameterError(f"SSM endpoint is not an http(s) URL: {endpoint!r}")
    credentials = session().get_credentials()
    if credentials is None:
        raise ParameterError("no AWS credentials to read SSM parameters with")
    body = json.dumps({"Name": name, "WithDecryption": True}).encode("utf-8")
    path = parts.path or "/"
    problem = "no answer"
    for attempt in range(SSM_ATTEMPTS):
        request = AWSRequest(
            method="POST",
            url=f"{parts.scheme}://{parts.netloc}{path}",
            data=body,
            headers={
                "Host": parts.netloc,
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "AmazonSSM.GetParameter",
            },
        )
        SigV4Auth(credentials.get_frozen_credentials(), "ssm", region()).add_auth(request)
        connection_type = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_type(parts.hostname, parts.port, timeout=5)
        try:
            connection.request("POST", path, body=body, headers=dict(request.headers.items()))
            reply = connection.getresponse()
            status, payload = reply.status, reply.read()
        except (OSError, http.client.HTTPException) as bad:
            problem = f"connection error: {bad}"
            continue
        finally:
            connection.close()
        try:
            answer = json.loads(payload or b"{}")
        except ValueError:
            answer = {}
        if status == 200 and isinstance(answer, dict):
            value = (answer.get("Parameter") or {}).get("Value")
            if isinstance(value, str):
                return value
            raise ParameterError(f"SSM answered no value for {name}")
        code = str(answer.get("__type", "") if isinstance(answer, dict) else "").split("#")[-1]
        problem = f"HTTP {status} {code or 'error'}"
        if status < 500 and "Throttl" not in code:
            break
        if attempt + 1 < SSM_ATTEMPTS:
            import time

            time.sleep(0.05 * 2**attempt)
    raise ParameterError(f"could not read SSM parameter {name}: {problem}")


def secure_parameter(name: str) -> str:
    """An SSM SecureString's value, read once per container (a rotated value takes effect in
    new containers). Raises ``ParameterError``; an empty value is one too."""
    with _lock:
        found = _parameters.get(name)
    if found is None:
        found = _get_parameter(name)
        if not found:
            raise ParameterError(f"SSM parameter {name} is empty")
        with _lock:
            _parameters[name] = found
    return found


def reset() -> None:
    """Forget every client, the session and the parameters read (tests switch credentials
    and endpoints)."""
    global _session
    with _lock:
        _clients.clear()
        _parameters.clear()
        _session = None
