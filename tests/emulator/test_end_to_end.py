"""The dev stack, run by the emulator, driven by real WebSocket clients over 127.0.0.1."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from handlers.subscriptions import bump_versions
from handlers.topics import table_topic
from tests.emulator.conftest import RunningEmulator, receive_json, subscribe, wait_for


def put(local: RunningEmulator, item: dict[str, Any]) -> None:
    local.dynamodb().put_item(TableName=local.table(), Item=item)


def event_item(pk: str, **attributes: str) -> dict[str, Any]:
    item = {"PK": {"S": pk}, "SK": {"S": "METADATA"}}
    item.update({name: {"S": value} for name, value in attributes.items()})
    return item


def management(local: RunningEmulator) -> Any:
    return boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=local.emulator.management_endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


# -- $connect -------------------------------------------------------------------------------


def test_client_without_a_token_is_refused_with_403_by_the_authorizer(
    local: RunningEmulator,
) -> None:
    """The authorizer declares no identity source (the token may come in the query string or
    the subprotocol header), so API Gateway always runs it, and it denies."""
    from websockets.sync.client import connect

    before = len(local.lines)
    with pytest.raises(InvalidStatus) as refused:
        connect(local.emulator.url, open_timeout=10)
    assert refused.value.response.status_code == 403
    assert any("refused (403)" in line for line in local.lines[before:])


def test_an_hmac_token_in_the_subprotocol_signs_in_and_only_the_fixed_name_is_echoed(
    local: RunningEmulator,
) -> None:
    from websockets.sync.client import connect

    token = local.token("alice")
    with connect(
        local.emulator.url, subprotocols=["realtime-channel", token], open_timeout=10
    ) as client:
        assert client.subprotocol == "realtime-channel"
        assert client.response is not None
        assert client.response.headers.get_all("Sec-WebSocket-Protocol") == ["realtime-channel"]
        client.send('{"action": "ping"}')
        assert client.recv(timeout=10) == '{"type":"pong"}'


def test_client_with_a_bad_token_is_rejected_with_403(local: RunningEmulator) -> None:
    from websockets.sync.client import connect

    from handlers.tokens import mint_token

    forged = mint_token("mallory", "not-the-secret-0123456789")
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{local.emulator.url}?token={forged}", open_timeout=10)
    assert refused.value.response.status_code == 403
    assert any("refused (403)" in line for line in local.lines)


def test_client_with_a_minted_token_connects_and_is_recorded(local: RunningEmulator) -> None:
    before = local.connection_ids()
    with local.connect("alice"):
        (added,) = wait_for(lambda: local.connection_ids() - before, what="a connection record")
        record = local.dynamodb().get_item(
            TableName=local.emulator.connections_table(), Key={"connectionId": {"S": added}}
        )["Item"]
        assert record["userId"] == {"S": "alice"}
        assert record["sourceIp"] == {"S": "127.0.0.1"}


# -- messages ---------------------------------------------------------------------------------


def test_ping_gets_pong(local: RunningEmulator) -> None:
    with local.connect() as client:
        client.send(json.dumps({"action": "ping", "id": 7}))
        assert receive_json(client) == {"type": "pong", "id": 7}


def test_garbage_gets_an_error_and_the_socket_stays_up(local: RunningEmulator) -> None:
    with local.connect() as client:
        client.send("this is not json")
        error = receive_json(client)
        assert (error["type"], error["code"]) == ("error", "invalid_json")
        client.send(json.dumps({"action": "dance"}))
        assert receive_json(client)["code"] == "unknown_action"
        client.send(b"\x00\x01binary")
        assert receive_json(client)["code"] == "binary_frame"
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client) == {"type": "pong"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ('{"a":' * 5000 + "1" + "}" * 5000, "invalid_json"),  # 30 KB, 5,000 deep
        ("[" * 30_000, "invalid_json"),
        ("[" * 100_000, "too_large"),  # past the default function's 32 KB input limit
    ],
    ids=["object", "brackets", "brackets-too-large"],
)
def test_json_nested_too_deep_gets_an_error_and_the_socket_stays_up(
    local: RunningEmulator, body: str, code: str
) -> None:
    with local.connect() as client:
        client.send(body)
        error = receive_json(client)
        assert (error["type"], error["code"]) == ("error", code)
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client) == {"type": "pong"}


def test_plain_http_get_with_a_valid_token_leaves_no_connection_record(
    local: RunningEmulator,
) -> None:
    import urllib.error
    import urllib.request

    before = local.connection_ids()
    url = f"{local.emulator.url}?token={local.emulator.token('alice')}".replace("ws://", "http://")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 (the local emulator's http URL)
    assert refused.value.code == 426
    assert local.connection_ids() - before == set()  # $connect never ran: nothing to clean up


# -- stream -> clients -----------------------------------------------------------------------


def test_insert_update_delete_reach_every_subscriber_in_order(local: RunningEmulator) -> None:
    with local.connect("alice") as first, local.connect("bob") as second:
        subscribe(first, "everything")  # table-wide
        subscribe(second, "order", key={"PK": "EVENT#order"})  # its partition
        table = local.table()
        dynamodb = local.dynamodb()
        put(local, event_item("EVENT#order", title="v1"))
        dynamodb.update_item(
            TableName=table,
            Key={"PK": {"S": "EVENT#order"}, "SK": {"S": "METADATA"}},
            UpdateExpression="SET title = :t, seats = :n",
            ExpressionAttributeValues={":t": {"S": "v2"}, ":n": {"N": "42"}},
        )
        dynamodb.delete_item(
            TableName=table, Key={"PK": {"S": "EVENT#order"}, "SK": {"S": "METADATA"}}
        )
        for client, sub_id in ((first, "everything"), (second, "order")):
            messages = [receive_json(client) for _ in range(3)]
            assert [m["action"] for m in messages] == ["created", "updated", "deleted"]
            assert [m["matches"] for m in messages] == [
                {sub_id: "added"}, {sub_id: "modified"}, {sub_id: "removed"},
            ]  # fmt: skip
            assert all(m["table"] == "events" for m in messages)  # the label, not the name
            assert messages[0]["data"]["title"] == "v1"
            assert messages[1]["data"] == {
                "PK": "EVENT#order", "SK": "METADATA", "title": "v2", "seats": 42,
            }  # fmt: skip
            assert messages[2]["keys"] == {"PK": "EVENT#order", "SK": "METADATA"}
            sequences = [int(m["sequence"]) for m in messages]
            assert sequences == sorted(sequences)


def test_item_nested_past_dynamodbs_limit_is_refused_and_later_writes_flow(
    local: RunningEmulator,
) -> None:
    from botocore.exceptions import ClientError

    deep: dict[str, Any] = {"S": "leaf"}
    for _ in range(40):  # past DynamoDB's 32 levels; moto alone would store it
        deep = {"M": {"n": deep}}
    with local.connect() as client:
        subscribe(client)
        with pytest.raises(ClientError) as refused:
            put(local, {**event_item("EVENT#deep"), "doc": deep})
        assert refused.value.response["Error"]["Code"] == "ValidationException"
        assert "Nesting Levels have exceeded supported limits" in str(refused.value)
        put(local, event_item("EVENT#after-deep", title="still flowing"))
        message = receive_json(client)
        assert message["keys"] == {"PK": "EVENT#after-deep", "SK": "METADATA"}
    assert not [line for line in local.lines if "poll failed" in line]


def test_stale_connection_and_its_subscription_are_removed_and_the_others_still_receive(
    local: RunningEmulator,
) -> None:
    ghost = "GhostConnId0000="  # a record and a subscription, but no socket: a 410
    topic = table_topic("events", 0)  # a table-wide bucket: the broadcaster reads every one
    local.dynamodb().put_item(
        TableName=local.emulator.connections_table(),
        Item={
            "connectionId": {"S": ghost},
            "userId": {"S": "ghost"},
            "subs": {"M": {"s1": {"S": topic}}},
        },
    )
    local.dynamodb().put_item(
        TableName=local.subscriptions_table(),
        Item={
            "topic": {"S": topic},
            "sk": {"S": f"{ghost} s1"},
            "connectionId": {"S": ghost},
            "subId": {"S": "s1"},
            "source": {"S": "events"},
        },
    )
    bump_versions(local.dynamodb(), local.subscriptions_table(), [topic])  # as subscribe does
    with local.connect("alice") as client:
        subscribe(client)
        put(local, event_item("EVENT#stale"))
        assert receive_json(client)["keys"]["PK"] == "EVENT#stale"
        wait_for(lambda: ghost not in local.connection_ids(), what="stale removal")
        wait_for(
            lambda: all(i["connectionId"]["S"] != ghost for i in local.subscriptions()),
            what="the stale connection's subscription to go",
        )


# -- closing -----------------------------------------------------------------------------------


def test_closing_a_client_removes_its_record(local: RunningEmulator) -> None:
    before = local.connection_ids()
    with local.connect():
        (mine,) = wait_for(lambda: local.connection_ids() - before, what="the record")
    wait_for(lambda: mine not in local.connection_ids(), what="the record to go")


def test_connections_delete_closes_the_client_and_runs_disconnect(
    local: RunningEmulator,
) -> None:
    before = local.connection_ids()
    with local.connect() as client:
        (mine,) = wait_for(lambda: local.connection_ids() - before, what="the record")
        info = management(local).get_connection(ConnectionId=mine)
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        management(local).delete_connection(ConnectionId=mine)
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)
    wait_for(lambda: mine not in local.connection_ids(), what="$disconnect to remove the record")


def test_boto3_sees_gone_exception_for_an_unknown_connection(local: RunningEmulator) -> None:
    client = management(local)
    with pytest.raises(client.exceptions.GoneException):
        client.post_to_connection(ConnectionId="NoSuchConnection=", Data=b"{}")


def test_boto3_post_to_connection_reaches_the_client(local: RunningEmulator) -> None:
    before = local.connection_ids()
    with local.connect() as client:
        (mine,) = wait_for(lambda: local.connection_ids() - before, what="the record")
        management(local).post_to_connection(ConnectionId=mine, Data=b'{"hello": "from boto3"}')
        assert receive_json(client) == {"hello": "from boto3"}


# -- limits -------------------------------------------------------------------------------------


def test_message_over_128_kb_closes_the_connection_with_1009(local: RunningEmulator) -> None:
    with local.connect(max_size=None) as client:
        client.send(json.dumps({"action": "ping", "pad": "x" * (128 * 1024)}))
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_crashed_worker_is_replaced(local: RunningEmulator) -> None:
    import os
    import signal

    emulator = local.emulator
    default = next(
        name for name, f in emulator.model.functions.items() if f.logical.endswith("default")
    )
    pool = emulator.pools[default]
    pids = local.call(_pids(pool))
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    with local.connect() as client:
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client, timeout=20) == {"type": "pong"}
    assert set(local.call(_pids(pool))).isdisjoint(pids)


async def _pids(pool: Any) -> list[int]:
    return list(pool.worker_pids)


def test_function_past_its_timeout_answers_internal_server_error(local: RunningEmulator) -> None:
    """As API Gateway does when the integration fails; the next message works again."""
    import dataclasses

    from emulator import workers

    emulator = local.emulator
    default = next(
        name for name, f in emulator.model.functions.items() if f.logical.endswith("default")
    )
    pool = emulator.pools[default]
    declared = pool.spec
    with local.connect() as client:
        # 1 ms and no grace: shorter than any invocation (pipe, handler, its post back)
        pool.spec = dataclasses.replace(declared, timeout=0.001)
        grace = workers.TIMEOUT_GRACE_SECONDS
        workers.TIMEOUT_GRACE_SECONDS = 0.0
        try:
            client.send(json.dumps({"action": "ping"}))
            answer = receive_json(client, timeout=20)
            if answer.get("type") == "pong":  # it may have posted before it was killed
                answer = receive_json(client, timeout=20)
        finally:
            pool.spec = declared
            workers.TIMEOUT_GRACE_SECONDS = grace
        assert answer["message"] == "Internal server error" and answer["connectionId"]
        assert any("Task timed out" in line for line in local.lines)
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client, timeout=20) == {"type": "pong"}


def test_a_second_emulator_in_the_same_process_is_refused(local: RunningEmulator) -> None:
    import asyncio

    from emulator.local import Emulator, EmulatorOptions

    second = Emulator(EmulatorOptions(write_state=False, log=lambda line: None))
    with pytest.raises(RuntimeError, match="already running in this process"):
        asyncio.run(second.start())
    with local.connect() as client:  # the first one is unharmed
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client) == {"type": "pong"}
