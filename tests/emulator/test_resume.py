"""Resume end to end: the dev stack in the emulator, real WebSocket clients over 127.0.0.1.

A client subscribes to a partition, is dropped by the server (``@connections`` DELETE, as a
phone losing its network would be), misses writes and deletes, reconnects with ``after``
and ends with exactly the table's items for its key; writes keep arriving during the resume
and none is lost.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe, wait_for
from tests.emulator.test_end_to_end import management

PK = "ROOM#resume"


@pytest.fixture(scope="module")
def local() -> Iterator[RunningEmulator]:
    yield from start()


def put(local: RunningEmulator, sk: str, n: int, pk: str = PK) -> None:
    local.dynamodb().put_item(
        TableName=local.table(),
        Item={"PK": {"S": pk}, "SK": {"S": sk}, "n": {"N": str(n)}},
    )


def remove(local: RunningEmulator, sk: str) -> None:
    local.dynamodb().delete_item(TableName=local.table(), Key={"PK": {"S": PK}, "SK": {"S": sk}})


def table_state(local: RunningEmulator, pk: str = PK) -> dict[str, int]:
    items = local.dynamodb().query(
        TableName=local.table(),
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )["Items"]
    return {i["SK"]["S"]: int(i["n"]["N"]) for i in items}


def drop(local: RunningEmulator, connection_id: str) -> None:
    """What `curl -X DELETE <managementEndpoint>/@connections/<id>` does (the README's step)."""
    management(local).delete_connection(ConnectionId=connection_id)


class View:
    """What a client library keeps: items by sort key, de-duplicated by (subscription, id),
    live changes held back until ``resumed``."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {}
        self.seen: set[str] = set()
        self.cursor: str | None = None
        self.applied: list[str] = []

    def apply(self, message: dict[str, Any]) -> None:
        assert message["type"] == "event_update", message
        self.cursor = message["cursor"]
        if message["id"] in self.seen:
            return
        self.seen.add(message["id"])
        self.applied.append(message["id"])
        sk = message["keys"]["SK"]
        if message["matches"]["s1"] == "removed":
            self.items.pop(sk, None)
        else:
            self.items[sk] = int(message["data"]["n"])


def resume(client: ClientConnection, view: View, **sub: Any) -> dict[str, Any]:
    """Subscribe with ``after``; apply replayed changes (``replay: true``) as they come and
    hold live ones back until ``resumed`` (or ``reset``), then apply those; the end."""
    client.send(
        json.dumps(
            {"action": "subscribe", "id": "s1", "table": "events", "after": view.cursor, **sub}
        )
    )
    first = receive_json(client)
    assert first["type"] == "subscribed", first
    held: list[dict[str, Any]] = []
    while True:
        message = receive_json(client)
        if message["type"] in ("resumed", "reset"):
            end = message
            break
        if message.get("replay") is True:
            view.apply(message)
        else:
            held.append(message)
    for message in held:
        view.apply(message)
    return end


def own_id(local: RunningEmulator, before: set[str]) -> str:
    (cid,) = wait_for(lambda: local.connection_ids() - before, what="the connection record")
    return str(cid)


@pytest.mark.slow
def test_a_dropped_client_resumes_to_exactly_the_tables_state_with_writes_continuing(
    local: RunningEmulator,
) -> None:
    view = View()
    before = local.connection_ids()
    with local.connect("alice") as first:
        subscribe(first, "s1", key={"PK": PK})
        cid = own_id(local, before)
        for n in range(3):
            put(local, f"ITEM#{n}", n)
        for _ in range(3):
            view.apply(receive_json(first))
        drop(local, cid)
        with pytest.raises(Exception):  # closed by the server  # noqa: B017
            while True:
                first.recv(timeout=10)

    # away: 10 writes (new items and overwrites) and 3 deletes
    for n in range(10):
        put(local, f"ITEM#{n % 6}", 100 + n)
    for sk in ("ITEM#0", "ITEM#4", "ITEM#5"):
        remove(local, sk)

    stop = threading.Event()
    written: list[int] = []

    def steady() -> None:  # 20 writes a second while the client resumes, bounded; half
        # of them to the items being replayed (a live change may overtake their replay)
        for n in range(60):
            if stop.is_set():
                return
            put(local, f"ITEM#{n % 6}" if n % 2 else f"LIVE#{n}", 1000 + n)
            written.append(n)
            time.sleep(0.05)

    writer = threading.Thread(target=steady, daemon=True)
    with local.connect("alice") as second:
        writer.start()
        end = resume(second, view, key={"PK": PK})
        assert end["type"] == "resumed" and end["id"] == "s1", end
        # what the broadcaster had recorded when the replay was read (the rest arrives live)
        assert end["replayed"] >= 1
        writer.join(10)
        stop.set()
        final = table_state(local)
        assert len(written) == 60 and len(final) == 4 + 30

        def caught_up() -> bool:
            with contextlib.suppress(TimeoutError):
                view.apply(receive_json(second, timeout=0.5))
            return view.items == final

        wait_for(caught_up, timeout=20, what="the client's view to equal the table")
    assert len(view.applied) == len(set(view.applied))


@pytest.mark.slow
def test_a_cursor_for_another_key_gets_reset_and_live_changes_follow(
    local: RunningEmulator,
) -> None:
    view = View()
    with local.connect("bob") as client:
        subscribe(client, "s1", key={"PK": "ROOM#other"})
        put(local, "A", 1, pk="ROOM#other")
        view.apply(receive_json(client))
    fresh = "ROOM#fresh"  # no earlier test's change is still on its way to it
    with local.connect("bob") as client:
        end = resume(client, view, key={"PK": fresh})
        assert end["type"] == "reset" and end["reason"] == "cursor_invalid", end
        assert end["cursor"].startswith("c1.")
        put(local, "AFTER", 7, pk=fresh)
        message = receive_json(client)
        assert message["keys"] == {"PK": fresh, "SK": "AFTER"}
        assert message["matches"] == {"s1": "added"}


@pytest.mark.slow
def test_another_user_cannot_resume_with_a_borrowed_cursor(local: RunningEmulator) -> None:
    view = View()
    with local.connect("carol") as client:
        subscribe(client, "s1", key={"PK": "ROOM#carol"})
        put(local, "A", 1, pk="ROOM#carol")
        view.apply(receive_json(client))
    with local.connect("mallory") as client:
        end = resume(client, view, key={"PK": "ROOM#carol"})
        assert end["reason"] == "cursor_invalid", end


@pytest.mark.slow
def test_a_snapshot_taken_while_writes_continue_agrees_with_the_live_changes_after_it(
    local: RunningEmulator,
) -> None:
    pk = "ROOM#snapshot"
    for n in range(30):
        put(local, f"OLD#{n:02d}", n, pk=pk)
    stop = threading.Event()

    def steady() -> None:  # overwrites and new items while the snapshot is read, bounded
        for n in range(60):
            if stop.is_set():
                return
            put(local, f"OLD#{n % 30:02d}" if n % 2 else f"NEW#{n:02d}", 500 + n, pk=pk)
            time.sleep(0.02)

    writer = threading.Thread(target=steady, daemon=True)
    view = View()
    with local.connect("dave") as client:
        writer.start()
        client.send(
            json.dumps(
                {
                    "action": "subscribe",
                    "id": "s1",
                    "table": "events",
                    "key": {"PK": pk},
                    "snapshot": True,
                }
            )
        )
        first = receive_json(client)
        assert first["type"] == "subscribed", first
        held: list[dict[str, Any]] = []
        while True:  # live changes may come before the last page: hold them back
            message = receive_json(client)
            if message["type"] == "snapshot":
                view.items.update({i["SK"]: int(i["n"]) for i in message["items"]})
                if not message["more"]:
                    break
            else:
                held.append(message)
        assert len(view.items) >= 30
        for message in held:
            view.apply(message)
        writer.join(10)
        stop.set()
        final = table_state(local, pk)

        def caught_up() -> bool:
            with contextlib.suppress(TimeoutError):
                view.apply(receive_json(client, timeout=0.5))
            return view.items == final

        wait_for(caught_up, timeout=20, what="snapshot + live changes to equal the table")
