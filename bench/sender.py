"""Sender CPU per post: ``handlers.fastpost`` against the lean client, each in its own process.

The fake Management API runs in its own interpreter (``python -m
bench.management_api``, 127.0.0.1, injected latency), so its CPU is not counted.
Every measured sender is a child process (``python -m bench.sender --worker ...``)
that warms up (opens its connections, untimed), waits for the go, posts its
share, and reports its own ``time.process_time()`` delta (user+system CPU of all
its threads, the event loop's included) and its wall-clock start and end.

* baseline: ``handlers.management.ManagementApi`` driven by ``delivery.fan_out``
  (thread pool of ``--concurrency``), one sender;
* contender: ``handlers.fastpost.FastManagementApi`` with ``fastpost.fan_out``
  (``--concurrency`` requests in flight), 1, 2 and 4 senders at once, each with
  its own share of the connections and of the posts.

Each sender posts ~1 KB to each connection of its share in rounds (one fan-out
call per round) until it has made its share of ``--posts`` or ``--time-cap``
seconds have passed. Reported: aggregate posts/s (posts / from the first start
to the last end), client CPU µs per post, the fake server's CPU µs per post,
scaling of 2 and 4 senders over 1, and the ratio contender (1 sender) /
baseline CPU µs per post; target ``<= --max-ratio`` (default 0.333). Exit
status 1 when a check fails or the ratio misses the target.

    python -m bench.sender [--posts 16000] [--latency-ms 20] [--concurrency 64] [--senders 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.fanout import ROOT, Failures, ManagementServer, connection_ids, fake_aws_environment

REGION = "us-east-1"
WORKER_READY_TIMEOUT = 30.0
MESSAGE = json.dumps(
    {
        "type": "change",
        "sub": "s1",
        "kind": "added",
        "item": {
            "pk": "ORDER#2026-000481",
            "sk": "META",
            "status": "PAID",
            "lines": [
                {"sku": f"SKU-{n:05d}", "name": f"Widget model {n} with a longer name", "qty": n}
                for n in range(9)
            ],
        },
        "cursor": "v1." + "c" * 80,
    },
    separators=(",", ":"),
).encode()
"""About 1 KB, like one change a table-wide subscriber receives."""


# -- a sender (child process) ---------------------------------------------------------------


def worker(args: argparse.Namespace) -> int:
    fake_aws_environment()
    from handlers import aws, delivery, fastpost
    from handlers.management import ManagementApi, frozen_credentials

    ids = connection_ids(args.connections)[args.first : args.first + args.count]
    credentials = frozen_credentials(aws.session())
    api: Any
    run: Any
    if args.worker == "lean":
        api = ManagementApi(args.endpoint, region=REGION, credentials=credentials)
        run = delivery.fan_out
    else:
        api = fastpost.FastManagementApi(args.endpoint, region=REGION, credentials=credentials)
        run = fastpost.fan_out

    def post(targets: list[str], deadline: float) -> Any:
        return run(
            api,
            ((connection_id, MESSAGE) for connection_id in targets),
            concurrency=args.concurrency,
            max_attempts=3,
            deadline=deadline,
            on_stale=lambda _: False,
        )

    post(ids[: args.concurrency], time.monotonic() + 30)  # warm-up: pool and connections
    print("READY", flush=True)
    if sys.stdin.readline().strip() != "GO":
        return 2
    cpu, started_wall, started = time.process_time(), time.time(), time.monotonic()
    posted = delivered = failed = 0
    while posted < args.posts and time.monotonic() - started < args.time_cap:
        targets = ids[: min(len(ids), args.posts - posted)]
        report = post(targets, started + args.time_cap + 10)
        posted += len(targets)
        delivered += report.delivered
        failed += len(report.failed) + len(report.stale)
    result = {
        "posts": posted,
        "delivered": delivered,
        "failed": failed,
        "cpu": time.process_time() - cpu,
        "start": started_wall,
        "end": time.time(),
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the benchmark (parent) -----------------------------------------------------------------


@dataclass
class Row:
    client: str
    senders: int
    posts: int = 0
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0
    cpu_us_per_post: float = 0.0
    server_cpu_us_per_post: float | None = None
    per_sender_cpu_us: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.posts / self.seconds if self.seconds > 0 else 0.0


def _spawn(client: str, endpoint: str, first: int, count: int, args: argparse.Namespace) -> Any:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "bench.sender", "--worker", client, "--endpoint", endpoint]
    command += ["--connections", str(args.connections), "--first", str(first)]
    command += ["--count", str(count), "--posts", str(args.posts // args.current_senders)]
    command += ["--concurrency", str(args.concurrency), "--time-cap", str(args.time_cap)]
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _line(process: Any, prefix: str, timeout: float) -> str:
    """The child's next stdout line starting with ``prefix`` (others are echoed)."""
    give_up = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            left = give_up - time.monotonic()
            if left <= 0 or not selector.select(timeout=left):
                raise RuntimeError(f"a sender did not say {prefix} within {timeout:g} s")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"a sender exited before {prefix} (status {process.wait()})")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
            print(f"  sender: {line}", end="")


def run_config(
    server: ManagementServer, client: str, senders: int, args: argparse.Namespace
) -> Row:
    args.current_senders = senders
    share = args.connections // senders
    processes = [_spawn(client, server.endpoint, n * share, share, args) for n in range(senders)]
    try:
        for process in processes:
            _line(process, "READY", WORKER_READY_TIMEOUT)
        before, server_cpu = server.stats(), server.cpu_seconds()
        for process in processes:
            process.stdin.write("GO\n")
            process.stdin.flush()
        results = [
            json.loads(_line(process, "RESULT ", args.time_cap + 30)) for process in processes
        ]
        after, server_cpu_after = server.stats(), server.cpu_seconds()
    finally:
        for process in processes:
            if process.poll() is None:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
    row = Row(client, senders)
    row.posts = sum(result["posts"] for result in results)
    row.delivered = sum(result["delivered"] for result in results)
    row.failed = sum(result["failed"] for result in results)
    row.seconds = max(r["end"] for r in results) - min(r["start"] for r in results)
    row.cpu_us_per_post = sum(r["cpu"] for r in results) / max(1, row.posts) * 1e6
    row.per_sender_cpu_us = [r["cpu"] / max(1, r["posts"]) * 1e6 for r in results]
    if server_cpu is not None and server_cpu_after is not None:
        row.server_cpu_us_per_post = (server_cpu_after - server_cpu) / max(1, row.posts) * 1e6
    counted = after["posts"] - before["posts"]
    if counted != row.delivered or after["unsigned"] != before["unsigned"]:
        row.failed += abs(counted - row.delivered) + after["unsigned"] - before["unsigned"]
    return row


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Run every configuration against one fake server; the numbers, as a dict."""
    fake_aws_environment()
    server = ManagementServer(args.latency_ms)
    try:
        registered = server.register(connection_ids(args.connections))
        rows = [run_config(server, "lean", 1, args)]
        rows += [run_config(server, "fast", senders, args) for senders in args.senders]
    finally:
        server.stop()
    baseline = rows[0]
    fast = {row.senders: row for row in rows[1:]}
    single = fast.get(1) or rows[1]
    return {
        "registered": registered,
        "rows": [{**asdict(row), "rate": row.rate} for row in rows],
        "baseline_cpu_us": baseline.cpu_us_per_post,
        "fast_cpu_us": single.cpu_us_per_post,
        "ratio": single.cpu_us_per_post / baseline.cpu_us_per_post,
        "scaling": {n: fast[n].rate / single.rate for n in fast if single.rate > 0},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=16000, help="posts per configuration")
    parser.add_argument("--connections", type=int, default=0, help="default: --posts")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=64, help="per sender")
    parser.add_argument("--senders", default="1,2,4", help="fastpost sender counts to run")
    parser.add_argument("--time-cap", type=float, default=15.0, help="seconds per sender")
    parser.add_argument("--max-ratio", type=float, default=0.333)
    parser.add_argument("--worker", choices=("lean", "fast"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.connections = args.connections or args.posts
    if args.worker:
        return worker(args)
    args.senders = sorted({int(n) for n in args.senders.split(",") if n.strip()})
    if args.posts < 1 or not args.senders or min(args.senders) < 1:
        parser.error("--posts and every --senders count must be >= 1")
    if 1 not in args.senders:
        args.senders.insert(0, 1)  # the ratio and the scaling are against one sender

    results = measure(args)
    failures = Failures()
    print(
        f"fake Management API in its own process, latency {args.latency_ms:g} ms,"
        f" {results['registered']} connections registered; {len(MESSAGE)} byte message;"
        f" concurrency {args.concurrency} per sender"
    )
    print()
    header = f"{'':28}{'posts':>7}{'posts/s':>10}{'CPU us/post':>13}{'server us/post':>16}"
    print(header + "  per-sender CPU us/post")
    for row in results["rows"]:
        name = f"{'baseline' if row['client'] == 'lean' else 'fastpost'} {row['client']}"
        name += f" x{row['senders']}"
        server_us = row["server_cpu_us_per_post"]
        server_text = "n/a" if server_us is None else f"{server_us:.0f}"
        per_sender = ", ".join(f"{value:.0f}" for value in row["per_sender_cpu_us"])
        print(
            f"{name:28}{row['posts']:>7}{row['rate']:>10.0f}{row['cpu_us_per_post']:>13.1f}"
            f"{server_text:>16}  {per_sender}"
        )
        failures.check(
            row["failed"] == 0 and row["delivered"] == row["posts"],
            f"{name}: delivered {row['delivered']} of {row['posts']},"
            f" {row['failed']} failed/uncounted/unsigned",
        )
    print("(CPU us/post: each sender's own process_time, all threads, over its posts)")
    print()
    scaling = ", ".join(f"{n} senders {value:.2f}x" for n, value in results["scaling"].items())
    print(f"aggregate posts/s over 1 fastpost sender: {scaling}")
    latency_bound = args.concurrency / (args.latency_ms / 1000) if args.latency_ms else 0.0
    cores = os.cpu_count() or 1
    for row in results["rows"][1:]:
        server_us = row["server_cpu_us_per_post"] or 0.0
        per_post = row["cpu_us_per_post"] + server_us
        server_bound = f"{1e6 / server_us:.0f}" if server_us else "n/a"
        print(
            f"  fastpost x{row['senders']}: measured {row['rate']:.0f} posts/s; latency bound"
            f" {latency_bound * row['senders']:.0f}; fake server bound ~{server_bound} (one"
            f" process, one core); machine CPU bound ~{cores * 1e6 / per_post:.0f} ({cores} cores"
            f" / {per_post:.0f} us client+server per post)"
        )
    print(
        "notes: one sender is latency bound (in-flight / latency, plus the server's own time"
        " per request); more senders add in-flight posts until the machine's cores, shared by"
        " the senders and the one-process fake server, run out, so scaling falls short of linear"
        " on a small machine; short runs also understate several senders (start skew, and"
        " each sender's last posts drain with fewer in flight). On Lambda each sender has its"
        " own CPU and API Gateway is not this fake server, so senders add up."
    )
    ratio = results["ratio"]
    print(
        f"ratio fastpost/baseline CPU us per post: {ratio:.3f}"
        f" ({results['fast_cpu_us']:.1f} / {results['baseline_cpu_us']:.1f})"
        f" (target <= {args.max_ratio:g})"
    )
    failures.check(ratio <= args.max_ratio, f"ratio {ratio:.3f} > {args.max_ratio:g}")
    for message in failures.messages:
        print(f"FAIL: {message}")
    if failures.messages:
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
