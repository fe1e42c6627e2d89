"""The Python client against the emulator with short connection limits: its heartbeat keeps
a quiet socket past the idle timeout, and its planned reconnect before the maximum duration
leaves no gap (it opens the new socket and resumes before closing the old)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from realtime_client import Change, RealtimeError, Runtime, State, connect

from tests.clients.python.test_emulator import (
    Recorder,
    run,
    table_state,
    until,
    view_state,
    writes,
)
from tests.emulator.conftest import RunningEmulator, start


@pytest.fixture(scope="module")
def short_lived() -> Iterator[RunningEmulator]:
    """Connections cut after 3 idle seconds and after 10 seconds in any case."""
    yield from start(idle_timeout=3.0, max_connection=10.0)


@pytest.mark.slow
def test_heartbeat_outlives_the_idle_timeout_and_the_planned_reconnect_leaves_no_gap(
    short_lived: RunningEmulator,
) -> None:
    pk = "ROOM#planned"
    states: list[State] = []
    errors: list[RealtimeError] = []
    delivered: list[Change] = []
    recorder = Recorder()

    async def test() -> None:
        async with connect(
            short_lived.emulator.url,
            lambda: short_lived.token("henry"),
            on_state=states.append,
            on_error=errors.append,
            runtime=Runtime(connect=recorder.connect),
            heartbeat_interval=1.0,
            max_connection_age=10.0,
            planned_reconnect_margin=2.0,  # between 6 and 8 s after opening
        ) as client:
            sub = client.subscribe("events", key={"PK": pk}, on_change=delivered.append)
            await sub.ready(timeout=30)
            await asyncio.sleep(4.0)  # quiet past the 3 s idle timeout: the pings keep it
            assert client.socket_number == 1
            assert await asyncio.to_thread(writes, short_lived, pk, 40, 0.2) == 40  # 8 s
            assert client.socket_number >= 2  # the planned reconnect happened meanwhile
            final = await asyncio.to_thread(table_state, short_lived, pk)
            await until(lambda: view_state(sub) == final, 20, "the view to equal the table")

    run(test)
    ids = [c.id for c in delivered]
    assert len(ids) == len(set(ids)) == 40
    assert states == ["connecting", "open", "closed"]  # never "reconnecting": no gap
    pongs = [m for m in recorder.received if m.get("type") == "pong"]
    assert len(pongs) >= 3
    assert errors == []
