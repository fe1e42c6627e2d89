"""DynamoDB Streams -> WebSocket clients.

For each stream record (INSERT, MODIFY, REMOVE), in stream order: build the
envelope of the message contract (``table`` is the source's label from
``SOURCES``, never the physical table name), find the recipients (every
connection, or only the target user's connections), post it to them
concurrently, and remove connections that answer 410 Gone. With a target
attribute configured, a record whose item names no user reaches no one (fail
closed) and is counted as ``untargeted``. The first record that cannot be
delivered is reported in ``batchItemFailures`` and nothing after it is
attempted, so Lambda retries from that record and stream order is kept.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from handlers import aws, config, logs
from handlers.connections import (
    all_connection_ids,
    delete_stale_connection,
    iso_utc,
    user_connection_ids,
)
from handlers.delivery import Poster, fan_out
from handlers.dynamo_json import MalformedAttribute, image_to_plain, to_plain
from handlers.management import ManagementApi, frozen_credentials

MAX_MESSAGE_BYTES = 128 * 1024  # API Gateway WebSocket message limit
ACTIONS = {"INSERT": "created", "MODIFY": "updated", "REMOVE": "deleted"}
DEADLINE_MARGIN_SECONDS = 2.0
STALE_GRACE_SECONDS = 30.0
"""A 410 for a record younger than this may be a client still in $connect: keep it."""
METRICS_NAMESPACE = "RealtimeChannel"

CONFIG = config.broadcaster_config()
log = logs.logger(__name__)


class MalformedRecord(ValueError):
    """A stream record that cannot become a message; it is reported, never skipped."""


class NoTarget(ValueError):
    """A target attribute is configured but the item names no user: the record goes to no one."""


@dataclass(frozen=True)
class Outgoing:
    sequence: str
    data: bytes
    target: str | None
    """The user whose connections receive it; None: every connection."""
    truncated: bool
    untargeted: str | None = None
    """Why nobody receives it (fail closed: the item names no user); None: it is sent."""


@dataclass
class BatchStats:
    records: int = 0
    delivered: int = 0
    staleRemoved: int = 0
    """Connections that answered 410 and whose record was deleted."""
    staleKept: int = 0
    """Connections that answered 410 and whose record was kept: younger than
    ``STALE_GRACE_SECONDS`` (still in ``$connect``), or the delete failed (logged)."""
    untargeted: int = 0
    """Records sent to no one: the target attribute is missing, empty or not S/N."""
    retried: int = 0
    failed: int = 0
    recordsFailed: int = 0
    malformed: int = 0
    truncated: int = 0
    recipients: int = 0
    fanoutMs: float = 0.0
    failedCodes: dict[str, int] = field(default_factory=dict)


def table_of(event_source_arn: Any) -> str:
    """``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`` -> ``NAME``."""
    if isinstance(event_source_arn, str):
        parts = event_source_arn.split(":", 5)
        if len(parts) == 6 and parts[5].startswith("table/"):
            return parts[5].split("/")[1]
    raise MalformedRecord(f"eventSourceARN is not a DynamoDB stream ARN: {event_source_arn!r:.120}")


def source_label(table_name: str, sources: Mapping[str, config.Source]) -> str:
    """The label (``SOURCES``) of the source whose physical table is ``table_name``."""
    for label, source in sources.items():
        if source.table == table_name:
            return label
    raise MalformedRecord(
        f"record from table {table_name!r:.120}, which is not in SOURCES"
        f" ({', '.join(sorted(s.table for s in sources.values()))[:200]})"
    )


def timestamp_of(approximate_creation: Any, fallback: float) -> str:
    """ISO-8601 UTC of the record's ApproximateCreationDateTime (epoch seconds or datetime)."""
    if isinstance(approximate_creation, datetime):
        moment = approximate_creation
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return iso_utc(moment.timestamp())
    if isinstance(approximate_creation, (int, float)) and not isinstance(
        approximate_creation, bool
    ):
        return iso_utc(float(approximate_creation))
    return iso_utc(fallback)


def envelope(
    record: dict[str, Any], *, include_old: bool, now: float, sources: Mapping[str, config.Source]
) -> dict[str, Any]:
    """The message for one stream record (pure). Raises ``MalformedRecord``.

    ``sources`` maps each source's label to its physical table name; the message
    names the record's source by its label.
    """
    if not isinstance(record, dict):
        raise MalformedRecord("record is not an object")
    action = ACTIONS.get(record.get("eventName"))  # type: ignore[arg-type]
    if action is None:
        raise MalformedRecord(f"unknown eventName {record.get('eventName')!r:.40}")
    stream = record.get("dynamodb")
    if not isinstance(stream, dict) or not isinstance(stream.get("Keys"), dict):
        raise MalformedRecord("record has no dynamodb.Keys")
    sequence = stream.get("SequenceNumber")
    if not isinstance(sequence, str) or not sequence:
        raise MalformedRecord("record has no dynamodb.SequenceNumber")
    try:
        message: dict[str, Any] = {
            "type": "event_update",
            "action": action,
            "table": source_label(table_of(record.get("eventSourceARN")), sources),
            "keys": image_to_plain(stream["Keys"]),
        }
        if action != "deleted":
            if "NewImage" not in stream:
                raise MalformedRecord(
                    "record has no NewImage: set the stream view type to"
                    " NEW_IMAGE or NEW_AND_OLD_IMAGES"
                )
            message["data"] = image_to_plain(stream["NewImage"])
        if include_old and "OldImage" in stream:
            message["old"] = image_to_plain(stream["OldImage"])
    except MalformedAttribute as bad:
        raise MalformedRecord(f"bad attribute value: {bad}") from None
    message["id"] = str(record.get("eventID") or sequence)
    message["sequence"] = sequence
    message["timestamp"] = timestamp_of(stream.get("ApproximateCreationDateTime"), now)
    return message


def encode(message: dict[str, Any], limit: int = MAX_MESSAGE_BYTES) -> tuple[bytes, bool]:
    """UTF-8 JSON of the message; over ``limit`` it drops ``data``/``old``, adds ``truncated``."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(data) <= limit:
        return data, False
    slim = {key: value for key, value in message.items() if key not in ("data", "old")}
    slim["truncated"] = True
    return json.dumps(slim, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), True


def target_of(record: dict[str, Any], attribute: str | None) -> str | None:
    """The user a record is for (pure); None when no ``attribute`` is configured (everyone).

    The user is ``attribute`` in the image the message carries: the new image,
    or for a delete (no new image) the old one. It must be a non-empty S or an
    N; anything else (missing, empty, another type) raises ``NoTarget``: such a
    record goes to no one rather than to everyone (fail closed).
    """
    if not attribute:
        return None
    stream = record.get("dynamodb") or {}
    image_name = "NewImage" if "NewImage" in stream else "OldImage"
    image = stream.get(image_name)
    value = image.get(attribute) if isinstance(image, dict) else None
    if value is None:
        raise NoTarget(f"{image_name} has no {attribute!r}")
    if not isinstance(value, dict) or not ("S" in value or "N" in value):
        kind = next(iter(value), "?") if isinstance(value, dict) else type(value).__name__
        raise NoTarget(f"{image_name}.{attribute} is of type {kind!s:.20}, not S or N")
    plain = to_plain(value)
    if plain == "":
        raise NoTarget(f"{image_name}.{attribute} is empty")
    return str(plain)


def prepare(record: dict[str, Any], settings: config.BroadcasterConfig, now: float) -> Outgoing:
    message = envelope(
        record, include_old=settings.include_old_image, now=now, sources=settings.sources
    )
    try:
        target = target_of(record, settings.target_attribute)
    except MalformedAttribute as bad:
        raise MalformedRecord(f"bad target attribute: {bad}") from None
    except NoTarget as nobody:
        return Outgoing(message["sequence"], b"", None, False, untargeted=str(nobody))
    data, truncated = encode(message)
    return Outgoing(message["sequence"], data, target, truncated)


def _sequence_of(record: Any) -> str:
    if isinstance(record, dict):
        stream = record.get("dynamodb")
        if isinstance(stream, dict) and isinstance(stream.get("SequenceNumber"), str):
            return str(stream["SequenceNumber"])
    # Lambda treats an empty identifier as "the whole batch failed": still nothing lost.
    return ""


class Broadcaster:
    """One batch at a time; dependencies are passed in so tests can use real local ones."""

    def __init__(
        self,
        settings: config.BroadcasterConfig,
        *,
        dynamodb: Any,
        api: Poster,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.dynamodb = dynamodb
        self.api = api
        self.clock = clock
        self.sleep = sleep

    def _remove_stale(self, connection_id: str) -> bool:
        """Delete the record of a connection that answered 410; whether it was deleted."""
        try:
            return delete_stale_connection(
                self.dynamodb,
                self.settings.connections_table,
                connection_id,
                connected_before=iso_utc(time.time() - STALE_GRACE_SECONDS),
            )
        except Exception:  # the record's ttl removes it later
            log.warning(
                "could not remove a stale connection",
                exc_info=True,
                extra={"connectionId": connection_id},
            )
            return False

    def _recipients(self, target: str | None, cache: dict[str | None, list[str]]) -> Iterator[str]:
        """The ids a message goes to, read lazily the first time in a batch, then cached."""
        if target in cache:
            yield from cache[target]
            return
        table = self.settings.connections_table
        if target is None:
            found = all_connection_ids(self.dynamodb, table)
        else:
            found = user_connection_ids(self.dynamodb, table, self.settings.user_index, target)
        seen: list[str] = []
        for connection_id in found:
            seen.append(connection_id)
            yield connection_id
        cache[target] = seen

    def run(self, records: list[Any], deadline: float) -> tuple[list[dict[str, str]], BatchStats]:
        stats = BatchStats(records=len(records))
        cache: dict[str | None, list[str]] = {}
        gone: set[str] = set()
        started = self.clock()
        for record in records:
            sequence = _sequence_of(record)
            if self.clock() >= deadline:
                log.warning(
                    "out of time; the rest of the batch is retried", extra={"sequence": sequence}
                )
                stats.recordsFailed += 1
                return self._finish([sequence], stats, started)
            try:
                outgoing = prepare(record, self.settings, time.time())
            except Exception as bad:  # MalformedRecord, or input shaped beyond what it checks
                stats.malformed += 1
                stats.recordsFailed += 1
                log.error(
                    "malformed stream record; reported as a batch item failure",
                    extra={"reason": str(bad), "sequence": sequence, "record": record},
                )
                return self._finish([sequence], stats, started)
            if outgoing.untargeted is not None:
                stats.untargeted += 1
                log.warning(
                    "record names no recipient; sent to no one",
                    extra={
                        "sequence": sequence,
                        "reason": outgoing.untargeted,
                        "targetAttribute": self.settings.target_attribute,
                    },
                )
                continue
            stats.truncated += outgoing.truncated
            try:
                recipients = (c for c in self._recipients(outgoing.target, cache) if c not in gone)
                report = fan_out(
                    self.api,
                    recipients,
                    outgoing.data,
                    concurrency=self.settings.send_concurrency,
                    max_attempts=self.settings.send_max_attempts,
                    deadline=deadline,
                    on_stale=self._remove_stale,
                    sleep=self.sleep,
                    clock=self.clock,
                )
            except Exception:
                stats.recordsFailed += 1
                log.exception("could not deliver a record", extra={"sequence": sequence})
                return self._finish([sequence], stats, started)
            gone.update(report.stale)
            stats.recipients += report.delivered + len(report.stale) + len(report.failed)
            stats.delivered += report.delivered
            stats.staleRemoved += report.stale_removed
            stats.staleKept += len(report.stale) - report.stale_removed
            stats.retried += report.retried
            stats.failed += len(report.failed)
            for code in report.failed.values():
                stats.failedCodes[code] = stats.failedCodes.get(code, 0) + 1
            if report.failed:
                stats.recordsFailed += 1
                log.warning(
                    "record not delivered to every recipient; it will be retried",
                    extra={"sequence": sequence, "failed": dict(list(report.failed.items())[:10])},
                )
                return self._finish([sequence], stats, started)
        return self._finish([], stats, started)

    def _finish(
        self, failed: list[str], stats: BatchStats, started: float
    ) -> tuple[list[dict[str, str]], BatchStats]:
        stats.fanoutMs = round((self.clock() - started) * 1000, 3)
        return [{"itemIdentifier": sequence} for sequence in failed], stats


def record_batch(stats: BatchStats, function_name: str) -> None:
    """One JSON log line and one EMF line per batch."""
    log.info("batch", extra=asdict(stats))
    logs.emit_metrics(
        logs.emf_line(
            METRICS_NAMESPACE,
            {"FunctionName": function_name},
            {
                "Delivered": stats.delivered,
                "StaleRemoved": stats.staleRemoved,
                "StaleKept": stats.staleKept,
                "Untargeted": stats.untargeted,
                "Retried": stats.retried,
                "Failed": stats.failed,
                "RecordsFailed": stats.recordsFailed,
                "Truncated": stats.truncated,
            },
            milliseconds={"FanoutTime": stats.fanoutMs},
        )
    )


_lock = threading.Lock()
_broadcaster: Broadcaster | None = None


def broadcaster() -> Broadcaster:
    """The container's broadcaster, built on first use."""
    global _broadcaster
    with _lock:
        if _broadcaster is None:
            api = ManagementApi(
                CONFIG.management_endpoint,
                region=aws.region(),
                credentials=frozen_credentials(aws.session()),
            )
            _broadcaster = Broadcaster(CONFIG, dynamodb=aws.client("dynamodb"), api=api)
        return _broadcaster


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    worker = broadcaster()
    remaining_ms = context.get_remaining_time_in_millis() if context is not None else 60_000
    deadline = worker.clock() + max(remaining_ms / 1000 - DEADLINE_MARGIN_SECONDS, 0.5)
    records = event.get("Records") if isinstance(event, dict) else None
    failures, stats = worker.run(list(records or []), deadline)
    record_batch(stats, getattr(context, "function_name", None) or "broadcaster")
    return {"batchItemFailures": failures}
