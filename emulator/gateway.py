"""The API Gateway of the emulator: WebSocket clients in, ``@connections`` out.

Serves ``ws://HOST:PORT/STAGE`` and ``http://HOST:PORT/STAGE/@connections/{id}``
the way API Gateway does for the declared API: ``$connect`` runs the declared
authorizer (401 without the identity source, 403 on Deny) and the connect
function (a non-2xx answer refuses the handshake); messages are routed by the
declared route selection expression; ``$disconnect`` runs on every close;
``@connections`` POST/GET/DELETE answer like the Management API, with the
error headers boto3 maps to its exceptions.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from emulator.model import Model, RouteModel
from emulator.program import ACCOUNT, REGION
from emulator.workers import InvokeResult

MAX_MESSAGE_BYTES = 128 * 1024


@dataclass
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    idle_timeout: float = 600.0
    """Seconds without traffic before the gateway closes a connection (API Gateway: 10 min)."""
    max_connection: float = 7200.0
    """Seconds after which any connection is closed (API Gateway: 2 h)."""
    max_message_bytes: int = MAX_MESSAGE_BYTES


Invoke = Callable[[str, Any], Awaitable[InvokeResult]]


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
    """The route key a message selects (``$default`` when nothing matches)."""
    prefix = "$request.body."
    if expression.startswith(prefix):
        try:
            value: Any = json.loads(body)
        except ValueError:
            return "$default"
        for part in expression[len(prefix) :].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value in routes and not value.startswith("$"):
            return value
    return "$default"


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
            ws=web.WebSocketResponse(
                max_msg_size=state.settings.max_message_bytes, autoping=True, compress=False
            ),
            source_ip=context["identity"]["sourceIp"],
            user_agent=context["identity"]["userAgent"],
            authorizer=authorizer_context,
        )
        state.connections[connection_id] = connection  # posts wait for `ready`
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
            await connection.ws.prepare(request)
        except ConnectionError:  # the client hung up during the handshake
            self._abandon(connection)
            connection.closed_by = "client (during the handshake)"
            state.spawn(self._disconnect(connection, request))
            return connection.ws
        except BaseException:
            self._abandon(connection)
            raise
        connection.last_active_at = time.time()  # the idle clock starts once the socket is open
        connection.ready.set()
        state.log(f"gateway: connected {connection_id}")
        watchdog = asyncio.ensure_future(self._watch(connection))
        try:
            await self._serve(connection, request)
        finally:
            watchdog.cancel()
            state.connections.pop(connection_id, None)
            state.spawn(self._disconnect(connection, request))
        return connection.ws

    def _abandon(self, connection: Connection) -> None:
        """A handshake that will not complete: forget it, and answer waiting posts with 410."""
        self.state.connections.pop(connection.id, None)
        connection.refused = True
        connection.ready.set()

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
            await connection.ws.send_str(
                json.dumps(
                    {
                        "message": "Internal server error",
                        "connectionId": connection.id,
                        "requestId": context["requestId"],
                    }
                )
            )
            return
        if route.has_route_response and isinstance(result.payload, dict):
            reply = result.payload.get("body")
            if isinstance(reply, str):
                await connection.ws.send_str(reply)

    async def _watch(self, connection: Connection) -> None:
        settings = self.state.settings
        while True:
            now = time.time()
            idle_left = connection.last_active_at + settings.idle_timeout - now
            total_left = connection.connected_at + settings.max_connection - now
            if idle_left <= 0 or total_left <= 0:
                connection.closed_by = "idle timeout" if idle_left <= 0 else "maximum duration"
                self.state.log(f"gateway: closing {connection.id}: {connection.closed_by}")
                await connection.ws.close(code=1001, message=b"Going away")
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
        await self.state.invoke(
            route.function, {"requestContext": context, "isBase64Encoded": False}
        )

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
        try:  # a connection still in $connect: wait for its socket (bounded)
            await asyncio.wait_for(connection.ready.wait(), timeout=30)
        except TimeoutError:
            return _error(410, "GoneException", "Gone")
        if connection.refused or connection.ws.closed:
            return _error(410, "GoneException", "Gone")
        try:
            await connection.ws.send_str(data.decode("utf-8"))
        except UnicodeDecodeError:
            await connection.ws.send_bytes(data)
        except ConnectionError:
            return _error(410, "GoneException", "Gone")
        connection.last_active_at = time.time()
        return web.Response(status=200)

    async def get(self, request: web.Request) -> web.Response:
        connection = self.state.connections.get(request.match_info["connection_id"])
        if connection is None:
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
        if connection is None or not connection.ws.prepared:  # none, or still in $connect
            return _error(410, "GoneException", "Gone")
        connection.closed_by = "server (@connections DELETE)"
        await connection.ws.close(code=1000, message=b"")
        return web.Response(status=204)


_FAULT_CODES = {
    403: "ForbiddenException",
    429: "LimitExceededException",
    500: "InternalServerErrorException",
    503: "ServiceUnavailableException",
}


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
    app.on_shutdown.append(_close_all)
    return app


async def _close_all(app: web.Application) -> None:
    state = app[STATE]
    for connection in list(state.connections.values()):
        if not connection.ws.prepared:  # still in $connect: its handler ends on its own
            continue
        connection.closed_by = "emulator shutdown"
        await connection.ws.close(code=1001, message=b"Server shutdown")
    if state.background:
        await asyncio.wait(set(state.background), timeout=5)
