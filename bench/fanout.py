"""Fan-out throughput: the broadcaster's path against sequential boto3 ``post_to_connection``.

Both sides post the same ~1 KB message to the same fake Management API, which
runs in its own interpreter (``python -m bench.management_api``) with an
injected per-request latency, so the client process's CPU is all that is
measured here.

* baseline: one boto3 ``apigatewaymanagementapi`` client, a sequential loop of
  ``post_to_connection`` (the pattern most examples use) over a sample of the
  connections; posts/s of that sample.
* contender: ``handlers.broadcaster.Broadcaster(...).run(records, deadline)``
  with one synthetic INSERT stream record, fanned out to all N connections
  through ``handlers.management.ManagementApi`` (the handler's own wiring).
  Every connection holds one table-wide subscription: the subscriptions table
  is a moto table holding N subscriptions spread over the table-wide topic's
  buckets; its topic queries are timed separately (moto costs ~0.5 ms per
  item, which says nothing about DynamoDB) and the broadcaster reads the
  queries' pages from memory ("recipients pre-loaded"), so
  ``BatchStats.fanoutMs`` is essentially the fan-out itself (plus planning one
  message per connection, which it includes).

The server's ``/_control/stats`` must show every post arrived and was SigV4
signed, or the run fails. Exit status 1 when a check fails or the ratio
contender/baseline is under ``--min-ratio``.

    python -m bench.fanout [--connections 2000] [--latency-ms 20] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import selectors
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from handlers.config import DEFAULT_SEND_CONCURRENCY

ROOT = Path(__file__).resolve().parent.parent
TABLE = "bench-connections"
SUBSCRIPTIONS_TABLE = "bench-subscriptions"
BUCKETS = 4
REGION = "us-east-1"
FAKE_CREDENTIAL = "testing"
STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-26T12:00:00.000"
SOURCES_VARIABLE = json.dumps(
    {
        "orders": {
            "table": "orders",
            "keys": [["pk", "S"], ["sk", "S"]],
            "oldImage": False,
            "access": [{"table": True}],
        }
    }
)
"""The broadcaster's SOURCES for ``stream_record()``: label "orders" -> the table in STREAM_ARN."""
SERVER_START_TIMEOUT = 15.0
RUN_DEADLINE_SECONDS = 60.0


def fake_aws_environment() -> None:
    """Fake credentials and region, before any client is created."""
    os.environ.update(
        AWS_ACCESS_KEY_ID=FAKE_CREDENTIAL,
        AWS_SECRET_ACCESS_KEY=FAKE_CREDENTIAL,
        AWS_SESSION_TOKEN=FAKE_CREDENTIAL,
        AWS_SECURITY_TOKEN=FAKE_CREDENTIAL,
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
    )
    os.environ.pop("AWS_PROFILE", None)


def connection_ids(count: int, seed: int = 7) -> list[str]:
    """Ids shaped like API Gateway's: 16 base64 characters ending in ``=``."""
    rng = random.Random(seed)
    found: set[str] = set()
    while len(found) < count:
        found.add(base64.b64encode(rng.randbytes(11)).decode("ascii"))
    return sorted(found)


def stream_record(sequence: str = "4210000000000000000000001") -> dict[str, Any]:
    """One INSERT record (NEW_IMAGE) whose message is about 1 KB."""
    lines = [
        {
            "M": {
                "sku": {"S": f"SKU-{n:05d}"},
                "name": {"S": f"Widget model {n} with a longer descriptive name"},
                "qty": {"N": str(n + 1)},
                "price": {"N": f"{n * 3 + 9}.95"},
            }
        }
        for n in range(6)
    ]
    return {
        "eventID": "c81e728d9d4c2f636f067f89cc14862c",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "eventSourceARN": STREAM_ARN,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_795_000_000,
            "Keys": {"pk": {"S": "ORDER#2026-000481"}, "sk": {"S": "META"}},
            "NewImage": {
                "pk": {"S": "ORDER#2026-000481"},
                "sk": {"S": "META"},
                "status": {"S": "PAID"},
                "customer": {"S": "user-8c1f2a"},
                "total": {"N": "412.70"},
                "currency": {"S": "EUR"},
                "createdAt": {"S": "2026-11-26T12:00:00.000Z"},
                "shipping": {
                    "M": {
                        "street": {"S": "12 Rue des Exemples"},
                        "city": {"S": "Lyon"},
                        "zip": {"S": "69002"},
                        "country": {"S": "FR"},
                    }
                },
                "lines": {"L": lines},
                "tags": {"SS": ["priority", "gift"]},
            },
            "SequenceNumber": sequence,
            "SizeBytes": 900,
            "StreamViewType": "NEW_IMAGE",
        },
    }


class ManagementServer:
    """``python -m bench.management_api`` in a child process."""

    def __init__(self, latency_ms: float) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        command = [sys.executable, "-m", "bench.management_api", "--port", "0"]
        command += ["--latency-ms", str(latency_ms)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            self.endpoint = self._read_endpoint()
        except BaseException:
            self.stop()
            raise
        self.root = self.endpoint.rsplit("/", 1)[0]

    def _read_endpoint(self) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout=SERVER_START_TIMEOUT):
                raise RuntimeError("the fake Management API did not start in time")
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"unexpected first line from the fake Management API: {line!r}")
        return line.removeprefix("listening on ")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        # the server's own http://127.0.0.1 address
        request = urllib.request.Request(self.root + path, data=data, method=method)  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
            return json.loads(reply.read())

    def register(self, ids: list[str]) -> int:
        return int(self._call("POST", "/_control/connections", ids)["known"])

    def stats(self) -> dict[str, int]:
        return dict(self._call("GET", "/_control/stats"))

    def cpu_seconds(self) -> float | None:
        """The server process's user+system CPU time (Linux ``/proc``; None elsewhere)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


class PreloadedTable:
    """Stands in for the DynamoDB client: ``query`` replays topic pages read beforehand;
    ``batch_get_item`` gives each topic with pages version 1 (subscribed).

    ``delete_item`` (a 410 Gone clean-up) is recorded, not sent: the benchmark
    registers every id, so any call is a failure it reports.
    """

    def __init__(self, pages: dict[str, list[dict[str, Any]]]) -> None:
        self._pages = pages
        self.queries = 0
        self.deleted: list[str] = []

    def query(self, **kwargs: Any) -> dict[str, Any]:
        pages = self._pages.get(kwargs["ExpressionAttributeValues"][":topic"]["S"], [{}])
        start = kwargs.get("ExclusiveStartKey")
        self.queries += 1
        if start is None:
            return pages[0]
        for number, page in enumerate(pages[:-1]):
            if page.get("LastEvaluatedKey") == start:
                return pages[number + 1]
        raise KeyError(f"no page after {start!r}")

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, request),) = RequestItems.items()
        versions = [
            {"topic": key["topic"], "version": {"N": "1"}}
            for key in request["Keys"]
            if key["topic"]["S"] in self._pages
        ]
        return {"Responses": {table: versions}}

    def delete_item(self, **kwargs: Any) -> dict[str, Any]:
        self.deleted.append(kwargs["Key"]["connectionId"]["S"])
        return {}


def moto_topic_pages(ids: list[str]) -> tuple[dict[str, list[dict[str, Any]]], float, float]:
    """Write one table-wide subscription per connection to a moto subscriptions table; return
    each table-wide topic's query pages (as the broadcaster asks for them) and timings (s)."""
    import boto3
    from moto import mock_aws

    from handlers import subscriptions as store
    from handlers.topics import bucket_of, table_topic

    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        client.create_table(
            TableName=SUBSCRIPTIONS_TABLE,
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
        started = time.perf_counter()
        ttl = int(time.time()) + 7200
        for first in range(0, len(ids), 25):
            items = []
            for number, connection_id in enumerate(ids[first : first + 25], first):
                connection = store.Connection(connection_id, f"user-{number % 500}", None, ttl, {})
                topic = table_topic("orders", bucket_of(connection_id, BUCKETS))
                items.append(store.subscription_item(connection, "s1", topic, "orders", None, None))
            client.batch_write_item(
                RequestItems={
                    SUBSCRIPTIONS_TABLE: [{"PutRequest": {"Item": item}} for item in items]
                }
            )
        load_seconds = time.perf_counter() - started
        pages: dict[str, list[dict[str, Any]]] = {}
        started = time.perf_counter()
        for bucket in range(BUCKETS):
            topic = table_topic("orders", bucket)
            kwargs: dict[str, Any] = {
                "TableName": SUBSCRIPTIONS_TABLE,
                "KeyConditionExpression": "topic = :topic",
                "ExpressionAttributeValues": {":topic": {"S": topic}},
                "ExpressionAttributeNames": {"#filter": "filter", "#fields": "fields"},
                "ProjectionExpression": store.PROJECTION,
                "ConsistentRead": True,
            }
            while True:
                page = client.query(**kwargs)
                kept = {key: page[key] for key in ("Items", "LastEvaluatedKey") if key in page}
                pages.setdefault(topic, []).append(kept)
                if "LastEvaluatedKey" not in page:
                    break
                kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        query_seconds = time.perf_counter() - started
    return pages, load_seconds, query_seconds


def run_baseline(endpoint: str, ids: list[str], data: bytes) -> tuple[float, float]:
    """Sequential boto3 posts over ``ids``; returns (wall seconds, CPU seconds)."""
    import boto3

    client = boto3.client("apigatewaymanagementapi", endpoint_url=endpoint, region_name=REGION)
    client.post_to_connection(ConnectionId=ids[0], Data=data)  # warm-up, not timed
    cpu = time.process_time()
    started = time.perf_counter()
    for connection_id in ids:
        client.post_to_connection(ConnectionId=connection_id, Data=data)
    return time.perf_counter() - started, time.process_time() - cpu


def per_post(before: float | None, after: float | None, posts: int) -> str:
    if before is None or after is None:
        return "n/a"
    return f"{(after - before) / posts * 1e6:.0f}"


class Failures:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.messages.append(message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=DEFAULT_SEND_CONCURRENCY)
    parser.add_argument(
        "--baseline-sample", type=int, default=300, help="boto3 posts to time (default 300)"
    )
    parser.add_argument("--min-ratio", type=float, default=25.0)
    args = parser.parse_args(argv)
    if args.connections < 2 or args.baseline_sample < 1:
        parser.error("--connections must be >= 2 and --baseline-sample >= 1")

    fake_aws_environment()
    logging.getLogger("botocore.credentials").setLevel(logging.WARNING)
    failures = Failures()
    ids = connection_ids(args.connections)
    sample = ids[: min(args.baseline_sample, len(ids))]
    record = stream_record()

    pages, load_seconds, query_seconds = moto_topic_pages(ids)
    server = ManagementServer(args.latency_ms)
    try:
        os.environ["CONNECTIONS_TABLE"] = TABLE
        os.environ["MANAGEMENT_ENDPOINT"] = server.endpoint
        os.environ["SOURCES"] = SOURCES_VARIABLE
        os.environ["SUBSCRIPTIONS_TABLE"] = SUBSCRIPTIONS_TABLE
        os.environ["TABLE_TOPIC_BUCKETS"] = str(BUCKETS)
        from handlers import aws, config
        from handlers.broadcaster import Broadcaster, encode, read_record
        from handlers.cursors import cursor_key
        from handlers.management import ManagementApi, frozen_credentials
        from handlers.recipients import Subscription, plan

        settings = replace(config.broadcaster_config(), send_concurrency=args.concurrency)
        read = read_record(
            record, now=time.time(), sources=settings.sources, buckets=settings.table_buckets
        )
        subscriber = Subscription(ids[0], "s1", (), None, None)  # table-wide, every field
        message = plan(read.change, [subscriber], key_names=read.key_names,
                       target_attribute=None, include_old=False)[ids[0]]  # fmt: skip
        data = encode(message)[0]  # what each connection receives
        failures.check(server.register(ids) == len(ids), "the server did not register every id")
        print(
            f"fake Management API: {server.endpoint} (own process, pid {server.process.pid}),"
            f" latency {args.latency_ms:g} ms, {len(ids)} connections registered"
        )
        print(f"message: {len(data)} bytes (one INSERT record, as a table-wide subscriber gets it)")
        print(
            f"moto subscriptions table: {len(ids)} table-wide subscriptions written in"
            f" {load_seconds:.2f} s; {sum(map(len, pages.values()))} query page(s) over"
            f" {len(pages)} topic(s) took {query_seconds * 1000:.0f} ms"
            " (timed separately, moto in-process; not part of the fan-out figure)"
        )

        # Baseline: sequential boto3.
        before, server_cpu = server.stats(), server.cpu_seconds()
        base_wall, base_cpu = run_baseline(server.endpoint, sample, data)
        after = server.stats()
        base_server = per_post(server_cpu, server.cpu_seconds(), len(sample) + 1)
        base_rate = len(sample) / base_wall
        failures.check(
            after["posts"] - before["posts"] == len(sample) + 1,
            f"baseline: server counted {after['posts'] - before['posts']} posts,"
            f" expected {len(sample) + 1}",
        )

        # Contender: the broadcaster's own path, wired as handlers.broadcaster.broadcaster() does.
        table = PreloadedTable(pages)
        api = ManagementApi(
            settings.management_endpoint,
            region=aws.region(),
            credentials=frozen_credentials(aws.session()),
        )
        # as deployed: every message carries its connection's signed cursor (resume); the
        # replay store is off here (settings has no REPLAY_TABLE): bench.resume measures it
        worker = Broadcaster(
            settings, dynamodb=table, api=api, cursor_key=cursor_key("bench cursor secret")
        )
        before, server_cpu = server.stats(), server.cpu_seconds()
        cpu = time.process_time()
        started = time.perf_counter()
        failed, stats = worker.run([record], time.monotonic() + RUN_DEADLINE_SECONDS)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        contender_server = per_post(server_cpu, server.cpu_seconds(), len(ids))
        after = server.stats()
        rate = len(ids) / (stats.fanoutMs / 1000)
        posts = after["posts"] - before["posts"]
        failures.check(not failed, f"broadcaster reported batchItemFailures {failed}")
        failures.check(stats.delivered == len(ids), f"delivered {stats.delivered}/{len(ids)}")
        failures.check(
            stats.failed == 0 and stats.retried == 0 and stats.staleRemoved == 0,
            f"broadcaster stats: {stats}",
        )
        failures.check(not table.deleted, f"{len(table.deleted)} connections reported gone")
        failures.check(posts == len(ids), f"server counted {posts} posts, expected {len(ids)}")
        failures.check(after["unsigned"] == 0, f"{after['unsigned']} requests were not signed")
        failures.check(
            after["requests"] == after["posts"],
            f"server saw {after['requests']} requests for {after['posts']} posts",
        )

        ratio = rate / base_rate
        print()
        print(f"{'':34}{'posts':>7}{'posts/s':>10}{'CPU us/post':>13}{'server CPU us/post':>20}")
        print(
            f"{'baseline  boto3 sequential':34}{len(sample):>7}{base_rate:>10.1f}"
            f"{base_cpu / len(sample) * 1e6:>13.0f}{base_server:>20}"
        )
        print(
            f"{f'contender Broadcaster.run c={args.concurrency}':34}{len(ids):>7}{rate:>10.1f}"
            f"{cpu / len(ids) * 1e6:>13.0f}{contender_server:>20}"
        )
        print("(CPU us/post: this process's user+system CPU, all threads, per post)")
        print()
        print(
            f"contender: fanoutMs {stats.fanoutMs:.1f} (recipients pre-loaded), wall around"
            f" run() {wall * 1000:.1f} ms, delivered {stats.delivered},"
            f" {table.queries} query page(s)"
        )
        print(
            f"server stats: requests {after['requests']}, posts {after['posts']},"
            f" unsigned {after['unsigned']}"
        )
        print(f"ratio contender/baseline: {ratio:.1f}x (target >= {args.min_ratio:g}x)")
        failures.check(ratio >= args.min_ratio, f"ratio {ratio:.1f} < {args.min_ratio:g}")
    finally:
        server.stop()

    for message in failures.messages:
        print(f"FAIL: {message}")
    if failures.messages:
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
