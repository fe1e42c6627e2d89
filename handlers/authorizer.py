"""Lambda REQUEST authorizer for ``$connect``.

The token comes from the ``token`` query parameter or, failing that, the
``Sec-WebSocket-Protocol`` header (``handlers.signin``); the authorizer
declares no identity source, so API Gateway always invokes it and a request
without a token gets Deny here (403).

Two modes (``AUTH_MODE``): ``hmac`` (default), the stack's own tokens
(``handlers.tokens``), signed with a secret read once per container from an
SSM SecureString; ``jwt``, tokens of the stack's identity provider
(``handlers.jwt_verify``), verified against the issuer's keys, cached per
container (``handlers.jwks``), with ``JWT_CLAIMS`` renaming claims.

A valid token gets an Allow policy for the route's ``methodArn`` with
``principalId`` = the token's ``sub`` and context ``{"userId": sub, "claims":
"<JSON text>", "expiresAt": exp}`` (the same shape in both modes): ``claims``
holds only the claims named in ``IDENTITY_CLAIMS`` whose values are strings or
lists of strings (what access rules read; ``"{}"`` when none), as JSON text
because an authorizer's context takes only strings, numbers and booleans.

Anything else gets Deny, including a token whose expiry lies more than
``TOKEN_MAX_LIFETIME_SECONDS`` ahead; the reason goes to the log (``connection
refused``, with ``reason`` and ``tokenSource``) and never to the client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from handlers import aws, config, logs, signin
from handlers.tokens import (
    DEFAULT_MAX_LIFETIME_SECONDS,
    InvalidToken,
    identity_claims,
    mint_token,
    verify_token,
)

__all__ = ["decide", "decide_with", "handler", "identity_claims", "mint_token", "policy"]

CONFIG = config.authorizer_config()
log = logs.logger(__name__)

_secret_lock = threading.Lock()
_secret: str | None = None


def policy(
    principal_id: str, effect: str, resource: str, context: Mapping[str, str | int] | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    }
    if context:
        answer["context"] = dict(context)
    return answer


Verify = Callable[[Any, float], dict[str, Any]]
"""(token, now) -> the verified payload (with the stack's claim names), or ``InvalidToken``."""


def decide_with(
    event: dict[str, Any], verify: Verify, now: float, *, claim_names: Sequence[str] = ()
) -> dict[str, Any]:
    """Allow or Deny for one authorizer request, whatever verifies its token."""
    resource = str(event.get("methodArn") or "*")
    request_context = event.get("requestContext") or {}
    token, source = signin.token_source(event)
    try:
        payload = verify(token, now)
    except InvalidToken as refused:
        log.warning(
            "connection refused",
            extra={
                "reason": refused.reason,
                "tokenSource": source,
                "connectionId": request_context.get("connectionId"),
                "sourceIp": (request_context.get("identity") or {}).get("sourceIp"),
            },
        )
        return policy("unauthorized", "Deny", resource)
    context = signin.connection_context(payload, claim_names)
    return policy(str(context["userId"]), "Allow", resource, context)


def decide(
    event: dict[str, Any],
    secret: str,
    now: float,
    *,
    max_lifetime: int = DEFAULT_MAX_LIFETIME_SECONDS,
    claim_names: Sequence[str] = (),
) -> dict[str, Any]:
    """Allow or Deny for one authorizer request in HMAC mode (pure)."""

    def verify(token: Any, at: float) -> dict[str, Any]:
        return verify_token(token, secret, now=at, max_lifetime=max_lifetime)

    return decide_with(event, verify, now, claim_names=claim_names)


def load_secret(ssm: Any, name: str) -> str:
    return str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])


def secret() -> str:
    """The signing secret, fetched on first use and cached for the container's life."""
    global _secret
    with _secret_lock:
        if _secret is None:
            if CONFIG.secret_parameter is None:
                raise LookupError("JWT mode: there is no token secret")
            _secret = load_secret(aws.client("ssm"), CONFIG.secret_parameter)
        return _secret


def forget_secret() -> None:
    """Drop the cached secret (tests; a rotated secret takes effect in new containers)."""
    global _secret
    with _secret_lock:
        _secret = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if CONFIG.jwt is not None:
        verifier = signin.jwt_verifier(CONFIG.jwt)
        return decide_with(event, verifier.verify, time.time(), claim_names=CONFIG.identity_claims)
    try:
        key = secret()
    except Exception:  # fail closed: no secret, no connection; retried on the next request
        log.exception(
            "could not read the token secret", extra={"parameter": CONFIG.secret_parameter}
        )
        return policy("unauthorized", "Deny", str(event.get("methodArn") or "*"))
    return decide(
        event,
        key,
        time.time(),
        max_lifetime=CONFIG.token_max_lifetime,
        claim_names=CONFIG.identity_claims,
    )
