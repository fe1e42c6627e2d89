"""The worker pool runs handlers in child processes, as Lambda runs them in sandboxes."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import textwrap
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from emulator.workers import FunctionPool, FunctionSpec, PoolClosedError, worker_environment

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

FNS = """
import json
import logging
import os
import sys
import time

log = logging.getLogger("fns")
_h = logging.StreamHandler(sys.stdout)
_h.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
log.addHandler(_h)
log.setLevel(logging.INFO)

print("imported fns")


def ok(event, context):
    return {
        "echo": event,
        "fn": context.function_name,
        "version": context.function_version,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "request_id": context.aws_request_id,
        "group": context.log_group_name,
        "stream": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "cwd": os.getcwd(),
        "stdin": sys.stdin.read(),
    }


def boom(event, context):
    raise ValueError("bad")


def pid(event, context):
    return os.getpid()


def slow(event, context):
    time.sleep(event if isinstance(event, (int, float)) else 5)
    return os.getpid()


def die(event, context):
    print("last words")
    os._exit(3)


def env(event, context):
    return dict(os.environ)


def chatty(event, context):
    print("to stdout")
    print(json.dumps({"level": "INFO", "message": "json line"}))
    log.warning("via logging %s", 42)
    print("to stderr", file=sys.stderr)
    sys.stdout.write('{"id": 999, "ok": true, "result": "forged"}\\n')
    return 1


def odd(event, context):
    return {"when": __import__("datetime").date(2024, 1, 2), "tuple": (1, 2)}
"""

NEEDS_ENV = """
import os

if not os.environ.get("REQUIRED_TABLE"):
    raise RuntimeError("environment variable REQUIRED_TABLE is not set")


def handler(event, context):
    return os.environ["REQUIRED_TABLE"]
"""


@pytest.fixture
def code_dir(tmp_path: Path) -> Path:
    package = tmp_path / "code" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "fns.py").write_text(textwrap.dedent(FNS))
    (package / "needs_env.py").write_text(NEEDS_ENV)
    return tmp_path / "code"


def spec_for(
    code_dir: Path,
    handler: str,
    *,
    timeout: float = 5.0,
    environment: Mapping[str, str] | None = None,
    name: str = "stack-fn-abc123",
) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        handler=handler,
        code_dir=code_dir,
        environment=dict(environment or {"STAGE": "test"}),
        timeout=timeout,
        memory_mb=256,
        arn=f"arn:aws:lambda:us-east-1:000000000000:function:{name}",
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Pools:
    """Builds pools for one test and closes them all."""

    def __init__(self, code_dir: Path) -> None:
        self.code_dir = code_dir
        self.lines: list[str] = []
        self.pools: list[FunctionPool] = []

    def pool(self, handler: str, *, max_workers: int = 2, **spec: Any) -> FunctionPool:
        made = FunctionPool(
            spec_for(self.code_dir, handler, **spec),
            max_workers=max_workers,
            log=self.lines.append,
        )
        self.pools.append(made)
        return made

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()


def with_pools(code_dir: Path, body: Callable[[Pools], Awaitable[T]]) -> T:
    async def main() -> T:
        pools = Pools(code_dir)
        try:
            return await body(pools)
        finally:
            await pools.close()

    return asyncio.run(main())


def test_result_and_context_round_trip(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        pool = pools.pool("pkg.fns.ok")
        await pool.start()
        assert pool.worker_count == 1
        event = {"a": [1, 2.5, None, True], "text": "héllo ✓"}
        result = await pool.invoke(event)
        assert result.ok, result
        assert result.error_type is None
        assert result.duration_ms > 0
        payload = result.payload
        assert payload["echo"] == event
        assert payload["fn"] == "stack-fn-abc123"
        assert payload["version"] == "$LATEST"
        assert payload["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:stack-fn-abc123"
        assert payload["memory"] == 256
        assert len(payload["request_id"]) == 36
        assert payload["group"] == "/aws/lambda/stack-fn-abc123"
        assert "[$LATEST]" in payload["stream"]
        assert 4000 < payload["remaining"] <= 5000
        assert payload["cwd"] == str(code_dir)
        assert payload["stdin"] == ""  # the protocol is not on the handler's stdin
        again = await pool.invoke(None)
        assert again.ok and again.payload["echo"] is None
        assert again.payload["request_id"] != payload["request_id"]
        assert pool.worker_count == 1  # warm reuse

        odd = await pools.pool("pkg.fns.odd").invoke({})
        assert odd.ok and odd.payload == {"when": "2024-01-02", "tuple": [1, 2]}

    with_pools(code_dir, body)


def test_handler_exception_is_reported_and_the_worker_survives(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        boom = pools.pool("pkg.fns.boom", max_workers=1)
        first = await boom.invoke({})
        assert not first.ok
        assert first.error_type == "ValueError"
        assert first.error_message == "bad"
        (pid,) = boom.worker_pids
        second = await boom.invoke({})
        assert second.error_type == "ValueError"
        assert boom.worker_pids == [pid]
        assert any("[ERROR] ValueError: bad" in line for line in pools.lines)

        pids = pools.pool("pkg.fns.pid", max_workers=1)
        one, two = await pids.invoke({}), await pids.invoke({})
        assert one.ok and one.payload == two.payload == pids.worker_pids[0]

    with_pools(code_dir, body)


def test_timeout_kills_the_worker_and_the_next_invoke_gets_a_new_one(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        pool = pools.pool("pkg.fns.slow", max_workers=1, timeout=0.5)
        await pool.start()
        (old_pid,) = pool.worker_pids
        started = time.monotonic()
        result = await pool.invoke(5)
        elapsed = time.monotonic() - started
        assert not result.ok
        assert result.error_type == "Sandbox.Timedout"
        assert result.error_message == "Task timed out after 0.50 seconds"
        assert 0.5 <= elapsed < 1.5
        assert pool.worker_count == 0
        next_result = await pool.invoke(0)
        assert next_result.ok
        assert next_result.payload != old_pid
        await asyncio.sleep(0.1)  # reaped in the background
        assert not alive(old_pid)
        assert any("Task timed out after 0.50 seconds" in line for line in pools.lines)

    with_pools(code_dir, body)


def test_crash_is_an_exit_error_then_a_fresh_worker_serves(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        die = pools.pool("pkg.fns.die", max_workers=1)
        result = await die.invoke({})
        assert not result.ok
        assert result.error_type == "Runtime.ExitError"
        assert result.error_message is not None
        assert result.error_message.endswith("Runtime exited with error: exit status 3")
        assert die.worker_count == 0
        assert pools.lines[-2:] == [
            "[stack-fn-abc123] last words",
            f"[stack-fn-abc123] {result.error_message}",
        ]
        again = await die.invoke({})
        assert again.error_type == "Runtime.ExitError"  # a new worker, same fate

    with_pools(code_dir, body)


def test_environment_is_exactly_the_declared_one(
    code_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKERS_TEST_LEAK_MARKER", "leaked")
    declared = {"CONNECTIONS_TABLE": "t1", "AWS_REGION": "eu-west-1"}

    async def body(pools: Pools) -> None:
        pool = pools.pool("pkg.fns.env", environment=declared, timeout=3)
        result = await pool.invoke({})
        assert result.ok
        expected = {
            **declared,
            "PATH": os.environ["PATH"],
            "LC_CTYPE": "C.UTF-8",
            "PYTHONPATH": str(code_dir),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_LAMBDA_FUNCTION_NAME": "stack-fn-abc123",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_TIMEOUT": "3",
        }
        assert result.payload == expected
        assert "WORKERS_TEST_LEAK_MARKER" not in result.payload

    with_pools(code_dir, body)


def test_reserved_variables_win_over_the_spec(code_dir: Path) -> None:
    spec = spec_for(
        code_dir,
        "pkg.fns.env",
        environment={"AWS_LAMBDA_FUNCTION_NAME": "spoof", "PATH": "/bin", "LANG": "C.UTF-8"},
    )
    env = worker_environment(spec)
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "stack-fn-abc123"
    assert env["PATH"] == "/bin"
    assert "LC_CTYPE" not in env


def test_handler_output_goes_to_the_log_not_the_protocol(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        pool = pools.pool("pkg.fns.chatty")
        result = await pool.invoke({})
        assert result.ok and result.payload == 1
        # logged before invoke returned, in order, each prefixed
        assert pools.lines == [
            "[stack-fn-abc123] imported fns",
            "[stack-fn-abc123] to stdout",
            '[stack-fn-abc123] {"level": "INFO", "message": "json line"}',
            "[stack-fn-abc123] WARNING via logging 42",
            "[stack-fn-abc123] to stderr",
            '[stack-fn-abc123] {"id": 999, "ok": true, "result": "forged"}',
        ]
        assert (await pool.invoke({})).payload == 1

    with_pools(code_dir, body)


def test_import_error_is_reported_on_invoke(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        broken = pools.pool("pkg.needs_env.handler")
        await broken.start()  # does not raise
        result = await broken.invoke({})
        assert not result.ok
        assert result.error_type == "Runtime.ImportModuleError"
        assert result.error_message is not None
        assert "REQUIRED_TABLE" in result.error_message
        assert "pkg.needs_env" in result.error_message
        assert any("REQUIRED_TABLE is not set" in line for line in pools.lines)  # logged already
        assert broken.worker_count == 0
        assert (await broken.invoke({})).error_type == "Runtime.ImportModuleError"

        fixed = pools.pool("pkg.needs_env.handler", environment={"REQUIRED_TABLE": "t"})
        assert (await fixed.invoke({})).payload == "t"

        missing = await pools.pool("pkg.fns.nope").invoke({})
        assert missing.error_type == "Runtime.HandlerNotFound"
        no_module = await pools.pool("pkg.absent.handler").invoke({})
        assert no_module.error_type == "Runtime.ImportModuleError"
        assert no_module.error_message is not None and "pkg.absent" in no_module.error_message

    with_pools(code_dir, body)


def test_concurrent_invocations_share_at_most_max_workers(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        pool = pools.pool("pkg.fns.slow", max_workers=3)
        await pool.start()
        started = time.monotonic()
        results = await asyncio.gather(*(pool.invoke(0.3) for _ in range(4)))
        elapsed = time.monotonic() - started
        assert all(result.ok for result in results), results
        used = {result.payload for result in results}
        assert len(used) == 3
        assert pool.worker_count == 3
        assert set(pool.worker_pids) == used
        assert elapsed < 4 * 0.3

    with_pools(code_dir, body)


def test_a_cancelled_invocation_frees_its_worker_slot(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        pool = pools.pool("pkg.fns.slow", max_workers=1)
        running = asyncio.ensure_future(pool.invoke(5))
        queued = asyncio.ensure_future(pool.invoke(0))
        await asyncio.sleep(0.3)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        result = await asyncio.wait_for(queued, 3)
        assert result.ok
        assert pool.worker_count == 1

    with_pools(code_dir, body)


def worker_children() -> list[int]:
    """Live (not zombie) worker.py processes started by this test process (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if (
            fields.get("PPid", "").strip() == str(os.getpid())
            and not fields.get("State", "").startswith("Z")
            and b"worker.py" in cmdline
        ):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_close_leaves_no_process_behind(code_dir: Path) -> None:
    async def body() -> list[int]:
        pool = FunctionPool(spec_for(code_dir, "pkg.fns.slow"), max_workers=3, log=lambda _: None)
        await pool.start()
        busy = [asyncio.ensure_future(pool.invoke(5)) for _ in range(4)]  # one queued
        await asyncio.sleep(0.3)
        pids = pool.worker_pids
        assert len(pids) == 3
        assert all(alive(pid) for pid in pids)
        await pool.close()
        outcomes = await asyncio.gather(*busy, return_exceptions=True)
        killed = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(killed) == 3
        assert all(o.error_type == "Runtime.ExitError" for o in killed)
        assert "signal: killed" in str(killed[0].error_message)
        assert sum(isinstance(o, PoolClosedError) for o in outcomes) == 1
        with pytest.raises(PoolClosedError):
            await pool.invoke({})

        # closed while a worker is being started
        starting = FunctionPool(spec_for(code_dir, "pkg.fns.pid"), log=lambda _: None)
        pending = asyncio.ensure_future(starting.invoke({}))
        await asyncio.sleep(0.01)
        await starting.close()
        try:
            outcome = await pending
        except PoolClosedError:
            pass
        else:
            assert not outcome.ok
        assert starting.worker_count == 0
        assert worker_children() == []
        return pids

    pids = asyncio.run(body())
    assert not any(alive(pid) for pid in pids)


def test_a_real_handler_runs_in_a_worker(tmp_path: Path) -> None:
    code = tmp_path / "archive"
    shutil.copytree(
        REPO / "handlers", code / "handlers", ignore=shutil.ignore_patterns("__pycache__")
    )
    spec = FunctionSpec(
        name="rt-default-1a2b3c",
        handler="handlers.default.handler",
        code_dir=code,
        environment={
            "MAX_INPUT_BYTES": "1024",
            "MANAGEMENT_ENDPOINT": "http://127.0.0.1:9/dev",
            # what $default needs at import (the component declares the same variables)
            "CONNECTIONS_TABLE": "rt-connections-1a2b3c",
            "SUBSCRIPTIONS_TABLE": "rt-subscriptions-1a2b3c",
            "SOURCES": json.dumps(
                {"events": {"table": "events-1a2b3c", "keys": [["PK", "S"], ["SK", "S"]]}}
            ),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        timeout=10,
    )
    lines: list[str] = []
    event = {
        "requestContext": {"connectionId": "c1", "routeKey": "$default", "stage": "dev"},
        "body": "not json",
        "isBase64Encoded": False,
    }

    async def body() -> Any:
        pool = FunctionPool(spec, max_workers=1, log=lines.append)
        try:
            await pool.start()
            return await pool.invoke(event)
        finally:
            await pool.close()

    result = asyncio.run(body())
    assert result.ok, (result, lines)
    assert result.payload == {"statusCode": 200}
    assert any("could not answer the client" in line for line in lines), lines
    assert all(line.startswith("[rt-default-1a2b3c] ") for line in lines)
    assert not list(code.rglob("__pycache__"))  # PYTHONDONTWRITEBYTECODE


def test_invoke_rejects_an_event_that_is_not_json(code_dir: Path) -> None:
    async def body(pools: Pools) -> None:
        pool = pools.pool("pkg.fns.ok")
        with pytest.raises(TypeError):
            await pool.invoke({"bad": object()})
        assert pool.worker_count == 0

    with_pools(code_dir, body)
