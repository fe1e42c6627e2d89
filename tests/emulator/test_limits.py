"""Emulator limits made short: idle timeout and maximum connection duration."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from tests.emulator.conftest import RunningEmulator, start, wait_for
from tests.emulator.test_targets import connection_of


@pytest.fixture(scope="module")
def short_limits() -> Iterator[RunningEmulator]:
    yield from start(idle_timeout=1.0, max_connection=2.5)


def test_idle_connection_is_closed_and_its_record_removed(short_limits: RunningEmulator) -> None:
    before = short_limits.connection_ids()
    with short_limits.connect() as client:
        connected = time.monotonic()
        mine = connection_of(short_limits, "alice", before)
        with pytest.raises(ConnectionClosed) as closed:
            client.recv(timeout=10)
        assert 0.9 < time.monotonic() - connected < 4  # idle timeout 1 s, checked each second
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    wait_for(lambda: mine not in short_limits.connection_ids(), what="the record to go")


def test_busy_connection_is_still_closed_at_the_maximum_duration(
    short_limits: RunningEmulator,
) -> None:
    with short_limits.connect() as client:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while time.monotonic() - started < 10:
                client.send(json.dumps({"action": "ping"}))  # never idle
                client.recv(timeout=5)
                time.sleep(0.3)
        assert 2.0 < time.monotonic() - started < 5
