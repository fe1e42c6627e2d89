"""``python -m emulator`` as a user runs it (what ``make dev`` starts), and wscat against it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from websockets.sync.client import connect

from emulator.local import free_port
from emulator.program import ROOT
from tests.emulator.conftest import receive_json

BANNER_END = "Ctrl-C stops everything."


def _read_until(stream: IO[str], marker: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"no {marker!r} within {timeout}s; got:\n" + "\n".join(lines))


class Cli:
    def __init__(self, process: subprocess.Popen[str], banner: list[str], env: dict[str, str]):
        self.process = process
        self.banner = banner
        self.env = env

    def line(self, prefix: str) -> str:
        (found,) = [line for line in self.banner if line.strip().startswith(prefix)]
        return found

    @property
    def url(self) -> str:
        match = re.search(r"(ws://\S+\?token=\S+)", self.line("WebSocket"))
        assert match, self.banner
        return match.group(1)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "emulator", *args],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    env = dict(os.environ)
    env["REALTIME_EMULATOR_STATE_DIR"] = str(tmp_path_factory.mktemp("state"))
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--stack", "dev", "--port", str(free_port())],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = _read_until(process.stdout, BANNER_END, timeout=90)
        yield Cli(process, banner, env)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_banner_names_every_address_and_the_recipe(cli: Cli) -> None:
    assert cli.url.startswith("ws://127.0.0.1:")
    assert "@connections/{connectionId}" in cli.line("@connections")
    assert re.search(
        r"DynamoDB\s+http://127\.0\.0\.1:\d+\s+tables: events \(events-", cli.line("DynamoDB")
    )
    assert cli.line("npx wscat -c").endswith(f"'{cli.url}'")
    assert cli.line("venv/bin/python -m emulator put events")


def test_printed_recipe_works_write_an_item_and_watch_it_arrive(cli: Cli) -> None:
    with connect(cli.url, open_timeout=20) as client:
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client) == {"type": "pong"}
        recipe = cli.line("venv/bin/python -m emulator put events")
        item = recipe.split("put events ", 1)[1].strip().strip("'")
        written = cli.run("put", "events", item)
        assert written.returncode == 0, written.stderr
        message = receive_json(client, timeout=20)
        assert (message["action"], message["data"]["title"]) == ("created", "hello")
        deleted = cli.run("delete", "events", json.dumps({"PK": "EVENT#1", "SK": "METADATA"}))
        assert deleted.returncode == 0, deleted.stderr
        assert receive_json(client, timeout=20)["action"] == "deleted"


def test_token_command_mints_tokens_the_running_emulator_accepts(cli: Cli) -> None:
    minted = cli.run("token", "bob")
    assert minted.returncode == 0, minted.stderr
    base = cli.url.split("?", 1)[0]
    with connect(f"{base}?token={minted.stdout.strip()}", open_timeout=20) as client:
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client)["type"] == "pong"


def test_bad_cli_input_gets_a_clear_error_and_writes_nothing(cli: Cli) -> None:
    unknown = cli.run("put", "nosuchtable", '{"PK": "x"}')
    assert unknown.returncode != 0 and "unknown table 'nosuchtable'" in unknown.stderr
    garbage = cli.run("put", "events", "{not json")
    assert garbage.returncode != 0 and "not JSON" in garbage.stderr
    missing_key = cli.run("put", "events", '{"title": "no keys"}')
    assert missing_key.returncode != 0 and "put failed" in missing_key.stderr


@pytest.mark.skipif(shutil.which("npx") is None, reason="npx is not installed on this machine")
def test_wscat_connects_and_receives_an_update(cli: Cli, tmp_path: Path) -> None:
    env = dict(os.environ, npm_config_yes="true", npm_config_cache=str(tmp_path / "npm"))
    npx = shutil.which("npx")
    assert npx is not None
    fetched = subprocess.run(
        [npx, "--yes", "wscat@6", "--version"],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if fetched.returncode != 0:
        pytest.skip(f"wscat could not be fetched from the npm registry: {fetched.stderr[-300:]}")
    command = [npx, "--yes", "wscat@6", "--no-color", "-c", cli.url]
    # wscat quits when its stdin closes: keep a pipe open; -x pings, -w 8 exits 8 s later
    wscat = subprocess.Popen(
        [*command, "-x", '{"action": "ping"}', "-w", "8"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(3)  # connected and pinged
        written = cli.run(
            "put", "events", '{"PK": "EVENT#wscat", "SK": "METADATA", "via": "wscat"}'
        )
        assert written.returncode == 0, written.stderr
        wscat.wait(timeout=60)
        assert wscat.stdout is not None
        output = wscat.stdout.read()
    finally:
        if wscat.poll() is None:
            wscat.kill()
    assert '"type":"pong"' in output.replace(" ", "")
    assert "EVENT#wscat" in output and "event_update" in output


def test_ctrl_c_stops_everything_cleanly(cli: Cli) -> None:
    state = Path(cli.env["REALTIME_EMULATOR_STATE_DIR"]) / "dev.json"
    assert state.exists()
    cli.process.send_signal(signal.SIGINT)
    assert cli.process.wait(timeout=30) == 0
    assert cli.process.stdout is not None
    rest = cli.process.stdout.read()
    assert "stopped" in rest
    assert not state.exists()


def test_put_without_a_running_emulator_says_how_to_start_one(tmp_path: Path) -> None:
    env = dict(os.environ, REALTIME_EMULATOR_STATE_DIR=str(tmp_path))
    answer = subprocess.run(
        [sys.executable, "-m", "emulator", "put", "events", '{"PK": "x", "SK": "y"}'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert answer.returncode != 0
    assert "no emulator is running for stack 'dev'" in answer.stderr and "make dev" in answer.stderr
