"""``$disconnect``: delete the connection's record. Idempotent."""

from __future__ import annotations

from typing import Any

from handlers import aws, config, logs
from handlers.connections import delete_connection

CONFIG = config.disconnect_config()
log = logs.logger(__name__)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    connection_id = (event.get("requestContext") or {}).get("connectionId")
    if not connection_id:
        log.error("disconnect event without requestContext.connectionId")
        return {"statusCode": 400, "body": "missing connection id"}
    try:
        delete_connection(aws.client("dynamodb"), CONFIG.connections_table, connection_id)
    except Exception:  # the record's ttl removes it later; the broadcaster's 410 path too
        log.exception("could not delete the connection", extra={"connectionId": connection_id})
        return {"statusCode": 500, "body": "could not remove the connection"}
    log.info("disconnected", extra={"connectionId": connection_id})
    return {"statusCode": 200, "body": "disconnected"}
