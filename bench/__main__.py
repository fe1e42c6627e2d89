"""Run every benchmark, report each, and fail at the end if any missed its target.

Each benchmark is a module run in its own interpreter (``python -m bench.fanout``);
its output streams through as it runs. One benchmark missing its target (or
crashing, or running past ``--timeout``) does not stop the others: the summary
lists every one with its verdict line, and the exit status is 1 when any missed.
What ``make bench`` runs.

    python -m bench [--timeout 900] [MODULE ...]

(default: bench.fanout bench.recipients bench.coldstart bench.e2e bench.resume bench.sender
bench.fanout_e2e bench.jwt_auth)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = (
    "bench.fanout",
    "bench.recipients",
    "bench.coldstart",
    "bench.e2e",
    "bench.resume",
    "bench.sender",
    "bench.fanout_e2e",
    "bench.jwt_auth",
)
VERDICTS = ("OK:", "FAIL:")


@dataclass
class Outcome:
    module: str
    status: int | None
    """Exit status; None when it ran past the timeout and was killed."""
    seconds: float
    verdicts: list[str]

    @property
    def met(self) -> bool:
        return self.status == 0


def run_one(module: str, timeout: float) -> Outcome:
    """Run ``python -m module``, echoing its output; keep its OK:/FAIL: lines."""
    print(f"== {module}", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    timer = threading.Timer(timeout, process.kill)
    timer.start()
    verdicts: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # ends when the child exits (or is killed)
            print(line, end="", flush=True)
            if line.startswith(VERDICTS):
                verdicts.append(line.strip())
        status = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.monotonic() - started
    if status < 0 and seconds >= timeout:
        return Outcome(module, None, seconds, [*verdicts, f"killed after {timeout:g} s"])
    return Outcome(module, status, seconds, verdicts)


def summary(outcomes: Sequence[Outcome]) -> str:
    width = max(len(outcome.module) for outcome in outcomes)
    lines = ["", "make bench: every benchmark ran"]
    for outcome in outcomes:
        if outcome.met:
            verdict = "met its target"
        elif outcome.status is None:
            verdict = "MISSED (timed out)"
        else:
            verdict = f"MISSED (exit {outcome.status})"
        lines.append(f"  {outcome.module:<{width}}  {verdict:<20} {outcome.seconds:6.0f} s")
        lines.extend(f"  {'':<{width}}    {line}" for line in outcome.verdicts)
    missed = [outcome.module for outcome in outcomes if not outcome.met]
    if missed:
        lines.append(f"{len(missed)} of {len(outcomes)} missed: {', '.join(missed)}")
    else:
        lines.append(f"all {len(outcomes)} met their targets")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "modules", nargs="*", default=list(BENCHMARKS), metavar="MODULE",
        help=f"benchmark modules to run (default: {' '.join(BENCHMARKS)})",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=900.0, metavar="SECONDS",
        help="kill a benchmark that runs longer, and count it as missed (default 900 s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error("--timeout must be a positive number of seconds")
    outcomes = [run_one(module, args.timeout) for module in args.modules]
    print(summary(outcomes), flush=True)
    return 0 if all(outcome.met for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
