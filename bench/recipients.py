"""Recipient lookup cost: the topic index against the version 1 full scan, in one run.

N connections, of which 10 subscribe to one partition (``ORDER#42``); every
other connection subscribes to a partition of its own (``USER#<n>``), so the
subscriptions table is as big as the connections table. One change to an item
of ``ORDER#42`` is broadcast by ``handlers.broadcaster.Broadcaster`` (the
handler's own code: one BatchGetItem of the version items of the topics the
record touches, the item, the partition and each table-wide bucket, then one
Query per topic that has one: here the partition, whose Query also reads its
version item). The baseline is what version 1 did for
the same change: a Scan of the whole connections table projecting
``connectionId`` (a 100-item first page, then full pages), whose every
connection then received the change.

Both run against the same moto tables in this process. A wrapper around the
DynamoDB client counts the calls and the items each one read (``ScannedCount``:
what DynamoDB reads and bills, before any filter). Run at several sizes, the
topic index must read the same number of items at each (its cost does not grow
with connections that did not subscribe), at most ``--max-items`` (a few
dozen), and at least ``--min-ratio`` times fewer items than the scan at the
largest size. Exit status 1 when a check fails.

    python -m bench.recipients [--sizes 1000,10000] [--subscribers 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from bench.fanout import REGION, connection_ids, fake_aws_environment

CONNECTIONS = "bench-connections"
SUBSCRIPTIONS = "bench-subscriptions"
SOURCE, TABLE = "orders", "orders-4d2c1a9"
KEYS = (("pk", "S"), ("sk", "S"))
PARTITION = "ORDER#42"
BUCKETS = 4
STREAM_ARN = f"arn:aws:dynamodb:{REGION}:123456789012:table/{TABLE}/stream/2026-11-30T12:00:00.000"
V1_FIRST_PAGE_ITEMS = 100


class CountingClient:
    """Wraps a botocore DynamoDB client: counts calls and the items each one read."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.items: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name.startswith("_") or not callable(attribute):
            return attribute  # meta, exceptions

        def call(**kwargs: Any) -> Any:
            answer = attribute(**kwargs)
            read = answer.get("ScannedCount", answer.get("Count", 0))
            if name in ("get_item", "delete_item"):
                read = int("Item" in answer or "Attributes" in answer)
            if name == "batch_get_item":
                read = sum(len(items) for items in answer.get("Responses", {}).values())
            with self._lock:
                self.calls[name] += 1
                self.items[name] += read
            return answer

        return call

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.items.clear()


class RecordingPoster:
    """Stands in for the Management API: every post succeeds and is recorded."""

    def __init__(self) -> None:
        self.posted: list[str] = []
        self._lock = threading.Lock()

    def post_to_connection(
        self, connection_id: str, data: bytes, timeout: float | None = None
    ) -> Any:
        from handlers.management import Response

        with self._lock:
            self.posted.append(connection_id)
        return Response(200)


def v1_recipients(client: Any, table: str) -> Iterator[str]:
    """Version 1's recipients for any change: every connection id, by a paginated Scan."""
    request: dict[str, Any] = {
        "TableName": table,
        "ProjectionExpression": "connectionId",
        "Limit": V1_FIRST_PAGE_ITEMS,
    }
    while True:
        page = client.scan(**request)
        for item in page.get("Items", []):
            yield item["connectionId"]["S"]
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        request.pop("Limit", None)
        request["ExclusiveStartKey"] = last


def stream_record() -> dict[str, Any]:
    """A MODIFY of one order in ``ORDER#42``: its status goes from paid to ready."""

    def image(status: str) -> dict[str, Any]:
        return {
            "pk": {"S": PARTITION},
            "sk": {"S": "ITEM#7"},
            "status": {"S": status},
            "total": {"N": "41.5"},
            "customer": {"S": "user-8c1f2a"},
        }

    return {
        "eventID": "5f0c2b9e1a7d4c3b8e6f0a1b2c3d4e5f",
        "eventName": "MODIFY",
        "eventSourceARN": STREAM_ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_795_000_000,
            "Keys": {"pk": {"S": PARTITION}, "sk": {"S": "ITEM#7"}},
            "NewImage": image("ready"),
            "OldImage": image("paid"),
            "SequenceNumber": "4210000000000000000000042",
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def create_tables(client: Any) -> None:
    client.create_table(
        TableName=CONNECTIONS,
        AttributeDefinitions=[{"AttributeName": "connectionId", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "connectionId", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.create_table(
        TableName=SUBSCRIPTIONS,
        AttributeDefinitions=[
            {"AttributeName": "topic", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "topic", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def populate(client: Any, ids: list[str], subscribers: int) -> list[str]:
    """Connection records and one subscription each, as connect and subscribe store them;
    the first ``subscribers`` watch ``PARTITION``. Returns their ids."""
    from handlers import subscriptions as store
    from handlers.connections import connection_item
    from handlers.topics import key_topic, subscription_key

    now = time.time()
    topics: set[str] = set()
    for first in range(0, len(ids), 25):
        records, subscriptions = [], []
        for number, connection_id in enumerate(ids[first : first + 25], first):
            partition = PARTITION if number < subscribers else f"USER#{number}"
            topic = key_topic(SOURCE, subscription_key(KEYS, {"pk": partition})[1])
            record = connection_item(
                connection_id, user_id=f"user-{number}", now=now, ttl_seconds=7200,
                source_ip="203.0.113.9",
            )  # fmt: skip
            record["subs"] = {"M": {"s1": {"S": topic}}}
            topics.add(topic)
            records.append({"PutRequest": {"Item": record}})
            connection = store.Connection(connection_id, f"user-{number}", None, None, {})
            item = store.subscription_item(connection, "s1", topic, SOURCE, None, None)
            subscriptions.append({"PutRequest": {"Item": item}})
        client.batch_write_item(RequestItems={CONNECTIONS: records, SUBSCRIPTIONS: subscriptions})
    # as each subscribe does: the topics' versions moved (the broadcaster reads them first)
    store.bump_versions(client, SUBSCRIPTIONS, topics)
    return ids[:subscribers]


@dataclass
class Measured:
    connections: int
    approach: str
    calls: dict[str, int]
    items: int
    posts: int
    seconds: float

    @property
    def call_count(self) -> int:
        return sum(self.calls.values())


def measure(
    size: int, subscribers: int, make_broadcaster: Callable[[Any, Any], Any]
) -> tuple[Measured, Measured, list[str]]:
    """(topic index, version 1 scan, problems) for one size, on fresh moto tables."""
    import boto3
    from moto import mock_aws

    problems: list[str] = []
    ids = connection_ids(size, seed=size)
    with mock_aws():
        raw = boto3.client("dynamodb", region_name=REGION)
        create_tables(raw)
        started = time.perf_counter()
        expected = populate(raw, ids, subscribers)
        print(
            f"  {size:,} connections and {size:,} subscriptions written to moto in"
            f" {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        client = CountingClient(raw)

        poster = RecordingPoster()
        worker = make_broadcaster(client, poster)
        started = time.perf_counter()
        failures, stats = worker.run([stream_record()], time.monotonic() + 60)
        index = Measured(size, "topic index", dict(client.calls), sum(client.items.values()),
                         len(poster.posted), time.perf_counter() - started)  # fmt: skip
        if failures or stats.recordsFailed:
            problems.append(f"{size}: the broadcaster reported {failures} ({stats})")
        if sorted(poster.posted) != sorted(expected):
            problems.append(
                f"{size}: posted to {len(poster.posted)} connections, expected the"
                f" {len(expected)} subscribers of {PARTITION}"
            )

        client.reset()
        started = time.perf_counter()
        everyone = list(v1_recipients(client, CONNECTIONS))
        scan = Measured(size, "v1 full scan", dict(client.calls), sum(client.items.values()),
                        len(everyone), time.perf_counter() - started)  # fmt: skip
        if len(everyone) != size:
            problems.append(f"{size}: the scan found {len(everyone)} connections, not {size}")
    return index, scan, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="1000,10000", help="connection counts (default 1000,10000)"
    )
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--min-ratio", type=float, default=100.0)
    parser.add_argument("--max-items", type=int, default=36, help="items the index may read")
    args = parser.parse_args(argv)
    try:
        sizes = sorted({int(part) for part in args.sizes.split(",") if part.strip()})
    except ValueError:
        parser.error("--sizes is a comma-separated list of connection counts, e.g. 1000,10000")
    if not sizes or sizes[0] <= args.subscribers or args.subscribers < 1 or sizes[-1] > 50_000:
        parser.error("each size must exceed --subscribers (>= 1) and be at most 50,000")

    fake_aws_environment()
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    logging.getLogger("handlers").setLevel(logging.WARNING)
    env = {
        "CONNECTIONS_TABLE": CONNECTIONS,
        "SUBSCRIPTIONS_TABLE": SUBSCRIPTIONS,
        "MANAGEMENT_ENDPOINT": "http://127.0.0.1:9/unused",
        "TABLE_TOPIC_BUCKETS": str(BUCKETS),
        "SOURCES": json.dumps(
            {
                SOURCE: {
                    "table": TABLE,
                    "keys": [list(k) for k in KEYS],
                    "oldImage": True,
                    "access": [{"key": {"pk": "ORDER#{sub}"}}],
                }
            }
        ),
    }
    os.environ.update(env)
    from handlers import config
    from handlers.broadcaster import Broadcaster

    settings = replace(config.broadcaster_config(env), send_concurrency=8)

    def make_broadcaster(client: Any, poster: Any) -> Any:
        return Broadcaster(settings, dynamodb=client, api=poster)

    print(
        f"one change to an item of {PARTITION}; {args.subscribers} connections subscribe to"
        f" {PARTITION}, every other one to its own partition; {BUCKETS} table-wide buckets"
    )
    rows: list[Measured] = []
    problems: list[str] = []
    for size in sizes:
        index, scan, found = measure(size, args.subscribers, make_broadcaster)
        rows.extend((index, scan))
        problems.extend(found)

    print()
    header = f"{'connections':>12}  {'approach':<13}{'calls':>7}{'items read':>12}{'posts':>7}"
    print(f"{header}{'moto s':>8}  calls by operation")
    for row in rows:
        detail = ", ".join(f"{name} {count}" for name, count in sorted(row.calls.items()))
        print(
            f"{row.connections:>12,}  {row.approach:<13}{row.call_count:>7}{row.items:>12,}"
            f"{row.posts:>7,}{row.seconds:>8.2f}  {detail}"
        )
    indexed = [row for row in rows if row.approach == "topic index"]
    largest_index, largest_scan = rows[-2], rows[-1]
    ratio = largest_scan.items / max(largest_index.items, 1)
    print()
    print(
        f"items read at {largest_index.connections:,} connections: {largest_scan.items:,} by the"
        f" scan, {largest_index.items} through the topic index: {ratio:,.0f}x fewer"
        f" (target >= {args.min_ratio:g}x); DynamoDB calls {largest_scan.call_count} vs"
        f" {largest_index.call_count} (the versions of the item, partition and {BUCKETS} bucket"
        " topics, then one Query per subscribed topic)"
    )
    if len({row.items for row in indexed}) != 1:
        problems.append(
            "the index read a different number of items at different sizes: "
            + ", ".join(f"{row.connections:,}: {row.items}" for row in indexed)
        )
    if largest_index.items > args.max_items:
        problems.append(f"the index read {largest_index.items} items (at most {args.max_items})")
    if ratio < args.min_ratio:
        problems.append(f"ratio {ratio:.0f}x < {args.min_ratio:g}x")
    for problem in problems:
        print(f"FAIL: {problem}")
    if problems:
        return 1
    print(
        f"OK: {ratio:,.0f}x fewer items read than the v1 scan at {largest_index.connections:,}"
        f" connections ({largest_index.items} vs {largest_scan.items:,}); the same"
        f" {largest_index.items} at every size"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
