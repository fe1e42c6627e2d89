"""A fake clock and a fake server for the client's unit tests: no socket, no real time.

``FakeClock.sleep`` parks the caller until ``advance`` moves time past its deadline, so a
test decides when every timer of the client fires. ``FakeServer.connect`` is the client's
connect factory; each ``FakeSocket`` records what the client sent and answers the actions
in ``FakeServer.answers`` as the real server would (the rest the test answers itself).
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import itertools
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from realtime_client import Client, RealtimeError, Runtime, State, connect

START = 1_800_000_000.0
"""The fake clock's start, in epoch seconds (tokens carry ``exp`` in epoch seconds)."""
DROPPED = object()


async def settle(rounds: int = 50) -> None:
    """Let every ready task run (bounded)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class FakeClock:
    def __init__(self, start: float = START) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(delay, 0.0), next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its deadline, in order."""
        target = self.now + seconds
        await settle()
        for _ in range(10_000):
            while self._sleepers and self._sleepers[0][2].done():
                heapq.heappop(self._sleepers)
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            when, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            future.set_result(None)
            await settle()
        else:
            raise AssertionError("timers keep firing: a loop in the client?")
        self.now = target
        await settle()


def make_token(exp: float, sub: str = "alice") -> str:
    payload = json.dumps({"sub": sub, "exp": int(exp)}).encode()
    return base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + ".signature"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class FakeSocket:
    def __init__(self, server: FakeServer, url: str, number: int) -> None:
        self.server = server
        self.url = url
        self.number = number
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._incoming: asyncio.Queue[Any] = asyncio.Queue()

    # -- the Transport the client uses -----------------------------------------------------

    async def send(self, message: str) -> None:
        if self.closed is not None:
            raise ConnectionError("send on a closed socket")
        body = json.loads(message)
        self.sent.append(body)
        if body.get("action") in self.server.answers:
            for reply in self.server.answer(body):
                self.push(reply)

    async def recv(self) -> str | bytes:
        item = await self._incoming.get()
        if item is DROPPED:
            self._incoming.put_nowait(DROPPED)
            raise ConnectionError("the connection is closed")
        assert isinstance(item, str)
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
        self._incoming.put_nowait(DROPPED)

    # -- the test's side ---------------------------------------------------------------------

    def push(self, message: dict[str, Any]) -> None:
        self._incoming.put_nowait(json.dumps(message))

    def drop(self) -> None:
        """The server cuts the connection (a network drop, an @connections DELETE)."""
        self._incoming.put_nowait(DROPPED)

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("action") == action]


class FakeServer:
    """Answers like the real server: ``subscribed`` (then ``resumed`` after ``after``, an
    empty snapshot with ``snapshot``), ``pong``, ``unsubscribed``, ``authenticated`` (with
    the token's expiry), ``hello``."""

    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []
        self.refuse = 0
        """Refuse this many of the next connects."""
        self.answers = {"subscribe", "ping", "unsubscribe", "auth", "hello"}
        self.hello_expiry: float | None = None
        self.cursors = itertools.count(1)

    async def connect(self, url: str) -> FakeSocket:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionRefusedError("connection refused")
        socket = FakeSocket(self, url, len(self.sockets) + 1)
        self.sockets.append(socket)
        return socket

    @property
    def last(self) -> FakeSocket:
        return self.sockets[-1]

    def cursor(self) -> str:
        return f"c1.{next(self.cursors):06d}"

    def answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        action = body["action"]
        if action == "ping":
            return [{"type": "pong", "id": body["id"]}]
        if action == "unsubscribe":
            return [{"type": "unsubscribed", "id": body["id"]}]
        if action == "hello":
            return [
                {
                    "type": "hello",
                    "version": 2,
                    "expiresAt": self.hello_expiry and iso(self.hello_expiry),
                }
            ]
        if action == "auth":
            exp = json.loads(base64.urlsafe_b64decode(body["token"].split(".")[0] + "=="))["exp"]
            return [{"type": "authenticated", "expiresAt": iso(exp)}]
        replies: list[dict[str, Any]] = [
            {"type": "subscribed", "id": body["id"], "cursor": self.cursor()}
        ]
        if "after" in body:
            replies.append(
                {"type": "resumed", "id": body["id"], "replayed": 0, "cursor": body["after"]}
            )
        elif body.get("snapshot"):
            replies.append(
                {
                    "type": "snapshot",
                    "id": body["id"],
                    "items": [],
                    "more": False,
                    "cursor": replies[0]["cursor"],
                }
            )
        return replies


def change(
    sub_ids: dict[str, str],
    n: int,
    *,
    pk: str = "ROOM#1",
    sk: str | None = None,
    replay: bool = False,
    value: int | None = None,
    change_id: str | None = None,
) -> dict[str, Any]:
    """An ``event_update`` as the server sends it (``matches`` from ``sub_ids``)."""
    keys = {"PK": pk, "SK": sk or f"ITEM#{n}"}
    removed = all(kind == "removed" for kind in sub_ids.values())
    message: dict[str, Any] = {
        "type": "event_update",
        "action": "deleted" if removed else "created",
        "table": "events",
        "keys": keys,
        "matches": sub_ids,
        "id": change_id or f"change-{n}",
        "sequence": str(n),
        "timestamp": iso(START),
    }
    if not removed:
        message["data"] = {**keys, "n": n if value is None else value}
    if replay:
        message["replay"] = True
    message["cursor"] = f"c1.change-{n:06d}"
    return message


class Rig:
    """A client wired to a fake clock and a fake server, recording states and errors."""

    def __init__(self, token: Any = None, **settings: Any) -> None:
        self.clock = FakeClock()
        self.server = FakeServer()
        self.states: list[State] = []
        self.errors: list[RealtimeError] = []
        self.random = 0.5
        self.tokens = 0
        runtime = Runtime(
            clock=self.clock.time,
            wall_clock=self.clock.time,
            sleep=self.clock.sleep,
            random=lambda: self.random,
            connect=self.server.connect,
        )
        self.client: Client = connect(
            "ws://fake.invalid/dev",
            token if token is not None else self.fresh_token,
            on_state=self.states.append,
            on_error=self.errors.append,
            runtime=runtime,
            **settings,
        )

    async def fresh_token(self) -> str:
        self.tokens += 1
        return make_token(self.clock.now + 3600)

    def codes(self) -> list[str]:
        return [error.code for error in self.errors]


def run(test: Callable[[], Coroutine[Any, Any, None]], timeout: float = 20) -> None:
    """Run one async test, bounded in real time."""

    async def bounded() -> None:
        await asyncio.wait_for(test(), timeout)

    asyncio.run(bounded())
