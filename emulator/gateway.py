"""The API Gateway of the emulator: WebSocket clients in, ``@connections`` out.

Serves ``ws://HOST:PORT/STAGE`` and ``http://HOST:PORT/STAGE/@connections/{id}``
the way API Gateway does for the declared API: ``$connect`` runs the declared
authorizer (401 without a declared identity source, 403 on Deny) and the connect
function (a non-2xx answer refuses the handshake; a ``Sec-WebSocket-Protocol``
header in its answer becomes the handshake's, as API Gateway passes it on);
messages are routed by the
declared route selection expression; ``$disconnect`` runs on every close;
``@connections`` POST/GET/DELETE answer like the Management API, with the
error headers boto3 maps to its exceptions.

A request that is not a WebSocket upgrade is refused (426) before anything
runs, so it can leave no connection record; a handshake that fails after
``$connect`` succeeded still runs ``$disconnect``, as API Gateway does.

Nothing waits for a client to read. Every message to a socket (posts, route
replies, closes) goes through that connection's outbox, which one sender task
per connection writes out; a post only queues. Once a connection has more than
``max_send_buffer_bytes`` unsent (its outbox plus the transport's write
buffer), the client is not reading: the gateway aborts that connection and the
post answers 410 ``GoneException``, instead of stalling the poster. A close
(DELETE, idle or maximum duration, shutdown) that does not finish within
``close_timeout`` seconds aborts the socket too.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import os
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from emulator.issuer import DISCOVERY_PATH, JWKS_PATH, LocalIssuer
from emulator.model import Model, RouteModel
from emulator.program import ACCOUNT, REGION
from emulator.workers import InvokeResult, PoolClosedError

MAX_MESSAGE_BYTES = 128 * 1024
"""API Gateway's message limit: a message of exactly this size is accepted, one byte more is not."""
MAX_SEND_BUFFER_BYTES = 4 * 1024 * 1024
"""Bytes one connection may have waiting for its client to read before it is closed."""
CLOSE_TIMEOUT = 5.0


@dataclass
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    idle_timeout: float = 600.0
    """Seconds without traffic before the gateway closes a connection (API Gateway: 10 min)."""
    max_connection: float = 7200.0
    """Seconds after which any connection is closed (API Gateway: 2 h)."""
    max_message_bytes: int = MAX_MESSAGE_BYTES
    """Largest client message and @connections POST body, in bytes (API Gateway: 128 KB)."""
    max_send_buffer_bytes: int = MAX_SEND_BUFFER_BYTES
    """Unsent bytes (outbox + transport buffer) past which a connection whose client does not
    read is closed (then 410 GoneException) rather than waited for. Not an AWS number."""
    close_timeout: float = CLOSE_TIMEOUT
    """Seconds a close may take (pending messages, close frame, the client's answer) before the
    socket is aborted."""


Invoke = Callable[[str, Any], Awaitable[InvokeResult]]


@dataclass(frozen=True)
class CloseRequest:
    """An outbox entry: close the socket once the messages queued before it are written."""

    code: int
    message: bytes


Outgoing = str | bytes | CloseRequest


@dataclass
class Connection:
    id: str
    ws: web.WebSocketResponse
    source_ip: str
    user_agent: str
    authorizer: dict[str, Any] | None
    connected_at: float = field(default_factory=time.time)
    last_active_at: float = field(default_factory=time.time)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the socket is open, or once the handshake failed (then ``refused``)."""
    refused: bool = False
    closed_by: str = "client"
    transport: asyncio.BaseTransport | None = None
    outbox: deque[tuple[Outgoing, int]] = field(default_factory=deque)
    """Messages (with their size in bytes) the sender task has yet to write, in order."""
    outbox_bytes: int = 0
    mail: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the outbox gets an entry (or the connection is aborted)."""
    closing: bool = False
    """A close was requested or the socket was aborted: posts answer 410 from now on."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the socket is closed and the connection forgotten."""

    def unsent_bytes(self) -> int:
        """What the client has yet to read: the outbox plus the transport's write buffer."""
        buffered = 0
        if isinstance(self.transport, asyncio.WriteTransport) and not self.transport.is_closing():
            buffered = self.transport.get_write_buffer_size()
        return self.outbox_bytes + buffered


@dataclass
class GatewayState:
    model: Model
    invoke: Invoke
    settings: GatewaySettings
    log: Callable[[str], None]
    connections: dict[str, Connection] = field(default_factory=dict)
    post_faults: dict[str, list[int]] = field(default_factory=dict)
    """connection id -> statuses @connections POST answers with (a test hook)."""
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coroutine: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)


STATE: web.AppKey[GatewayState] = web.AppKey("gateway", GatewayState)


def new_connection_id() -> str:
    """An id shaped like API Gateway's (``L0SM9cOFvHcCIhw=``)."""
    return base64.b64encode(os.urandom(11)).decode("ascii")


def iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message},
        status=status,
        headers={
            "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.gone/"
        },
    )


def select_route(expression: str, body: str, routes: dict[str, RouteModel]) -> str:
    """The route key a message selects (``$default`` when nothing matches).

    A body that is not JSON, including JSON nested too deep for the parser
    (``RecursionError``), selects ``$default``, whose handler answers it.
    """
    prefix = "$request.body."
    if expression.startswith(prefix):
        try:
            value: Any = json.loads(body)
        except (ValueError, RecursionError):
            return "$default"
        for part in expression[len(prefix) :].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value in routes and not value.startswith("$"):
            return value
    return "$default"


def handshake_refusal(request: web.BaseRequest) -> web.Response | None:
    """The answer to a request that is not a valid WebSocket handshake (None when it is one).

    Checked before the authorizer and ``$connect`` run, so a plain HTTP GET can neither
    store a connection record nor leave one behind.
    """
    if "websocket" not in request.headers.get("Upgrade", "").lower():
        return web.json_response(
            {"message": "Upgrade Required"}, status=426, headers={"Upgrade": "websocket"}
        )
    if not web.WebSocketResponse().can_prepare(request).ok:
        return web.json_response({"message": "Bad Request"}, status=400)
    return None


def identity_value(source: str, headers: dict[str, str], query: dict[str, str]) -> str | None:
    """The value of one identity source such as ``route.request.querystring.token``."""
    if source.startswith("route.request.querystring."):
        return query.get(source.removeprefix("route.request.querystring.")) or None
    if source.startswith("route.request.header."):
        wanted = source.removeprefix("route.request.header.").lower()
        for name, value in headers.items():
            if name.lower() == wanted:
                return value or None
    return None


def allows(answer: Any, method_arn: str) -> tuple[bool, str]:
    """Whether an authorizer's policy allows ``method_arn`` (explicit Deny wins)."""
    if not isinstance(answer, dict):
        return False, "authorizer returned no policy"
    statements = (answer.get("policyDocument") or {}).get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for statement in statements:
        resources = statement.get("Resource") or []
        resources = [resources] if isinstance(resources, str) else resources
        actions = statement.get("Action") or []
        actions = [actions] if isinstance(actions, str) else actions
        if not any(fnmatch.fnmatchcase("execute-api:invoke", str(a).lower()) for a in actions):
            continue
        if any(fnmatch.fnmatchcase(method_arn, r) for r in resources):
            if statement.get("Effect") == "Deny":
                return False, "denied"
            if statement.get("Effect") == "Allow":
                allowed = True
    return allowed, "allowed" if allowed else "no statement allows the route"


class Gateway:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    # -- events ------------------------------------------------------------------------------

    def _request_context(
        self, connection_id: str, route_key: str, event_type: str, request: web.BaseRequest
    ) -> dict[str, Any]:
        now = time.time()
        model = self.state.model
        return {
            "routeKey": route_key,
            "eventType": event_type,
            "connectionId": connection_id,
            "domainName": self.state.settings.host,
            "stage": model.stage,
            "apiId": model.api_id,
            "requestId": uuid.uuid4().hex[:16],
            "extendedRequestId": uuid.uuid4().hex[:16],
            "messageDirection": "IN",
            "requestTimeEpoch": int(now * 1000),
            "requestTime": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "identity": {
                "sourceIp": request.remote or "127.0.0.1",
                "userAgent": request.headers.get("User-Agent", ""),
            },
        }

    def method_arn(self, route_key: str) -> str:
        model = self.state.model
        return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{model.api_id}/{model.stage}/{route_key}"

    # -- $connect, messages, $disconnect ---------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        model = state.model
        refusal = handshake_refusal(request)
        if refusal is not None:
            state.log(f"gateway: refused ({refusal.status}): not a WebSocket handshake")
            return refusal
        connection_id = new_connection_id()
        headers = dict(request.headers)
        query = dict(request.query)
        request_fields = {  # what both the authorizer's and the connect function's events carry
            "headers": headers,
            "multiValueHeaders": {k: request.headers.getall(k) for k in request.headers},
            "queryStringParameters": query or None,
            "multiValueQueryStringParameters": {k: request.query.getall(k) for k in query} or None,
        }
        context = self._request_context(connection_id, "$connect", "CONNECT", request)
        context["connectedAt"] = context["requestTimeEpoch"]
        route = model.routes.get("$connect")
        authorizer_context: dict[str, Any] | None = None
        if route is not None and route.authorizer is not None:
            values = [identity_value(s, headers, query) for s in route.authorizer.identity_sources]
            if any(value is None for value in values):
                state.log(
                    f"gateway: $connect refused (401): missing identity source {connection_id}"
                )
                return web.json_response({"message": "Unauthorized"}, status=401)
            started = time.monotonic()
            result = await state.invoke(
                route.authorizer.function,
                {
                    "type": "REQUEST",
                    "methodArn": self.method_arn("$connect"),
                    **request_fields,
                    "stageVariables": {},
                    "requestContext": context,
                },
            )
            if not result.ok:
                state.log(f"gateway: authorizer failed ({result.error_type}): 500")
                return web.json_response({"message": "Internal server error"}, status=500)
            ok, why = allows(result.payload, self.method_arn("$connect"))
            if not ok:
                state.log(f"gateway: $connect refused (403): {why}")
                return web.json_response({"message": "Forbidden"}, status=403)
            answer = result.payload
            authorizer_context = {
                **{k: v for k, v in (answer.get("context") or {}).items()},
                "principalId": answer.get("principalId"),
                "integrationLatency": int((time.monotonic() - started) * 1000),
            }
            context["authorizer"] = authorizer_context
        connection = Connection(
            id=connection_id,
            ws=self._socket(),
            source_ip=context["identity"]["sourceIp"],
            user_agent=context["identity"]["userAgent"],
            authorizer=authorizer_context,
            transport=request.transport,
        )
        state.connections[connection_id] = connection  # posts wait for `ready`
        connected = False  # whether $connect succeeded: from then on $disconnect must run
        try:
            if route is not None:
                result = await state.invoke(
                    route.function,
                    {**request_fields, "requestContext": context, "isBase64Encoded": False},
                )
                status = _status_of(result)
                if not 200 <= status < 300:
                    state.log(f"gateway: $connect refused ({status}) by the connect function")
                    self._abandon(connection)
                    return web.json_response({"message": "Forbidden"}, status=status)
                protocol = _response_header(result, "Sec-WebSocket-Protocol")
                if protocol is not None:  # the handshake answers with the function's choice
                    connection.ws = self._socket(protocol)
            connected = True
            await connection.ws.prepare(request)
        except BaseException as error:
            self._abandon(connection)
            hung_up = isinstance(error, ConnectionError)
            connection.closed_by = (
                "client (during the handshake)"
                if hung_up
                else f"handshake failed ({type(error).__name__})"
            )
            if connected:  # no connection record may outlive a failed handshake
                state.spawn(self._disconnect(connection, request))
            if hung_up:
                return connection.ws
            raise
        connection.last_active_at = time.time()  # the idle clock starts once the socket is open
        connection.ready.set()
        state.log(f"gateway: connected {connection_id}")
        watchdog = asyncio.ensure_future(self._watch(connection))
        sender = asyncio.ensure_future(self._send_loop(connection))
        try:
            await self._serve(connection, request)
        finally:
            watchdog.cancel()
            sender.cancel()
            connection.closing = True
            state.connections.pop(connection_id, None)
            connection.finished.set()
            state.spawn(self._disconnect(connection, request))
        return connection.ws

    def _socket(self, protocol: str | None = None) -> web.WebSocketResponse:
        """The server side of one WebSocket; ``protocol``: the subprotocol the handshake
        names (aiohttp names it only when the client offered it, as browsers require)."""
        # aiohttp refuses a message of exactly max_msg_size bytes; API Gateway accepts
        # 128 KB and refuses one byte more: hence the + 1
        return web.WebSocketResponse(
            max_msg_size=self.state.settings.max_message_bytes + 1,
            autoping=True,
            compress=False,
            protocols=(protocol,) if protocol else (),
        )

    def _abandon(self, connection: Connection) -> None:
        """A handshake that will not complete: forget it, and answer waiting posts with 410."""
        self.state.connections.pop(connection.id, None)
        connection.refused = True
        connection.ready.set()

    # -- sending: never wait for a client to read --------------------------------------------

    def _send(self, connection: Connection, data: str | bytes, size: int) -> bool:
        """Queue ``data`` (``size`` bytes) for the client; False when the connection is gone.

        A connection with more than ``max_send_buffer_bytes`` unsent is aborted here.
        """
        if connection.closing or connection.refused:
            return False
        limit = self.state.settings.max_send_buffer_bytes
        unsent = connection.unsent_bytes()
        if unsent + size > limit:
            self.state.log(
                f"gateway: closing {connection.id}: {unsent} bytes unsent and {size} more;"
                f" the client is not reading (send buffer limit {limit} bytes)"
            )
            self._abort(connection, "send buffer full (the client is not reading)")
            return False
        connection.outbox.append((data, size))
        connection.outbox_bytes += size
        connection.mail.set()
        return True

    def _request_close(self, connection: Connection, code: int, message: bytes, why: str) -> None:
        """Close after the queued messages, within ``close_timeout`` (then abort)."""
        if connection.closing:
            return
        connection.closing = True
        connection.closed_by = why
        connection.outbox.append((CloseRequest(code, message), 0))
        connection.mail.set()
        self.state.spawn(self._enforce_close(connection))

    async def _enforce_close(self, connection: Connection) -> None:
        timeout = self.state.settings.close_timeout
        try:
            await asyncio.wait_for(connection.finished.wait(), timeout)
        except TimeoutError:
            self.state.log(f"gateway: {connection.id} did not close within {timeout:g} s: aborted")
            self._abort(connection, connection.closed_by)

    def _abort(self, connection: Connection, why: str) -> None:
        """Drop the socket now, unsent data and all (its client gets no close frame)."""
        if not connection.closing:
            connection.closed_by = why
        connection.closing = True
        connection.outbox.clear()
        connection.outbox_bytes = 0
        connection.mail.set()
        if isinstance(connection.transport, asyncio.WriteTransport):
            connection.transport.abort()

    async def _send_loop(self, connection: Connection) -> None:
        """Write the outbox to the socket in order; only this task waits for the client."""
        ws = connection.ws
        try:
            while True:
                if not connection.outbox:
                    if connection.transport is None or connection.transport.is_closing():
                        return
                    connection.mail.clear()
                    await connection.mail.wait()
                    continue
                item, size = connection.outbox.popleft()
                connection.outbox_bytes -= size
                if isinstance(item, CloseRequest):
                    await ws.close(code=item.code, message=item.message)
                    return
                if isinstance(item, str):
                    await ws.send_str(item)
                else:
                    await ws.send_bytes(item)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the socket broke under a write: it is gone
            if not connection.closing:
                self.state.log(f"gateway: {connection.id}: send failed: {error!r}")
                self._abort(connection, "send failed")

    async def _serve(self, connection: Connection, request: web.Request) -> None:
        ws = connection.ws
        async for message in ws:
            connection.last_active_at = time.time()
            if message.type == WSMsgType.TEXT:
                await self._route(connection, request, message.data, is_base64=False)
            elif message.type == WSMsgType.BINARY:
                body = base64.b64encode(message.data).decode("ascii")
                await self._route(connection, request, body, is_base64=True)
            elif message.type == WSMsgType.ERROR:
                self.state.log(f"gateway: {connection.id} closed: {ws.exception()}")
                break

    async def _route(
        self, connection: Connection, request: web.Request, body: str, *, is_base64: bool
    ) -> None:
        model = self.state.model
        route_key = (
            "$default"
            if is_base64
            else select_route(model.route_selection_expression, body, model.routes)
        )
        route = model.routes.get(route_key)
        if route is None:
            return
        context = self._request_context(connection.id, route_key, "MESSAGE", request)
        context["messageId"] = uuid.uuid4().hex[:15]
        context["connectedAt"] = int(connection.connected_at * 1000)
        if connection.authorizer is not None:
            context["authorizer"] = connection.authorizer
        result = await self.state.invoke(
            route.function,
            {"requestContext": context, "body": body, "isBase64Encoded": is_base64},
        )
        if not result.ok:
            failure = json.dumps(
                {
                    "message": "Internal server error",
                    "connectionId": connection.id,
                    "requestId": context["requestId"],
                }
            )
            self._send(connection, failure, len(failure.encode("utf-8")))
            return
        if route.has_route_response and isinstance(result.payload, dict):
            reply = result.payload.get("body")
            if isinstance(reply, str):
                self._send(connection, reply, len(reply.encode("utf-8", "surrogatepass")))

    async def _watch(self, connection: Connection) -> None:
        settings = self.state.settings
        while True:
            now = time.time()
            idle_left = connection.last_active_at + settings.idle_timeout - now
            total_left = connection.connected_at + settings.max_connection - now
            if idle_left <= 0 or total_left <= 0:
                why = "idle timeout" if idle_left <= 0 else "maximum duration"
                self.state.log(f"gateway: closing {connection.id}: {why}")
                self._request_close(connection, 1001, b"Going away", why)
                return
            await asyncio.sleep(min(idle_left, total_left, 1.0))

    async def _disconnect(self, connection: Connection, request: web.Request) -> None:
        route = self.state.model.routes.get("$disconnect")
        self.state.log(f"gateway: disconnected {connection.id} ({connection.closed_by})")
        if route is None:
            return
        context = self._request_context(connection.id, "$disconnect", "DISCONNECT", request)
        context["connectedAt"] = int(connection.connected_at * 1000)
        context["disconnectStatusCode"] = connection.ws.close_code or 1005
        context["disconnectReason"] = connection.closed_by
        if connection.authorizer is not None:
            context["authorizer"] = connection.authorizer
        try:
            await self.state.invoke(
                route.function, {"requestContext": context, "isBase64Encoded": False}
            )
        except PoolClosedError:  # the emulator stopped while this client was still leaving
            self.state.log(f"gateway: $disconnect of {connection.id} not run: emulator stopping")

    # -- @connections --------------------------------------------------------------------------

    async def post(self, request: web.Request) -> web.Response:
        connection_id = request.match_info["connection_id"]
        connection = self.state.connections.get(connection_id)
        faults = self.state.post_faults.get(connection_id)
        if faults:
            status = faults[0] if len(faults) == 1 else faults.pop(0)
            return _error(status, _FAULT_CODES.get(status, "InternalServerErrorException"), "fault")
        if connection is None:
            return _error(410, "GoneException", "Gone")
        limit = self.state.settings.max_message_bytes
        if (request.content_length or 0) > limit:
            return _error(413, "PayloadTooLargeException", "Payload Too Large")
        data = await request.read()
        if len(data) > limit:
            return _error(413, "PayloadTooLargeException", "Payload Too Large")
        if not connection.ready.is_set():  # still in $connect: wait for its socket (bounded)
            try:
                await asyncio.wait_for(connection.ready.wait(), timeout=30)
            except TimeoutError:
                return _error(410, "GoneException", "Gone")
        payload: str | bytes
        try:
            payload = data.decode("utf-8")
        except UnicodeDecodeError:
            payload = data  # sent as a binary frame
        if connection.ws.closed or not self._send(connection, payload, len(data)):
            return _error(410, "GoneException", "Gone")
        connection.last_active_at = time.time()
        return web.Response(status=200)

    async def get(self, request: web.Request) -> web.Response:
        connection = self.state.connections.get(request.match_info["connection_id"])
        if connection is None or connection.closing:
            return _error(410, "GoneException", "Gone")
        return web.json_response(
            {
                "connectedAt": iso(connection.connected_at),
                "lastActiveAt": iso(connection.last_active_at),
                "identity": {"sourceIp": connection.source_ip, "userAgent": connection.user_agent},
            }
        )

    async def delete(self, request: web.Request) -> web.Response:
        connection = self.state.connections.get(request.match_info["connection_id"])
        if connection is None or not connection.ws.prepared or connection.closing:
            return _error(410, "GoneException", "Gone")  # none, still in $connect, or going
        # answered at once: the close follows the queued messages, bounded by close_timeout
        self._request_close(connection, 1000, b"", "server (@connections DELETE)")
        return web.Response(status=204)

    async def close_all(self, app: web.Application) -> None:
        """On shutdown: close every open socket (bounded), then let $disconnect calls finish."""
        state = self.state
        closing = []
        for connection in list(state.connections.values()):
            if not connection.ws.prepared:  # still in $connect: its handler ends on its own
                continue
            self._request_close(connection, 1001, b"Server shutdown", "emulator shutdown")
            closing.append(connection.finished.wait())
        if closing:
            await asyncio.wait(
                [asyncio.ensure_future(wait) for wait in closing],
                timeout=state.settings.close_timeout + 1,
            )
        if state.background:
            await asyncio.wait(set(state.background), timeout=5)


_FAULT_CODES = {
    403: "ForbiddenException",
    429: "LimitExceededException",
    500: "InternalServerErrorException",
    503: "ServiceUnavailableException",
}


def _response_header(result: InvokeResult, name: str) -> str | None:
    """A header of a function's answer (``{"statusCode": 200, "headers": {...}}``), any case."""
    headers = result.payload.get("headers") if isinstance(result.payload, dict) else None
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name.lower() and isinstance(value, str):
            return value
    return None


def _status_of(result: InvokeResult) -> int:
    if not result.ok:
        return 500
    payload = result.payload
    if isinstance(payload, dict) and "statusCode" in payload:
        try:
            return int(payload["statusCode"])
        except (TypeError, ValueError):
            return 500
    return 200


def create_app(
    model: Model,
    invoke: Invoke,
    settings: GatewaySettings,
    log: Callable[[str], None] = print,
    issuer: LocalIssuer | None = None,
) -> web.Application:
    state = GatewayState(model=model, invoke=invoke, settings=settings, log=log)
    gateway = Gateway(state)
    # large enough that oversized posts reach `post`, which answers like API Gateway
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    stage = model.stage
    app.router.add_get(f"/{stage}", gateway.websocket)
    app.router.add_post(f"/{stage}/@connections/{{connection_id}}", gateway.post)
    app.router.add_get(f"/{stage}/@connections/{{connection_id}}", gateway.get)
    app.router.add_delete(f"/{stage}/@connections/{{connection_id}}", gateway.delete)
    if issuer is not None:  # JWT mode with the emulator as the identity provider
        configuration, keys = issuer.openid_configuration(), issuer.jwks()

        async def discovery(request: web.Request) -> web.Response:
            return web.json_response(configuration)

        async def jwks(request: web.Request) -> web.Response:
            return web.json_response(keys, headers={"Cache-Control": "max-age=3600"})

        app.router.add_get(DISCOVERY_PATH, discovery)
        app.router.add_get(JWKS_PATH, jwks)
    app.on_shutdown.append(gateway.close_all)
    return app
