"""``bench.fanout_e2e``: both designs in one run, the comparison and the verdict (a quick run
through the real emulator), and how it judges figures it is given."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.fanout_e2e import e2e_command, parse_args, report

ROOT = Path(__file__).resolve().parents[2]


def main_phase(p99: float, **counts: int) -> dict[str, Any]:
    figures = {"lost": 0, "duplicates": 0, "unexpected": 0, "reordered": 0, **counts}
    return {
        "latencyMs": {"p50": p99 / 2, "p95": p99, "p99": p99, "max": p99},
        "expected": 100,
        "cpu": {"workers: sender": 1.0, "client process": 0.5},
        "cpuWall": 2.0,
        **figures,
    }


def document(p99: float, capacity: float = 0.0, **counts: int) -> dict[str, Any]:
    return {"main": main_phase(p99, **counts), "curve": [], "capacity": capacity}


def judge(queued: Any, today: Any, statuses: dict[str, int | None]) -> list[str]:
    args: argparse.Namespace = parse_args(["--clients", "50"])
    return report(args, {"queued": queued, "today": today}, statuses, {}, 1.0)


def test_only_the_queued_design_is_judged_and_both_must_be_measured() -> None:
    ok = {"queued": 0, "today": 1}
    assert judge(document(1500, 3000), document(9000, 1000), ok) == []
    assert judge(document(2500), document(9000), ok) == [
        "queued: p99 2500 ms > 2000 ms at 50 clients x 2 writes/s"
    ]
    failures = judge(document(100, reordered=2, lost=1), document(9000), ok)
    assert "queued: 1 lost" in failures and "queued: 2 reordered" in failures
    failures = judge(document(100), None, {"queued": 0, "today": None})
    assert failures == ["today's design (queuedFanout=false): no measurement (killed (timeout))"]


def test_the_runs_differ_only_in_the_design_and_share_the_load() -> None:
    args = parse_args(["--clients", "1500", "--config", "fanoutGroups=64", "--curve", "1,2"])
    command = e2e_command(args, ["--config", "queuedFanout=false"], Path("x.json"))
    text = " ".join(command)
    assert "--subscriptions table" in text and "--clients 1500" in text
    assert "--curve 1,2" in text and "--config fanoutGroups=64" in text
    assert text.endswith("--config queuedFanout=false")


@pytest.mark.slow
def test_a_quick_run_compares_both_designs_and_gives_a_verdict() -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "bench.fanout_e2e", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    out = answer.stdout
    assert answer.returncode == 0, out + answer.stderr
    verdicts = [line for line in out.splitlines() if line.startswith(("OK:", "FAIL:"))]
    assert len(verdicts) == 1 and verdicts[0].startswith("OK: queued fan-out, 10 clients"), out
    table = out[out.index("fan-out end to end:") :]
    # 10 clients x 6 items each, every one delivered once, in order, by each design
    assert re.search(r"^  deliveries expected\s+60\s+60$", table, re.M), out
    for name in ("lost", "duplicates", "unexpected", "reordered"):
        assert re.search(rf"^  {name}\s+0\s+0$", table, re.M), out
    # queued: the senders delivered everything; today: the broadcaster did
    assert re.search(r"^  sender delivered\s+60\s+0$", table, re.M), out
    assert re.search(r"^  broadcaster delivered\s+0\s+60$", table, re.M), out
    p99 = re.search(r"^  p99\s+(\d+) ms\s+(\d+) ms$", table, re.M)
    assert p99 is not None and 0 < int(p99[1]) <= 2000 and int(p99[2]) > 0, out
    assert re.search(r"^    capacity 20 deliveries/s$", table, re.M), out  # 10 x 2/s, each
    assert "capacity queued / today: 1.00x" in table, out
    assert re.search(r"^total runtime queued \d+ s, today \d+ s", table, re.M), out
