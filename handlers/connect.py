"""``$connect``: store the connection's record. 200 accepts the connection; 500 refuses it."""

from __future__ import annotations

import time
from typing import Any

from handlers import aws, config, logs
from handlers.connections import connection_item, put_connection

CONFIG = config.connect_config()
log = logs.logger(__name__)

MAX_USER_ID_LENGTH = 256


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
    return {"statusCode": 200, "body": "connected"}
