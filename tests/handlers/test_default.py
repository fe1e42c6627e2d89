"""$default: replies to client messages, sent through a (fake, local) Management API."""

import base64
import dataclasses
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import handlers.default
from bench.management_api import FakeManagementApi
from handlers import aws, strict_json
from handlers.default import MAX_ECHOED_ID_LENGTH, handler, reply_for, respond
from handlers.dynamo_json import MAX_SAFE_INTEGER
from handlers.management import ManagementApi, Response, endpoint_from_request, frozen_credentials
from tests.helpers import FakeContext, load_event

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
    "unknown_action": ('{"action": "subscribe"}', False),
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

    reply_to('{"action": "subscribe"}')

    [record] = [r for r in caplog.records if r.getMessage() == "client error"]
    assert record.code == "unknown_action"  # type: ignore[attr-defined]
    assert record.connectionId == CONNECTION_ID  # type: ignore[attr-defined]


def test_client_that_has_gone_still_gets_a_200_and_a_warning(
    management_api: FakeManagementApi, api: ManagementApi, caplog: pytest.LogCaptureFixture
) -> None:
    # CONNECTION_ID is not registered: the fake answers 410 GoneException.
    answer = respond(load_event("default_ping"), api)

    assert answer == {"statusCode": 200}
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert record.getMessage() == "could not answer the client"
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
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "action": st.sampled_from(["ping", "Ping", "", "x" * 100]) | st.text() | JSON_VALUES,
        "id": JSON_VALUES,
    },
)
BODIES = st.one_of(
    st.tuples(st.text(), st.just(False)),
    st.tuples(
        st.binary().map(lambda raw: raw.decode("utf-8", errors="surrogateescape")),
        st.just(False),
    ),
    st.tuples(st.binary().map(lambda raw: base64.b64encode(raw).decode()), st.just(True)),
    st.tuples(st.none(), st.booleans()),
    st.tuples((JSON_VALUES | MESSAGES).map(json.dumps), st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(BODIES)
def test_any_body_gets_a_200_and_exactly_one_pong_or_error(body_and_flag: tuple[Any, bool]) -> None:
    body, is_base64 = body_and_flag
    poster = RecordingPoster()

    answer = respond(event_with(body, is_base64=is_base64), poster)

    assert answer == {"statusCode": 200}
    [(connection_id, data)] = poster.posts
    assert connection_id == CONNECTION_ID
    message = strict_json.loads(data.decode("utf-8"))  # the reply itself is standard JSON
    assert message["type"] in ("pong", "error")
    if message["type"] == "error":
        assert message["code"] in ERROR_CODES
        assert message["message"]
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
    del event["requestContext"]["domainName"]

    answer = handler(event, lambda_context)

    assert answer == {"statusCode": 200}
    assert endpoints_used == []
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage() == "cannot answer: no management endpoint"


# --- endpoint_from_request ----------------------------------------------------------------


def test_endpoint_is_built_from_domain_name_and_stage() -> None:
    request_context = load_event("default_ping")["requestContext"]

    assert endpoint_from_request(request_context) == REQUEST_ENDPOINT


def test_endpoint_override_wins_over_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE, "http://127.0.0.1:4510/local")

    endpoint = endpoint_from_request(load_event("default_ping")["requestContext"])

    assert endpoint == "http://127.0.0.1:4510/local"


def test_blank_endpoint_override_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OVERRIDE, "   ")

    endpoint = endpoint_from_request(load_event("default_ping")["requestContext"])

    assert endpoint == REQUEST_ENDPOINT


@pytest.mark.parametrize("missing", ["domainName", "stage"])
def test_endpoint_cannot_be_built_without_domain_name_or_stage(missing: str) -> None:
    request_context = load_event("default_ping")["requestContext"]
    del request_context[missing]

    with pytest.raises(ValueError, match="domainName/stage"):
        endpoint_from_request(request_context)
