"""The emulator's API Gateway: route selection, authorizer policies, the app over a socket."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer, unused_port

from emulator import gateway as gateway_module
from emulator.gateway import (
    STATE,
    GatewaySettings,
    GatewayState,
    _status_of,
    allows,
    create_app,
    identity_value,
    new_connection_id,
    select_route,
)
from emulator.model import AuthorizerModel, Model, RouteModel
from emulator.workers import InvokeResult, PoolClosedError

EXPRESSION = "$request.body.action"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/dev/$connect"


def route(key: str, function: str = "fn", response: bool = False) -> RouteModel:
    return RouteModel(
        route_key=key,
        function=function,
        authorization_type="NONE",
        authorizer=None,
        has_route_response=response,
    )


ROUTES = {key: route(key) for key in ("$connect", "$disconnect", "$default", "echo", "b")}


# --- select_route --------------------------------------------------------------------------


def test_select_route_picks_the_custom_route_named_by_the_action() -> None:
    assert select_route(EXPRESSION, '{"action": "echo", "x": 1}', ROUTES) == "echo"


@pytest.mark.parametrize(
    "body",
    [
        '{"action": "unknown"}',
        '{"other": "echo"}',
        "not json",
        "",
        '["echo"]',
        '"echo"',
        '{"action": 5}',
        '{"action": {"name": "echo"}}',
        '{"action": "$connect"}',
        '{"action": "$disconnect"}',
    ],
)
def test_select_route_falls_back_to_default(body: str) -> None:
    assert select_route(EXPRESSION, body, ROUTES) == "$default"


DEEP_OBJECT = '{"a": ' * 5000 + "1" + "}" * 5000
DEEP_ARRAY = "[" * 100_000


@pytest.mark.parametrize("body", [DEEP_OBJECT, DEEP_ARRAY], ids=["object", "brackets"])
def test_select_route_sends_json_too_deep_to_parse_to_default(body: str) -> None:
    assert select_route(EXPRESSION, body, ROUTES) == "$default"


def test_select_route_follows_a_nested_expression() -> None:
    expression = "$request.body.a.b"
    assert select_route(expression, '{"a": {"b": "echo"}}', ROUTES) == "echo"
    assert select_route(expression, '{"a": "echo"}', ROUTES) == "$default"
    assert select_route(expression, '{"b": "echo"}', ROUTES) == "$default"
    assert select_route(expression, '{"a": {"b": "nope"}}', ROUTES) == "$default"


# --- identity_value ------------------------------------------------------------------------


def test_identity_value_reads_the_querystring() -> None:
    source = "route.request.querystring.token"
    assert identity_value(source, {}, {"token": "t0k"}) == "t0k"


def test_identity_value_reads_a_header_whatever_its_case() -> None:
    source = "route.request.header.Authorization"
    assert identity_value(source, {"authorization": "Bearer x"}, {}) == "Bearer x"
    assert identity_value("route.request.header.x-token", {"X-Token": "y"}, {}) == "y"


@pytest.mark.parametrize(
    ("source", "headers", "query"),
    [
        ("route.request.querystring.token", {}, {}),
        ("route.request.querystring.token", {}, {"token": ""}),
        ("route.request.querystring.token", {"token": "in-a-header"}, {"other": "x"}),
        ("route.request.header.Authorization", {}, {"Authorization": "in-the-query"}),
        ("route.request.header.Authorization", {"Authorization": ""}, {}),
        ("context.something", {"something": "x"}, {"something": "x"}),
    ],
)
def test_identity_value_is_none_when_missing_or_empty(
    source: str, headers: dict[str, str], query: dict[str, str]
) -> None:
    assert identity_value(source, headers, query) is None


# --- allows --------------------------------------------------------------------------------


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {
        "principalId": "alice",
        "policyDocument": {"Version": "2012-10-17", "Statement": list(statements)},
    }


def statement(effect: str, resource: Any, action: Any = "execute-api:Invoke") -> dict[str, Any]:
    return {"Effect": effect, "Action": action, "Resource": resource}


def test_allows_an_allow_statement_for_the_method_arn() -> None:
    assert allows(policy(statement("Allow", METHOD_ARN)), METHOD_ARN)[0] is True


def test_allows_a_statement_given_as_an_object_and_resources_as_a_list() -> None:
    answer = {"policyDocument": {"Statement": statement("Allow", ["arn:other", METHOD_ARN])}}
    assert allows(answer, METHOD_ARN)[0] is True


@pytest.mark.parametrize(
    "resource",
    [
        "arn:aws:execute-api:us-east-1:123456789012:abc123/*/$connect",
        "arn:aws:execute-api:us-east-1:123456789012:abc123/*",
        "arn:aws:execute-api:*:*:*",
        "*",
    ],
)
def test_allows_wildcard_resources(resource: str) -> None:
    assert allows(policy(statement("Allow", resource)), METHOD_ARN)[0] is True


def test_allows_refuses_an_allow_for_another_route_or_stage() -> None:
    other = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/$connect"
    assert allows(policy(statement("Allow", other)), METHOD_ARN) == (
        False,
        "no statement allows the route",
    )


@pytest.mark.parametrize("deny_first", [True, False])
def test_allows_an_explicit_deny_wins_over_an_allow(deny_first: bool) -> None:
    statements = [statement("Allow", "*"), statement("Deny", METHOD_ARN)]
    if deny_first:
        statements.reverse()
    assert allows(policy(*statements), METHOD_ARN) == (False, "denied")


def test_allows_refuses_without_statements() -> None:
    assert allows(policy(), METHOD_ARN)[0] is False
    assert allows({"principalId": "alice"}, METHOD_ARN)[0] is False


@pytest.mark.parametrize("answer", [None, "Allow", ["Allow"], 1])
def test_allows_refuses_an_answer_that_is_not_an_object(answer: Any) -> None:
    assert allows(answer, METHOD_ARN) == (False, "authorizer returned no policy")


@pytest.mark.parametrize(
    "action", ["execute-api:*", "*", ["s3:GetObject", "execute-api:Invoke"], "Execute-API:invoke"]
)
def test_allows_action_wildcards(action: Any) -> None:
    assert allows(policy(statement("Allow", METHOD_ARN, action)), METHOD_ARN)[0] is True


def test_allows_ignores_statements_for_other_actions() -> None:
    assert allows(policy(statement("Allow", "*", "s3:*")), METHOD_ARN)[0] is False
    deny_other = statement("Deny", "*", "execute-api:ManageConnections")
    assert allows(policy(statement("Allow", "*"), deny_other), METHOD_ARN)[0] is True


# --- ids and statuses ----------------------------------------------------------------------


def test_new_connection_id_looks_like_api_gateways() -> None:
    ids = [new_connection_id() for _ in range(1000)]
    for connection_id in ids:
        assert len(connection_id) == 16
        assert len(base64.b64decode(connection_id, validate=True)) == 11
    assert len(set(ids)) == 1000


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (InvokeResult(ok=False, error_type="Exception"), 500),
        (InvokeResult(ok=True, payload={"statusCode": 200}), 200),
        (InvokeResult(ok=True, payload={"statusCode": 401}), 401),
        (InvokeResult(ok=True, payload={"statusCode": "403"}), 403),
        (InvokeResult(ok=True, payload={"statusCode": "nope"}), 500),
        (InvokeResult(ok=True, payload={"statusCode": None}), 500),
        (InvokeResult(ok=True, payload={"body": "hi"}), 200),
        (InvokeResult(ok=True, payload=None), 200),
        (InvokeResult(ok=True, payload="text"), 200),
    ],
)
def test_status_of_an_invocation(result: InvokeResult, status: int) -> None:
    assert _status_of(result) == status


# --- the app --------------------------------------------------------------------------------

ALLOW = InvokeResult(
    ok=True,
    payload={
        "principalId": "user-alice",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "execute-api:Invoke",
                    "Resource": "arn:aws:execute-api:us-east-1:123456789012:api123/*/$connect",
                }
            ],
        },
        "context": {"userId": "alice"},
    },
)
OK = InvokeResult(ok=True, payload={"statusCode": 200})


def app_model() -> Model:
    connect = RouteModel(
        route_key="$connect",
        function="connect",
        authorization_type="CUSTOM",
        authorizer=AuthorizerModel(
            function="authorizer", identity_sources=["route.request.querystring.token"]
        ),
        has_route_response=False,
    )
    return Model(
        api_id="api123",
        stage="dev",
        routes={
            "$connect": connect,
            "$disconnect": route("$disconnect", "disconnect"),
            "$default": route("$default", "default"),
            "echo": route("echo", "echo", response=True),
        },
    )


class FakeFunctions:
    """The ``invoke`` the gateway calls: records events, answers from ``answers``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.answers: dict[str, InvokeResult] = {
            "authorizer": ALLOW,
            "connect": OK,
            "disconnect": OK,
            "default": OK,
            "echo": InvokeResult(ok=True, payload={"statusCode": 200, "body": "echo-reply"}),
        }

    async def __call__(self, function: str, event: Any) -> InvokeResult:
        self.events.append((function, event))
        return self.answers[function]

    def of(self, function: str) -> list[dict[str, Any]]:
        return [event for name, event in self.events if name == function]

    async def wait(self, function: str, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while len(self.of(function)) < count:
            assert time.monotonic() < deadline, f"{function} was not invoked {count} time(s)"
            await asyncio.sleep(0.01)
        return self.of(function)[count - 1]


class Harness:
    def __init__(self, client: TestClient, functions: FakeFunctions, state: GatewayState) -> None:
        self.client = client
        self.functions = functions
        self.state = state

    async def connect(self, query: str = "?token=good") -> tuple[Any, str]:
        ws = await self.client.ws_connect(f"/dev{query}")
        event = self.functions.of("connect")[-1]
        return ws, event["requestContext"]["connectionId"]

    def connections_url(self, connection_id: str) -> str:
        return f"/dev/@connections/{quote(connection_id, safe='')}"


Scenario = Callable[[Harness], Awaitable[None]]


def serve(
    scenario: Scenario, functions: FakeFunctions | None = None, **settings_changes: Any
) -> FakeFunctions:
    """Run ``scenario`` against the gateway app on 127.0.0.1; return the fake functions."""
    functions = functions or FakeFunctions()

    async def main() -> None:
        port = unused_port()
        settings = GatewaySettings(host="127.0.0.1", port=port, **settings_changes)
        app = create_app(app_model(), functions, settings, log=lambda line: None)
        server = TestServer(app, host="127.0.0.1", port=port)
        async with TestClient(server) as client:
            await scenario(Harness(client, functions, app[STATE]))

    asyncio.run(main())
    return functions


async def refused_status(harness: Harness, query: str) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await harness.client.ws_connect(f"/dev{query}")
    return refused.value.status


def test_connect_without_the_token_is_401_and_skips_the_authorizer() -> None:
    async def scenario(harness: Harness) -> None:
        assert await refused_status(harness, "") == 401
        assert await refused_status(harness, "?token=") == 401

    functions = serve(scenario)
    assert functions.events == []


def test_connect_denied_by_the_authorizer_is_403() -> None:
    functions = FakeFunctions()
    functions.answers["authorizer"] = InvokeResult(
        ok=True,
        payload={
            "principalId": "mallory",
            "policyDocument": {
                "Statement": [{"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": "*"}]
            },
        },
    )

    async def scenario(harness: Harness) -> None:
        assert await refused_status(harness, "?token=bad") == 403

    serve(scenario, functions)
    assert [name for name, _ in functions.events] == ["authorizer"]


def test_connect_when_the_authorizer_fails_is_500() -> None:
    functions = FakeFunctions()
    functions.answers["authorizer"] = InvokeResult(
        ok=False, error_type="Runtime.ExitError", error_message="crash"
    )

    async def scenario(harness: Harness) -> None:
        assert await refused_status(harness, "?token=good") == 500

    serve(scenario, functions)
    assert functions.of("connect") == []


def test_authorizer_gets_a_request_event_with_the_token_and_method_arn() -> None:
    async def scenario(harness: Harness) -> None:
        ws, _ = await harness.connect("?token=good&x=1")
        await ws.close()

    event = serve(scenario).of("authorizer")[0]
    assert event["type"] == "REQUEST"
    assert event["methodArn"] == "arn:aws:execute-api:us-east-1:123456789012:api123/dev/$connect"
    assert event["queryStringParameters"] == {"token": "good", "x": "1"}
    assert event["requestContext"]["routeKey"] == "$connect"


def test_connect_function_refusing_with_401_refuses_the_handshake() -> None:
    functions = FakeFunctions()
    functions.answers["connect"] = InvokeResult(ok=True, payload={"statusCode": 401})

    async def scenario(harness: Harness) -> None:
        assert await refused_status(harness, "?token=good") == 401
        assert harness.state.connections == {}

    serve(scenario, functions)
    assert functions.of("disconnect") == []


def test_connect_event_carries_the_request_context_and_authorizer_context() -> None:
    async def scenario(harness: Harness) -> None:
        ws, _ = await harness.connect()
        await ws.close()

    before = int(time.time() * 1000)
    connect = serve(scenario).of("connect")[0]
    context = connect["requestContext"]
    assert context["routeKey"] == "$connect"
    assert context["eventType"] == "CONNECT"
    assert context["stage"] == "dev"
    assert context["apiId"] == "api123"
    assert context["domainName"] == "127.0.0.1"
    assert len(context["connectionId"]) == 16
    assert before - 1000 <= context["requestTimeEpoch"] <= time.time() * 1000
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["authorizer"]["userId"] == "alice"
    assert context["authorizer"]["principalId"] == "user-alice"
    assert connect["queryStringParameters"] == {"token": "good"}
    assert connect["isBase64Encoded"] is False


def test_message_events_carry_the_connection_and_authorizer_context() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        await ws.send_str('{"action": "ping"}')
        message = await harness.functions.wait("default")
        assert message["requestContext"]["connectionId"] == connection_id
        await ws.close()

    default = serve(scenario).of("default")[0]
    context = default["requestContext"]
    assert context["eventType"] == "MESSAGE"
    assert context["routeKey"] == "$default"
    assert context["authorizer"]["userId"] == "alice"
    assert context["authorizer"]["principalId"] == "user-alice"
    assert default["body"] == '{"action": "ping"}'
    assert default["isBase64Encoded"] is False


def test_echo_action_goes_to_its_route_and_the_reply_comes_back() -> None:
    async def scenario(harness: Harness) -> None:
        ws, _ = await harness.connect()
        await ws.send_str('{"action": "echo", "text": "hi"}')
        reply = await ws.receive(timeout=5)
        assert (reply.type, reply.data) == (WSMsgType.TEXT, "echo-reply")
        await ws.close()

    functions = serve(scenario)
    (echo,) = functions.of("echo")
    assert echo["requestContext"]["routeKey"] == "echo"
    assert echo["body"] == '{"action": "echo", "text": "hi"}'
    assert functions.of("default") == []


def test_other_text_goes_to_default_without_a_reply() -> None:
    functions = FakeFunctions()
    functions.answers["default"] = InvokeResult(ok=True, payload={"statusCode": 200, "body": "no"})

    async def scenario(harness: Harness) -> None:
        ws, _ = await harness.connect()
        await ws.send_str("hello")
        await ws.send_str('{"action": "echo"}')  # messages are served in order
        reply = await ws.receive(timeout=5)
        assert reply.data == "echo-reply"  # nothing came from $default before it
        await ws.close()

    serve(scenario, functions)
    assert [e["body"] for e in functions.of("default")] == ["hello"]


def test_binary_frame_goes_to_default_as_base64() -> None:
    async def scenario(harness: Harness) -> None:
        ws, _ = await harness.connect()
        await ws.send_bytes(b'\x00\xff{"action": "echo"}')
        await harness.functions.wait("default")
        await ws.close()

    functions = serve(scenario)
    (default,) = functions.of("default")
    assert default["isBase64Encoded"] is True
    assert base64.b64decode(default["body"]) == b'\x00\xff{"action": "echo"}'
    assert functions.of("echo") == []


def test_closing_the_client_runs_disconnect() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        await ws.close()
        event = await harness.functions.wait("disconnect")
        assert event["requestContext"]["connectionId"] == connection_id
        assert connection_id not in harness.state.connections

    (event,) = serve(scenario).of("disconnect")
    context = event["requestContext"]
    assert context["eventType"] == "DISCONNECT"
    assert context["routeKey"] == "$disconnect"
    assert context["authorizer"]["userId"] == "alice"


def test_post_to_a_connection_delivers_the_data_to_its_socket() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        answer = await harness.client.post(
            harness.connections_url(connection_id), data=b'{"hello": "world"}'
        )
        assert answer.status == 200
        received = await ws.receive(timeout=5)
        assert (received.type, received.data) == (WSMsgType.TEXT, '{"hello": "world"}')
        await ws.close()

    serve(scenario)


def test_post_of_non_utf8_data_arrives_as_a_binary_frame() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        answer = await harness.client.post(harness.connections_url(connection_id), data=b"\xff\x00")
        assert answer.status == 200
        received = await ws.receive(timeout=5)
        assert (received.type, received.data) == (WSMsgType.BINARY, b"\xff\x00")
        await ws.close()

    serve(scenario)


def test_post_reaches_a_connection_whose_id_needs_url_encoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway_module, "new_connection_id", lambda: "ab/c+d=EFGHIJKL")

    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        assert connection_id == "ab/c+d=EFGHIJKL"
        answer = await harness.client.post(harness.connections_url(connection_id), data=b"x")
        assert answer.status == 200
        assert (await ws.receive(timeout=5)).data == "x"
        await ws.close()

    serve(scenario)


def test_post_to_an_unknown_connection_is_410_gone() -> None:
    async def scenario(harness: Harness) -> None:
        answer = await harness.client.post(harness.connections_url("nope"), data=b"x")
        assert answer.status == 410
        assert answer.headers["x-amzn-ErrorType"].split(":", 1)[0] == "GoneException"

    serve(scenario)


def test_post_over_128_kib_is_413_payload_too_large() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        url = harness.connections_url(connection_id)
        answer = await harness.client.post(url, data=b"x" * (128 * 1024 + 1))
        assert answer.status == 413
        assert answer.headers["x-amzn-ErrorType"].startswith("PayloadTooLargeException:")
        exactly = await harness.client.post(url, data=b"y" * (128 * 1024))
        assert exactly.status == 200
        assert len((await ws.receive(timeout=5)).data) == 128 * 1024
        await ws.close()

    serve(scenario)


def test_post_far_over_the_limit_is_still_payload_too_large() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        url = harness.connections_url(connection_id)
        answer = await harness.client.post(url, data=b"x" * (300 * 1024))
        try:
            assert answer.status == 413
            assert answer.headers.get("x-amzn-ErrorType", "").startswith(
                "PayloadTooLargeException:"
            )
        finally:
            await ws.close()

    serve(scenario)


def test_get_connection_describes_it() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        answer = await harness.client.get(
            harness.connections_url(connection_id), headers={"User-Agent": "probe"}
        )
        assert answer.status == 200
        described = await answer.json()
        assert described["connectedAt"].endswith("Z")
        assert described["lastActiveAt"].endswith("Z")
        assert described["connectedAt"] <= described["lastActiveAt"]
        assert described["identity"]["sourceIp"] == "127.0.0.1"
        assert "userAgent" in described["identity"]
        missing = await harness.client.get(harness.connections_url("nope"))
        assert missing.status == 410
        await ws.close()

    serve(scenario)


def test_delete_connection_closes_the_socket_and_runs_disconnect() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        answer = await harness.client.delete(harness.connections_url(connection_id))
        assert answer.status == 204
        closing = await ws.receive(timeout=5)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        event = await harness.functions.wait("disconnect")
        assert event["requestContext"]["connectionId"] == connection_id
        assert event["requestContext"]["eventType"] == "DISCONNECT"
        gone = await harness.client.post(harness.connections_url(connection_id), data=b"x")
        assert gone.status == 410

    serve(scenario)


def test_post_faults_answer_the_scripted_statuses_then_repeat_the_last() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        harness.state.post_faults[connection_id] = [429, 500]
        url = harness.connections_url(connection_id)
        answers = [await harness.client.post(url, data=b"x") for _ in range(3)]
        assert [a.status for a in answers] == [429, 500, 500]
        codes = [a.headers["x-amzn-ErrorType"].split(":", 1)[0] for a in answers]
        assert codes == [
            "LimitExceededException",
            "InternalServerErrorException",
            "InternalServerErrorException",
        ]
        harness.state.post_faults.pop(connection_id)
        assert (await harness.client.post(url, data=b"ok")).status == 200
        assert (await ws.receive(timeout=5)).data == "ok"  # faulted posts delivered nothing
        await ws.close()

    serve(scenario)


def test_connection_is_registered_while_open_and_forgotten_after_close() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        assert connection_id in harness.state.connections
        json.dumps(harness.state.connections[connection_id].authorizer)
        await ws.close()
        await harness.functions.wait("disconnect")
        assert harness.state.connections == {}

    serve(scenario)


class SlowConnect(FakeFunctions):
    """A connect function that takes a while and may refuse, to post to it meanwhile."""

    def __init__(self, refuse: bool) -> None:
        super().__init__()
        self.refuse = refuse

    async def __call__(self, function: str, event: Any) -> InvokeResult:
        self.events.append((function, event))
        if function == "connect":
            await asyncio.sleep(0.3)
            return InvokeResult(ok=True, payload={"statusCode": 403 if self.refuse else 200})
        return self.answers[function]


@pytest.mark.parametrize(("refuse", "status"), [(False, 200), (True, 410)])
def test_post_during_connect_waits_for_the_handshake(refuse: bool, status: int) -> None:
    async def scenario(harness: Harness) -> None:
        handshake = asyncio.ensure_future(harness.client.ws_connect("/dev?token=good"))
        event = await harness.functions.wait("connect")
        connection_id = event["requestContext"]["connectionId"]
        started = time.monotonic()
        answer = await harness.client.post(harness.connections_url(connection_id), data=b"{}")
        assert answer.status == status
        assert time.monotonic() - started < 5  # answered once the handshake ended, not at 30 s
        if refuse:
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await handshake
        else:
            ws = await handshake
            assert (await ws.receive(timeout=5)).data == "{}"
            await ws.close()

    serve(scenario, SlowConnect(refuse))


def test_delete_of_a_connection_still_in_connect_is_410_and_it_still_opens() -> None:
    async def scenario(harness: Harness) -> None:
        handshake = asyncio.ensure_future(harness.client.ws_connect("/dev?token=good"))
        event = await harness.functions.wait("connect")
        connection_id = event["requestContext"]["connectionId"]
        answer = await harness.client.delete(harness.connections_url(connection_id))
        assert answer.status == 410
        assert answer.headers["x-amzn-ErrorType"].startswith("GoneException")
        ws = await handshake
        assert not ws.closed
        await ws.close()

    serve(scenario, SlowConnect(refuse=False))


# --- messages the gateway must survive ------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP_OBJECT, DEEP_ARRAY], ids=["object", "brackets"])
def test_message_nested_too_deep_goes_to_default_and_the_socket_stays_up(body: str) -> None:
    async def scenario(harness: Harness) -> None:
        ws, _ = await harness.connect()
        await ws.send_str(body)
        await harness.functions.wait("default")
        await ws.send_str('{"action": "echo"}')
        reply = await ws.receive(timeout=5)
        assert (reply.type, reply.data) == (WSMsgType.TEXT, "echo-reply")
        await ws.close()

    functions = serve(scenario)
    assert [event["body"] for event in functions.of("default")] == [body]


# --- message size: API Gateway accepts 128 KB and refuses one byte more -----------------------


def test_client_message_of_exactly_128_kib_is_accepted() -> None:
    body = "x" * (128 * 1024)

    async def scenario(harness: Harness) -> None:
        ws, _ = await harness.connect()
        await ws.send_str(body)
        await harness.functions.wait("default")
        await ws.send_str('{"action": "echo"}')
        assert (await ws.receive(timeout=5)).data == "echo-reply"
        await ws.close()

    functions = serve(scenario)
    assert [len(event["body"]) for event in functions.of("default")] == [131_072]


def test_client_message_one_byte_over_128_kib_closes_with_1009() -> None:
    async def scenario(harness: Harness) -> None:
        ws, connection_id = await harness.connect()
        await ws.send_str("x" * (128 * 1024 + 1))
        closing = await ws.receive(timeout=5)
        assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED)
        assert ws.close_code == 1009
        event = await harness.functions.wait("disconnect")
        assert event["requestContext"]["connectionId"] == connection_id

    functions = serve(scenario)
    assert functions.of("default") == []


# --- requests that are not a WebSocket handshake ------------------------------------------


def test_plain_http_get_with_a_valid_token_is_426_and_runs_nothing() -> None:
    async def scenario(harness: Harness) -> None:
        answer = await harness.client.get("/dev?token=good")
        assert answer.status == 426
        assert answer.headers["Upgrade"] == "websocket"
        assert harness.state.connections == {}

    functions = serve(scenario)
    assert functions.events == []  # no authorizer, no $connect: no connection record


def test_broken_websocket_handshake_is_400_and_runs_nothing() -> None:
    async def scenario(harness: Harness) -> None:
        headers = {"Upgrade": "websocket", "Connection": "Upgrade"}  # no Sec-WebSocket-Key
        answer = await harness.client.get("/dev?token=good", headers=headers)
        assert answer.status == 400
        assert harness.state.connections == {}

    functions = serve(scenario)
    assert functions.events == []


def test_handshake_failing_after_connect_runs_disconnect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_prepare(self: Any, request: Any) -> Any:
        raise RuntimeError("the handshake broke after $connect")

    monkeypatch.setattr(gateway_module.web.WebSocketResponse, "prepare", broken_prepare)

    async def scenario(harness: Harness) -> None:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await harness.client.ws_connect("/dev?token=good")
        event = await harness.functions.wait("disconnect")
        connect = harness.functions.of("connect")[0]
        assert (
            event["requestContext"]["connectionId"] == (connect["requestContext"]["connectionId"])
        )
        assert event["requestContext"]["disconnectReason"] == "handshake failed (RuntimeError)"
        assert harness.state.connections == {}

    serve(scenario)


# --- a client that never reads ----------------------------------------------------------------


async def non_reading_client(harness: Harness) -> tuple[socket.socket, str]:
    """A raw WebSocket client with a tiny receive buffer that never reads after the handshake."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    server = harness.client.server
    await loop.sock_connect(sock, (server.host, server.port))
    handshake = (
        "GET /dev?token=good HTTP/1.1\r\n"
        f"Host: {server.host}:{server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, handshake.encode("ascii"))
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1), timeout=5)
        assert chunk, "the gateway hung up during the handshake"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101"), answer
    event = harness.functions.of("connect")[-1]
    return sock, event["requestContext"]["connectionId"]


def test_client_that_never_reads_is_closed_instead_of_stalling_posts() -> None:
    message = b"x" * (100 * 1024)
    timeout = aiohttp.ClientTimeout(total=5)  # a post that waits for the stalled client fails

    async def scenario(harness: Harness) -> None:
        stalled, stalled_id = await non_reading_client(harness)
        healthy, healthy_id = await harness.connect()
        statuses = []
        started = time.monotonic()
        for _ in range(400):  # 40 MB: far past the 4 MiB buffer plus what the kernel holds
            answer = await harness.client.post(
                harness.connections_url(stalled_id), data=message, timeout=timeout
            )
            statuses.append(answer.status)
            if answer.status != 200:
                break
        assert statuses[-1] == 410
        assert set(statuses[:-1]) == {200}
        assert time.monotonic() - started < 20
        later = await harness.client.post(harness.connections_url(stalled_id), data=b"x")
        assert later.status == 410
        event = await harness.functions.wait("disconnect")
        assert event["requestContext"]["connectionId"] == stalled_id
        assert stalled_id not in harness.state.connections
        # everyone else is served as before
        answer = await harness.client.post(
            harness.connections_url(healthy_id), data=b"still here", timeout=timeout
        )
        assert answer.status == 200
        assert (await healthy.receive(timeout=5)).data == "still here"
        await healthy.close()
        stalled.close()

    serve(scenario)


def test_delete_of_a_client_that_never_reads_answers_at_once_and_closes_it() -> None:
    timeout = aiohttp.ClientTimeout(total=5)

    async def scenario(harness: Harness) -> None:
        stalled, stalled_id = await non_reading_client(harness)
        connection = harness.state.connections[stalled_id]
        for _ in range(100):  # until the kernel's buffers are full and the gateway holds 1 MB
            answer = await harness.client.post(
                harness.connections_url(stalled_id), data=b"x" * (100 * 1024), timeout=timeout
            )
            assert answer.status == 200
            if connection.unsent_bytes() > 1024 * 1024:  # under the 4 MiB limit
                break
        assert connection.unsent_bytes() > 1024 * 1024
        started = time.monotonic()
        answer = await harness.client.delete(harness.connections_url(stalled_id), timeout=timeout)
        assert answer.status == 204
        assert time.monotonic() - started < 1
        gone = await harness.client.post(harness.connections_url(stalled_id), data=b"x")
        assert gone.status == 410
        event = await harness.functions.wait("disconnect", timeout=5)  # close_timeout 0.5 s
        assert event["requestContext"]["connectionId"] == stalled_id
        assert stalled_id not in harness.state.connections
        stalled.close()

    serve(scenario, close_timeout=0.5)


def test_a_disconnect_after_the_pools_closed_is_logged_not_raised() -> None:
    """When the emulator stops while a client is still leaving, its $disconnect cannot run:
    the gateway says so in one line instead of leaving a task that failed unseen."""

    class ClosingFunctions(FakeFunctions):
        async def __call__(self, function: str, event: Any) -> InvokeResult:
            if function == "disconnect":
                self.events.append((function, event))
                raise PoolClosedError("function pool disconnect is closed")
            return await super().__call__(function, event)

    lines: list[str] = []

    async def scenario(harness: Harness) -> None:
        harness.state.log = lines.append
        ws, connection_id = await harness.connect()
        await ws.close()
        await harness.functions.wait("disconnect")
        for _ in range(100):
            if not harness.state.background:
                break
            await asyncio.sleep(0.01)
        assert not harness.state.background
        assert lines[-1] == f"gateway: $disconnect of {connection_id} not run: emulator stopping"

    serve(scenario, ClosingFunctions())
