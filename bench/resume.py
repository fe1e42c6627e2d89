"""Resume and the replay store's cost: a resume of 1,000 missed changes with writes continuing,
and what recording every change costs the broadcaster, each against a baseline in the same run.

Everything runs in this process against the emulator's moto server
(``emulator.services.LocalAws``, on 127.0.0.1, writes serialized as in the
emulator) and the fake Management API (``bench.management_api``, a thread, 0 ms
latency), through the handlers' own code: ``handlers.broadcaster.Broadcaster``
records and posts each change, ``handlers.default.respond`` answers the
``subscribe`` (a ``DynamoStore`` and the handler's own poster).

1. **Resume.** Client A subscribes to one partition (``key {"PK": ...}``) and
   receives a few changes live, then leaves (``$disconnect``'s
   ``remove_connection``, and the Management API forgets it). ``--missed``
   changes to that partition (``--items`` items cycling, MODIFY records with
   both images) are broadcast in batches of 100 while it is away. It
   reconnects as B and sends ``subscribe`` with ``after`` = the last cursor it
   saw, while a writer thread keeps broadcasting ``--rate`` changes per second
   into the same partition (the same items), until 1 s after ``resumed``
   (at most 30 s). The config is the stack's default: overlap 60 s (so
   the changes A had are replayed again), at most 5,000 changes, 20 s.
   Measured: time from sending the ``subscribe`` to ``resumed`` reaching the
   Management API, replayed changes per second (``replayed`` / that time).
   Checked, as a client following the protocol sees it (apply replayed
   changes, ``"replay": true``, as they come; hold live ones until ``resumed``,
   then apply them; de-duplicate by change ``id``): nothing lost (every change
   after A left: the missed ones and every live one), each item's changes
   applied in write order (and how many items show an older change than one
   already applied just after ``resumed``, and at the end), and every message B received is byte for
   byte what a witness client, subscribed all along, received live (with
   ``"replay": true`` added to replayed ones). Target:
   ``resumed`` within ``--max-resume-seconds`` (5 s): a quarter of
   ``$default``'s replay bound (``REPLAY_MAX_SECONDS``, 20 s), leaving room
   for a slower machine or DynamoDB's page latency. ``--live-items new``
   makes the live changes write items of their own; by default they rewrite
   the items being replayed, so a live change to an item often arrives before
   the replay reaches that item's older changes: what ``replay: true`` is for.
2. **Cost per record.** The same ``--batches`` batches of 100 records (MODIFYs
   of 100 items of one partition with ``--subscribers`` subscribers, so each
   record reaches that many connections) broadcast by a Broadcaster with
   resume on (replay table, cursors) and one with resume off (no replay
   table, no cursor key: the broadcaster before resume), interleaved,
   ``--runs`` times after a warm-up; the medians of ms per record and their
   ratio. Recording adds 3 items per change, one BatchWriteItem per 25 items
   (12 per 100 records, in sequence, before any post), and a cursor signed
   per message; a batch without it costs one BatchGetItem of the 105 topics'
   version items (each record's item, the partition, 4 table-wide buckets),
   one Query (the partition, the only topic subscribed; the others have no
   version item) and one post per subscriber per record. Target: ratio <=
   ``--max-ratio`` (3): measured at 1.9-2.6 here (recording about 0.9 ms per
   record on moto, delivery without it about 1.1 ms; it was 1.1-1.2 when the
   broadcaster still queried all 105 topics, about 5 ms per record); 3 leaves
   that spread and still catches a store that costs, say, a write per item.
   The items actually written are counted and sized (``replay.item_size``) to
   give writes and bytes per change.

Exit status 1 when a check fails or a target is missed.

    python -m bench.resume [--missed 1000] [--rate 20] [--live-items same|new] [--runs 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.fanout import REGION

CONNECTIONS = "bench-connections"
SUBSCRIPTIONS = "bench-subscriptions"
REPLAY = "bench-replay"
SOURCE, TABLE = "rooms", "rooms-5e1b2c"
KEYS = (("PK", "S"), ("SK", "S"))
STREAM_ARN = f"arn:aws:dynamodb:{REGION}:123456789012:table/{TABLE}/stream/2026-12-01T00:00:00.000"
ROOM = "ROOM#resume"
COST_ROOM = "ROOM#cost"
USER = "user-1"
CURSOR_SECRET = "bench-cursor-secret-0123456789abcdef"  # noqa: S105 (a local, made-up secret)
BATCH = 100
MAX_LIVE_SECONDS = 30.0
LIVE_AFTER_RESUMED_SECONDS = 1.0
BEFORE_LEAVING = 5
"""Changes client A receives live before it leaves."""
LIVE_ITEMS_FROM = 100_000
"""With ``--live-items new``, live change ``n`` writes item ``LIVE_ITEMS_FROM + n``."""


def environment(endpoint: str) -> dict[str, str]:
    """The handlers' environment (read at import: set before importing them)."""
    return {
        "CONNECTIONS_TABLE": CONNECTIONS,
        "SUBSCRIPTIONS_TABLE": SUBSCRIPTIONS,
        "MANAGEMENT_ENDPOINT": endpoint,
        "TABLE_TOPIC_BUCKETS": "4",
        "SOURCES": json.dumps(
            {
                SOURCE: {
                    "table": TABLE,
                    "keys": [list(k) for k in KEYS],
                    "oldImage": True,
                    "access": [{"table": True}],
                }
            }
        ),
        "REPLAY_TABLE": REPLAY,
        "CURSOR_SECRET_PARAMETER": "/bench/cursor-secret",
    }


def create_tables(client: Any) -> None:
    """Connections, subscriptions (topic index) and replay tables as the component declares
    them (the replay table: ``topic`` + ``change``, local index ``byTime`` on ``at``)."""

    def keyed(name: str, hash_key: str, range_key: str | None, **extra: Any) -> None:
        names = [hash_key] + ([range_key] if range_key else []) + extra.pop("also", [])
        schema = [{"AttributeName": hash_key, "KeyType": "HASH"}]
        if range_key:
            schema.append({"AttributeName": range_key, "KeyType": "RANGE"})
        client.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in names],
            KeySchema=schema,
            **extra,
        )

    keyed(CONNECTIONS, "connectionId", None)
    keyed(SUBSCRIPTIONS, "topic", "sk")
    keyed(
        REPLAY,
        "topic",
        "change",
        also=["at"],
        LocalSecondaryIndexes=[
            {
                "IndexName": "byTime",
                "KeySchema": [
                    {"AttributeName": "topic", "KeyType": "HASH"},
                    {"AttributeName": "at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )


def image(room: str, item: int, n: int) -> dict[str, Any]:
    """An item of a chat-like room, about 300 bytes."""
    return {
        "PK": {"S": room},
        "SK": {"S": f"ITEM#{item:03d}"},
        "n": {"N": str(n)},
        "status": {"S": ("open", "pending", "done")[n % 3]},
        "author": {"S": f"user-{n % 17}"},
        "text": {"S": f"message {n}: " + "lorem ipsum dolor sit amet " * 4},
        "updatedAt": {"S": "2026-12-01T12:00:00.000Z"},
    }


def stream_record(
    room: str, n: int, items: int, tag: str, item: int | None = None
) -> dict[str, Any]:
    """Change ``n`` of ``room``: a MODIFY of item ``n % items`` (or ``item``), both images;
    its ``eventID`` is unique per ``tag`` and ``n``."""
    item = n % items if item is None else item
    return {
        "eventID": f"{tag}-{n:08d}",
        "eventName": "MODIFY",
        "eventSourceARN": STREAM_ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": int(time.time()),
            "Keys": {"PK": {"S": room}, "SK": {"S": f"ITEM#{item:03d}"}},
            "NewImage": image(room, item, n),
            "OldImage": image(room, item, max(n - items, 0)),
            "SequenceNumber": f"{n + 1:021d}",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


class TimedPoster:
    """The handlers' poster, timestamping each post that arrived (perf_counter)."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.posted: list[tuple[float, str, bytes]] = []
        self._lock = threading.Lock()

    def post_to_connection(
        self, connection_id: str, data: bytes, timeout: float | None = None
    ) -> Any:
        response = self.api.post_to_connection(connection_id, data, timeout)
        if response.ok:
            with self._lock:
                self.posted.append((time.perf_counter(), connection_id, data))
        return response


class RecordingClient:
    """Wraps the DynamoDB client: keeps every replay item BatchWriteItem was asked to write."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.batch_writes = 0
        self.items: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def batch_write_item(self, **kwargs: Any) -> Any:
        with self._lock:
            self.batch_writes += 1
            for requests in kwargs["RequestItems"].values():
                self.items.extend(r["PutRequest"]["Item"] for r in requests)
        return self._client.batch_write_item(**kwargs)

    def reset(self) -> None:
        with self._lock:
            self.batch_writes = 0
            self.items.clear()


@dataclasses.dataclass
class ResumeResult:
    to_subscribed: float
    to_first_replayed: float | None
    to_resumed: float
    replayed: int
    live: int
    lost: int
    out_of_order: int
    stale: int
    behind: int
    duplicates: int
    not_live_bytes: int
    problems: list[str]


def unmarked(data: bytes) -> bytes:
    """A replayed message's bytes without its ``"replay": true`` (what live delivery sent)."""
    return data.replace(b',"replay":true,"cursor":', b',"cursor":')


class Client:
    """What a client following the protocol keeps: the change ids it has, each item's last
    ``n``; from ``subscribe`` to ``resumed`` replayed changes are applied as they come and
    live ones held, then applied; de-duplicated by change ``id``."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.last_n: dict[str, int] = {}
        self.view: dict[str, int] = {}
        """Each item's ``n`` as the client shows it: the last change applied."""
        self.out_of_order: list[str] = []
        self.duplicates = 0
        self.cursor: str | None = None

    def apply(self, message: dict[str, Any]) -> None:
        self.cursor = message["cursor"]
        if message["id"] in self.seen:
            self.duplicates += 1
            return
        self.seen.add(message["id"])
        sk, n = message["keys"]["SK"], int(message["data"]["n"])
        if n <= self.last_n.get(sk, -1):
            self.out_of_order.append(f"{sk}: n {n} after {self.last_n[sk]}")
        self.last_n[sk] = max(n, self.last_n.get(sk, -1))
        self.view[sk] = n


def run_resume(
    aws: Any, server: Any, key: bytes, args: argparse.Namespace, log: Callable[[str], None]
) -> ResumeResult:
    from handlers import default
    from handlers.broadcaster import Broadcaster
    from handlers.config import broadcaster_config
    from handlers.connections import connection_item
    from handlers.management import ManagementApi, frozen_credentials
    from handlers.subscriptions import remove_connection

    client = aws.client("dynamodb")
    credentials = frozen_credentials(aws_session())
    poster = TimedPoster(ManagementApi(server.endpoint, region=REGION, credentials=credentials))
    settings = broadcaster_config()
    worker = Broadcaster(settings, dynamodb=client, api=poster, cursor_key=key)
    store = default.DynamoStore(default.CONFIG, client, cursor_key=key)
    problems: list[str] = []
    truth: dict[str, int] = {}
    """Each item's latest ``n``, as written."""

    def latest(n: int) -> int | None:
        """The item a live change writes: the missed ones' (same) or one of its own (new)."""
        return None if args.live_items == "same" else LIVE_ITEMS_FROM + n

    def connect(cid: str) -> None:
        item = connection_item(
            cid, user_id=USER, now=time.time(), ttl_seconds=7200, source_ip="127.0.0.1"
        )
        client.put_item(TableName=CONNECTIONS, Item=item)
        server.connect(cid)

    def send(cid: str, message: dict[str, Any]) -> None:
        event = {"requestContext": {"connectionId": cid}, "body": json.dumps(message)}
        default.respond(event, poster, store)

    def received(cid: str) -> list[bytes]:
        with server.state.lock:
            return list(server.state.received.get(cid, []))

    def broadcast(first: int, count: int, live: bool = False) -> None:
        for start in range(first, first + count, BATCH):
            records = [
                stream_record(ROOM, n, args.items, "chg", item=latest(n) if live else None)
                for n in range(start, min(start + BATCH, first + count))
            ]
            for record in records:
                truth[record["dynamodb"]["Keys"]["SK"]["S"]] = int(
                    record["dynamodb"]["NewImage"]["n"]["N"]
                )
            failures, stats = worker.run(records, time.monotonic() + 60)
            if failures or stats.failed:
                problems.append(f"the broadcaster reported {failures} ({stats})")

    subscribe = {"action": "subscribe", "id": "s1", "table": SOURCE, "key": {"PK": ROOM}}
    for cid in ("W=", "A="):  # the witness stays all along; A leaves
        connect(cid)
        send(cid, subscribe)
    broadcast(0, BEFORE_LEAVING)
    a = Client()
    for data in received("A=")[1:]:
        a.apply(json.loads(data))
    last_cursor = a.cursor
    if last_cursor is None or len(a.seen) != BEFORE_LEAVING:
        problems.append(f"A received {len(a.seen)} changes before leaving, not {BEFORE_LEAVING}")
    remove_connection(client, connections_table=CONNECTIONS, subscriptions_table=SUBSCRIPTIONS,
                      connection_id="A=")  # fmt: skip
    with server.state.lock:
        server.state.known.discard("A=")

    started = time.perf_counter()
    broadcast(BEFORE_LEAVING, args.missed)
    log(
        f"  {args.missed:,} changes to {ROOM} ({args.items} items) broadcast while A was away"
        f" in {time.perf_counter() - started:.1f} s"
    )

    connect("B=")
    written = BEFORE_LEAVING + args.missed
    stop = threading.Event()
    live_count = 0

    def steady() -> None:  # --rate changes a second into the same items, bounded
        nonlocal live_count
        begun = time.perf_counter()
        while not stop.is_set() and time.perf_counter() - begun < MAX_LIVE_SECONDS:
            due = begun + live_count / args.rate
            stop.wait(max(due - time.perf_counter(), 0))
            if stop.is_set():
                return
            broadcast(written + live_count, 1, live=True)
            live_count += 1

    writer = threading.Thread(target=steady, name="live-writes", daemon=True)
    writer.start()
    time.sleep(0.2)  # writes are under way when the client resumes
    sent = time.perf_counter()
    send("B=", {**subscribe, "after": last_cursor})
    answered = time.perf_counter()
    time.sleep(LIVE_AFTER_RESUMED_SECONDS)
    stop.set()
    writer.join(MAX_LIVE_SECONDS)
    log(
        f"  respond() returned after {answered - sent:.2f} s; {live_count} live changes"
        f" broadcast meanwhile ({args.rate:g}/s, {args.live_items} items)"
    )

    times = [(t, json.loads(d)) for t, cid, d in poster.posted if cid == "B=" and t >= sent]
    kinds = [m.get("type") for _, m in times]
    if "resumed" not in kinds:
        problems.append(f"B got no resumed: {[m for _, m in times if m['type'] != 'event_update']}")
        return ResumeResult(0, None, 0, 0, live_count, -1, 0, 0, 0, 0, 0, problems)
    t_sub = times[kinds.index("subscribed")][0] - sent
    resumed_at = kinds.index("resumed")
    t_resumed, resumed = times[resumed_at][0] - sent, times[resumed_at][1]
    firsts = [t for t, m in times[:resumed_at] if m.get("type") == "event_update"]

    # B as the client sees it: the server's arrival order
    arrived = received("B=")
    b = Client()
    b.seen, b.last_n, b.view = set(a.seen), dict(a.last_n), dict(a.view)
    messages = [json.loads(d) for d in arrived]
    if messages[0]["type"] != "subscribed":
        problems.append(f"B's first message is {messages[0]}")
    ends = [i for i, m in enumerate(messages) if m["type"] in ("resumed", "reset")]
    during = [m for m in messages[1 : ends[0]] if m["type"] == "event_update"]
    for message in during:
        if message.get("replay") is True:
            b.apply(message)
    for message in during:
        if message.get("replay") is not True:
            b.apply(message)
    behind = sum(1 for sk, n in b.view.items() if n != b.last_n[sk])
    for message in messages[ends[0] + 1 :]:
        if message["type"] == "event_update":
            b.apply(message)
    expected = {f"chg-{n:08d}" for n in range(written + live_count)}
    lost = sorted(expected - b.seen)
    unexpected = sorted(b.seen - expected)
    if lost:
        problems.append(f"{len(lost)} changes lost, e.g. {lost[:3]}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected changes, e.g. {unexpected[:3]}")
    stale = sorted(sk for sk, n in truth.items() if b.view.get(sk) != n)
    if b.out_of_order:
        problems.append(
            f"{len(b.out_of_order)} changes applied out of order per item (a replayed change"
            f" arrived after a later live change to its item), e.g. {b.out_of_order[:2]};"
            f" after resumed {behind} items showed an older change than one already applied,"
            f" {len(stale)} of {len(truth)} end older than the table"
        )
    elif stale:
        problems.append(f"{len(stale)} items end older than the table, e.g. {stale[:3]}")
    witness = {json.loads(d)["id"]: d for d in received("W=")[1:]}
    not_live = sum(
        1
        for d in arrived
        if json.loads(d)["type"] == "event_update"
        and witness.get(json.loads(d)["id"])
        != d.replace(b',"replay":true,"cursor":', b',"cursor":')
    )
    if not_live:
        problems.append(f"{not_live} changes B received differ from the witness's live bytes")
    if resumed.get("replayed", 0) < args.missed:
        problems.append(f"resumed says {resumed.get('replayed')} replayed, < {args.missed}")
    return ResumeResult(
        to_subscribed=t_sub,
        to_first_replayed=(firsts[0] - sent) if firsts else None,
        to_resumed=t_resumed,
        replayed=int(resumed["replayed"]),
        live=live_count,
        lost=len(lost),
        out_of_order=len(b.out_of_order),
        stale=len(stale),
        behind=behind,
        duplicates=b.duplicates,
        not_live_bytes=not_live,
        problems=problems,
    )


def aws_session() -> Any:
    from handlers import aws

    return aws.session()


@dataclasses.dataclass
class CostResult:
    ms_on: list[float]
    ms_off: list[float]
    replay_ms: list[float]
    batch_writes: int
    items: int
    bytes: int
    units: int
    changes: int
    delivered_on: int
    delivered_off: int
    problems: list[str]


def run_cost(aws: Any, server: Any, key: bytes, args: argparse.Namespace) -> CostResult:
    from handlers import subscriptions as store
    from handlers.broadcaster import Broadcaster
    from handlers.config import broadcaster_config
    from handlers.connections import connection_item
    from handlers.management import ManagementApi, frozen_credentials
    from handlers.replay import item_size
    from handlers.topics import key_topic, subscription_key

    client = RecordingClient(aws.client("dynamodb"))
    api = ManagementApi(
        server.endpoint, region=REGION, credentials=frozen_credentials(aws_session())
    )
    on = broadcaster_config()
    off = dataclasses.replace(
        on, resume=dataclasses.replace(on.resume, table=None, retention_seconds=0)
    )
    arms = {
        "on": Broadcaster(on, dynamodb=client, api=api, cursor_key=key),
        "off": Broadcaster(off, dynamodb=client, api=api, cursor_key=None),
    }
    topic = key_topic(SOURCE, subscription_key(KEYS, {"PK": COST_ROOM})[1])
    ids = [f"S{n:03d}=" for n in range(args.subscribers)]
    for cid in ids:
        record = connection_item(cid, user_id=USER, now=time.time(), ttl_seconds=7200,
                                 source_ip="127.0.0.1")  # fmt: skip
        client.put_item(TableName=CONNECTIONS, Item=record)
        connection = store.Connection(cid, USER, None, None, {})
        item = store.subscription_item(connection, "s1", topic, SOURCE, None, None)
        client.put_item(TableName=SUBSCRIPTIONS, Item=item)
    store.bump_versions(client, SUBSCRIPTIONS, [topic])  # as each subscribe does
    server.connect(*ids)

    problems: list[str] = []
    per_record: dict[str, list[float]] = {"on": [], "off": []}
    replay_ms: list[float] = []
    delivered = {"on": 0, "off": 0}
    records = args.batches * BATCH
    written: list[dict[str, Any]] = []
    calls = 0
    for run in range(args.runs + 1):  # run 0 warms both up and is not counted
        batches = [
            [
                stream_record(COST_ROOM, n, BATCH, f"cost{run}")
                for n in range(b * BATCH, (b + 1) * BATCH)
            ]
            for b in range(args.batches)
        ]
        order = ("on", "off") if run % 2 else ("off", "on")
        for arm in order:
            client.reset()
            spent = 0.0
            replay = 0.0
            for batch in batches:
                started = time.perf_counter()
                failures, stats = arms[arm].run(batch, time.monotonic() + 60)
                spent += time.perf_counter() - started
                replay += stats.replayMs
                if failures or stats.delivered != len(batch) * len(ids):
                    problems.append(f"{arm}: delivered {stats.delivered}, failures {failures}")
                if run:
                    delivered[arm] += stats.delivered
            if not run:
                continue
            per_record[arm].append(spent * 1000 / records)
            if arm == "on":
                replay_ms.append(replay / records)
                written, calls = list(client.items), client.batch_writes
            elif client.items:
                problems.append(f"resume off wrote {len(client.items)} replay items")
    return CostResult(
        ms_on=per_record["on"],
        ms_off=per_record["off"],
        replay_ms=replay_ms,
        batch_writes=calls,
        items=len(written),
        bytes=sum(item_size(item) for item in written),
        units=sum(2 * math.ceil(item_size(item) / 1024) for item in written),
        changes=records,
        delivered_on=delivered["on"],
        delivered_off=delivered["off"],
        problems=problems,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--missed", type=int, default=1000, help="changes missed (default 1000)")
    parser.add_argument("--items", type=int, default=20, help="items they cycle over (20)")
    parser.add_argument("--rate", type=float, default=20.0, help="live changes/s (20)")
    parser.add_argument(
        "--live-items", choices=("same", "new"), default="same",
        help="live changes write the missed changes' items (default) or new ones",
    )  # fmt: skip
    parser.add_argument("--max-resume-seconds", type=float, default=5.0)
    parser.add_argument("--batches", type=int, default=10, help="batches of 100 records (10)")
    parser.add_argument("--subscribers", type=int, default=3, help="per record (3)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each arm (5)")
    parser.add_argument("--max-ratio", type=float, default=3.0)
    args = parser.parse_args(argv)
    if not 1 <= args.missed <= 4000 or not 1 <= args.items <= 1000:
        parser.error("--missed must be 1..4,000 (under REPLAY_MAX_CHANGES) and --items 1..1,000")
    if not 0 < args.rate <= 100 or not 1 <= args.batches <= 50 or not 1 <= args.runs <= 20:
        parser.error("--rate must be in (0, 100], --batches 1..50, --runs 1..20")
    if not 1 <= args.subscribers <= 50:
        parser.error("--subscribers must be 1..50")

    from bench.management_api import FakeManagementApi
    from emulator.services import LocalAws

    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    logging.getLogger("handlers").setLevel(logging.ERROR)
    aws = LocalAws().start()
    server = FakeManagementApi(stage="dev").start()
    try:
        os.environ.update(aws.environment())
        os.environ.update(environment(server.endpoint))
        from handlers.cursors import cursor_key

        key = cursor_key(CURSOR_SECRET)
        create_tables(aws.client("dynamodb"))
        print(
            f"moto server {aws.endpoint}, fake Management API {server.endpoint} (0 ms latency);"
            " both in this process, 127.0.0.1"
        )
        print(f"1. resume of {args.missed:,} missed changes, {args.rate:g} live changes/s")
        resume = run_resume(aws, server, key, args, print)
        print(f"2. cost per record: {args.batches} batches of {BATCH}, {args.subscribers}"
              f" subscribers each, {args.runs} interleaved runs per arm")  # fmt: skip
        cost = run_cost(aws, server, key, args)
    finally:
        server.stop()
        aws.stop()

    print()
    first = "n/a" if resume.to_first_replayed is None else f"{resume.to_first_replayed:.2f} s"
    rate = resume.replayed / resume.to_resumed if resume.to_resumed else 0.0
    print(f"{'resume':<34}{'value':>12}")
    print(f"{'subscribe -> subscribed':<34}{resume.to_subscribed:>10.2f} s")
    print(f"{'subscribe -> first replayed':<34}{first:>12}")
    print(f"{'subscribe -> resumed':<34}{resume.to_resumed:>10.2f} s"
          f"   (target <= {args.max_resume_seconds:g} s)")  # fmt: skip
    print(f"{'replayed (incl. 60 s overlap)':<34}{resume.replayed:>12,}")
    print(f"{'replayed changes/s':<34}{rate:>12,.0f}")
    print(f"{'live changes during the resume':<34}{resume.live:>12,}")
    print(f"{'lost':<34}{resume.lost:>12,}")
    print(f"{'out of order per item':<34}{resume.out_of_order:>12,}")
    print(f"{'items behind just after resumed':<34}{resume.behind:>12,}")
    print(f"{'items left older than the table':<34}{resume.stale:>12,}")
    print(f"{'duplicates dropped by id':<34}{resume.duplicates:>12,}")
    print(f"{'bytes unlike the live ones':<34}{resume.not_live_bytes:>12,}")

    on, off = statistics.median(cost.ms_on), statistics.median(cost.ms_off)
    ratio = on / off
    print()
    print(f"{'broadcaster, per record':<34}{'median ms':>10}{'runs (ms)':>12}")
    for name, runs in (("resume off (no store, no cursor)", cost.ms_off),
                       ("resume on", cost.ms_on),
                       ("  of which recording (replayMs)", cost.replay_ms)):  # fmt: skip
        print(f"{name:<34}{statistics.median(runs):>10.2f}   " + " ".join(f"{r:.2f}" for r in runs))
    print(f"{'ratio on/off':<34}{ratio:>9.2f}x   (target <= {args.max_ratio:g}x)")
    per_change_items = cost.items / cost.changes
    per_change_bytes = cost.bytes / cost.changes
    print(
        f"replay store: {cost.items:,} items in {cost.batch_writes} BatchWriteItem calls for"
        f" {cost.changes:,} changes: {per_change_items:g} items per change,"
        f" {cost.bytes / cost.items:,.0f} bytes per item (replay.item_size),"
        f" {per_change_bytes:,.0f} bytes per change ({2 * per_change_bytes:,.0f} stored with"
        f" the byTime index), {cost.units / cost.changes:g} write units per change"
        " (each item: table + index, 1 per KB)"
    )

    problems = resume.problems + cost.problems
    if resume.to_resumed > args.max_resume_seconds:
        problems.append(f"resumed after {resume.to_resumed:.2f} s > {args.max_resume_seconds:g} s")
    if ratio > args.max_ratio:
        problems.append(f"resume on costs {ratio:.2f}x resume off > {args.max_ratio:g}x")
    for problem in problems:
        print(f"FAIL: {problem}")
    if problems:
        return 1
    print(
        f"OK: {args.missed:,} missed changes resumed in {resume.to_resumed:.2f} s"
        f" ({rate:,.0f} replayed/s) with {resume.live} live changes, none lost or out of order;"
        f" the replay store costs {ratio:.2f}x per record ({on:.2f} vs {off:.2f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
