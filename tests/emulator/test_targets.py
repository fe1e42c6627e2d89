"""The emulator with a target attribute and bounded retries: targeting and the dead-letter queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe, wait_for


@pytest.fixture(scope="module")
def targeted() -> Iterator[RunningEmulator]:
    """Changes go only to the user named by the item's `owner`; one retry before the DLQ."""
    yield from start(overrides={"targetAttribute": "owner", "maxRetryAttempts": "1"})


def owned(pk: str, owner: str) -> dict[str, Any]:
    return {"PK": {"S": pk}, "SK": {"S": "METADATA"}, "owner": {"S": owner}}


def connection_of(local: RunningEmulator, user: str, before: set[str]) -> str:
    def mine() -> str | None:
        table = local.emulator.connections_table()
        for connection_id in local.connection_ids() - before:
            item = local.dynamodb().get_item(
                TableName=table, Key={"connectionId": {"S": connection_id}}
            )["Item"]
            if item.get("userId", {}).get("S") == user:
                return connection_id
        return None

    return str(wait_for(mine, what=f"{user}'s connection record"))


def test_only_the_target_users_connections_receive_the_change(targeted: RunningEmulator) -> None:
    with (
        targeted.connect("carol") as carol_phone,
        targeted.connect("carol") as carol_laptop,
        targeted.connect("dave") as dave,
    ):
        for client in (carol_phone, carol_laptop, dave):
            subscribe(client)  # table-wide: the target attribute decides which rows
        targeted.dynamodb().put_item(TableName=targeted.table(), Item=owned("EVENT#c1", "carol"))
        targeted.dynamodb().put_item(TableName=targeted.table(), Item=owned("EVENT#d1", "dave"))
        assert receive_json(carol_phone)["keys"]["PK"] == "EVENT#c1"
        assert receive_json(carol_laptop)["keys"]["PK"] == "EVENT#c1"
        assert receive_json(dave)["keys"]["PK"] == "EVENT#d1"  # not carol's first
        with pytest.raises(TimeoutError):
            carol_phone.recv(timeout=1)
        # an item that names no owner reaches no one (fail closed), though all are subscribed
        targeted.dynamodb().put_item(
            TableName=targeted.table(), Item={"PK": {"S": "EVENT#x"}, "SK": {"S": "METADATA"}}
        )
        for client in (carol_phone, carol_laptop, dave):
            with pytest.raises(TimeoutError):
                client.recv(timeout=1)


def test_record_failing_every_time_goes_to_the_dead_letter_queue_and_the_rest_flow(
    targeted: RunningEmulator,
) -> None:
    before = targeted.connection_ids()
    with targeted.connect("victim") as victim, targeted.connect("bystander") as bystander:
        subscribe(victim)
        subscribe(bystander)
        victim_id = connection_of(targeted, "victim", before)
        targeted.emulator.gateway.post_faults[victim_id] = [500]  # its socket never accepts a post
        table = targeted.table()
        targeted.dynamodb().put_item(TableName=table, Item=owned("EVENT#poison", "victim"))
        targeted.dynamodb().put_item(TableName=table, Item=owned("EVENT#fine", "bystander"))
        assert receive_json(bystander, timeout=30)["keys"]["PK"] == "EVENT#fine"
        sqs = targeted.emulator.aws.client("sqs")
        (queue,) = [q for q in targeted.emulator.model.queues.values() if "fanout" not in q]
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        messages = wait_for(
            lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages"),
            timeout=30,
            what="the dead-letter message",
        )
        body = json.loads(messages[0]["Body"])
        assert body["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert body["requestContext"]["approximateInvokeCount"] == 2  # 1 try + 1 retry
        info = body["DDBStreamBatchInfo"]
        assert info["batchSize"] == 1
        assert info["streamArn"].startswith("arn:aws:dynamodb:")
        poison_sequence = info["startSequenceNumber"]
        assert int(poison_sequence) > 0
