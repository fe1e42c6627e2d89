"""Resume past the retention, end to end: a stack keeping changes 5 s with a 3 s broadcaster
timeout (so a resume replays from 3 s before its cursor), run by the emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe
from tests.emulator.test_resume import put

PK = "ROOM#retention"


@pytest.fixture(scope="module")
def short() -> Iterator[RunningEmulator]:
    yield from start(overrides={"replayRetentionSeconds": "5", "broadcasterTimeoutSeconds": "3"})


@pytest.mark.slow
def test_a_cursor_older_than_the_retention_gets_reset_and_a_fresh_one_resumes(
    short: RunningEmulator,
) -> None:
    with short.connect("erin") as client:
        subscribe(client, "s1", key={"PK": PK})
        put(short, "A", 1, pk=PK)
        cursor = receive_json(client)["cursor"]
    resubscribe = {"action": "subscribe", "id": "s1", "table": "events", "key": {"PK": PK}}
    with short.connect("erin") as client:  # within 5 - 3 = 2 s: still covered
        client.send(json.dumps({**resubscribe, "after": cursor}))
        answers = [receive_json(client) for _ in range(3)]
        assert [a["type"] for a in answers] == ["subscribed", "event_update", "resumed"]
    time.sleep(2.5)
    with short.connect("erin") as client:
        client.send(json.dumps({**resubscribe, "after": cursor}))
        assert receive_json(client)["type"] == "subscribed"
        reset = receive_json(client)
        assert (reset["type"], reset["reason"]) == ("reset", "cursor_expired"), reset
        put(short, "B", 2, pk=PK)  # live changes follow the reset
        live = receive_json(client)
        assert (live["keys"]["SK"], live["matches"]) == ("B", {"s1": "added"})
