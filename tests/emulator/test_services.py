"""The emulator's local DynamoDB: it refuses what DynamoDB refuses (items nested past 32
levels) and serves concurrent requests without failing or losing writes."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from emulator.services import (
    DYNAMODB_LOCK,
    NESTING_ERROR,
    LocalAws,
    ReadWriteLock,
    UnusualValue,
    attribute_value_json,
    refuse_what_dynamodb_refuses,
    serialize_attribute_values_fast,
    serialize_writes,
    too_deep,
)

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


# --- concurrent requests: writes run alone ----------------------------------------------------


@pytest.fixture(scope="module")
def local_aws() -> Iterator[LocalAws]:
    aws = LocalAws().start()
    try:
        yield aws
    finally:
        aws.stop()


def unretried_client(aws: LocalAws) -> Any:
    """A client that shows every 500 instead of retrying it away."""
    return boto3.client(
        "dynamodb",
        endpoint_url=aws.endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=16),
    )


def create(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


SEED = 200
"""Items in the first table: the larger the tables, the longer moto's rollback copies."""
REQUESTS = 400


def test_concurrent_transactions_writes_and_reads_never_fail_or_lose_a_write(
    local_aws: LocalAws,
) -> None:
    """moto deep-copies a transaction's tables for rollback and puts the copy back when
    the transaction is cancelled: beside other writers that answered 500 ("dictionary
    changed size during iteration", 16 of 800 requests with the
    tables of this test, before the lock) and lost
    the writes made meanwhile."""
    client = unretried_client(local_aws)
    create(client, "conc-a")
    create(client, "conc-b")
    seed = [
        {"PutRequest": {"Item": {"id": {"S": f"seed{i}"}, "n": {"N": str(i)}}}} for i in range(SEED)
    ]
    for start in range(0, len(seed), 25):
        client.batch_write_item(RequestItems={"conc-a": seed[start : start + 25]})
    failures: list[str] = []
    cancelled = 0

    def request(n: int) -> None:
        nonlocal cancelled
        try:
            if n % 4 == 0:  # a transaction over both tables
                client.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": "conc-a", "Item": {"id": {"S": f"t{n}"}}}},
                        {"Put": {"TableName": "conc-b", "Item": {"id": {"S": f"t{n}"}}}},
                    ]
                )
            elif n % 4 == 1:  # a transaction that is cancelled: moto rolls its copy back
                try:
                    client.transact_write_items(
                        TransactItems=[
                            {"Put": {"TableName": "conc-b", "Item": {"id": {"S": f"x{n}"}}}},
                            {
                                "Put": {
                                    "TableName": "conc-a",
                                    "Item": {"id": {"S": "seed0"}},
                                    "ConditionExpression": "attribute_not_exists(id)",
                                }
                            },
                        ]
                    )
                    failures.append(f"{n}: the cancelled transaction was not cancelled")
                except client.exceptions.TransactionCanceledException:
                    cancelled += 1
            elif n % 4 == 2:
                client.put_item(TableName="conc-a", Item={"id": {"S": f"p{n}"}})
            else:
                client.query(
                    TableName="conc-a",
                    KeyConditionExpression="id = :id",
                    ExpressionAttributeValues={":id": {"S": f"seed{n % SEED}"}},
                    ConsistentRead=True,
                )
        except ClientError as error:
            failures.append(f"{n}: {error.response['ResponseMetadata']['HTTPStatusCode']} {error}")

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(request, range(REQUESTS)))
    assert time.monotonic() - started < 60
    assert failures == []
    assert cancelled == REQUESTS // 4

    def ids(table: str) -> set[str]:
        pages = client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        return {item["id"]["S"] for page in pages for item in page["Items"]}

    assert ids("conc-a") == (
        {f"seed{i}" for i in range(SEED)}
        | {f"t{n}" for n in range(0, REQUESTS, 4)}
        | {f"p{n}" for n in range(2, REQUESTS, 4)}
    )
    assert ids("conc-b") == {f"t{n}" for n in range(0, REQUESTS, 4)}


def test_reads_run_beside_reads_and_writes_wait_for_them(local_aws: LocalAws) -> None:
    client = unretried_client(local_aws)
    create(client, "conc-c")
    client.put_item(TableName="conc-c", Item={"id": {"S": "a"}})
    written = threading.Event()

    def write() -> None:
        client.put_item(TableName="conc-c", Item={"id": {"S": "b"}})
        written.set()

    with DYNAMODB_LOCK.reading():  # as a long query would
        assert client.get_item(TableName="conc-c", Key={"id": {"S": "a"}})["Item"]
        assert client.query(
            TableName="conc-c",
            KeyConditionExpression="id = :id",
            ExpressionAttributeValues={":id": {"S": "a"}},
        )["Items"]
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert not written.wait(0.5)  # the put waits for the reader
    assert written.wait(10)
    writer.join(10)
    assert client.get_item(TableName="conc-c", Key={"id": {"S": "b"}}, ConsistentRead=True)["Item"]


def test_a_waiting_writer_goes_before_later_readers() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    first_reader = lock.reading()
    first_reader.__enter__()

    def write() -> None:
        with lock.writing():
            order.append("write")

    def read() -> None:
        with lock.reading():
            order.append("read")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    deadline = time.monotonic() + 10
    while not lock._writers_waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.1)
    assert order == []  # the writer waits for the first reader, the new reader for the writer
    first_reader.__exit__(None, None, None)
    writer.join(10)
    reader.join(10)
    assert order == ["write", "read"]


def test_serializing_twice_wraps_moto_once() -> None:
    from moto.dynamodb.responses import DynamoHandler

    serialize_writes()
    first = DynamoHandler.call_action
    serialize_writes()
    assert DynamoHandler.call_action is first


# --- attribute values written fast, to the same JSON as moto's serializer ----------------------


def every_type(number: int) -> dict[str, Any]:
    """An item with every attribute type, edge cases included."""
    return {
        "id": {"S": f"item-{number}"},
        "empty": {"S": ""},
        "text": {"S": 'héllo "quoted" \\ back\nline \u2028 \U0001f600 \x00 end'},
        "int": {"N": "-42"},
        "exact": {"N": "12345678901234567890.123456789"},
        "exponent": {"N": "1E+10"},
        "bytes": {"B": bytes(range(256))},
        "no_bytes": {"B": b"\x00"},
        "strings": {"SS": ["a", "b", "\u00e9"]},
        "numbers": {"NS": ["1", "-2.5", "1E-130"]},
        "binaries": {"BS": [b"\x00\xff", b"abc"]},
        "map": {
            "M": {
                "nested": {"M": {"deep": {"L": [{"N": "1"}, {"NULL": True}, {"M": {}}]}}},
                "a.b#c": {"BOOL": False},
                "bin": {"B": b"\xfe"},
            }
        },
        "empty_map": {"M": {}},
        "list": {"L": [{"S": "x"}, {"L": []}, {"SS": ["z"]}, {"BS": [b"1"]}, {"NS": ["0"]}]},
        "empty_list": {"L": []},
        "null": {"NULL": True},
        "yes": {"BOOL": True},
        "no": {"BOOL": False},
        "deep": nested(31),
        "deep_list": nested(31, "L"),
    }


def bodies(client: Any) -> list[bytes]:
    """The raw answer bodies of reads, writes that return items and stream records."""
    seen: list[bytes] = []

    def keep(response_dict: Any, **_: Any) -> None:
        seen.append(response_dict["body"])

    client.meta.events.register("before-parse", keep)
    return seen


def exercise(client: Any, streams: Any) -> None:
    keys = [{"id": {"S": f"item-{n}"}} for n in range(3)]
    client.get_item(TableName=TABLE, Key=keys[0], ConsistentRead=True)
    client.query(
        TableName=TABLE,
        KeyConditionExpression="id = :id",
        ExpressionAttributeValues={":id": {"S": "item-1"}},
    )
    client.query(
        TableName=TABLE,
        KeyConditionExpression="id = :id",
        ExpressionAttributeValues={":id": {"S": "item-1"}},
        ProjectionExpression="#m.nested, #l, #b, #n",
        ExpressionAttributeNames={"#m": "map", "#l": "list", "#b": "bytes", "#n": "numbers"},
    )
    client.scan(TableName=TABLE)
    client.scan(TableName=TABLE, Limit=2)
    client.batch_get_item(RequestItems={TABLE: {"Keys": keys}})
    client.transact_get_items(TransactItems=[{"Get": {"TableName": TABLE, "Key": k}} for k in keys])
    client.put_item(TableName=TABLE, Item=every_type(0), ReturnValues="ALL_OLD")
    client.update_item(
        TableName=TABLE,
        Key=keys[1],
        UpdateExpression="SET added = :v",
        ExpressionAttributeValues={":v": {"L": [{"B": b"\x01"}]}},
        ReturnValues="ALL_NEW",
    )
    client.delete_item(TableName=TABLE, Key=keys[2], ReturnValues="ALL_OLD")
    arn = client.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    streams.get_records(ShardIterator=iterator)


RUN_SPECIFIC = re.compile(
    rb'"(eventID|ApproximateCreationDateTime|SizeBytes|NextShardIterator)": ("[^"]*"|[0-9.]+)'
)


def answers(monkeypatch: pytest.MonkeyPatch, fast: bool) -> list[bytes]:
    from moto.core.serialize import JSONSerializer

    serialize_attribute_values_fast()
    if not fast:
        monkeypatch.setattr(
            JSONSerializer,
            "_serialize_type_structure",
            JSONSerializer._serialize_type_structure.__wrapped__,  # type: ignore[attr-defined]
        )
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        streams = boto3.client("dynamodbstreams", region_name="us-east-1")
        client.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        for number in range(3):
            client.put_item(TableName=TABLE, Item=every_type(number))
        seen = bodies(client)
        stream_seen = bodies(streams)
        exercise(client, streams)
    monkeypatch.undo()
    records = [
        RUN_SPECIFIC.sub(rb'"\1": ~', body) for body in stream_seen[-1:]
    ]  # GetRecords, without what differs between two runs (moto's size counts the time)
    return [body for body in seen if not body.startswith(b'{"Table"')] + records


def test_fast_attribute_values_answer_byte_for_byte_what_moto_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import emulator.services as services

    written: list[Any] = []
    real = services.attribute_value_json

    def counted(value: Any) -> dict[str, Any]:
        written.append(value)
        return real(value)

    monkeypatch.setattr(services, "attribute_value_json", counted)
    fast = answers(monkeypatch, fast=True)
    assert written  # the fast path wrote the values
    generic = answers(monkeypatch, fast=False)
    assert len(fast) == 11 and b'"Records"' in fast[-1] and b'"BS"' in fast[-1]
    assert fast == generic


@pytest.mark.parametrize(
    "value",
    [
        {"S": None},
        {"S": 1},
        {"N": 5},
        {"S": "a", "N": "1"},
        {},
        {"s": "lower case"},
        {"M": {"": {"S": "x"}}},
        {"M": {"a": None}},
        {"L": [None]},
        {"L": [{"S": "a"}, {"N": 1}]},
        {"SS": ["a", 1]},
        {"BS": [None]},
        {"NULL": 1},
        {"BOOL": "true"},
        {"X": "unknown"},
        None,
        "text",
    ],
)
def test_unusual_values_go_through_moto_and_come_out_as_moto_writes_them(value: Any) -> None:
    from moto.core.serialize import JSONSerializer, XFormedAttributePicker
    from moto.core.utils import get_service_model

    with pytest.raises(UnusualValue):
        attribute_value_json(value)
    serialize_attribute_values_fast()
    model = get_service_model("dynamodb").operation_model("GetItem")
    result = {"Item": {"id": {"S": "x"}, "odd": value}}

    def body() -> Any:
        """The body, or the exception moto's serializer raises (a 500 for the client)."""
        serializer = JSONSerializer(operation_model=model, value_picker=XFormedAttributePicker())
        try:
            return serializer.serialize(result)["body"]
        except Exception as failed:  # compared, not hidden
            return repr(failed)

    fast = body()
    generic = JSONSerializer._serialize_type_structure.__wrapped__  # type: ignore[attr-defined]
    patched = JSONSerializer._serialize_type_structure
    JSONSerializer._serialize_type_structure = generic  # type: ignore[method-assign]
    try:
        assert fast == body()
    finally:
        JSONSerializer._serialize_type_structure = patched  # type: ignore[method-assign]


# --- transactions back up the items they name, not whole tables ------------------------------


@pytest.fixture
def two_tables() -> Iterator[Any]:
    from emulator.services import transactions_back_up_items_only

    transactions_back_up_items_only()
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for name, stream in (("plain", False), ("streamed", True)):
            extra: dict[str, Any] = {}
            if stream:
                extra["StreamSpecification"] = {
                    "StreamEnabled": True,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                }
            client.create_table(
                TableName=name,
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                **extra,
            )
        for n in range(50):
            client.put_item(TableName="plain", Item={"pk": {"S": f"k{n}"}, "v": {"N": "1"}})
        yield client


def _backend() -> Any:
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends["123456789012"]["us-east-1"]


def _cancelled(client: Any, items: list[dict[str, Any]]) -> None:
    with pytest.raises(ClientError, match="TransactionCanceled"):
        client.transact_write_items(TransactItems=items)


def test_a_cancelled_transaction_puts_back_exactly_what_it_changed(two_tables: Any) -> None:
    client = two_tables
    table = _backend().tables["plain"]
    _cancelled(
        client,
        [
            {"Put": {"TableName": "plain", "Item": {"pk": {"S": "new"}, "v": {"N": "9"}}}},
            {"Update": {"TableName": "plain", "Key": {"pk": {"S": "k1"}},
                        "UpdateExpression": "SET v = :v",
                        "ExpressionAttributeValues": {":v": {"N": "5"}}}},
            {"Delete": {"TableName": "plain", "Key": {"pk": {"S": "k2"}}}},
            {"ConditionCheck": {"TableName": "plain", "Key": {"pk": {"S": "k3"}},
                                "ConditionExpression": "attribute_not_exists(pk)"}},
        ],
    )  # fmt: skip
    assert _backend().tables["plain"] is table  # not swapped for a whole copy
    get = lambda key: client.get_item(TableName="plain", Key={"pk": {"S": key}}).get("Item")  # noqa: E731
    assert get("new") is None
    assert get("k1") == {"pk": {"S": "k1"}, "v": {"N": "1"}}
    assert get("k2") == {"pk": {"S": "k2"}, "v": {"N": "1"}}
    assert client.scan(TableName="plain", Select="COUNT")["Count"] == 50


def test_a_transaction_that_succeeds_writes_everything(two_tables: Any) -> None:
    client = two_tables
    client.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": "plain", "Item": {"pk": {"S": "new"}, "v": {"N": "9"}}}},
            {"Delete": {"TableName": "plain", "Key": {"pk": {"S": "k2"}}}},
        ]
    )
    assert client.get_item(TableName="plain", Key={"pk": {"S": "new"}})["Item"]["v"] == {"N": "9"}
    assert "Item" not in client.get_item(TableName="plain", Key={"pk": {"S": "k2"}})


def test_a_table_with_a_stream_keeps_no_record_of_a_cancelled_write(two_tables: Any) -> None:
    client = two_tables
    _cancelled(
        client,
        [
            {"Put": {"TableName": "streamed", "Item": {"pk": {"S": "a"}}}},
            {"ConditionCheck": {"TableName": "plain", "Key": {"pk": {"S": "k3"}},
                                "ConditionExpression": "attribute_not_exists(pk)"}},
        ],
    )  # fmt: skip
    shard = _backend().tables["streamed"].stream_shard
    assert shard is not None and len(shard.items) == 0
