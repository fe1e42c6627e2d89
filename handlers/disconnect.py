"""``$disconnect``: delete the connection's record, then every subscription it held. Idempotent.

The record is deleted first (returning its ``subs`` map), so a subscribe that
races with the disconnect finds no record and stores nothing; the
subscriptions the record named are then batch-deleted. A crash between the two
leaves items that the broadcaster removes on their first 410 and that TTL
removes in any case.
"""

from __future__ import annotations

from typing import Any

from handlers import aws, config, logs
from handlers.subscriptions import remove_connection

CONFIG = config.disconnect_config()
log = logs.logger(__name__)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    connection_id = (event.get("requestContext") or {}).get("connectionId")
    if not connection_id:
        log.error("disconnect event without requestContext.connectionId")
        return {"statusCode": 400, "body": "missing connection id"}
    try:
        removed = remove_connection(
            aws.client("dynamodb"),
            connections_table=CONFIG.connections_table,
            subscriptions_table=CONFIG.subscriptions_table,
            connection_id=connection_id,
        )
    except Exception:  # the record's ttl removes it later; the broadcaster's 410 path too
        log.exception("could not delete the connection", extra={"connectionId": connection_id})
        return {"statusCode": 500, "body": "could not remove the connection"}
    log.info("disconnected", extra={"connectionId": connection_id, "subscriptions": removed})
    return {"statusCode": 200, "body": "disconnected"}
