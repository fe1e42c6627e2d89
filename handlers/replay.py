"""The replay store: every change, once per topic it touches, kept for the retention.

The broadcaster records each change here, at its own clock, before any delivery
attempt; ``subscribe`` with ``after`` reads back what a subscription's topic
received after the cursor's position (``handlers.cursors``) in one strongly
consistent Query.

Replay table (PAY_PER_REQUEST, TTL on ``ttl``, encrypted like the source table):

* partition key ``topic`` (S, ``handlers.topics``), sort key ``change`` (S, the
  stream ``eventID``). A retried batch records the same change under the same
  key, so it rewrites the same item: recording is idempotent, however often
  Lambda retries, even though the retry happens at a later clock (the ``at`` it
  writes is the later one, which only moves the change later: a resume never
  misses it, and de-duplication by ``id`` hides a second delivery).
* ``at`` (S) = ``f"{recorded_at_ms:013d}#{change id}"``: the position as text,
  whose string order is position order. The local secondary index ``byTime``
  (``topic``, ``at``, projection ALL) answers "after position P on topic T"
  with one Query; LSIs (unlike GSIs) support ``ConsistentRead``, so a change
  recorded before a ``subscribe`` reads the store is always seen.
* ``ttl`` (N): ceil(recorded_at_ms / 1000) + retention seconds. DynamoDB deletes
  expired items lazily (typically within two days), so what decides whether a
  resume is gap-free is ``covers`` (the cursor against the clock), never what
  the Query happens to return.
* ``record`` (S): the compact JSON of what the broadcaster needs to rebuild the
  message (``record_text``: event name, typed keys, typed images, envelope).
  When the item would pass ``MAX_ITEM_BYTES`` (DynamoDB refuses items over
  400 KB; the index copy adds overhead), the images are dropped and
  ``truncated`` (BOOL true) is set: the record keeps the event name, keys and
  envelope only.

Cost: each recorded item is one write to the table plus one to ``byTime``
(``ceil(size / 1 KB)`` write units each), and is stored twice (table and
index, ALL projection) until its TTL; TTL deletes are free. A change touches
its item topic (tables with a sort key), its partition topic and the table-wide
topic: record it once on the table-wide topic (one bucket, e.g.
``table_topic(label, 0)``, not once per bucket), so 2 or 3 items per change.
An LSI limits one topic's items (its item collection, table and index
together) to 10 GB: at 1 KB per change (2 KB stored) and 1 hour of retention,
a table-wide topic reaches that at about 1,400 changes per second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from handlers.cursors import Position
from handlers.recipients import Change

INDEX = "byTime"
BATCH_SIZE = 25
BATCH_ATTEMPTS = 6
BACKOFF_SECONDS = 0.05
MAX_ITEM_BYTES = 400_000
"""Truncate above this estimate: under DynamoDB's 409,600 bytes with room for the index entry."""
IMAGE_FIELDS = ("new", "old")
DEFAULT_RETENTION_SECONDS = 3600


class ReplayWriteFailed(RuntimeError):
    """Some items stayed unprocessed after every attempt: the batch must be retried."""

    def __init__(self, unprocessed: int) -> None:
        super().__init__(f"{unprocessed} replay items unprocessed")
        self.unprocessed = unprocessed


@dataclass(frozen=True)
class StoredChange:
    """One change as read back from the store."""

    topic: str
    position: Position
    record_json: str
    """``record_text``; without images when ``truncated``."""
    truncated: bool
    expires_at: int
    """The item's ``ttl`` (epoch seconds)."""

    @property
    def change_id(self) -> str:
        return self.position.change_id

    def record(self) -> dict[str, Any]:
        value = json.loads(self.record_json)
        if not isinstance(value, dict):
            raise ValueError("stored record is not an object")
        return value


def record_text(
    event_name: str,
    keys: Mapping[str, Any],
    new: Mapping[str, Any] | None,
    old: Mapping[str, Any] | None,
    envelope: Mapping[str, Any],
    *,
    old_visible: bool = True,
    new_visible: bool = True,
) -> str:
    """The stored record: a change's event name, typed keys and images, and envelope, as
    compact JSON (images under ``new`` and ``old``, absent when the record has none; an
    image the source's own filters leave out is listed in ``hidden``)."""
    record: dict[str, Any] = {"event": event_name, "keys": keys, "envelope": envelope}
    if new is not None:
        record["new"] = new
    if old is not None:
        record["old"] = old
    hidden = [name for name, shown in (("old", old_visible), ("new", new_visible)) if not shown]
    if hidden:
        record["hidden"] = hidden
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Replayed:
    """A stored change, ready for ``recipients.plan``."""

    change: Change
    old_visible: bool
    new_visible: bool
    truncated: bool
    position: Position


def replayed(stored: StoredChange) -> Replayed:
    """A stored change as the broadcaster read it (its envelope carries no cursor)."""
    record = stored.record()
    envelope = record.get("envelope")
    keys = record.get("keys")
    event_name = record.get("event")
    if not isinstance(envelope, dict) or not isinstance(keys, dict):
        raise ValueError("stored record has no envelope or keys")
    if event_name not in ("INSERT", "MODIFY", "REMOVE"):
        raise ValueError("stored record has no event name")
    hidden = record.get("hidden") or []
    return Replayed(
        change=Change(
            event_name=event_name,
            keys=keys,
            old=record.get("old"),
            new=record.get("new"),
            envelope=envelope,
        ),
        old_visible="old" not in hidden,
        new_visible="new" not in hidden,
        truncated=stored.truncated,
        position=stored.position,
    )


def item_size(item: Mapping[str, Mapping[str, Any]]) -> int:
    """An upper bound of DynamoDB's size of an item of S, N and BOOL attributes (bytes)."""
    total = 0
    for name, value in item.items():
        total += len(name.encode("utf-8"))
        if "S" in value:
            total += len(str(value["S"]).encode("utf-8"))
        elif "N" in value:
            total += len(str(value["N"])) + 1
        elif "BOOL" in value:
            total += 1
        else:
            raise ValueError(f"unexpected attribute type for {name!r}")
    return total


def expiry(recorded_at_ms: int, retention_seconds: int) -> int:
    """The ``ttl`` of a change recorded at ``recorded_at_ms``: kept at least the retention."""
    return -(-recorded_at_ms // 1000) + retention_seconds


def replay_item(
    topic: str,
    change_id: str,
    recorded_at_ms: int,
    record_json: str,
    retention_seconds: int,
) -> dict[str, Any]:
    """The stored item, as DynamoDB attribute values (pure); truncated when too large."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty string")
    if not change_id:
        raise ValueError("a recorded change needs its change id")
    position = Position(recorded_at_ms, change_id)
    if isinstance(retention_seconds, bool) or not isinstance(retention_seconds, int):
        raise ValueError("retention_seconds must be an integer")
    if retention_seconds <= 0:
        raise ValueError("retention 0 turns resume off: record nothing")
    item: dict[str, Any] = {
        "topic": {"S": topic},
        "change": {"S": change_id},
        "at": {"S": position.sort_text},
        "ttl": {"N": str(expiry(recorded_at_ms, retention_seconds))},
        "record": {"S": record_json},
    }
    if item_size(item) <= MAX_ITEM_BYTES:
        return item
    record = json.loads(record_json)
    if not isinstance(record, dict):
        raise ValueError("record_json must be a JSON object")
    for name in IMAGE_FIELDS:
        record.pop(name, None)
    item["record"] = {"S": json.dumps(record, separators=(",", ":"), ensure_ascii=False)}
    item["truncated"] = {"BOOL": True}
    if item_size(item) > MAX_ITEM_BYTES:
        raise ValueError("record too large even without its images")
    return item


def record_change(
    client: Any,
    table: str,
    items: Sequence[Mapping[str, Any]],
    *,
    attempts: int = BATCH_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Write ``items`` (from ``replay_item``) with BatchWriteItem, 25 at a time, retrying
    unprocessed items with a short exponential backoff. Returns how many were written.

    Items with the same key are written once (the last one): one BatchWriteItem
    may not name a key twice. Raises ``ReplayWriteFailed`` when some stay
    unprocessed after ``attempts``: the caller must not deliver the changes, and
    the stream batch is retried (which rewrites the same items).
    """
    unique: dict[tuple[str, str], Mapping[str, Any]] = {}
    for item in items:
        unique[(item["topic"]["S"], item["change"]["S"])] = item
    pending = [{"PutRequest": {"Item": dict(item)}} for item in unique.values()]
    left = 0
    for start in range(0, len(pending), BATCH_SIZE):
        requests = pending[start : start + BATCH_SIZE]
        for attempt in range(attempts):
            if attempt:
                sleep(min(BACKOFF_SECONDS * 2 ** (attempt - 1), 1.0))
            answer = client.batch_write_item(RequestItems={table: requests})
            requests = (answer.get("UnprocessedItems") or {}).get(table) or []
            if not requests:
                break
        left += len(requests)
    if left:
        raise ReplayWriteFailed(left)
    return len(pending)


def stored_change(item: Mapping[str, Any]) -> StoredChange:
    """A stored item (DynamoDB attribute values) as a ``StoredChange``."""
    position = Position.from_sort_text(item["at"]["S"])
    if position.change_id != item["change"]["S"]:
        raise ValueError("stored item's at does not name its change")
    return StoredChange(
        topic=item["topic"]["S"],
        position=position,
        record_json=item["record"]["S"],
        truncated=bool(item.get("truncated", {}).get("BOOL", False)),
        expires_at=int(item["ttl"]["N"]),
    )


def replay_start(position: Position, overlap_ms: int) -> Position:
    """Where a replay after ``position`` starts: the position moved back by ``overlap_ms``
    (a delivery attempt's length), so a change recorded before the cursor's but delivered
    after it is replayed; never before the epoch."""
    if isinstance(overlap_ms, bool) or not isinstance(overlap_ms, int) or overlap_ms < 0:
        raise ValueError("overlap_ms must be a non-negative integer")
    if overlap_ms == 0:
        return position
    if position.recorded_at_ms < overlap_ms:
        return Position(0, "")
    return Position(position.recorded_at_ms - overlap_ms, position.change_id)


def covers(position: Position, overlap_ms: int, now_ms: int, retention_seconds: int) -> bool:
    """Whether the store still holds every change a replay after ``position`` must return:
    every change recorded after the replay's start is kept until its TTL, at least
    ``retention_seconds`` after it was recorded. False: answer ``reset``."""
    if retention_seconds <= 0:
        return False
    start = replay_start(position, overlap_ms)
    return start.recorded_at_ms > now_ms - retention_seconds * 1000


def changes_after(
    client: Any,
    table: str,
    topic: str,
    position: Position,
    overlap_ms: int,
    limit: int,
    *,
    page_size: int | None = None,
) -> tuple[list[StoredChange], bool]:
    """The changes recorded on ``topic`` after ``position`` moved back by ``overlap_ms``, in
    position order, at most ``limit`` of them; ``more`` is True when there are others.

    One Query on ``byTime`` (``at > :from``, ``ConsistentRead``), followed across pages
    (``page_size`` caps each page, for tests) until ``limit`` + 1 items are seen.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("limit must be a non-negative integer")
    start = replay_start(position, overlap_ms)
    found: list[StoredChange] = []
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": INDEX,
        "KeyConditionExpression": "topic = :topic AND #at > :from",
        "ExpressionAttributeNames": {"#at": "at"},
        "ExpressionAttributeValues": {
            ":topic": {"S": topic},
            ":from": {"S": start.sort_text},
        },
        "ConsistentRead": True,
    }
    while len(found) <= limit:
        wanted = limit + 1 - len(found)
        request["Limit"] = wanted if page_size is None else min(wanted, page_size)
        answer = client.query(**request)
        found.extend(stored_change(item) for item in answer.get("Items", []))
        last = answer.get("LastEvaluatedKey")
        if not last:
            break
        request["ExclusiveStartKey"] = last
    return found[:limit], len(found) > limit
