"""Resume with moto: the broadcaster records each change before posting it, and ``subscribe``
with ``after`` replays what the subscription missed exactly as it was delivered live."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import handlers.default as default_module
from bench.management_api import FakeManagementApi
from emulator.services import LocalAws
from handlers import aws, replay
from handlers.broadcaster import BatchStats, Broadcaster
from handlers.config import DefaultConfig, ResumeConfig, default_config
from handlers.connections import connection_item
from handlers.cursors import Position, cursor_key, make_cursor, read_cursor, scope_digest
from handlers.default import DynamoStore, replies
from handlers.management import ManagementApi, frozen_credentials
from handlers.recipients import Subscription
from handlers.resume import Resume, replay_messages
from handlers.snapshot import SnapshotLimits
from handlers.topics import key_topic, table_topic, typed_part
from tests.handlers.conftest import SOURCE_LABEL, SOURCE_TABLE
from tests.handlers.test_broadcaster import KEYS, SUBSCRIPTIONS, settings, stream
from tests.helpers import (
    SECRET,
    create_replay_table,
    create_source_table,
    create_subscriptions_table,
    subscription_items,
)

REPLAY = "replay-test"
CURSOR_PARAMETER = "/test/cursor-secret"
KEY = cursor_key(SECRET)
RESUME = ResumeConfig(
    cursor_secret_parameter=CURSOR_PARAMETER,
    table=REPLAY,
    retention_seconds=3600,
    overlap_ms=0,
    max_changes=100,
    max_seconds=20,
)
PARTITION = "EVENT#1"


TABLE_WIDE = [{"table": True}]
OWN_PARTITION_TRIMMED = [{"key": {"PK": "EVENT#{sub}"}, "fields": ["n"]}]


def default_settings(access: list[Any] = TABLE_WIDE, **resume: Any) -> DefaultConfig:
    env = {
        "CONNECTIONS_TABLE": "connections-test",
        "SUBSCRIPTIONS_TABLE": SUBSCRIPTIONS,
        "TABLE_TOPIC_BUCKETS": "4",
        "SOURCES": json.dumps(
            {
                SOURCE_LABEL: {
                    "table": SOURCE_TABLE,
                    "keys": [list(k) for k in KEYS],
                    "oldImage": True,
                    "access": access,
                }
            }
        ),
    }
    return dataclasses.replace(default_config(env), resume=dataclasses.replace(RESUME, **resume))


@pytest.fixture
def world(dynamodb: Any, connections_table: str, management_api: FakeManagementApi) -> Any:
    create_subscriptions_table(dynamodb, SUBSCRIPTIONS)
    create_replay_table(dynamodb, REPLAY)
    return dynamodb


class Clock:
    """Wall time from now on (``subscribe`` judges retention by the real clock), moving 1 ms
    per reading."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def broadcaster(server: FakeManagementApi, client: Any, wall: Clock, **resume: Any) -> Broadcaster:
    from handlers import aws

    api = ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )
    return Broadcaster(
        settings(server.endpoint, resume=dataclasses.replace(RESUME, **resume)),
        dynamodb=client,
        api=api,
        sleep=lambda _: None,
        cursor_key=KEY,
        wall=wall,
    )


def connect(client: Any, cid: str, user: str | None = "alice") -> None:
    item = connection_item(
        cid,
        user_id=user,
        now=1_795_000_000,
        ttl_seconds=7200,
        source_ip=None,
        claims=None,
        expires_at=None,
    )
    client.put_item(TableName="connections-test", Item=item)


def send(client: Any, cid: str, message: dict[str, Any], cfg: DefaultConfig) -> list[Any]:
    """Every reply, decoded, in order."""
    out = replies(
        json.dumps(message),
        False,
        cfg.max_input_bytes,
        connection_id=cid,
        store=DynamoStore(cfg, client, cursor_key=KEY),
        settings=cfg,
    )
    return [json.loads(r) if isinstance(r, bytes) else r for r in out]


def raw(client: Any, cid: str, message: dict[str, Any], cfg: DefaultConfig) -> list[bytes]:
    """Every reply as the bytes the client would receive."""
    return [
        r if isinstance(r, bytes) else json.dumps(r, separators=(",", ":")).encode()
        for r in replies(
            json.dumps(message),
            False,
            cfg.max_input_bytes,
            connection_id=cid,
            store=DynamoStore(cfg, client, cursor_key=KEY),
            settings=cfg,
        )
    ]


def writes(count: int, start: int = 0, pk: str = PARTITION) -> list[dict[str, Any]]:
    """``count`` stream records: an insert, then updates, of items in one partition."""
    return [
        stream(
            "INSERT",
            f"{500 + n:024d}",
            new={"n": n, "secret": f"s{n}"},
            key=(pk, f"ITEM#{n % 3}"),
        )
        for n in range(start, start + count)
    ]


def subscribe(cid: str, **fields: Any) -> dict[str, Any]:
    return {"action": "subscribe", "id": "s1", "table": SOURCE_LABEL, **fields}


def live(
    server: FakeManagementApi, world: Any, cfg: DefaultConfig, cid: str = "A=", **sub: Any
) -> dict[str, Any]:
    """A connected client with subscription s1; returns its ``subscribed`` reply."""
    connect(world, cid)
    server.connect(cid)
    (subscribed,) = send(world, cid, subscribe(cid, **sub), cfg)
    assert subscribed["type"] == "subscribed", subscribed
    return subscribed


def received_bytes(server: FakeManagementApi, cid: str) -> list[bytes]:
    with server.state.lock:
        return list(server.state.received.get(cid, []))


# --- recording ---------------------------------------------------------------------------


def test_each_change_is_recorded_once_per_topic_with_its_ttl_before_delivery(
    management_api: FakeManagementApi, world: Any
) -> None:
    wall = Clock()
    failures, stats = broadcaster(management_api, world, wall).run(writes(2), 1e12)
    assert failures == []
    items = world.scan(TableName=REPLAY)["Items"]
    topics = sorted({i["topic"]["S"] for i in items})
    part = key_topic(SOURCE_LABEL, [typed_part("S", PARTITION)])
    assert topics == sorted(
        [
            key_topic(SOURCE_LABEL, [typed_part("S", PARTITION), typed_part("S", "ITEM#0")]),
            key_topic(SOURCE_LABEL, [typed_part("S", PARTITION), typed_part("S", "ITEM#1")]),
            part,
            table_topic(SOURCE_LABEL, 0),
        ]
    )
    assert len(items) == 6 == stats.replayWritten  # 3 topics x 2 changes
    for item in items:
        recorded = Position.from_sort_text(item["at"]["S"]).recorded_at_ms
        assert int(item["ttl"]["N"]) == -(-recorded // 1000) + 3600


def test_a_retried_batch_rewrites_the_same_items(
    management_api: FakeManagementApi, world: Any
) -> None:
    wall = Clock()
    batch = writes(3)
    broadcaster(management_api, world, wall).run(batch, 1e12)
    first = {(i["topic"]["S"], i["change"]["S"]) for i in world.scan(TableName=REPLAY)["Items"]}
    broadcaster(management_api, world, wall).run(batch, 1e12)
    again = world.scan(TableName=REPLAY)["Items"]
    assert {(i["topic"]["S"], i["change"]["S"]) for i in again} == first
    assert len(again) == len(first) == 9


def test_positions_of_one_container_strictly_increase_in_stream_order(
    management_api: FakeManagementApi, world: Any
) -> None:
    b = broadcaster(management_api, world, Clock())
    b.wall = lambda: 1_795_000_000.0  # the clock never moves
    b.run(writes(5), 1e12)
    b.run(writes(2, start=5), 1e12)
    table = table_topic(SOURCE_LABEL, 0)
    items = [i for i in world.scan(TableName=REPLAY)["Items"] if i["topic"]["S"] == table]
    by_change = {i["change"]["S"]: Position.from_sort_text(i["at"]["S"]) for i in items}
    ordered = [by_change[f"evt-{500 + n:024d}"] for n in range(7)]
    assert ordered == sorted(ordered) and len(set(ordered)) == 7


def test_nothing_is_posted_when_the_replay_store_cannot_take_the_batch(
    management_api: FakeManagementApi, world: Any
) -> None:
    cfg = default_settings()
    live(management_api, world, cfg)
    world.delete_table(TableName=REPLAY)
    failures, stats = broadcaster(management_api, world, Clock()).run(writes(2), 1e12)
    assert failures == [{"itemIdentifier": f"{500:024d}"}]
    assert stats.delivered == 0 and management_api.messages("A=") == []


def test_with_resume_off_nothing_is_recorded_and_messages_still_carry_cursors(
    management_api: FakeManagementApi, world: Any
) -> None:
    cfg = default_settings(retention_seconds=0)
    live(management_api, world, cfg)
    failures, stats = broadcaster(management_api, world, Clock(), retention_seconds=0).run(
        writes(1), 1e12
    )
    assert failures == [] and stats.replayWritten == 0
    assert world.scan(TableName=REPLAY)["Items"] == []
    (message,) = management_api.messages("A=")
    assert isinstance(message["cursor"], str) and message["cursor"].startswith("c1.")


# --- cursors on live changes -------------------------------------------------------------


def test_a_cursor_names_the_change_and_resumes_every_subscription_it_matched(
    management_api: FakeManagementApi, world: Any
) -> None:
    cfg = default_settings()
    live(management_api, world, cfg)
    send(world, "A=", {**subscribe("A="), "id": "s2", "key": {"PK": PARTITION}}, cfg)
    broadcaster(management_api, world, Clock()).run(writes(1), 1e12)
    (message,) = management_api.messages("A=")
    assert message["matches"] == {"s1": "added", "s2": "added"}
    part = key_topic(SOURCE_LABEL, [typed_part("S", PARTITION)])
    for topic in (table_topic(SOURCE_LABEL, 0), part):
        position = read_cursor(KEY, message["cursor"], "alice", scope_digest(topic, None))
        assert position.change_id == message["id"]


def test_subscribed_carries_a_cursor_of_now_for_this_identity_and_scope(
    management_api: FakeManagementApi, world: Any
) -> None:
    subscribed = live(management_api, world, default_settings())
    position = read_cursor(
        KEY, subscribed["cursor"], "alice", scope_digest(table_topic(SOURCE_LABEL), None)
    )
    assert position.change_id == ""


# --- resume ------------------------------------------------------------------------------


def reconnect_with(world: Any, cfg: DefaultConfig, after: str, **sub: Any) -> list[Any]:
    connect(world, "B=")
    return send(world, "B=", subscribe("B=", after=after, **sub), cfg)


def test_resume_replays_exactly_what_was_missed_in_order_then_resumed(
    management_api: FakeManagementApi, world: Any
) -> None:
    cfg = default_settings()
    live(management_api, world, cfg)
    b = broadcaster(management_api, world, Clock())
    b.run(writes(3), 1e12)
    seen = management_api.messages("A=")
    b.run(writes(4, start=3), 1e12)  # written while the client was away
    missed = management_api.messages("A=")[3:]

    answer = reconnect_with(world, cfg, seen[-1]["cursor"])

    assert answer[0]["type"] == "subscribed"
    assert all(m.pop("replay") is True for m in answer[1:-1])  # told from live ones
    assert answer[1:-1] == missed
    assert answer[-1] == {
        "type": "resumed",
        "id": "s1",
        "replayed": 4,
        "cursor": missed[-1]["cursor"],
    }


def test_replayed_bytes_are_the_live_bytes_with_filter_and_trimmed_fields(
    management_api: FakeManagementApi, world: Any
) -> None:
    cfg = default_settings(OWN_PARTITION_TRIMMED)
    sub = {"key": {"PK": "EVENT#alice"}, "filter": [{"n": {"ge": 2}}]}
    subscribed = live(management_api, world, cfg, **sub)
    broadcaster(management_api, world, Clock()).run(writes(6, pk="EVENT#alice"), 1e12)
    delivered = received_bytes(management_api, "A=")
    assert len(delivered) == 4  # n = 2..5 pass the filter
    assert all(b'"secret"' not in one for one in delivered)  # the rule grants "n" only

    connect(world, "B=")
    answer = raw(world, "B=", subscribe("B=", after=subscribed["cursor"], **sub), cfg)

    # the live bytes, marked as a replay (before the cursor, which stays the last field)
    assert [one.replace(b',"replay":true,"cursor":', b',"cursor":') for one in answer[1:-1]] == (
        delivered
    )
    assert all(b',"replay":true,"cursor":"c1.' in one for one in answer[1:-1])
    assert json.loads(answer[-1])["replayed"] == 4


def test_the_overlap_replays_earlier_changes_too_in_order(
    management_api: FakeManagementApi, world: Any
) -> None:
    cfg = default_settings(overlap_ms=60_000)
    live(management_api, world, cfg)
    broadcaster(management_api, world, Clock()).run(writes(5), 1e12)
    received = management_api.messages("A=")

    answer = reconnect_with(world, cfg, received[2]["cursor"])

    assert [m["id"] for m in answer[1:-1]] == [m["id"] for m in received]


@pytest.mark.parametrize(
    "case",
    [
        "another user",
        "another key",
        "another filter",
        "malformed",
        "forged",
        "not ours",
        "a number",
        "a list",
        "empty",
    ],
)
def test_a_cursor_that_is_not_this_subscriptions_gets_reset_and_no_replay(
    management_api: FakeManagementApi, world: Any, case: str
) -> None:
    cfg = default_settings()
    live(management_api, world, cfg)
    broadcaster(management_api, world, Clock()).run(writes(2), 1e12)
    cursor = management_api.messages("A=")[0]["cursor"]
    sub: dict[str, Any] = {}
    user = "alice"
    if case == "another user":
        user = "mallory"
    elif case == "another key":
        sub = {"key": {"PK": PARTITION}}
    elif case == "another filter":
        sub = {"filter": [{"n": {"ge": 0}}]}
    elif case == "malformed":
        cursor = "c1.!!!"
    elif case == "forged":
        cursor = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    elif case == "not ours":
        cursor = make_cursor(cursor_key("another secret"), Position(1, "x"), "alice", "A" * 16)
    else:
        cursor = {"a number": 5, "a list": [cursor], "empty": ""}[case]
    connect(world, "B=", user)

    answer = send(world, "B=", subscribe("B=", after=cursor, **sub), cfg)

    assert [m["type"] for m in answer] == ["subscribed", "reset"]
    assert answer[1]["reason"] == "cursor_invalid" and answer[1]["id"] == "s1"
    assert answer[1]["cursor"] == answer[0]["cursor"]


def test_a_cursor_older_than_the_retention_gets_reset(
    management_api: FakeManagementApi, world: Any
) -> None:
    cfg = default_settings()
    subscribed = live(management_api, world, cfg)
    old = make_cursor(
        KEY, Position(1_000_000, ""), "alice", scope_digest(table_topic(SOURCE_LABEL), None)
    )
    answer = reconnect_with(world, cfg, old)
    assert [m["type"] for m in answer] == ["subscribed", "reset"]
    assert answer[1]["reason"] == "cursor_expired"
    assert read_cursor(
        KEY, subscribed["cursor"], "alice", scope_digest(table_topic(SOURCE_LABEL), None)
    )


def test_a_replay_longer_than_the_bound_gets_reset_before_anything_is_sent(
    management_api: FakeManagementApi, world: Any
) -> None:
    cfg = default_settings(max_changes=3)
    subscribed = live(management_api, world, cfg)
    broadcaster(management_api, world, Clock()).run(writes(4), 1e12)
    answer = reconnect_with(world, cfg, subscribed["cursor"])
    assert [m["type"] for m in answer] == ["subscribed", "reset"]
    assert answer[1]["reason"] == "replay_too_long"
    exactly = reconnect_with(world, default_settings(max_changes=4), subscribed["cursor"])
    assert exactly[-1]["type"] == "resumed" and exactly[-1]["replayed"] == 4


def test_resume_off_answers_reset(management_api: FakeManagementApi, world: Any) -> None:
    cfg = default_settings(retention_seconds=0)
    subscribed = live(management_api, world, cfg)
    answer = reconnect_with(world, cfg, subscribed["cursor"])
    assert [m["type"] for m in answer] == ["subscribed", "reset"]
    assert answer[1]["reason"] == "resume_off"


def a_minute_ago() -> Position:
    return Position(int(time.time() * 1000) - 60_000, "")


def resume_of(sub: Subscription, topic: str) -> Resume:
    return Resume(
        subscription=sub,
        topic=topic,
        key_names=("PK", "SK"),
        target_attribute=None,
        include_old=False,
    )


def replay_after(
    world: Any, sub: Subscription, topic: str, after: str, **options: Any
) -> list[Any]:
    """Every message a resume of ``sub`` after ``after`` sends, now (the store as is)."""
    options.setdefault("deadline", 1e12)
    return list(
        replay_messages(
            world,
            RESUME,
            KEY,
            resume_of(sub, topic),
            after,
            now_ms=int(time.time() * 1000) + 1000,
            **options,
        )
    )


def test_resume_follows_the_store_across_pages(
    management_api: FakeManagementApi, world: Any
) -> None:
    topic = table_topic(SOURCE_LABEL, 2)
    scope = scope_digest(topic, None)
    sub = Subscription("B=", "s1", (), None, "alice", scope)
    broadcaster(management_api, world, Clock()).run(writes(7), 1e12)
    start = make_cursor(KEY, a_minute_ago(), "alice", scope)

    out = replay_after(world, sub, topic, start, page_size=2)

    ids = [json.loads(m)["id"] for m in out[:-1] if isinstance(m, bytes)]
    assert ids == [f"evt-{500 + n:024d}" for n in range(7)]
    assert out[-1]["replayed"] == 7  # type: ignore[index]


def test_past_the_time_bound_the_replay_ends_with_reset(
    management_api: FakeManagementApi, world: Any
) -> None:
    topic = table_topic(SOURCE_LABEL, 0)
    scope = scope_digest(topic, None)
    sub = Subscription("B=", "s1", (), None, "alice", scope)
    broadcaster(management_api, world, Clock()).run(writes(5), 1e12)
    ticks = iter(range(100))

    out = replay_after(
        world,
        sub,
        topic,
        make_cursor(KEY, a_minute_ago(), "alice", scope),
        deadline=2,
        clock=lambda: float(next(ticks)),
    )

    assert [type(m) for m in out[:2]] == [bytes, bytes]
    assert out[-1]["type"] == "reset" and out[-1]["reason"] == "replay_timeout"  # type: ignore[index]
    assert len(out) == 3


def stored_truncated(world: Any, topic: str) -> None:
    """Record one change too large for the store, as the broadcaster would."""
    text = replay.record_text(
        "MODIFY",
        {"PK": {"S": PARTITION}, "SK": {"S": "BIG"}},
        {"PK": {"S": PARTITION}, "SK": {"S": "BIG"}, "blob": {"S": "x" * 300_000}},
        {"PK": {"S": PARTITION}, "SK": {"S": "BIG"}, "blob": {"S": "y" * 300_000}},
        {"type": "event_update", "action": "updated", "table": SOURCE_LABEL, "id": "evt-big"},
    )
    item = replay.replay_item(topic, "evt-big", int(time.time() * 1000) - 1000, text, 3600)
    assert item["truncated"] == {"BOOL": True}
    replay.record_change(world, REPLAY, [item])


@pytest.mark.parametrize("filtered", [False, True])
def test_a_truncated_change_replays_as_live_or_resets_when_a_filter_must_see_it(
    world: Any, filtered: bool
) -> None:
    topic = table_topic(SOURCE_LABEL, 0)
    filter_json = '[{"blob":{"exists":true}}]' if filtered else None
    scope = scope_digest(topic, filter_json)
    from handlers.filters import parse_filter

    compiled = parse_filter(json.loads(filter_json)) if filter_json else ()
    sub = Subscription("B=", "s1", compiled, None, "alice", scope)
    stored_truncated(world, topic)

    out = replay_after(world, sub, topic, make_cursor(KEY, a_minute_ago(), "alice", scope))

    if filtered:
        assert out == [
            {"type": "reset", "id": "s1", "reason": "replay_incomplete", "cursor": out[0]["cursor"]}  # type: ignore[index]
        ]
    else:
        message = json.loads(out[0])  # type: ignore[arg-type]
        assert message["truncated"] is True and message["matches"] == {"s1": "modified"}
        assert "data" not in message and out[-1]["replayed"] == 1  # type: ignore[index]


# --- the cursor secret, read from SSM without an SSM client --------------------------------


@pytest.fixture(scope="module")
def moto_server() -> Iterator[LocalAws]:
    server = LocalAws().start()
    yield server
    server.stop()


def test_the_secret_is_read_from_ssm_by_one_signed_request(
    moto_server: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto_server.environment().items():
        monkeypatch.setenv(name, value)
    aws.reset()
    moto_server.client("ssm").put_parameter(
        Name="/t/cursor", Value="s3cr3t-value", Type="SecureString", Overwrite=True
    )
    try:
        assert aws.secure_parameter("/t/cursor") == "s3cr3t-value"
        # read once per container: a changed value is not seen until a new one
        moto_server.client("ssm").put_parameter(
            Name="/t/cursor", Value="rotated", Type="SecureString", Overwrite=True
        )
        assert aws.secure_parameter("/t/cursor") == "s3cr3t-value"
        with pytest.raises(aws.ParameterError, match="ParameterNotFound"):
            aws.secure_parameter("/t/missing")
        cfg = default_settings()
        cfg = dataclasses.replace(
            cfg, resume=dataclasses.replace(cfg.resume, cursor_secret_parameter="/t/cursor")
        )
        assert DynamoStore(cfg).cursor_key() == cursor_key("s3cr3t-value")
    finally:
        aws.reset()


def test_an_unreachable_ssm_is_a_parameter_error_naming_the_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    monkeypatch.setattr(aws, "SSM_ATTEMPTS", 1)
    aws.reset()
    try:
        with pytest.raises(aws.ParameterError, match="/t/cursor: connection error"):
            aws.secure_parameter("/t/cursor")
    finally:
        aws.reset()


# --- snapshot on subscribe ---------------------------------------------------------------


@pytest.fixture
def source(world: Any) -> Any:
    create_source_table(world, SOURCE_TABLE, [("PK", "S"), ("SK", "S")])
    for n in range(5):
        world.put_item(
            TableName=SOURCE_TABLE,
            Item={
                "PK": {"S": "EVENT#alice"},
                "SK": {"S": f"ITEM#{n}"},
                "n": {"N": str(n)},
                "secret": {"S": "hidden"},
            },
        )
    world.put_item(
        TableName=SOURCE_TABLE,
        Item={"PK": {"S": "EVENT#bob"}, "SK": {"S": "ITEM#0"}, "n": {"N": "9"}},
    )
    return world


def test_a_snapshot_sends_the_keys_current_items_filtered_and_trimmed_then_live(
    management_api: FakeManagementApi, source: Any
) -> None:
    cfg = default_settings(OWN_PARTITION_TRIMMED)
    connect(source, "A=")
    management_api.connect("A=")

    answer = send(
        source,
        "A=",
        subscribe("A=", key={"PK": "EVENT#alice"}, filter=[{"n": {"ge": 2}}], snapshot=True),
        cfg,
    )

    subscribed, page = answer
    assert subscribed["type"] == "subscribed"
    assert page == {
        "type": "snapshot",
        "id": "s1",
        "items": [{"PK": "EVENT#alice", "SK": f"ITEM#{n}", "n": n} for n in (2, 3, 4)],
        "more": False,
        "cursor": subscribed["cursor"],
    }
    # the snapshot's cursor resumes the subscription: a change after it is replayed
    broadcaster(management_api, source, Clock()).run(writes(3, start=7, pk="EVENT#alice"), 1e12)
    connect(source, "B=")
    again = send(
        source,
        "B=",
        subscribe("B=", key={"PK": "EVENT#alice"}, filter=[{"n": {"ge": 2}}], after=page["cursor"]),
        cfg,
    )
    assert [m["type"] for m in again] == ["subscribed"] + ["event_update"] * 3 + ["resumed"]


def test_a_snapshot_too_large_for_its_bound_gets_reset_and_no_partial_page(
    management_api: FakeManagementApi, source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(default_module, "SnapshotLimits", lambda: SnapshotLimits(max_items=3))
    cfg = default_settings()
    connect(source, "A=")
    answer = send(source, "A=", subscribe("A=", key={"PK": "EVENT#alice"}, snapshot=True), cfg)
    assert [m["type"] for m in answer] == ["subscribed", "reset"]
    assert answer[1]["reason"] == "snapshot_too_large"
    assert answer[1]["cursor"] == answer[0]["cursor"]


def test_a_snapshot_is_paginated_with_more_until_the_last_page(
    management_api: FakeManagementApi, source: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(default_module, "SnapshotLimits", lambda: SnapshotLimits(page_bytes=200))
    cfg = default_settings()
    connect(source, "A=")
    answer = send(source, "A=", subscribe("A=", key={"PK": "EVENT#alice"}, snapshot=True), cfg)
    pages = answer[1:]
    assert len(pages) > 1 and all(p["type"] == "snapshot" for p in pages)
    assert [p["more"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert [i["SK"] for p in pages for i in p["items"]] == [f"ITEM#{n}" for n in range(5)]


def test_resume_with_snapshot_sends_no_snapshot_when_the_replay_is_complete(
    management_api: FakeManagementApi, source: Any
) -> None:
    cfg = default_settings()
    subscribed = live(management_api, source, cfg, key={"PK": "EVENT#alice"})
    connect(source, "B=")
    answer = send(
        source,
        "B=",
        subscribe("B=", key={"PK": "EVENT#alice"}, snapshot=True, after=subscribed["cursor"]),
        cfg,
    )
    assert [m["type"] for m in answer] == ["subscribed", "resumed"]


def test_a_reset_resume_with_snapshot_refetches_through_the_snapshot(
    management_api: FakeManagementApi, source: Any
) -> None:
    cfg = default_settings()
    connect(source, "B=")
    answer = send(
        source,
        "B=",
        subscribe("B=", key={"PK": "EVENT#alice"}, snapshot=True, after="c1.not-a-cursor"),
        cfg,
    )
    assert [m["type"] for m in answer] == ["subscribed", "reset", "snapshot"]
    assert answer[1]["reason"] == "cursor_invalid"
    assert len(answer[2]["items"]) == 5 and answer[2]["more"] is False


def test_a_snapshot_under_target_attribute_holds_only_the_subscribers_items(
    management_api: FakeManagementApi, source: Any
) -> None:
    cfg = dataclasses.replace(default_settings(), target_attribute="owner")
    source.put_item(
        TableName=SOURCE_TABLE,
        Item={"PK": {"S": "EVENT#alice"}, "SK": {"S": "MINE"}, "owner": {"S": "alice"}},
    )
    connect(source, "A=")
    answer = send(source, "A=", subscribe("A=", key={"PK": "EVENT#alice"}, snapshot=True), cfg)
    assert [i["SK"] for i in answer[1]["items"]] == ["MINE"]  # the others name no owner


# --- several shards: positions, not sequence numbers, order a resume ---------------------


class FixedClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("overlap_ms", [0, 5_000])
def test_a_change_recorded_before_the_cursor_but_delivered_after_it_is_replayed(
    management_api: FakeManagementApi, world: Any, overlap_ms: int
) -> None:
    """Two shards of one table, each with its own broadcaster (container): shard 1 records X,
    then is slow to post it; shard 2 records and posts Y 2 s later; the client saw Y (its
    cursor is Y's) and left before X arrived. Sequence numbers cannot order X and Y (each
    shard numbers its own records); positions can, and the overlap brings X back."""
    cfg = default_settings(overlap_ms=overlap_ms)
    live(management_api, world, cfg)
    now = time.time()
    shard1 = broadcaster(management_api, world, Clock())
    shard1.wall = FixedClock(now - 2.0)
    shard2 = broadcaster(management_api, world, Clock())
    shard2.wall = FixedClock(now)
    x = stream("INSERT", f"{1:024d}", new={"n": 1}, key=(PARTITION, "X"))
    y = stream("INSERT", f"{1:024d}", new={"n": 2}, key=(PARTITION, "Y"))
    y["eventID"] = "evt-shard2-1"
    reads, _ = shard1._read_all([x], BatchStats())
    positions = shard1._positions(reads)
    assert shard1._record(reads, positions, BatchStats())  # X recorded...
    shard2.run([y], 1e12)  # ...Y recorded and delivered
    (seen,) = management_api.messages("A=")
    assert seen["keys"]["SK"] == "Y"  # the client leaves now; X is posted after

    answer = reconnect_with(world, cfg, seen["cursor"])

    replayed = [m["keys"]["SK"] for m in answer[1:-1]]
    assert answer[-1]["type"] == "resumed"
    if overlap_ms:
        assert replayed == ["X", "Y"]  # in recorded order; Y again, de-duplicated by id
    else:
        assert replayed == []  # what the overlap is for: without it X would be lost


# --- the benchmark (``make bench``), small -------------------------------------------------


def run_resume_benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run(
        [sys.executable, "-m", "bench.resume", "--missed", "50", "--batches", "1", "--runs", "1",
         *args],
        cwd=root, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_resume_benchmark_replays_every_missed_change_with_live_writes_and_loses_none() -> None:
    # live changes rewrite the items being replayed: replay: true keeps them in order
    done = run_resume_benchmark()
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for figure in ("lost", "out of order per item", "bytes unlike the live ones"):
        assert re.search(rf"^{figure}\s+0$", out, re.M), out
    replayed = re.search(r"^replayed \(incl\. 60 s overlap\)\s+(\d+)$", out, re.M)
    assert replayed and int(replayed.group(1)) >= 50 + 5  # the 5 A had, by the overlap
    assert re.search(r"^ratio on/off\s+[\d.]+x", out, re.M), out
    assert "3 items per change" in out
    assert re.search(r"^OK: 50 missed changes resumed in [\d.]+ s", out, re.M), out
    assert "FAIL:" not in out


@pytest.mark.slow
def test_resume_benchmark_fails_when_resumed_comes_later_than_its_target() -> None:
    done = run_resume_benchmark("--live-items", "new", "--max-resume-seconds", "0.001")
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"^FAIL: resumed after [\d.]+ s > 0.001 s$", done.stdout, re.M)
    assert "OK:" not in done.stdout


def test_an_unreadable_cursor_secret_still_subscribes_without_cursors(
    management_api: FakeManagementApi, world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = default_settings()
    connect(world, "A=")

    def unreachable(self: DynamoStore) -> bytes:
        raise aws.ParameterError("could not read SSM parameter /test/cursor-secret: timeout")

    monkeypatch.setattr(DynamoStore, "cursor_key", unreachable)
    answer = send(world, "A=", subscribe("A=", after="c1.anything"), cfg)

    assert answer[0] == {"type": "subscribed", "id": "s1"}  # stored, no cursor to give
    assert answer[1]["type"] == "reset" and answer[1]["reason"] == "replay_failed"
    assert [i["subId"]["S"] for i in subscription_items(world, SUBSCRIPTIONS)] == ["s1"]
