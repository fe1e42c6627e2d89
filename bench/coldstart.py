"""Cold start of each handler: a fresh interpreter that imports it and serves one event.

For every handler (authorizer, connect, disconnect, default, broadcaster) a new
Python process is started with only the environment that handler needs (its
variables from ``handlers.config``, fake credentials, a region, and the
``AWS_ENDPOINT_URL_*`` override of the one service it calls). AWS is a moto
server started here on 127.0.0.1 (connections table with the ``byUser`` index,
an SSM SecureString token secret); the ``@connections`` endpoint is the fake
Management API (``bench.management_api``) in this process.

The baseline, measured in the same run and the same way: a fresh interpreter
that does what most examples do, ``import boto3``, create a DynamoDB client and
make one call (``put_item`` of a connection record) to the same moto server.
Absolute milliseconds vary threefold between machines; the ratio
handler / baseline does not, so the target is a ratio.

Two figures per run: inside the child, from its first line (before the handler
module is imported) to the handler's return; and the whole process as the
parent sees it (interpreter start-up and exit included). Each handler runs
``--runs`` times (round-robin, the baseline first in each round) and the median
is reported. Every answer must be the successful one (Allow policy, statusCode
200, no batchItemFailures) and its side effect visible (record stored/deleted,
pong/broadcast received). Exit status 1 when a check fails or a handler's median
in-process time is more than ``--max-ratio`` times the baseline's.

    python -m bench.coldstart [--max-ratio 1.25] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import logging
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
TABLE = "realtime-channel-connections"
USER_INDEX = "byUser"
PARAMETER_NAME = "/realtime-channel/bench/token-secret"
FAKE_CREDENTIAL = "testing"
MARKER = "@@coldstart@@ "
HANDLERS = ("authorizer", "connect", "disconnect", "default", "broadcaster")
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


def handler_environment(name: str, aws_endpoint: str, management_endpoint: str) -> dict[str, str]:
    """Exactly what ``handlers.<name>`` needs (see handlers/config.py), nothing inherited."""
    env = {"PYTHONPATH": str(ROOT), **fake_credentials()}
    if name == "authorizer":
        env.update(TOKEN_SECRET_PARAMETER=PARAMETER_NAME, AWS_ENDPOINT_URL_SSM=aws_endpoint)
    elif name in ("connect", "disconnect"):
        env.update(CONNECTIONS_TABLE=TABLE, AWS_ENDPOINT_URL_DYNAMODB=aws_endpoint)
    elif name == "default":
        env.update(MANAGEMENT_ENDPOINT=management_endpoint)
    elif name == "broadcaster":
        from bench.fanout import SOURCES_VARIABLE  # the source of the record it broadcasts

        env.update(
            CONNECTIONS_TABLE=TABLE,
            MANAGEMENT_ENDPOINT=management_endpoint,
            SOURCES=SOURCES_VARIABLE,
            AWS_ENDPOINT_URL_DYNAMODB=aws_endpoint,
        )
    else:
        raise ValueError(name)
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


def connect_event(connection_id: str, user_id: str) -> dict[str, Any]:
    context = request_context("$connect", "CONNECT", connection_id)
    context["authorizer"] = {"principalId": user_id, "userId": user_id, "integrationLatency": 41}
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


def default_event(connection_id: str, ping_id: str) -> dict[str, Any]:
    return {
        "requestContext": request_context("$default", "MESSAGE", connection_id),
        "body": json.dumps({"action": "ping", "id": ping_id}),
        "isBase64Encoded": False,
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


def baseline_environment(aws_endpoint: str) -> dict[str, str]:
    """The baseline's environment: the connect handler's (the same table, the same service)."""
    return handler_environment("connect", aws_endpoint, management_endpoint="")


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
        "--recipients", type=int, default=10, help="connections the broadcaster posts to"
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
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto server's request log
    import boto3
    from moto.server import ThreadedMotoServer

    from bench.fanout import connection_ids, stream_record
    from bench.management_api import FakeManagementApi
    from handlers.tokens import mint_token

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        management = FakeManagementApi(stage=STAGE, latency=args.latency_ms / 1000).start()
    except BaseException:
        moto.stop()
        raise
    rows = {name: Row(name) for name in (BASELINE_NAME, *HANDLERS)}
    try:
        host, port = moto.get_host_and_port()
        aws_endpoint = f"http://{host}:{port}"
        dynamodb = boto3.client("dynamodb", endpoint_url=aws_endpoint, region_name=REGION)
        ssm = boto3.client("ssm", endpoint_url=aws_endpoint, region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE,
            AttributeDefinitions=[
                {"AttributeName": "connectionId", "AttributeType": "S"},
                {"AttributeName": "userId", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "connectionId", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": USER_INDEX,
                    "KeySchema": [{"AttributeName": "userId", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        token_secret = secrets.token_urlsafe(32)
        ssm.put_parameter(Name=PARAMETER_NAME, Value=token_secret, Type="SecureString")

        # Ids the runs use: recipients of the broadcast, and per run one connection that
        # connects and disconnects, one that pings.
        ids = connection_ids(args.recipients + 2 * args.runs, seed=11)
        recipients, ids = ids[: args.recipients], ids[args.recipients :]
        churn, pingers = ids[: args.runs], ids[args.runs :]
        now = int(time.time())
        for number, connection_id in enumerate(recipients):
            dynamodb.put_item(
                TableName=TABLE,
                Item={
                    "connectionId": {"S": connection_id},
                    "userId": {"S": f"user-{number}"},
                    "connectedAt": {"S": "2026-11-26T12:00:00.000Z"},
                    "ttl": {"N": str(now + 7200)},
                },
            )
        management.connect(*recipients, *pingers)

        def has_record(connection_id: str) -> dict[str, Any] | None:
            key = {"connectionId": {"S": connection_id}}
            item: dict[str, Any] | None = dynamodb.get_item(
                TableName=TABLE, Key=key, ConsistentRead=True
            ).get("Item")
            return item

        for run in range(args.runs):
            user = f"user-bench-{run}"
            token = mint_token(user, token_secret, ttl_seconds=600)
            record = stream_record(sequence=f"42100000000000000000{run:05d}")
            events = {
                "authorizer": authorizer_event(token, churn[run]),
                "connect": connect_event(churn[run], user),
                "disconnect": disconnect_event(churn[run]),
                "default": default_event(pingers[run], f"ping-{run}"),
                "broadcaster": {"Records": [record]},
                BASELINE_NAME: {"connectionId": f"baseline-{run}"},
            }

            def problem_with(
                name: str, result: Any, run: int = run, user: str = user
            ) -> str | None:
                """Why ``result`` (and its side effect) is not the successful answer, or None."""
                if name == BASELINE_NAME:
                    stored = has_record(f"baseline-{run}")
                    if stored is not None:
                        return None
                    return f"answer {result}, no record stored"
                if name == "authorizer":
                    statement = result.get("policyDocument", {}).get("Statement", [{}])[0]
                    if (
                        result.get("principalId") == user
                        and statement.get("Effect") == "Allow"
                        and result.get("context") == {"userId": user}
                    ):
                        return None
                    return f"not an Allow policy for {user}: {result}"
                if name == "connect":
                    stored = has_record(churn[run])
                    if result.get("statusCode") == 200 and (stored or {}).get("userId") == {
                        "S": user
                    }:
                        return None
                    return f"answer {result}, stored record {stored}"
                if name == "disconnect":
                    stored = has_record(churn[run])
                    if result.get("statusCode") == 200 and stored is None:
                        return None
                    return f"answer {result}, record still stored: {stored}"
                if name == "default":
                    received = management.messages(pingers[run])
                    if result.get("statusCode") == 200 and received == [
                        {"type": "pong", "id": f"ping-{run}"}
                    ]:
                        return None
                    return f"answer {result}, messages {received}"
                reached = sum(len(management.messages(cid)) == run + 1 for cid in recipients)
                if result == {"batchItemFailures": []} and reached == len(recipients):
                    return None
                return f"answer {result}, recipients reached: {reached}/{len(recipients)}"

            for name in (BASELINE_NAME, *HANDLERS):
                if name == BASELINE_NAME:
                    env = baseline_environment(aws_endpoint)
                else:
                    env = handler_environment(name, aws_endpoint, management.endpoint)
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
        management.stop()
        moto.stop()

    print(
        f"cold starts: fresh interpreter per run, median of {args.runs};"
        f" AWS = moto server on 127.0.0.1, @connections latency {args.latency_ms:g} ms,"
        f" broadcaster posts to {args.recipients} connections"
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
