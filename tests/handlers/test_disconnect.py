"""$disconnect: the connection's record and its subscriptions are deleted, idempotently."""

import logging
from typing import Any

import pytest

import handlers.disconnect
from handlers import subscriptions as store
from handlers.disconnect import handler
from handlers.subscriptions import Connection
from tests.helpers import (
    FakeContext,
    connection_ids,
    create_subscriptions_table,
    load_event,
    put_connection,
    subscription_items,
    topic_version,
)

CONNECTION_ID = "L0SM9cOFvHcCIhw="
SUBSCRIPTIONS = handlers.disconnect.CONFIG.subscriptions_table


@pytest.fixture
def subscriptions_table(dynamodb: Any, connections_table: str) -> str:
    create_subscriptions_table(dynamodb, SUBSCRIPTIONS)
    return SUBSCRIPTIONS


def subscribe(client: Any, connection_id: str, sub_id: str, topic: str) -> None:
    def build(connection: Connection) -> tuple[str, dict[str, Any]]:
        return topic, store.subscription_item(connection, sub_id, topic, "events", None, None)

    store.put_subscription(
        client,
        connections_table=handlers.disconnect.CONFIG.connections_table,
        subscriptions_table=SUBSCRIPTIONS,
        connection_id=connection_id,
        sub_id=sub_id,
        build=build,
        limit=50,
    )


def connect(client: Any, table: str, connection_id: str, user_id: str = "user-1") -> None:
    client.put_item(
        TableName=table,
        Item={
            "connectionId": {"S": connection_id},
            "userId": {"S": user_id},
            "ttl": {"N": "4102444800"},
            "subs": {"M": {}},
        },
    )


def stored_subscriptions(client: Any) -> list[str]:
    items = subscription_items(client, SUBSCRIPTIONS)
    return sorted(item["sk"]["S"] for item in items)


def test_disconnect_deletes_the_record(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    put_connection(dynamodb, connections_table, CONNECTION_ID, "user-1")

    answer = handler(load_event("disconnect"), lambda_context)

    assert answer["statusCode"] == 200
    assert connection_ids(dynamodb, connections_table) == set()


def test_disconnect_leaves_other_records_untouched(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    put_connection(dynamodb, connections_table, CONNECTION_ID, "user-1")
    put_connection(dynamodb, connections_table, "other-of-same-user", "user-1")
    put_connection(dynamodb, connections_table, "anonymous")
    before = dynamodb.get_item(
        TableName=connections_table, Key={"connectionId": {"S": "other-of-same-user"}}
    )["Item"]

    handler(load_event("disconnect"), lambda_context)

    assert connection_ids(dynamodb, connections_table) == {"other-of-same-user", "anonymous"}
    after = dynamodb.get_item(
        TableName=connections_table, Key={"connectionId": {"S": "other-of-same-user"}}
    )["Item"]
    assert after == before


def test_disconnect_twice_succeeds_both_times(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    put_connection(dynamodb, connections_table, CONNECTION_ID, "user-1")

    first = handler(load_event("disconnect"), lambda_context)
    second = handler(load_event("disconnect"), lambda_context)

    assert (first["statusCode"], second["statusCode"]) == (200, 200)
    assert connection_ids(dynamodb, connections_table) == set()


def test_disconnect_of_an_unknown_connection_succeeds(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    put_connection(dynamodb, connections_table, "someone-else")

    answer = handler(load_event("disconnect"), lambda_context)

    assert answer["statusCode"] == 200
    assert connection_ids(dynamodb, connections_table) == {"someone-else"}


@pytest.mark.parametrize("request_context", [{}, {"connectionId": ""}, None])
def test_missing_connection_id_is_a_400(
    dynamodb: Any,
    connections_table: str,
    lambda_context: FakeContext,
    request_context: dict[str, Any] | None,
) -> None:
    put_connection(dynamodb, connections_table, CONNECTION_ID)
    event = load_event("disconnect")
    event["requestContext"] = request_context

    answer = handler(event, lambda_context)

    assert answer["statusCode"] == 400
    assert connection_ids(dynamodb, connections_table) == {CONNECTION_ID}


def test_storage_failure_is_a_500(mocked_aws: None, lambda_context: FakeContext) -> None:
    answer = handler(load_event("disconnect"), lambda_context)  # no table was created

    assert answer["statusCode"] == 500


def test_storage_failure_is_logged_with_the_exception(
    mocked_aws: None, lambda_context: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    handler(load_event("disconnect"), lambda_context)

    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "handlers.disconnect"
    assert record.exc_info is not None
    assert "ResourceNotFoundException" in caplog.text
    assert record.connectionId == CONNECTION_ID  # type: ignore[attr-defined]


# --- subscriptions go with their connection -----------------------------------------------


def test_disconnect_removes_every_subscription_of_the_connection(
    dynamodb: Any, connections_table: str, subscriptions_table: str, lambda_context: FakeContext
) -> None:
    connect(dynamodb, connections_table, CONNECTION_ID)
    for number in range(30):  # more than one BatchWriteItem (25)
        subscribe(dynamodb, CONNECTION_ID, f"s{number}", f"P|6:events|S3:p{number % 7}")
    subscribe(dynamodb, CONNECTION_ID, "wide", "T|6:events|0")
    assert len(stored_subscriptions(dynamodb)) == 31

    answer = handler(load_event("disconnect"), lambda_context)

    assert answer["statusCode"] == 200
    assert stored_subscriptions(dynamodb) == []
    assert connection_ids(dynamodb, connections_table) == set()


def test_disconnect_leaves_other_connections_subscriptions_on_the_same_topics(
    dynamodb: Any, connections_table: str, subscriptions_table: str, lambda_context: FakeContext
) -> None:
    connect(dynamodb, connections_table, CONNECTION_ID)
    connect(dynamodb, connections_table, "other", "user-1")
    for connection_id in (CONNECTION_ID, "other"):
        subscribe(dynamodb, connection_id, "s1", "P|6:events|S3:abc")
        subscribe(dynamodb, connection_id, "s2", "T|6:events|0")

    handler(load_event("disconnect"), lambda_context)

    assert stored_subscriptions(dynamodb) == ["other s1", "other s2"]
    # two subscribes and the disconnect: a broadcaster's cached list is no longer current
    assert topic_version(dynamodb, SUBSCRIPTIONS, "P|6:events|S3:abc") == 3
    assert topic_version(dynamodb, SUBSCRIPTIONS, "T|6:events|0") == 3
    assert store.read_connection(dynamodb, connections_table, "other").subs == {
        "s1": "P|6:events|S3:abc",
        "s2": "T|6:events|0",
    }


def test_disconnect_twice_with_subscriptions_succeeds_and_leaves_none(
    dynamodb: Any, connections_table: str, subscriptions_table: str, lambda_context: FakeContext
) -> None:
    connect(dynamodb, connections_table, CONNECTION_ID)
    subscribe(dynamodb, CONNECTION_ID, "s1", "P|6:events|S3:abc")

    first = handler(load_event("disconnect"), lambda_context)
    second = handler(load_event("disconnect"), lambda_context)

    assert (first["statusCode"], second["statusCode"]) == (200, 200)
    assert stored_subscriptions(dynamodb) == []


def test_no_subscription_can_be_stored_after_the_disconnect(
    dynamodb: Any, connections_table: str, subscriptions_table: str, lambda_context: FakeContext
) -> None:
    """A subscribe that loses the race with $disconnect finds no record and stores nothing."""
    connect(dynamodb, connections_table, CONNECTION_ID)
    handler(load_event("disconnect"), lambda_context)

    with pytest.raises(store.ConnectionGone):
        subscribe(dynamodb, CONNECTION_ID, "late", "P|6:events|S3:abc")

    assert stored_subscriptions(dynamodb) == []


def test_disconnect_logs_how_many_subscriptions_went(
    dynamodb: Any,
    connections_table: str,
    subscriptions_table: str,
    lambda_context: FakeContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    connect(dynamodb, connections_table, CONNECTION_ID)
    subscribe(dynamodb, CONNECTION_ID, "s1", "P|6:events|S3:abc")
    subscribe(dynamodb, CONNECTION_ID, "s2", "P|6:events|S3:def")

    handler(load_event("disconnect"), lambda_context)

    [record] = [r for r in caplog.records if r.getMessage() == "disconnected"]
    assert record.subscriptions == 2  # type: ignore[attr-defined]


def test_subscriptions_table_failure_is_a_500_and_logged(
    dynamodb: Any,
    connections_table: str,
    lambda_context: FakeContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No subscriptions table: the record is gone, the failure is reported (TTL is the backstop)."""
    connect(dynamodb, connections_table, CONNECTION_ID)
    dynamodb.update_item(
        TableName=connections_table,
        Key={"connectionId": {"S": CONNECTION_ID}},
        UpdateExpression="SET subs.#s = :t",
        ExpressionAttributeNames={"#s": "s1"},
        ExpressionAttributeValues={":t": {"S": "P|6:events|S3:abc"}},
    )

    answer = handler(load_event("disconnect"), lambda_context)

    assert answer["statusCode"] == 500
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
