"""``bench.sender`` (``make bench``) in a tiny configuration: its report is complete and sane."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(
    r"^(baseline lean|fastpost fast) x(\d)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+(\d+|n/a)\s+([\d, ]+)$",
    re.M,
)


def test_a_small_sender_benchmark_reports_every_configuration() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.sender", "--posts", "400", "--latency-ms", "5",
         "--concurrency", "16", "--senders", "1,2", "--time-cap", "10", "--max-ratio", "1.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    rows = {(name, int(senders)): row for name, senders, *row in ROW.findall(out)}
    assert set(rows) == {("baseline lean", 1), ("fastpost fast", 1), ("fastpost fast", 2)}, out
    for (_, senders), (posts, rate, cpu, _, per_sender) in rows.items():
        assert int(posts) == 400 and int(rate) > 0 and float(cpu) > 0, out
        assert len(per_sender.split(",")) == senders, out
    ratio = re.search(r"^ratio fastpost/baseline CPU us per post: ([\d.]+) ", out, re.M)
    assert ratio and 0 < float(ratio.group(1)) <= 1.0, out
    assert re.search(r"^aggregate posts/s over 1 fastpost sender: .*2 senders [\d.]+x$", out, re.M)
    assert out.rstrip().endswith("OK"), out
