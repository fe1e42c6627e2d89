"""The subscription index in moto: transactions with the connection record, limits, cleanup."""

from __future__ import annotations

from typing import Any

import pytest

from handlers import subscriptions as store
from handlers.recipients import subscription_of
from handlers.subscriptions import Connection, ConnectionGone, TooManySubscriptions
from tests.helpers import create_subscriptions_table, subscription_items, topic_version

CONNECTIONS = "connections-test"
SUBSCRIPTIONS = "subscriptions-test"


@pytest.fixture
def tables(dynamodb: Any, connections_table: str) -> Any:
    create_subscriptions_table(dynamodb, SUBSCRIPTIONS)
    return dynamodb


def connect(client: Any, connection_id: str, user: str | None = "alice") -> None:
    item: dict[str, Any] = {
        "connectionId": {"S": connection_id},
        "ttl": {"N": "4102444800"},
        "subs": {"M": {}},
    }
    if user:
        item["userId"] = {"S": user}
    client.put_item(TableName=CONNECTIONS, Item=item)


def subscribe(client: Any, connection_id: str, sub_id: str, topic: str, limit: int = 3) -> Any:
    def build(connection: Connection) -> tuple[str, dict[str, Any]]:
        return topic, store.subscription_item(connection, sub_id, topic, "events", None, None)

    return store.put_subscription(
        client,
        connections_table=CONNECTIONS,
        subscriptions_table=SUBSCRIPTIONS,
        connection_id=connection_id,
        sub_id=sub_id,
        build=build,
        limit=limit,
    )


def on_topic(client: Any, topic: str) -> list[str]:
    return [i["sk"]["S"] for i in store.topic_subscriptions(client, SUBSCRIPTIONS, topic)]


def version(client: Any, topic: str) -> int:
    return topic_version(client, SUBSCRIPTIONS, topic)


def all_subscriptions(client: Any) -> list[str]:
    return sorted(i["sk"]["S"] for i in subscription_items(client, SUBSCRIPTIONS))


def test_subscribe_stores_the_item_and_the_map_entry(tables: Any) -> None:
    connect(tables, "c1")
    connection = subscribe(tables, "c1", "s1", "P|1:e|S1:a")
    assert connection.user_id == "alice"
    assert on_topic(tables, "P|1:e|S1:a") == ["c1 s1"]
    (item,) = subscription_items(tables, SUBSCRIPTIONS)
    assert item["userId"] == {"S": "alice"} and item["ttl"] == {"N": "4102444800"}
    assert store.read_connection(tables, CONNECTIONS, "c1").subs == {"s1": "P|1:e|S1:a"}


def test_subscribing_again_with_the_same_id_replaces_it(tables: Any) -> None:
    connect(tables, "c1")
    subscribe(tables, "c1", "s1", "P|1:e|S1:a")
    subscribe(tables, "c1", "s1", "P|1:e|S1:b")
    assert all_subscriptions(tables) == ["c1 s1"]
    assert on_topic(tables, "P|1:e|S1:b") == ["c1 s1"]
    subscribe(tables, "c1", "s1", "P|1:e|S1:b")  # same topic again: still one
    assert all_subscriptions(tables) == ["c1 s1"]


def test_the_limit_holds_and_a_replacement_does_not_count(tables: Any) -> None:
    connect(tables, "c1")
    for number in range(3):
        subscribe(tables, "c1", f"s{number}", f"T|1:e|{number}")
    with pytest.raises(TooManySubscriptions):
        subscribe(tables, "c1", "s9", "T|1:e|0")
    subscribe(tables, "c1", "s0", "T|1:e|1")
    assert len(all_subscriptions(tables)) == 3


def test_no_subscription_is_stored_for_a_connection_that_is_gone(tables: Any) -> None:
    with pytest.raises(ConnectionGone):
        subscribe(tables, "never-connected", "s1", "T|1:e|0")
    connect(tables, "c1")
    tables.delete_item(TableName=CONNECTIONS, Key={"connectionId": {"S": "c1"}})
    with pytest.raises(ConnectionGone):
        subscribe(tables, "c1", "s1", "T|1:e|0")
    assert all_subscriptions(tables) == []


def test_a_record_deleted_between_the_read_and_the_write_stores_nothing(tables: Any) -> None:
    connect(tables, "c1")

    def build(connection: Connection) -> tuple[str, dict[str, Any]]:
        # $disconnect runs right after the record was read, before the transaction
        tables.delete_item(TableName=CONNECTIONS, Key={"connectionId": {"S": "c1"}})
        return "T|1:e|0", store.subscription_item(connection, "s1", "T|1:e|0", "e", None, None)

    with pytest.raises(ConnectionGone):
        store.put_subscription(
            tables,
            connections_table=CONNECTIONS,
            subscriptions_table=SUBSCRIPTIONS,
            connection_id="c1",
            sub_id="s1",
            build=build,
            limit=3,
        )
    assert all_subscriptions(tables) == []
    assert version(tables, "T|1:e|0") == 0  # a cancelled transaction bumps nothing


def test_unsubscribe_removes_both_and_is_false_for_unknown_ids(tables: Any) -> None:
    connect(tables, "c1")
    subscribe(tables, "c1", "s1", "T|1:e|0")
    kwargs = {"connections_table": CONNECTIONS, "subscriptions_table": SUBSCRIPTIONS}
    assert store.delete_subscription(tables, connection_id="c1", sub_id="s1", **kwargs)
    assert all_subscriptions(tables) == []
    assert store.read_connection(tables, CONNECTIONS, "c1").subs == {}
    assert not store.delete_subscription(tables, connection_id="c1", sub_id="s1", **kwargs)
    assert not store.delete_subscription(tables, connection_id="gone", sub_id="s1", **kwargs)


def test_remove_connection_takes_every_subscription_with_it(tables: Any) -> None:
    connect(tables, "c1")
    connect(tables, "c2")
    for number in range(3):
        subscribe(tables, "c1", f"s{number}", f"T|1:e|{number}")
    subscribe(tables, "c2", "s0", "T|1:e|0")
    kwargs = {"connections_table": CONNECTIONS, "subscriptions_table": SUBSCRIPTIONS}
    assert store.remove_connection(tables, connection_id="c1", **kwargs) == 3
    assert all_subscriptions(tables) == ["c2 s0"]
    assert store.remove_connection(tables, connection_id="c1", **kwargs) == 0


def test_topic_queries_read_every_page(tables: Any) -> None:
    for number in range(30):
        connect(tables, f"c{number:02}")
        subscribe(tables, f"c{number:02}", "s", "T|1:e|0")
    pages: list[int] = []
    real_query = tables.query

    def small_pages(**request: Any) -> Any:
        answer = real_query(Limit=7, **request)
        pages.append(len(answer["Items"]))
        return answer

    class Client:
        query = staticmethod(small_pages)

    found = [
        subscription_of(i).connection_id
        for i in store.topic_subscriptions(Client, SUBSCRIPTIONS, "T|1:e|0")
    ]
    assert sorted(found) == [f"c{number:02}" for number in range(30)]
    assert len(pages) >= 5


def test_topic_queries_read_only_what_recipients_need_and_lose_nothing_of_it(
    tables: Any,
) -> None:
    """The broadcaster's Query projects sk, filter, fields and userId: the subscription it
    reads back is the one stored whole, ids with spaces and every optional field included."""
    topic = "T|1:e|0"
    ttl = 4102444800
    stored = [
        store.subscription_item(
            Connection("L0SM9cOFvHcCIhw=", "alice", None, ttl, {}),
            "orders paid  ",
            topic,
            "events",
            '[{"status": {"in": ["new", "paid"]}, "n": {"ge": 12345678901234567890.5}}]',
            ["status", "total"],
        ),
        store.subscription_item(
            Connection("c2", None, None, None, {}), "s", topic, "events", None, None
        ),
        store.subscription_item(
            Connection("c3", "bob", None, ttl, {}), "x y", topic, "events", None, []
        ),
    ]
    for item in stored:
        tables.put_item(TableName=SUBSCRIPTIONS, Item=item)
    read = list(store.topic_subscriptions(tables, SUBSCRIPTIONS, topic))
    assert {name for item in read for name in item} == {"sk", "filter", "fields", "userId"}
    assert sorted(map(subscription_of, read), key=repr) == sorted(
        map(subscription_of, stored), key=repr
    )
    (first,) = [s for s in map(subscription_of, read) if s.connection_id == "L0SM9cOFvHcCIhw="]
    assert first.sub_id == "orders paid  " and first.user_id == "alice"
    assert first.fields == frozenset({"status", "total"}) and first.filter


@pytest.mark.parametrize("sk", ["nospace", " s1", "c1 ", ""])
def test_a_sort_key_without_both_ids_is_refused(sk: str) -> None:
    with pytest.raises(ValueError, match="not a subscription sort key"):
        store.split_sort_key(sk)
    with pytest.raises(ValueError):
        subscription_of({"sk": {"S": sk}})


def test_delete_items_retries_unprocessed_and_counts_what_is_left() -> None:
    calls: list[int] = []

    class Flaky:
        def batch_write_item(self, RequestItems: Any) -> Any:
            (requests,) = RequestItems.values()
            calls.append(len(requests))
            if len(calls) == 1:
                return {"UnprocessedItems": {"t": requests[:2]}}
            if len(calls) >= 3:
                return {"UnprocessedItems": {"t": requests[:1]}}
            return {}

    keys = [{"topic": {"S": "x"}, "sk": {"S": str(n)}} for n in range(27)]
    assert store.delete_items(Flaky(), "t", keys) == 1
    assert calls == [25, 2, 2, 1, 1, 1, 1]


# -- version items ----------------------------------------------------------------------------

KWARGS = {"connections_table": CONNECTIONS, "subscriptions_table": SUBSCRIPTIONS}


def test_the_version_sort_key_is_no_subscriptions() -> None:
    assert " " not in store.VERSION_SK  # every sort_key holds one
    with pytest.raises(ValueError, match="not a subscription sort key"):
        store.split_sort_key(store.VERSION_SK)


def test_each_subscribe_bumps_its_topics_version_in_the_same_transaction(tables: Any) -> None:
    connect(tables, "c1")
    connect(tables, "c2")
    assert version(tables, "T|1:e|0") == 0
    subscribe(tables, "c1", "s1", "T|1:e|0")
    assert version(tables, "T|1:e|0") == 1
    subscribe(tables, "c2", "s1", "T|1:e|0")
    subscribe(tables, "c1", "s1", "T|1:e|0")  # replaced (its filter or fields may differ)
    assert version(tables, "T|1:e|0") == 3
    subscribe(tables, "c1", "s1", "P|1:e|S1:a")  # moved: both topics changed
    assert (version(tables, "T|1:e|0"), version(tables, "P|1:e|S1:a")) == (4, 1)
    assert version(tables, "T|1:e|1") == 0  # other topics untouched


def test_a_refused_subscribe_bumps_nothing(tables: Any) -> None:
    with pytest.raises(ConnectionGone):
        subscribe(tables, "never-connected", "s1", "T|1:e|0")
    connect(tables, "c1")
    for number in range(3):
        subscribe(tables, "c1", f"s{number}", f"T|1:e|{number}")
    with pytest.raises(TooManySubscriptions):
        subscribe(tables, "c1", "s9", "T|1:e|9")
    assert version(tables, "T|1:e|9") == 0


def test_a_subscribe_whose_condition_fails_for_good_bumps_nothing(
    tables: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    connect(tables, "c1")
    real = store.read_connection

    def stale_read(client: Any, table: str, connection_id: str) -> Connection:
        # every read returns a map that no longer matches the record: each write is refused
        connection = real(client, table, connection_id)
        return Connection(connection_id, connection.user_id, None, connection.ttl, {"x": "y"})

    monkeypatch.setattr(store, "read_connection", stale_read)
    with pytest.raises(store.SubscriptionConflict):
        subscribe(tables, "c1", "x", "T|1:e|0")
    assert version(tables, "T|1:e|0") == 0 and version(tables, "y") == 0
    assert all_subscriptions(tables) == []


def test_unsubscribe_bumps_and_an_unknown_id_does_not(tables: Any) -> None:
    connect(tables, "c1")
    subscribe(tables, "c1", "s1", "T|1:e|0")
    assert store.delete_subscription(tables, connection_id="c1", sub_id="s1", **KWARGS)
    assert version(tables, "T|1:e|0") == 2
    assert not store.delete_subscription(tables, connection_id="c1", sub_id="s1", **KWARGS)
    assert version(tables, "T|1:e|0") == 2


def test_remove_connection_bumps_every_topic_it_left_and_keeps_the_version_items(
    tables: Any,
) -> None:
    connect(tables, "c1")
    connect(tables, "c2")
    for number in range(3):
        subscribe(tables, "c1", f"s{number}", f"T|1:e|{number}")
    subscribe(tables, "c2", "s0", "T|1:e|0")
    assert store.remove_connection(tables, connection_id="c1", **KWARGS) == 3
    assert [version(tables, f"T|1:e|{n}") for n in range(3)] == [3, 2, 2]
    assert all_subscriptions(tables) == ["c2 s0"]
    assert store.remove_connection(tables, connection_id="c1", **KWARGS) == 0  # nothing left
    assert [version(tables, f"T|1:e|{n}") for n in range(3)] == [3, 2, 2]


def test_remove_connection_bumps_after_deleting(tables: Any) -> None:
    connect(tables, "c1")
    subscribe(tables, "c1", "s1", "T|1:e|0")
    seen: list[tuple[int, list[str]]] = []
    real_update = tables.update_item

    class Watching:
        exceptions = tables.exceptions
        delete_item = staticmethod(tables.delete_item)
        batch_write_item = staticmethod(tables.batch_write_item)

        @staticmethod
        def update_item(**request: Any) -> Any:
            seen.append((version(tables, "T|1:e|0"), all_subscriptions(tables)))
            return real_update(**request)

    store.remove_connection(Watching, connection_id="c1", **KWARGS)
    assert seen == [(1, [])]  # the subscription was gone when the version moved


def test_a_failed_bump_is_raised_after_the_other_topics_are_bumped(tables: Any) -> None:
    calls: list[str] = []
    real_update = tables.update_item

    class Failing:
        @staticmethod
        def update_item(**request: Any) -> Any:
            calls.append(request["Key"]["topic"]["S"])
            if request["Key"]["topic"]["S"] == "a":
                raise RuntimeError("throttled")
            return real_update(**request)

    with pytest.raises(RuntimeError, match="throttled"):
        store.bump_versions(Failing, SUBSCRIPTIONS, ["b", "a", "c", "a"])
    assert calls == ["a", "b", "c"]
    assert [version(tables, t) for t in "abc"] == [0, 1, 1]


def test_remove_stale_connection_bumps_only_when_it_removed(tables: Any) -> None:
    connect(tables, "c1")
    subscribe(tables, "c1", "s1", "T|1:e|0")
    kept = store.remove_stale_connection(
        tables, connection_id="c1", connected_before="2000-01-01T00:00:00Z", **KWARGS
    )
    assert kept.record_removed  # no connectedAt: removed
    assert version(tables, "T|1:e|0") == 2
    # an orphan known from a topic, its record already gone: removed and bumped
    tables.put_item(
        TableName=SUBSCRIPTIONS,
        Item=store.subscription_item(
            Connection("c9", None, None, None, {}), "s", "P|1:e|S1:a", "e", None, None
        ),
    )
    store.remove_stale_connection(
        tables,
        connection_id="c9",
        connected_before="2000-01-01T00:00:00Z",
        known=[("s", "P|1:e|S1:a")],
        **KWARGS,
    )
    assert version(tables, "P|1:e|S1:a") == 1 and all_subscriptions(tables) == []
    tables.put_item(
        TableName=CONNECTIONS,
        Item={
            "connectionId": {"S": "young"},
            "connectedAt": {"S": "2030-01-01T00:00:00Z"},
            "subs": {"M": {"s": {"S": "T|1:e|0"}}},
        },
    )
    young = store.remove_stale_connection(
        tables, connection_id="young", connected_before="2000-01-01T00:00:00Z", **KWARGS
    )
    assert not young.record_removed and version(tables, "T|1:e|0") == 2


def test_extend_connection_bumps_each_kept_subscriptions_topic(tables: Any) -> None:
    connect(tables, "c1")
    subscribe(tables, "c1", "s1", "T|1:e|0")
    subscribe(tables, "c1", "s2", "P|1:e|S1:a")
    connection = store.read_connection(tables, CONNECTIONS, "c1")
    store.extend_connection(
        tables,
        connection=connection,
        expires_at=4_000_000_000,
        claims="{}",
        kept={"s1": ("T|1:e|0", ["a"]), "s2": ("P|1:e|S1:a", None), "s3": ("T|1:e|3", None)},
        **KWARGS,
    )
    assert (version(tables, "T|1:e|0"), version(tables, "P|1:e|S1:a")) == (2, 2)
    assert version(tables, "T|1:e|3") == 0  # no such subscription: no bump, no item
    items = {i["subId"]["S"]: i for i in subscription_items(tables, SUBSCRIPTIONS)}
    assert items["s1"]["expiresAt"] == {"N": "4000000000"} and items["s1"]["fields"]
    assert sorted(items) == ["s1", "s2"]


def test_readers_never_return_the_version_item(tables: Any) -> None:
    connect(tables, "c1")
    subscribe(tables, "c1", "s1", "T|1:e|0")
    assert version(tables, "T|1:e|0") == 1  # it is there
    assert on_topic(tables, "T|1:e|0") == ["c1 s1"]
    assert list(store.connection_subscriptions(tables, SUBSCRIPTIONS, "c1", {"s1": "T|1:e|0"})) == [
        "s1"
    ]
    store.delete_subscription(tables, connection_id="c1", sub_id="s1", **KWARGS)
    assert on_topic(tables, "T|1:e|0") == []


def test_topic_versions_reads_each_topic_once_with_zero_for_never_subscribed(
    tables: Any,
) -> None:
    connect(tables, "c1")
    subscribe(tables, "c1", "s1", "T|1:e|0")
    subscribe(tables, "c1", "s1", "T|1:e|0")
    topics = ["T|1:e|0", *(f"P|1:e|S3:{n:03}" for n in range(150)), "T|1:e|0"]
    calls: list[Any] = []
    real = tables.batch_get_item

    class Counting:
        @staticmethod
        def batch_get_item(RequestItems: Any) -> Any:
            calls.append(RequestItems[SUBSCRIPTIONS])
            return real(RequestItems=RequestItems)

    versions = store.topic_versions(Counting, SUBSCRIPTIONS, topics)
    assert versions["T|1:e|0"] == 2 and len(versions) == 151
    assert set(versions.values()) == {0, 2}
    assert [len(call["Keys"]) for call in calls] == [100, 51]
    assert all(call["ConsistentRead"] for call in calls)


def test_topic_versions_retries_unprocessed_keys_and_gives_up_on_them_as_unknown() -> None:
    calls: list[int] = []
    naps: list[float] = []

    class Throttled:
        @staticmethod
        def batch_get_item(RequestItems: Any) -> Any:
            keys = RequestItems["t"]["Keys"]
            calls.append(len(keys))
            if len(calls) == 1:  # one answered, the rest left over
                return {
                    "Responses": {"t": [{"topic": keys[0]["topic"], "version": {"N": "7"}}]},
                    "UnprocessedKeys": {"t": {**RequestItems["t"], "Keys": keys[1:]}},
                }
            if len(calls) == 2:  # one more answered (absent: version 0), one left for good
                return {"Responses": {"t": []}, "UnprocessedKeys": {"t": {"Keys": keys[1:]}}}
            return {"Responses": {"t": []}, "UnprocessedKeys": {"t": {"Keys": keys}}}

    versions = store.topic_versions(Throttled, "t", ["a", "b", "c"], attempts=4, sleep=naps.append)
    assert versions == {"a": 7, "b": 0, "c": None}
    assert calls == [3, 2, 1, 1] and len(naps) == 3
