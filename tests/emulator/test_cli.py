"""``python -m emulator`` as a user runs it (what ``make dev`` starts), and wscat against it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from emulator.local import free_port
from emulator.program import ROOT
from tests.emulator.conftest import receive_json

BANNER_START = "realtime-channel emulator: "
BANNER_END = "Ctrl-C stops everything."


def spawn_dev(state_dir: Path, port: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``python -m emulator --stack dev`` on ``port``, as ``make dev`` runs it, its state file
    in ``state_dir``, output (stdout and stderr) on one text pipe: (the process, its env).
    The caller reads the banner (``_read_until``) and stops the process."""
    env = dict(os.environ)
    env["REALTIME_EMULATOR_STATE_DIR"] = str(state_dir)
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "emulator", "--stack", "dev", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return process, env


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
        # from the banner's first line: log lines printed before it (e.g. the sender
        # workers' budget share, which depends on the machine's CPUs) are not part of it
        first = next((i for i, line in enumerate(banner) if line.startswith(BANNER_START)), 0)
        self.banner = banner[first:]
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
    process, env = spawn_dev(tmp_path_factory.mktemp("state"), free_port())
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
    assert printed_subscribe(cli) == {"action": "subscribe", "id": "s1", "table": "events"}
    assert cli.line(f"{printed_python()} -m emulator put events")
    recipe = [line.strip() for line in cli.banner]
    wscat, subscribe, put = (
        recipe.index(cli.line(prefix).strip())
        for prefix in ("npx wscat -c", "> ", f"{printed_python()} -m emulator put events")
    )
    assert wscat < subscribe < put  # in the order they are done


def printed_subscribe(cli: Cli) -> dict[str, str]:
    """The message the banner says to type into wscat (its prompt is ``>``)."""
    return dict(json.loads(cli.line("> ").strip().removeprefix("> ")))


def test_printed_recipe_works_write_an_item_and_watch_it_arrive(cli: Cli) -> None:
    with connect(cli.url, open_timeout=20) as client:
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client) == {"type": "pong"}
        client.send(json.dumps(printed_subscribe(cli)))
        reply = receive_json(client)
        assert (reply["type"], reply["id"]) == ("subscribed", "s1"), reply
        recipe = cli.line(f"{printed_python()} -m emulator put events")
        item = recipe.split("put events ", 1)[1].strip().strip("'")
        written = cli.run("put", "events", item)
        assert written.returncode == 0, written.stderr
        message = receive_json(client, timeout=20)
        assert (message["action"], message["data"]["title"]) == ("created", "hello")
        assert message["matches"] == {"s1": "added"}
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


def test_drop_then_resume_by_hand_as_the_readme_walks_through_it(cli: Cli) -> None:
    """Subscribe, be dropped (``drop``), miss a write and a delete, resume with ``after``."""
    minted = cli.run("token", "walker")
    url = f"{cli.url.split('?', 1)[0]}?token={minted.stdout.strip()}"
    room = {"action": "subscribe", "id": "s1", "table": "events", "key": {"PK": "ROOM#1"}}
    assert cli.run("put", "events", '{"PK": "ROOM#1", "SK": "MSG#1", "text": "hi"}').returncode == 0
    with connect(url, open_timeout=20) as client:
        client.send(json.dumps(room))
        cursor = receive_json(client)["cursor"]
        assert (
            cli.run("put", "events", '{"PK": "ROOM#1", "SK": "MSG#2", "text": "yo"}').returncode
            == 0
        )
        seen = receive_json(client)
        assert (seen["keys"]["SK"], seen["matches"]) == ("MSG#2", {"s1": "added"})
        cursor = seen["cursor"]
        dropped = cli.run("drop", "walker")
        assert dropped.returncode == 0, dropped.stderr
        assert dropped.stdout.startswith("drop: closed ")
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)
    assert (
        cli.run("put", "events", '{"PK": "ROOM#1", "SK": "MSG#3", "text": "away"}').returncode == 0
    )
    assert cli.run("delete", "events", '{"PK": "ROOM#1", "SK": "MSG#1"}').returncode == 0
    with connect(url, open_timeout=20) as client:
        client.send(json.dumps({**room, "after": cursor}))
        answers = [receive_json(client)]
        while answers[-1]["type"] not in ("resumed", "reset"):
            answers.append(receive_json(client))
    assert answers[0]["type"] == "subscribed" and answers[-1]["type"] == "resumed"
    replayed = answers[1:-1]
    # the replay starts a broadcaster timeout before the cursor: earlier changes come again
    # (de-duplicated by id), then what was missed, in order
    assert [(a["keys"]["SK"], a["matches"]["s1"]) for a in replayed[-2:]] == [
        ("MSG#3", "added"),
        ("MSG#1", "removed"),
    ]
    assert seen["id"] in [a["id"] for a in replayed]
    assert answers[-1]["replayed"] == len(replayed)
    assert answers[-1]["cursor"] == replayed[-1]["cursor"]
    nobody = cli.run("drop", "nobody")
    assert nobody.returncode == 1 and "user 'nobody' has no connection" in nobody.stderr


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
    # wscat quits when its stdin closes: keep a pipe open; -x sends the banner's subscribe,
    # -w 8 exits 8 s later
    subscribe = json.dumps(printed_subscribe(cli))
    wscat = subprocess.Popen(
        [*command, "-x", subscribe, "-w", "8"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        time.sleep(3)  # connected and subscribed
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
    assert '"type":"subscribed"' in output.replace(" ", "")
    assert "EVENT#wscat" in output and "event_update" in output


# -- the banner's commands work as printed, for any stack (item 20) ------------------------------


def printed_python() -> str:
    """How the banner names this interpreter: relative to the directory it runs in."""
    inside = os.path.relpath(sys.executable, ROOT)
    return shlex.quote(sys.executable if inside.startswith("..") else inside)


def test_banner_names_the_interpreter_that_runs_it(cli: Cli) -> None:
    recipe = cli.line(f"{printed_python()} -m emulator put events")
    assert "--stack" not in recipe  # dev is the default stack
    assert f"more: {printed_python()} -m emulator token USER)" in cli.line("(user 'dev-user'")
    assert (ROOT / shlex.split(recipe)[0]).exists()


def as_typed(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a printed command line the way a user pastes it into a shell in the repository."""
    return subprocess.run(
        ["/bin/sh", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def _normalised(banner: str) -> str:
    """What differs between runs and machines: tokens, ports, how this interpreter is named."""
    banner = re.sub(r"token=[^\s']+", "token=TOKEN", banner)
    banner = re.sub(r"console=[^\s']+", "console=TOKEN", banner)
    banner = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", banner)
    return banner.replace(f"{printed_python()} -m emulator", "venv/bin/python -m emulator")


def test_readme_shows_the_banner_as_printed(cli: Cli) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Running locally") :]
    shown = re.search(r"^```\n(realtime-channel emulator: .*?)^```$", section, re.M | re.S)
    assert shown, "no banner in the README's Running locally section"
    assert _normalised(shown.group(1).rstrip("\n")) == _normalised("\n".join(cli.banner))


@pytest.fixture
def prod(cli: Cli) -> Iterator[Cli]:
    """The prod stack (alarms need a destination: an e-mail address), beside dev's."""
    command = [sys.executable, "-m", "emulator", "--stack", "prod", "--port", "0",
               "--config", "alarmEmail=oncall@example.com"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = _read_until(process.stdout, BANNER_END, timeout=90)
        yield Cli(process, banner, cli.env)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_printed_commands_work_as_printed_for_another_stack(prod: Cli) -> None:
    assert "stack 'prod' is up" in prod.banner[0]
    assert "/prod?token=" in prod.url
    recipe = prod.line(f"{printed_python()} -m emulator put --stack prod events")
    hint = prod.line("(user 'dev-user'")
    token_command = hint.split("more: ", 1)[1].rstrip(")").replace("USER", "carol")
    assert token_command == f"{printed_python()} -m emulator token --stack prod carol"
    minted = as_typed(token_command, prod.env)
    assert minted.returncode == 0, minted.stderr
    base = prod.url.split("?", 1)[0]
    with connect(f"{base}?token={minted.stdout.strip()}", open_timeout=20) as client:
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client) == {"type": "pong"}
        client.send(json.dumps(printed_subscribe(prod)))
        reply = receive_json(client)
        assert (reply["type"], reply["id"]) == ("subscribed", "s1"), reply
        written = as_typed(recipe.strip(), prod.env)
        assert written.returncode == 0, written.stderr
        message = receive_json(client, timeout=20)
        assert (message["action"], message["data"]["title"]) == ("created", "hello")


# -- a second emulator (issue 7, item 19) --------------------------------------------------------


def _port_of(url: str) -> int:
    match = re.match(r"ws://127\.0\.0\.1:(\d+)/", url)
    assert match, url
    return int(match.group(1))


def _one_line_error(answer: subprocess.CompletedProcess[str]) -> str:
    """The error a CLI run printed: one line on stderr, no traceback, a non-zero exit."""
    assert answer.returncode in (1, 2), (answer.returncode, answer.stdout, answer.stderr)
    assert "Traceback" not in answer.stderr + answer.stdout, answer.stderr
    lines = answer.stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    if answer.returncode == 2:  # argparse: its usage, then one error line
        assert lines[0].startswith("usage: python -m emulator"), lines
        lines = [line for line in lines if not line.startswith(" ") and "usage:" not in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("python -m emulator") and ": error: " in lines[0], lines[0]
    return lines[0]


def test_a_second_emulator_on_the_same_port_says_so_and_leaves_the_first_alone(cli: Cli) -> None:
    state = Path(cli.env["REALTIME_EMULATOR_STATE_DIR"]) / "dev.json"
    before = state.read_text()
    port = _port_of(cli.url)
    started = time.monotonic()
    second = cli.run("--stack", "dev", "--port", str(port))
    error = _one_line_error(second)
    assert second.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in error
    assert "by the emulator for stack 'dev'" in error
    assert f"PORT={port + 1}" in error and f"--port {port + 1}" in error
    assert time.monotonic() - started < 30  # refused before running the program
    assert state.read_text() == before  # the first emulator's state file is untouched
    minted = cli.run("token", "after-the-second")
    assert minted.returncode == 0, minted.stderr


def test_a_second_emulator_for_the_same_stack_on_another_port_is_refused(cli: Cli) -> None:
    state = Path(cli.env["REALTIME_EMULATOR_STATE_DIR"]) / "dev.json"
    before = state.read_text()
    second = cli.run("--stack", "dev", "--port", "0")
    error = _one_line_error(second)
    assert "an emulator for stack 'dev' is already running" in error
    assert cli.url.split("?", 1)[0] in error
    assert state.read_text() == before


def test_a_state_file_left_by_a_dead_emulator_is_not_a_running_one(tmp_path: Path) -> None:
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    (tmp_path / "dev.json").write_text(
        json.dumps({"pid": int(exited.stdout), "runId": "gone", "tables": {}, "secret": "x" * 32})
    )
    env = dict(os.environ, REALTIME_EMULATOR_STATE_DIR=str(tmp_path))
    answer = subprocess.run(
        [sys.executable, "-m", "emulator", "token", "alice"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    error = _one_line_error(answer)
    assert "no emulator is running for stack 'dev'" in error and "has exited" in error


# -- bad input: one line, never a traceback (item 21) ----------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["token", "alice", "--ttl", "0"], "--ttl: must be a positive number of seconds"),
        (["token", "alice", "--ttl", "-5"], "--ttl: must be a positive number of seconds"),
        (["token", "alice", "--ttl", "1.5"], "--ttl: not a whole number of seconds"),
        (["token", ""], "the user id must not be empty"),
        (["token", "alice", "--ttl", "999999"], "tokenMaxLifetimeSeconds 86400"),
        (["--port", "99999"], "99999 is not a port"),
        (["serve", "--idle-timeout", "0"], "--idle-timeout: must be a positive number of seconds"),
        (["--max-connection", "nan"], "--max-connection: must be a positive number of seconds"),
        (["--config", "targetAttribute"], "--config: takes KEY=VALUE"),
        (["--config", "targetAtribute=owner"], "unknown config key 'targetAtribute'"),
        (["--stack", "nosuch"], "no stack 'nosuch' here (no Pulumi.nosuch.yaml)"),
        (["put", "--stack", "nosuch", "events", "{}"], "no stack 'nosuch'"),
        (["put", "events", "[1, 2]"], "the item must be a non-empty JSON object"),
        (["watch", "events", "--count", "0"], "--count: must be a positive number, got 0"),
        (["watch", "events", "--count", "two"], "--count: not a whole number: 'two'"),
    ],
)
def test_bad_arguments_get_one_line_and_no_traceback(
    cli: Cli, args: list[str], expected: str
) -> None:
    error = _one_line_error(cli.run(*args))
    assert expected in error


def test_a_config_value_the_stack_refuses_is_one_line(cli: Cli) -> None:
    answer = cli.run("--port", "0", "--stack", "prod", "--config", "memorySize=abc")
    error = _one_line_error(answer)
    assert answer.returncode == 1
    assert "stack 'prod': realtime-channel:memorySize" in error and "'abc'" in error


def test_help_gives_the_unit_of_every_duration(cli: Cli) -> None:
    main_help = cli.run("--help").stdout
    token_help = cli.run("token", "--help").stdout
    for text, option in [
        (main_help, "--idle-timeout"),
        (main_help, "--max-connection"),
        (token_help, "--ttl"),
    ]:
        found = re.search(rf"^  {option} SECONDS\s+(.+?)(?=^  -|\Z)", text, re.M | re.S)
        assert found, text
        assert "in seconds" in found.group(1), found.group(1)


# -- make (items 22, 24) ---------------------------------------------------------------------------

MAKE = shutil.which("make")
needs_make = pytest.mark.skipif(MAKE is None, reason="make is not installed")
STAMP = "venv/.installed-stamp"  # -o: never (re)install from a test


@needs_make
def test_make_dev_passes_args_to_the_emulator(cli: Cli) -> None:
    assert MAKE is not None
    dry = subprocess.run(
        [MAKE, "-o", STAMP, "-n", "dev", "ARGS=--config targetAttribute=owner --idle-timeout 60"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    args = "--config targetAttribute=owner --idle-timeout 60"
    assert f"-m emulator --stack dev --port 8080 {args}" in dry.stdout
    # and for real: the emulator gets them (this one refuses the key, so nothing starts)
    real = subprocess.run(
        [MAKE, "-o", STAMP, "dev", f"PORT={_port_of(cli.url)}", "ARGS=--config nosuch=1"],
        cwd=ROOT, env=cli.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert real.returncode != 0
    assert "unknown config key 'nosuch'" in real.stderr and "Traceback" not in real.stderr


@needs_make
def test_make_bench_runs_every_benchmark_and_fails_at_the_end(tmp_path: Path) -> None:
    assert MAKE is not None
    (tmp_path / "missed_target.py").write_text(
        "import sys\nprint('FAIL: median 900 ms is 4.00x the baseline')\nsys.exit(1)\n"
    )
    (tmp_path / "met_target.py").write_text("print('OK: within target')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    answer = subprocess.run(
        [MAKE, "-o", STAMP, "bench", f"PY={sys.executable}",
         "BENCHMARKS=missed_target met_target"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert answer.returncode != 0
    out = answer.stdout
    assert "OK: within target" in out  # the second ran after the first missed
    summary = out[out.index("make bench: every benchmark ran") :]
    assert re.search(r"missed_target\s+MISSED \(exit 1\)", summary)
    assert re.search(r"met_target\s+met its target", summary)
    assert "FAIL: median 900 ms is 4.00x the baseline" in summary
    assert "1 of 2 missed: missed_target" in summary


def test_quick_start_leads_with_two_commands_that_install_what_they_need() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme[readme.index("## Quick start") :]
    block = re.search(r"^```sh\n(.*?)^```$", quick_start, re.M | re.S)
    assert block
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make dev", "make test"]
    if MAKE is None:
        return
    for target, runs in (("dev", "-m emulator"), ("test", "-m pytest")):
        # -W: as if the requirements had just changed (a fresh checkout); -n: print, run nothing
        dry = subprocess.run(
            [MAKE, "-n", "-W", "requirements.txt", target],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert dry.returncode == 0, dry.stderr
        install = dry.stdout.find("-m pip install")
        assert 0 <= install < dry.stdout.find(runs), dry.stdout


def test_coldstart_is_judged_as_a_ratio_to_a_baseline_in_the_same_run() -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "bench.coldstart", "--runs", "1", "--max-ratio", "0.01"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert answer.returncode == 1, answer.stdout + answer.stderr
    assert re.search(r"^baseline\s+\d+\s+1\.00x", answer.stdout, re.M), answer.stdout
    for name in ("authorizer", "connect", "disconnect", "default", "broadcaster"):
        assert re.search(
            rf"^FAIL: {name}: median \d+ ms is [\d.]+x the baseline", answer.stdout, re.M
        )
        # each answered with the stack's declared environment (default: a subscribe; the
        # broadcaster reached every subscriber): the only failures are the ratios
        assert re.search(rf"^{name} .* ok\s*$", answer.stdout, re.M), answer.stdout
    assert not re.search(r"^FAIL: (?!\w+: median )", answer.stdout, re.M), answer.stdout


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
