"""The emulator's local DynamoDB refuses what DynamoDB refuses: items nested past 32 levels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from emulator.services import NESTING_ERROR, refuse_what_dynamodb_refuses, too_deep

TABLE = "items"


def nested(wraps: int, kind: str = "M") -> dict[str, Any]:
    """A string wrapped in ``wraps`` maps (or lists): ``wraps + 1`` levels."""
    value: dict[str, Any] = {"S": "leaf"}
    for _ in range(wraps):
        value = {"M": {"n": value}} if kind == "M" else {"L": [value]}
    return value


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    refuse_what_dynamodb_refuses()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        yield client


def assert_refused(exc: pytest.ExceptionInfo[ClientError]) -> None:
    assert exc.value.response["Error"]["Code"] == "ValidationException"
    assert exc.value.response["Error"]["Message"] == NESTING_ERROR


def stored(client: Any) -> list[str]:
    return sorted(item["id"]["S"] for item in client.scan(TableName=TABLE)["Items"])


# --- too_deep -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["M", "L"])
def test_31_wraps_are_within_the_limit_and_32_are_not(kind: str) -> None:
    assert not too_deep([nested(31, kind)])
    assert too_deep([nested(32, kind)])


def test_too_deep_finds_the_deep_branch_among_shallow_ones() -> None:
    value = {"M": {"a": {"S": "x"}, "b": {"L": [{"N": "1"}, nested(31)]}}}
    assert too_deep([{"S": "top"}, value])


def test_too_deep_survives_any_depth() -> None:
    value: dict[str, Any] = {"S": "leaf"}
    for _ in range(100_000):
        value = {"L": [value]}
    assert too_deep([value])


# --- moto refuses, like DynamoDB ------------------------------------------------------------


def test_put_item_within_the_limit_is_stored(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "ok"}, "doc": nested(31)})
    assert stored(dynamodb) == ["ok"]


def test_put_item_past_the_limit_is_refused_and_stores_nothing(dynamodb: Any) -> None:
    with pytest.raises(ClientError) as refused:
        dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "deep"}, "doc": nested(32)})
    assert_refused(refused)
    assert stored(dynamodb) == []


def test_update_item_setting_a_value_past_the_limit_is_refused(dynamodb: Any) -> None:
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "a"}})
    with pytest.raises(ClientError) as refused:
        dynamodb.update_item(
            TableName=TABLE,
            Key={"id": {"S": "a"}},
            UpdateExpression="SET doc = :doc",
            ExpressionAttributeValues={":doc": nested(32, "L")},
        )
    assert_refused(refused)
    item = dynamodb.get_item(TableName=TABLE, Key={"id": {"S": "a"}})["Item"]
    assert "doc" not in item


def test_update_item_with_attribute_updates_past_the_limit_is_refused(dynamodb: Any) -> None:
    with pytest.raises(ClientError) as refused:
        dynamodb.update_item(
            TableName=TABLE,
            Key={"id": {"S": "a"}},
            AttributeUpdates={"doc": {"Value": nested(40), "Action": "PUT"}},
        )
    assert_refused(refused)
    assert stored(dynamodb) == []


def test_batch_write_with_one_item_past_the_limit_is_refused_whole(dynamodb: Any) -> None:
    requests = [
        {"PutRequest": {"Item": {"id": {"S": "fine"}}}},
        {"PutRequest": {"Item": {"id": {"S": "deep"}, "doc": nested(32)}}},
    ]
    with pytest.raises(ClientError) as refused:
        dynamodb.batch_write_item(RequestItems={TABLE: requests})
    assert_refused(refused)
    assert stored(dynamodb) == []


@pytest.mark.parametrize("operation", ["Put", "Update"])
def test_transaction_with_a_value_past_the_limit_is_refused_whole(
    dynamodb: Any, operation: str
) -> None:
    deep: dict[str, Any]
    if operation == "Put":
        deep = {"Put": {"TableName": TABLE, "Item": {"id": {"S": "deep"}, "doc": nested(32)}}}
    else:
        deep = {
            "Update": {
                "TableName": TABLE,
                "Key": {"id": {"S": "deep"}},
                "UpdateExpression": "SET doc = :doc",
                "ExpressionAttributeValues": {":doc": nested(32)},
            }
        }
    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(
            TransactItems=[{"Put": {"TableName": TABLE, "Item": {"id": {"S": "fine"}}}}, deep]
        )
    assert_refused(refused)
    assert stored(dynamodb) == []


def test_refused_write_leaves_no_stream_record(dynamodb: Any) -> None:
    with pytest.raises(ClientError):
        dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "deep"}, "doc": nested(32)})
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "next"}})
    streams = boto3.client("dynamodbstreams", region_name="us-east-1")
    arn = dynamodb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    assert [r["dynamodb"]["Keys"]["id"]["S"] for r in records] == ["next"]


def test_refusing_twice_wraps_moto_once() -> None:
    from moto.dynamodb.responses import DynamoHandler

    refuse_what_dynamodb_refuses()
    first = DynamoHandler.put_item
    refuse_what_dynamodb_refuses()
    assert DynamoHandler.put_item is first
