"""Run each Lambda function in its own pool of long-lived worker processes.

A :class:`FunctionPool` owns the workers of one function. Each worker is
``python -u emulator/worker.py <handler>`` (see ``emulator/worker.py`` for the
line protocol), started in its own session with:

* working directory: ``spec.code_dir`` (the extracted code archive);
* environment: ``PATH`` from this process (so the handler can run tools), then
  ``spec.environment``, then what the pool sets itself and which overrides the
  spec: ``PYTHONPATH=<code_dir>``, ``PYTHONUNBUFFERED=1``,
  ``PYTHONDONTWRITEBYTECODE=1``, ``AWS_LAMBDA_FUNCTION_NAME``,
  ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, ``AWS_LAMBDA_FUNCTION_TIMEOUT`` (seconds).
  ``LC_CTYPE=C.UTF-8`` is added unless the spec sets ``LC_ALL``, ``LC_CTYPE`` or
  ``LANG`` (as in Lambda; without it Python would coerce the C locale and set
  ``LC_CTYPE`` itself). Nothing else of this process's environment is passed
  on: a function sees only what it declares, as in Lambda.

A worker imports the handler module once (a cold start), then serves
invocations one at a time and stays warm. The pool runs an invocation on an
idle worker (the most recently used), starts another while it has fewer than
``max_workers``, and otherwise queues the invocation (first come, first
served). A worker that times out is killed; one that dies is dropped; either is
replaced when next needed. Everything the handler writes to stdout or stderr
goes, line by line, to ``log`` as ``[<function name>] <line>``; the lines an
invocation wrote before returning are logged before :meth:`FunctionPool.invoke`
returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WORKER_SCRIPT = Path(__file__).resolve().with_name("worker.py")

END_MARKER = "\x00emulator-end:"  # same as emulator.worker.END_MARKER (stdlib-only script)
TIMEOUT_GRACE_SECONDS = 0.05
"""Added to the function's timeout before the worker is killed (pipe and scheduling slack)."""
INIT_TIMEOUT_SECONDS = 10.0
"""Lambda's limit on a function's init phase (importing the handler module)."""
LOG_FLUSH_WAIT_SECONDS = 1.0
"""How long an invocation waits for its log lines to be delivered after the answer."""
REAP_WAIT_SECONDS = 2.0
"""How long to wait for a killed worker's exit and the end of its log stream."""
PROTOCOL_LIMIT_BYTES = 16 * 1024 * 1024
"""Longest protocol line read (the worker itself caps responses at 6 MiB)."""
MAX_LOG_LINE_BYTES = 256 * 1024
"""A longer log line is split (CloudWatch's limit on one log event)."""


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    """Physical function name, used as the log prefix."""
    handler: str
    """``module.attribute``, e.g. ``handlers.connect.handler``."""
    code_dir: Path
    """Directory put on the worker's ``PYTHONPATH`` (the extracted code archive)."""
    environment: Mapping[str, str]
    """Exactly the variables the worker gets, plus the pool's own (see the module doc)."""
    timeout: float
    """Seconds, enforced."""
    memory_mb: int = 128
    arn: str = ""


@dataclass(frozen=True)
class InvokeResult:
    ok: bool
    payload: Any = None
    """The handler's return value (JSON-decoded) when ok."""
    error_type: str | None = None
    """``Sandbox.Timedout``, ``Runtime.ExitError``, ``Runtime.ImportModuleError``... or the
    handler's exception class name."""
    error_message: str | None = None
    duration_ms: float = 0.0


class PoolClosedError(RuntimeError):
    """The pool was closed."""


def worker_environment(spec: FunctionSpec) -> dict[str, str]:
    """The complete environment of ``spec``'s workers (see the module doc)."""
    env: dict[str, str] = {}
    if "PATH" in os.environ:
        env["PATH"] = os.environ["PATH"]
    env.update(spec.environment)
    if not any(name in env for name in ("LC_ALL", "LC_CTYPE", "LANG")):
        env["LC_CTYPE"] = "C.UTF-8"
    env.update(
        {
            "PYTHONPATH": str(spec.code_dir),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": f"{spec.timeout:g}",
        }
    )
    return env


def exit_status(returncode: int | None) -> str:
    """How Lambda words a runtime's exit: ``exit status 3``, ``signal: killed``."""
    if returncode is None:
        return "unknown exit status"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name.removeprefix("SIG").lower()
        except ValueError:
            name = str(-returncode)
        return f"signal: {'killed' if name == 'kill' else name}"
    return f"exit status {returncode}"


class _Worker:
    """One child process and its log reader."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.init_error: tuple[str, str] | None = None
        self.init_ms = 0.0
        self.log_task: asyncio.Task[None] | None = None
        self.log_ended: dict[int, asyncio.Event] = {}
        self.logs_done = False

    @property
    def usable(self) -> bool:
        return self.init_error is None and self.proc.returncode is None

    def kill(self) -> None:
        if self.proc.returncode is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)  # the worker and anything it started
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def end_of_logs(self, request_id: int) -> None:
        event = self.log_ended.pop(request_id, None)
        if event is not None:
            event.set()

    def all_logs_done(self) -> None:
        self.logs_done = True
        for event in self.log_ended.values():
            event.set()
        self.log_ended.clear()


class FunctionPool:
    """The worker processes of one function; see the module doc."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        max_workers: int = 4,
        log: Callable[[str], None] = print,
        python: str = sys.executable,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.spec = spec
        self._max_workers = max_workers
        self._log = log
        self._python = python
        self._env = worker_environment(spec)
        self._prefix = f"[{spec.name}] "
        self._active: set[_Worker] = set()  # spawned, not retired: count against max_workers
        self._reserved = 0  # slots taken by spawns in progress
        self._idle: list[_Worker] = []  # most recently used last
        self._waiters: deque[asyncio.Future[_Worker | None]] = deque()
        self._unreaped: set[_Worker] = set()
        self._reapers: set[asyncio.Task[None]] = set()
        self._spawning: set[asyncio.Future[None]] = set()
        self._next_id = 0
        self._closed = False

    @property
    def worker_count(self) -> int:
        """Workers alive or starting (idle or busy)."""
        return len(self._active) + self._reserved

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current workers."""
        return sorted(worker.pid for worker in self._active)

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start one worker and wait until its module is imported (pre-warm).

        An import error does not raise: the first invocation reports it.
        """
        self._check_open()
        if self._idle or len(self._active) + self._reserved >= self._max_workers:
            return
        self._reserved += 1
        worker = await self._spawn_reserved()
        self._release(worker)

    async def invoke(self, event: Any) -> InvokeResult:
        """Run the handler on ``event`` (which must be JSON-serialisable)."""
        event_json = json.dumps(event, separators=(",", ":"))
        worker = await self._acquire()
        keep = False
        try:
            result, keep = await self._run(worker, event_json)
        finally:
            if keep and not self._closed:
                self._release(worker)
            else:
                self._retire(worker)
        return result

    async def close(self) -> None:
        """Kill every worker, wait for them and stop their log readers."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosedError(f"function pool {self.spec.name} is closed"))
        self._idle.clear()
        for worker in list(self._active):
            self._retire(worker)
        workers = list(self._unreaped)
        for worker in workers:
            worker.kill()
        await asyncio.gather(*(self._reap(worker) for worker in workers))
        if self._spawning:  # they see the pool closed, kill their worker and give up
            await asyncio.gather(*self._spawning, return_exceptions=True)
        if self._reapers:
            await asyncio.gather(*self._reapers, return_exceptions=True)

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError(f"function pool {self.spec.name} is closed")

    # -- scheduling ------------------------------------------------------------

    async def _acquire(self) -> _Worker:
        self._check_open()
        while self._idle:
            worker = self._idle.pop()
            if worker.init_error is not None or worker.proc.returncode is None:
                return worker
            self._retire(worker)  # died while idle
        if len(self._active) + self._reserved < self._max_workers:
            self._reserved += 1
            return await self._spawn_reserved()
        waiter: asyncio.Future[_Worker | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as we were cancelled
                if handed is None:
                    self._reserved -= 1
                    self._hand_over_slot()
                else:
                    self._release(handed)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        if handed is None:  # a slot was freed and reserved for us
            return await self._spawn_reserved()
        return handed

    def _next_waiter(self) -> asyncio.Future[_Worker | None] | None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                return waiter
        return None

    def _release(self, worker: _Worker) -> None:
        if self._closed:
            self._retire(worker)
            return
        waiter = self._next_waiter()
        if waiter is not None:
            waiter.set_result(worker)
        else:
            self._idle.append(worker)

    def _hand_over_slot(self) -> None:
        """Give free capacity to the first waiter, which will start a worker."""
        if len(self._active) + self._reserved >= self._max_workers:
            return
        waiter = self._next_waiter()
        if waiter is not None:
            self._reserved += 1
            waiter.set_result(None)

    def _retire(self, worker: _Worker) -> None:
        """Kill ``worker``, free its slot and reap it in the background."""
        worker.kill()
        if worker in self._active:
            self._active.discard(worker)
            with contextlib.suppress(ValueError):
                self._idle.remove(worker)
            self._hand_over_slot()
        if worker in self._unreaped:
            task = asyncio.get_running_loop().create_task(self._reap(worker))
            self._reapers.add(task)
            task.add_done_callback(self._reapers.discard)

    # -- processes -------------------------------------------------------------

    async def _spawn_reserved(self) -> _Worker:
        """Start a worker in a slot already counted in ``_reserved``."""
        try:
            worker = await self._spawn()
        except BaseException:
            self._reserved -= 1
            self._hand_over_slot()
            raise
        self._reserved -= 1
        if self._closed:
            self._retire(worker)
            self._check_open()
        self._active.add(worker)
        if worker.init_error is not None:
            worker.kill()  # it exits by itself; make sure
        return worker

    async def _spawn(self) -> _Worker:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spawning.add(done)
        try:
            return await self._start_process()
        finally:
            self._spawning.discard(done)
            done.set_result(None)

    async def _start_process(self) -> _Worker:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            self._python,
            "-u",
            str(WORKER_SCRIPT),
            self.spec.handler,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=self.spec.code_dir,
            env=self._env,
            limit=PROTOCOL_LIMIT_BYTES,
            start_new_session=True,
        )
        worker = _Worker(proc)
        self._unreaped.add(worker)
        worker.log_task = asyncio.get_running_loop().create_task(self._pump_logs(worker))
        if self._closed:  # closed while the process was being created
            worker.kill()
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(INIT_TIMEOUT_SECONDS):
                line = await proc.stdout.readline()
        except TimeoutError:
            worker.kill()
            worker.init_error = (
                "Sandbox.Timedout",
                f"Init timed out after {INIT_TIMEOUT_SECONDS:.2f} seconds",
            )
            line = b""
        except BaseException:
            worker.kill()
            await self._reap(worker)
            raise
        worker.init_ms = (time.perf_counter() - started) * 1000
        if worker.init_error is not None:
            return worker
        ready: Any = None
        with contextlib.suppress(ValueError):
            ready = json.loads(line)
        if isinstance(ready, dict) and ready.get("ready") is True:
            return worker
        returncode = await self._wait_exit(worker)  # it exits after an init error
        await self._drain_logs(worker)  # so its traceback is logged before it is reported
        if isinstance(ready, dict) and "errorType" in ready:
            worker.init_error = (str(ready["errorType"]), str(ready.get("errorMessage") or ""))
        else:
            worker.init_error = (
                "Runtime.ExitError",
                f"Runtime exited before it was ready: {exit_status(returncode)}",
            )
        return worker

    async def _wait_exit(self, worker: _Worker) -> int | None:
        try:
            async with asyncio.timeout(REAP_WAIT_SECONDS):
                return await worker.proc.wait()
        except TimeoutError:
            worker.kill()
            return await worker.proc.wait()

    async def _drain_logs(self, worker: _Worker) -> None:
        """Wait (briefly) until everything a dead worker wrote is logged."""
        task = worker.log_task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=LOG_FLUSH_WAIT_SECONDS)

    async def _reap(self, worker: _Worker) -> None:
        """Wait for a killed worker to exit and its log stream to end."""
        await worker.proc.wait()
        task = worker.log_task
        if task is not None and not task.done():
            # A process the worker started may hold stderr open after it died.
            done, _ = await asyncio.wait({task}, timeout=REAP_WAIT_SECONDS)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if worker.proc.stdin is not None:
            worker.proc.stdin.close()
        self._unreaped.discard(worker)

    async def _pump_logs(self, worker: _Worker) -> None:
        stream = worker.proc.stderr
        assert stream is not None
        buffer = bytearray()
        try:
            while chunk := await stream.read(65536):
                buffer += chunk
                while True:
                    end = buffer.find(b"\n")
                    if end < 0:
                        if len(buffer) < MAX_LOG_LINE_BYTES:
                            break
                        end = MAX_LOG_LINE_BYTES
                        line = bytes(buffer[:end])
                        del buffer[:end]
                    else:
                        line = bytes(buffer[:end])
                        del buffer[: end + 1]
                    self._log_line(worker, line)
            if buffer:
                self._log_line(worker, bytes(buffer))
        finally:
            worker.all_logs_done()

    def _log_line(self, worker: _Worker, raw: bytes) -> None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r")
        if END_MARKER in text:
            text, _, rest = text.partition(END_MARKER)
            with contextlib.suppress(ValueError):
                worker.end_of_logs(int(rest.strip()))
            if not text:
                return
        self._emit(text)

    def _emit(self, text: str) -> None:
        try:
            self._log(self._prefix + text)
        except Exception as exc:  # a broken log sink must not stop the reader
            sys.stderr.write(f"{self._prefix}log callback failed ({exc!r}): {text}\n")

    # -- one invocation --------------------------------------------------------

    async def _run(self, worker: _Worker, event_json: str) -> tuple[InvokeResult, bool]:
        """Invoke on ``worker``; the result and whether the worker may be reused."""
        if worker.init_error is not None:
            error_type, message = worker.init_error
            return InvokeResult(
                ok=False, error_type=error_type, error_message=message, duration_ms=worker.init_ms
            ), False
        proc = worker.proc
        assert proc.stdin is not None and proc.stdout is not None
        self._next_id += 1
        request_id = self._next_id
        aws_request_id = str(uuid.uuid4())
        timeout = self.spec.timeout
        deadline_ms = int(time.time() * 1000 + timeout * 1000)
        request = (
            f'{{"id":{request_id},"request_id":"{aws_request_id}","deadline_ms":{deadline_ms},'
            f'"arn":{json.dumps(self.spec.arn)},"event":{event_json}}}\n'
        )
        logs_ended = asyncio.Event()
        if worker.logs_done:
            logs_ended.set()
        else:
            worker.log_ended[request_id] = logs_ended
        started = time.perf_counter()
        line = b""
        try:
            async with asyncio.timeout(timeout + TIMEOUT_GRACE_SECONDS):
                proc.stdin.write(request.encode())
                await proc.stdin.drain()
                line = await proc.stdout.readline()
        except TimeoutError:
            worker.kill()
            duration_ms = (time.perf_counter() - started) * 1000
            await self._wait_exit(worker)
            await self._drain_logs(worker)
            message = f"Task timed out after {timeout:.2f} seconds"
            self._emit(f"{_now()} {aws_request_id} {message}")
            return InvokeResult(
                ok=False,
                error_type="Sandbox.Timedout",
                error_message=message,
                duration_ms=duration_ms,
            ), False
        except (BrokenPipeError, ConnectionResetError):
            line = b""  # it died before reading the request
        except ValueError as exc:  # a line over PROTOCOL_LIMIT_BYTES
            worker.kill()
            return self._protocol_error(worker, started, f"unreadable answer: {exc}"), False
        duration_ms = (time.perf_counter() - started) * 1000
        if not line:
            returncode = await self._wait_exit(worker)
            await self._drain_logs(worker)
            message = (
                f"RequestId: {aws_request_id} Error: Runtime exited with error: "
                f"{exit_status(returncode)}"
            )
            self._emit(message)
            return InvokeResult(
                ok=False,
                error_type="Runtime.ExitError",
                error_message=message,
                duration_ms=duration_ms,
            ), False
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            worker.kill()
            return self._protocol_error(worker, started, f"unexpected answer {line[:200]!r}"), False
        # The worker wrote its end-of-logs marker before answering: wait for the
        # reader to get there, so this invocation's lines are logged first.
        if not logs_ended.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(LOG_FLUSH_WAIT_SECONDS):
                    await logs_ended.wait()
            worker.log_ended.pop(request_id, None)
        if answer.get("ok") is True:
            return InvokeResult(
                ok=True, payload=answer.get("result"), duration_ms=duration_ms
            ), True
        return InvokeResult(
            ok=False,
            error_type=str(answer.get("errorType") or "Runtime.Unknown"),
            error_message=str(answer.get("errorMessage") or ""),
            duration_ms=duration_ms,
        ), True

    def _protocol_error(self, worker: _Worker, started: float, detail: str) -> InvokeResult:
        message = f"worker {worker.pid} broke the protocol: {detail}"
        self._emit(message)
        return InvokeResult(
            ok=False,
            error_type="Runtime.InvalidResponse",
            error_message=message,
            duration_ms=(time.perf_counter() - started) * 1000,
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
