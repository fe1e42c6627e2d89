"""$default: replies to client messages, sent through a (fake, local) Management API."""

import base64
import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import handlers.default
from bench.management_api import FakeManagementApi
from handlers import aws, config, strict_json
from handlers.config import DefaultConfig
from handlers.connections import connection_item
from handlers.default import (
    CONFIG,
    MAX_ECHOED_ID_LENGTH,
    DynamoStore,
    Refusal,
    authorize,
    handler,
    identity_of,
    reply_for,
    respond,
    subscribe_request,
)
from handlers.dynamo_json import MAX_SAFE_INTEGER
from handlers.filters import matches, parse_filter
from handlers.management import ManagementApi, Response, endpoint_from_request, frozen_credentials
from handlers.recipients import subscription_of
from handlers.subscriptions import Connection, read_connection
from handlers.topics import bucket_of, key_topic, table_topic, typed_part
from tests.helpers import FakeContext, create_subscriptions_table, load_event, subscription_items

CONNECTION_ID = "L0SM9cOFvHcCIhw="
REQUEST_ENDPOINT = "https://abc123def4.execute-api.us-east-1.amazonaws.com/dev"
OVERRIDE = "AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI"
ERROR_CODES = {
    "binary_frame",
    "too_large",
    "invalid_json",
    "invalid_message",
    "missing_action",
    "unknown_action",
    "invalid_subscription",
    "unknown_table",
    "forbidden",
    "too_many_subscriptions",
    "internal_error",
}


class RecordingPoster:
    """Records every post and answers with a fixed status."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.posts: list[tuple[str, bytes]] = []

    def post_to_connection(self, connection_id: str, data: bytes) -> Response:
        self.posts.append((connection_id, data))
        return Response(self.status)

    def messages(self) -> list[Any]:
        return [json.loads(data) for _, data in self.posts]


class FailingPoster:
    def post_to_connection(self, connection_id: str, data: bytes) -> Response:
        raise OSError("network is down")


@pytest.fixture(autouse=True)
def _no_endpoint_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OVERRIDE, raising=False)


@pytest.fixture
def api(management_api: FakeManagementApi) -> Iterator[ManagementApi]:
    """A real, SigV4-signing client for the local fake Management API."""
    aws.reset()
    client = ManagementApi(
        management_api.endpoint,
        region="us-east-1",
        credentials=frozen_credentials(aws.session()),
    )
    yield client
    client._drop_connection()  # close the kept-alive socket
    aws.reset()


@pytest.fixture
def configured(
    management_api: FakeManagementApi, monkeypatch: pytest.MonkeyPatch
) -> FakeManagementApi:
    """handler() configured with the fake server's endpoint and no cached clients."""
    monkeypatch.setattr(
        handlers.default,
        "CONFIG",
        dataclasses.replace(handlers.default.CONFIG, management_endpoint=management_api.endpoint),
    )
    monkeypatch.setattr(handlers.default, "_apis", {})
    return management_api


def event_with(body: Any, *, is_base64: bool = False) -> dict[str, Any]:
    event = load_event("default_ping")
    event["body"] = body
    event["isBase64Encoded"] = is_base64
    return event


def reply_to(body: Any, *, is_base64: bool = False) -> dict[str, Any]:
    poster = RecordingPoster()
    assert respond(event_with(body, is_base64=is_base64), poster) == {"statusCode": 200}
    [message] = poster.messages()
    return message


# --- ping over real HTTP ------------------------------------------------------------------


def test_ping_is_answered_with_exactly_a_pong_echoing_the_id(
    management_api: FakeManagementApi, api: ManagementApi
) -> None:
    management_api.connect(CONNECTION_ID)

    answer = respond(load_event("default_ping"), api)

    assert answer == {"statusCode": 200}
    assert management_api.messages(CONNECTION_ID) == [{"type": "pong", "id": "req-42"}]


def test_reply_is_sigv4_signed_for_execute_api(
    management_api: FakeManagementApi, api: ManagementApi
) -> None:
    management_api.connect(CONNECTION_ID)

    respond(load_event("default_ping"), api)

    assert management_api.state.requests == 1
    assert management_api.state.unsigned == 0
    authorization = management_api.state.last_headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/execute-api/aws4_request" in authorization


def test_reply_is_sent_only_to_the_sending_connection(
    management_api: FakeManagementApi, api: ManagementApi
) -> None:
    management_api.connect(CONNECTION_ID, "bystander")

    respond(load_event("default_ping"), api)

    assert management_api.messages("bystander") == []
    assert management_api.state.posts == 1


ERROR_CASES = {
    "binary_frame": (base64.b64encode(b"\x00\x01binary").decode(), True),
    "too_large": (json.dumps({"action": "ping", "pad": "x" * (40 * 1024)}), False),
    "invalid_json-empty": ("", False),
    "invalid_json-blank": ("  \n", False),
    "invalid_json-missing": (None, False),
    "invalid_json-not_json": ("{action: ping}", False),
    "invalid_json-nan": ('{"action": "ping", "id": NaN}', False),
    "invalid_message": ('["ping"]', False),
    "missing_action": ('{"id": 1}', False),
    "missing_action-empty": ('{"action": ""}', False),
    "missing_action-not_string": ('{"action": 7}', False),
    "unknown_action": ('{"action": "publish"}', False),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_bad_message_gets_an_error_with_its_code_and_a_message(
    management_api: FakeManagementApi, api: ManagementApi, case: str
) -> None:
    body, is_base64 = ERROR_CASES[case]
    management_api.connect(CONNECTION_ID)

    answer = respond(event_with(body, is_base64=is_base64), api)

    assert answer == {"statusCode": 200}
    [message] = management_api.messages(CONNECTION_ID)
    assert set(message) == {"type", "code", "message"}
    assert message["type"] == "error"
    assert message["code"] == case.split("-")[0]
    assert isinstance(message["message"], str)
    assert message["message"].strip()


def test_client_error_is_logged_with_its_code(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    reply_to('{"action": "publish"}')

    [record] = [r for r in caplog.records if r.getMessage() == "client error"]
    assert record.code == "unknown_action"  # type: ignore[attr-defined]
    assert record.connectionId == CONNECTION_ID  # type: ignore[attr-defined]


def test_client_that_has_gone_still_gets_a_200_and_a_warning(
    management_api: FakeManagementApi, api: ManagementApi, caplog: pytest.LogCaptureFixture
) -> None:
    # CONNECTION_ID is not registered: the fake answers 410 GoneException.
    answer = respond(load_event("default_ping"), api)

    assert answer == {"statusCode": 200}
    [record] = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage() == "could not answer the client"
    ]
    assert record.status == 410  # type: ignore[attr-defined]
    assert record.code == "GoneException"  # type: ignore[attr-defined]
    assert management_api.state.requests == 1  # not retried


def test_reply_that_cannot_be_sent_at_all_still_gets_a_200_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answer = respond(load_event("default_ping"), FailingPoster())

    assert answer == {"statusCode": 200}
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "could not answer the client"
    assert record.exc_info is not None


# --- the reply (pure) ---------------------------------------------------------------------


def test_ping_without_an_id_gets_a_bare_pong() -> None:
    assert reply_to('{"action": "ping"}') == {"type": "pong"}


def test_ping_with_a_numeric_id_echoes_it() -> None:
    assert reply_to('{"action": "ping", "id": 7}') == {"type": "pong", "id": 7}


@pytest.mark.parametrize("echoed", ["x" * 129, True, 1.5, None, {"a": 1}, ["x"]])
def test_ping_id_that_is_too_long_or_not_a_string_or_integer_is_not_echoed(echoed: Any) -> None:
    body = json.dumps({"action": "ping", "id": echoed})

    assert reply_to(body) == {"type": "pong"}


@pytest.mark.parametrize("echoed", [MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 0, 2**53 - 2])
def test_ping_id_that_javascript_holds_exactly_is_echoed_as_a_number(echoed: int) -> None:
    assert reply_to(json.dumps({"action": "ping", "id": echoed}))["id"] == echoed


@pytest.mark.parametrize(
    "echoed",
    [
        12345678901234567890,
        -12345678901234567890,
        2**53 + 1,
        2**64,
        int("9" * MAX_ECHOED_ID_LENGTH),
    ],
)
def test_ping_id_beyond_javascripts_safe_integers_is_echoed_as_its_exact_decimal_string(
    echoed: int,
) -> None:
    """A JSON number this large would come back as another value in JavaScript."""
    poster = RecordingPoster()
    respond(event_with(json.dumps({"action": "ping", "id": echoed})), poster)
    [(_, data)] = poster.posts

    assert json.loads(data) == {"type": "pong", "id": str(echoed)}
    assert f'"{echoed}"'.encode() in data  # a string on the wire, every digit kept


def test_ping_id_that_a_float_holds_exactly_follows_the_number_rule() -> None:
    """2**53 is not a safe integer, but a double holds it exactly: it stays a number."""
    assert reply_to(json.dumps({"action": "ping", "id": 2**53}))["id"] == 2**53


def test_ping_id_of_more_than_128_digits_is_not_echoed() -> None:
    body = json.dumps({"action": "ping", "id": int("9" * (MAX_ECHOED_ID_LENGTH + 1))})

    assert reply_to(body) == {"type": "pong"}


@pytest.mark.parametrize(
    "body",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        '{"action": "ping", "id": NaN}',
        '{"action": "ping", "id": Infinity}',
        '{"action": "ping", "id": -Infinity}',
        '{"action": "ping", "nested": [1, {"x": NaN}]}',
        '{"action": "ping", "id": 1e400}',  # json.loads makes this inf
    ],
)
def test_non_standard_json_numbers_are_invalid_json(body: str) -> None:
    message = reply_to(body)

    assert message["type"] == "error" and message["code"] == "invalid_json"
    assert "not valid JSON" in message["message"]


def test_deeply_nested_json_is_invalid_json_not_a_crash() -> None:
    body = '{"action": "ping", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"

    assert reply_for(body, False, 10**6)["code"] == "invalid_json"


def test_ping_id_of_128_characters_is_echoed() -> None:
    assert reply_to(json.dumps({"action": "ping", "id": "x" * 128}))["id"] == "x" * 128


def test_message_of_exactly_the_size_limit_is_accepted() -> None:
    limit = 100
    body = '{"action": "ping", "pad": ""}'
    body = body[:-2] + "x" * (limit - len(body)) + '"}'
    assert len(body) == limit

    assert reply_for(body, False, limit) == {"type": "pong"}


def test_message_one_byte_over_the_limit_is_too_large() -> None:
    body = '{"action": "ping", "pad": "é"}'  # 2 bytes in UTF-8: the limit counts bytes
    size = len(body.encode("utf-8"))

    reply = reply_for(body, False, size - 1)

    assert reply["code"] == "too_large"
    assert str(size) in reply["message"]


def test_unknown_action_error_does_not_echo_a_huge_action() -> None:
    action = "A" * 10_000

    message = reply_to(json.dumps({"action": action}))

    assert message["code"] == "unknown_action"
    assert "A" * 64 in message["message"]
    assert "A" * 65 not in message["message"]
    assert len(message["message"]) < 200


def test_unknown_action_error_names_the_known_actions() -> None:
    assert "ping" in reply_to('{"action": "pong"}')["message"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
KEYS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "PK": st.sampled_from(["EVENT#1", "", 5]) | JSON_VALUES,
            "SK": st.sampled_from(["METADATA"]) | JSON_VALUES,
            "other": JSON_VALUES,
        },
    ),
)
FILTERS = st.one_of(
    JSON_VALUES,
    st.lists(
        st.dictionaries(
            st.sampled_from(["status", "total", "a.b", "", "."]) | st.text(max_size=5),
            JSON_VALUES
            | st.dictionaries(
                st.sampled_from(["eq", "ne", "lt", "gt", "between", "in", "exists", "contains"])
                | st.text(max_size=5),
                JSON_VALUES,
                max_size=3,
            ),
            max_size=3,
        ),
        max_size=6,
    ),
)
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(
            ["ping", "Ping", "", "x" * 100, "hello", "subscribe", "unsubscribe"]
        )
        | st.text()
        | JSON_VALUES,
        "id": st.sampled_from(["s1", "s2", "x" * 64, "x" * 65, "\ud800"]) | JSON_VALUES,
        "table": st.sampled_from(["events", "nope", ""]) | JSON_VALUES,
        "key": KEYS,
        "filter": FILTERS,
        "snapshot": JSON_VALUES,
        "after": JSON_VALUES,
    },
)
SUBSCRIBES = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["subscribe", "unsubscribe"]),
        "id": st.sampled_from(["s1", "s2", "s3"]) | st.text(max_size=70),
        "table": st.sampled_from(["events", "events", "nope"]),
    },
    optional={"key": KEYS, "filter": FILTERS},
)
BODIES = st.one_of(
    st.tuples(st.text(), st.just(False)),
    st.tuples(
        st.binary().map(lambda raw: raw.decode("utf-8", errors="surrogateescape")),
        st.just(False),
    ),
    st.tuples(st.binary().map(lambda raw: base64.b64encode(raw).decode()), st.just(True)),
    st.tuples(st.none(), st.booleans()),
    st.tuples((JSON_VALUES | MESSAGES | SUBSCRIBES).map(json.dumps), st.booleans()),
)
REPLY_TYPES = ("pong", "error", "hello", "subscribed", "unsubscribed")


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body_and_flag=BODIES)
def test_any_body_gets_a_200_and_exactly_one_reply_and_never_an_internal_error(
    tables: Any, body_and_flag: tuple[Any, bool]
) -> None:
    body, is_base64 = body_and_flag
    connect(tables)  # (again: a subscription limit reached is a fine answer too)
    poster = RecordingPoster()

    answer = respond(event_with(body, is_base64=is_base64), poster, DynamoStore(CONFIG, tables))

    assert answer == {"statusCode": 200}
    [(connection_id, data)] = poster.posts
    assert connection_id == CONNECTION_ID
    message = strict_json.loads(data.decode("utf-8"))  # the reply itself is standard JSON
    assert message["type"] in REPLY_TYPES
    if message["type"] == "error":
        assert message["code"] in ERROR_CODES - {"internal_error"}, message
        assert message["message"]
        if "id" in message:
            assert isinstance(message["id"], str) and 1 <= len(message["id"]) <= 64
    elif isinstance(message.get("id"), int):
        assert abs(message["id"]) <= MAX_SAFE_INTEGER


# --- handler(): where the endpoint comes from ---------------------------------------------


def test_handler_answers_through_the_configured_endpoint(
    configured: FakeManagementApi, lambda_context: FakeContext
) -> None:
    configured.connect(CONNECTION_ID)

    answer = handler(load_event("default_ping"), lambda_context)

    assert answer == {"statusCode": 200}
    assert configured.messages(CONNECTION_ID) == [{"type": "pong", "id": "req-42"}]
    assert configured.state.unsigned == 0


def test_handler_reuses_one_client_per_endpoint(
    configured: FakeManagementApi, lambda_context: FakeContext
) -> None:
    configured.connect(CONNECTION_ID)

    handler(load_event("default_ping"), lambda_context)
    handler(load_event("default_ping"), lambda_context)

    assert list(handlers.default._apis) == [configured.endpoint]
    assert len(configured.messages(CONNECTION_ID)) == 2


def test_handler_uses_the_endpoint_override_when_not_configured(
    management_api: FakeManagementApi,
    monkeypatch: pytest.MonkeyPatch,
    lambda_context: FakeContext,
) -> None:
    monkeypatch.setattr(
        handlers.default,
        "CONFIG",
        dataclasses.replace(handlers.default.CONFIG, management_endpoint=None),
    )
    monkeypatch.setattr(handlers.default, "_apis", {})
    monkeypatch.setenv(OVERRIDE, management_api.endpoint)
    management_api.connect(CONNECTION_ID)

    handler(load_event("default_ping"), lambda_context)

    assert management_api.messages(CONNECTION_ID) == [{"type": "pong", "id": "req-42"}]


@pytest.fixture
def endpoints_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replaces api_for: records the endpoint handler() chose and answers 200 locally."""
    used: list[str] = []

    def api_for(endpoint: str) -> RecordingPoster:
        used.append(endpoint)
        return RecordingPoster()

    monkeypatch.setattr(handlers.default, "api_for", api_for)
    monkeypatch.setattr(
        handlers.default,
        "CONFIG",
        dataclasses.replace(handlers.default.CONFIG, management_endpoint=None),
    )
    return used


def test_handler_derives_the_endpoint_from_the_request(
    endpoints_used: list[str], lambda_context: FakeContext
) -> None:
    handler(load_event("default_ping"), lambda_context)

    assert endpoints_used == [REQUEST_ENDPOINT]


def test_handler_prefers_the_configured_endpoint_over_the_override(
    endpoints_used: list[str], monkeypatch: pytest.MonkeyPatch, lambda_context: FakeContext
) -> None:
    monkeypatch.setattr(
        handlers.default,
        "CONFIG",
        dataclasses.replace(handlers.default.CONFIG, management_endpoint="https://configured/x"),
    )
    monkeypatch.setenv(OVERRIDE, "http://override.invalid/dev")

    handler(load_event("default_ping"), lambda_context)

    assert endpoints_used == ["https://configured/x"]


def test_handler_without_any_endpoint_returns_200_and_logs(
    endpoints_used: list[str], lambda_context: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    event = load_event("default_ping")
    del event["requestContext"]["apiId"]

    answer = handler(event, lambda_context)

    assert answer == {"statusCode": 200}
    assert endpoints_used == []
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "cannot answer: no management endpoint"


# --- endpoint_from_request ----------------------------------------------------------------


def test_endpoint_is_built_from_the_api_id_region_and_stage() -> None:
    request_context = load_event("default_ping")["requestContext"]

    assert endpoint_from_request(request_context) == REQUEST_ENDPOINT


def test_endpoint_behind_a_custom_domain_is_still_execute_api() -> None:
    """Behind a custom domain ``domainName`` is the custom host (with its own mapping path),
    where @connections does not answer: the endpoint is built from ``apiId``."""
    request_context = load_event("default_ping")["requestContext"]
    request_context["domainName"] = "realtime.example.com"

    assert endpoint_from_request(request_context) == REQUEST_ENDPOINT


def test_endpoint_override_wins_over_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE, "http://127.0.0.1:4510/local")

    endpoint = endpoint_from_request(load_event("default_ping")["requestContext"])

    assert endpoint == "http://127.0.0.1:4510/local"


def test_blank_endpoint_override_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE, "   ")

    endpoint = endpoint_from_request(load_event("default_ping")["requestContext"])

    assert endpoint == REQUEST_ENDPOINT


@pytest.mark.parametrize("missing", ["apiId", "stage"])
def test_endpoint_cannot_be_built_without_api_id_or_stage(missing: str) -> None:
    request_context = load_event("default_ping")["requestContext"]
    del request_context[missing]

    with pytest.raises(ValueError, match="apiId/stage"):
        endpoint_from_request(request_context)


# --- subscriptions: storage in moto -------------------------------------------------------

SUBSCRIPTIONS = CONFIG.subscriptions_table
SOURCES = {
    "events": {
        "table": "events-862417b",
        "keys": [["PK", "S"], ["SK", "S"]],
        "oldImage": True,
        "access": [{"table": True}],
    },
    "orders": {
        "table": "orders-1",
        "keys": [["PK", "S"], ["SK", "S"]],
        "oldImage": True,
        "access": [
            {"key": {"PK": "USER#{sub}"}},
            {"key": {"PK": "TENANT#{claims.tenant}"}, "fields": ["status", "total"]},
            {"table": True, "when": {"claims.role": "admin"}},
        ],
    },
    "feed": {
        "table": "feed-1",
        "keys": [["id", "N"]],
        "oldImage": False,
        "access": [{"table": True}, {"key": {"id": "{sub}"}}],
    },
    "locked": {"table": "locked-1", "keys": [["PK", "S"]], "oldImage": True},
    "wide": {"table": "wide-1", "oldImage": True, "access": [{"table": True}]},
}
FORBIDDEN = "this connection may not subscribe to that"


def settings_with(**env: str) -> DefaultConfig:
    return config.default_config(
        {
            "CONNECTIONS_TABLE": CONFIG.connections_table,
            "SUBSCRIPTIONS_TABLE": SUBSCRIPTIONS,
            "SOURCES": json.dumps(SOURCES),
            **env,
        }
    )


RULES = settings_with()


@pytest.fixture
def tables(dynamodb: Any, connections_table: str) -> Any:
    create_subscriptions_table(dynamodb, SUBSCRIPTIONS)
    return dynamodb


def connect(
    client: Any,
    connection_id: str = CONNECTION_ID,
    *,
    user: str | None = "alice",
    claims: dict[str, Any] | None = None,
    expires_at: int | None = None,
) -> None:
    item = connection_item(
        connection_id,
        user_id=user,
        now=1_795_000_000,
        ttl_seconds=7200,
        source_ip=None,
        claims=json.dumps(claims) if claims else None,
        expires_at=expires_at,
    )
    client.put_item(TableName=CONFIG.connections_table, Item=item)


def send(
    client: Any,
    message: Any,
    *,
    cfg: DefaultConfig = RULES,
    connection_id: str = CONNECTION_ID,
) -> dict[str, Any]:
    body = message if isinstance(message, str) else json.dumps(message)
    return reply_for(
        body,
        False,
        cfg.max_input_bytes,
        connection_id=connection_id,
        store=DynamoStore(cfg, client),
        settings=cfg,
    )


def subscribe(client: Any, sub_id: str = "s1", **fields: Any) -> dict[str, Any]:
    cfg = fields.pop("cfg", RULES)
    connection_id = fields.pop("connection_id", CONNECTION_ID)
    fields.setdefault("table", "events")
    message = {"action": "subscribe", "id": sub_id, **fields}
    return send(client, message, cfg=cfg, connection_id=connection_id)


def stored(client: Any) -> dict[str, dict[str, Any]]:
    """sort key -> item, every subscription stored."""
    return {i["sk"]["S"]: i for i in subscription_items(client, SUBSCRIPTIONS)}


def subs_of(client: Any, connection_id: str = CONNECTION_ID) -> dict[str, str]:
    return read_connection(client, CONFIG.connections_table, connection_id).subs


def assert_refused(reply: dict[str, Any], code: str, sub_id: str | None = "s1") -> None:
    expected = {"type", "code", "message"} | ({"id"} if sub_id is not None else set())
    assert set(reply) == expected, reply
    assert reply["type"] == "error" and reply["code"] == code, reply
    assert reply.get("id") == sub_id
    assert reply["message"].strip()


def test_table_wide_subscribe_is_stored_on_the_connections_table_bucket(tables: Any) -> None:
    connect(tables)

    reply = subscribe(tables, "s1")

    assert reply == {"type": "subscribed", "id": "s1"}
    topic = table_topic("events", bucket_of(CONNECTION_ID, RULES.table_buckets))
    [item] = stored(tables).values()
    assert item == {
        "topic": {"S": topic},
        "sk": {"S": f"{CONNECTION_ID} s1"},
        "connectionId": {"S": CONNECTION_ID},
        "subId": {"S": "s1"},
        "source": {"S": "events"},
        "userId": {"S": "alice"},
        "ttl": {"N": str(1_795_000_000 + 7200)},
    }
    assert subs_of(tables) == {"s1": topic}


def test_partition_and_item_subscriptions_go_to_their_key_topics(tables: Any) -> None:
    connect(tables)

    subscribe(tables, "p", key={"PK": "EVENT#1"})
    subscribe(tables, "i", key={"PK": "EVENT#1", "SK": "METADATA"})

    partition = key_topic("events", [typed_part("S", "EVENT#1")])
    item = key_topic("events", [typed_part("S", "EVENT#1"), typed_part("S", "METADATA")])
    assert subs_of(tables) == {"p": partition, "i": item}
    assert {sk: i["topic"]["S"] for sk, i in stored(tables).items()} == {
        f"{CONNECTION_ID} p": partition,
        f"{CONNECTION_ID} i": item,
    }


def test_number_keys_share_a_topic_whatever_their_spelling(tables: Any) -> None:
    connect(tables, user="5")

    subscribe(tables, "a", table="feed", key={"id": 5})
    subscribe(tables, "b", table="feed", key={"id": "5.0"})

    assert subs_of(tables)["a"] == subs_of(tables)["b"] == key_topic("feed", ["N1:5"])


def test_filter_is_stored_as_json_the_broadcaster_compiles_to_the_same_filter(
    tables: Any,
) -> None:
    connect(tables)
    raw = [{"status": {"in": ["paid", "ready"]}, "total": {"gt": 20.5}}, {"meta.tag": "x"}]

    assert subscribe(tables, "s1", filter=raw)["type"] == "subscribed"

    [item] = stored(tables).values()
    assert json.loads(item["filter"]["S"]) == raw
    assert subscription_of(item).filter == parse_filter(raw)
    assert "fields" not in item  # the table rule grants every field


@pytest.mark.parametrize("operator", ["bare", "eq", "in", "ge-and-le"])
def test_filter_numbers_keep_every_digit_from_message_to_broadcaster(
    tables: Any, operator: str
) -> None:
    literal = "12345678901234567890.5"  # 21 significant digits: a double holds about 17
    condition = {
        "bare": literal,
        "eq": f'{{"eq": {literal}}}',
        "in": f'{{"in": [{literal}]}}',
        "ge-and-le": f'{{"ge": {literal}, "le": {literal}}}',
    }[operator]
    connect(tables)
    body = (
        '{"action": "subscribe", "id": "s1", "table": "events", "filter": '
        f'[{{"n": {condition}}}]}}'
    )

    assert send(tables, body) == {"type": "subscribed", "id": "s1"}

    [item] = stored(tables).values()
    assert literal in item["filter"]["S"]  # stored with every digit
    compiled = subscription_of(item).filter  # what the broadcaster compiles
    assert matches(compiled, {"n": {"N": literal}})
    assert matches(compiled, {"n": {"N": "12345678901234567890.50"}})  # same value
    assert not matches(compiled, {"n": {"N": "12345678901234567890.4"}})
    assert not matches(compiled, {"n": {"N": "12345678901234567890"}})
    assert not matches(compiled, {"n": {"N": "12345678901234567000"}})  # what a double holds


def test_ping_id_with_a_fraction_is_still_not_echoed_and_nan_still_refused(tables: Any) -> None:
    assert send(tables, '{"action": "ping", "id": 1.5}') == {"type": "pong"}
    assert send(tables, '{"action": "ping", "id": 12345678901234567890.5}') == {"type": "pong"}
    assert send(tables, '{"action": "ping", "id": NaN}')["code"] == "invalid_json"
    assert send(tables, '{"action": "ping", "id": 1e400}')["code"] == "invalid_json"


def test_subscribing_again_with_the_same_id_replaces_the_subscription(tables: Any) -> None:
    connect(tables)
    subscribe(tables, "s1")

    reply = subscribe(tables, "s1", key={"PK": "EVENT#1"}, filter=[{"a": 1}])

    assert reply == {"type": "subscribed", "id": "s1"}
    [item] = stored(tables).values()
    assert item["topic"]["S"] == key_topic("events", [typed_part("S", "EVENT#1")])
    assert json.loads(item["filter"]["S"]) == [{"a": 1}]
    assert subs_of(tables) == {"s1": item["topic"]["S"]}


def test_the_same_subscribe_twice_stores_one_subscription(tables: Any) -> None:
    connect(tables)

    first = subscribe(tables, "s1", key={"PK": "EVENT#1"})
    second = subscribe(tables, "s1", key={"PK": "EVENT#1"})

    assert first == second == {"type": "subscribed", "id": "s1"}
    assert list(stored(tables)) == [f"{CONNECTION_ID} s1"]


def test_unsubscribe_removes_the_subscription_and_its_map_entry(tables: Any) -> None:
    connect(tables)
    subscribe(tables, "s1")
    subscribe(tables, "s2", key={"PK": "EVENT#1"})

    reply = send(tables, {"action": "unsubscribe", "id": "s1"})

    assert reply == {"type": "unsubscribed", "id": "s1"}
    assert list(stored(tables)) == [f"{CONNECTION_ID} s2"]
    assert list(subs_of(tables)) == ["s2"]


@pytest.mark.parametrize("times", [1, 2])
def test_unsubscribe_of_an_unknown_id_is_answered_unsubscribed(tables: Any, times: int) -> None:
    connect(tables)
    subscribe(tables, "kept")

    for _ in range(times):
        reply = send(tables, {"action": "unsubscribe", "id": "never"})

    assert reply == {"type": "unsubscribed", "id": "never"}
    assert list(stored(tables)) == [f"{CONNECTION_ID} kept"]


def test_unsubscribe_touches_only_the_senders_subscription(tables: Any) -> None:
    connect(tables)
    connect(tables, "other", user="bob")
    subscribe(tables, "s1")
    subscribe(tables, "s1", connection_id="other")

    send(tables, {"action": "unsubscribe", "id": "s1"}, connection_id="other")

    assert list(stored(tables)) == [f"{CONNECTION_ID} s1"]


def test_subscription_limit_refuses_one_more_and_stores_nothing(tables: Any) -> None:
    cfg = settings_with(MAX_SUBSCRIPTIONS="2")
    connect(tables)
    subscribe(tables, "s1", cfg=cfg)
    subscribe(tables, "s2", cfg=cfg, key={"PK": "EVENT#1"})

    reply = subscribe(tables, "s3", cfg=cfg)

    assert_refused(reply, "too_many_subscriptions", "s3")
    assert "2" in reply["message"]
    assert sorted(stored(tables)) == [f"{CONNECTION_ID} s1", f"{CONNECTION_ID} s2"]
    assert sorted(subs_of(tables)) == ["s1", "s2"]


def test_at_the_limit_a_subscription_can_still_be_replaced_and_one_freed(tables: Any) -> None:
    cfg = settings_with(MAX_SUBSCRIPTIONS="1")
    connect(tables)
    subscribe(tables, "s1", cfg=cfg)

    assert subscribe(tables, "s1", cfg=cfg, key={"PK": "EVENT#9"})["type"] == "subscribed"
    send(tables, {"action": "unsubscribe", "id": "s1"}, cfg=cfg)
    assert subscribe(tables, "s2", cfg=cfg)["type"] == "subscribed"

    assert list(stored(tables)) == [f"{CONNECTION_ID} s2"]


# --- access rules -------------------------------------------------------------------------


def test_a_source_without_rules_refuses_every_subscription(tables: Any) -> None:
    connect(tables, claims={"role": "admin"})

    for message in ({}, {"key": {"PK": "anything"}}):
        reply = subscribe(tables, "s1", table="locked", **message)
        assert_refused(reply, "forbidden")
        assert reply["message"] == FORBIDDEN

    assert stored(tables) == {}
    assert subs_of(tables) == {}


def test_own_partition_is_allowed_and_another_users_is_forbidden(tables: Any) -> None:
    connect(tables, user="alice")

    own = subscribe(tables, "mine", table="orders", key={"PK": "USER#alice"})
    item = subscribe(tables, "item", table="orders", key={"PK": "USER#alice", "SK": "ORDER#1"})
    other = subscribe(tables, "theirs", table="orders", key={"PK": "USER#bob"})

    assert own == {"type": "subscribed", "id": "mine"}
    assert item == {"type": "subscribed", "id": "item"}
    assert_refused(other, "forbidden", "theirs")
    assert sorted(subs_of(tables)) == ["item", "mine"]


def test_a_connection_without_identity_is_forbidden_where_rules_need_one(tables: Any) -> None:
    connect(tables, user=None)

    for key in ({"PK": "USER#"}, {"PK": "USER#{sub}"}, {"PK": "USER#None"}):
        assert_refused(subscribe(tables, "s1", table="orders", key=key), "forbidden")
    assert_refused(subscribe(tables, "s1", table="orders"), "forbidden")
    assert subscribe(tables, "s1", table="events")["type"] == "subscribed"  # a rule without one


def test_identity_comes_from_the_stored_record_never_from_the_message(tables: Any) -> None:
    connect(tables, user="alice")

    reply = subscribe(
        tables,
        "s1",
        table="orders",
        key={"PK": "USER#bob"},
        userId="bob",
        sub="bob",
        claims={"role": "admin"},
    )

    assert_refused(reply, "forbidden")


def test_claim_placeholder_allows_the_claimed_tenant_only(tables: Any) -> None:
    connect(tables, user="alice", claims={"tenant": "acme"})

    ours = subscribe(tables, "ours", table="orders", key={"PK": "TENANT#acme"})
    theirs = subscribe(tables, "theirs", table="orders", key={"PK": "TENANT#globex"})

    assert ours == {"type": "subscribed", "id": "ours"}
    assert_refused(theirs, "forbidden", "theirs")


def test_without_the_claim_the_placeholder_rule_never_matches(tables: Any) -> None:
    connect(tables, user="alice")

    assert_refused(subscribe(tables, "s1", table="orders", key={"PK": "TENANT#"}), "forbidden")


def test_when_condition_on_a_claim_gates_table_wide_subscriptions(tables: Any) -> None:
    connect(tables, "admin", user="root", claims={"role": "admin"})
    connect(tables, "viewer", user="eve", claims={"role": "viewer"})

    admin = subscribe(tables, "all", table="orders", connection_id="admin")
    viewer = subscribe(tables, "all", table="orders", connection_id="viewer")

    assert admin == {"type": "subscribed", "id": "all"}
    assert_refused(viewer, "forbidden", "all")
    assert list(stored(tables)) == ["admin all"]


def test_a_field_trimming_rule_stores_its_fields(tables: Any) -> None:
    connect(tables, claims={"tenant": "acme"})

    subscribe(tables, "s1", table="orders", key={"PK": "TENANT#acme"})

    [item] = stored(tables).values()
    assert item["fields"] == {"L": [{"S": "status"}, {"S": "total"}]}
    assert subscription_of(item).fields == frozenset({"status", "total"})


def test_a_filter_on_a_field_the_rule_hides_is_invalid_and_stores_nothing(tables: Any) -> None:
    connect(tables, claims={"tenant": "acme"})

    reply = subscribe(
        tables,
        "s1",
        table="orders",
        key={"PK": "TENANT#acme"},
        filter=[{"status": "paid"}, {"secret": {"exists": True}}],
    )

    assert_refused(reply, "invalid_subscription")
    assert "'secret'" in reply["message"]
    assert stored(tables) == {}


@pytest.mark.parametrize(
    "raw", [[{"status": "paid"}], [{"total": {"gt": 5}, "SK": {"beginsWith": "ORDER#"}}]]
)
def test_a_filter_on_granted_fields_or_key_attributes_is_accepted(
    tables: Any, raw: list[Any]
) -> None:
    connect(tables, claims={"tenant": "acme"})

    reply = subscribe(tables, "s1", table="orders", key={"PK": "TENANT#acme"}, filter=raw)

    assert reply == {"type": "subscribed", "id": "s1"}


def test_a_refused_replacement_leaves_the_previous_subscription_in_place(tables: Any) -> None:
    connect(tables, user="alice")
    subscribe(tables, "s1", table="orders", key={"PK": "USER#alice"})
    before = stored(tables)

    assert_refused(subscribe(tables, "s1", table="orders", key={"PK": "USER#bob"}), "forbidden")

    assert stored(tables) == before
    assert list(subs_of(tables)) == ["s1"]


def test_refusals_say_the_same_thing_whatever_rule_or_data_decided(tables: Any) -> None:
    """A forbidden reply names no rule, template, claim or user: only the code and one text."""
    connect(tables, user="alice", claims={"tenant": "acme", "role": "viewer"})
    replies = [
        subscribe(tables, "s1", table="orders", key={"PK": "USER#bob"}),
        subscribe(tables, "s1", table="orders", key={"PK": "TENANT#globex"}),
        subscribe(tables, "s1", table="orders"),
        subscribe(tables, "s1", table="locked", key={"PK": "x"}),
    ]

    assert {reply["message"] for reply in replies} == {FORBIDDEN}
    text = json.dumps(replies)
    for secret in ("USER#{sub}", "claims", "acme", "viewer", "admin", "alice", "status"):
        assert secret not in text


# --- refused subscribe messages -----------------------------------------------------------


def test_unknown_table_is_refused_without_listing_the_sources(tables: Any) -> None:
    connect(tables)

    reply = subscribe(tables, "s1", table="events-862417b")  # the physical name is no label

    assert_refused(reply, "unknown_table")
    for label in ("orders", "feed", "locked"):
        assert label not in reply["message"]
    assert stored(tables) == {}


def test_unknown_table_message_quotes_a_long_label_cut_short(tables: Any) -> None:
    connect(tables)

    reply = subscribe(tables, "s1", table="T" * 5000)

    assert_refused(reply, "unknown_table")
    assert len(reply["message"]) < 200


@pytest.mark.parametrize("table", [None, "", 5, ["events"], {"events": True}])
def test_table_that_is_not_a_label_is_an_invalid_subscription(tables: Any, table: Any) -> None:
    connect(tables)
    message: dict[str, Any] = {"action": "subscribe", "id": "s1"}
    if table is not None:
        message["table"] = table

    assert_refused(send(tables, message), "invalid_subscription")


BAD_KEYS = {
    "string_key_given_a_number": ("events", {"PK": 5}),
    "string_key_given_empty": ("events", {"PK": ""}),
    "string_key_given_a_list": ("events", {"PK": ["a"]}),
    "string_key_given_null": ("events", {"PK": None}),
    "sort_key_given_a_bool": ("events", {"PK": "A", "SK": True}),
    "number_key_given_text": ("feed", {"id": "abc"}),
    "number_key_given_a_bool": ("feed", {"id": True}),
    "number_key_given_infinity": ("feed", {"id": "Infinity"}),
    "no_partition_key": ("events", {"SK": "METADATA"}),
    "not_a_key_attribute": ("events", {"PK": "A", "title": "x"}),
    "empty_key": ("events", {}),
    "key_not_an_object": ("events", ["PK", "A"]),
    "key_on_a_source_without_key_schema": ("wide", {"PK": "A"}),
    "too_long": ("events", {"PK": "x" * 2049}),
}


@pytest.mark.parametrize("case", sorted(BAD_KEYS))
def test_a_key_that_does_not_fit_the_sources_schema_is_invalid(tables: Any, case: str) -> None:
    table, key = BAD_KEYS[case]
    connect(tables)

    reply = subscribe(tables, "s1", table=table, key=key)

    assert_refused(reply, "invalid_subscription")
    assert stored(tables) == {}


BAD_FILTERS = {
    "empty_list": [],
    "not_a_list": {"status": "paid"},
    "bare_value": "paid",
    "empty_group": [{}],
    "unknown_operator": [{"status": {"like": "p%"}}],
    "bare_list": [{"status": ["a", "b"]}],
    "too_many_groups": [{"a": 1}] * 6,
    "too_many_conditions": [{f"a{n}": n for n in range(11)}],
    "between_reversed": [{"total": {"between": [9, 1]}}],
    "too_large": [{"a": {"in": ["x" * 100] * 50}}],
    "empty_path_part": [{"a..b": 1}],
}


@pytest.mark.parametrize("case", sorted(BAD_FILTERS))
def test_a_bad_filter_is_an_invalid_subscription_saying_why(tables: Any, case: str) -> None:
    connect(tables)

    reply = subscribe(tables, "s1", filter=BAD_FILTERS[case])

    assert_refused(reply, "invalid_subscription")
    assert "filter" in reply["message"] or "path" in reply["message"]
    assert stored(tables) == {}


def test_a_source_streaming_new_images_only_refuses_filters(tables: Any) -> None:
    connect(tables)

    filtered = subscribe(tables, "f", table="feed", filter=[{"kind": "news"}])
    plain = subscribe(tables, "p", table="feed")

    assert_refused(filtered, "invalid_subscription", "f")
    assert "old" in filtered["message"]
    assert plain == {"type": "subscribed", "id": "p"}
    assert list(subs_of(tables)) == ["p"]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("snapshot", "yes", "true or false"),
        ("snapshot", 0, "true or false"),
    ],
)
def test_snapshot_of_the_wrong_type_is_invalid_and_stores_nothing(
    tables: Any, field: str, value: Any, says: str
) -> None:
    connect(tables)

    reply = subscribe(tables, "s1", key={"PK": "EVENT#1"}, **{field: value})

    assert_refused(reply, "invalid_subscription")
    assert says in reply["message"]
    assert stored(tables) == {}


def test_a_table_wide_snapshot_is_invalid_and_stores_nothing(tables: Any) -> None:
    connect(tables)

    reply = subscribe(tables, "s1", snapshot=True)

    assert_refused(reply, "invalid_subscription")
    assert "needs a key" in reply["message"]
    assert stored(tables) == {}


@pytest.mark.parametrize(
    ("field", "value"), [("snapshot", False), ("snapshot", None), ("after", None)]
)
def test_snapshot_false_and_null_after_are_accepted(tables: Any, field: str, value: Any) -> None:
    connect(tables)

    assert subscribe(tables, "s1", **{field: value}) == {"type": "subscribed", "id": "s1"}


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe"])
@pytest.mark.parametrize("sub_id", [None, "", "x" * 65, 7, ["s1"], {"id": 1}, True, "\ud800"])
def test_a_bad_subscription_id_is_refused_without_an_id(
    tables: Any, action: str, sub_id: Any
) -> None:
    connect(tables)
    subscribe(tables, "kept")
    message: dict[str, Any] = {"action": action, "table": "events"}
    if sub_id is not None:
        message["id"] = sub_id

    reply = send(tables, message)

    assert_refused(reply, "invalid_subscription", None)
    assert "1 to 64" in reply["message"]
    assert list(stored(tables)) == [f"{CONNECTION_ID} kept"]


def test_an_id_of_64_characters_is_accepted_and_echoed(tables: Any) -> None:
    connect(tables)
    sub_id = "é" * 64  # characters, not bytes

    assert subscribe(tables, sub_id) == {"type": "subscribed", "id": sub_id}
    reply = send(tables, {"action": "unsubscribe", "id": sub_id})
    assert reply == {"type": "unsubscribed", "id": sub_id}


@pytest.mark.parametrize("where", ["table", "key", "filter"])
def test_unpaired_surrogates_in_a_subscribe_are_invalid_not_a_storage_failure(
    tables: Any, where: str
) -> None:
    connect(tables)
    fields: dict[str, Any] = {
        "table": {"table": "ev\ud800"},
        "key": {"key": {"PK": "A\ud800"}},
        "filter": {"filter": [{"a": "\udc00"}]},
    }[where]

    reply = subscribe(tables, "s1", **fields)

    assert_refused(reply, "invalid_subscription")
    assert stored(tables) == {}


# --- hello --------------------------------------------------------------------------------


def test_hello_answers_the_version_the_token_expiry_and_the_limits(tables: Any) -> None:
    connect(tables, expires_at=1_795_003_600)

    reply = send(tables, {"action": "hello"}, cfg=settings_with(MAX_SUBSCRIPTIONS="7"))

    assert reply == {
        "type": "hello",
        "version": 2,
        "expiresAt": "2026-11-18T12:06:40.000Z",
        "limits": {"subscriptions": 7},
    }


def test_hello_without_a_token_expiry_answers_null(tables: Any) -> None:
    connect(tables)

    reply = send(tables, {"action": "hello"})

    assert reply["expiresAt"] is None
    assert reply["limits"] == {"subscriptions": 20}


# --- storage failures ---------------------------------------------------------------------


def test_a_subscriptions_table_failure_answers_internal_error_and_is_logged(
    dynamodb: Any, connections_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    connect(dynamodb)  # no subscriptions table was created

    reply = subscribe(dynamodb, "s1")

    assert_refused(reply, "internal_error")
    assert "ResourceNotFound" not in reply["message"]
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "could not store the subscription"
    assert record.exc_info is not None
    assert record.connectionId == CONNECTION_ID  # type: ignore[attr-defined]
    assert subs_of(dynamodb) == {}  # the transaction wrote nothing


@pytest.mark.parametrize(
    "message",
    [
        {"action": "subscribe", "id": "s1", "table": "events"},
        {"action": "unsubscribe", "id": "s1"},
        {"action": "hello"},
    ],
)
def test_without_tables_every_storage_action_answers_internal_error(
    mocked_aws: None, message: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    reply = send(aws.client("dynamodb"), message)

    assert reply["code"] == "internal_error"
    assert reply.get("id") == message.get("id")
    assert any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)


def test_subscribe_from_a_connection_with_no_record_stores_nothing(tables: Any) -> None:
    reply = subscribe(tables, "s1")

    assert_refused(reply, "internal_error")
    assert "reconnect" in reply["message"]
    assert stored(tables) == {}


def test_an_unexpected_bug_is_answered_internal_error_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(handlers.default, "subscribe_request", broken)

    reply = reply_for('{"action": "subscribe", "id": "s1"}', False, 1000)

    assert reply["code"] == "internal_error"
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None


# --- through the handler ------------------------------------------------------------------


def test_handler_subscribes_and_answers_over_the_management_api(
    configured: FakeManagementApi, tables: Any, lambda_context: FakeContext
) -> None:
    configured.connect(CONNECTION_ID)
    connect(tables)
    event = event_with(json.dumps({"action": "subscribe", "id": "s1", "table": "events"}))

    assert handler(event, lambda_context) == {"statusCode": 200}
    handler(event_with('{"action": "hello"}'), lambda_context)

    assert configured.messages(CONNECTION_ID) == [
        {"type": "subscribed", "id": "s1"},
        {"type": "hello", "version": 2, "expiresAt": None, "limits": {"subscriptions": 20}},
    ]
    assert list(stored(tables)) == [f"{CONNECTION_ID} s1"]


def test_sample_subscribe_event_stores_a_filtered_partition_subscription(
    configured: FakeManagementApi, tables: Any, lambda_context: FakeContext
) -> None:
    """tests/events/default_subscribe.json: what API Gateway hands $default for a subscribe.
    Its requestContext.authorizer is not read: the identity is the stored record's."""
    configured.connect(CONNECTION_ID)
    connect(tables, user="user-1")

    handler(load_event("default_subscribe"), lambda_context)

    assert configured.messages(CONNECTION_ID) == [{"type": "subscribed", "id": "s1"}]
    [item] = stored(tables).values()
    assert item["topic"]["S"] == key_topic("events", [typed_part("S", "EVENT#123")])
    assert subscription_of(item).filter == parse_filter([{"count": {"gt": 40}}])
    assert item["userId"] == {"S": "user-1"}


# --- the pure decisions -------------------------------------------------------------------


def test_subscribe_request_compiles_the_message_without_any_io() -> None:
    message = {
        "action": "subscribe",
        "id": "s1",
        "table": "orders",
        "key": {"PK": "TENANT#acme"},
        "filter": [{"status": "paid"}],
    }

    request = subscribe_request(message, RULES.sources, "c1", 4)

    assert request.sub_id == "s1"
    assert request.source.label == "orders"
    assert request.key == {"PK": "TENANT#acme"}
    assert request.topic == key_topic("orders", [typed_part("S", "TENANT#acme")])
    assert request.filter == parse_filter([{"status": "paid"}])
    assert request.filter_json == '[{"status":"paid"}]'


def test_table_wide_requests_spread_over_the_buckets() -> None:
    message = {"action": "subscribe", "id": "s1", "table": "events"}
    topics = {subscribe_request(message, RULES.sources, f"c{n}", 4).topic for n in range(64)}

    assert topics == {table_topic("events", bucket) for bucket in range(4)}


def test_authorize_grants_fields_and_refuses_with_the_subscription_id() -> None:
    message = {"action": "subscribe", "id": "s9", "table": "orders", "key": {"PK": "TENANT#a"}}
    request = subscribe_request(message, RULES.sources, "c1", 4)

    granted = authorize(request, {"sub": "u", "claims": {"tenant": "a"}})
    with pytest.raises(Refusal) as refused:
        authorize(request, {"sub": "u", "claims": {"tenant": "b"}})

    assert granted.fields == frozenset({"status", "total"})
    assert (refused.value.code, refused.value.sub_id) == ("forbidden", "s9")


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (None, {}),
        ('{"tenant": "a"}', {"tenant": "a"}),
        ("not json", {}),
        ("[1, 2]", {}),
        ('{"x": NaN}', {}),
    ],
)
def test_identity_of_a_record_reads_its_stored_claims(
    claims: str | None, expected: dict[str, Any]
) -> None:
    connection = Connection("c1", user_id="u", claims=claims, ttl=None, subs={})

    assert identity_of(connection) == {"sub": "u", "claims": expected}


def test_the_readme_error_table_lists_every_code_the_handler_answers() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    protocol = readme.split("\n## Protocol (version 2)\n", 1)[1].split("\n## ", 1)[0]
    section = protocol.split("\n### Errors\n", 1)[1].split("\n### ", 1)[0]
    assert readme.count("| code | when |") == 1  # one table of error codes, not two
    table = section.split("| code | when |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE))

    assert documented == ERROR_CODES | {"invalid_token"}
    for code in ERROR_CODES:
        assert f'"{code}"' in Path(handlers.default.__file__).read_text()
