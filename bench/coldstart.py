"""Cold start of each handler: a fresh interpreter that imports it and serves one event.

For every handler (authorizer, connect, disconnect, default, broadcaster, sender) a new
Python process is started with the environment the component declares for it
(the ``dev`` stack's program run under mocks, as ``make dev`` runs it: its
tables, SOURCES with keys and access rules, SUBSCRIPTIONS_TABLE...), fake
credentials, a region, and the ``AWS_ENDPOINT_URL_*`` override of the one
service it calls. AWS is a moto server started here on 127.0.0.1 holding the
declared tables (connections, subscriptions, the ``events`` source) and the
token secret's SSM parameter; ``MANAGEMENT_ENDPOINT`` points at the fake
Management API (``bench.management_api``) in this process.

Each round follows one connection through its life: the authorizer verifies
its token, connect stores its record (with the identity the authorizer
answered), default serves its first message, a ``subscribe`` to the
partition of the record below, the broadcaster delivers that record (an
INSERT of ~1 KB) to it and to ``--recipients`` other subscribers (half on the
partition, half table-wide), the sender delivers one queued delivery job (an
SQS FIFO record as the mapping hands it over, ``plan_jobs``'s body) to
``--recipients`` connections of its own, each with its cursor, and disconnect
removes its record and its subscription.

The baseline, measured in the same run and the same way: a fresh interpreter
that does what most examples do, ``import boto3``, create a DynamoDB client and
make one call (``put_item`` of a connection record) to the same moto server.
Absolute milliseconds vary threefold between machines; the ratio
handler / baseline does not, so the target is a ratio.

Two figures per run: inside the child, from its first line (before the handler
module is imported) to the handler's return; and the whole process as the
parent sees it (interpreter start-up and exit included). Each handler runs
``--runs`` times (round-robin, the baseline first in each round) and the median
is reported. Every answer must be the successful one (Allow policy with the
identity context, statusCode 200, no batchItemFailures) and its side effect
visible (record stored with its identity, ``subscribed`` answered and the
subscription stored, the record received by every subscriber, record and
subscription deleted). Exit status 1 when a check fails or a handler's median
in-process time is more than ``--max-ratio`` times the baseline's.

    python -m bench.coldstart [--max-ratio 1.25] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
ACCOUNT = "123456789012"
API_ID = "a1b2c3d4e5"
STAGE = "dev"
STACK = "dev"
FAKE_CREDENTIAL = "testing"
MARKER = "@@coldstart@@ "
HANDLERS = ("authorizer", "connect", "disconnect", "default", "broadcaster", "sender")
"""In the order the table prints them."""
SERVICES = {
    "authorizer": ("SSM",),
    "connect": ("DYNAMODB",),
    "disconnect": ("DYNAMODB",),
    "default": ("DYNAMODB", "SSM"),
    "broadcaster": ("DYNAMODB", "SSM"),
    "sender": ("DYNAMODB",),
}
"""The AWS services each handler calls (besides @connections): SSM for the token secret
(authorizer) and the cursor secret (default, broadcaster); the sender reads DynamoDB only to
clean up a gone connection."""
ROUND = ("authorizer", "connect", "default", "broadcaster", "sender", "disconnect")
"""The order of a round: one connection's life."""
PARTITION = "ORDER#2026-000481"
"""The partition of the broadcast record, which the round's connection subscribes to."""
CHILD_TIMEOUT_SECONDS = 30

# Runs in the fresh interpreter. Its first statement starts the clock.
CHILD = """\
import time
started = time.perf_counter()
import importlib, json, sys

name, event = sys.argv[1], json.loads(sys.argv[2])


class Context:
    function_name = "realtime-channel-" + name
    memory_limit_in_mb = 256
    aws_request_id = "6f1c1b8e-0d9c-4a55-9b59-3c0a8f6f0c1e"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + function_name

    @staticmethod
    def get_remaining_time_in_millis():
        return 30000


module = importlib.import_module("handlers." + name)
imported = time.perf_counter()
result = module.handler(event, Context())
done = time.perf_counter()
print(MARKER + json.dumps({
    "importMs": (imported - started) * 1000,
    "handlerMs": (done - imported) * 1000,
    "totalMs": (done - started) * 1000,
    "cpuMs": time.process_time() * 1000,
    "result": result,
}), flush=True)
""".replace("MARKER", repr(MARKER))

# The baseline: what most examples do, in a fresh interpreter, timed the same way.
BASELINE = """\
import time
started = time.perf_counter()
import json, os, sys

import boto3

imported = time.perf_counter()
client = boto3.client("dynamodb")
client.put_item(
    TableName=os.environ["CONNECTIONS_TABLE"],
    Item={"connectionId": {"S": sys.argv[1]}, "userId": {"S": "baseline"}},
)
done = time.perf_counter()
print(MARKER + json.dumps({
    "importMs": (imported - started) * 1000,
    "handlerMs": (done - imported) * 1000,
    "totalMs": (done - started) * 1000,
    "cpuMs": time.process_time() * 1000,
    "result": {"stored": sys.argv[1]},
}), flush=True)
""".replace("MARKER", repr(MARKER))
BASELINE_NAME = "baseline"


def fake_credentials() -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": FAKE_CREDENTIAL,
        "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIAL,
        "AWS_SESSION_TOKEN": FAKE_CREDENTIAL,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }


@dataclass(frozen=True)
class Stack:
    """What the ``dev`` stack's program declares, as far as these runs need it."""

    environments: dict[str, dict[str, str]]
    """handler (authorizer, connect...) -> its declared environment variables."""
    stage: str
    connections_table: str
    subscriptions_table: str
    source_label: str
    source_table: str
    key_names: tuple[str, str]
    """The source's partition and sort key (both strings)."""
    buckets: int


def declared_stack(secret: str, aws: Any) -> Stack:
    """Run the ``dev`` program under mocks (as ``make dev`` does) and create what it declares
    (tables, the token secret's parameter) in the local AWS ``aws`` (``emulator.services``)."""
    from emulator.model import build
    from emulator.program import RecordingMocks, run_main
    from emulator.services import provision

    declared = run_main(
        STACK,
        secret=secret,
        with_defaults=True,
        mocks=RecordingMocks(lookup_table=aws.describe_table),
    )
    model = build(declared.resources)
    provision(aws, model)
    environments: dict[str, dict[str, str]] = {}
    for function in model.functions.values():
        name = function.handler.removeprefix("handlers.").removesuffix(".handler")
        environments[name] = dict(function.environment)
    missing = [name for name in HANDLERS if name not in environments]
    if missing:
        raise RuntimeError(f"the {STACK} stack declares no function for {', '.join(missing)}")
    broadcaster = environments["broadcaster"]
    sources = json.loads(broadcaster["SOURCES"])
    label, source = next(iter(sources.items()))
    keys = source.get("keys") or []
    if [kind for _, kind in keys] != ["S", "S"]:
        raise RuntimeError(f"source {label!r}: expected a string partition and sort key: {keys}")
    return Stack(
        environments=environments,
        stage=model.stage,
        connections_table=broadcaster["CONNECTIONS_TABLE"],
        subscriptions_table=broadcaster["SUBSCRIPTIONS_TABLE"],
        source_label=label,
        source_table=source["table"],
        key_names=(keys[0][0], keys[1][0]),
        buckets=int(broadcaster.get("TABLE_TOPIC_BUCKETS") or 1),
    )


def handler_environment(
    name: str, stack: Stack, aws_endpoint: str, management_endpoint: str
) -> dict[str, str]:
    """What the component declares for ``handlers.<name>``, nothing inherited; the
    @connections endpoint is the fake one, AWS the local one (for the services it calls)."""
    env = {"PYTHONPATH": str(ROOT), **fake_credentials(), **stack.environments[name]}
    if "MANAGEMENT_ENDPOINT" in env:
        env["MANAGEMENT_ENDPOINT"] = management_endpoint
    for service in SERVICES[name]:
        env[f"AWS_ENDPOINT_URL_{service}"] = aws_endpoint
    return env


def request_context(route: str, event_type: str, connection_id: str) -> dict[str, Any]:
    now = time.time()
    return {
        "routeKey": route,
        "eventType": event_type,
        "extendedRequestId": "Qx1bXHzYoAMFc5A=",
        "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "messageDirection": "IN",
        "stage": STAGE,
        "connectedAt": int(now * 1000) - 1500,
        "requestTimeEpoch": int(now * 1000),
        "identity": {"userAgent": "Mozilla/5.0 (bench)", "sourceIp": "203.0.113.24"},
        "requestId": "Qx1bXHzYoAMFc5A=",
        "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "connectionId": connection_id,
        "apiId": API_ID,
    }


def authorizer_event(token: str, connection_id: str) -> dict[str, Any]:
    headers = {
        "Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "X-Forwarded-For": "203.0.113.24",
    }
    return {
        "type": "REQUEST",
        "methodArn": f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/$connect",
        "headers": headers,
        "multiValueHeaders": {key: [value] for key, value in headers.items()},
        "queryStringParameters": {"token": token},
        "multiValueQueryStringParameters": {"token": [token]},
        "stageVariables": {},
        "requestContext": request_context("$connect", "CONNECT", connection_id),
    }


def connect_event(connection_id: str, authorizer: dict[str, Any]) -> dict[str, Any]:
    """$connect as API Gateway passes it on: with the authorizer's context."""
    context = request_context("$connect", "CONNECT", connection_id)
    context["authorizer"] = {
        **authorizer,
        "principalId": authorizer["userId"],
        "integrationLatency": 41,
    }
    return {
        "headers": {"Host": context["domainName"], "Sec-WebSocket-Version": "13"},
        "requestContext": context,
        "isBase64Encoded": False,
    }


def disconnect_event(connection_id: str) -> dict[str, Any]:
    context = request_context("$disconnect", "DISCONNECT", connection_id)
    context["disconnectStatusCode"] = 1001
    context["disconnectReason"] = "Going away"
    return {"headers": {"Host": context["domainName"]}, "requestContext": context}


def default_event(connection_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestContext": request_context("$default", "MESSAGE", connection_id),
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def change_record(stack: Stack, sequence: str) -> dict[str, Any]:
    """``bench.fanout``'s ~1 KB INSERT, as the stack's source stream carries it."""
    from bench.fanout import stream_record

    record = stream_record(sequence=sequence)
    partition, sort = stack.key_names
    keys = {partition: {"S": PARTITION}, sort: {"S": "META"}}
    image = {
        **keys,
        **{k: v for k, v in record["dynamodb"]["NewImage"].items() if k not in ("pk", "sk")},
    }
    record["eventID"] = f"{int(sequence):032x}"[-32:]
    record["eventSourceARN"] = (
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{stack.source_table}"
        "/stream/2026-11-26T12:00:00.000"
    )
    record["dynamodb"].update(Keys=keys, NewImage=image, StreamViewType="NEW_AND_OLD_IMAGES")
    return record


def sender_event(
    change_id: str, message: dict[str, Any], targets: list[str], cursor: str
) -> dict[str, Any]:
    """One SQS FIFO batch as the senders' mapping hands it over: the job (``plan_jobs``, one
    group) that delivers ``message`` to every target, each with its cursor."""
    from handlers.jobs import plan_jobs

    envelope = json.dumps(message, separators=(",", ":")).encode()
    (job,) = plan_jobs(
        change_id,
        dict.fromkeys(targets, envelope),
        1,
        channel="realtime",
        cursors=dict.fromkeys(targets, cursor),
    )
    return {
        "Records": [
            {
                "messageId": f"job-{change_id}",
                "receiptHandle": f"receipt-{change_id}",
                "body": job.body,
                "attributes": {
                    "MessageGroupId": job.group_id,
                    "MessageDeduplicationId": job.deduplication_id,
                    "ApproximateReceiveCount": "1",
                    "SequenceNumber": "18889000000000000001",
                },
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:realtime-fanout.fifo",
                "awsRegion": REGION,
            }
        ]
    }


@dataclass
class Sample:
    total_ms: float
    import_ms: float
    handler_ms: float
    cpu_ms: float
    wall_ms: float


@dataclass
class Row:
    name: str
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def median(self, attribute: str) -> float:
        return float(statistics.median(getattr(sample, attribute) for sample in self.samples))


def baseline_environment(stack: Stack, aws_endpoint: str) -> dict[str, str]:
    """The baseline's environment: the connect handler's (the same table, the same service)."""
    return handler_environment("connect", stack, aws_endpoint, management_endpoint="")


def run_child(name: str, event: dict[str, Any], env: dict[str, str]) -> tuple[Sample, Any, str]:
    if name == BASELINE_NAME:
        command = [sys.executable, "-c", BASELINE, str(event["connectionId"])]
    else:
        command = [sys.executable, "-c", CHILD, name, json.dumps(event)]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )
    wall_ms = (time.perf_counter() - started) * 1000
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{name}: child exited {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    found = json.loads(lines[-1].removeprefix(MARKER))
    sample = Sample(
        total_ms=found["totalMs"],
        import_ms=found["importMs"],
        handler_ms=found["handlerMs"],
        cpu_ms=found["cpuMs"],
        wall_ms=wall_ms,
    )
    return sample, found["result"], done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=1.25,
        help="most a handler's median may take, as a multiple of the baseline's (default 1.25)",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per handler (median)")
    parser.add_argument(
        "--recipients",
        type=int,
        default=10,
        help="standing subscribers the broadcaster posts to, besides the round's connection",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="latency of the fake @connections endpoint (default 0: measure the handler only)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.recipients < 1:
        parser.error("--runs and --recipients must be >= 1")
    if not args.max_ratio > 0:
        parser.error("--max-ratio must be a positive number")

    os.environ.update(fake_credentials())
    from bench.fanout import connection_ids
    from bench.management_api import FakeManagementApi
    from emulator.services import LocalAws
    from handlers import subscriptions as store
    from handlers.tokens import mint_token, verify_token
    from handlers.topics import bucket_of, key_topic, table_topic, typed_part

    aws = LocalAws("127.0.0.1").start()  # moto on 127.0.0.1, as the emulator runs it
    management: FakeManagementApi | None = None
    rows = {name: Row(name) for name in (BASELINE_NAME, *HANDLERS)}
    try:
        token_secret = secrets.token_urlsafe(32)
        stack = declared_stack(token_secret, aws)
        management = FakeManagementApi(stage=stack.stage, latency=args.latency_ms / 1000).start()
        aws_endpoint = aws.endpoint
        dynamodb = aws.client("dynamodb")
        label = stack.source_label
        partition_topic = key_topic(label, [typed_part("S", PARTITION)])

        # Ids the runs use: the broadcast's standing subscribers, and per run the connection
        # that lives through one round (connect, subscribe, receive, disconnect).
        ids = connection_ids(2 * args.recipients + args.runs, seed=11)
        recipients, rounds = ids[: args.recipients], ids[args.recipients : -args.recipients]
        # the sender's job goes to connections of its own, so the counts stay apart
        targets = ids[-args.recipients :]
        ttl = int(time.time()) + 7200
        for number, connection_id in enumerate(recipients):
            # half on the record's partition, half table-wide: both kinds of topic are read
            if number % 2:
                topic = table_topic(label, bucket_of(connection_id, stack.buckets))
            else:
                topic = partition_topic
            connection = store.Connection(connection_id, f"user-{number}", None, ttl, {})
            dynamodb.put_item(
                TableName=stack.subscriptions_table,
                Item=store.subscription_item(connection, "s1", topic, label, None, None),
            )
            dynamodb.put_item(
                TableName=stack.connections_table,
                Item={
                    "connectionId": {"S": connection_id},
                    "userId": {"S": f"user-{number}"},
                    "connectedAt": {"S": "2026-11-26T12:00:00.000Z"},
                    "subs": {"M": {"s1": {"S": topic}}},
                    "ttl": {"N": str(ttl)},
                },
            )
        # as each subscribe does: the topics' versions moved (the broadcaster reads them)
        store.bump_versions(
            dynamodb,
            stack.subscriptions_table,
            [partition_topic, *(table_topic(label, b) for b in range(stack.buckets))],
        )
        management.connect(*recipients, *rounds, *targets)

        def stored(table: str, key: dict[str, Any]) -> dict[str, Any] | None:
            item: dict[str, Any] | None = dynamodb.get_item(
                TableName=table, Key=key, ConsistentRead=True
            ).get("Item")
            return item

        def record_of(connection_id: str) -> dict[str, Any] | None:
            return stored(stack.connections_table, {"connectionId": {"S": connection_id}})

        def subscription_of(connection_id: str, sub_id: str) -> dict[str, Any] | None:
            key = {"topic": {"S": partition_topic}, "sk": {"S": f"{connection_id} {sub_id}"}}
            return stored(stack.subscriptions_table, key)

        for run in range(args.runs):
            user = f"user-bench-{run}"
            token = mint_token(user, token_secret, ttl_seconds=600)
            expires = int(verify_token(token, token_secret)["exp"])
            identity = {"userId": user, "claims": "{}", "expiresAt": expires}
            sub_id = f"order-{run}"
            connection_id = rounds[run]
            subscribe = {
                "action": "subscribe",
                "id": sub_id,
                "table": label,
                "key": {stack.key_names[0]: PARTITION},
            }
            record = change_record(stack, sequence=f"42100000000000000000{run:05d}")
            events = {
                "authorizer": authorizer_event(token, connection_id),
                "connect": connect_event(connection_id, identity),
                "default": default_event(connection_id, subscribe),
                "broadcaster": {"Records": [record]},
                "sender": sender_event(
                    f"change-{run}",
                    {"type": "event_update", "table": label, "id": f"change-{run}"},
                    targets,
                    f"cursor-{run}",
                ),
                "disconnect": disconnect_event(connection_id),
                BASELINE_NAME: {"connectionId": f"baseline-{run}"},
            }

            def problem_with(
                name: str,
                result: Any,
                run: int = run,
                connection_id: str = connection_id,
                identity: dict[str, Any] = identity,
                sub_id: str = sub_id,
            ) -> str | None:
                """Why ``result`` (and its side effect) is not the successful answer, or None."""
                if name == BASELINE_NAME:
                    if record_of(f"baseline-{run}") is not None:
                        return None
                    return f"answer {result}, no record stored"
                if name == "authorizer":
                    statement = result.get("policyDocument", {}).get("Statement", [{}])[0]
                    if (
                        result.get("principalId") == identity["userId"]
                        and statement.get("Effect") == "Allow"
                        and result.get("context") == identity
                    ):
                        return None
                    return f"not an Allow policy with context {identity}: {result}"
                if name == "connect":
                    item = record_of(connection_id) or {}
                    if (
                        result.get("statusCode") == 200
                        and item.get("userId") == {"S": identity["userId"]}
                        and item.get("expiresAt") == {"N": str(identity["expiresAt"])}
                        and item.get("subs") == {"M": {}}
                    ):
                        return None
                    return f"answer {result}, stored record {item or None}"
                received = management.messages(connection_id)
                if name == "default":
                    held = subscription_of(connection_id, sub_id)
                    if (
                        result.get("statusCode") == 200
                        and [(m.get("type"), m.get("id")) for m in received]
                        == [("subscribed", sub_id)]
                        and held is not None
                    ):
                        return None
                    return f"answer {result}, messages {received}, subscription stored: {held}"
                if name == "disconnect":
                    left = record_of(connection_id)
                    held = subscription_of(connection_id, sub_id)
                    if result.get("statusCode") == 200 and left is None and held is None:
                        return None
                    return f"answer {result}, record {left}, subscription {held} still stored"
                if name == "sender":
                    told = [management.messages(cid) for cid in targets]
                    reached = sum(
                        len(messages) == run + 1
                        and messages[-1].get("id") == f"change-{run}"
                        and messages[-1].get("cursor") == f"cursor-{run}"
                        for messages in told
                    )
                    if result == {"batchItemFailures": []} and reached == len(targets):
                        return None
                    return f"answer {result}, targets reached: {reached}/{len(targets)}"
                mine = [m for m in received if m.get("type") == "event_update"]
                reached = sum(len(management.messages(cid)) == run + 1 for cid in recipients)
                if (
                    result == {"batchItemFailures": []}
                    and reached == len(recipients)
                    and [m.get("matches") for m in mine] == [{sub_id: "added"}]
                ):
                    return None
                return (
                    f"answer {result}, subscribers reached: {reached}/{len(recipients)},"
                    f" the round's connection received {mine}"
                )

            for name in (BASELINE_NAME, *ROUND):
                if name == BASELINE_NAME:
                    env = baseline_environment(stack, aws_endpoint)
                else:
                    env = handler_environment(name, stack, aws_endpoint, management.endpoint)
                try:
                    sample, result, _ = run_child(name, events[name], env)
                except (RuntimeError, subprocess.TimeoutExpired) as failed:
                    rows[name].errors.append(str(failed))
                    continue
                rows[name].samples.append(sample)
                problem = problem_with(name, result)
                if problem:
                    rows[name].errors.append(f"run {run + 1}: {problem}")
    finally:
        if management is not None:
            management.stop()
        aws.stop()

    print(
        f"cold starts: fresh interpreter per run, median of {args.runs};"
        f" each handler with the environment the {STACK} stack declares;"
        f" AWS = moto server on 127.0.0.1, @connections latency {args.latency_ms:g} ms;"
        f" default's event is a subscribe, the broadcaster's record reaches"
        f" {args.recipients + 1} subscribers"
    )
    print()
    baseline = rows[BASELINE_NAME]
    base_ms = baseline.median("total_ms") if baseline.samples else None
    header = (
        f"{'handler':<12}{'in-process ms':>14}{'ratio':>8}{'import ms':>11}{'handler ms':>12}"
        f"{'CPU ms':>9}{'process wall ms':>17}  {'in-process runs':<24}{'answer':<8}"
    )
    print(header)
    print("-" * len(header))
    failures: list[str] = []
    if base_ms is None:
        failures.append("baseline: no run completed, so no ratio can be computed")
    for row in rows.values():
        if not row.samples:
            print(f"{row.name:<12}{'no run completed':>14}")
            failures.extend(f"{row.name}: {error}" for error in row.errors)
            continue
        runs = " ".join(f"{sample.total_ms:.0f}" for sample in row.samples)
        total = row.median("total_ms")
        ratio = total / base_ms if base_ms else None
        shown = "" if ratio is None else f"{ratio:.2f}x"
        print(
            f"{row.name:<12}{total:>14.0f}{shown:>8}{row.median('import_ms'):>11.0f}"
            f"{row.median('handler_ms'):>12.0f}{row.median('cpu_ms'):>9.0f}"
            f"{row.median('wall_ms'):>17.0f}  {runs:<24}{'ok' if not row.errors else 'WRONG':<8}"
        )
        failures.extend(f"{row.name}: {error}" for error in row.errors)
        if len(row.samples) < args.runs:
            failures.append(f"{row.name}: only {len(row.samples)}/{args.runs} runs completed")
        if row.name != BASELINE_NAME and ratio is not None and ratio > args.max_ratio:
            failures.append(
                f"{row.name}: median {total:.0f} ms is {ratio:.2f}x the baseline's"
                f" {base_ms:.0f} ms > target {args.max_ratio:g}x"
            )
    print()
    print(
        "baseline: a fresh interpreter that imports boto3, creates a DynamoDB client and makes"
        " one put_item call to the same moto server (what most examples do);"
        " ratio: in-process median / the baseline's"
    )
    print(
        "in-process: child's first line -> handler returned (import + first invocation);"
        " CPU: the child's CPU time up to then, interpreter start-up included;"
        " process wall: spawn -> exit, as seen by this process"
    )
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        return 1
    worst = max(rows[name].median("total_ms") for name in HANDLERS) / (base_ms or 1)
    print(
        f"OK: every handler answered successfully within {args.max_ratio:g}x the baseline"
        f" (worst {worst:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
