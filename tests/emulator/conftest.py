"""The emulator, started for real on free ports on 127.0.0.1, in a background event loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from emulator.local import Emulator, EmulatorOptions
from tests.helpers import subscription_items


class RunningEmulator:
    """An Emulator whose event loop runs in a thread, so tests stay synchronous."""

    def __init__(self, options: EmulatorOptions) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.lines: list[str] = []
        options.log = self.lines.append
        options.write_state = False
        self.emulator = Emulator(options)

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> RunningEmulator:
        self.thread.start()
        self.call(self.emulator.start(), timeout=120)
        return self

    def stop(self) -> None:
        self.call(self.emulator.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    # -- helpers the tests share ------------------------------------------------------------

    def token(self, user: str, claims: dict[str, Any] | None = None, ttl: int = 3600) -> str:
        """A token the running stack accepts, with extra claims (e.g. ``{"role": "admin"}``)."""
        from handlers.tokens import mint_token

        cap = self.emulator.token_max_lifetime()
        return mint_token(user, self.emulator.secret, ttl, claims=claims, max_lifetime=cap)

    def connect(
        self, user: str = "alice", claims: dict[str, Any] | None = None, **kwargs: Any
    ) -> ClientConnection:
        url = f"{self.emulator.url}?token={self.token(user, claims)}"
        return connect(url, open_timeout=20, **kwargs)

    def dynamodb(self) -> Any:
        return self.emulator.aws.client("dynamodb")

    def table(self, logical: str = "events") -> str:
        return self.emulator.table_names()[logical]

    def connection_ids(self) -> set[str]:
        items = self.dynamodb().scan(TableName=self.emulator.connections_table())["Items"]
        return {item["connectionId"]["S"] for item in items}

    def subscriptions_table(self) -> str:
        """The topic index, as the functions' environment names it."""
        assert self.emulator.model is not None
        for function in self.emulator.model.functions.values():
            if "SUBSCRIPTIONS_TABLE" in function.environment:
                return function.environment["SUBSCRIPTIONS_TABLE"]
        raise LookupError("no function declares SUBSCRIPTIONS_TABLE")

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every stored subscription (a Scan of the emulator's moto table), without the
        topics' version items."""
        return subscription_items(self.dynamodb(), self.subscriptions_table())


def receive_json(client: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return dict(json.loads(client.recv(timeout=timeout)))


def subscribe(
    client: ClientConnection, sub_id: str = "s1", table: str = "events", **fields: Any
) -> dict[str, Any]:
    """Send a ``subscribe`` and require its ``subscribed`` (stored before it is answered,
    carrying the cursor of "now")."""
    client.send(json.dumps({"action": "subscribe", "id": sub_id, "table": table, **fields}))
    reply = receive_json(client)
    assert set(reply) == {"type", "id", "cursor"}, reply
    assert (reply["type"], reply["id"]) == ("subscribed", sub_id), reply
    assert isinstance(reply["cursor"], str) and reply["cursor"].startswith("c1."), reply
    return reply


def wait_for(condition: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start(**options: Any) -> Iterator[RunningEmulator]:
    """One emulator at a time per process (moto's state is process-wide): module fixtures."""
    running = RunningEmulator(EmulatorOptions(**options)).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def local() -> Iterator[RunningEmulator]:
    """The dev stack as `make dev` runs it (auth on; the demo table lets any signed-in user
    subscribe to the whole table or any partition)."""
    yield from start()
