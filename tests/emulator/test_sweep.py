"""The sweep end to end: an idle connection whose token has expired is closed by the
scheduled sweeper (every minute on AWS; every second here, ``schedule_every``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe, wait_for
from tests.emulator.test_token_lifetime import PK, short_lived


@pytest.fixture(scope="module")
def sweeping() -> Iterator[RunningEmulator]:
    yield from start(schedule_every=1.0)


@pytest.mark.slow
def test_an_idle_expired_connection_is_closed_by_the_sweep(sweeping: RunningEmulator) -> None:
    before = sweeping.connection_ids()
    with short_lived(sweeping, "ivan", 2) as idle, short_lived(sweeping, "judy", 600) as fresh:
        subscribe(idle, "s1", key={"PK": PK})
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):  # nothing sent, nothing received: the sweep
            idle.recv(timeout=15)
        assert time.monotonic() - started < 15
        fresh.send(json.dumps({"action": "ping"}))
        assert receive_json(fresh) == {"type": "pong"}
    wait_for(lambda: not sweeping.connection_ids() - before, what="$disconnect's clean-up")
