"""Snapshots: strongly consistent reads of a key, what the subscriber may see, pages, bounds."""

from __future__ import annotations

import base64
import json
import random
from decimal import Decimal
from typing import Any

import pytest

from handlers.access import Rule
from handlers.config import Source
from handlers.filters import Filter, parse_filter
from handlers.snapshot import (
    MAX_MESSAGE_BYTES,
    SnapshotLimits,
    SnapshotPage,
    SnapshotTooLarge,
    encoded_size,
    page_messages,
    paginate,
    snapshot_pages,
    typed_key,
)
from handlers.topics import InvalidKey, subscription_key
from tests.helpers import create_source_table

TABLE = "orders-snapshot-test"
HASH_TABLE = "profiles-snapshot-test"
KEYS = (("PK", "S"), ("SK", "S"))
SOURCE = Source("orders", TABLE, KEYS, True, (Rule(table=True),))
HASH_SOURCE = Source("profiles", HASH_TABLE, (("PK", "S"),), True, (Rule(table=True),))
PARTITION = {"PK": {"S": "R#1"}}
FAR = 1e12


class Spy:
    """Passes reads through and keeps each request."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def query(self, **request: Any) -> Any:
        self.calls.append(("query", request))
        return self.client.query(**request)

    def get_item(self, **request: Any) -> Any:
        self.calls.append(("get_item", request))
        return self.client.get_item(**request)


@pytest.fixture
def table(dynamodb: Any) -> str:
    create_source_table(dynamodb, TABLE, list(KEYS))
    return TABLE


@pytest.fixture
def hash_table(dynamodb: Any) -> str:
    create_source_table(dynamodb, HASH_TABLE, [("PK", "S")])
    return HASH_TABLE


def put(client: Any, sk: str, pk: str = "R#1", table: str = TABLE, **attributes: Any) -> None:
    item: dict[str, Any] = {"PK": {"S": pk}, "SK": {"S": sk}}
    for name, value in attributes.items():
        if isinstance(value, dict):
            item[name] = value
        elif isinstance(value, bool):
            item[name] = {"BOOL": value}
        elif isinstance(value, (int, float, Decimal)):
            item[name] = {"N": str(value)}
        else:
            item[name] = {"S": value}
    client.put_item(TableName=table, Item=item)


def take(
    client: Any,
    key: dict[str, Any] = PARTITION,
    *,
    source: Source = SOURCE,
    filter: Filter = (),
    fields: frozenset[str] | None = None,
    target_attribute: str | None = None,
    user_id: str | None = None,
    limits: SnapshotLimits | None = None,
    deadline: float = FAR,
    clock: Any = None,
) -> list[SnapshotPage]:
    extra = {} if clock is None else {"clock": clock}
    return snapshot_pages(
        client,
        source=source,
        key=key,
        filter=filter,
        fields=fields,
        target_attribute=target_attribute,
        user_id=user_id,
        limits=limits or SnapshotLimits(),
        deadline=deadline,
        **extra,
    )


def items_of(pages: list[SnapshotPage]) -> list[dict[str, Any]]:
    return [item for page in pages for item in page.items]


def sks(pages: list[SnapshotPage]) -> list[str]:
    return [item["SK"] for item in items_of(pages)]


# --- reading ----------------------------------------------------------------------------


def test_partition_is_queried_across_pages_in_sort_key_order(dynamodb: Any, table: str) -> None:
    numbers = list(range(25))
    random.Random(3).shuffle(numbers)
    for n in numbers:
        put(dynamodb, f"O#{n:03d}", n=n)
    put(dynamodb, "O#000", pk="R#2")  # another partition
    put(dynamodb, "O#001", pk="R#10")
    spy = Spy(dynamodb)
    pages = take(spy, limits=SnapshotLimits(read_page_items=4))
    assert sks(pages) == [f"O#{n:03d}" for n in range(25)]
    assert items_of(pages)[7] == {"PK": "R#1", "SK": "O#007", "n": 7}
    assert len(pages) == 1 and pages[0].truncated == ()
    assert [name for name, _ in spy.calls] == ["query"] * 7  # 25 items, 4 a request
    for _, request in spy.calls:
        assert request["ConsistentRead"] is True
        assert request["Limit"] == 4
        assert "IndexName" not in request
        assert request["ExpressionAttributeValues"] == {":pk": {"S": "R#1"}}


def test_whole_key_is_one_consistent_get_item(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1", status="paid")
    put(dynamodb, "O#2", status="ready")
    spy = Spy(dynamodb)
    pages = take(spy, {"PK": {"S": "R#1"}, "SK": {"S": "O#2"}})
    assert items_of(pages) == [{"PK": "R#1", "SK": "O#2", "status": "ready"}]
    assert spy.calls == [
        (
            "get_item",
            {
                "TableName": TABLE,
                "Key": {"PK": {"S": "R#1"}, "SK": {"S": "O#2"}},
                "ConsistentRead": True,
            },
        )
    ]


def test_missing_item_is_one_empty_page(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1")
    pages = take(dynamodb, {"PK": {"S": "R#1"}, "SK": {"S": "O#9"}})
    assert pages == [SnapshotPage()]
    assert pages[0].body() == {"items": []}


def test_empty_partition_is_one_empty_page(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1", pk="R#2")
    pages = take(dynamodb, {"PK": {"S": "R#1"}})
    assert pages == [SnapshotPage()]
    (message,) = page_messages("s1", pages, "c1")
    assert message == {"type": "snapshot", "id": "s1", "items": [], "more": False, "cursor": "c1"}


def test_hash_only_table_reads_its_key_with_get_item(dynamodb: Any, hash_table: str) -> None:
    dynamodb.put_item(TableName=HASH_TABLE, Item={"PK": {"S": "U#1"}, "name": {"S": "Ada"}})
    dynamodb.put_item(TableName=HASH_TABLE, Item={"PK": {"S": "U#2"}, "name": {"S": "Bob"}})
    spy = Spy(dynamodb)
    pages = take(spy, {"PK": {"S": "U#1"}}, source=HASH_SOURCE)
    assert items_of(pages) == [{"PK": "U#1", "name": "Ada"}]
    assert [name for name, _ in spy.calls] == ["get_item"]


def test_number_and_binary_keys_from_the_subscription(dynamodb: Any) -> None:
    """``typed_key`` turns ``subscription_key``'s texts into values DynamoDB finds: a number
    key in its canonical spelling, a binary key as bytes."""
    keys = (("PK", "N"), ("SK", "B"))
    create_source_table(dynamodb, "typed", list(keys))
    dynamodb.put_item(TableName="typed", Item={"PK": {"N": "100"}, "SK": {"B": b"\x00\xff"}})
    source = Source("typed", "typed", keys, True, (Rule(table=True),))
    texts, _ = subscription_key(keys, {"PK": 100})
    assert texts == {"PK": "1E+2"}
    assert items_of(take(dynamodb, typed_key(keys, texts), source=source)) == [
        {"PK": 100, "SK": base64.b64encode(b"\x00\xff").decode()}
    ]
    texts, _ = subscription_key(keys, {"PK": "1.0E2", "SK": base64.b64encode(b"\x00\xff").decode()})
    whole = typed_key(keys, texts)
    assert whole == {"PK": {"N": "1E+2"}, "SK": {"B": b"\x00\xff"}}
    assert len(items_of(take(dynamodb, whole, source=source))) == 1
    with pytest.raises(InvalidKey):
        typed_key(keys, {"PK": "1", "SK": "not base64!"})


@pytest.mark.parametrize(
    "key",
    [
        {"SK": {"S": "O#1"}},  # no partition key
        {"PK": {"S": "R#1"}, "other": {"S": "x"}},
        {"PK": {"N": "1"}},  # wrong type
        {"PK": "R#1"},  # not an attribute value
    ],
)
def test_a_key_that_does_not_fit_is_refused_before_reading(
    dynamodb: Any, table: str, key: dict[str, Any]
) -> None:
    spy = Spy(dynamodb)
    with pytest.raises(InvalidKey):
        take(spy, key)
    assert spy.calls == []


def test_a_source_without_keys_takes_no_snapshot(dynamodb: Any) -> None:
    source = Source("loose", TABLE, (), True, (Rule(table=True),))
    with pytest.raises(InvalidKey):
        take(dynamodb, PARTITION, source=source)


# --- what the subscriber sees -----------------------------------------------------------


def test_filter_is_applied(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1", status="paid", total=30)
    put(dynamodb, "O#2", status="paid", total=10)
    put(dynamodb, "O#3", status="open", total=50)
    put(dynamodb, "O#4", status="ready", total=21)
    compiled = parse_filter([{"status": {"in": ["paid", "ready"]}, "total": {"gt": 20}}])
    assert sks(take(dynamodb, filter=compiled)) == ["O#1", "O#4"]


def test_fields_trim_items_and_keep_keys(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1", status="paid", total=30, secret="s3cr3t")
    pages = take(dynamodb, fields=frozenset({"status", "absent"}))
    assert items_of(pages) == [{"PK": "R#1", "SK": "O#1", "status": "paid"}]
    assert items_of(take(dynamodb, fields=frozenset())) == [{"PK": "R#1", "SK": "O#1"}]


def test_filter_sees_only_what_the_subscriber_may_see(dynamodb: Any, table: str) -> None:
    """A filter on a hidden attribute cannot probe it (subscribe refuses such filters; this
    holds even if one got through)."""
    put(dynamodb, "O#1", status="paid", secret="x")
    probe = parse_filter([{"secret": {"exists": True}}])
    assert items_of(take(dynamodb, filter=probe, fields=frozenset({"status"}))) == []
    assert sks(take(dynamodb, filter=probe)) == ["O#1"]
    on_key = parse_filter([{"SK": {"beginsWith": "O#"}}])
    assert sks(take(dynamodb, filter=on_key, fields=frozenset({"status"}))) == ["O#1"]


def test_target_attribute_gives_owners_their_items_only(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1", owner="u1")
    put(dynamodb, "O#2", owner="u2")
    put(dynamodb, "O#3")  # names no owner
    put(dynamodb, "O#4", owner="")
    put(dynamodb, "O#5", owner={"N": "7"})
    put(dynamodb, "O#6", owner={"SS": ["u1"]})
    put(dynamodb, "O#7", owner="u1")
    assert sks(take(dynamodb, target_attribute="owner", user_id="u1")) == ["O#1", "O#7"]
    assert sks(take(dynamodb, target_attribute="owner", user_id="7")) == ["O#5"]
    assert sks(take(dynamodb, target_attribute="owner", user_id="u3")) == []


def test_target_attribute_fails_closed_without_a_user(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1", owner="u1")
    put(dynamodb, "O#2")
    assert take(dynamodb, target_attribute="owner", user_id=None) == [SnapshotPage()]
    assert sks(take(dynamodb, target_attribute=None, user_id=None)) == ["O#1", "O#2"]


def test_owner_check_reads_the_whole_item_even_when_owner_is_trimmed(
    dynamodb: Any, table: str
) -> None:
    put(dynamodb, "O#1", owner="u1", status="paid")
    put(dynamodb, "O#2", owner="u2", status="paid")
    pages = take(dynamodb, target_attribute="owner", user_id="u1", fields=frozenset({"status"}))
    assert items_of(pages) == [{"PK": "R#1", "SK": "O#1", "status": "paid"}]


def test_source_filters_leave_items_out(dynamodb: Any, table: str) -> None:
    """Items outside the source's own filters reach no subscriber live, so not in a snapshot
    either; a pattern naming eventName lets through items an INSERT or MODIFY made."""
    put(dynamodb, "O#1", status="live")
    put(dynamodb, "O#2", status="draft")
    on_image = {"dynamodb": {"NewImage": {"status": {"S": ["live"]}}}}
    source = Source("orders", TABLE, KEYS, True, (Rule(table=True),), filters=(on_image,))
    assert sks(take(dynamodb, source=source)) == ["O#1"]
    modify_only = {"eventName": ["MODIFY"], **on_image}
    source = Source("orders", TABLE, KEYS, True, (Rule(table=True),), filters=(modify_only,))
    assert sks(take(dynamodb, source=source)) == ["O#1"]
    removes = {"eventName": ["REMOVE"]}
    source = Source("orders", TABLE, KEYS, True, (Rule(table=True),), filters=(removes,))
    assert sks(take(dynamodb, source=source)) == []


def test_exact_numbers_survive(dynamodb: Any, table: str) -> None:
    big = "123456789012345678901234567890"
    put(dynamodb, "O#1", n={"N": big}, half={"N": "1.5"}, safe={"N": str(2**53 - 1)})
    put(dynamodb, "O#2", n={"N": "123456789012345678901234567889"})
    at_least = parse_filter([{"n": {"ge": Decimal(big)}}])
    (item,) = items_of(take(dynamodb, filter=at_least))
    assert item == {"PK": "R#1", "SK": "O#1", "n": big, "half": 1.5, "safe": 2**53 - 1}
    (message,) = page_messages("s1", take(dynamodb, filter=at_least), "c")
    assert f'"n":"{big}"' in json.dumps(message, separators=(",", ":"))


# --- pages ------------------------------------------------------------------------------


def page_json_size(page: SnapshotPage) -> int:
    return len(json.dumps(page.body(), separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def test_pages_stay_within_page_bytes_and_hold_every_item_once_in_order(
    dynamodb: Any, table: str
) -> None:
    rng = random.Random(7)
    for n in range(60):  # varied sizes, multi-byte text
        put(dynamodb, f"O#{n:03d}", text="é€" * rng.randint(10, 400))
    limits = SnapshotLimits(page_bytes=6_000, read_page_items=7)
    pages = take(dynamodb, limits=limits)
    assert len(pages) > 5
    assert sks(pages) == [f"O#{n:03d}" for n in range(60)]
    for index, page in enumerate(pages):
        assert page.items and not page.truncated
        assert page_json_size(page) <= 6_000
        if index + 1 < len(pages):  # full: the next page's first item did not fit
            fuller = SnapshotPage((*page.items, pages[index + 1].items[0]))
            assert page_json_size(fuller) > 6_000


def test_paginate_size_is_exact_at_the_boundary() -> None:
    items = [{"PK": "p", "SK": f"{n}", "v": "x" * 20} for n in range(5)]
    exact = page_json_size(SnapshotPage(tuple(items[:3])))
    pages = paginate(items, ["PK", "SK"], SnapshotLimits(page_bytes=exact))
    assert [len(page.items) for page in pages] == [3, 2]
    pages = paginate(items, ["PK", "SK"], SnapshotLimits(page_bytes=exact - 1))
    assert [len(page.items) for page in pages] == [2, 2, 1]


def test_an_item_too_large_for_a_page_is_sent_as_its_keys(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1", text="a" * 100)
    put(dynamodb, "O#2", text="b" * 300_000)  # a DynamoDB item may be 400 KB
    put(dynamodb, "O#3", text="c" * 100)
    pages = take(dynamodb)
    assert len(pages) == 1
    (page,) = pages
    assert [item["SK"] for item in page.items] == ["O#1", "O#3"]
    assert page.truncated == ({"PK": "R#1", "SK": "O#2"},)
    assert page.body()["truncated"] == [{"PK": "R#1", "SK": "O#2"}]
    (message,) = page_messages("s" * 64, pages, "c" * 1024)
    assert encoded_size(message) <= MAX_MESSAGE_BYTES


def test_truncated_keys_land_in_the_page_where_the_item_was(dynamodb: Any, table: str) -> None:
    for n in range(6):
        put(dynamodb, f"O#{n}", text=("z" if n == 3 else "s") * (2_000 if n == 3 else 180))
    pages = take(dynamodb, limits=SnapshotLimits(page_bytes=700))
    assert [[i["SK"] for i in p.items] for p in pages] == [["O#0", "O#1", "O#2"], ["O#4", "O#5"]]
    assert [p.truncated for p in pages] == [({"PK": "R#1", "SK": "O#3"},), ()]
    assert all(page_json_size(page) <= 700 for page in pages)


def test_keys_that_do_not_fit_a_page_raise() -> None:
    with pytest.raises(SnapshotTooLarge) as raised:
        paginate([{"PK": "p" * 100, "v": "x" * 100}], ["PK"], SnapshotLimits(page_bytes=60))
    assert raised.value.reason == "bytes"


def test_every_message_stays_under_128_kb(dynamodb: Any, table: str) -> None:
    for n in range(12):
        put(dynamodb, f"O#{n:02d}", text="\u00e9" * 20_000)  # 40 KB of UTF-8 each
    pages = take(dynamodb)
    assert len(pages) >= 4
    messages = page_messages("s" * 64, pages, "c" * 2048)
    assert [m["more"] for m in messages] == [True] * (len(pages) - 1) + [False]
    assert all(encoded_size(m) <= MAX_MESSAGE_BYTES for m in messages)
    assert [i["SK"] for m in messages for i in m["items"]] == [f"O#{n:02d}" for n in range(12)]


# --- bounds -----------------------------------------------------------------------------


def test_more_than_max_items_raises(dynamodb: Any, table: str) -> None:
    for n in range(11):
        put(dynamodb, f"O#{n:02d}", status="paid")
    with pytest.raises(SnapshotTooLarge) as raised:
        take(dynamodb, limits=SnapshotLimits(max_items=10, read_page_items=3))
    assert raised.value.reason == "items"
    assert len(items_of(take(dynamodb, limits=SnapshotLimits(max_items=11)))) == 11


def test_max_items_counts_visible_items_only(dynamodb: Any, table: str) -> None:
    for n in range(15):
        put(dynamodb, f"O#{n:02d}", status="paid" if n < 10 else "open")
    paid = parse_filter([{"status": "paid"}])
    pages = take(dynamodb, filter=paid, limits=SnapshotLimits(max_items=10))
    assert len(items_of(pages)) == 10


def test_more_than_max_bytes_raises(dynamodb: Any, table: str) -> None:
    for n in range(5):
        put(dynamodb, f"O#{n}", text="x" * 1_000)
    with pytest.raises(SnapshotTooLarge) as raised:
        take(dynamodb, limits=SnapshotLimits(max_bytes=4_000))
    assert raised.value.reason == "bytes"
    assert len(items_of(take(dynamodb, limits=SnapshotLimits(max_bytes=6_000)))) == 5


class FakeClock:
    """Moves on by ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_deadline_between_reads_raises_and_stops_reading(dynamodb: Any, table: str) -> None:
    for n in range(20):
        put(dynamodb, f"O#{n:02d}")
    spy = Spy(dynamodb)
    limits = SnapshotLimits(read_page_items=5)
    with pytest.raises(SnapshotTooLarge) as raised:
        take(spy, limits=limits, deadline=2.5, clock=FakeClock(1.0))
    assert raised.value.reason == "time"
    assert len(spy.calls) == 2  # read at 1 and 2; at 3 the deadline had passed
    assert len(items_of(take(dynamodb, limits=limits, deadline=5.0, clock=FakeClock(1.0)))) == 20


def test_deadline_already_past_reads_nothing(dynamodb: Any, table: str) -> None:
    put(dynamodb, "O#1")
    spy = Spy(dynamodb)
    with pytest.raises(SnapshotTooLarge) as raised:
        take(spy, {"PK": {"S": "R#1"}, "SK": {"S": "O#1"}}, deadline=0.5, clock=FakeClock(1.0))
    assert raised.value.reason == "time"
    assert spy.calls == []


@pytest.mark.parametrize(
    "limits",
    [
        {"max_items": 0},
        {"max_bytes": -1},
        {"page_bytes": 0},
        {"page_bytes": MAX_MESSAGE_BYTES},
        {"read_page_items": True},
    ],
)
def test_limits_are_validated(limits: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SnapshotLimits(**limits)
