"""``$connect``: store the connection's record. 200 accepts the connection; 500 refuses it.

A client that offered the ``realtime-channel`` WebSocket subprotocol (with its
token beside it, ``handlers.signin``) gets ``Sec-WebSocket-Protocol:
realtime-channel`` in the 200 answer, which API Gateway passes into the
handshake response: browsers fail a connection whose server picks none of the
protocols offered. Only the fixed name is ever echoed, never the token.

The record carries the identity ``$default`` checks access rules against: the
authorizer's ``userId``, its ``claims`` (JSON text of the allow-listed token
claims) and ``expiresAt`` (the token's expiry), plus an empty ``subs`` map.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from handlers import aws, config, logs, signin, strict_json
from handlers.connections import connection_item, put_connection

CONFIG = config.connect_config()
log = logs.logger(__name__)

MAX_USER_ID_LENGTH = 256
_DIGITS = re.compile(r"[0-9]{1,20}")


def user_id_of(event: dict[str, Any]) -> str | None:
    """The authorizer's ``userId``; without an authorizer, the ``user_id`` query parameter.

    When an authorizer ran, the client's query string is never trusted for identity.
    """
    authorizer = (event.get("requestContext") or {}).get("authorizer")
    if authorizer:
        user_id = authorizer.get("userId")
    else:
        user_id = (event.get("queryStringParameters") or {}).get("user_id")
    if not user_id:
        return None
    user_id = str(user_id)
    if len(user_id) > MAX_USER_ID_LENGTH:
        raise ValueError(f"user id longer than {MAX_USER_ID_LENGTH} characters")
    return user_id


def claims_of(event: dict[str, Any]) -> str | None:
    """The authorizer's ``claims`` JSON text when it is a non-empty JSON object, else None.

    Claims only ever widen what access rules allow, so a missing or malformed
    value is dropped (fewer rules match), never guessed. Without an authorizer,
    there are none: the query string is not a verified identity.
    """
    raw = ((event.get("requestContext") or {}).get("authorizer") or {}).get("claims")
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = strict_json.loads(raw)
    except strict_json.InvalidJson:
        parsed = None
    if not isinstance(parsed, dict):
        log.warning("authorizer claims are not a JSON object; stored none")
        return None
    if not parsed:
        return None
    # Re-encoded as ASCII JSON: DynamoDB refuses text that is not valid UTF-8.
    return json.dumps(parsed, separators=(",", ":"), sort_keys=True)


def expires_at_of(event: dict[str, Any]) -> int | None:
    """The authorizer's ``expiresAt`` (epoch seconds) as an integer, else None.

    API Gateway may hand context numbers on as strings; both are accepted.
    """
    raw = ((event.get("requestContext") or {}).get("authorizer") or {}).get("expiresAt")
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and _DIGITS.fullmatch(raw.strip()):
        return int(raw.strip())
    return None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request_context = event.get("requestContext") or {}
    connection_id = request_context.get("connectionId")
    if not connection_id:
        log.error("connect event without requestContext.connectionId")
        return {"statusCode": 400, "body": "missing connection id"}
    try:
        user_id = user_id_of(event)
    except ValueError as bad:
        log.warning("connection refused", extra={"reason": str(bad), "connectionId": connection_id})
        return {"statusCode": 400, "body": "bad user id"}
    item = connection_item(
        connection_id,
        user_id=user_id,
        now=time.time(),
        ttl_seconds=CONFIG.ttl_seconds,
        source_ip=(request_context.get("identity") or {}).get("sourceIp"),
        claims=claims_of(event),
        expires_at=expires_at_of(event),
    )
    try:
        put_connection(aws.client("dynamodb"), CONFIG.connections_table, item)
    except Exception:
        log.exception(
            "could not store the connection; refusing it",
            extra={"connectionId": connection_id, "table": CONFIG.connections_table},
        )
        return {"statusCode": 500, "body": "could not register the connection"}
    log.info("connected", extra={"connectionId": connection_id, "userId": user_id})
    return accepted(event)


def accepted(event: dict[str, Any]) -> dict[str, Any]:
    """The 200 answer, naming the subprotocol when the client offered ours (pure)."""
    answer: dict[str, Any] = {"statusCode": 200, "body": "connected"}
    protocol = signin.selected_protocol(event)
    if protocol is not None:
        answer["headers"] = {"Sec-WebSocket-Protocol": protocol}
    return answer
