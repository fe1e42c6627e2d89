"""Queued fan-out end to end in the emulator: the broadcaster hands large audiences to the
sender function through the SQS FIFO queue (moto, polled as Lambda does), and every client
still gets every change once, in stream order, with its cursor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe

THRESHOLD = 3


@pytest.fixture(scope="module")
def queued() -> Iterator[RunningEmulator]:
    """The dev stack with a threshold of three recipients, on four sender processes."""
    yield from start(
        overrides={"fanoutThreshold": str(THRESHOLD), "fanoutGroups": "4"}, sender_workers=4
    )


def write(local: RunningEmulator, pk: str, n: int) -> None:
    local.dynamodb().put_item(
        TableName=local.table(),
        Item={"PK": {"S": pk}, "SK": {"S": f"N#{n:04d}"}, "n": {"N": str(n)}},
    )


def updates(client: ClientConnection, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    out = [receive_json(client, timeout) for _ in range(count)]
    assert all(m["type"] == "event_update" for m in out), out
    return out


def logged(local: RunningEmulator, function: str, message: str) -> list[dict[str, Any]]:
    """The JSON log lines ``function`` wrote with this message."""
    found = []
    for line in list(local.lines):
        prefix = f"[{function}] "
        text = line.split(prefix, 1)[1] if prefix in line else ""
        if text.startswith("{"):
            document = json.loads(text)
            if document.get("message") == message:
                found.append(document)
    return found


def test_inline_below_the_threshold_then_queued_for_good_and_never_reordered(
    queued: RunningEmulator,
) -> None:
    """A (table-wide) hears every change; B, C and D watch partition P. A change to Q reaches
    A alone (inline); one to P reaches four (queued, and the switch is made); the next
    change to Q reaches A alone again but must go through the queue too: posted inline it
    would overtake the queued one, and A would see Q2 before P1."""
    with (
        queued.connect("alice") as a,
        queued.connect("bob") as b,
        queued.connect("carol") as c,
        queued.connect("dave") as d,
    ):
        subscribe(a)
        for client in (b, c, d):
            subscribe(client, key={"PK": "ROOM#P"})
        write(queued, "ROOM#Q", 1)
        (first,) = updates(a, 1)
        assert first["data"]["n"] == 1
        write(queued, "ROOM#P", 2)
        write(queued, "ROOM#Q", 3)
        write(queued, "ROOM#P", 4)
        assert [m["data"]["n"] for m in updates(a, 3)] == [2, 3, 4]
        for client in (b, c, d):
            got = updates(client, 2)
            assert [m["data"]["n"] for m in got] == [2, 4]
            assert all(m["cursor"].startswith("c1.") for m in got)
    functions = {f.logical: f.name for f in queued.emulator.model.functions.values()}
    stats = logged(queued, functions["realtime-broadcaster"], "batch")
    assert sum(s["delivered"] for s in stats) == 1  # only the first change went inline
    assert sum(s["queuedRecords"] for s in stats) == 3
    jobs = logged(queued, functions["realtime-sender"], "jobs")
    assert sum(j["delivered"] for j in jobs) == 4 + 1 + 4


def test_the_sender_workers_share_the_stacks_whole_delivery_budget(
    queued: RunningEmulator,
) -> None:
    """Fewer sender processes than the mapping's maximumConcurrency each get a bigger share,
    so together they post at the stack's budget, not a fraction of it."""
    emulator = queued.emulator
    (sender,) = emulator.queued_concurrency()
    concurrency = emulator.queued_concurrency()[sender]
    workers = emulator.pool_sizes()[sender]
    assert (workers, concurrency) == (4, 18)
    rate = int(emulator.pools[sender].spec.environment["SENDER_RATE"])
    assert rate * workers == pytest.approx(500 * concurrency, abs=workers)
