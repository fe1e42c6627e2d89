"""The broadcaster with moto (connections and subscriptions tables) and the local Management API.

Recipients come only from the subscription index: the subscriptions on the
topics a record touches (its item, its partition, each table-wide bucket).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import handlers.broadcaster as broadcaster_module
from bench.management_api import FakeManagementApi
from components.sources import SourceFilter, broadcaster_filters, lambda_patterns
from handlers import aws
from handlers import subscriptions as store
from handlers.broadcaster import (
    MAX_MESSAGE_BYTES,
    Broadcaster,
    MalformedRecord,
    encode,
    handler,
    payloads,
    read_record,
)
from handlers.config import Source, broadcaster_config
from handlers.connections import iso_utc
from handlers.lambda_filters import matches_any, parse_pattern
from handlers.management import ManagementApi, frozen_credentials
from handlers.recipients import subscription_of
from handlers.topics import bucket_of, key_topic, subscription_key, table_topic
from tests.handlers.conftest import SOURCE_LABEL, SOURCE_TABLE
from tests.helpers import (
    FakeContext,
    connection_ids,
    create_subscriptions_table,
    load_event,
    subscription_items,
)

SEQ = ["111100000000000000000001", "111100000000000000000002", "111100000000000000000003"]
KEYS = (("PK", "S"), ("SK", "S"))
SOURCES = {SOURCE_LABEL: Source(SOURCE_LABEL, SOURCE_TABLE, KEYS, True, ())}
SUBSCRIPTIONS = "subscriptions-test"
BUCKETS = 4
ITEM = {"PK": "EVENT#123", "SK": "METADATA"}
ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/{SOURCE_TABLE}/stream/2026-11-01T00:00:00.000"


def settings(endpoint: str, **changes: Any):
    env = {
        "CONNECTIONS_TABLE": "connections-test",
        "MANAGEMENT_ENDPOINT": endpoint,
        "SOURCES": json.dumps(
            {
                SOURCE_LABEL: {
                    "table": SOURCE_TABLE,
                    "keys": [list(k) for k in KEYS],
                    "oldImage": True,
                    "access": [{"table": True}],
                }
            }
        ),
        "SUBSCRIPTIONS_TABLE": SUBSCRIPTIONS,
        "TABLE_TOPIC_BUCKETS": str(BUCKETS),
    }
    return dataclasses.replace(broadcaster_config(env), **changes)


def make(server: FakeManagementApi, dynamodb: Any, **changes: Any) -> Broadcaster:
    api = ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )
    return Broadcaster(
        settings(server.endpoint, **changes), dynamodb=dynamodb, api=api, sleep=lambda _: None
    )


def run(b: Broadcaster, records: list[Any]):
    return b.run(records, deadline=b.clock() + 60)


@pytest.fixture
def tables(dynamodb: Any, connections_table: str) -> Any:
    create_subscriptions_table(dynamodb, SUBSCRIPTIONS)
    return dynamodb


def add_connection(
    client: Any, cid: str, user: str | None = None, *, age: float = 3600.0, table: str = ""
) -> None:
    """A connection record as the connect handler stores it (``subs`` always present)."""
    now = time.time() - age
    item: dict[str, Any] = {
        "connectionId": {"S": cid},
        "connectedAt": {"S": iso_utc(now)},
        "ttl": {"N": str(int(now) + 7200)},
        "subs": {"M": {}},
    }
    if user:
        item["userId"] = {"S": user}
    client.put_item(TableName=table or "connections-test", Item=item)


def topic_for(cid: str, key: dict[str, Any] | None, label: str = SOURCE_LABEL) -> str:
    if key is None:
        return table_topic(label, bucket_of(cid, BUCKETS))
    return key_topic(label, subscription_key(KEYS, key)[1])


def subscribe(
    client: Any,
    cid: str,
    sub_id: str,
    *,
    key: dict[str, Any] | None = None,
    filter: list[Any] | None = None,
    fields: list[str] | None = None,
    label: str = SOURCE_LABEL,
) -> str:
    """Store a subscription the way $default does (one transaction with the record's map)."""
    topic = topic_for(cid, key, label)

    def build(connection: store.Connection) -> tuple[str, dict[str, Any]]:
        filter_json = None if filter is None else json.dumps(filter)
        item = store.subscription_item(connection, sub_id, topic, label, filter_json, fields)
        return topic, item

    store.put_subscription(
        client,
        connections_table="connections-test",
        subscriptions_table=SUBSCRIPTIONS,
        connection_id=cid,
        sub_id=sub_id,
        build=build,
        limit=20,
    )
    return topic


def client_on(
    server: FakeManagementApi, client: Any, cid: str, user: str | None = None, **sub: Any
) -> None:
    """A connected client with one subscription ``s1`` (table-wide unless ``key`` is given)."""
    add_connection(client, cid, user)
    subscribe(client, cid, "s1", **sub)
    server.connect(cid)


def stored_subscriptions(client: Any) -> list[str]:
    return sorted(i["sk"]["S"] for i in subscription_items(client, SUBSCRIPTIONS))


def stream(
    event_name: str,
    sequence: str,
    *,
    new: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    key: tuple[str, str] = ("EVENT#123", "METADATA"),
) -> dict[str, Any]:
    """A stream record of the sample table; images as plain ``{name: str|int}``."""

    def typed(image: dict[str, Any]) -> dict[str, Any]:
        return {
            name: {"N": str(value)} if isinstance(value, int) else {"S": value}
            for name, value in {"PK": key[0], "SK": key[1], **image}.items()
        }

    body: dict[str, Any] = {
        "Keys": {"PK": {"S": key[0]}, "SK": {"S": key[1]}},
        "SequenceNumber": sequence,
        "ApproximateCreationDateTime": 1795000000,
    }
    if new is not None:
        body["NewImage"] = typed(new)
    if old is not None:
        body["OldImage"] = typed(old)
    return {
        "eventID": f"evt-{sequence}",
        "eventName": event_name,
        "eventSourceARN": ARN,
        "dynamodb": body,
    }


@pytest.fixture
def two_clients(management_api: FakeManagementApi, tables: Any) -> list[str]:
    for cid, user in (("A=", "user-1"), ("B=", "user-2")):
        client_on(management_api, tables, cid, user)
    return ["A=", "B="]


# --- recipients come from the topics a record touches -------------------------------------


def test_insert_update_delete_reach_table_subscribers_in_order(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"])
    assert failures == []
    assert (stats.delivered, stats.recordsFailed) == (6, 0)
    for cid in two_clients:
        received = management_api.messages(cid)
        assert [m["action"] for m in received] == ["created", "updated", "deleted"]
        assert [m["sequence"] for m in received] == SEQ
        assert [m["matches"] for m in received] == [
            {"s1": "added"},
            {"s1": "modified"},
            {"s1": "removed"},
        ]


def test_envelope_follows_the_contract(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    run(make(management_api, tables), load_event("stream_batch")["Records"])
    created, updated, deleted = management_api.messages("A=")
    assert created["type"] == "event_update"
    assert created["table"] == "events"
    assert created["keys"] == {"PK": "EVENT#123", "SK": "METADATA"}
    assert created["data"]["count"] == 42 and created["data"]["labels"] == ["Mu", "alpha", "zeta"]
    assert created["id"] == f"evt-{SEQ[0]}"
    assert created["timestamp"] == "2026-11-18T11:06:40.000Z"
    assert updated["data"]["count"] == 43
    assert "old" not in updated  # only when configured
    assert "data" not in deleted and deleted["keys"] == created["keys"]


def test_old_image_is_included_when_configured(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    run(make(management_api, tables, include_old_image=True), load_event("stream_batch")["Records"])
    created, updated, deleted = management_api.messages("B=")
    assert "old" not in created
    assert updated["old"] == {"PK": "EVENT#123", "SK": "METADATA", "title": "Draft",
                              "owner": "user-1"}  # fmt: skip
    assert deleted["old"]["count"] == 43


def test_only_subscriptions_on_the_touched_topics_receive(
    management_api: FakeManagementApi, tables: Any, connections_table: str
) -> None:
    client_on(management_api, tables, "table=")
    client_on(management_api, tables, "partition=", key={"PK": "EVENT#123"})
    client_on(management_api, tables, "item=", key=ITEM)
    client_on(management_api, tables, "other-partition=", key={"PK": "EVENT#999"})
    client_on(management_api, tables, "other-item=", key={"PK": "EVENT#123", "SK": "OTHER"})
    client_on(management_api, tables, "other-source=", label="audit")
    add_connection(tables, "unsubscribed=")  # connected, no subscription: receives nothing
    management_api.connect("unsubscribed=")
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"][:1])
    assert failures == []
    received = {cid for cid in connection_ids(tables, connections_table)
                if management_api.messages(cid)}  # fmt: skip
    assert received == {"table=", "partition=", "item="}
    # every topic the record touches, once (item, partition, each bucket): one without a
    # version item may still hold subscriptions stored before version items existed
    assert stats.topicsQueried == 2 + BUCKETS and stats.topicsCached == 0
    assert stats.subscriptionsRead == 3 and stats.recipients == 3
    assert management_api.state.requests == 3


def test_every_table_wide_bucket_is_read(management_api: FakeManagementApi, tables: Any) -> None:
    """Table-wide subscriptions are spread over buckets by connection id; all are read."""
    by_bucket: dict[int, str] = {}
    for n in range(200):
        by_bucket.setdefault(bucket_of(f"c{n}=", BUCKETS), f"c{n}=")
        if len(by_bucket) == BUCKETS:
            break
    assert len(by_bucket) == BUCKETS
    for cid in by_bucket.values():
        client_on(management_api, tables, cid)
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"][:1])
    assert failures == [] and stats.delivered == BUCKETS
    assert all(len(management_api.messages(cid)) == 1 for cid in by_bucket.values())


def test_subscription_on_a_hash_key_only_source_is_found_by_partition(
    management_api: FakeManagementApi, tables: Any
) -> None:
    sources = {SOURCE_LABEL: dataclasses.replace(SOURCES[SOURCE_LABEL], keys=(("PK", "S"),))}
    add_connection(tables, "p=")
    topic = key_topic(SOURCE_LABEL, subscription_key((("PK", "S"),), {"PK": "EVENT#123"})[1])

    def build(connection: store.Connection) -> tuple[str, dict[str, Any]]:
        return topic, store.subscription_item(connection, "s1", topic, SOURCE_LABEL, None, None)

    store.put_subscription(tables, connections_table="connections-test",
                           subscriptions_table=SUBSCRIPTIONS, connection_id="p=", sub_id="s1",
                           build=build, limit=20)  # fmt: skip
    management_api.connect("p=")
    record = stream("INSERT", SEQ[0], new={"n": 1})
    del record["dynamodb"]["Keys"]["SK"]
    failures, stats = run(make(management_api, tables, sources=sources), [record])
    assert failures == [] and stats.topicsQueried == 1 + BUCKETS  # the partition, the buckets
    assert [m["matches"] for m in management_api.messages("p=")] == [{"s1": "added"}]


def test_topic_queries_follow_every_page(management_api: FakeManagementApi, tables: Any) -> None:
    ids = [f"p{n:02d}=" for n in range(7)]
    for cid in ids:
        client_on(management_api, tables, cid, key={"PK": "EVENT#123"})
    pages: list[int] = []

    def small_pages(params: dict[str, Any], **_: Any) -> None:
        params["Limit"] = 2
        pages.append(1)

    tables.meta.events.register("provide-client-params.dynamodb.Query", small_pages)
    try:
        failures, stats = run(
            make(management_api, tables), load_event("stream_batch")["Records"][:1]
        )
    finally:
        tables.meta.events.unregister("provide-client-params.dynamodb.Query", small_pages)
    assert failures == [] and stats.delivered == len(ids) == stats.subscriptionsRead
    # the partition topic (seven subscriptions and its version item) took four pages; the
    # item and the four buckets, never subscribed, one (empty) page each
    assert len(pages) == 4 + 1 + BUCKETS
    assert all(len(management_api.messages(cid)) == 1 for cid in ids)


def test_each_topic_is_read_once_per_batch(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"])
    assert failures == [] and stats.records == 3
    # three records on one item: one read of each topic (item, partition, the buckets)
    assert stats.topicsQueried == 2 + BUCKETS and stats.topicsCached == 0


# --- what each connection receives ---------------------------------------------------------


def test_one_message_per_connection_with_every_matching_subscription(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "A=")  # s1: table-wide
    subscribe(tables, "A=", "s2", key={"PK": "EVENT#123"})
    subscribe(tables, "A=", "s3", key=ITEM, filter=[{"count": {"gt": 100}}])  # does not match
    subscribe(tables, "A=", "s4", key=ITEM)
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"][:1])
    assert failures == [] and stats.delivered == 1
    (message,) = management_api.messages("A=")
    assert message["matches"] == {"s1": "added", "s2": "added", "s4": "added"}
    assert message["data"]["count"] == 42


def test_filters_give_added_modified_removed_as_items_enter_and_leave(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "F=", filter=[{"status": "open", "n": {"ge": 10}}])
    client_on(management_api, tables, "all=")
    records = [
        stream("INSERT", "1", new={"status": "open", "n": 5}),  # F: not yet
        stream("MODIFY", "2", old={"status": "open", "n": 5}, new={"status": "open", "n": 10}),
        stream("MODIFY", "3", old={"status": "open", "n": 10}, new={"status": "open", "n": 11}),
        stream("MODIFY", "4", old={"status": "open", "n": 11}, new={"status": "done", "n": 11}),
        stream("MODIFY", "5", old={"status": "done", "n": 11}, new={"status": "done", "n": 12}),
        stream("INSERT", "6", new={"status": "open", "n": 99}, key=("EVENT#9", "X")),
        stream("REMOVE", "7", old={"status": "open", "n": 99}, key=("EVENT#9", "X")),
    ]
    failures, stats = run(make(management_api, tables), records)
    assert failures == []
    seen = [(m["sequence"], m["matches"]["s1"]) for m in management_api.messages("F=")]
    assert seen == [("2", "added"), ("3", "modified"), ("4", "removed"), ("6", "added"),
                    ("7", "removed")]  # fmt: skip
    left = management_api.messages("F=")[2]
    assert "data" not in left and left["keys"] == ITEM  # leaving a filter: keys only
    assert len(management_api.messages("all=")) == 7
    assert stats.unheard == 0


PAID = {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}


def source_filtered(*patterns: dict[str, Any]) -> dict[str, Source]:
    """The sample source with its own filters (SOURCES "filters", as the component writes)."""
    return {SOURCE_LABEL: dataclasses.replace(SOURCES[SOURCE_LABEL], filters=patterns)}


def test_an_item_leaving_the_source_filter_is_removed_keys_only_and_entering_it_added(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "A=")
    client_on(management_api, tables, "N=", filter=[{"n": {"ge": 10}}])
    records = [
        stream("INSERT", "1", new={"status": "new", "n": 50}),  # outside the source filter
        stream("MODIFY", "2", old={"status": "new", "n": 50}, new={"status": "paid", "n": 50}),
        stream("MODIFY", "3", old={"status": "paid", "n": 50}, new={"status": "paid", "n": 5}),
        stream("MODIFY", "4", old={"status": "paid", "n": 5}, new={"status": "paid", "n": 51}),
        stream("MODIFY", "5", old={"status": "paid", "n": 51}, new={"status": "done", "n": 51}),
        stream("MODIFY", "6", old={"status": "done", "n": 51}, new={"status": "gone", "n": 52}),
    ]
    b = make(management_api, tables, sources=source_filtered(PAID), include_old_image=True)
    failures, stats = run(b, records)
    assert failures == []
    seen = [(m["sequence"], m["matches"]) for m in management_api.messages("A=")]
    assert seen == [("2", {"s1": "added"}), ("3", {"s1": "modified"}), ("4", {"s1": "modified"}),
                    ("5", {"s1": "removed"})]  # fmt: skip
    entered, *_, left = management_api.messages("A=")
    assert entered["data"]["status"] == "paid" and "old" not in entered  # never saw it before
    assert left["keys"] == ITEM and "data" not in left and "old" not in left  # keys only
    seen = [(m["sequence"], m["matches"]) for m in management_api.messages("N=")]
    assert seen == [("2", {"s1": "added"}), ("3", {"s1": "removed"}), ("4", {"s1": "added"}),
                    ("5", {"s1": "removed"})]  # fmt: skip
    assert stats.unheard == 2  # 1 and 6: neither image passes the source filter
    # read for 2 on, once; not for 1 (6 reads the batch's): the item, partition and buckets
    assert stats.topicsQueried == 2 + BUCKETS


def test_a_record_neither_image_of_which_passes_the_source_filter_reaches_no_one(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "A=")
    records = [
        stream("INSERT", "1", new={"status": "new"}),
        stream("MODIFY", "2", old={"status": "new"}, new={"status": "done"}),
        stream("REMOVE", "3", old={"status": "done"}),
        stream("REMOVE", "4", old={"status": "paid"}),  # the filter's eventName leaves it out
    ]
    failures, stats = run(make(management_api, tables, sources=source_filtered(PAID)), records)
    assert failures == [] and management_api.messages("A=") == []
    assert stats.unheard == 4 and stats.topicsQueried == 0 and stats.subscriptionsRead == 0


def test_a_deleted_item_the_source_filter_matched_is_removed_for_who_saw_it(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "A=")
    paid_any_event = {"dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}
    records = [
        stream("REMOVE", "1", old={"status": "paid"}),
        stream("REMOVE", "2", old={"status": "new"}),
    ]
    b = make(
        management_api, tables, sources=source_filtered(paid_any_event), include_old_image=True
    )
    failures, stats = run(b, records)
    assert failures == []
    (removed,) = management_api.messages("A=")
    assert removed["sequence"] == "1" and removed["matches"] == {"s1": "removed"}
    assert removed["old"]["status"] == "paid"  # deleted while visible: old as configured
    assert stats.unheard == 1


def test_the_source_filters_event_name_applies_to_each_image(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "A=")
    inserts_only = {"eventName": ["INSERT"], "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}}
    removals = {"eventName": ["REMOVE"]}
    records = [
        stream("INSERT", "1", new={"status": "paid"}),
        stream("MODIFY", "2", old={"status": "paid"}, new={"status": "paid", "n": 1}),
        stream("REMOVE", "3", old={"status": "new"}),
    ]
    b = make(management_api, tables, sources=source_filtered(inserts_only, removals))
    failures, _ = run(b, records)
    assert failures == []
    seen = [(m["sequence"], m["matches"]) for m in management_api.messages("A=")]
    assert seen == [("1", {"s1": "added"}), ("3", {"s1": "removed"})]


@pytest.mark.parametrize(
    "filters",
    [
        [SourceFilter(new_image={"status": ["paid"]})],
        [SourceFilter(event_names=["INSERT", "MODIFY"], new_image={"status": ["paid"]})],
        [SourceFilter(event_names=["MODIFY", "REMOVE"], new_image={"status": ["paid"]})],
        [SourceFilter(event_names=["INSERT"]), SourceFilter(new_image={"n": {"N": ["1"]}})],
    ],
    ids=["any-event", "insert-modify", "modify-remove", "two"],
)
def test_the_broadcaster_hears_a_record_exactly_when_lambdas_filters_pass_it(
    filters: list[SourceFilter],
) -> None:
    source = source_filtered(*broadcaster_filters(filters, old_image=True))
    lambda_side = [parse_pattern(p) for p in lambda_patterns(filters, old_image=True)]
    images = [{"status": "paid", "n": 1}, {"status": "paid"}, {"status": "new", "n": 1}, {}]
    records = [stream("INSERT", "1", new=new) for new in images]
    records += [stream("MODIFY", "2", old=old, new=new) for old in images for new in images]
    records += [stream("REMOVE", "3", old=old) for old in images]
    for record in records:
        read = read_record(record, now=0.0, sources=source, buckets=BUCKETS)
        assert (not read.outside_source) == matches_any(lambda_side, record), record


def test_granted_fields_trim_data_and_old_and_unite_per_connection(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "T=", fields=["title"])
    client_on(management_api, tables, "U=", fields=["title"])
    subscribe(tables, "U=", "s2", key={"PK": "EVENT#123"}, fields=["count"])
    client_on(management_api, tables, "all=")
    records = load_event("stream_batch")["Records"][:2]
    failures, _ = run(make(management_api, tables, include_old_image=True), records)
    assert failures == []
    created, updated = management_api.messages("T=")
    assert created["data"] == {"PK": "EVENT#123", "SK": "METADATA", "title": "Launch été 🚀"}
    assert updated["old"] == {"PK": "EVENT#123", "SK": "METADATA", "title": "Draft"}
    raw = b"".join(management_api.state.received["T="])
    assert b"owner" not in raw and b"count" not in raw  # a trimmed field is never sent
    created, _ = management_api.messages("U=")
    assert sorted(created["data"]) == ["PK", "SK", "count", "title"]
    assert created["matches"] == {"s1": "added", "s2": "added"}
    created, _ = management_api.messages("all=")
    assert "owner" in created["data"] and "labels" in created["data"]


def test_identical_messages_are_encoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = broadcaster_module.encode

    def counting(message: Any, limit: int = MAX_MESSAGE_BYTES) -> tuple[bytes, bool]:
        calls.append(message)
        return real(message, limit)

    monkeypatch.setattr(broadcaster_module, "encode", counting)
    base = {"type": "event_update", "keys": {"PK": "a"}}
    messages = {f"c{n}": {**base, "matches": {"s1": "added"}, "data": {"PK": "a", "x": 1}}
                for n in range(50)}  # fmt: skip
    messages["other"] = {**base, "matches": {"s2": "added"}, "data": {"PK": "a", "x": 1}}
    messages["trimmed"] = {**base, "matches": {"s1": "added"}, "data": {"PK": "a"}}
    deliveries, truncated = payloads(messages)
    assert len(calls) == 3 and truncated == 0 and len(deliveries) == 52
    by_connection = dict(deliveries)
    assert by_connection["c0"] is by_connection["c49"]  # one bytes object shared
    assert json.loads(by_connection["trimmed"])["data"] == {"PK": "a"}
    assert json.loads(by_connection["other"])["matches"] == {"s2": "added"}


def test_oversized_message_is_sent_truncated_without_data_after_trimming(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "full=")
    client_on(management_api, tables, "slim=", fields=["title"])  # the big field is not granted
    record = load_event("stream_batch")["Records"][0]
    record["dynamodb"]["NewImage"]["body"] = {"S": "x" * (MAX_MESSAGE_BYTES + 10)}
    failures, stats = run(make(management_api, tables), [record])
    assert failures == [] and stats.truncated == 1
    (message,) = management_api.messages("full=")
    assert message["truncated"] is True and "data" not in message
    assert message["keys"] == ITEM and message["matches"] == {"s1": "added"}
    assert message["action"] == "created" and message["sequence"] == SEQ[0]
    (slim,) = management_api.messages("slim=")
    assert "truncated" not in slim and slim["data"]["title"]


def test_message_at_the_limit_is_not_truncated() -> None:
    message = {"type": "event_update", "data": {"v": ""}}
    overhead = len(encode(message)[0])
    message["data"]["v"] = "y" * (MAX_MESSAGE_BYTES - overhead)
    data, truncated = encode(message)
    assert len(data) == MAX_MESSAGE_BYTES and not truncated
    message["data"]["v"] += "y"
    assert encode(message)[1] is True


# --- targetAttribute: row-level control, fail closed ---------------------------------------


def test_target_attribute_sends_only_to_the_owner(
    management_api: FakeManagementApi, tables: Any
) -> None:
    for cid, user in (("u1-a", "user-1"), ("u1-b", "user-1"), ("u2", "user-2"), ("anon", None)):
        client_on(management_api, tables, cid, user)
    records = load_event("stream_batch")["Records"][:1]  # owner = user-1
    failures, stats = run(make(management_api, tables, target_attribute="owner"), records)
    assert failures == [] and stats.delivered == 2
    assert len(management_api.messages("u1-a")) == len(management_api.messages("u1-b")) == 1
    assert management_api.messages("u2") == management_api.messages("anon") == []


def test_change_of_owner_tells_the_previous_owner_removed_and_hides_old_from_the_new(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "one=", "user-1")
    client_on(management_api, tables, "two=", "user-2")
    record = stream("MODIFY", "1", old={"owner": "user-1", "secret": "s1"},
                    new={"owner": "user-2", "secret": "s2"})  # fmt: skip
    worker = make(management_api, tables, target_attribute="owner", include_old_image=True)
    failures, _ = run(worker, [record])
    assert failures == []
    (previous,) = management_api.messages("one=")
    assert previous["matches"] == {"s1": "removed"} and "data" not in previous
    assert "old" not in previous and previous["keys"] == ITEM
    (new,) = management_api.messages("two=")
    assert new["matches"] == {"s1": "added"} and new["data"]["secret"] == "s2"
    assert "old" not in new


@pytest.mark.parametrize(
    "owner",
    [None, {"S": ""}, {"BOOL": True}, {"NULL": True}, {"M": {"id": {"S": "user-1"}}},
     {"SS": ["user-1"]}, {"L": [{"S": "user-1"}]}],
    ids=["missing", "empty", "bool", "null", "map", "string-set", "list"],
)  # fmt: skip
def test_record_whose_item_names_no_user_reaches_no_one_costs_no_query_and_is_counted(
    management_api: FakeManagementApi,
    tables: Any,
    two_clients: list[str],
    owner: dict[str, Any] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fail closed: with a target attribute, an item without a usable owner is private."""
    record = load_event("stream_batch")["Records"][0]
    image = record["dynamodb"]["NewImage"]
    if owner is None:
        del image["owner"]
    else:
        image["owner"] = owner
    with caplog.at_level(logging.WARNING):
        failures, stats = run(make(management_api, tables, target_attribute="owner"), [record])
    assert failures == [] and stats.untargeted == 1
    assert stats.topicsQueried == 0 and management_api.state.requests == 0
    (logged,) = [r for r in caplog.records if "no recipient" in r.getMessage()]
    assert logged.sequence == SEQ[0] and "owner" in logged.reason  # type: ignore[attr-defined]


def test_update_whose_new_image_lost_its_owner_tells_the_old_owner_removed_only(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    record = load_event("stream_batch")["Records"][1]
    assert record["dynamodb"]["OldImage"]["owner"] == {"S": "user-1"}
    del record["dynamodb"]["NewImage"]["owner"]
    failures, stats = run(make(management_api, tables, target_attribute="owner"), [record])
    assert failures == [] and stats.untargeted == 0 and stats.delivered == 1
    (message,) = management_api.messages("A=")  # user-1
    assert message["matches"] == {"s1": "removed"} and "data" not in message
    assert management_api.messages("B=") == []


def test_delete_goes_to_the_owner_in_the_old_image(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    record = load_event("stream_batch")["Records"][2]
    assert "NewImage" not in record["dynamodb"]
    failures, stats = run(make(management_api, tables, target_attribute="owner"), [record])
    assert failures == [] and (stats.delivered, stats.untargeted) == (1, 0)
    assert [m["action"] for m in management_api.messages("A=")] == ["deleted"]
    assert management_api.messages("B=") == []


def test_numeric_owner_targets_that_user(management_api: FakeManagementApi, tables: Any) -> None:
    client_on(management_api, tables, "n=", "42")
    client_on(management_api, tables, "other=", "user-1")
    record = load_event("stream_batch")["Records"][0]
    record["dynamodb"]["NewImage"]["owner"] = {"N": "42"}
    failures, stats = run(make(management_api, tables, target_attribute="owner"), [record])
    assert failures == [] and stats.delivered == 1
    assert len(management_api.messages("n=")) == 1 and management_api.messages("other=") == []


# --- subscriptions cached across batches, checked against each topic's version --------------


class Calls:
    """Counts the DynamoDB operations a client sends (botocore's before-call event)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.counts: dict[str, int] = {}

    def __enter__(self) -> Calls:
        self.client.meta.events.register("before-call.dynamodb", self.count)
        return self

    def __exit__(self, *_: Any) -> None:
        self.client.meta.events.unregister("before-call.dynamodb", self.count)

    def count(self, model: Any, **_: Any) -> None:
        self.counts[model.name] = self.counts.get(model.name, 0) + 1


def changes(*numbers: int) -> list[dict[str, Any]]:
    return [stream("INSERT", f"{n:024d}", new={"n": n}) for n in numbers]


def test_a_second_batch_with_no_subscription_change_queries_nothing_and_reaches_everyone(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    client_on(management_api, tables, "P=", key={"PK": "EVENT#123"})
    b = make(management_api, tables)
    first_failures, first = run(b, changes(1))
    with Calls(tables) as calls:
        failures, second = run(b, changes(2))
    touched = 2 + BUCKETS  # the item, its partition, the buckets
    assert first_failures == failures == []
    assert (first.topicsQueried, first.topicsCached) == (touched, 0)
    assert (second.topicsQueried, second.topicsCached) == (0, touched)
    assert second.subscriptionsRead == 0 and second.delivered == 3
    assert calls.counts == {"BatchGetItem": 1}  # the versions of the record's 6 topics, no Query
    assert all(len(management_api.messages(cid)) == 2 for cid in ("A=", "B=", "P="))


def test_one_version_read_per_batch_for_every_record_in_it(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    records = [stream("INSERT", f"{n:024d}", new={"n": n}, key=(f"K{n}", "S")) for n in range(5)]
    with Calls(tables) as calls:
        failures, stats = run(make(management_api, tables), records)
    assert failures == [] and stats.delivered == 10
    # 5 items, 5 partitions, 4 buckets in one BatchGetItem; a Query of each, once
    assert calls.counts["BatchGetItem"] == 1
    assert calls.counts["Query"] == stats.topicsQueried == 5 + 5 + BUCKETS


def test_a_topic_never_subscribed_is_read_once_then_served_from_the_cache(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "other=", key={"PK": "EVENT#999"})  # another partition
    b = make(management_api, tables)
    failures, first = run(b, changes(1, 2))
    assert failures == [] and first.unheard == 2
    assert (first.topicsQueried, first.topicsCached) == (2 + BUCKETS, 0)
    with Calls(tables) as calls:
        failures, second = run(b, changes(3))
    assert failures == [] and second.unheard == 1
    assert (second.topicsQueried, second.topicsCached) == (0, 2 + BUCKETS)
    assert "Query" not in calls.counts
    assert management_api.state.requests == 0


def test_subscriptions_stored_before_version_items_existed_are_found(
    management_api: FakeManagementApi, tables: Any
) -> None:
    """A stack updated under live connections: their subscriptions have no version item."""
    client_on(management_api, tables, "old=")
    topic = topic_for("old=", None)
    tables.delete_item(
        TableName=SUBSCRIPTIONS, Key={"topic": {"S": topic}, "sk": {"S": store.VERSION_SK}}
    )
    b = make(management_api, tables)
    for n in (1, 2):
        assert run(b, changes(n))[0] == []
    assert [m["data"]["n"] for m in management_api.messages("old=")] == [1, 2]


def test_a_subscribe_between_batches_is_seen_by_the_next(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    b = make(management_api, tables)
    run(b, changes(1))
    # on A='s topic (cached) and on a topic nobody had subscribed to (version 0 so far)
    same = next(f"N{n}=" for n in range(200) if topic_for(f"N{n}=", None) == topic_for("A=", None))
    client_on(management_api, tables, same)
    client_on(management_api, tables, "item=", key=ITEM)
    failures, stats = run(b, changes(2))
    assert failures == []
    assert [m["data"]["n"] for m in management_api.messages(same)] == [2]
    assert [m["data"]["n"] for m in management_api.messages("item=")] == [2]
    assert [m["data"]["n"] for m in management_api.messages("A=")] == [1, 2]
    assert stats.topicsQueried == 2  # A='s bucket (its version moved) and the item


def test_an_unsubscribe_between_batches_is_honoured(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    b = make(management_api, tables)
    run(b, changes(1))
    assert store.delete_subscription(
        tables,
        connections_table="connections-test",
        subscriptions_table=SUBSCRIPTIONS,
        connection_id="B=",
        sub_id="s1",
    )
    failures, stats = run(b, changes(2))
    assert failures == [] and stats.delivered == 1
    assert [m["data"]["n"] for m in management_api.messages("B=")] == [1]
    assert [m["data"]["n"] for m in management_api.messages("A=")] == [1, 2]


def test_a_disconnect_between_batches_is_honoured(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    b = make(management_api, tables)
    run(b, changes(1))
    store.remove_connection(
        tables, connections_table="connections-test", subscriptions_table=SUBSCRIPTIONS,
        connection_id="B=",
    )  # fmt: skip
    failures, stats = run(b, changes(2))
    assert failures == [] and stats.recipients == 1 and stats.staleRemoved == 0
    assert len(management_api.messages("B=")) == 1  # not even tried: it is no recipient


def test_new_fields_and_expiry_from_auth_are_seen_by_the_next_batch(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "A=")
    b = make(management_api, tables)
    run(b, changes(1))
    assert sorted(management_api.messages("A=")[0]["data"]) == ["PK", "SK", "n"]
    connection = store.read_connection(tables, "connections-test", "A=")
    store.extend_connection(
        tables, connections_table="connections-test", subscriptions_table=SUBSCRIPTIONS,
        connection=connection, expires_at=int(time.time()) + 600, claims="{}",
        kept={"s1": (topic_for("A=", None), ["title"])},
    )  # fmt: skip
    failures, stats = run(b, changes(2))
    assert failures == [] and stats.topicsQueried == 1
    assert sorted(management_api.messages("A=")[1]["data"]) == ["PK", "SK"]  # n not granted
    store.extend_connection(
        tables, connections_table="connections-test", subscriptions_table=SUBSCRIPTIONS,
        connection=connection, expires_at=int(time.time()) - 1, claims="{}",
        kept={"s1": (topic_for("A=", None), None)},
    )  # fmt: skip
    failures, stats = run(b, changes(3))
    assert failures == [] and stats.expiredClosed == 1 and len(management_api.messages("A=")) == 2


def test_a_subscribe_landing_between_the_version_read_and_the_query_is_read_next_batch(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "A=")
    topic = topic_for("A=", None)
    late = next(f"L{n}=" for n in range(200) if topic_for(f"L{n}=", None) == topic)
    add_connection(tables, late)
    management_api.connect(late)
    landed: list[str] = []

    def subscribe_once(model: Any, **_: Any) -> None:
        # the subscribe lands right after the first of the topic's two reads, whichever it is
        if not landed and model.name in ("BatchGetItem", "Query"):
            landed.append(model.name)
            subscribe(tables, late, "s1")

    b = make(management_api, tables)
    tables.meta.events.register("after-call.dynamodb", subscribe_once)
    try:
        failures, _ = run(b, changes(1))
    finally:
        tables.meta.events.unregister("after-call.dynamodb", subscribe_once)
    assert failures == [] and landed == ["BatchGetItem"]  # the version is read first
    # the Query saw the new subscriber, but the list is cached under the version read before
    assert b.cache.get(topic, 1) is not None and b.cache.get(topic, 2) is None
    failures, second = run(b, changes(2))
    touched = 2 + BUCKETS
    assert failures == [] and (second.topicsQueried, second.topicsCached) == (1, touched - 1)
    assert [m["data"]["n"] for m in management_api.messages(late)][-1] == 2
    failures, third = run(b, changes(3))
    assert (third.topicsQueried, third.topicsCached) == (0, touched)
    assert [m["data"]["n"] for m in management_api.messages(late)][-1] == 3


def test_topics_whose_version_could_not_be_read_are_queried_and_not_cached(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    def unknown(client: Any, table: str, topics: Any, **_: Any) -> dict[str, int | None]:
        return dict.fromkeys(topics, None)  # every key left unprocessed

    monkeypatch.setattr(store, "topic_versions", unknown)
    b = make(management_api, tables)
    for n in (1, 2):
        failures, stats = run(b, changes(n))
        assert failures == [] and stats.delivered == 2
        assert (stats.topicsQueried, stats.topicsCached) == (2 + BUCKETS, 0)
    assert len(b.cache) == 0


def test_a_failing_version_read_reports_the_record_and_sends_nothing_after_it(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    def refuse(**_: Any) -> None:
        raise RuntimeError("BatchGetItem unavailable")

    tables.meta.events.register("provide-client-params.dynamodb.BatchGetItem", refuse)
    try:
        with caplog.at_level(logging.WARNING):
            failures, stats = run(make(management_api, tables), changes(1, 2))
    finally:
        tables.meta.events.unregister("provide-client-params.dynamodb.BatchGetItem", refuse)
    assert failures == [{"itemIdentifier": f"{1:024d}"}] and stats.delivered == 0
    assert any("could not deliver" in r.getMessage() for r in caplog.records)


def test_a_410_makes_the_next_batch_read_the_topic_again_without_the_gone_connection(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    add_connection(tables, "stale=", "user-1")  # subscribed, but no socket: 410
    subscribe(tables, "stale=", "s1")
    b = make(management_api, tables)
    failures, first = run(b, changes(1))
    assert failures == [] and first.staleRemoved == 1
    with Calls(tables) as calls:
        failures, second = run(b, changes(2))
    assert failures == [] and second.recipients == 2 and second.staleRemoved == 0
    assert second.topicsQueried == 1  # the stale connection's bucket, bumped and forgotten
    assert calls.counts.get("Query") == 1


def test_the_cache_keeps_at_most_its_bound_and_forgets_the_least_recently_used() -> None:
    def subs(n: int) -> list[Any]:
        return [subscription_of({"sk": {"S": f"c{i} s"}}) for i in range(n)]

    cache = broadcaster_module.SubscriptionCache(limit=5)
    cache.put("a", 1, subs(2))
    cache.put("b", 1, subs(2))
    assert cache.get("a", 1) is not None  # a is now the most recently used
    cache.put("c", 1, subs(2))  # 6 > 5: b, the least recently used, goes
    assert ("a" in cache, "b" in cache, "c" in cache) == (True, False, True)
    assert cache.size == 4 and cache.get("a", 2) is None  # another version: not served
    cache.put("a", 2, subs(3))  # replaces a: 5
    assert cache.size == 5 and cache.get("a", 2) is not None and cache.get("a", 1) is None
    cache.put("huge", 1, subs(6))  # more than the bound alone: never kept
    assert "huge" not in cache and cache.size == 5
    cache.forget(["a", "nothing"])
    assert cache.size == 2 and len(cache) == 1
    assert broadcaster_module.MAX_CACHED_SUBSCRIPTIONS == 200_000


def test_a_broadcaster_past_its_cache_bound_reads_the_evicted_topics_again(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    b = make(management_api, tables)
    b.cache = broadcaster_module.SubscriptionCache(limit=1)  # one subscription in all
    run(b, changes(1))
    failures, second = run(b, changes(2))
    buckets = {topic_for(cid, None) for cid in two_clients}
    assert failures == [] and second.delivered == 2 and b.cache.size <= 1
    assert second.topicsQueried + second.topicsCached == 2 + BUCKETS
    if len(buckets) == 2:  # A= and B= on two buckets: at most one of them stays cached
        assert second.topicsQueried >= 1
    else:  # one bucket holding both: more than the bound, never cached
        assert second.topicsQueried >= 1 and b.cache.get(buckets.pop(), 1) is None


# --- 410 Gone: the record and the subscriptions go ------------------------------------------


def test_stale_connection_loses_its_record_and_subscriptions_and_others_still_receive(
    management_api: FakeManagementApi, tables: Any, connections_table: str, two_clients: list[str]
) -> None:
    add_connection(tables, "stale=", "user-1")  # a record and subscriptions, but no socket
    subscribe(tables, "stale=", "s1")
    subscribe(tables, "stale=", "s2", key={"PK": "EVENT#123"})
    subscribe(tables, "stale=", "s3", key={"PK": "EVENT#999"})  # not touched by the record
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"])
    assert failures == [] and (stats.staleRemoved, stats.staleKept) == (1, 0)
    assert stats.subscriptionsRemoved == 3
    assert connection_ids(tables, connections_table) == {"A=", "B="}
    assert stored_subscriptions(tables) == ["A= s1", "B= s1"]
    assert all(len(management_api.messages(cid)) == 3 for cid in two_clients)
    assert management_api.state.requests == 6 + 1  # the stale one is not tried again in the batch


def test_a_410_for_a_connection_that_just_connected_keeps_its_record_and_subscriptions(
    management_api: FakeManagementApi, tables: Any, connections_table: str, two_clients: list[str]
) -> None:
    add_connection(tables, "Young0000000000=", "u", age=0)
    subscribe(tables, "Young0000000000=", "s1")
    add_connection(tables, "Old0000000000000=", "u", age=3600)
    subscribe(tables, "Old0000000000000=", "s1")
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"][:1])
    assert failures == []
    remaining = connection_ids(tables, connections_table)
    assert "Young0000000000=" in remaining and "Old0000000000000=" not in remaining
    assert stored_subscriptions(tables) == ["A= s1", "B= s1", "Young0000000000= s1"]
    assert (stats.staleRemoved, stats.staleKept) == (1, 1)  # both answered 410


def test_a_410_removes_orphan_subscriptions_whose_record_is_already_gone(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    """A $disconnect that crashed between deleting the record and its subscriptions."""
    add_connection(tables, "crashed=")
    subscribe(tables, "crashed=", "s1", key={"PK": "EVENT#123"})
    tables.delete_item(TableName="connections-test", Key={"connectionId": {"S": "crashed="}})
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"][:1])
    assert failures == [] and (stats.staleRemoved, stats.subscriptionsRemoved) == (1, 1)
    assert stored_subscriptions(tables) == ["A= s1", "B= s1"]


def test_a_stale_record_that_cannot_be_deleted_is_counted_as_kept(
    management_api: FakeManagementApi,
    tables: Any,
    connections_table: str,
    two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_connection(tables, "stale=", "user-1")
    subscribe(tables, "stale=", "s1")

    def refuse(params: dict[str, Any], **_: Any) -> None:
        raise RuntimeError("DeleteItem unavailable")

    tables.meta.events.register("provide-client-params.dynamodb.DeleteItem", refuse)
    try:
        with caplog.at_level(logging.WARNING):
            failures, stats = run(
                make(management_api, tables), load_event("stream_batch")["Records"][:1]
            )
    finally:
        tables.meta.events.unregister("provide-client-params.dynamodb.DeleteItem", refuse)
    assert failures == [] and (stats.staleRemoved, stats.staleKept, stats.delivered) == (0, 1, 2)
    assert "stale=" in connection_ids(tables, connections_table)  # its ttl removes it later
    assert any("could not remove" in r.getMessage() for r in caplog.records)


def test_remove_stale_connection_deletes_listed_and_known_subscriptions(tables: Any) -> None:
    add_connection(tables, "c=")
    subscribe(tables, "c=", "s1")
    subscribe(tables, "c=", "s2", key={"PK": "EVENT#1"})
    orphan = topic_for("c=", {"PK": "EVENT#2"})  # on a topic, missing from the record's map
    tables.put_item(TableName=SUBSCRIPTIONS, Item={"topic": {"S": orphan}, "sk": {"S": "c= s9"}})
    cutoff = iso_utc(time.time() - 30)
    removal = store.remove_stale_connection(
        tables, connections_table="connections-test", subscriptions_table=SUBSCRIPTIONS,
        connection_id="c=", connected_before=cutoff, known=[("s9", orphan)],
    )  # fmt: skip
    assert removal == store.StaleRemoval(True, 3, 0)
    assert stored_subscriptions(tables) == []
    again = store.remove_stale_connection(
        tables, connections_table="connections-test", subscriptions_table=SUBSCRIPTIONS,
        connection_id="c=", connected_before=cutoff,
    )  # fmt: skip
    assert again == store.StaleRemoval(True, 0, 0)  # idempotent


def test_remove_stale_connection_keeps_a_young_record_and_its_subscriptions(tables: Any) -> None:
    add_connection(tables, "young=", age=0)
    subscribe(tables, "young=", "s1")
    removal = store.remove_stale_connection(
        tables, connections_table="connections-test", subscriptions_table=SUBSCRIPTIONS,
        connection_id="young=", connected_before=iso_utc(time.time() - 30),
        known=[("s1", topic_for("young=", None))],
    )  # fmt: skip
    assert removal == store.StaleRemoval(False, 0, 0)
    assert stored_subscriptions(tables) == ["young= s1"]
    assert store.read_connection(tables, "connections-test", "young=").subs


# --- retries, failures, order --------------------------------------------------------------


def test_throttled_posts_are_retried_and_delivered(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    management_api.script("A=", 429, 500)
    failures, stats = run(make(management_api, tables), load_event("stream_batch")["Records"][:1])
    assert failures == [] and stats.retried == 2 and stats.delivered == 2


def test_undeliverable_record_is_reported_and_nothing_after_it_is_sent(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    b = make(management_api, tables, send_max_attempts=2)
    records = load_event("stream_batch")["Records"]
    management_api.state.scripted["A="] = []  # first record delivers normally
    first_failures, _ = run(b, records[:1])
    assert first_failures == []
    management_api.script("A=", 500, 500)  # the next record fails for A= on both tries
    failures, stats = run(b, records[1:])
    assert failures == [{"itemIdentifier": SEQ[1]}]
    assert stats.recordsFailed == 1 and stats.failedCodes == {"InternalServerErrorException": 1}
    assert [m["action"] for m in management_api.messages("B=")] == ["created", "updated"]
    assert [m["action"] for m in management_api.messages("A=")] == ["created"]


def test_a_failing_topic_query_reports_the_record_and_sends_nothing_after_it(
    management_api: FakeManagementApi,
    tables: Any,
    two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = load_event("stream_batch")["Records"]
    records[1]["dynamodb"]["Keys"]["PK"] = records[1]["dynamodb"]["NewImage"]["PK"] = {"S": "X"}
    partition = topic_for("-", {"PK": "X"})
    client_on(management_api, tables, "X=", key={"PK": "X"})  # subscribed: it is queried

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if params["ExpressionAttributeValues"][":topic"]["S"] == partition:
            raise RuntimeError("Query unavailable")

    tables.meta.events.register("provide-client-params.dynamodb.Query", refuse)
    try:
        with caplog.at_level(logging.ERROR):
            failures, stats = run(make(management_api, tables), records)
    finally:
        tables.meta.events.unregister("provide-client-params.dynamodb.Query", refuse)
    assert failures == [{"itemIdentifier": SEQ[1]}] and stats.malformed == 0
    assert [m["action"] for m in management_api.messages("A=")] == ["created"]
    assert any("could not deliver" in r.getMessage() for r in caplog.records)


def test_an_unreadable_subscription_is_skipped_and_logged_others_receive(
    management_api: FakeManagementApi,
    tables: Any,
    two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = topic_for("A=", None)
    tables.put_item(TableName=SUBSCRIPTIONS, Item={"topic": {"S": topic}, "sk": {"S": "bad"},
                                                   "filter": {"S": "{not json"}})  # fmt: skip
    with caplog.at_level(logging.ERROR):
        failures, stats = run(
            make(management_api, tables), load_event("stream_batch")["Records"][:1]
        )
    assert failures == [] and stats.delivered == 2 and stats.skippedSubscriptions == 1
    assert any("unreadable subscription" in r.getMessage() for r in caplog.records)


def test_malformed_record_is_reported_logged_and_blocks_nothing_before_it(
    management_api: FakeManagementApi,
    tables: Any,
    two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = load_event("stream_batch")["Records"]
    records[1]["dynamodb"]["NewImage"]["bad"] = {"XX": "?"}
    with caplog.at_level(logging.ERROR):
        failures, stats = run(make(management_api, tables), records)
    assert failures == [{"itemIdentifier": SEQ[1]}] and stats.malformed == 1
    assert [m["action"] for m in management_api.messages("A=")] == ["created"]
    (logged,) = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert logged.sequence == SEQ[1] and logged.record == records[1]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "breakage",
    [
        lambda r: r.update(eventName="UPSERT"),
        lambda r: r.pop("dynamodb"),
        lambda r: r.update(eventSourceARN="arn:aws:sqs:us-east-1:1:queue"),
        lambda r: r["dynamodb"].pop("NewImage"),
        lambda r: r["dynamodb"]["Keys"].pop("SK"),
        lambda r: r["dynamodb"]["Keys"].update(PK={"N": "1"}),
        lambda r: r["dynamodb"].update(OldImage=["not", "an", "image"]),
    ],
    ids=["event-name", "no-dynamodb", "not-a-stream", "no-new-image", "key-missing",
         "key-type", "old-image-not-object"],
)  # fmt: skip
def test_each_kind_of_malformed_record_is_refused(breakage: Any) -> None:
    record = load_event("stream_batch")["Records"][0]
    breakage(record)
    with pytest.raises(MalformedRecord):
        read_record(record, now=0, sources=SOURCES, buckets=BUCKETS)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda r: r["dynamodb"]["NewImage"].update(chunks={"BS": ["not base64!"]}),
        lambda r: r.update(eventName=["INSERT"]),
        lambda r: r["dynamodb"].update(ApproximateCreationDateTime=1e300),
    ],
    ids=["bad-binary-set", "unhashable-event-name", "absurd-timestamp"],
)
def test_any_record_that_cannot_become_a_message_is_reported_not_raised(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str], breakage: Any
) -> None:
    records = load_event("stream_batch")["Records"]
    breakage(records[1])
    failures, stats = run(make(management_api, tables), records)
    assert failures == [{"itemIdentifier": SEQ[1]}] and stats.malformed == 1
    assert [m["action"] for m in management_api.messages("A=")] == ["created"]


def test_malformed_record_is_reported_even_when_nobody_subscribed(
    management_api: FakeManagementApi, tables: Any
) -> None:
    records = load_event("stream_batch")["Records"]
    records[0]["dynamodb"]["NewImage"]["bad"] = {"XX": "?"}
    failures, stats = run(make(management_api, tables), records)
    assert failures == [{"itemIdentifier": SEQ[0]}] and stats.malformed == 1


def test_message_names_its_source_by_label_not_by_physical_table(
    management_api: FakeManagementApi, tables: Any
) -> None:
    client_on(management_api, tables, "orders=", label="orders")
    client_on(management_api, tables, "audit=", label="audit")
    record = load_event("stream_batch")["Records"][0]
    assert f":table/{SOURCE_TABLE}/stream/" in record["eventSourceARN"]
    sources = {
        label: dataclasses.replace(SOURCES[SOURCE_LABEL], label=label, table=table)
        for label, table in (("audit", "audit-1"), ("orders", SOURCE_TABLE))
    }
    failures, _ = run(make(management_api, tables, sources=sources), [record])
    assert failures == []
    (message,) = management_api.messages("orders=")
    assert message["table"] == "orders"
    assert management_api.messages("audit=") == []


def test_record_from_a_table_not_in_sources_is_reported_not_delivered(
    management_api: FakeManagementApi,
    tables: Any,
    two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = load_event("stream_batch")["Records"]
    records[1]["eventSourceARN"] = records[1]["eventSourceARN"].replace(SOURCE_TABLE, "stranger-1")
    with caplog.at_level(logging.ERROR):
        failures, stats = run(make(management_api, tables), records)
    assert failures == [{"itemIdentifier": SEQ[1]}] and stats.malformed == 1
    assert [m["action"] for m in management_api.messages("A=")] == ["created"]
    (logged,) = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert "'stranger-1'" in logged.reason and "SOURCES" in logged.reason  # type: ignore[attr-defined]


def test_record_without_sequence_number_fails_the_whole_batch(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    failures, _ = run(make(management_api, tables), [{"eventName": "INSERT"}])
    assert failures == [{"itemIdentifier": ""}]  # Lambda retries the whole batch


def test_out_of_time_reports_the_first_unsent_record(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    b = make(management_api, tables)
    failures, _ = b.run(load_event("stream_batch")["Records"], deadline=b.clock() - 1)
    assert failures == [{"itemIdentifier": SEQ[0]}]
    assert management_api.state.requests == 0


def test_records_read_from_a_real_moto_stream(
    management_api: FakeManagementApi, tables: Any, two_clients: list[str]
) -> None:
    """boto3 hands binary as bytes and times as datetimes: the broadcaster takes both."""
    tables.create_table(
        TableName=SOURCE_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"},
                              {"AttributeName": "SK", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"},
                   {"AttributeName": "SK", "KeyType": "RANGE"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )  # fmt: skip
    key = {"PK": {"S": "k"}, "SK": {"S": "s"}}
    arn = tables.describe_table(TableName=SOURCE_TABLE)["Table"]["LatestStreamArn"]
    tables.put_item(TableName=SOURCE_TABLE, Item={**key, "b": {"B": b"\x01"}})
    tables.update_item(
        TableName=SOURCE_TABLE,
        Key=key,
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "2"}},
    )
    tables.delete_item(TableName=SOURCE_TABLE, Key=key)
    streams = aws.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    for record in records:
        record["eventSourceARN"] = arn
    failures, _ = run(make(management_api, tables), records)
    assert failures == []
    messages = management_api.messages("A=")
    assert [m["action"] for m in messages] == ["created", "updated", "deleted"]
    assert messages[0]["data"] == {"PK": "k", "SK": "s", "b": "AQ=="}
    assert messages[1]["data"] == {"PK": "k", "SK": "s", "b": "AQ==", "n": 2}
    assert [m["matches"]["s1"] for m in messages] == ["added", "modified", "removed"]
    assert messages[0]["timestamp"].endswith("Z")
    assert {m["table"] for m in messages} == {SOURCE_LABEL}


# --- the handler: partial batch response, log line and metrics -----------------------------


def test_handler_returns_partial_batch_response_and_logs_counts(
    management_api: FakeManagementApi,
    tables: Any,
    two_clients: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(broadcaster_module, "_broadcaster", make(management_api, tables))
    management_api.script("B=", 429)
    with caplog.at_level(logging.INFO):
        answer = handler(load_event("stream_batch"), FakeContext(function_name="bc"))
    assert answer == {"batchItemFailures": []}
    (summary,) = [r for r in caplog.records if r.getMessage() == "batch"]
    counts = {
        k: getattr(summary, k)
        for k in (
            "delivered",
            "retried",
            "staleRemoved",
            "failed",
            "recipients",
            "topicsQueried",
            "subscriptionsRead",
        )
    }
    assert counts == {
        "delivered": 6,
        "retried": 1,
        "staleRemoved": 0,
        "failed": 0,
        "recipients": 6,
        "topicsQueried": 2 + BUCKETS,  # the item, its partition, the buckets: once each
        "subscriptionsRead": 2,
    }
    assert summary.fanoutMs > 0  # type: ignore[attr-defined]
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["FunctionName"]] and emf["FunctionName"] == "bc"
    names = {m["Name"] for m in directive["Metrics"]}
    assert {
        "Delivered",
        "StaleRemoved",
        "Retried",
        "Failed",
        "FanoutTime",
        "TopicsQueried",
        "TopicsCached",
        "SubscriptionsRead",
        "SubscriptionsRemoved",
        "Unheard",
    } <= names
    assert (emf["Delivered"], emf["Retried"], emf["Failed"]) == (6, 1, 0)
    queried = 2 + BUCKETS  # the item, its partition, the buckets: once each
    assert (emf["TopicsQueried"], emf["TopicsCached"], emf["SubscriptionsRead"]) == (queried, 0, 2)


def test_handler_reports_failures_from_the_batch(
    management_api: FakeManagementApi,
    tables: Any,
    two_clients: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broadcaster_module, "_broadcaster", make(management_api, tables))
    management_api.script("A=", 403)
    answer = handler(load_event("stream_batch"), FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": SEQ[0]}]}


def test_handler_logs_and_emits_stale_untargeted_and_unheard_counts(
    management_api: FakeManagementApi,
    tables: Any,
    two_clients: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for cid, age in (("Young0000000000=", 0), ("Old0000000000000=", 3600)):  # both answer 410
        add_connection(tables, cid, "user-1", age=age)
        subscribe(tables, cid, "s1")
    records = load_event("stream_batch")["Records"]
    nobody = copy.deepcopy(records[0])
    for image in ("NewImage", "OldImage"):
        nobody["dynamodb"].get(image, {}).pop("owner", None)  # names no user: sent to no one
    unheard = stream("INSERT", "9", new={"owner": "user-3"})  # user-3 has no subscription
    event = {"Records": [records[0], nobody, unheard]}
    worker = make(management_api, tables, target_attribute="owner")
    monkeypatch.setattr(broadcaster_module, "_broadcaster", worker)
    with caplog.at_level(logging.INFO):
        answer = handler(event, FakeContext(function_name="bc"))
    assert answer == {"batchItemFailures": []}
    (summary,) = [r for r in caplog.records if r.getMessage() == "batch"]
    keys = ("staleRemoved", "staleKept", "untargeted", "unheard", "subscriptionsRemoved")
    counts = {k: getattr(summary, k) for k in keys}
    assert counts == {"staleRemoved": 1, "staleKept": 1, "untargeted": 1, "unheard": 1,
                      "subscriptionsRemoved": 1}  # fmt: skip
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"StaleRemoved", "StaleKept", "Untargeted", "Unheard"} <= names
    assert (emf["StaleRemoved"], emf["StaleKept"], emf["Untargeted"]) == (1, 1, 1)


@pytest.mark.slow
def test_recipient_benchmark_reads_the_same_few_items_at_any_size() -> None:
    """``python -m bench.recipients`` (``make bench``) at small sizes: it runs and holds."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "bench.recipients", "--sizes", "300,1500", "--min-ratio", "100"],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 125x fewer items read than the v1 scan at 1,500 connections (12 vs 1,500)" in (
        done.stdout
    )


@pytest.mark.parametrize(
    ("memory", "limit"),
    [("1769", broadcaster_module.MAX_CACHED_SUBSCRIPTIONS), ("128", 52_428), ("", 200_000),
     ("junk", 200_000), ("1", 1000)],
)  # fmt: skip
def test_the_cache_takes_at_most_a_quarter_of_the_functions_memory(memory: str, limit: int) -> None:
    assert broadcaster_module.cache_limit({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory}) == limit
