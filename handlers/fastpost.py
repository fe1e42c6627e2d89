"""Cheaper ``@connections`` posts: asyncio over kept-alive HTTP/1.1, SigV4 by ``handlers.sigv4``.

``handlers.management.ManagementApi`` driven by ``delivery.fan_out``'s thread pool
costs ~600 µs of CPU per post: ``http.client`` (an ``email`` header parser per
response), botocore's ``SigV4Auth`` with its request objects and four key HMACs
per request, and 64 threads contending for the GIL. Here one event loop, in a
daemon thread per process (so its connections survive from one Lambda
invocation to the next, like the module-level clients), drives up to
``concurrency`` requests at a time over a pool of kept-alive connections, with a
minimal HTTP/1.1 response parser and the signing key derived once a day.

* ``FastManagementApi(endpoint, region=, credentials=, timeout=)``: built like
  ``ManagementApi``; its ``post_to_connection`` / ``get_connection`` /
  ``delete_connection`` are blocking calls returning ``management.Response``
  (so it is a ``delivery.Poster``), and it holds the connection pool.
* ``fan_out(api, deliveries, *, concurrency, max_attempts, deadline, on_stale,
  sleep, clock)``: ``delivery.fan_out``'s contract and report, each post a
  coroutine on the loop instead of a task in a thread pool; ``on_stale`` (it
  calls DynamoDB) and a blocking ``sleep`` run in a small thread pool, off the loop.

Error codes come from ``management.error_code``; a kept-alive connection the
server closed before answering gets one more try on a fresh connection (nothing
was delivered), as in ``ManagementApi``; any other network failure or a timeout
is ``Response(0, "ConnectionError")`` and not resent here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

from handlers.delivery import FanoutReport, backoff_delay
from handlers.management import CONNECTION_ERROR, Response, error_code
from handlers.sigv4 import Signer

MAX_HEAD_BYTES = 64 * 1024
FEED_BATCH = 32
"""Deliveries handed from the caller's thread to the loop at a time."""
BLOCKING_WORKERS = 16
"""Threads for ``on_stale`` calls (DynamoDB) and blocking ``sleep`` callables."""

_loop_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid = 0
_blocking: concurrent.futures.ThreadPoolExecutor | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop, running in a daemon thread (started on first use)."""
    global _loop, _loop_pid, _blocking
    loop = _loop
    if loop is not None and _loop_pid == os.getpid() and loop.is_running():
        return loop
    with _loop_lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            fresh = asyncio.new_event_loop()
            started = threading.Event()
            fresh.call_soon(started.set)
            thread = threading.Thread(target=fresh.run_forever, name="fastpost", daemon=True)
            thread.start()
            started.wait()
            _loop, _loop_pid = fresh, os.getpid()
            _blocking = None  # a forked child does not inherit the parent's threads
        return _loop


def _blocking_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _blocking
    with _loop_lock:
        if _blocking is None:
            _blocking = concurrent.futures.ThreadPoolExecutor(
                max_workers=BLOCKING_WORKERS, thread_name_prefix="fastpost-blocking"
            )
        return _blocking


class _Headers(dict[str, str]):
    """Response headers by lower-case name; ``get`` is case-insensitive (``error_code``)."""

    def get(self, name: str, default: Any = None) -> Any:
        return super().get(name.lower(), default)


class _Lost(ConnectionError):
    """The connection closed (or was reset) before any byte of the answer arrived."""


class _BadResponse(ConnectionError):
    """Not a parseable HTTP/1.x response."""


Reply = tuple[int, _Headers, bytes, bool]
"""status, headers, body, whether the connection may be reused."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, its response parsed as it arrives."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[Reply] | None = None
        self.buffer = bytearray()
        self.got_bytes = False
        self.head_only = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: _Headers | None = None
        self.keep_alive = True
        self.length = -1
        """Body bytes still expected; -1 chunked, -2 until the connection closes."""
        self.body = bytearray()
        self.chunk = -1
        """In a chunked body: bytes left in the current chunk; -1 reading a size line;
        -3 reading trailers."""

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        self.waiter = None
        if waiter is None or waiter.done():
            return
        if self.headers is not None and self.length == -2:  # body delimited by the close
            waiter.set_result((self.status, self.headers, bytes(self.body), False))
        elif not self.got_bytes:
            waiter.set_exception(_Lost(str(exc or "closed by the server")))
        else:
            waiter.set_exception(ConnectionError(f"closed mid-response: {exc}"))

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():  # nothing asked: a stray answer, not reusable
            self.abort()
            return
        self.got_bytes = True
        self.buffer += data
        try:
            reply = self._parse()
        except (ValueError, IndexError) as error:
            self.waiter = None
            waiter.set_exception(_BadResponse(str(error)))
            self.abort()
            return
        if reply is not None:
            self.waiter = None
            if self.buffer:  # bytes past the response: nothing to pair them with
                reply = (reply[0], reply[1], reply[2], False)
            waiter.set_result(reply)

    # requests

    def send(self, request: bytes, head_only: bool = False) -> asyncio.Future[Reply]:
        assert self.transport is not None and self.waiter is None
        waiter: asyncio.Future[Reply] = self.loop.create_future()
        self.waiter = waiter
        self.got_bytes = False
        self.head_only = head_only
        self.buffer.clear()
        self._reset()
        self.transport.write(request)
        return waiter

    def time_out(self) -> None:
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(TimeoutError("no answer in time"))
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # parsing

    def _parse(self) -> Reply | None:
        buffer = self.buffer
        while self.headers is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ValueError("response head too long")
                return None
            lines = buffer[:end].decode("latin-1").split("\r\n")
            del buffer[: end + 4]
            version, status_text = lines[0].split(" ", 2)[:2]
            if not version.startswith("HTTP/1."):
                raise ValueError(f"not an HTTP/1.x status line: {lines[0]!r}")
            status = int(status_text)
            if 100 <= status < 200:  # 100 Continue and friends: the answer follows
                continue
            headers = _Headers()
            for line in lines[1:]:
                name, _, value = line.partition(":")
                key = name.strip().lower()
                value = value.strip()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            self.status, self.headers = status, headers
            connection = headers.get("connection", "").lower()
            if version == "HTTP/1.0":
                self.keep_alive = "keep-alive" in connection
            else:
                self.keep_alive = "close" not in connection
            if self.head_only or status in (204, 304):
                self.length = 0
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                self.length = -1
            elif "content-length" in headers:
                self.length = int(headers["content-length"])
                if self.length < 0:
                    raise ValueError("negative Content-Length")
            else:
                self.length = -2
                self.keep_alive = False
        if self.length >= 0:
            if len(buffer) < self.length:
                return None
            body = bytes(buffer[: self.length])
            del buffer[: self.length]
            return (self.status, self.headers, body, self.keep_alive)
        if self.length == -2:
            self.body += buffer
            buffer.clear()
            return None
        return self._parse_chunked()

    def _parse_chunked(self) -> Reply | None:
        buffer = self.buffer
        assert self.headers is not None
        while True:
            if self.chunk == -3:  # trailers: header lines up to an empty line
                end = buffer.find(b"\r\n")
                if end < 0:
                    return None
                del buffer[: end + 2]
                if end == 0:
                    return (self.status, self.headers, bytes(self.body), self.keep_alive)
                continue
            if self.chunk == -1:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_HEAD_BYTES:
                        raise ValueError("chunk size line too long")
                    return None
                size = int(bytes(buffer[:end]).split(b";", 1)[0].strip(), 16)
                del buffer[: end + 2]
                if size < 0:
                    raise ValueError("negative chunk size")
                self.chunk = -3 if size == 0 else size
                continue
            if len(buffer) < self.chunk + 2:
                return None
            if buffer[self.chunk : self.chunk + 2] != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
            self.body += buffer[: self.chunk]
            del buffer[: self.chunk + 2]
            self.chunk = -1


class FastManagementApi:
    """``{endpoint}/@connections/{id}`` over this process's event loop; a ``delivery.Poster``.

    Built like ``ManagementApi``; safe to share between threads (every request runs
    on the loop). ``max_idle`` bounds the kept-alive connections held between posts.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        region: str,
        credentials: Callable[[], Any] | None,
        timeout: float = 10.0,
        max_idle: int = 256,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"management endpoint must be an http(s) URL, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self._secure = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._secure else 80)
        self._netloc = parts.netloc
        self._base_path = parts.path.rstrip("/")
        self._timeout = timeout
        self._max_idle = max_idle
        self._ssl = (ssl_context or ssl.create_default_context()) if self._secure else None
        self._signer = None if credentials is None else Signer(credentials, region)
        self._idle: list[_Connection] = []
        self._loop_pid = 0
        self.opened = 0
        """Connections opened so far (kept-alive reuse shows as few)."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = background_loop()
        if self._loop_pid != os.getpid():  # new process (fork): the old pool is not ours
            self._idle = []
            self._loop_pid = os.getpid()
        return loop

    def _encode(self, method: str, path: str, body: bytes) -> bytes:
        content_type = "application/json" if body else None
        if self._signer is not None:
            headers = self._signer.headers(
                method, self._netloc, path, body, content_type=content_type
            )
        else:
            headers = [("Host", self._netloc)]
            if content_type is not None:
                headers.append(("Content-Type", content_type))
        lines = [f"{method} {path} HTTP/1.1"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1") + body

    async def _open(self, wait: float) -> _Connection:
        loop = asyncio.get_running_loop()
        _, connection = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Connection(loop),
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl is not None else None,
            ),
            wait,
        )
        self.opened += 1
        return connection

    async def arequest(
        self, method: str, connection_id: str, body: bytes = b"", timeout: float | None = None
    ) -> Response:
        """One signed request, on the loop; ``timeout`` (seconds) caps its wait."""
        loop = asyncio.get_running_loop()
        path = f"{self._base_path}/@connections/{quote(connection_id, safe='')}"
        request = self._encode(method, path, body)
        wait = self._timeout if timeout is None else max(0.05, min(timeout, self._timeout))
        give_up = loop.time() + wait
        for attempt in (1, 2):
            connection = None
            while self._idle:
                candidate = self._idle.pop()
                if not candidate.closed:
                    connection = candidate
                    break
            reused = connection is not None
            try:
                if connection is None:
                    connection = await self._open(give_up - loop.time())
                reply = connection.send(request, head_only=method == "HEAD")
                timer = loop.call_at(give_up, connection.time_out)
                try:
                    status, headers, payload, keep_alive = await reply
                finally:
                    timer.cancel()
            except _Lost:
                # The server closed a kept-alive connection before reading the request:
                # nothing was delivered, so one more try on a fresh connection is safe.
                if connection is not None:
                    connection.abort()
                if reused and attempt == 1:
                    continue
                return Response(0, CONNECTION_ERROR)
            except (OSError, TimeoutError, ssl.SSLError):  # refused, reset mid-reply, timeout
                if connection is not None:
                    connection.abort()
                return Response(0, CONNECTION_ERROR)
            if keep_alive and not connection.closed and len(self._idle) < self._max_idle:
                self._idle.append(connection)
            else:
                connection.close()
            return Response(status, error_code(status, headers, payload), payload)
        raise AssertionError("unreachable")

    def request(
        self, method: str, connection_id: str, body: bytes = b"", timeout: float | None = None
    ) -> Response:
        """``arequest`` from any thread but the loop's own."""
        loop = self.loop
        _not_on(loop)
        future = asyncio.run_coroutine_threadsafe(
            self.arequest(method, connection_id, body, timeout), loop
        )
        return future.result()

    def post_to_connection(
        self, connection_id: str, data: bytes, timeout: float | None = None
    ) -> Response:
        return self.request("POST", connection_id, data, timeout)

    def get_connection(self, connection_id: str) -> Response:
        return self.request("GET", connection_id)

    def delete_connection(self, connection_id: str) -> Response:
        return self.request("DELETE", connection_id)

    def close(self) -> None:
        """Close the kept-alive connections (new requests open new ones)."""
        loop = self.loop

        def close_idle() -> None:
            idle, self._idle = self._idle, []
            for connection in idle:
                connection.close()

        if _on(loop):
            close_idle()
        else:
            asyncio.run_coroutine_threadsafe(_call(close_idle), loop).result()


async def _call(function: Callable[[], None]) -> None:
    function()


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _not_on(loop: asyncio.AbstractEventLoop) -> None:
    if _on(loop):
        raise RuntimeError("a blocking fastpost call from its own event loop would wait forever")


class _Job:
    """One ``fan_out`` call on the loop: at most ``concurrency`` workers draining a queue."""

    def __init__(
        self,
        api: FastManagementApi,
        *,
        concurrency: int,
        max_attempts: int,
        deadline: float,
        on_stale: Callable[[str], Any],
        sleep: Callable[[float], Any],
        clock: Callable[[], float],
    ) -> None:
        self.api = api
        self.concurrency = max(1, concurrency)
        self.max_attempts = max_attempts
        self.deadline = deadline
        self.on_stale = on_stale
        self.sleep = sleep
        self.clock = clock
        self.report = FanoutReport()
        self.done: concurrent.futures.Future[FanoutReport] = concurrent.futures.Future()
        self.queue: deque[tuple[int, str, bytes]] = deque()
        self.active = 0
        self.fed_all = False
        self.errors: list[tuple[int, BaseException]] = []
        self.workers: set[asyncio.Task[None]] = set()

    def feed(self, items: list[tuple[int, str, bytes]], last: bool) -> None:
        self.queue.extend(items)
        self.fed_all = self.fed_all or last
        loop = asyncio.get_running_loop()
        while self.active < self.concurrency and len(self.queue) > self.active:
            self.active += 1
            worker = loop.create_task(self._work())
            self.workers.add(worker)
            worker.add_done_callback(self.workers.discard)
        self._finish_if_done()

    def _finish_if_done(self) -> None:
        if not (self.fed_all and self.active == 0 and not self.queue) or self.done.done():
            return
        if self.errors:  # like delivery.fan_out: the first one in delivery order
            self.done.set_exception(min(self.errors, key=lambda pair: pair[0])[1])
        else:
            self.done.set_result(self.report)

    async def _work(self) -> None:
        try:
            while self.queue:
                index, connection_id, data = self.queue.popleft()
                try:
                    await self._deliver(connection_id, data)
                except Exception as error:
                    self.errors.append((index, error))
        finally:
            self.active -= 1
            self._finish_if_done()

    async def _pause(self, delay: float) -> None:
        if self.sleep is time.sleep:
            await asyncio.sleep(delay)
        elif asyncio.iscoroutinefunction(self.sleep):
            await self.sleep(delay)
        else:  # a blocking callable (a test's fake clock, say): off the loop
            await asyncio.get_running_loop().run_in_executor(_blocking_pool(), self.sleep, delay)

    async def _deliver(self, connection_id: str, data: bytes) -> None:
        report, clock, deadline = self.report, self.clock, self.deadline
        attempt = 1
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                code = "DeadlineExceeded"
                break
            response = await self.api.arequest("POST", connection_id, data, remaining)
            if response.ok:
                report.delivered += 1
                return
            if response.gone:
                loop = asyncio.get_running_loop()
                removed = await loop.run_in_executor(_blocking_pool(), self.on_stale, connection_id)
                report.stale.append(connection_id)
                report.stale_removed += bool(removed)
                return
            code = response.error_code or f"HTTP{response.status}"
            if not response.retryable or attempt >= self.max_attempts:
                break
            delay = backoff_delay(attempt)
            if clock() + delay >= deadline:
                code = f"{code} (deadline)"
                break
            report.retried += 1
            await self._pause(delay)
            attempt += 1
        report.failed[connection_id] = code


def fan_out(
    api: FastManagementApi,
    deliveries: Iterable[tuple[str, bytes]],
    *,
    concurrency: int,
    max_attempts: int,
    deadline: float,
    on_stale: Callable[[str], bool],
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FanoutReport:
    """``delivery.fan_out`` on the event loop: post each (connection id, payload) pair.

    ``deadline`` is a ``clock()`` value; ``deliveries`` may be lazy (it is consumed
    in the calling thread, in batches, while earlier posts are in flight); at most
    ``concurrency`` requests are in flight. ``on_stale`` and a blocking ``sleep``
    run in a thread pool (``time.sleep`` becomes ``asyncio.sleep``). Blocks until
    every post has an outcome; re-raises the first unexpected exception.
    """
    loop = api.loop
    _not_on(loop)
    job = _Job(
        api,
        concurrency=concurrency,
        max_attempts=max_attempts,
        deadline=deadline,
        on_stale=on_stale,
        sleep=sleep,
        clock=clock,
    )
    batch: list[tuple[int, str, bytes]] = []
    try:
        for index, (connection_id, data) in enumerate(deliveries):
            batch.append((index, connection_id, data))
            if len(batch) >= FEED_BATCH:
                loop.call_soon_threadsafe(job.feed, batch, False)
                batch = []
    finally:
        loop.call_soon_threadsafe(job.feed, batch, True)
    return job.done.result()
