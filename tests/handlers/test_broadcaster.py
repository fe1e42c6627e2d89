from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import pytest
from botocore.stub import Stubber

import handlers.broadcaster as broadcaster_module
from bench.management_api import FakeManagementApi
from handlers import aws
from handlers.broadcaster import MAX_MESSAGE_BYTES, Broadcaster, encode, envelope, handler
from handlers.config import Source, broadcaster_config
from handlers.connections import (
    FIRST_PAGE_ITEMS,
    all_connection_ids,
    connection_item,
    user_connection_ids,
)
from handlers.management import ManagementApi, frozen_credentials
from tests.handlers.conftest import SOURCE_LABEL, SOURCE_TABLE
from tests.helpers import FakeContext, connection_ids, load_event, put_connection

SEQ = ["111100000000000000000001", "111100000000000000000002", "111100000000000000000003"]
SOURCES = {SOURCE_LABEL: Source(SOURCE_LABEL, SOURCE_TABLE, (("PK", "S"), ("SK", "S")), True, ())}


def settings(endpoint: str, **changes: Any):
    env = {
        "CONNECTIONS_TABLE": "connections-test",
        "MANAGEMENT_ENDPOINT": endpoint,
        "SOURCES": json.dumps({SOURCE_LABEL: {"table": SOURCE_TABLE}}),
        "SUBSCRIPTIONS_TABLE": "subscriptions-test",
    }
    return dataclasses.replace(broadcaster_config(env), **changes)


def make(server: FakeManagementApi, dynamodb: Any, **changes: Any) -> Broadcaster:
    api = ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )
    return Broadcaster(
        settings(server.endpoint, **changes), dynamodb=dynamodb, api=api, sleep=lambda _: None
    )


def connect(
    server: FakeManagementApi, dynamodb: Any, table: str, cid: str, user: str | None = None
):
    put_connection(dynamodb, table, cid, user)
    server.connect(cid)


@pytest.fixture
def two_clients(management_api: FakeManagementApi, dynamodb: Any, connections_table: str):
    for cid, user in (("A=", "user-1"), ("B=", "user-2")):
        connect(management_api, dynamodb, connections_table, cid, user)
    return ["A=", "B="]


def run(b: Broadcaster, records: list[Any]):
    return b.run(records, deadline=b.clock() + 60)


def test_insert_update_delete_reach_every_client_in_order(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    failures, stats = run(make(management_api, dynamodb), load_event("stream_batch")["Records"])
    assert failures == []
    assert (stats.delivered, stats.recordsFailed) == (6, 0)
    for cid in two_clients:
        received = management_api.messages(cid)
        assert [m["action"] for m in received] == ["created", "updated", "deleted"]
        assert [m["sequence"] for m in received] == SEQ


def test_envelope_follows_the_contract(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    run(make(management_api, dynamodb), load_event("stream_batch")["Records"])
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
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    run(
        make(management_api, dynamodb, include_old_image=True),
        load_event("stream_batch")["Records"],
    )
    created, updated, deleted = management_api.messages("B=")
    assert "old" not in created
    assert updated["old"] == {
        "PK": "EVENT#123",
        "SK": "METADATA",
        "title": "Draft",
        "owner": "user-1",
    }
    assert deleted["old"]["count"] == 43


def test_target_attribute_sends_only_to_that_users_connections(
    management_api: FakeManagementApi, dynamodb: Any, connections_table: str
) -> None:
    for cid, user in (("u1-a", "user-1"), ("u1-b", "user-1"), ("u2", "user-2"), ("anon", None)):
        connect(management_api, dynamodb, connections_table, cid, user)
    records = load_event("stream_batch")["Records"][:1]  # owner = user-1
    failures, stats = run(make(management_api, dynamodb, target_attribute="owner"), records)
    assert failures == [] and stats.delivered == 2
    assert len(management_api.messages("u1-a")) == len(management_api.messages("u1-b")) == 1
    assert management_api.messages("u2") == management_api.messages("anon") == []


@pytest.mark.parametrize(
    "owner",
    [None, {"S": ""}, {"BOOL": True}, {"NULL": True}, {"M": {"id": {"S": "user-1"}}},
     {"SS": ["user-1"]}, {"L": [{"S": "user-1"}]}],
    ids=["missing", "empty", "bool", "null", "map", "string-set", "list"],
)  # fmt: skip
def test_record_whose_item_names_no_user_reaches_no_one_and_is_counted(
    management_api: FakeManagementApi,
    dynamodb: Any,
    two_clients: list[str],
    owner: dict[str, Any] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Fail closed: with a target attribute, an item without a usable owner is private."""
    records = load_event("stream_batch")["Records"]
    image = records[0]["dynamodb"]["NewImage"]
    if owner is None:
        del image["owner"]
    else:
        image["owner"] = owner
    with caplog.at_level(logging.WARNING):
        failures, stats = run(make(management_api, dynamodb, target_attribute="owner"), records)
    assert failures == [] and stats.untargeted == 1
    assert [m["sequence"] for m in management_api.messages("A=")] == SEQ[1:]  # owner user-1
    assert management_api.messages("B=") == []
    (logged,) = [r for r in caplog.records if "no recipient" in r.getMessage()]
    assert logged.sequence == SEQ[0] and "owner" in logged.reason  # type: ignore[attr-defined]


def test_update_whose_new_image_lost_its_owner_does_not_go_to_the_old_owner(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    """The owner is read from the image the message carries: the new one."""
    record = load_event("stream_batch")["Records"][1]
    assert record["dynamodb"]["OldImage"]["owner"] == {"S": "user-1"}
    del record["dynamodb"]["NewImage"]["owner"]
    failures, stats = run(make(management_api, dynamodb, target_attribute="owner"), [record])
    assert failures == [] and stats.untargeted == 1 and stats.delivered == 0
    assert management_api.state.requests == 0


def test_delete_goes_to_the_owner_in_the_old_image(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    record = load_event("stream_batch")["Records"][2]
    assert "NewImage" not in record["dynamodb"]
    failures, stats = run(make(management_api, dynamodb, target_attribute="owner"), [record])
    assert failures == [] and (stats.delivered, stats.untargeted) == (1, 0)
    assert [m["action"] for m in management_api.messages("A=")] == ["deleted"]
    assert management_api.messages("B=") == []


def test_numeric_owner_targets_that_user(
    management_api: FakeManagementApi, dynamodb: Any, connections_table: str
) -> None:
    connect(management_api, dynamodb, connections_table, "n=", "42")
    connect(management_api, dynamodb, connections_table, "other=", "user-1")
    record = load_event("stream_batch")["Records"][0]
    record["dynamodb"]["NewImage"]["owner"] = {"N": "42"}
    failures, stats = run(make(management_api, dynamodb, target_attribute="owner"), [record])
    assert failures == [] and stats.delivered == 1
    assert len(management_api.messages("n=")) == 1 and management_api.messages("other=") == []


def test_stale_connection_is_removed_and_others_still_receive(
    management_api: FakeManagementApi, dynamodb: Any, connections_table: str, two_clients: list[str]
) -> None:
    put_connection(dynamodb, connections_table, "stale=", "user-1")  # record, but no socket
    failures, stats = run(make(management_api, dynamodb), load_event("stream_batch")["Records"])
    assert failures == [] and (stats.staleRemoved, stats.staleKept) == (1, 0)
    assert connection_ids(dynamodb, connections_table) == {"A=", "B="}
    assert all(len(management_api.messages(cid)) == 3 for cid in two_clients)
    assert management_api.state.requests == 6 + 1  # the stale one is not tried again in the batch


def test_throttled_posts_are_retried_and_delivered(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    management_api.script("A=", 429, 500)
    failures, stats = run(make(management_api, dynamodb), load_event("stream_batch")["Records"][:1])
    assert failures == [] and stats.retried == 2 and stats.delivered == 2


def test_undeliverable_record_is_reported_and_nothing_after_it_is_sent(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    b = make(management_api, dynamodb, send_max_attempts=2)
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


def test_oversized_message_is_sent_truncated_without_data(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    record = load_event("stream_batch")["Records"][0]
    record["dynamodb"]["NewImage"]["body"] = {"S": "x" * (MAX_MESSAGE_BYTES + 10)}
    failures, stats = run(make(management_api, dynamodb), [record])
    assert failures == [] and stats.truncated == 1
    (message,) = management_api.messages("A=")
    assert message["truncated"] is True and "data" not in message
    assert message["keys"] == {"PK": "EVENT#123", "SK": "METADATA"}
    assert message["action"] == "created" and message["sequence"] == SEQ[0]


def test_message_at_the_limit_is_not_truncated() -> None:
    message = {"type": "event_update", "data": {"v": ""}}
    overhead = len(encode(message)[0])
    message["data"]["v"] = "y" * (MAX_MESSAGE_BYTES - overhead)
    data, truncated = encode(message)
    assert len(data) == MAX_MESSAGE_BYTES and not truncated
    message["data"]["v"] += "y"
    assert encode(message)[1] is True


def test_malformed_record_is_reported_logged_and_blocks_nothing_before_it(
    management_api: FakeManagementApi,
    dynamodb: Any,
    two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = load_event("stream_batch")["Records"]
    records[1]["dynamodb"]["NewImage"]["bad"] = {"XX": "?"}
    with caplog.at_level(logging.ERROR):
        failures, stats = run(make(management_api, dynamodb), records)
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
    ],
)
def test_each_kind_of_malformed_record_is_reported(breakage: Any) -> None:
    record = load_event("stream_batch")["Records"][0]
    breakage(record)
    with pytest.raises(broadcaster_module.MalformedRecord):
        envelope(record, include_old=False, now=0, sources=SOURCES)


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
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str], breakage: Any
) -> None:
    records = load_event("stream_batch")["Records"]
    breakage(records[1])
    failures, stats = run(make(management_api, dynamodb), records)
    assert failures == [{"itemIdentifier": SEQ[1]}] and stats.malformed == 1
    assert [m["action"] for m in management_api.messages("A=")] == ["created"]


def test_a_410_for_a_connection_that_just_connected_keeps_its_record(
    management_api: FakeManagementApi, dynamodb: Any, connections_table: str, two_clients: list[str]
) -> None:
    """Its $connect stored the record; its socket is not open yet: API Gateway answers 410."""
    young = connection_item("Young0000000000=", user_id="u", now=time.time(), ttl_seconds=60,
                            source_ip=None)  # fmt: skip
    old = connection_item("Old0000000000000=", user_id="u", now=time.time() - 3600,
                          ttl_seconds=60, source_ip=None)  # fmt: skip
    dynamodb.put_item(TableName=connections_table, Item=young)
    dynamodb.put_item(TableName=connections_table, Item=old)
    failures, stats = run(make(management_api, dynamodb), load_event("stream_batch")["Records"][:1])
    assert failures == []
    remaining = connection_ids(dynamodb, connections_table)
    assert "Young0000000000=" in remaining and "Old0000000000000=" not in remaining
    assert (stats.staleRemoved, stats.staleKept) == (1, 1)  # both answered 410


def test_a_stale_record_that_cannot_be_deleted_is_counted_as_kept(
    management_api: FakeManagementApi,
    dynamodb: Any,
    connections_table: str,
    two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    put_connection(dynamodb, connections_table, "stale=", "user-1")  # record, but no socket

    def refuse(params: dict[str, Any], **_: Any) -> None:
        raise RuntimeError("DeleteItem unavailable")

    dynamodb.meta.events.register("provide-client-params.dynamodb.DeleteItem", refuse)
    try:
        with caplog.at_level(logging.WARNING):
            failures, stats = run(
                make(management_api, dynamodb), load_event("stream_batch")["Records"][:1]
            )
    finally:
        dynamodb.meta.events.unregister("provide-client-params.dynamodb.DeleteItem", refuse)
    assert failures == [] and (stats.staleRemoved, stats.staleKept, stats.delivered) == (0, 1, 2)
    assert "stale=" in connection_ids(dynamodb, connections_table)  # its ttl removes it later
    assert any("could not remove" in r.getMessage() for r in caplog.records)


def test_message_names_its_source_by_label_not_by_physical_table(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    record = load_event("stream_batch")["Records"][0]
    assert f":table/{SOURCE_TABLE}/stream/" in record["eventSourceARN"]
    sources = {
        label: dataclasses.replace(SOURCES[SOURCE_LABEL], label=label, table=table)
        for label, table in (("audit", "audit-1"), ("orders", SOURCE_TABLE))
    }
    failures, _ = run(make(management_api, dynamodb, sources=sources), [record])
    assert failures == []
    (message,) = management_api.messages("A=")
    assert message["table"] == "orders"


def test_record_from_a_table_not_in_sources_is_reported_not_delivered(
    management_api: FakeManagementApi,
    dynamodb: Any,
    two_clients: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    records = load_event("stream_batch")["Records"]
    records[1]["eventSourceARN"] = records[1]["eventSourceARN"].replace(SOURCE_TABLE, "stranger-1")
    with caplog.at_level(logging.ERROR):
        failures, stats = run(make(management_api, dynamodb), records)
    assert failures == [{"itemIdentifier": SEQ[1]}] and stats.malformed == 1
    assert [m["action"] for m in management_api.messages("A=")] == ["created"]
    (logged,) = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert "'stranger-1'" in logged.reason and "SOURCES" in logged.reason  # type: ignore[attr-defined]


def test_record_without_sequence_number_fails_the_whole_batch(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    failures, _ = run(make(management_api, dynamodb), [{"eventName": "INSERT"}])
    assert failures == [{"itemIdentifier": ""}]  # Lambda retries the whole batch


def test_out_of_time_reports_the_first_unsent_record(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    b = make(management_api, dynamodb)
    failures, _ = b.run(load_event("stream_batch")["Records"], deadline=b.clock() - 1)
    assert failures == [{"itemIdentifier": SEQ[0]}]
    assert management_api.state.requests == 0


def test_records_read_from_a_real_moto_stream(
    management_api: FakeManagementApi, dynamodb: Any, two_clients: list[str]
) -> None:
    """boto3 hands binary as bytes and times as datetimes: the broadcaster takes both."""
    dynamodb.create_table(
        TableName=SOURCE_TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    arn = dynamodb.describe_table(TableName=SOURCE_TABLE)["Table"]["LatestStreamArn"]
    dynamodb.put_item(TableName=SOURCE_TABLE, Item={"PK": {"S": "k"}, "b": {"B": b"\x01"}})
    dynamodb.update_item(
        TableName=SOURCE_TABLE,
        Key={"PK": {"S": "k"}},
        UpdateExpression="SET n = :n",
        ExpressionAttributeValues={":n": {"N": "2"}},
    )
    dynamodb.delete_item(TableName=SOURCE_TABLE, Key={"PK": {"S": "k"}})
    streams = aws.client("dynamodbstreams")
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    for record in records:
        record["eventSourceARN"] = arn
    failures, _ = run(make(management_api, dynamodb), records)
    assert failures == []
    messages = management_api.messages("A=")
    assert [m["action"] for m in messages] == ["created", "updated", "deleted"]
    assert messages[0]["data"] == {"PK": "k", "b": "AQ=="}
    assert messages[1]["data"] == {"PK": "k", "b": "AQ==", "n": 2}
    assert messages[0]["timestamp"].endswith("Z")
    assert {m["table"] for m in messages} == {SOURCE_LABEL}


def test_scan_pages_through_the_table_projecting_only_the_key() -> None:
    client = aws.session().create_client("dynamodb", region_name="us-east-1")
    with Stubber(client) as stub:
        first = {"TableName": "t", "ProjectionExpression": "connectionId"}
        stub.add_response(
            "scan",
            {
                "Items": [{"connectionId": {"S": "a"}}],
                "LastEvaluatedKey": {"connectionId": {"S": "a"}},
            },
            {**first, "Limit": FIRST_PAGE_ITEMS},  # a small first page: posting starts early
        )
        stub.add_response(
            "scan",
            {"Items": [{"connectionId": {"S": "b"}}]},
            {**first, "ExclusiveStartKey": {"connectionId": {"S": "a"}}},
        )
        assert list(all_connection_ids(client, "t")) == ["a", "b"]
        stub.assert_no_pending_responses()


def test_user_query_pages_through_the_index_projecting_only_the_key() -> None:
    client = aws.session().create_client("dynamodb", region_name="us-east-1")
    first = {
        "TableName": "t",
        "IndexName": "byUser",
        "KeyConditionExpression": "userId = :u",
        "ExpressionAttributeValues": {":u": {"S": "u1"}},
        "ProjectionExpression": "connectionId",
    }
    with Stubber(client) as stub:
        stub.add_response(
            "query",
            {
                "Items": [{"connectionId": {"S": "a"}}],
                "LastEvaluatedKey": {"connectionId": {"S": "a"}},
            },
            {**first, "Limit": FIRST_PAGE_ITEMS},
        )
        stub.add_response(
            "query",
            {"Items": [{"connectionId": {"S": "b"}}]},
            {**first, "ExclusiveStartKey": {"connectionId": {"S": "a"}}},
        )
        assert list(user_connection_ids(client, "t", "byUser", "u1")) == ["a", "b"]
        stub.assert_no_pending_responses()


def test_posting_starts_before_the_last_page_of_recipients_is_read(
    management_api: FakeManagementApi, dynamodb: Any, connections_table: str
) -> None:
    ids = [f"c{i:03d}=" for i in range(FIRST_PAGE_ITEMS + 20)]
    for cid in ids:
        connect(management_api, dynamodb, connections_table, cid)
    arrived_when_second_page_was_read: list[int] = []

    def second_page(params: dict[str, Any], **_: Any) -> None:
        if "ExclusiveStartKey" in params:
            time.sleep(0.2)  # let the first page's posts get going
            arrived_when_second_page_was_read.append(management_api.state.arrived)

    dynamodb.meta.events.register("provide-client-params.dynamodb.Scan", second_page)
    try:
        failures, stats = run(
            make(management_api, dynamodb), load_event("stream_batch")["Records"][:1]
        )
    finally:
        dynamodb.meta.events.unregister("provide-client-params.dynamodb.Scan", second_page)
    assert failures == [] and stats.delivered == stats.recipients == len(ids)
    (arrived,) = arrived_when_second_page_was_read
    assert arrived >= FIRST_PAGE_ITEMS // 2  # the first page was being posted meanwhile


def test_handler_returns_partial_batch_response_and_logs_counts(
    management_api: FakeManagementApi,
    dynamodb: Any,
    two_clients: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(broadcaster_module, "_broadcaster", make(management_api, dynamodb))
    management_api.script("B=", 429)
    with caplog.at_level(logging.INFO):
        answer = handler(load_event("stream_batch"), FakeContext(function_name="bc"))
    assert answer == {"batchItemFailures": []}
    (summary,) = [r for r in caplog.records if r.getMessage() == "batch"]
    assert (summary.delivered, summary.retried, summary.staleRemoved, summary.failed) == (
        6,
        1,
        0,
        0,
    )  # type: ignore[attr-defined]
    assert summary.fanoutMs > 0  # type: ignore[attr-defined]
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["FunctionName"]] and emf["FunctionName"] == "bc"
    names = {m["Name"] for m in directive["Metrics"]}
    assert {"Delivered", "StaleRemoved", "Retried", "Failed", "FanoutTime"} <= names
    assert (emf["Delivered"], emf["Retried"], emf["Failed"]) == (6, 1, 0)


def test_handler_reports_failures_from_the_batch(
    management_api: FakeManagementApi,
    dynamodb: Any,
    two_clients: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broadcaster_module, "_broadcaster", make(management_api, dynamodb))
    management_api.script("A=", 403)
    answer = handler(load_event("stream_batch"), FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": SEQ[0]}]}


def test_handler_logs_and_emits_stale_and_untargeted_counts(
    management_api: FakeManagementApi,
    dynamodb: Any,
    connections_table: str,
    two_clients: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for cid, age in (("Young0000000000=", 0), ("Old0000000000000=", 3600)):  # both answer 410
        item = connection_item(cid, user_id="user-1", now=time.time() - age, ttl_seconds=60,
                               source_ip=None)  # fmt: skip
        dynamodb.put_item(TableName=connections_table, Item=item)
    event = load_event("stream_batch")
    del event["Records"][1]["dynamodb"]["NewImage"]["owner"]  # names no user: sent to no one
    worker = make(management_api, dynamodb, target_attribute="owner")
    monkeypatch.setattr(broadcaster_module, "_broadcaster", worker)
    with caplog.at_level(logging.INFO):
        answer = handler(event, FakeContext(function_name="bc"))
    assert answer == {"batchItemFailures": []}
    (summary,) = [r for r in caplog.records if r.getMessage() == "batch"]
    counts = {k: getattr(summary, k) for k in ("staleRemoved", "staleKept", "untargeted")}
    assert counts == {"staleRemoved": 1, "staleKept": 1, "untargeted": 1}
    (emf,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    names = {m["Name"] for m in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"StaleRemoved", "StaleKept", "Untargeted"} <= names
    assert (emf["StaleRemoved"], emf["StaleKept"], emf["Untargeted"]) == (1, 1, 1)
