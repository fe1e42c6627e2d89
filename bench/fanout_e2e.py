"""Queued fan-out against today's design, end to end through the emulator, in one run.

Two ``bench.e2e`` runs, one after the other (each in its own interpreter, each with its
own emulator, clients in a further process), same load, same machine, same minutes:

* **queued**: the stack as configured (``queuedFanout`` true: at or above
  ``fanoutThreshold`` recipients the broadcaster queues delivery jobs and the senders post);
* **today**: ``--config queuedFanout=false`` (the broadcaster posts everything itself).

Each: ``--clients`` WebSocket clients (default 1,500) every one subscribed to the whole
table without a filter (``--subscriptions table``), ``--rate`` writes/s (default 2) for
``--duration`` s (default 30): write-to-receive latency p50/p99 over every delivery, lost,
duplicates, unexpected, reordered (an item received after a later one). Then, on the same
connected clients (connecting 1,500 takes a while: each is an authorizer, a ``$connect`` and
a ``subscribe`` invocation), the capacity curve: ``--curve`` rates (writes/s) for
``--curve-duration`` s each, ascending, stopping a design's series at the first rate whose
p99 exceeds 2 s or that loses, duplicates, reorders or misdelivers anything. A design's
capacity is the most deliveries/s (clients x rate) of a rate that passed.

Targets (judged): the queued design's p99 <= ``--p99-ms`` (2,000) at the main load with
none lost, duplicated, unexpected or reordered, and both runs measured (today's design's
figures and the ratio of the p99s are reported, not judged: on one machine both designs
share the same two cores, so only CPU per delivery and the capacity curve tell them
apart). Printed: both designs' figures side by side, the ratio of p99s, both curves and
capacities and their ratio, CPU per part (gateway, moto, broadcaster, senders, clients),
connect times and the total runtime; then ``OK:`` or ``FAIL:`` lines, exit status 1 on FAIL.

``--quick``: 10 clients, 2 writes/s for 3 s, one curve rate for 3 s, and
``fanoutThreshold=0`` for the queued run (10 recipients are under the default threshold of
100, so the queue would otherwise never be used): the same figures and verdict in about a
minute (what the slow test runs).

    python -m bench.fanout_e2e [--clients 1500] [--rate 2] [--duration 30]
                               [--curve 0.5,1,2,3,4] [--curve-duration 12] [--p99-ms 2000]
                               [--config KEY=VALUE ...] [--sender-workers N] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.e2e import _rates
from emulator.__main__ import _config_pair, _workers

ROOT = Path(__file__).resolve().parent.parent
DESIGNS = (
    ("queued", "queued fan-out (senders)", []),
    ("today", "today's design (queuedFanout=false)", ["--config", "queuedFanout=false"]),
)
RUN_TIMEOUT_MARGIN = 240.0
"""Seconds beyond a run's own writing and draining for its start, connects and shutdown."""


def connect_timeout(clients: int) -> float:
    """Seconds allowed for ``clients`` to connect and subscribe (or to be gone at the end):
    1,500 took more than 180 s on 2 busy cores."""
    return max(180.0, 0.4 * clients)


def e2e_command(args: argparse.Namespace, extra: list[str], json_path: Path) -> list[str]:
    """The ``bench.e2e`` command line of one design's run."""
    command = [
        sys.executable, "-m", "bench.e2e",
        "--clients", str(args.clients),
        "--subscriptions", "table",
        "--rate", f"{args.rate:g}",
        "--duration", f"{args.duration:g}",
        "--p50-ms", "1e9",  # only the p99 is a target here
        "--p99-ms", f"{args.p99_ms:g}",
        "--drain-timeout", f"{args.drain_timeout:g}",
        "--warmup", str(args.warmup),
        "--connect-concurrency", str(args.connect_concurrency),
        "--connect-timeout", f"{connect_timeout(args.clients):g}",
        "--curve-duration", f"{args.curve_duration:g}",
        "--curve-p99-ms", f"{args.p99_ms:g}",
        "--json", str(json_path),
    ]  # fmt: skip
    if args.curve:
        command += ["--curve", ",".join(f"{rate:g}" for rate in args.curve)]
    if args.sender_workers:
        command += ["--sender-workers", str(args.sender_workers)]
    for key, value in args.config:
        command += ["--config", f"{key}={value}"]
    return command + extra


def run_design(
    name: str, command: list[str], json_path: Path, timeout: float
) -> tuple[dict[str, Any] | None, int | None, float]:
    """Run one ``bench.e2e``, its output indented (so its own OK:/FAIL: lines are not taken
    for this benchmark's); (its JSON document or None, exit status or None if killed,
    seconds)."""
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            print(f"  {name:>6} | {line}", end="", flush=True)
        status: int | None = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.monotonic() - started
    if status is not None and status < 0 and seconds >= timeout:
        status = None
    try:
        document = json.loads(json_path.read_text())
    except (OSError, ValueError):
        document = None
    return document, status, seconds


def figure(document: dict[str, Any] | None, *path: str) -> Any:
    value: Any = document
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def cpu_parts(document: dict[str, Any] | None) -> dict[str, float]:
    """The main phase's CPU seconds per part, grouped the way the question is asked."""
    groups: dict[str, float] = {}
    used = figure(document, "main", "cpu") or {}
    for key, value in used.items():
        if key.startswith("workers: "):
            part = key.removeprefix("workers: ")
            part = part if part in ("broadcaster", "sender") else "other functions"
        elif key == "client process":
            part = "clients"
        elif "emulator loop" in key:
            part = "gateway + pollers (emulator loop)"
        elif "SQS poller" in key:
            part = "SQS poller threads"
        elif "main thread" in key:
            part = "bench main thread"
        else:
            part = "moto + boto3 threads"
        groups[part] = groups.get(part, 0.0) + float(value)
    return groups


def report(
    args: argparse.Namespace,
    documents: dict[str, dict[str, Any] | None],
    statuses: dict[str, int | None],
    seconds: dict[str, float],
    total: float,
) -> list[str]:
    """Print the comparison; the failures (empty: every target met)."""
    queued, today = documents["queued"], documents["today"]
    print()
    print(
        f"fan-out end to end: {args.clients} clients table-wide, {args.rate:g} writes/s for"
        f" {args.duration:g} s ({args.clients * args.rate:.0f} deliveries/s)"
    )
    rows = [
        ("p50", lambda d: ms(figure(d, "main", "latencyMs", "p50"))),
        ("p95", lambda d: ms(figure(d, "main", "latencyMs", "p95"))),
        ("p99", lambda d: ms(figure(d, "main", "latencyMs", "p99"))),
        ("max", lambda d: ms(figure(d, "main", "latencyMs", "max"))),
        ("deliveries expected", lambda d: str(figure(d, "main", "expected"))),
        ("lost", lambda d: str(figure(d, "main", "lost"))),
        ("duplicates", lambda d: str(figure(d, "main", "duplicates"))),
        ("unexpected", lambda d: str(figure(d, "main", "unexpected"))),
        ("reordered", lambda d: str(figure(d, "main", "reordered"))),
        ("drain after last write", lambda d: f"{figure(d, 'main', 'drainSeconds') or 0:.1f} s"),
        ("sender jobs", lambda d: str(figure(d, "main", "sender", "jobs"))),
        ("sender delivered", lambda d: str(figure(d, "main", "sender", "delivered"))),
        ("sender pacedMs", lambda d: str(figure(d, "main", "sender", "pacedMs"))),
        ("broadcaster delivered", lambda d: str(figure(d, "main", "broadcaster", "delivered"))),
        ("broadcaster jobs queued", lambda d: str(figure(d, "main", "broadcaster", "jobsQueued"))),
        ("connect (s)", lambda d: f"{figure(d, 'connectSeconds') or 0:.1f}"),
        ("run (s)", lambda d: f"{figure(d, 'totalSeconds') or 0:.0f}"),
    ]
    print(f"  {'':<36}{'queued':>14}{'today':>14}")
    for label, get in rows:
        print(f"  {label:<36}{get(queued):>14}{get(today):>14}")
    cpu = {name: cpu_parts(documents[name]) for name in ("queued", "today")}
    walls = {name: figure(documents[name], "main", "cpuWall") or 0.0 for name in cpu}
    parts = sorted(set(cpu["queued"]) | set(cpu["today"]), key=lambda p: -cpu["queued"].get(p, 0))
    print(
        f"  CPU seconds while writing and draining (wall: queued {walls['queued']:.1f} s,"
        f" today {walls['today']:.1f} s)"
    )
    for part in parts:
        queued_cpu, today_cpu = cpu["queued"].get(part, 0.0), cpu["today"].get(part, 0.0)
        print(f"    {part:<34}{queued_cpu:>14.2f}{today_cpu:>14.2f}")
    for name in ("queued", "today"):
        used, wall = sum(cpu[name].values()), walls[name]
        received = figure(documents[name], "main", "expected") or 0
        if used and received:
            print(
                f"    {'in all, ' + name:<34}{used:>14.2f} = {used / max(wall, 1e-9):.2f} CPUs,"
                f" {1e6 * used / received:.0f} µs per delivery"
            )
    p99_queued = figure(queued, "main", "latencyMs", "p99")
    p99_today = figure(today, "main", "latencyMs", "p99")
    if p99_queued and p99_today:
        print(f"  p99 today / queued: {p99_today / p99_queued:.1f}x")

    print()
    print(f"capacity curve ({args.curve_duration:g} s per rate, p99 <= {args.p99_ms:g} ms):")
    capacity: dict[str, float] = {}
    for name, _, _ in DESIGNS:
        points = figure(documents[name], "curve") or []
        capacity[name] = float(figure(documents[name], "capacity") or 0.0)
        print(f"  {name}:")
        for point in points:
            latency = point.get("latencyMs", {})
            print(
                f"    {point['rate']:5g}/s {point['deliveriesPerSecond']:7.0f} deliveries/s:"
                f" p50 {ms(latency.get('p50')):>8} p99 {ms(latency.get('p99')):>8}; lost"
                f" {point['lost']} dup {point['duplicates']} reordered {point['reordered']}"
                f" unexpected {point['unexpected']} late {point.get('stragglers', 0)}; CPU"
                f" {sum(point.get('cpu', {}).values()):.1f} s in {point.get('cpuWall', 0):.1f} s"
                + ("" if point.get("ok") else "  (missed: " + "; ".join(point["failures"]) + ")")
            )
        print(f"    capacity {capacity[name]:.0f} deliveries/s")
    if capacity["today"]:
        print(f"  capacity queued / today: {capacity['queued'] / capacity['today']:.2f}x")
    else:
        print("  capacity queued / today: today's design kept p99 under the limit at no rate")
    print(
        "total runtime "
        + ", ".join(f"{name} {seconds[name]:.0f} s" for name in seconds)
        + f"; {total:.0f} s in all"
    )

    failures = []
    for name, label, _ in DESIGNS:
        if documents[name] is None or figure(documents[name], "main") is None:
            status = statuses[name]
            why = "killed (timeout)" if status is None else f"exit {status}"
            failures.append(f"{label}: no measurement ({why})")
    if queued is not None and figure(queued, "main") is not None:
        main = queued["main"]
        if not main["latencyMs"]["p99"] <= args.p99_ms:
            failures.append(
                f"queued: p99 {main['latencyMs']['p99']:.0f} ms > {args.p99_ms:g} ms at"
                f" {args.clients} clients x {args.rate:g} writes/s"
            )
        for key in ("lost", "duplicates", "unexpected", "reordered"):
            if main[key]:
                failures.append(f"queued: {main[key]} {key}")
        if statuses["queued"] != 0:
            failures.append(
                "queued: bench.e2e reported " + "; ".join(queued.get("failures") or ["a failure"])
            )
    return failures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout_e2e", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clients", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=2.0, help="writes per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of writing")
    parser.add_argument(
        "--curve", type=_rates, default=[0.5, 1.0, 2.0, 3.0, 4.0], metavar="R,R,..."
    )
    parser.add_argument("--curve-duration", type=float, default=12.0)
    parser.add_argument("--p99-ms", type=float, default=2000.0)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--connect-concurrency", type=int, default=25)
    parser.add_argument(
        "--config", type=_config_pair, action="append", default=[], metavar="KEY=VALUE",
        help="stack config overrides for both runs (fanoutGroups, fanoutSlice, sendConcurrency...)",
    )  # fmt: skip
    parser.add_argument("--sender-workers", type=_workers, default=None, metavar="N")
    parser.add_argument(
        "--quick", action="store_true", help="10 clients, a few seconds: a check that it runs"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.rate, args.duration = 10, 2.0, 3.0
        args.curve, args.curve_duration, args.warmup = [2.0], 3.0, 1
        args.drain_timeout = min(args.drain_timeout, 30.0)
    if args.clients < 1 or args.rate <= 0 or args.duration <= 0 or args.curve_duration <= 0:
        parser.error("--clients, --rate, --duration and --curve-duration must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    documents: dict[str, dict[str, Any] | None] = {}
    statuses: dict[str, int | None] = {}
    seconds: dict[str, float] = {}
    writing = args.duration + len(args.curve) * args.curve_duration
    timeout = (
        RUN_TIMEOUT_MARGIN
        + 2 * connect_timeout(args.clients)
        + writing
        + (1 + len(args.curve)) * args.drain_timeout
    )
    with tempfile.TemporaryDirectory(prefix="bench-fanout-e2e-") as scratch:
        for name, label, extra in DESIGNS:
            if args.quick and name == "queued":
                extra = [*extra, "--config", "fanoutThreshold=0"]
            json_path = Path(scratch) / f"{name}.json"
            command = e2e_command(args, extra, json_path)
            print(f"== {label}: {' '.join(command[2:])}", flush=True)
            documents[name], statuses[name], seconds[name] = run_design(
                name, command, json_path, timeout
            )
    failures = report(args, documents, statuses, seconds, time.monotonic() - started)
    print()
    if failures:
        for failure in failures:
            print(f"FAIL: {failure}")
        return 1
    queued, today = documents["queued"], documents["today"]
    assert queued is not None and today is not None
    print(
        f"OK: queued fan-out, {args.clients} clients x {args.rate:g} writes/s: p50"
        f" {queued['main']['latencyMs']['p50']:.0f} ms, p99"
        f" {queued['main']['latencyMs']['p99']:.0f} ms, none lost, duplicated or reordered"
        f" (today's design p99 {today['main']['latencyMs']['p99']:.0f} ms); capacity"
        f" {queued.get('capacity', 0):.0f} against {today.get('capacity', 0):.0f} deliveries/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
