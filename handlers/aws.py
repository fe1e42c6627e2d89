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


def secure_parameter(name: str) -> str:
    """An SSM SecureString's value, read once per container (a rotated value takes effect in
    new containers). Raises what SSM raises; an empty value is a ``ValueError``."""
    with _lock:
        found = _parameters.get(name)
    if found is None:
        answer = client("ssm").get_parameter(Name=name, WithDecryption=True)
        found = str(answer["Parameter"]["Value"])
        if not found:
            raise ValueError(f"SSM parameter {name} is empty")
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
