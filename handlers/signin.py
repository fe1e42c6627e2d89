"""Where a connection's token comes from, and how a JWT-mode container verifies it.

Token sources, in order:

1. the ``token`` query string parameter (``wss://.../dev?token=...``);
2. the ``Sec-WebSocket-Protocol`` header: a client that offers the fixed
   protocol name ``SUBPROTOCOL`` and exactly one other value, e.g.
   ``new WebSocket(url, ["realtime-channel", token])``, is signing in with
   that other value. The connect function then answers with
   ``Sec-WebSocket-Protocol: realtime-channel`` (only the fixed name, never
   the token), which browsers require of a server when a client offered
   protocols.

API Gateway runs a WebSocket REQUEST authorizer only when every identity
source it declares is present, so the authorizer declares none and reads
both places itself (``token_of``).

In JWT mode one ``KeySet`` (the issuer's keys, ``handlers.jwks``) lives as long
as the container: ``jwt_verifier`` builds it on first use and keeps it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from handlers.tokens import identity_claims

if TYPE_CHECKING:  # JWT mode's modules are imported on first use: HMAC mode never loads them
    from handlers.config import JwtConfig
    from handlers.jwks import KeySet

SUBPROTOCOL = "realtime-channel"
"""The WebSocket subprotocol a client offers beside its token, and the only value the
connect response ever names."""
PROTOCOL_HEADER = "sec-websocket-protocol"
MAX_OFFERED = 16
"""Subprotocol values read from one request, at most."""


def header_values(event: Mapping[str, Any], name: str) -> list[str]:
    """Every comma-separated value of header ``name`` (any case), from ``multiValueHeaders``
    when the event has them, else ``headers``; stripped, empty ones dropped."""
    wanted = name.lower()
    lines: list[str] = []
    multi = event.get("multiValueHeaders") or {}
    if isinstance(multi, dict):
        for key, values in multi.items():
            if isinstance(key, str) and key.lower() == wanted and isinstance(values, list):
                lines.extend(value for value in values if isinstance(value, str))
    if not lines:
        single = event.get("headers") or {}
        if isinstance(single, dict):
            for key, value in single.items():
                if isinstance(key, str) and key.lower() == wanted and isinstance(value, str):
                    lines.append(value)
    values = [part.strip() for line in lines for part in line.split(",")]
    return [value for value in values if value][:MAX_OFFERED]


def offered_protocols(event: Mapping[str, Any]) -> list[str]:
    return header_values(event, PROTOCOL_HEADER)


def selected_protocol(event: Mapping[str, Any]) -> str | None:
    """What the connect response names in ``Sec-WebSocket-Protocol``: ``SUBPROTOCOL`` when
    the client offered it, else None (no header)."""
    return SUBPROTOCOL if SUBPROTOCOL in offered_protocols(event) else None


def token_source(event: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(the token, where it came from: ``"query"`` or ``"subprotocol"``); (None, None) when
    the request carries none."""
    params = event.get("queryStringParameters") or {}
    token = params.get("token") if isinstance(params, dict) else None
    if isinstance(token, str) and token:
        return token, "query"
    offered = offered_protocols(event)
    if SUBPROTOCOL in offered:
        others = [value for value in offered if value != SUBPROTOCOL]
        if len(others) == 1:
            return others[0], "subprotocol"
    return None, None


def token_of(event: Mapping[str, Any]) -> str | None:
    return token_source(event)[0]


class JwtVerifier:
    """JWT mode in one container: the stack's rules and the issuer's cached keys."""

    def __init__(self, settings: JwtConfig, keys: KeySet | None = None) -> None:
        from handlers.jwks import KeySet

        self.settings = settings
        self.keys = keys or KeySet(
            settings.rules.issuer,
            settings.jwks_url,
            max_age=settings.jwks_max_age,
            refresh_interval=settings.jwks_refresh,
        )

    def verify(self, token: Any, now: float) -> dict[str, Any]:
        """The verified payload with the stack's claim names (``JWT_CLAIMS`` applied), or
        ``InvalidToken``."""
        from handlers.jwt_verify import mapped_claims, verify_jwt

        payload = verify_jwt(token, self.settings.rules, self.keys, now)
        return mapped_claims(payload, self.settings.claims)


_lock = threading.Lock()
_verifier: JwtVerifier | None = None


def jwt_verifier(settings: JwtConfig) -> JwtVerifier:
    """The container's verifier for ``settings`` (built once; its keys cached with it)."""
    global _verifier
    with _lock:
        if _verifier is None or _verifier.settings != settings:
            _verifier = JwtVerifier(settings)
        return _verifier


def forget_verifier() -> None:
    """Drop the container's verifier and its cached keys (tests)."""
    global _verifier
    with _lock:
        _verifier = None


def connection_context(payload: Mapping[str, Any], claim_names: Sequence[str]) -> dict[str, Any]:
    """The authorizer context a verified payload gives the connection, the same in both
    modes: ``userId`` (``sub``), ``claims`` (JSON text of the allow-listed claims) and
    ``expiresAt`` (``exp``, whole seconds)."""
    return {
        "userId": payload["sub"],
        "claims": identity_claims(payload, claim_names),
        "expiresAt": int(payload["exp"]),
    }
