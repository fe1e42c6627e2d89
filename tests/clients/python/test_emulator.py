"""The Python client end to end against the emulator (real sockets on 127.0.0.1): a forced
disconnect (``@connections`` DELETE) while writes continue, then automatic reconnect and
resume with nothing lost or duplicated; token refresh on a live socket; a forbidden
subscription reported through the error callback; the heartbeat past the idle timeout and
the planned reconnect before the maximum duration, without a gap."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from realtime_client import Change, RealtimeError, Reset, Runtime, State, Subscription, connect
from websockets.asyncio.client import connect as ws_connect

from tests.emulator.conftest import RunningEmulator, start
from tests.emulator.test_end_to_end import management

RULES = [
    {"key": {"PK": "USER#{sub}"}},  # a user: their own partition
    {"table": True, "when": {"claims.role": "admin"}},
]


@pytest.fixture(scope="module")
def strict() -> Iterator[RunningEmulator]:
    """The dev stack with per-user rules, as `make dev ARGS="--config sourceAccess=..."`."""
    yield from start(overrides={"sourceAccess": json.dumps(RULES)})


def run(test: Callable[[], Coroutine[Any, Any, None]], timeout: float = 90) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(test(), timeout)

    asyncio.run(bounded())


class RecordingSocket:
    """A websockets connection that records every message the server sent."""

    def __init__(self, socket: Any, received: list[dict[str, Any]]) -> None:
        self.socket = socket
        self.received = received

    async def send(self, message: str) -> None:
        await self.socket.send(message)

    async def recv(self) -> str | bytes:
        message: str | bytes = await self.socket.recv()
        self.received.append(json.loads(message))
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.socket.close(code, reason)


class Recorder:
    """The client's connect factory: real sockets, each message recorded."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.urls: list[str] = []

    async def connect(self, url: str) -> RecordingSocket:
        self.urls.append(url)
        return RecordingSocket(await ws_connect(url, open_timeout=20), self.received)


def put(local: RunningEmulator, pk: str, sk: str, n: int) -> None:
    local.dynamodb().put_item(
        TableName=local.table(), Item={"PK": {"S": pk}, "SK": {"S": sk}, "n": {"N": str(n)}}
    )


def remove(local: RunningEmulator, pk: str, sk: str) -> None:
    local.dynamodb().delete_item(TableName=local.table(), Key={"PK": {"S": pk}, "SK": {"S": sk}})


def table_state(local: RunningEmulator, pk: str) -> dict[str, int]:
    items = local.dynamodb().query(
        TableName=local.table(),
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )["Items"]
    return {i["SK"]["S"]: int(i["n"]["N"]) for i in items}


def drop_user(local: RunningEmulator, user: str, dropped: set[str]) -> int:
    """What `python -m emulator drop USER` does (an @connections DELETE of each of the user's
    sockets), to the ones not dropped before (whose records `$disconnect` may not have
    removed yet); returns how many it closed."""
    items = local.dynamodb().scan(TableName=local.emulator.connections_table())["Items"]
    ids = {i["connectionId"]["S"] for i in items if i.get("userId", {}).get("S") == user}
    for connection_id in ids - dropped:
        management(local).delete_connection(ConnectionId=connection_id)
    closed = len(ids - dropped)
    dropped |= ids
    return closed


def view_state(sub: Subscription) -> dict[str, int]:
    return {item["SK"]: int(item["n"]) for item in sub.view}


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def writes(local: RunningEmulator, pk: str, count: int, every: float) -> int:
    """``count`` writes to ``pk``, each one stream record: new items, overwrites with new
    values, and deletes of items that exist (a delete of a missing item records nothing)."""
    for n in range(count):
        if n % 10 == 5:
            remove(local, pk, f"ITEM#{(n - 1) % 6}")  # put by the write before
        else:
            put(local, pk, f"ITEM#{n % 6}", 1000 + n)
        time.sleep(every)
    return count


@pytest.mark.slow
def test_a_dropped_client_reconnects_and_resumes_with_nothing_lost_or_duplicated(
    strict: RunningEmulator,
) -> None:
    pk = "USER#alice"
    states: list[State] = []
    errors: list[RealtimeError] = []
    delivered: list[Change] = []
    recorder = Recorder()
    tokens: list[str] = []

    def token() -> str:
        tokens.append(strict.token("alice"))
        return tokens[-1]

    async def test() -> None:
        async with connect(
            strict.emulator.url,
            token,
            on_state=states.append,
            on_error=errors.append,
            runtime=Runtime(connect=recorder.connect),
            backoff_base=0.2,
            backoff_max=1.0,
        ) as client:
            sub = client.subscribe("events", key={"PK": pk}, snapshot=True)
            sub_changes = delivered
            sub._on_change_listener = sub_changes.append
            await sub.ready(timeout=30)
            writer = asyncio.ensure_future(asyncio.to_thread(writes, strict, pk, 60, 0.05))
            dropped: set[str] = set()
            for drops in (1, 2):  # two forced disconnects while the writes go on
                await asyncio.sleep(1.0)
                assert await asyncio.to_thread(drop_user, strict, "alice", dropped) == 1

                def reconnected(drops: int = drops) -> bool:
                    return states.count("reconnecting") == drops and client.state == "open"

                await until(reconnected, 20, "the reconnect")
            assert await writer == 60
            final = await asyncio.to_thread(table_state, strict, pk)
            await until(lambda: view_state(sub) == final, 30, "the view to equal the table")
            await asyncio.sleep(0.5)  # anything late would show now
            assert view_state(sub) == final

    run(test)
    changes = [c for c in delivered if c.origin != "snapshot"]
    ids = [c.id for c in changes]
    assert len(ids) == len(set(ids)) == 60  # every write once: nothing lost, nothing twice
    assert {c.origin for c in changes} == {"live", "replay"}  # some came through a resume
    raw = [m["id"] for m in recorder.received if m.get("type") == "event_update"]
    assert len(raw) > len(set(raw))  # the resumes' overlap repeated some: the client dropped them
    assert states == [
        "connecting",
        "open",
        "reconnecting",
        "open",
        "reconnecting",
        "open",
        "closed",
    ]
    assert len(tokens) == 3 and len(set(recorder.urls)) == 3  # a token for every socket
    assert errors == []


@pytest.mark.slow
def test_the_token_is_refreshed_on_the_live_socket_before_it_expires(
    strict: RunningEmulator,
) -> None:
    pk = "USER#grace"
    states: list[State] = []
    errors: list[RealtimeError] = []
    recorder = Recorder()
    minted: list[str] = []

    def token() -> str:  # tokens that live 4 s: refreshed about every 2 s
        minted.append(strict.token("grace", ttl=4))
        return minted[-1]

    async def test() -> None:
        async with connect(
            strict.emulator.url,
            token,
            on_state=states.append,
            on_error=errors.append,
            runtime=Runtime(connect=recorder.connect),
        ) as client:
            sub = client.subscribe("events", key={"PK": pk})
            await sub.ready(timeout=30)
            first_expiry = client.expires_at
            assert await asyncio.to_thread(writes, strict, pk, 9, 1.0) == 9  # 9 s: past 2 expiries
            final = await asyncio.to_thread(table_state, strict, pk)
            await until(lambda: view_state(sub) == final, 20, "the view to equal the table")
            assert client.expires_at is not None and first_expiry is not None
            assert client.expires_at > first_expiry + 4

    run(test)
    authenticated = [m for m in recorder.received if m.get("type") == "authenticated"]
    assert len(authenticated) >= 3 and len(minted) == 1 + len(authenticated)
    assert states == ["connecting", "open", "closed"]  # one socket all along, never cut
    assert len(recorder.urls) == 1 and errors == []


def test_a_forbidden_subscription_is_reported_through_the_error_callback(
    strict: RunningEmulator,
) -> None:
    refused: list[RealtimeError] = []
    everything: list[RealtimeError] = []
    mine: list[Change] = []

    async def test() -> None:
        async with connect(
            strict.emulator.url, lambda: strict.token("alice"), on_error=everything.append
        ) as client:
            peek = client.subscribe("events", key={"PK": "USER#bob"}, on_error=refused.append)
            own = client.subscribe("events", key={"PK": "USER#alice"}, on_change=mine.append)
            with pytest.raises(RealtimeError) as raised:
                await peek.ready(timeout=30)
            assert raised.value.code == "forbidden"
            await own.ready(timeout=30)
            await asyncio.to_thread(put, strict, "USER#alice", "FORBIDDEN-TEST", 1)
            await until(lambda: len(mine) == 1, 20, "alice's own change")
            assert peek.state == "failed" and peek not in client.subscriptions

    run(test)
    (error,) = refused
    assert (error.code, error.server, error.subscription_id) == ("forbidden", True, "s1")
    assert everything == []  # the subscription's own listener took it
    assert mine[0].keys == {"PK": "USER#alice", "SK": "FORBIDDEN-TEST"}


def test_a_reset_on_resume_is_refetched_through_the_snapshot(strict: RunningEmulator) -> None:
    pk = "USER#ivan"
    resets: list[Reset] = []
    delivered: list[Change] = []
    errors: list[RealtimeError] = []

    async def test() -> None:
        async with connect(
            strict.emulator.url,
            lambda: strict.token("ivan"),
            on_error=errors.append,
            runtime=Runtime(random=lambda: 0.75),
            backoff_base=2.0,  # back 1.5 s after the drop: the write below is made while away
            stable_after=0.1,
        ) as client:
            sub = client.subscribe(
                "events", key={"PK": pk}, on_change=delivered.append, on_reset=resets.append
            )
            await sub.ready(timeout=30)
            await asyncio.to_thread(put, strict, pk, "ITEM#1", 1)
            await until(lambda: len(delivered) == 1, 20, "the first change")
            sub.cursor = "c1.not-a-cursor"  # as if it had expired: the server cannot resume it
            assert await asyncio.to_thread(drop_user, strict, "ivan", set()) == 1
            await asyncio.to_thread(put, strict, pk, "ITEM#2", 2)  # while away (posts get 410)
            await until(lambda: len(resets) == 1 and sub.state == "live", 30, "the refetch")
            assert view_state(sub) == await asyncio.to_thread(table_state, strict, pk)

    run(test)
    assert resets[0].reason == "cursor_invalid" and resets[0].refetched is True
    assert [(c.kind, c.keys["SK"], c.origin) for c in delivered] == [
        ("added", "ITEM#1", "live"),
        ("added", "ITEM#2", "snapshot"),  # what the refetch found that the view lacked
    ]
    assert errors == []
