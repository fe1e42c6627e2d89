"""$disconnect: the connection's record is deleted, idempotently."""

import logging
from typing import Any

import pytest

from handlers.disconnect import handler
from tests.helpers import FakeContext, connection_ids, load_event, put_connection

CONNECTION_ID = "L0SM9cOFvHcCIhw="


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
