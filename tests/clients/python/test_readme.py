"""The README's Python example, run as printed against the emulator as `make dev` starts it
(only the port differs), and `python -m emulator watch` (the same client) through a drop."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from emulator.local import free_port
from emulator.program import ROOT
from tests.emulator.test_cli import BANNER_END, _read_until, spawn_dev


class Dev:
    def __init__(self, port: int, env: dict[str, str]) -> None:
        self.port = port
        self.env = env

    def subscribed(self, user: str) -> bool:
        """Whether a connection of ``user`` holds a subscription (its record's ``subs``)."""
        import boto3

        state_dir = Path(self.env["REALTIME_EMULATOR_STATE_DIR"])
        state = json.loads((state_dir / "dev.json").read_text())
        client = boto3.client(
            "dynamodb", endpoint_url=state["dynamodb"], region_name="us-east-1",
            aws_access_key_id="local", aws_secret_access_key="local",
        )  # fmt: skip
        items = client.scan(TableName=state["connectionsTable"])["Items"]
        return any(
            i.get("userId", {}).get("S") == user and i.get("subs", {}).get("M") for i in items
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "emulator", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`make dev` on a free port (its state file in a temporary folder)."""
    port = free_port()
    process, env = spawn_dev(tmp_path_factory.mktemp("state"), port)
    try:
        assert process.stdout is not None
        _read_until(process.stdout, BANNER_END, timeout=90)
        drain = threading.Thread(target=process.stdout.read, daemon=True)  # keep it unblocked
        drain.start()
        yield Dev(port, env)
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Python client\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return code


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def next_line(lines: queue.Queue[str], timeout: float) -> str | None:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


@pytest.mark.slow
def test_the_readme_example_prints_a_write_as_printed(dev: Dev, tmp_path: Path) -> None:
    code = readme_example()
    assert "ws://127.0.0.1:8080/dev" in code and len(code.strip().splitlines()) <= 20
    script = tmp_path / "watch.py"
    script.write_text(code.replace("127.0.0.1:8080", f"127.0.0.1:{dev.port}"))
    example = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT, env=dev.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert example.stdout is not None
        lines = lines_of(example.stdout)
        deadline = time.monotonic() + 60
        while not dev.subscribed("alice") and time.monotonic() < deadline:
            assert example.poll() is None, lines.queue
            time.sleep(0.2)
        item = '{"PK": "EVENT#1", "SK": "METADATA", "title": "hello"}'  # the README's put
        written = dev.cli("put", "events", item)
        assert written.returncode == 0, written.stderr
        printed = next_line(lines, timeout=30)
        assert printed is not None, "the example printed nothing"
        assert printed.startswith("added {'PK': 'EVENT#1', 'SK': 'METADATA'}"), printed
        assert printed.endswith("{'PK': 'EVENT#1', 'SK': 'METADATA', 'title': 'hello'}")
        assert example.poll() is None  # still watching
    finally:
        example.kill()
        example.wait(10)


@pytest.mark.slow
def test_watch_prints_each_change_once_through_a_drop(dev: Dev) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "emulator", "watch", "events", "--key", '{"PK": "ROOM#watch"}',
         "--user", "wendy", "--count", "3"],
        cwd=ROOT, env=dev.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert watcher.stderr is not None and watcher.stdout is not None
        told = lines_of(watcher.stderr)
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while not any("subscribed" in line for line in seen) and time.monotonic() < deadline:
            line = next_line(told, timeout=1)
            if line is not None:
                seen.append(line)
        assert any("watch: subscribed to events" in line for line in seen), seen
        item = {"PK": "ROOM#watch", "SK": "A", "n": 1}
        assert dev.cli("put", "events", json.dumps(item)).returncode == 0
        dropped = dev.cli("drop", "wendy")
        assert dropped.returncode == 0, dropped.stderr
        for n in (2, 3):  # while it reconnects: resumed, not lost
            item = {"PK": "ROOM#watch", "SK": "A", "n": n}
            assert dev.cli("put", "events", json.dumps(item)).returncode == 0
        out, _ = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(10)
    assert watcher.returncode == 0
    changes = [json.loads(line) for line in out.splitlines()]
    assert [c["data"]["n"] for c in changes] == [1, 2, 3]
    assert [c["kind"] for c in changes] == ["added", "modified", "modified"]
    assert len({c["id"] for c in changes}) == 3
