"""End to end through the emulator: DynamoDB write -> stream -> broadcaster -> WebSocket clients.

The whole dev stack runs on this machine as ``make dev`` runs it
(``emulator.local.Emulator`` with the default ``dev`` configuration: auth on,
the demo table ``events`` open to any signed-in user): the embedded moto
server, the aiohttp gateway and the stream poller on the emulator's own
asyncio loop in a background thread of this process, each Lambda function in
its worker processes.

1. ``--clients`` real WebSocket clients (``aiohttp`` ``ws_connect``), users
   ``user-0`` .. ``user-N-1``, each with its own minted token, connect
   ``--connect-concurrency`` at a time and each sends one ``subscribe`` and
   waits for ``subscribed``: the even-numbered half to a partition
   (``key {"PK": "<run>ROOM#r"}``, client ``2k`` on room ``k mod
   --partitions``: a room, an order, a tenant watched by a dozen users), the
   other half to the whole table with a filter (``status`` in new/paid and
   ``n >= 0``: a string and a number condition). The connect time runs until
   all N connection records and N subscriptions exist (scans, this process's
   own checks; the broadcaster never scans).
2. A writer thread puts ``--rate`` items per second for ``--duration`` seconds
   into the source table (logical ``events``): item ``i`` in room ``i mod
   --partitions`` (``SK`` unique), ``status`` cycling new, paid, shipped (so a
   third is outside the filter), ``sentAt`` = ``time.time()`` taken just
   before its ``put_item``. Every room gets items, so every client has
   something to receive: a room's subscribers get its items, the table-wide
   ones two thirds of all items.
3. Every client timestamps each ``event_update`` it receives; the latency of a
   delivery is receive time - ``sentAt`` of the item named by ``keys.SK``
   (same host, same clock). Deliveries are de-duplicated by (subscription
   id, change id), as the protocol tells clients to.
4. After the last write the run waits until every client has every item its
   subscription should see, or ``--drain-timeout`` seconds; then the clients
   disconnect and the run waits until no connection record and no
   subscription is left.

Printed: clients and their subscriptions, items, deliveries expected/received,
lost (expected, never received), duplicates, reordered, unexpected (an item outside the
client's subscription, or a ``matches`` other than ``added`` under its own
subscription id), write-to-receive latency p50/p95/p99/max over every
delivery, the same per item for the first and the last client reached (the
pipeline's latency vs. the fan-out's spread), the broadcaster's invocations
and its own per-batch figures (from its ``batch`` log lines), the CPU seconds
each part used during the write phase, this process's memory, the CPU count,
what disconnect left behind, then the verdict. Exit status 1 when a latency
target is missed, a delivery is lost, duplicated or unexpected, a client
could not connect or subscribe, or a record or subscription outlives its
connection.

A warm-up item (``--warmup``, default 1) goes through first and is not
counted: the broadcaster's first fan-out also opens its keep-alive connections
and starts its sender threads (~0.3 s more), which ``bench.coldstart`` covers.

Where the clients run (``--client-mode``). Everything shares the machine's 2
cores anyway (gateway, moto, poller, workers, clients); the question is only
whether the 500 clients also share the emulator's GIL. In ``inprocess`` mode
they run on this process's main asyncio loop, so every received frame is
parsed under the same GIL as the gateway's ``@connections`` handler and moto,
and the receive timestamps also measure that contention, which the deployed
system does not have (clients are elsewhere, API Gateway is not Python). In
``subprocess`` mode (the default) this same module runs the clients in a
second interpreter (``--client-process``, driven over its stdin/stdout), so
they compete for CPU only, like any load generator on the same box. Measured
both ways on the 2-core machine before subscriptions (500 clients each
receiving every item, 2 writes/s, 30 s, same code): in-process p50 255 ms /
p99 627 ms, the clients' loop taking 2.0 CPU-s of the emulator's GIL, against
subprocess p50 223-237 ms / p99 540-588 ms; after the fixes that came out of
this benchmark, in-process 202 / 542 ms against subprocess 183-219 / 439-537
ms. Subprocess is the default; ``--client-mode inprocess`` stays for
comparison.

Options for the queued fan-out (``bench.fanout_e2e`` drives them):
``--subscriptions table`` (every client table-wide without a filter: every client gets
every item); ``--config KEY=VALUE`` (repeatable: stack config overrides, e.g.
``queuedFanout=false`` for the broadcaster posting everything); ``--sender-workers N``;
``--curve 1,2,4`` with ``--curve-duration``: after the main phase, one short phase per rate
on the same connected clients (each its own items), ascending, stopping at the first whose
p99 exceeds ``--curve-p99-ms`` or that loses, duplicates, misdelivers or reorders anything;
the capacity is the most deliveries/s of a phase that passed (the curve is reported, not
judged); ``--json PATH`` writes every figure. A delivery is **reordered** when its item is
numbered lower than one the client already received (write order is item number); it fails
the verdict like a lost one. The sender's ``jobs`` log lines (jobs, delivered, pacedMs) and
the SQS poller's counters are printed next to the broadcaster's (queuedRecords,
jobsQueued); the CPU per part includes the sender's workers. The drain, the emulator's stop
and the process's exit are bounded (``EXIT_GRACE``).

    python -m bench.e2e [--clients 500] [--rate 2] [--duration 30] [--partitions 20]
                        [--p50-ms 200] [--p99-ms 750] [--drain-timeout 30] [--warmup 1]
                        [--connect-concurrency 25] [--client-mode subprocess|inprocess]
                        [--subscriptions mixed|table] [--config KEY=VALUE ...]
                        [--sender-workers N] [--curve R,R,...] [--curve-duration 12]
                        [--curve-p99-ms 2000] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from emulator.__main__ import _config_pair, _workers

ROOT = Path(__file__).resolve().parent.parent
SECRET_VARIABLE = "BENCH_E2E_SECRET"  # noqa: S105 (the name of a variable)
START_TIMEOUT = 180.0
"""Seconds for the emulator to come up."""
CONNECT_TIMEOUT = 180.0
"""Seconds for all clients to connect and their records to appear."""
HANDSHAKE_TIMEOUT = 60.0
CLOSE_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0
CHILD_REPLY_TIMEOUT = 30.0
"""Seconds the parent waits for the client process beyond the phase's own bound."""
RESULT_LIMIT = 64 * 1024 * 1024


# -- what the clients subscribe to and what each should receive (pure) ---------------------------

SOURCE = "events"
"""The demo table's label: what ``subscribe`` names and ``event_update`` carries."""
FILTER: list[dict[str, Any]] = [{"status": {"in": ["new", "paid"]}, "n": {"ge": 0}}]
"""The table-wide subscribers' filter."""
STATUSES = ("new", "paid", "shipped")
"""Item ``i``'s status is ``STATUSES[i % 3]``: every third item is outside ``FILTER``."""
KEYED_ID = "room"
TABLE_ID = "feed"
SUBSCRIPTIONS = ("mixed", "table")
"""``--subscriptions``: what the clients watch (``Plan``)."""


class Plan:
    """Who subscribes to what, which item goes where, and so who should receive what.

    ``subscriptions`` ``mixed`` (the default): even-numbered clients watch a partition,
    odd-numbered ones the whole table with ``FILTER``; ``table``: every client watches the
    whole table with no filter, so every client should receive every item.
    """

    def __init__(
        self, prefix: str, clients: int, partitions: int, subscriptions: str = "mixed"
    ) -> None:
        if clients < 1 or partitions < 1:
            raise ValueError("clients and partitions must be >= 1")
        if subscriptions not in SUBSCRIPTIONS:
            raise ValueError(f"subscriptions must be one of {', '.join(SUBSCRIPTIONS)}")
        self.prefix = prefix
        self.clients = clients
        self.partitions = partitions
        self.subscriptions = subscriptions

    def keyed(self, client: int) -> bool:
        """In ``mixed``, even-numbered clients watch a partition, odd-numbered ones the whole
        table; in ``table``, none watches a partition."""
        return self.subscriptions == "mixed" and client % 2 == 0

    @property
    def filtered(self) -> bool:
        """Whether the table-wide subscribers have ``FILTER``."""
        return self.subscriptions == "mixed"

    def room_of_client(self, client: int) -> int:
        return (client // 2) % self.partitions

    def room_key(self, room: int) -> str:
        return f"{self.prefix}ROOM#{room:04d}"

    def subscribe(self, client: int) -> dict[str, Any]:
        """The ``subscribe`` message client ``client`` sends."""
        if self.keyed(client):
            return {
                "action": "subscribe",
                "id": KEYED_ID,
                "table": SOURCE,
                "key": {"PK": self.room_key(self.room_of_client(client))},
            }
        if not self.filtered:
            return {"action": "subscribe", "id": TABLE_ID, "table": SOURCE}
        return {"action": "subscribe", "id": TABLE_ID, "table": SOURCE, "filter": FILTER}

    def item(self, number: int, sent_at: float) -> dict[str, Any]:
        """Item ``number`` as ``put_item`` writes it (its ``SK`` names it: ``item_id``)."""
        return {
            "PK": {"S": self.room_key(number % self.partitions)},
            "SK": {"S": self.item_id(number)},
            "status": {"S": STATUSES[number % len(STATUSES)]},
            "n": {"N": str(number)},
            "sentAt": {"N": repr(sent_at)},
        }

    def item_id(self, number: int) -> str:
        return f"{self.prefix}{number:06d}"

    def item_number(self, item_id: str) -> int | None:
        """The number of this run's item ``item_id`` (its write order), None if not one."""
        if not item_id.startswith(self.prefix):
            return None
        try:
            return int(item_id[len(self.prefix) :])
        except ValueError:
            return None

    def expected(self, numbers: Iterable[int]) -> tuple[dict[str, list[str]], list[str]]:
        """For the items written, (group -> item ids it should receive, each client's group):
        a room's subscribers get every item of the room, the table-wide ones those the
        filter admits (every item without a filter)."""
        groups: dict[str, list[str]] = {TABLE_ID: []}
        for number in sorted(numbers):
            room = f"{KEYED_ID}{number % self.partitions}"
            groups.setdefault(room, []).append(self.item_id(number))
            if not self.filtered or STATUSES[number % len(STATUSES)] in FILTER[0]["status"]["in"]:
                groups[TABLE_ID].append(self.item_id(number))
        members = [
            f"{KEYED_ID}{self.room_of_client(c)}" if self.keyed(c) else TABLE_ID
            for c in range(self.clients)
        ]
        return groups, members

    def subscription_id(self, client: int) -> str:
        return KEYED_ID if self.keyed(client) else TABLE_ID

    def describe(self, keyed: int) -> str:
        """Who watches what, for the report."""
        if not self.filtered:
            return f"all {self.clients} table-wide without a filter"
        return (
            f"{keyed} on one of {self.partitions} partitions,"
            f" {self.clients - keyed} table-wide with a filter"
        )


# -- the clients (in this process or in the client process) --------------------------------------


class Client:
    """One WebSocket client: what it received and when."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.task: asyncio.Task[None] | None = None
        self.deliveries: list[tuple[str, str, str, str, float]] = []
        """(item id, subscription id, matches kind, change id, latency s) of every delivery
        of this run's items, under each subscription ``matches`` names, duplicates included."""
        self.expected: set[str] | None = None
        """Item ids it should receive, once the writes are done (``drain``)."""
        self.got: set[str] = set()
        """Of ``expected``, those received."""
        self.other_messages = 0
        self.closed_early: str | None = None


class Fleet:
    """N clients on the running loop."""

    def __init__(self, url: str, token: Callable[[str], str], prefix: str) -> None:
        self.url = url
        self.token = token
        self.prefix = prefix
        self.clients: list[Client] = []
        self.remaining = 0
        """Expected deliveries not received yet (set by ``drain``)."""
        self.errors: list[str] = []
        self.closing = False
        self._session: aiohttp.ClientSession | None = None

    async def connect(
        self, count: int, concurrency: int, subscriptions: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Connect ``count`` clients, ``concurrency`` at a time; each sends its subscription
        (``subscriptions[i]``) and waits for ``subscribed`` before the next one starts."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=HANDSHAKE_TIMEOUT),
        )
        gate = asyncio.Semaphore(concurrency)
        started = time.monotonic()

        async def one(index: int) -> None:
            client = Client(index)
            subscribe = subscriptions[index]
            async with gate:
                try:
                    ws = await self._session.ws_connect(  # type: ignore[union-attr]
                        f"{self.url}?token={self.token(f'user-{index}')}",
                        autoping=True,
                        heartbeat=None,
                        max_msg_size=1024 * 1024,
                    )
                except Exception as exc:  # reported; the run fails
                    self.errors.append(f"client {index}: connect failed: {exc!r}")
                    return
                client.ws = ws
                self.clients.append(client)  # closed with the others, even if not subscribed
                try:
                    await ws.send_json(subscribe)
                    answer = await ws.receive_json(timeout=HANDSHAKE_TIMEOUT)
                except Exception as exc:
                    self.errors.append(f"client {index}: subscribe failed: {exc!r}")
                    return
                if (answer.get("type"), answer.get("id")) != ("subscribed", subscribe["id"]):
                    self.errors.append(f"client {index}: subscribe answered {answer}")
                    return
            client.task = asyncio.ensure_future(self._receive(client))

        await asyncio.gather(*(one(i) for i in range(count)))
        self.clients.sort(key=lambda c: c.index)
        subscribed = sum(1 for c in self.clients if c.task is not None)
        return {
            "connected": len(self.clients),
            "subscribed": subscribed,
            "failed": count - subscribed,
            "seconds": time.monotonic() - started,
            "errors": self.errors[:10],
        }

    async def _receive(self, client: Client) -> None:
        assert client.ws is not None
        prefix = self.prefix
        try:
            async for message in client.ws:
                now = time.time()
                if message.type != aiohttp.WSMsgType.TEXT:
                    client.other_messages += 1
                    continue
                body = json.loads(message.data)
                if body.get("type") != "event_update":
                    client.other_messages += 1
                    continue
                item = (body.get("keys") or {}).get("SK")
                matches = body.get("matches")
                if not isinstance(item, str) or not item.startswith(prefix):
                    client.other_messages += 1  # the warm-up's
                    continue
                try:
                    latency = now - float(body["data"]["sentAt"])
                except (KeyError, TypeError, ValueError):
                    latency = math.nan  # no data: still a delivery (it counts as unexpected)
                change = str(body.get("id"))
                for sub_id, kind in (matches if isinstance(matches, dict) else {"": ""}).items():
                    client.deliveries.append((item, str(sub_id), str(kind), change, latency))
                expected = client.expected
                if expected is not None and item in expected and item not in client.got:
                    client.got.add(item)
                    self.remaining -= 1
        except Exception as exc:
            client.closed_early = repr(exc)
        if not self.closing and client.closed_early is None:
            code = client.ws.close_code
            client.closed_early = f"closed by the server (code {code})"

    async def drain(
        self, groups: dict[str, list[str]], members: list[str], timeout: float
    ) -> float:
        """Wait until every client has every item its group should receive, or ``timeout``;
        the seconds waited."""
        started = time.monotonic()
        sets = {name: set(items) for name, items in groups.items()}
        remaining = 0
        for client in self.clients:
            client.expected = sets[members[client.index]]
            client.got = {d[0] for d in client.deliveries} & client.expected
            remaining += len(client.expected) - len(client.got)
        self.remaining = remaining  # the loop is single-threaded: no delivery in between
        while self.remaining > 0 and time.monotonic() - started < timeout:
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    def results(self) -> dict[str, Any]:
        """What the clients received since the last ``results``, which starts the next phase
        afresh (each phase of a run writes its own items: ``--curve``)."""
        found = {
            "deliveries": {str(c.index): c.deliveries for c in self.clients},
            "other_messages": sum(c.other_messages for c in self.clients),
            "closed_early": [
                f"client {c.index}: {c.closed_early}" for c in self.clients if c.closed_early
            ],
        }
        for client in self.clients:
            client.deliveries = []
            client.expected = None
            client.got = set()
            client.other_messages = 0
        self.remaining = 0
        return found

    async def close(self) -> None:
        self.closing = True
        sockets = [c.ws for c in self.clients if c.ws is not None and not c.ws.closed]
        if sockets:
            await asyncio.wait(
                [asyncio.ensure_future(ws.close()) for ws in sockets], timeout=CLOSE_TIMEOUT
            )
        tasks = [c.task for c in self.clients if c.task is not None and not c.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None


class InProcessClients:
    """The clients on this process's main loop."""

    def __init__(self, url: str, token: Callable[[str], str], prefix: str) -> None:
        self.fleet = Fleet(url, token, prefix)
        self.pid: int | None = None

    async def connect(
        self, count: int, concurrency: int, subscriptions: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return await self.fleet.connect(count, concurrency, subscriptions)

    async def drain(
        self, groups: dict[str, list[str]], members: list[str], timeout: float
    ) -> dict[str, Any]:
        waited = await self.fleet.drain(groups, members, timeout)
        return {"drain_seconds": waited, **self.fleet.results()}

    async def close(self) -> None:
        await self.fleet.close()


class SubprocessClients:
    """The clients in ``python -m bench.e2e --client-process``, one JSON line per exchange."""

    def __init__(self, url: str, secret: str, prefix: str) -> None:
        self.url = url
        self.secret = secret
        self.prefix = prefix
        self.proc: asyncio.subprocess.Process | None = None
        self.connect_timeout = CONNECT_TIMEOUT

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the client process exited without answering")
        return dict(json.loads(line))

    async def _send(self, command: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()

    async def connect(
        self, count: int, concurrency: int, subscriptions: list[dict[str, Any]]
    ) -> dict[str, Any]:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.e2e",
            "--client-process",
            "--url",
            self.url,
            "--prefix",
            self.prefix,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, SECRET_VARIABLE: self.secret},
            limit=RESULT_LIMIT,
        )
        await self._send(
            {"connect": count, "concurrency": concurrency, "subscriptions": subscriptions}
        )
        return await self._reply(self.connect_timeout)

    async def drain(
        self, groups: dict[str, list[str]], members: list[str], timeout: float
    ) -> dict[str, Any]:
        await self._send({"drain": {"groups": groups, "members": members}, "timeout": timeout})
        return await self._reply(timeout + CHILD_REPLY_TIMEOUT)

    async def close(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self._send({"close": True})
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), CLOSE_TIMEOUT + 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def client_process(url: str, prefix: str) -> None:
    """The client side of ``SubprocessClients``: commands on stdin, answers on stdout."""
    from handlers.tokens import mint_token

    secret = os.environ[SECRET_VARIABLE]
    fleet = Fleet(url, lambda user: mint_token(user, secret, 3600), prefix)

    def answer(document: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:  # the parent is gone
                return
            command = json.loads(line)
            if "connect" in command:
                answer(
                    await fleet.connect(
                        int(command["connect"]),
                        int(command["concurrency"]),
                        list(command["subscriptions"]),
                    )
                )
            elif "drain" in command:
                plan = command["drain"]
                waited = await fleet.drain(
                    plan["groups"], plan["members"], float(command["timeout"])
                )
                answer({"drain_seconds": waited, **fleet.results()})
            else:
                return
    finally:
        await fleet.close()


# -- the emulator on its own loop ------------------------------------------------------------------


class RunningEmulator:
    """The emulator on an asyncio loop in a background thread; its log lines kept, not printed."""

    def __init__(
        self, overrides: dict[str, str] | None = None, sender_workers: int | None = None
    ) -> None:
        from emulator.local import Emulator, EmulatorOptions, default_sender_workers

        self.lines: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="emulator-loop", daemon=True
        )
        self.secret = secrets.token_hex(32)
        self.emulator = Emulator(
            EmulatorOptions(
                secret=self.secret,
                log=self.lines.append,
                write_state=False,
                overrides=dict(overrides or {}),
                sender_workers=sender_workers or default_sender_workers(),
            )
        )
        self.started = False

    def call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> None:
        self.thread.start()
        self.started = True
        self.call(self.emulator.start(), START_TIMEOUT)

    def stop(self) -> None:
        if self.started:
            try:
                self.call(self.emulator.stop(), STOP_TIMEOUT)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()

    def subscriptions_table(self) -> str:
        """The subscriptions (topic index) table the stack's functions are given."""
        assert self.emulator.model is not None
        for function in self.emulator.model.functions.values():
            if "SUBSCRIPTIONS_TABLE" in function.environment:
                return function.environment["SUBSCRIPTIONS_TABLE"]
        raise LookupError("no function declares SUBSCRIPTIONS_TABLE")

    def broadcaster_invocations(self) -> int:
        return sum(poller.invocations for poller in self.emulator.pollers)

    def sender_invocations(self) -> int:
        return sum(poller.invocations for poller in self.emulator.queue_pollers)

    def senders_busy(self) -> int:
        """Sender invocations running now, across the queue mappings."""
        return sum(poller.running for poller in self.emulator.queue_pollers)

    def queue_figures(self) -> dict[str, int]:
        """The SQS pollers' counters (received, deleted, failed items), summed."""
        pollers = self.emulator.queue_pollers
        return {
            "received": sum(p.received for p in pollers),
            "deleted": sum(p.deleted for p in pollers),
            "failedItems": sum(p.failed_items for p in pollers),
        }

    def short_name(self, function: str) -> str:
        """The function's short name (``broadcaster``...): its handler's module."""
        handler = self.emulator.pools[function].spec.handler
        return handler.split(".")[-2] if "." in handler else function

    def worker_pids(self) -> dict[str, list[int]]:
        """Short function name (``broadcaster``...) -> its worker processes."""
        found = {}
        for name, pool in self.emulator.pools.items():
            short = pool.spec.handler.split(".")[-2] if "." in pool.spec.handler else name
            found[short] = pool.worker_pids
        return found


# -- measuring ------------------------------------------------------------------------------------


def count_records(dynamodb: Any, table: str) -> int:
    """Items in a table, without the subscriptions table's per-topic version items and the
    connections table's fan-out switch (``#fanout``, stored once the broadcaster goes queued):
    both outlive every connection by design (``handlers.subscriptions``, ``handlers.jobs``)."""
    from handlers.jobs import FANOUT_STATE_KEY
    from handlers.subscriptions import VERSION_SK

    total = 0
    kwargs: dict[str, Any] = {
        "TableName": table,
        "Select": "COUNT",
        "FilterExpression": "(attribute_not_exists(sk) OR sk <> :version)"
        " AND (attribute_not_exists(connectionId) OR connectionId <> :fanout)",
        "ExpressionAttributeValues": {
            ":version": {"S": VERSION_SK},
            ":fanout": {"S": FANOUT_STATE_KEY},
        },
    }
    while True:
        page = dynamodb.scan(**kwargs)
        total += int(page.get("Count", 0))
        last = page.get("LastEvaluatedKey")
        if not last:
            return total
        kwargs["ExclusiveStartKey"] = last


def write_items(
    dynamodb: Any,
    table: str,
    item: Callable[[int, float], dict[str, Any]],
    rate: float,
    duration: float,
    sent: dict[int, float],
) -> dict[str, float]:
    """``rate`` x ``duration`` puts of ``item(number, sent_at)`` on schedule (never faster);
    records ``sent[number] = sent_at``; returns the writer's own figures."""
    total = max(1, round(rate * duration))
    started = time.monotonic()
    hard_stop = started + duration + 30  # bounded even if moto stalls
    slowest = 0.0
    late = 0.0
    for index in range(total):
        due = started + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            late = max(late, -delay)
        if time.monotonic() > hard_stop:
            break
        sent_at = time.time()
        before = time.perf_counter()
        dynamodb.put_item(TableName=table, Item=item(index, sent_at))
        slowest = max(slowest, time.perf_counter() - before)
        sent[index] = sent_at
    return {
        "seconds": time.monotonic() - started,
        "slowest_put_ms": slowest * 1000,
        "most_late_ms": late * 1000,
    }


class Tally:
    """What the clients received, against what each should have (pure)."""

    def __init__(
        self,
        plan: Plan,
        written: Iterable[int],
        deliveries: dict[str, list[list[Any]]],
        clients: Iterable[int],
    ) -> None:
        written = sorted(written)
        groups, members = plan.expected(written)
        expected = {name: set(items) for name, items in groups.items()}
        first_written = written[0] if written else 0
        self.stragglers = 0
        """Deliveries of an earlier phase's items (``--curve``) that arrived in this one:
        not this phase's, so neither unexpected nor counted (the earlier phase lost them)."""
        self.expected = 0
        self.received = 0
        self.lost = 0
        self.duplicates = 0
        self.unexpected = 0
        self.reordered = 0
        """Deliveries of an item numbered lower than one the client had already received
        (write order is item number)."""
        self.unexpected_examples: list[str] = []
        self.latencies: list[float] = []
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.clients_missing = 0
        self.fewest = math.inf
        self.nothing_to_receive = 0
        for client in clients:
            wanted = expected[members[client]]
            own = plan.subscription_id(client)
            self.expected += len(wanted)
            self.nothing_to_receive += not wanted
            seen: set[tuple[str, str]] = set()
            got: set[str] = set()
            newest = -1
            for item, sub_id, kind, change, latency in deliveries.get(str(client), []):
                self.received += 1
                if (sub_id, change) in seen:
                    self.duplicates += 1
                    continue
                seen.add((sub_id, change))
                number = plan.item_number(item)
                if number is not None and number < first_written:
                    self.stragglers += 1
                    continue
                if item not in wanted or sub_id != own or kind != "added" or math.isnan(latency):
                    self.unexpected += 1
                    if len(self.unexpected_examples) < 5:
                        self.unexpected_examples.append(
                            f"client {client} ({own}): {item} under {sub_id!r} as {kind!r}"
                        )
                    continue
                got.add(item)
                if number is not None:
                    if number < newest:
                        self.reordered += 1
                    newest = max(newest, number)
                self.latencies.append(latency)
                self.first[item] = min(self.first.get(item, latency), latency)
                self.last[item] = max(self.last.get(item, latency), latency)
            self.lost += len(wanted - got)
            self.clients_missing += bool(wanted - got)
            self.fewest = min(self.fewest, len(got))


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values_s: Iterable[float]) -> dict[str, float]:
    ordered = sorted(v * 1000 for v in values_s)
    return {
        "p50": percentile(ordered, 0.50),
        "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else math.nan,
    }


def fmt(stats: dict[str, float]) -> str:
    return "  ".join(f"{key} {value:7.1f}" for key, value in stats.items())


_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process, MB (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int | str, task: int | None = None) -> float:
    """utime + stime of a process (or one of its threads) from /proc; 0 when it is gone."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        with open(path) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


class CpuMeter:
    """CPU seconds used between ``start`` and ``stop`` by each part of the system.

    This process is split by thread (live threads by name; threads that ended in
    between, such as moto's per-connection request threads, as the remainder).
    """

    def __init__(self, running: RunningEmulator, client_pid: int | None) -> None:
        self.running = running
        self.client_pid = client_pid
        self._before: dict[Any, tuple[str, float]] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0
        self._wall = 0.0

    @staticmethod
    def _category(name: str) -> str:
        if name == "MainThread":
            return "this process: main thread (asyncio loop: clients if in-process)"
        if name == "emulator-loop":
            return "this process: emulator loop (gateway, poller, worker pipes)"
        if name.startswith("asyncio_"):
            return "this process: to_thread pools (boto3: poller reads, writer puts, scans)"
        if name.startswith("sqs-"):
            return "this process: SQS poller threads (receive, delete)"
        return "this process: moto server threads"

    def _sample(self) -> dict[Any, tuple[str, float]]:
        me = os.getpid()
        sample: dict[Any, tuple[str, float]] = {"total": ("", cpu_seconds(me))}
        names = {t.native_id: t.name for t in threading.enumerate()}
        for task in os.listdir(f"/proc/{me}/task"):
            tid = int(task)
            sample[tid] = (self._category(names.get(tid, "")), cpu_seconds(me, tid))
        for function, pids in self.running.worker_pids().items():
            for pid in pids:
                sample[("pid", pid)] = (f"workers: {function}", cpu_seconds(pid))
        if self.client_pid is not None:
            sample[("pid", self.client_pid)] = ("client process", cpu_seconds(self.client_pid))
        return sample

    def start(self) -> None:
        self._before = self._sample()
        self._wall = time.monotonic()

    def stop(self) -> None:
        after = self._sample()
        self.wall = time.monotonic() - self._wall
        used: dict[str, float] = {}
        threads = 0.0
        for key, (category, value) in after.items():
            if key == "total":
                continue
            delta = value - self._before.get(key, (category, 0.0))[1]
            used[category] = used.get(category, 0.0) + delta
            if isinstance(key, int):
                threads += delta
        total = after["total"][1] - self._before["total"][1]
        used["this process: threads that ended meanwhile (moto request threads...)"] = (
            total - threads
        )
        self.used = used


def batch_lines(lines: list[str], message: str = "batch") -> list[dict[str, Any]]:
    """The broadcaster's per-batch JSON log lines (``message`` ``jobs``: the sender's)."""
    found = []
    needle = f'"message": "{message}"'
    for line in list(lines):
        if needle not in line:
            continue
        _, _, text = line.partition("] ")
        with contextlib.suppress(ValueError):
            document = json.loads(text)
            if isinstance(document, dict):
                found.append(document)
    return found


def error_lines(lines: list[str]) -> list[str]:
    return [
        line
        for line in list(lines)
        if '"level": "ERROR"' in line
        or '"level": "CRITICAL"' in line
        or "Traceback" in line
        or " ERROR " in line
        or "Error:" in line
    ]


# -- the run ---------------------------------------------------------------------------------------


async def wait_until_empty(dynamodb: Any, tables: list[str], timeout: float) -> list[int]:
    """Items left in each table once all are empty, or when ``timeout`` ran out."""
    started = time.monotonic()
    while True:
        left = [await asyncio.to_thread(count_records, dynamodb, table) for table in tables]
        if not any(left) or time.monotonic() - started > timeout:
            return left
        await asyncio.sleep(0.25)


async def settle(running: RunningEmulator, timeout: float) -> float:
    """Wait until no sender invocation runs (the queued design's jobs are all handled), or
    ``timeout``; the seconds waited."""
    started = time.monotonic()
    idle_since: float | None = None
    while time.monotonic() - started < timeout:
        if running.senders_busy():
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= 0.5:
            break
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def sender_figures(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The sender's per-batch ``jobs`` log lines, summed."""
    paced = sorted(float(j.get("pacedMs", 0.0)) for j in jobs)
    return {
        "batches": len(jobs),
        "jobs": sum(int(j.get("jobs", 0)) for j in jobs),
        "delivered": sum(int(j.get("delivered", 0)) for j in jobs),
        "retried": sum(int(j.get("retried", 0)) for j in jobs),
        "stale": sum(int(j.get("stale", 0)) for j in jobs),
        "closed": sum(int(j.get("closed", 0)) for j in jobs),
        "jobsFailed": sum(int(j.get("jobsFailed", 0)) for j in jobs),
        "pacedMs": round(sum(paced), 1),
        "pacedMsMaxBatch": paced[-1] if paced else 0.0,
    }


def broadcaster_figures(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """The broadcaster's per-batch ``batch`` log lines, summed."""
    sizes = sorted(int(b.get("records", 0)) for b in batches)
    return {
        "batches": len(batches),
        "recordsMedian": sizes[len(sizes) // 2] if sizes else 0,
        "recordsMax": sizes[-1] if sizes else 0,
        **{
            key: sum(int(b.get(key, 0)) for b in batches)
            for key in (
                "recipients",
                "delivered",
                "retried",
                "failed",
                "topicsQueried",
                "subscriptionsRead",
                "queuedRecords",
                "jobsQueued",
            )
        },
        "fanoutMs": summary(float(b.get("fanoutMs", 0)) / 1000 for b in batches),
    }


async def phase(
    running: RunningEmulator,
    clients: InProcessClients | SubprocessClients,
    plan: Plan,
    rate: float,
    duration: float,
    first: int,
    drain_timeout: float,
) -> dict[str, Any]:
    """Write ``rate`` x ``duration`` items numbered from ``first``, wait until every client
    has its own or ``drain_timeout``, and tally: one phase's figures (``tally``: the
    ``Tally``, not serialisable; the rest is)."""
    emulator = running.emulator
    dynamodb = emulator.aws.client("dynamodb")
    source = emulator.table_names()[SOURCE]
    invocations_before = running.broadcaster_invocations()
    senders_before = running.sender_invocations()
    queue_before = running.queue_figures()
    batches_before = len(batch_lines(running.lines))
    jobs_before = len(batch_lines(running.lines, "jobs"))
    meter = CpuMeter(running, clients.pid)
    written: dict[int, float] = {}
    rss_before = rss_mb()
    meter.start()
    writer = await asyncio.to_thread(
        write_items,
        dynamodb,
        source,
        lambda n, at: plan.item(first + n, at),
        rate,
        duration,
        written,
    )
    sent = {first + n: at for n, at in written.items()}
    groups, members = plan.expected(sent)
    result = await clients.drain(groups, members, drain_timeout)
    meter.stop()
    queue_after = running.queue_figures()
    tally = Tally(plan, sent, result["deliveries"], range(plan.clients))
    expected_per_s = tally.expected / duration
    return {
        "rate": rate,
        "duration": duration,
        "items": len(sent),
        "itemsInFilter": len(groups[TABLE_ID]),
        "writer": writer,
        "expected": tally.expected,
        "deliveriesPerSecond": round(expected_per_s, 1),
        "received": tally.received,
        "lost": tally.lost,
        "duplicates": tally.duplicates,
        "unexpected": tally.unexpected,
        "reordered": tally.reordered,
        "stragglers": tally.stragglers,
        "clientsMissing": tally.clients_missing,
        "closedEarly": result["closed_early"],
        "otherMessages": result["other_messages"],
        "drainSeconds": result["drain_seconds"],
        "latencyMs": summary(tally.latencies),
        "firstClientMs": summary(tally.first.values()),
        "lastClientMs": summary(tally.last.values()),
        "spreadMs": summary(tally.last[item] - tally.first[item] for item in tally.first),
        "broadcasterInvocations": running.broadcaster_invocations() - invocations_before,
        "broadcaster": broadcaster_figures(batch_lines(running.lines)[batches_before:]),
        "senderInvocations": running.sender_invocations() - senders_before,
        "sender": sender_figures(batch_lines(running.lines, "jobs")[jobs_before:]),
        "queue": {key: queue_after[key] - queue_before[key] for key in queue_after},
        "cpuWall": meter.wall,
        "cpu": dict(sorted(meter.used.items(), key=lambda kv: -kv[1])),
        "rssMb": [rss_before, rss_mb()],
        "tally": tally,
    }


def phase_failures(figures: dict[str, Any], p50_ms: float, p99_ms: float) -> list[str]:
    """What a phase missed: a latency target, or a delivery lost, duplicated, unexpected or
    reordered."""
    latency = figures["latencyMs"]
    failures = []
    if not figures["tally"].latencies:
        failures.append("no delivery at all")
    if latency["p50"] > p50_ms:
        failures.append(f"p50 {latency['p50']:.1f} ms > {p50_ms:g} ms")
    if latency["p99"] > p99_ms:
        failures.append(f"p99 {latency['p99']:.1f} ms > {p99_ms:g} ms")
    for key, label in (
        ("lost", "deliveries lost"),
        ("duplicates", "duplicate deliveries"),
        ("unexpected", "unexpected deliveries"),
        ("reordered", "deliveries reordered"),
    ):
        if figures[key] > 0:
            failures.append(f"{figures[key]} {label}")
    return failures


def report_phase(figures: dict[str, Any], plan: Plan) -> None:
    """The full report of the main phase."""
    tally: Tally = figures["tally"]
    writer = figures["writer"]
    items = figures["items"]
    keyed = sum(1 for index in range(plan.clients) if plan.keyed(index))
    print()
    print(f"clients                 {plan.clients} ({plan.describe(keyed)})")
    inside = f", {figures['itemsInFilter']} inside the filter" if plan.filtered else ""
    print(
        f"items written           {items} in {writer['seconds']:.1f} s over"
        f" {min(items, plan.partitions)} partitions{inside} (slowest put"
        f" {writer['slowest_put_ms']:.0f} ms, most behind schedule {writer['most_late_ms']:.0f} ms)"
    )
    print(f"deliveries expected     {tally.expected}")
    print(f"  per second of writing {figures['deliveriesPerSecond']:g}")
    print(
        f"deliveries received     {tally.received}"
        f" ({tally.received - tally.duplicates} unique by (subscription id, change id))"
    )
    print(f"lost                    {tally.lost}")
    print(f"duplicates              {tally.duplicates}")
    print(f"unexpected              {tally.unexpected}")
    for line in tally.unexpected_examples:
        print(f"  {line}")
    print(f"reordered               {tally.reordered}")
    if tally.nothing_to_receive:
        print(f"clients with nothing to receive {tally.nothing_to_receive}")
    if tally.clients_missing:
        print(f"clients missing items   {tally.clients_missing} (fewest received: {tally.fewest})")
    if figures["closedEarly"]:
        print(f"clients closed early    {len(figures['closedEarly'])}")
        for line in figures["closedEarly"][:5]:
            print(f"  {line}")
    if figures["otherMessages"]:
        print(f"other messages          {figures['otherMessages']} (warm-up items, pongs...)")
    print(f"drain after last write  {figures['drainSeconds']:.2f} s")
    print(f"latency ms, every delivery   {fmt(figures['latencyMs'])}")
    print(f"  per item, first client     {fmt(figures['firstClientMs'])}")
    print(f"  per item, last client      {fmt(figures['lastClientMs'])}")
    print(f"  per item, last - first     {fmt(figures['spreadMs'])}")
    print(f"broadcaster invocations {figures['broadcasterInvocations']} (for {items} items)")
    b = figures["broadcaster"]
    if b["batches"]:
        print(
            f"  its batches: {b['batches']}, records per batch median {b['recordsMedian']}"
            f" max {b['recordsMax']}; recipients {b['recipients']}, delivered {b['delivered']},"
            f" retried {b['retried']}, failed {b['failed']}; topics queried"
            f" {b['topicsQueried']}, subscriptions read {b['subscriptionsRead']};"
            f" queued records {b['queuedRecords']}, jobs queued {b['jobsQueued']}"
        )
        print(f"  its fanoutMs per batch     {fmt(b['fanoutMs'])}")
    sender = figures["sender"]
    queue = figures["queue"]
    print(f"sender invocations      {figures['senderInvocations']}")
    if sender["batches"] or queue["received"]:
        print(
            f"  its batches: {sender['batches']}, jobs {sender['jobs']}, delivered"
            f" {sender['delivered']}, retried {sender['retried']}, stale {sender['stale']},"
            f" closed {sender['closed']}, jobs failed {sender['jobsFailed']}; pacedMs"
            f" {sender['pacedMs']:g} in all (most in one batch {sender['pacedMsMaxBatch']:g})"
        )
        print(
            f"  the SQS poller: received {queue['received']}, deleted {queue['deleted']},"
            f" left (failed) {queue['failedItems']}"
        )
    wall = figures["cpuWall"]
    print(f"CPU seconds used while writing and draining ({wall:.1f} s wall):")
    for key, value in figures["cpu"].items():
        if value >= 0.005:
            print(f"  {value:7.2f}  {100 * value / wall:5.1f}%  {key}")
    cpu_total = sum(figures["cpu"].values())
    if tally.latencies:
        print(
            f"  {cpu_total:7.2f}  in all: {1e6 * cpu_total / len(tally.latencies):.0f} µs per"
            " delivery, everything included"
        )
    before, after = figures["rssMb"]
    print(f"this process's memory   {before:.0f} MB -> {after:.0f} MB RSS while writing")


def curve_line(figures: dict[str, Any], failures: list[str]) -> str:
    latency = figures["latencyMs"]
    return (
        f"  {figures['rate']:5g}/s x {figures['duration']:g} s: {figures['items']} items,"
        f" {figures['deliveriesPerSecond']:7.0f} deliveries/s; p50 {latency['p50']:7.1f} ms"
        f" p99 {latency['p99']:7.1f} ms; lost {figures['lost']} dup {figures['duplicates']}"
        f" unexpected {figures['unexpected']} reordered {figures['reordered']}"
        f" late from the phase before {figures['stragglers']};"
        f" CPU {sum(figures['cpu'].values()):.1f} s in {figures['cpuWall']:.1f} s;"
        f" jobs {figures['sender']['jobs']}"
        + (f"  -- {'; '.join(failures)}" if failures else "  -- ok")
    )


def serialisable(figures: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in figures.items() if key != "tally"}


async def run(args: argparse.Namespace) -> int:
    running = RunningEmulator(dict(args.config), args.sender_workers)
    clients: InProcessClients | SubprocessClients | None = None
    failures: list[str] = []
    document: dict[str, Any] = {
        "clients": args.clients,
        "subscriptions": args.subscriptions,
        "config": dict(args.config),
        "senderWorkers": args.sender_workers,
        "cpus": os.cpu_count(),
    }
    main: dict[str, Any] | None = None
    started = time.monotonic()
    try:
        print(f"starting the emulator (dev stack, {os.cpu_count()} CPUs)...", flush=True)
        if args.config:
            print(
                "  stack config: " + ", ".join(f"{key}={value}" for key, value in args.config),
                flush=True,
            )
        await asyncio.to_thread(running.start)
        emulator = running.emulator
        dynamodb = emulator.aws.client("dynamodb")
        source = emulator.table_names()[SOURCE]
        connections = emulator.connections_table()
        subscriptions = running.subscriptions_table()
        prefix = f"BENCH#{secrets.token_hex(4)}#"
        plan = Plan(prefix, args.clients, args.partitions, args.subscriptions)
        document["startSeconds"] = time.monotonic() - started
        sizes = emulator.pool_sizes()
        print(
            f"emulator up in {document['startSeconds']:.1f} s: {emulator.url};"
            f" clients: {args.client_mode}; worker processes at most: "
            + ", ".join(
                f"{running.short_name(name)} {size}" for name, size in sorted(sizes.items())
            ),
            flush=True,
        )

        # -- connect and subscribe -------------------------------------------------------------
        if args.client_mode == "inprocess":
            clients = InProcessClients(emulator.url, emulator.token, prefix)
        else:
            clients = SubprocessClients(emulator.url, running.secret, prefix)
            clients.connect_timeout = args.connect_timeout
        connect_started = time.monotonic()
        connected = await clients.connect(
            args.clients,
            args.connect_concurrency,
            [plan.subscribe(index) for index in range(args.clients)],
        )
        handshakes = time.monotonic() - connect_started
        for error in connected.get("errors", []):
            print(f"  {error}")
        expected_clients = int(connected["connected"])
        subscribed = int(connected["subscribed"])
        records = stored = 0
        while time.monotonic() - connect_started < args.connect_timeout:
            records = await asyncio.to_thread(count_records, dynamodb, connections)
            stored = await asyncio.to_thread(count_records, dynamodb, subscriptions)
            if records >= expected_clients and stored >= subscribed:
                break
            await asyncio.sleep(0.25)
        connect_seconds = time.monotonic() - connect_started
        document["connectSeconds"] = connect_seconds
        document["handshakeSeconds"] = handshakes
        keyed = sum(1 for index in range(args.clients) if plan.keyed(index))
        print(
            f"connected {expected_clients}/{args.clients} clients, {subscribed} subscribed"
            f" ({args.connect_concurrency} at a time; {plan.describe(keyed)}):"
            f" handshakes and subscribes {handshakes:.1f} s, {records} connection records and"
            f" {stored} subscriptions in the tables after {connect_seconds:.1f} s"
            f" ({args.clients / max(connect_seconds, 1e-9):.0f} clients/s)",
            flush=True,
        )
        if connected["failed"]:
            failures.append(f"{connected['failed']} client(s) could not connect and subscribe")
        if records < expected_clients:
            failures.append(f"only {records}/{expected_clients} connection records appeared")
        if stored < subscribed:
            failures.append(f"only {stored}/{subscribed} subscriptions stored")

        # -- write -----------------------------------------------------------------------------
        if args.warmup:
            # The broadcaster's first fan-out opens its 64 keep-alive connections to the
            # gateway and starts its threads (~0.3 s more), and the queued design's first jobs
            # start the sender's workers; bench.coldstart measures cold starts, so the warm-up
            # items are not part of the figures (shown on their own). They go to the
            # table-wide subscribers (status "new", outside every room).
            warm_plan = Plan(f"WARMUP#{prefix}", args.clients, args.partitions)
            before = len(batch_lines(running.lines))
            jobs_before = len(batch_lines(running.lines, "jobs"))
            warm_sent: dict[int, float] = {}
            await asyncio.to_thread(
                write_items,
                dynamodb,
                source,
                lambda n, at: warm_plan.item(n * len(STATUSES), at),
                2.0,
                args.warmup / 2,
                warm_sent,
            )
            waited = time.monotonic()
            while time.monotonic() - waited < args.drain_timeout:
                warm = batch_lines(running.lines)[before:]
                if sum(int(b.get("records", 0)) for b in warm) >= len(warm_sent):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            await settle(running, args.drain_timeout)
            warm = batch_lines(running.lines)[before:]
            warm_jobs = sender_figures(batch_lines(running.lines, "jobs")[jobs_before:])
            print(
                f"warm-up: {len(warm_sent)} item(s) not counted below, broadcaster fanoutMs"
                f" {', '.join(str(b.get('fanoutMs')) for b in warm) or 'none'}; sender jobs"
                f" {warm_jobs['jobs']}, delivered {warm_jobs['delivered']}",
                flush=True,
            )
            await asyncio.sleep(1.0)
        total = max(1, round(args.rate * args.duration))
        print(f"writing {total} items ({args.rate:g}/s for {args.duration:g} s)...", flush=True)
        main = await phase(running, clients, plan, args.rate, args.duration, 0, args.drain_timeout)
        next_item = main["items"]
        report_phase(main, plan)
        failures.extend(phase_failures(main, args.p50_ms, args.p99_ms))
        document["main"] = serialisable(main)

        # -- the capacity curve: the same clients, one short phase per rate ---------------------
        curve: list[dict[str, Any]] = []
        if args.curve:
            limit = args.curve_p99_ms
            print()
            print(
                f"capacity curve: {args.curve_duration:g} s per rate, stopping at the first"
                f" with p99 > {limit:g} ms or anything lost, duplicated, unexpected or"
                " reordered",
                flush=True,
            )
            for rate in args.curve:
                await settle(running, args.drain_timeout)
                await asyncio.sleep(args.curve_pause)
                figures = await phase(
                    running,
                    clients,
                    plan,
                    rate,
                    args.curve_duration,
                    next_item,
                    args.drain_timeout,
                )
                next_item += figures["items"]
                missed = phase_failures(figures, math.inf, limit)
                print(curve_line(figures, missed), flush=True)
                curve.append({**serialisable(figures), "ok": not missed, "failures": missed})
                if missed:
                    break
            passed = [point for point in curve if point["ok"]]
            best = max(passed, key=lambda p: p["deliveriesPerSecond"], default=None)
            document["capacity"] = best["deliveriesPerSecond"] if best else 0.0
            print(
                "capacity: "
                + (
                    f"{best['deliveriesPerSecond']:.0f} deliveries/s with p99 <= {limit:g} ms"
                    f" (at {best['rate']:g} writes/s)"
                    if best
                    else f"no rate of the curve kept p99 <= {limit:g} ms"
                ),
                flush=True,
            )
        document["curve"] = curve

        # -- disconnect ------------------------------------------------------------------------
        await clients.close()
        clients = None
        left = await wait_until_empty(dynamodb, [connections, subscriptions], args.connect_timeout)
        document["leftAfterDisconnect"] = left
        print(f"CPUs                    {os.cpu_count()}")
        print(f"after disconnect        {left[0]} connection records, {left[1]} subscriptions left")
        if any(left):
            failures.append(
                f"{left[0]} connection records and {left[1]} subscriptions outlived"
                " their connections"
            )
        latency = main["latencyMs"]
        print()
        print(
            f"targets: p50 <= {args.p50_ms:g} ms, p99 <= {args.p99_ms:g} ms, none lost,"
            f" duplicated, unexpected or reordered: p50 {latency['p50']:.1f} ms, p99"
            f" {latency['p99']:.1f} ms, lost {main['lost']}, duplicates {main['duplicates']},"
            f" unexpected {main['unexpected']}, reordered {main['reordered']}"
        )
    except Exception as exc:  # reported with the verdict: FAIL, never a silent exit
        traceback.print_exc()
        failures.append(f"the run failed: {exc!r}")
    finally:
        if clients is not None:
            try:
                await clients.close()
            except Exception as exc:
                print(f"closing the clients failed: {exc!r}")
        try:
            await asyncio.to_thread(running.stop)
        except Exception as exc:
            print(f"stopping the emulator failed: {exc!r}")
        lines = list(running.lines)
        errors = error_lines(lines)
        print(f"emulator log: {len(lines)} lines, {len(errors)} ERROR lines")
        for line in errors[:20]:
            print(f"  {line[:400]}")
        document["errorLines"] = len(errors)
        document["failures"] = failures
        document["totalSeconds"] = time.monotonic() - started
        if args.json:
            Path(args.json).write_text(json.dumps(document, indent=1, default=str))
    if failures or main is None:
        print("FAIL: " + "; ".join(failures or ["no measurement"]))
        return 1
    print(
        f"OK: {main['expected']} deliveries, none lost, duplicated, unexpected or reordered;"
        f" p50 {main['latencyMs']['p50']:.0f} ms, p99 {main['latencyMs']['p99']:.0f} ms"
        f" ({time.monotonic() - started:.0f} s in all)"
    )
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=2.0, help="writes per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of writing")
    parser.add_argument(
        "--partitions",
        type=int,
        default=20,
        help="partitions the items are spread over; each keyed subscriber watches one",
    )
    parser.add_argument("--p50-ms", type=float, default=200.0)
    parser.add_argument("--p99-ms", type=float, default=750.0)
    parser.add_argument("--drain-timeout", type=float, default=30.0)
    parser.add_argument("--connect-concurrency", type=int, default=25)
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=CONNECT_TIMEOUT,
        help="seconds for all clients to connect and subscribe (and, at the end, to be gone)",
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="items written (and not counted) before measuring"
    )
    parser.add_argument(
        "--client-mode",
        choices=("subprocess", "inprocess"),
        default="subprocess",
        help="run the clients in a second interpreter (default) or on this process's loop",
    )
    parser.add_argument(
        "--subscriptions",
        choices=SUBSCRIPTIONS,
        default="mixed",
        help="mixed (default): half on a partition, half table-wide with a filter;"
        " table: every client table-wide without a filter (every client gets every item)",
    )
    parser.add_argument(
        "--config", type=_config_pair, action="append", default=[], metavar="KEY=VALUE",
        help="a stack config override for the emulator, e.g. queuedFanout=false (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--sender-workers", type=_workers, default=None, metavar="N",
        help="the emulator's --sender-workers (default: its own, 2 per CPU, at least 4)",
    )  # fmt: skip
    parser.add_argument(
        "--curve", type=_rates, default=[], metavar="RATE,RATE,...",
        help="after the main phase, a capacity curve on the same clients: one phase per rate"
        " (writes/s), stopping at the first that misses --curve-p99-ms or loses, duplicates"
        " or reorders anything",
    )  # fmt: skip
    parser.add_argument("--curve-duration", type=float, default=12.0, help="seconds per rate")
    parser.add_argument("--curve-p99-ms", type=float, default=2000.0)
    parser.add_argument(
        "--curve-pause", type=float, default=1.0, help="quiet seconds before each rate"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    parser.add_argument("--client-process", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.client_process:
        if args.clients < 1 or args.rate <= 0 or args.duration <= 0 or args.partitions < 1:
            parser.error("--clients, --rate, --duration and --partitions must be positive")
        if args.rate * args.duration > 100_000:
            parser.error("at most 100000 items per run")
        if args.warmup < 0 or args.connect_concurrency < 1:
            parser.error("--warmup must be >= 0 and --connect-concurrency >= 1")
        if not 0 < args.drain_timeout <= 600:
            parser.error("--drain-timeout must be in (0, 600]")
        if not 0 < args.curve_duration <= 600 or not 0 <= args.curve_pause <= 60:
            parser.error("--curve-duration must be in (0, 600] and --curve-pause in [0, 60]")
        if any(rate * args.curve_duration > 100_000 for rate in args.curve):
            parser.error("at most 100000 items per rate of the curve")
    return args


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes rates like 1,2,4, got {text!r}") from None
    if not rates or len(rates) > 20 or any(not 0 < rate <= 1000 for rate in rates):
        raise argparse.ArgumentTypeError("1 to 20 rates, each in (0, 1000] writes/s")
    return rates


EXIT_GRACE = 15.0
"""Seconds the threads left after the run get to end before the process exits anyway."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_process:
        asyncio.run(client_process(args.url, args.prefix))
        return 0
    status = asyncio.run(run(args))
    # Bounded shutdown: a thread still blocked in a call to the stopped moto server (an
    # executor's) would hold the interpreter's exit; give them EXIT_GRACE, then leave.
    deadline = time.monotonic() + EXIT_GRACE
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in threading.enumerate() if t.is_alive() and not t.daemon]
    if len(stuck) > 1:
        print(f"threads still running after {EXIT_GRACE:g} s, exiting anyway: {stuck[:8]}")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


if __name__ == "__main__":
    sys.exit(main())
