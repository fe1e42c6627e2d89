"""The connections table: what a record holds (pure) and the calls that read and write it.

Contract: partition key ``connectionId`` (S); ``userId`` (S, GSI ``byUser``;
absent for anonymous connections), ``connectedAt`` (ISO-8601 UTC), ``ttl``
(N, epoch seconds), optional ``sourceIp``, optional ``claims`` (S: the
authorizer's allow-listed token claims as JSON text), optional ``expiresAt``
(N: the token's expiry, epoch seconds) with ``expiryMinute`` (N: ``expiresAt //
60``, the partition key of the sparse GSI ``byExpiry`` the sweep reads,
``handlers.sweeper``) and ``subs`` (M: subscription id -> topic, always present,
see ``handlers.subscriptions``). No secret is ever stored here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

EXPIRY_INDEX = "byExpiry"


def expiry_minute(expires_at: int) -> int:
    """The ``byExpiry`` partition a token expiry falls in (minutes since the epoch)."""
    return expires_at // 60


def iso_utc(epoch_seconds: float) -> str:
    """``2026-11-26T12:00:00.123Z``."""
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connection_item(
    connection_id: str,
    *,
    user_id: str | None,
    now: float,
    ttl_seconds: int,
    source_ip: str | None,
    claims: str | None = None,
    expires_at: int | None = None,
) -> dict[str, Any]:
    """The record stored for a new connection, as DynamoDB attribute values.

    ``subs`` starts as an empty map so that the subscribe transaction's
    ``size(subs)`` condition holds from the first subscription on.
    """
    item: dict[str, Any] = {
        "connectionId": {"S": connection_id},
        "connectedAt": {"S": iso_utc(now)},
        "ttl": {"N": str(int(now) + ttl_seconds)},
        "subs": {"M": {}},
    }
    if user_id:
        item["userId"] = {"S": user_id}
    if source_ip:
        item["sourceIp"] = {"S": source_ip}
    if claims:
        item["claims"] = {"S": claims}
    if expires_at is not None:
        item["expiresAt"] = {"N": str(expires_at)}
        item["expiryMinute"] = {"N": str(expiry_minute(expires_at))}
    return item


def connection_expiry(client: Any, table: str, connection_id: str) -> tuple[bool, int | None]:
    """(whether the record exists, its ``expiresAt`` or None); strongly consistent."""
    item = client.get_item(
        TableName=table,
        Key={"connectionId": {"S": connection_id}},
        ConsistentRead=True,
        ProjectionExpression="connectionId, expiresAt",
    ).get("Item")
    if not item:
        return False, None
    raw = (item.get("expiresAt") or {}).get("N")
    try:
        return True, int(raw) if raw is not None else None
    except ValueError:
        return True, None


def put_connection(client: Any, table: str, item: dict[str, Any]) -> None:
    client.put_item(TableName=table, Item=item)


def delete_connection(client: Any, table: str, connection_id: str) -> None:
    """Delete a record; deleting one that is already gone succeeds (idempotent)."""
    client.delete_item(TableName=table, Key={"connectionId": {"S": connection_id}})
