"""A local HTTP server that answers like the API Gateway Management API.

``POST/GET/DELETE /{stage}/@connections/{id}``; 410 ``GoneException`` for ids
it does not know; an injected latency per request; scripted failures per id
(e.g. 429 then 500 then success) to exercise retries. Error responses carry
the ``x-amzn-ErrorType`` header boto3 maps to its exceptions.

Control endpoints (for a server in another process):
``POST /_control/connections`` (JSON list of ids to register),
``GET /_control/stats`` (counts).

Run in a thread (tests: ``FakeManagementApi().start()``) or as a process
(benchmarks: ``python -m bench.management_api --port N --latency-ms 20``).
It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import unquote

ERRORS = {
    403: ("ForbiddenException", "Forbidden"),
    410: ("GoneException", "Gone"),
    413: ("PayloadTooLargeException", "Payload Too Large"),
    429: ("LimitExceededException", "Too Many Requests"),
    500: ("InternalServerErrorException", "Internal Server Error"),
    502: ("BadGatewayException", "Bad Gateway"),
    503: ("ServiceUnavailableException", "Service Unavailable"),
}


@dataclass
class State:
    stage: str = "dev"
    latency: float = 0.0
    known: set[str] = field(default_factory=set)
    received: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    scripted: dict[str, list[int]] = field(default_factory=dict)
    """connection id -> statuses to answer (in order) before the normal answer."""
    arrived: int = 0
    """requests read off the wire (counted before the latency; answered or not)."""
    requests: int = 0
    posts: int = 0
    unsigned: int = 0
    first_post: float | None = None
    last_post: float | None = None
    last_headers: dict[str, str] = field(default_factory=dict)
    last_target: str = ""
    open_protocols: set[_Protocol] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _response(status: int, body: bytes = b"", extra: dict[str, str] | None = None) -> bytes:
    reason = ERRORS.get(status, ("", "OK" if status < 300 else "Error"))[1]
    headers = {"Content-Length": str(len(body)), "Content-Type": "application/json"}
    headers.update(extra or {})
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def _error(status: int, message: str) -> bytes:
    code = ERRORS.get(status, ("InternalServerErrorException", ""))[0]
    body = json.dumps({"message": message}).encode()
    return _response(status, body, {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/"})


class _Protocol(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[str, str, dict[str, str], bytes]] = asyncio.Queue()
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.open_protocols.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.worker.cancel()
        self.state.open_protocols.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.state.arrived += 1
            self.queue.put_nowait((method, target, headers, body))

    async def _serve(self) -> None:
        while True:
            method, target, headers, body = await self.queue.get()
            reply = await self._answer(method, target, headers, body)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(reply)

    async def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> bytes:
        state = self.state
        if target.startswith("/_control/"):
            return self._control(method, target, body)
        prefix = f"/{state.stage}/@connections/"
        if not target.startswith(prefix):
            return _error(403, "Forbidden")
        if state.latency:
            await asyncio.sleep(state.latency)
        connection_id = unquote(target[len(prefix) :])
        with state.lock:
            state.requests += 1
            state.last_headers = headers
            state.last_target = target
            if not headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
                state.unsigned += 1
            script = state.scripted.get(connection_id)
            if script:
                return _error(script.pop(0), "scripted failure")
            if connection_id not in state.known:
                return _error(410, "Gone")
            if method == "POST":
                now = time.monotonic()
                state.posts += 1
                state.first_post = state.first_post or now
                state.last_post = now
                state.received[connection_id].append(body)
                return _response(200)
            if method == "GET":
                info = {
                    "connectedAt": "2026-01-01T00:00:00.000Z",
                    "identity": {"sourceIp": "127.0.0.1"},
                }
                return _response(200, json.dumps(info).encode())
            if method == "DELETE":
                state.known.discard(connection_id)
                return _response(204)
        return _error(403, "Forbidden")

    def _control(self, method: str, target: str, body: bytes) -> bytes:
        state = self.state
        with state.lock:
            if method == "POST" and target == "/_control/connections":
                state.known.update(json.loads(body))
                return _response(200, json.dumps({"known": len(state.known)}).encode())
            if method == "GET" and target == "/_control/stats":
                stats = {
                    "requests": state.requests,
                    "posts": state.posts,
                    "unsigned": state.unsigned,
                }
                return _response(200, json.dumps(stats).encode())
        return _error(403, "Forbidden")


class FakeManagementApi:
    """The server in a background thread with its own event loop (for tests)."""

    def __init__(self, stage: str = "dev", latency: float = 0.0) -> None:
        self.state = State(stage=stage, latency=latency)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.state.stage}"

    def start(self) -> FakeManagementApi:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._open(), self.loop)
        future.result(timeout=10)
        return self

    async def _open(self) -> None:
        self._server = await self.loop.create_server(lambda: _Protocol(self.state), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            workers = []
            for protocol in list(self.state.open_protocols):
                if protocol.transport is not None:
                    protocol.transport.close()
                protocol.worker.cancel()
                workers.append(protocol.worker)
            await asyncio.gather(*workers, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def drop_connections(self) -> None:
        """Close every client connection from the server side (an idle-timeout, say)."""

        def close() -> None:
            for protocol in list(self.state.open_protocols):
                if protocol.transport is not None:
                    protocol.transport.close()

        self.loop.call_soon_threadsafe(close)

    def connect(self, *connection_ids: str) -> None:
        with self.state.lock:
            self.state.known.update(connection_ids)

    def script(self, connection_id: str, *statuses: int) -> None:
        with self.state.lock:
            self.state.scripted[connection_id] = list(statuses)

    def messages(self, connection_id: str) -> list[dict[str, object]]:
        with self.state.lock:
            return [json.loads(body) for body in self.state.received.get(connection_id, [])]


async def _serve_forever(port: int, stage: str, latency: float) -> None:
    state = State(stage=stage, latency=latency)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(state), "127.0.0.1", port, backlog=1024)
    print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}/{stage}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port, args.stage, args.latency_ms / 1000))


if __name__ == "__main__":
    main()
