"""The sweep: close connections whose token has expired and that nothing touches.

The broadcaster closes an expired connection when a change is addressed to it and
``$default`` when it sends a message; one that neither sends nor receives would stay
open until API Gateway's idle or 2-hour limit. An EventBridge schedule (every minute)
runs this function, which

1. reads the connections whose token expired in the last ``SWEEP_LOOKBACK_MINUTES``
   minutes from the sparse GSI ``byExpiry`` (partition ``expiryMinute`` =
   ``expiresAt // 60``, one Query per minute, paginated; never a Scan), keeping those
   whose ``expiresAt`` has passed (an ``auth`` moves a connection to a later minute);
2. closes each (``@connections`` DELETE: API Gateway then runs ``$disconnect``, which
   removes its record and subscriptions), at most ``SWEEP_MAX_CLOSES`` per run;
3. for one API Gateway no longer knows (410), removes the record and its
   subscriptions itself (keeping a record younger than 30 s: a client still in
   ``$connect``).

The index is eventually consistent and the lookback bounded: a connection the sweep
misses is still closed by the broadcaster or ``$default`` on its next change or
message, and by API Gateway at the latest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from handlers import aws, config, logs
from handlers import subscriptions as store
from handlers.connections import EXPIRY_INDEX, expiry_minute, iso_utc
from handlers.management import ManagementApi, frozen_credentials

STALE_GRACE_SECONDS = 30.0
METRICS_NAMESPACE = "RealtimeChannel"

CONFIG = config.sweeper_config()
log = logs.logger(__name__)


@dataclass
class SweepStats:
    found: int = 0
    """Expired connections read from the index."""
    closed: int = 0
    """Closed through @connections DELETE."""
    gone: int = 0
    """Already gone at API Gateway (410): record and subscriptions removed here."""
    failed: int = 0
    """Could not be closed now (logged); the next run tries again."""
    left: int = 0
    """Not attempted: past ``max_closes`` this run."""


def expired_connections(client: Any, table: str, now: float, lookback: int) -> Iterator[str]:
    """The ids of connections whose token expired at or before ``now``, within the last
    ``lookback`` minutes, oldest minute first (the ``byExpiry`` index)."""
    newest = expiry_minute(int(now))
    for minute in range(newest - lookback, newest + 1):
        request: dict[str, Any] = {
            "TableName": table,
            "IndexName": EXPIRY_INDEX,
            "KeyConditionExpression": "expiryMinute = :minute",
            "ExpressionAttributeValues": {":minute": {"N": str(minute)}},
            "ProjectionExpression": "connectionId, expiresAt",
        }
        while True:
            page = client.query(**request)
            for item in page.get("Items", []):
                expires = (item.get("expiresAt") or {}).get("N")
                if expires is not None and int(expires) <= now:
                    yield str(item["connectionId"]["S"])
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            request["ExclusiveStartKey"] = last


def sweep(
    client: Any, api: Any, settings: config.SweeperConfig, now: float | None = None
) -> SweepStats:
    """One run of the sweep (see the module docstring)."""
    now = time.time() if now is None else now
    stats = SweepStats()
    for connection_id in expired_connections(
        client, settings.connections_table, now, settings.lookback_minutes
    ):
        stats.found += 1
        if stats.closed + stats.gone + stats.failed >= settings.max_closes:
            stats.left += 1
            continue
        try:
            response = api.delete_connection(connection_id)
        except Exception:
            response = None
        if response is not None and response.ok:
            stats.closed += 1
        elif response is not None and response.gone:
            store.remove_stale_connection(
                client,
                connections_table=settings.connections_table,
                subscriptions_table=settings.subscriptions_table,
                connection_id=connection_id,
                connected_before=iso_utc(now - STALE_GRACE_SECONDS),
            )
            stats.gone += 1
        else:
            stats.failed += 1
            log.warning(
                "could not close an expired connection; the next sweep tries again",
                extra={"connectionId": connection_id, "status": getattr(response, "status", 0)},
            )
    return stats


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    api = ManagementApi(
        CONFIG.management_endpoint,
        region=aws.region(),
        credentials=frozen_credentials(aws.session()),
    )
    stats = sweep(aws.client("dynamodb"), api, CONFIG)
    log.info("sweep", extra=asdict(stats))
    logs.emit_metrics(
        logs.emf_line(
            METRICS_NAMESPACE,
            {"FunctionName": getattr(context, "function_name", None) or "sweeper"},
            {"ExpiredClosed": stats.closed + stats.gone, "SweepFailed": stats.failed},
        )
    )
    return asdict(stats)
