"""The JavaScript client (clients/js): its unit tests and its type check, and the client end to
end against the emulator on 127.0.0.1.

End to end, the client runs in Node (``clients/js/test/e2e/driver.js``, with Node 20's
``--experimental-websocket``), driven by JSON lines on stdin; it reports on stdout its states,
the changes it hands to the application, its errors, and a trace of every socket (what it
sent, what the server answered, who closed it). The test writes to the table with boto3 and
drops connections with ``@connections`` DELETE, as ``python -m emulator drop`` does.

The stack has per-user rules (a user's own partition; table-wide for admins), a 3 s idle
timeout and a 12 s maximum connection, so a heartbeat, a refresh and a planned reconnect all
happen within seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.emulator.conftest import RunningEmulator, start, wait_for
from tests.emulator.test_end_to_end import management

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
DRIVER = JS / "test" / "e2e" / "driver.js"
TSC = JS / "node_modules" / ".bin" / "tsc"
NODE = shutil.which("node")

RULES = [
    {"key": {"PK": "USER#{sub}"}},  # a user: their own partition
    {"table": True, "when": {"claims.role": "admin"}},  # admins: the whole table
]
ADMIN = {"role": "admin"}
IDLE_SECONDS = 3
MAX_CONNECTION_SECONDS = 12
FAST = {  # the client's options, scaled to the stack's short limits
    "heartbeatMs": 1000,
    "heartbeatTimeoutMs": 5000,
    "maxConnectionMs": MAX_CONNECTION_SECONDS * 1000,
    "renewBeforeMs": 4000,
    "backoff": {"initialMs": 200, "maxMs": 2000},
    "keyAttributes": {"events": ["PK", "SK"]},
}


def need(tool: str | None, what: str, how: str) -> str:
    """The tool's path; without it, a skip on a laptop (saying how to get it), a failure in CI."""
    if tool is None or not Path(tool).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing in CI: {how}")
        pytest.skip(f"{what} is not installed: {how}")
    return tool


def node() -> str:
    return need(NODE, "node", "install Node.js 20 or newer (it brings npm)")


# -- the unit tests and the types ---------------------------------------------------------------


def test_the_clients_unit_tests_pass() -> None:
    """``node --test`` on clients/js/test/*.test.js (fake clock, fake WebSocket)."""
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.js"))
    assert len(files) >= 8, files
    run = subprocess.run(
        [node(), "--test", *files], cwd=JS, capture_output=True, text=True, timeout=120
    )  # fmt: skip
    report = run.stdout + run.stderr
    passed = re.search(r"^# pass (\d+)$", report, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", report, re.MULTILINE)
    assert run.returncode == 0 and failed and failed.group(1) == "0", report[-6000:]
    assert passed and int(passed.group(1)) >= 50, report[-2000:]  # they ran, all of them


def tsc() -> str:
    return need(str(TSC), "TypeScript (clients/js devDependency)", "make install")


def test_the_client_type_checks_with_tsc() -> None:
    """The JavaScript (checkJs, strict, no Node types: the library uses browser APIs only),
    its declarations and test/types.ts, which holds the implementation to the declarations
    and checks that misuse is refused."""
    run = subprocess.run(
        [tsc(), "-p", str(JS)], cwd=JS, capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_tsc_refuses_code_that_misuses_the_declared_api(tmp_path: Path) -> None:
    """The check above can fail: the same configuration reports a misuse of the API."""
    (tmp_path / "misuse.ts").write_text(
        f'import {{ connect }} from "{JS / "index.js"}";\n'
        'connect({ url: "ws://x", heartbeatMs: "often" });\n'
    )
    (tmp_path / "tsconfig.json").write_text(
        json.dumps({"extends": str(JS / "tsconfig.json"), "include": ["misuse.ts"]})
    )
    run = subprocess.run(
        [tsc(), "-p", str(tmp_path)], capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert run.returncode != 0
    # line 2, at heartbeatMs: a string where the declarations say a number
    assert re.search(r"misuse\.ts\(2,26\): error TS2322", run.stdout), run.stdout


# -- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[RunningEmulator]:
    yield from start(
        overrides={"sourceAccess": json.dumps(RULES)},
        idle_timeout=IDLE_SECONDS,
        max_connection=MAX_CONNECTION_SECONDS,
    )


class Driver:
    """The Node process running the client: commands in, events out (a reader thread)."""

    def __init__(self, stack: RunningEmulator) -> None:
        env = {**os.environ, "RC_URL": stack.emulator.url, "RC_SECRET": stack.emulator.secret}
        self.process = subprocess.Popen(
            [node(), "--experimental-websocket", "--no-warnings", str(DRIVER)],
            cwd=JS,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.wait(lambda e: e["event"] == "started", what="the driver to start")

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.events.append(json.loads(line))
                self.changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)

    def send(self, op: str, **fields: Any) -> None:
        with self.changed:
            start = len(self.events)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        answer = self.wait(
            lambda e: e["event"] in ("done", "failed") and e["op"] == op,
            start=start,
            what=f"{op} to be done",
        )
        assert answer["event"] == "done", answer

    def wait(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 20,
        start: int = 0,
        what: str = "an event",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for event in self.events[start:]:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    raise AssertionError(
                        f"timed out waiting for {what}; last events {self.events[-15:]};"
                        f" stderr {''.join(self.stderr)[-2000:]}"
                    )
                self.changed.wait(min(left, 0.5))

    def first(self, kind: str, timeout: float = 20, **match: Any) -> dict[str, Any]:
        """Wait for the first event of this kind whose fields have these values."""

        def matches(event: dict[str, Any]) -> bool:
            return event["event"] == kind and all(event.get(k) == v for k, v in match.items())

        return self.wait(matches, timeout=timeout, what=f"{kind} {match}")

    def of(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        with self.changed:
            return [
                e
                for e in self.events
                if e["event"] == kind and all(e.get(k) == v for k, v in match.items())
            ]

    def view(self, name: str) -> dict[str, Any]:
        start = len(self.events)
        self.send("view", name=name)
        return self.wait(lambda e: e["event"] == "view" and e["name"] == name, start=start)

    def changes(self, name: str, pk: str, prefix: str = "ITEM#") -> Counter[tuple[str, int | None]]:
        """What the application was told of the items of one partition whose sort key starts
        with ``prefix``: (sort key, n or None) each."""
        told = [
            e
            for e in self.of("change", name=name)
            if e["keys"]["PK"] == pk and e["keys"]["SK"].startswith(prefix)
        ]
        return Counter((e["keys"]["SK"], (e["data"] or {}).get("n")) for e in told)

    def sockets(self, phase: str) -> list[dict[str, Any]]:
        return self.of("socket", phase=phase)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("close")
                self.process.wait(5)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def drivers(stack: RunningEmulator) -> Iterator[Callable[[], Driver]]:
    started: list[Driver] = []

    def make() -> Driver:
        driver = Driver(stack)
        started.append(driver)
        return driver

    yield make
    for driver in started:
        driver.close()


def put(stack: RunningEmulator, pk: str, sk: str, n: int) -> None:
    stack.dynamodb().put_item(
        TableName=stack.table(), Item={"PK": {"S": pk}, "SK": {"S": sk}, "n": {"N": str(n)}}
    )


def remove(stack: RunningEmulator, pk: str, sk: str) -> None:
    stack.dynamodb().delete_item(TableName=stack.table(), Key={"PK": {"S": pk}, "SK": {"S": sk}})


def table_state(stack: RunningEmulator, pk: str) -> dict[str, int]:
    items = stack.dynamodb().query(
        TableName=stack.table(),
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": {"S": pk}},
        ConsistentRead=True,
    )["Items"]
    return {i["SK"]["S"]: int(i["n"]["N"]) for i in items}


def drop(stack: RunningEmulator, user: str) -> int:
    """``@connections`` DELETE of every connection of ``user`` (``python -m emulator drop``)."""
    items = stack.dynamodb().scan(TableName=stack.emulator.connections_table())["Items"]
    ids = [i["connectionId"]["S"] for i in items if i.get("userId", {}).get("S") == user]
    for connection_id in ids:
        management(stack).delete_connection(ConnectionId=connection_id)
    return len(ids)


def writes(
    stack: RunningEmulator, pk: str, count: int, pause: float
) -> list[tuple[str, int | None]]:
    """``count`` changes to ``pk``, one every ``pause`` s: puts that create and overwrite
    items, and every fifth a delete of the item just written; each (sort key, n or None) is
    one stream record, so each must reach a subscriber exactly once."""
    done: list[tuple[str, int | None]] = []
    for i in range(count):
        if i % 5 == 4:
            sk = f"ITEM#{(i - 1) % 6}"
            remove(stack, pk, sk)
            done.append((sk, None))
        else:
            sk = f"ITEM#{i % 6}"
            put(stack, pk, sk, 100 + i)
            done.append((sk, 100 + i))
        time.sleep(pause)
    return done


def told_exactly(driver: Driver, name: str, pk: str, expected: Counter[Any]) -> None:
    """The application was told each expected change once, and nothing else (waited for)."""
    try:
        wait_for(lambda: driver.changes(name, pk) == expected, what=f"{name}'s changes")
    except AssertionError:
        told = driver.changes(name, pk)
        raise AssertionError(
            f"{name}: missing {expected - told}, extra {told - expected};"
            f" trace {[e for e in driver.events if e['event'] != 'view'][-80:]}"
        ) from None


def in_background(work: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``work`` in a thread; the returned function joins it (bounded) and gives its result."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()), daemon=True)
    thread.start()

    def join() -> Any:
        thread.join(60)
        assert result, "the background work did not finish"
        return result[0]

    return join


def converged(driver: Driver, name: str, stack: RunningEmulator, pk: str) -> None:
    """The subscription's view holds exactly the partition's items, as the table has them."""

    def same() -> bool:
        items = driver.view(name)["items"]
        mine = {i["SK"]: i["n"] for i in items if i["PK"] == pk}
        return mine == table_state(stack, pk)

    wait_for(same, timeout=20, what=f"view {name} to equal the table")


def test_a_forced_disconnect_while_writes_continue_loses_nothing_and_repeats_nothing(
    stack: RunningEmulator, drivers: Callable[[], Driver]
) -> None:
    user, pk = "alice", "USER#alice"
    for n in range(3):
        put(stack, pk, f"OLD#{n}", n)
    client = drivers()
    client.send("connect", user=user, claims=ADMIN, options=FAST)
    key = {"PK": pk}
    client.send("subscribe", name="mine", request={"table": "events", "key": key, "snapshot": True})
    client.send("subscribe", name="all", request={"table": "events"})  # table-wide: admin
    client.first("snapshot", name="mine")
    client.first("server", type="subscribed", id="s2")

    written = in_background(lambda: writes(stack, pk, count=40, pause=0.05))
    client.first("change", name="all")
    time.sleep(0.4)
    assert drop(stack, user) == 1  # while the writes go on
    expected = Counter(written())

    converged(client, "mine", stack, pk)
    for name in ("mine", "all"):
        told_exactly(client, name, pk, expected)  # each change told once, none missing

    # it was a real drop and a real resume: a new socket, both subscriptions resumed after
    # their cursors (not reset), and the server's replay repeated changes the client had
    server_closed = [s for s in client.sockets("closed") if not s["byClient"]]
    assert [s["n"] for s in server_closed] == [0], client.sockets("closed")
    resubscribed = [e for e in client.of("sent", action="subscribe") if e["n"] >= 1]
    assert resubscribed and all(e["after"] for e in resubscribed), resubscribed
    resumed = {e["id"] for e in client.of("server", type="resumed")}
    assert resumed == {"s1", "s2"}, client.of("server", type="reset")
    first = {e["id"] for e in client.of("server", type="event_update", n=0)}
    replayed = {e["id"] for e in client.of("server", type="event_update", replay=True)}
    assert first & replayed, "the replay repeated nothing: de-duplication was not exercised"
    for name in ("mine", "all"):
        ids = [e["id"] for e in client.of("change", name=name)]
        assert len(ids) == len(set(ids))
        # changes made before the subscription (the OLD items, in the snapshot) may come once
        # with the resume's overlap (the server replays from 60 s before the cursor), never live
        before = [e for e in client.of("change", name=name) if e["keys"]["SK"].startswith("OLD#")]
        assert all(e["replay"] for e in before), before
        assert len(before) <= 3, before
    states = [e["state"] for e in client.of("state")]
    assert states[:2] == ["connecting", "open"] and "reconnecting" in states, states
    assert states[-1] == "open", states


@pytest.mark.slow
def test_the_token_is_refreshed_before_it_expires_and_the_connection_lives_on(
    stack: RunningEmulator, drivers: Callable[[], Driver]
) -> None:
    """Tokens live 3 s; the client refreshes them with ``auth`` (at half their remaining life)
    and keeps receiving on the same socket for 8 s. Without the refresh the server stops
    delivering at expiry and closes the connection."""
    user, pk = "bob", "USER#bob"
    client = drivers()
    client.send("connect", user=user, ttl=3, options={**FAST, "maxConnectionMs": 0})
    client.send("subscribe", name="mine", request={"table": "events", "key": {"PK": pk}})
    client.first("server", type="subscribed")
    expected = Counter(writes(stack, pk, count=8, pause=1.0))
    told_exactly(client, "mine", pk, expected)
    assert len(client.sockets("created")) == 1, client.of("socket")
    assert client.sockets("closed") == []
    assert len(client.of("sent", action="auth")) >= 4
    assert len(client.of("server", type="authenticated")) >= 4
    assert len(client.of("token")) >= 5  # the connect's, then one per refresh
    assert client.of("error") == []


def test_a_forbidden_subscription_is_reported_through_the_error_callbacks(
    stack: RunningEmulator, drivers: Callable[[], Driver]
) -> None:
    user, pk = "carol", "USER#carol"
    client = drivers()
    client.send("connect", user=user, options=FAST)
    client.send("subscribe", name="everything", request={"table": "events"})
    client.send("subscribe", name="theirs", request={"table": "events", "key": {"PK": "USER#x"}})
    client.send("subscribe", name="mine", request={"table": "events", "key": {"PK": pk}})
    for name, sub_id in (("everything", "s1"), ("theirs", "s2")):
        assert client.first("sub_error", name=name)["code"] == "forbidden"
        assert client.first("error", subscription=sub_id)["code"] == "forbidden"
    client.first("server", type="subscribed", id="s3")
    put(stack, pk, "HELLO", 1)
    change = client.first("change")
    assert (change["name"], change["keys"]) == ("mine", {"PK": pk, "SK": "HELLO"})
    # after a reconnect only the allowed subscription is made again
    assert drop(stack, user) == 1
    client.first("sent", action="subscribe", n=1)
    time.sleep(0.3)
    assert [e["id"] for e in client.of("sent", action="subscribe", n=1)] == ["s3"]


@pytest.mark.slow
def test_heartbeats_keep_an_idle_connection_and_a_planned_reconnect_beats_the_cut_with_no_gap(
    stack: RunningEmulator, drivers: Callable[[], Driver]
) -> None:
    """4 s with no changes (the idle timeout is 3 s), then 50 changes over ~10 s while the
    12 s maximum connection passes: the client moves to a new socket on its own before the
    cut (the new one caught up before the old one closed), never leaves ``open``, and every
    change is told exactly once."""
    user, pk = "dave", "USER#dave"
    client = drivers()
    client.send("connect", user=user, options=FAST)
    client.send("subscribe", name="mine", request={"table": "events", "key": {"PK": pk}})
    client.first("server", type="subscribed")
    time.sleep(IDLE_SECONDS + 1)
    assert client.sockets("closed") == [], "the idle connection was closed"
    assert len(client.of("sent", action="ping", n=0)) >= IDLE_SECONDS

    expected = Counter(writes(stack, pk, count=50, pause=0.2))
    told_exactly(client, "mine", pk, expected)

    assert [e["state"] for e in client.of("state")] == ["connecting", "open"]
    closed = client.sockets("closed")
    assert closed and all(s["byClient"] for s in closed), closed
    why = {s["n"]: s["reason"] for s in client.sockets("closing")}
    assert all(why[s["n"]] == "planned_reconnect" for s in closed), why
    opened = {s["n"]: s["t"] for s in client.sockets("open")}
    for old in closed:  # the next socket was open before the old one closed: no gap
        assert opened[old["n"] + 1] < old["t"], (opened, old)
        assert old["t"] - opened[old["n"]] < MAX_CONNECTION_SECONDS * 1000  # before the cut
    resumed = client.of("server", type="resumed")
    assert {e["n"] for e in resumed} == {s["n"] + 1 for s in closed}


@pytest.mark.slow
def test_without_the_heartbeat_the_idle_timeout_closes_the_connection(
    stack: RunningEmulator, drivers: Callable[[], Driver]
) -> None:
    """The control for the test above: the stack really closes an idle connection, so it is
    the heartbeat that kept that one open (and the client then reconnects on its own)."""
    client = drivers()
    options = {**FAST, "heartbeatMs": 0, "maxConnectionMs": 0}
    client.send("connect", user="erin", options=options)
    client.send("subscribe", name="mine", request={"table": "events", "key": {"PK": "USER#erin"}})
    closed = client.first("socket", phase="closed", timeout=10)
    assert not closed["byClient"] and closed["code"] == 1001, closed
    client.first("state", state="reconnecting")
    client.first("socket", phase="open", n=1)


# -- the README's browser example ---------------------------------------------------------------


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("\n## JavaScript client\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_browser_example_is_the_shipped_page_and_works_as_printed(
    stack: RunningEmulator, tmp_path: Path
) -> None:
    """The page in the README is clients/js/example.html, and its script, run in Node with
    a stand-in for ``document`` and ``location`` (the token after ``#``, as the README says to
    open it) against the emulator, prints what the README says it prints."""
    page = (JS / "example.html").read_text()
    printed = re.search(r"```html\n(.*?)```", readme_section(), re.DOTALL)
    assert printed and printed.group(1) == page
    assert len(page.splitlines()) <= 10
    script = re.search(r'<script type="module">\n(.*?)</script>', page, re.DOTALL)
    assert script and 'from "./index.js"' in script.group(1)
    assert "ws://127.0.0.1:8080/dev" in script.group(1)  # what `make dev` listens on
    code = (
        script.group(1)
        .replace('"./index.js"', json.dumps((JS / "index.js").as_uri()))
        .replace("ws://127.0.0.1:8080/dev", stack.emulator.url)  # this run's port
    )
    token = stack.token("paula", ADMIN)  # table-wide needs the admin role in this stack
    shim = (
        f"globalThis.location = {{ hash: {json.dumps('#' + token)} }};\n"
        'const pre = { textContent: "" };\n'
        'globalThis.document = { getElementById: (id) => (id === "log" ? pre : null) };\n'
        "let shown = 0;\n"
        "setInterval(() => {\n"
        "  process.stdout.write(pre.textContent.slice(shown));\n"
        "  shown = pre.textContent.length;\n"
        "}, 20);\n"
    )
    (tmp_path / "page.mjs").write_text(shim + code)
    process = subprocess.Popen(
        [node(), "--experimental-websocket", "--no-warnings", str(tmp_path / "page.mjs")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(line.rstrip("\n") for line in process.stdout)

    threading.Thread(target=read, daemon=True).start()
    try:
        try:
            wait_for(lambda: "state: open" in lines, what="state: open")
        except AssertionError:
            process.kill()
            _, errors = process.communicate(timeout=5)
            raise AssertionError(f"the page printed {lines}; stderr {errors[-3000:]}") from None
        assert lines[:2] == ["state: connecting", "state: open"], lines
        put_text = re.search(
            r"`(venv/bin/python -m emulator put events '(.*?)')`", readme_section()
        )
        shown = re.search(r"makes it show `(added .*?)`", readme_section())
        assert put_text and shown
        item = json.loads(put_text.group(2))
        stack.dynamodb().put_item(
            TableName=stack.table(), Item={k: {"S": v} for k, v in item.items()}
        )
        wait_for(lambda: len(lines) > 2, what="the change on the page")
        assert lines[2] == shown.group(1), lines
    finally:
        process.kill()
        process.wait(5)
