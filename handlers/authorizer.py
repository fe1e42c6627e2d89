"""Lambda REQUEST authorizer for ``$connect``; identity source: the ``token`` query parameter.

A valid token (see ``handlers.tokens``) gets an Allow policy for the route's
``methodArn`` with ``principalId`` = the token's ``sub`` and context
``{"userId": sub, "claims": "<JSON text>", "expiresAt": exp}``: ``claims`` holds
only the claims named in ``IDENTITY_CLAIMS`` whose values are strings or lists
of strings (what access rules read; ``"{}"`` when none), as JSON text because
an authorizer's context takes only strings, numbers and booleans.

Anything else gets Deny, including a token whose expiry lies more than
``TOKEN_MAX_LIFETIME_SECONDS`` ahead; the reason goes to the log and never to
the client. The signing secret is an SSM SecureString read once per container.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from handlers import aws, config, logs
from handlers.tokens import (
    DEFAULT_MAX_LIFETIME_SECONDS,
    InvalidToken,
    identity_claims,
    mint_token,
    verify_token,
)

__all__ = ["decide", "handler", "identity_claims", "mint_token", "policy"]

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


def decide(
    event: dict[str, Any],
    secret: str,
    now: float,
    *,
    max_lifetime: int = DEFAULT_MAX_LIFETIME_SECONDS,
    claim_names: Sequence[str] = (),
) -> dict[str, Any]:
    """Allow or Deny for one authorizer request (pure)."""
    resource = str(event.get("methodArn") or "*")
    params = event.get("queryStringParameters") or {}
    request_context = event.get("requestContext") or {}
    try:
        claims = verify_token(params.get("token"), secret, now=now, max_lifetime=max_lifetime)
    except InvalidToken as refused:
        log.warning(
            "connection refused",
            extra={
                "reason": refused.reason,
                "connectionId": request_context.get("connectionId"),
                "sourceIp": (request_context.get("identity") or {}).get("sourceIp"),
            },
        )
        return policy("unauthorized", "Deny", resource)
    user_id = claims["sub"]
    context: dict[str, str | int] = {
        "userId": user_id,
        "claims": identity_claims(claims, claim_names),
        "expiresAt": int(claims["exp"]),
    }
    return policy(user_id, "Allow", resource, context)


def load_secret(ssm: Any, name: str) -> str:
    return str(ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])


def secret() -> str:
    """The signing secret, fetched on first use and cached for the container's life."""
    global _secret
    with _secret_lock:
        if _secret is None:
            _secret = load_secret(aws.client("ssm"), CONFIG.secret_parameter)
        return _secret


def forget_secret() -> None:
    """Drop the cached secret (tests; a rotated secret takes effect in new containers)."""
    global _secret
    with _secret_lock:
        _secret = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
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
