"""The replay store: idempotent recording, ordered strongly consistent reads, TTL, truncation."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from handlers import replay
from handlers.cursors import Position
from handlers.replay import (
    ReplayWriteFailed,
    changes_after,
    covers,
    record_change,
    record_text,
    replay_item,
    replay_start,
)
from tests.helpers import create_replay_table

TABLE = "replay-test"
TOPIC = "P|6:orders|S12:RESTAURANT#1"
OTHER_TOPIC = "P|6:orders|S12:RESTAURANT#2"
RETENTION = 3600


def event_id(n: int) -> str:
    return f"{n:08x}{'0' * 24}"


def record(n: int, *, new: dict[str, Any] | None = None) -> str:
    keys = {"PK": {"S": "RESTAURANT#1"}, "SK": {"S": f"ORDER#{n}"}}
    image = new if new is not None else {**keys, "n": {"N": str(n)}}
    envelope = {"type": "event_update", "action": "created", "id": event_id(n)}
    return record_text("INSERT", keys, image, None, envelope)


def item(n: int, at_ms: int, topic: str = TOPIC) -> dict[str, Any]:
    return replay_item(topic, event_id(n), at_ms, record(n), RETENTION)


@pytest.fixture
def table(dynamodb: Any) -> str:
    create_replay_table(dynamodb, TABLE)
    return TABLE


def all_items(client: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return items


class Spy:
    """A client that passes calls through, keeps the requests, and can drop writes."""

    def __init__(self, client: Any, unprocessed: int = 0, forever: bool = False) -> None:
        self.client = client
        self.exceptions = client.exceptions
        self.unprocessed = unprocessed
        self.forever = forever
        self.writes: list[int] = []
        self.queries: list[dict[str, Any]] = []

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((name, requests),) = RequestItems.items()
        self.writes.append(len(requests))
        dropped = requests[: self.unprocessed] if self.unprocessed else []
        if dropped and not self.forever:
            self.unprocessed = 0
        written = requests[len(dropped) :]
        if written:
            self.client.batch_write_item(RequestItems={name: written})
        return {"UnprocessedItems": {name: dropped} if dropped else {}}

    def query(self, **request: Any) -> Any:
        self.queries.append(request)
        return self.client.query(**request)


# --- the item (pure) --------------------------------------------------------------------


def test_replay_item_fields() -> None:
    stored = replay_item(TOPIC, "e1", 1_722_000_000_001, '{"event":"INSERT"}', 3600)
    assert stored == {
        "topic": {"S": TOPIC},
        "change": {"S": "e1"},
        "at": {"S": "1722000000001#e1"},
        "ttl": {"N": str(1_722_000_001 + 3600)},  # rounded up: kept at least the retention
        "record": {"S": '{"event":"INSERT"}'},
    }
    assert replay_item(TOPIC, "e1", 5_000, "{}", 60)["ttl"] == {"N": "65"}


@pytest.mark.parametrize(
    "args",
    [
        (TOPIC, "e1", 1, "{}", 0),
        (TOPIC, "e1", 1, "{}", -5),
        (TOPIC, "", 1, "{}", 60),
        ("", "e1", 1, "{}", 60),
        (TOPIC, "e 1", 1, "{}", 60),
        (TOPIC, "e1", -1, "{}", 60),
        (TOPIC, "e1", 10**13, "{}", 60),
    ],
)
def test_replay_item_refuses(args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError):
        replay_item(*args)


def test_record_text_is_compact_and_keeps_typed_images() -> None:
    text = record_text(
        "MODIFY",
        {"PK": {"S": "a"}},
        {"PK": {"S": "a"}, "n": {"N": "1.50"}},
        {"PK": {"S": "a"}, "n": {"N": "1"}},
        {"id": "e1", "table": "orders"},
    )
    assert " " not in text
    assert json.loads(text) == {
        "event": "MODIFY",
        "keys": {"PK": {"S": "a"}},
        "new": {"PK": {"S": "a"}, "n": {"N": "1.50"}},
        "old": {"PK": {"S": "a"}, "n": {"N": "1"}},
        "envelope": {"id": "e1", "table": "orders"},
    }
    assert "new" not in json.loads(record_text("REMOVE", {"PK": {"S": "a"}}, None, None, {}))


def test_a_record_that_would_pass_the_item_limit_keeps_its_keys_only() -> None:
    big = {"PK": {"S": "RESTAURANT#1"}, "blob": {"S": "x" * 410_000}}
    stored = replay_item(TOPIC, "e1", 1_000, record(1, new=big), RETENTION)
    assert stored["truncated"] == {"BOOL": True}
    kept = json.loads(stored["record"]["S"])
    assert set(kept) == {"event", "keys", "envelope"}
    assert kept["keys"] == {"PK": {"S": "RESTAURANT#1"}, "SK": {"S": "ORDER#1"}}
    assert replay.item_size(stored) < 1_000


def test_truncation_is_decided_by_size_in_utf8_bytes() -> None:
    def sized(blob: str) -> dict[str, Any]:
        return replay_item(TOPIC, "e1", 1_000, record(1, new={"b": {"S": blob}}), RETENTION)

    overhead = replay.item_size(sized(""))
    fits = sized("x" * (replay.MAX_ITEM_BYTES - overhead))
    assert "truncated" not in fits
    assert replay.item_size(fits) == replay.MAX_ITEM_BYTES
    assert sized("x" * (replay.MAX_ITEM_BYTES - overhead + 1))["truncated"] == {"BOOL": True}
    # 2 bytes per character in UTF-8: half as many characters pass the limit
    assert sized("é" * ((replay.MAX_ITEM_BYTES - overhead) // 2 + 1))["truncated"] == {"BOOL": True}


# --- recording (moto) -------------------------------------------------------------------


def test_a_retried_batch_writes_the_same_items(dynamodb: Any, table: str) -> None:
    first = [item(n, 1_000 + n, topic) for n in range(30) for topic in (TOPIC, OTHER_TOPIC)]
    assert record_change(dynamodb, table, first) == 60
    assert len(all_items(dynamodb)) == 60
    # Lambda retries the batch: the broadcaster records it again at a later clock
    retried = [item(n, 9_000 + n, topic) for n in range(30) for topic in (TOPIC, OTHER_TOPIC)]
    assert record_change(dynamodb, table, retried) == 60
    stored = all_items(dynamodb)
    assert len(stored) == 60
    assert {(i["topic"]["S"], i["change"]["S"]) for i in stored} == {
        (t, event_id(n)) for n in range(30) for t in (TOPIC, OTHER_TOPIC)
    }
    assert all(i["at"]["S"].startswith("00000000090") for i in stored)
    # and the retried changes are still found, once each, after a cursor before the retry
    found, more = changes_after(dynamodb, table, TOPIC, Position(1_000, ""), 0, 100)
    assert [change.change_id for change in found] == [event_id(n) for n in range(30)]
    assert not more


def test_batches_of_25_and_duplicate_keys_written_once(dynamodb: Any, table: str) -> None:
    spy = Spy(dynamodb)
    items = [item(n, 1_000 + n) for n in range(60)] + [item(3, 5_000)]
    assert record_change(spy, table, items) == 60
    assert spy.writes == [25, 25, 10]
    assert len(all_items(dynamodb)) == 60
    three = [i for i in all_items(dynamodb) if i["change"]["S"] == event_id(3)]
    assert three[0]["at"]["S"] == f"{5_000:013d}#{event_id(3)}"  # the last one wins


def test_unprocessed_items_are_retried(dynamodb: Any, table: str) -> None:
    spy = Spy(dynamodb, unprocessed=7)
    naps: list[float] = []
    assert (
        record_change(spy, table, [item(n, 1_000 + n) for n in range(20)], sleep=naps.append) == 20
    )
    assert spy.writes == [20, 7]
    assert naps == [replay.BACKOFF_SECONDS]
    assert len(all_items(dynamodb)) == 20


def test_retries_are_bounded_and_failure_is_raised(dynamodb: Any, table: str) -> None:
    spy = Spy(dynamodb, unprocessed=3, forever=True)
    naps: list[float] = []
    with pytest.raises(ReplayWriteFailed) as failed:
        record_change(
            spy, table, [item(n, 1_000 + n) for n in range(10)], attempts=4, sleep=naps.append
        )
    assert failed.value.unprocessed == 3
    assert spy.writes == [10, 3, 3, 3]
    assert naps == [0.05, 0.1, 0.2]


def test_ttl_attribute_is_set_and_enabled(dynamodb: Any, table: str) -> None:
    record_change(dynamodb, table, [item(1, 1_722_000_000_500)])
    (stored,) = all_items(dynamodb)
    assert stored["ttl"] == {"N": str(1_722_000_001 + RETENTION)}
    described = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": "ttl"}
    (change,), _ = changes_after(dynamodb, table, TOPIC, Position(0, ""), 0, 10)
    assert change.expires_at == 1_722_000_001 + RETENTION


def test_truncated_record_is_stored_and_read_back(dynamodb: Any, table: str) -> None:
    """moto refuses items over 400 KB as DynamoDB does: the truncated item is accepted."""
    big = {"PK": {"S": "RESTAURANT#1"}, "blob": {"S": "x" * 420_000}}
    with pytest.raises(dynamodb.exceptions.ClientError):
        dynamodb.put_item(
            TableName=table,
            Item={"topic": {"S": TOPIC}, "change": {"S": "raw"}, "at": {"S": "0"}, **big},
        )
    near = {"PK": {"S": "RESTAURANT#1"}, "blob": {"S": "y" * 390_000}}
    items = [
        replay_item(TOPIC, event_id(1), 1_000, record(1, new=big), RETENTION),
        replay_item(TOPIC, event_id(2), 1_001, record(2, new=near), RETENTION),
    ]
    record_change(dynamodb, table, items)
    (first, second), more = changes_after(dynamodb, table, TOPIC, Position(0, ""), 0, 10)
    assert not more
    assert first.truncated and "new" not in first.record()
    assert first.record()["keys"] == {"PK": {"S": "RESTAURANT#1"}, "SK": {"S": "ORDER#1"}}
    assert first.record()["envelope"]["id"] == event_id(1)
    assert not second.truncated and second.record()["new"] == near


# --- reading (moto) ---------------------------------------------------------------------


def shuffled_changes(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` changes, several in the same millisecond, written in a random order (as
    concurrent broadcasters over several shards would), with ids not in time order."""
    rng = random.Random(seed)
    items = [
        replay_item(TOPIC, f"{rng.getrandbits(64):016x}", 1_000 + n // 3, record(n), RETENTION)
        for n in range(count)
    ]
    rng.shuffle(items)
    return items


def test_order_across_pages(dynamodb: Any, table: str) -> None:
    items = shuffled_changes(40, seed=5)
    record_change(dynamodb, table, items)
    expected = sorted(Position.from_sort_text(i["at"]["S"]) for i in items)
    spy = Spy(dynamodb)
    found, more = changes_after(spy, table, TOPIC, Position(0, ""), 0, 100, page_size=3)
    assert [change.position for change in found] == expected
    assert not more
    assert len(spy.queries) == 14  # 40 items in pages of 3: every page was followed
    assert all(query["ConsistentRead"] is True for query in spy.queries)
    assert all(query["IndexName"] == "byTime" for query in spy.queries)


def test_after_a_position_is_strictly_after_it(dynamodb: Any, table: str) -> None:
    items = shuffled_changes(30, seed=6)
    record_change(dynamodb, table, items)
    ordered = sorted(Position.from_sort_text(i["at"]["S"]) for i in items)
    for index in (0, 1, 2, 3, 14, 28, 29):
        found, more = changes_after(dynamodb, table, TOPIC, ordered[index], 0, 100, page_size=4)
        assert [change.position for change in found] == ordered[index + 1 :]
        assert not more


def test_now_position_includes_its_own_millisecond(dynamodb: Any, table: str) -> None:
    record_change(dynamodb, table, [item(1, 999), item(2, 1_000), item(3, 1_001)])
    found, _ = changes_after(dynamodb, table, TOPIC, Position(1_000, ""), 0, 10)
    assert [change.change_id for change in found] == [event_id(2), event_id(3)]


def test_overlap_returns_the_changes_recorded_within_it_before_the_cursor(
    dynamodb: Any, table: str
) -> None:
    times = [1_000, 1_400, 1_450, 1_480, 1_500, 1_510, 1_600]
    record_change(dynamodb, table, [item(n, at) for n, at in enumerate(times)])
    cursor = Position(1_500, event_id(4))
    no_overlap, _ = changes_after(dynamodb, table, TOPIC, cursor, 0, 10)
    assert [c.position.recorded_at_ms for c in no_overlap] == [1_510, 1_600]
    overlapped, _ = changes_after(dynamodb, table, TOPIC, cursor, 60, 10)
    assert [c.position.recorded_at_ms for c in overlapped] == [1_450, 1_480, 1_500, 1_510, 1_600]
    everything, _ = changes_after(dynamodb, table, TOPIC, cursor, 5_000, 10)
    assert len(everything) == len(times)


def test_limit_and_more(dynamodb: Any, table: str) -> None:
    record_change(dynamodb, table, [item(n, 1_000 + n) for n in range(10)])
    start = Position(0, "")
    for limit, page_size in [(3, None), (3, 2), (9, 4), (9, 1), (10, 3), (10, None), (20, 7)]:
        found, more = changes_after(dynamodb, table, TOPIC, start, 0, limit, page_size=page_size)
        assert [c.change_id for c in found] == [event_id(n) for n in range(min(limit, 10))]
        assert more is (limit < 10), (limit, page_size)
    found, more = changes_after(dynamodb, table, TOPIC, start, 0, 0)
    assert found == [] and more is True
    found, more = changes_after(dynamodb, table, TOPIC, Position(1_009, event_id(9)), 0, 0)
    assert found == [] and more is False


def test_reads_stop_once_past_the_limit(dynamodb: Any, table: str) -> None:
    record_change(dynamodb, table, [item(n, 1_000 + n) for n in range(50)])
    spy = Spy(dynamodb)
    found, more = changes_after(spy, table, TOPIC, Position(0, ""), 0, 5, page_size=2)
    assert len(found) == 5 and more
    assert [query["Limit"] for query in spy.queries] == [2, 2, 2]


def test_topics_are_read_separately(dynamodb: Any, table: str) -> None:
    record_change(dynamodb, table, [item(1, 1_000), item(2, 1_001, OTHER_TOPIC), item(3, 1_002)])
    found, _ = changes_after(dynamodb, table, TOPIC, Position(0, ""), 0, 10)
    assert [c.change_id for c in found] == [event_id(1), event_id(3)]
    assert {c.topic for c in found} == {TOPIC}


def test_a_change_recorded_is_read_at_once(dynamodb: Any, table: str) -> None:
    """ConsistentRead on the local index: moto accepts it (it refuses it on a GSI)."""
    for n in range(5):
        record_change(dynamodb, table, [item(n, 1_000 + n)])
        found, _ = changes_after(dynamodb, table, TOPIC, Position(1_000 + n - 1, "~"), 0, 10)
        assert [c.change_id for c in found] == [event_id(n)]


# --- where a replay starts, and whether the store still covers it (pure) ----------------


def test_replay_start() -> None:
    position = Position(10_000, "e5")
    assert replay_start(position, 0) == position
    assert replay_start(position, 250) == Position(9_750, "e5")
    assert replay_start(position, 10_000) == Position(0, "e5")
    assert replay_start(position, 10_001) == Position(0, "")
    with pytest.raises(ValueError):
        replay_start(position, -1)


def test_covers_compares_the_replay_start_with_the_retention() -> None:
    now = 10_000_000
    assert covers(Position(now - 1_000, "e"), 500, now, 60)
    assert covers(Position(now - 59_000, "e"), 500, now, 60)
    assert not covers(Position(now - 59_500, "e"), 500, now, 60)
    assert not covers(Position(now - 60_000, "e"), 0, now, 60)
    assert not covers(Position(now - 1_000, "e"), 0, now, 0)  # retention 0: resume is off
