"""$connect: the connection record stored in (moto) DynamoDB, and CONNECTION_TTL_SECONDS."""

import json
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest

import handlers.connect
from handlers import config
from handlers.config import ConfigError
from handlers.connect import handler
from tests.helpers import FakeContext, connection_ids, load_event

CONNECTION_ID = "L0SM9cOFvHcCIhw="
ANONYMOUS_CONNECTION_ID = "Mx7Yl2AbIAMCJnQ="
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def stored(dynamodb: Any, table: str, connection_id: str) -> dict[str, Any]:
    found = dynamodb.get_item(TableName=table, Key={"connectionId": {"S": connection_id}})
    assert "Item" in found, f"no record stored for {connection_id}"
    return found["Item"]


def test_connect_accepts_the_connection(
    connections_table: str, lambda_context: FakeContext
) -> None:
    answer = handler(load_event("connect"), lambda_context)

    assert answer["statusCode"] == 200


def test_record_is_keyed_by_the_connection_id(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    handler(load_event("connect"), lambda_context)

    assert connection_ids(dynamodb, connections_table) == {CONNECTION_ID}


def test_record_holds_the_authorizer_user_id(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    handler(load_event("connect"), lambda_context)

    assert stored(dynamodb, connections_table, CONNECTION_ID)["userId"] == {"S": "user-1"}


def test_authorizer_user_id_wins_over_the_query_parameter(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect")
    event["queryStringParameters"]["user_id"] = "someone-else"

    handler(event, lambda_context)

    assert stored(dynamodb, connections_table, CONNECTION_ID)["userId"] == {"S": "user-1"}


def test_record_connected_at_is_iso_8601_utc_near_now(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    before = time.time()
    handler(load_event("connect"), lambda_context)
    after = time.time()

    connected_at = stored(dynamodb, connections_table, CONNECTION_ID)["connectedAt"]["S"]
    assert ISO_UTC.match(connected_at), connected_at
    moment = datetime.fromisoformat(connected_at)
    assert moment.utcoffset() is not None
    assert moment.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert before - 1 <= moment.astimezone(UTC).timestamp() <= after + 1


def test_record_ttl_is_now_plus_the_default_two_hours(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    assert handlers.connect.CONFIG.ttl_seconds == 7200
    before = time.time()
    handler(load_event("connect"), lambda_context)
    after = time.time()

    ttl = stored(dynamodb, connections_table, CONNECTION_ID)["ttl"]
    assert set(ttl) == {"N"}
    assert int(before) + 7200 - 2 <= int(ttl["N"]) <= after + 7200 + 2


def test_record_ttl_follows_the_configured_seconds(
    dynamodb: Any,
    connections_table: str,
    lambda_context: FakeContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        handlers.connect,
        "CONFIG",
        config.connect_config(
            {"CONNECTIONS_TABLE": connections_table, "CONNECTION_TTL_SECONDS": "600"}
        ),
    )
    now = time.time()

    handler(load_event("connect"), lambda_context)

    ttl = int(stored(dynamodb, connections_table, CONNECTION_ID)["ttl"]["N"])
    assert abs(ttl - (now + 600)) <= 2


def test_record_holds_the_source_ip(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    handler(load_event("connect"), lambda_context)

    assert stored(dynamodb, connections_table, CONNECTION_ID)["sourceIp"] == {"S": "203.0.113.10"}


def test_record_without_identity_has_no_source_ip(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect")
    del event["requestContext"]["identity"]

    assert handler(event, lambda_context)["statusCode"] == 200

    assert "sourceIp" not in stored(dynamodb, connections_table, CONNECTION_ID)


def test_record_holds_exactly_the_documented_attributes(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    handler(load_event("connect"), lambda_context)

    assert set(stored(dynamodb, connections_table, CONNECTION_ID)) == {
        "connectionId",
        "userId",
        "connectedAt",
        "ttl",
        "sourceIp",
        "claims",
        "expiresAt",
        "expiryMinute",
        "subs",
    }


# --- identity for access rules: claims, expiresAt, subs -----------------------------------


def test_record_holds_the_authorizer_claims_as_json_text(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    handler(load_event("connect"), lambda_context)

    claims = stored(dynamodb, connections_table, CONNECTION_ID)["claims"]
    assert set(claims) == {"S"}
    assert json.loads(claims["S"]) == {"tenant": "acme"}


def test_record_holds_the_token_expiry_as_a_number(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    handler(load_event("connect"), lambda_context)

    assert stored(dynamodb, connections_table, CONNECTION_ID)["expiresAt"] == {"N": "1795003600"}


def test_expiry_given_as_a_string_is_stored_as_a_number(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    """API Gateway may pass an authorizer's context numbers on as strings."""
    event = load_event("connect")
    event["requestContext"]["authorizer"]["expiresAt"] = "1795003600"

    handler(event, lambda_context)

    assert stored(dynamodb, connections_table, CONNECTION_ID)["expiresAt"] == {"N": "1795003600"}


@pytest.mark.parametrize("bad", ["soon", "", "1.5e9", "١٢٣", "-5", True, None, [1], 1.5, "9" * 21])
def test_unusable_expiry_is_not_stored_and_the_connection_is_accepted(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext, bad: Any
) -> None:
    event = load_event("connect")
    event["requestContext"]["authorizer"]["expiresAt"] = bad

    assert handler(event, lambda_context)["statusCode"] == 200

    assert "expiresAt" not in stored(dynamodb, connections_table, CONNECTION_ID)


def test_record_always_holds_an_empty_subscriptions_map(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    """The subscribe transaction conditions on size(subs): the map must exist from the start."""
    handler(load_event("connect_without_authorizer"), lambda_context)

    assert stored(dynamodb, connections_table, ANONYMOUS_CONNECTION_ID)["subs"] == {"M": {}}


@pytest.mark.parametrize("claims", ["{}", "", "not json", "[1]", '"tenant"', "{'a': 1}", 7, None])
def test_empty_or_malformed_claims_are_not_stored_and_the_connection_is_accepted(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext, claims: Any
) -> None:
    """Claims only widen what rules allow: a bad value is dropped, never guessed at."""
    event = load_event("connect")
    event["requestContext"]["authorizer"]["claims"] = claims

    assert handler(event, lambda_context)["statusCode"] == 200

    record = stored(dynamodb, connections_table, CONNECTION_ID)
    assert "claims" not in record
    assert record["userId"] == {"S": "user-1"}


def test_without_authorizer_no_claims_or_expiry_are_stored_even_if_the_query_names_them(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect_without_authorizer")
    event["queryStringParameters"].update(claims='{"role":"admin"}', expiresAt="1795003600")

    assert handler(event, lambda_context)["statusCode"] == 200

    record = stored(dynamodb, connections_table, ANONYMOUS_CONNECTION_ID)
    assert "claims" not in record and "expiresAt" not in record


def test_claims_with_unpaired_surrogates_are_stored_as_ascii_json(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect")
    event["requestContext"]["authorizer"]["claims"] = '{"tenant": "\ud800"}'

    assert handler(event, lambda_context)["statusCode"] == 200

    text = stored(dynamodb, connections_table, CONNECTION_ID)["claims"]["S"]
    assert json.loads(text) == {"tenant": "\ud800"}


def test_record_does_not_store_the_query_string_token(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect")
    token = event["queryStringParameters"]["token"]

    handler(event, lambda_context)

    item = json.dumps(dynamodb.scan(TableName=connections_table)["Items"])
    assert CONNECTION_ID in item  # the scan did see the record
    assert token not in item


def test_without_authorizer_the_user_id_query_parameter_is_stored(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    answer = handler(load_event("connect_without_authorizer"), lambda_context)

    assert answer["statusCode"] == 200
    record = stored(dynamodb, connections_table, ANONYMOUS_CONNECTION_ID)
    assert record["userId"] == {"S": "user-2"}


def test_without_authorizer_or_query_parameter_no_user_id_is_stored(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect_without_authorizer")
    del event["queryStringParameters"]

    answer = handler(event, lambda_context)

    assert answer["statusCode"] == 200
    record = stored(dynamodb, connections_table, ANONYMOUS_CONNECTION_ID)
    assert "userId" not in record
    assert record["connectionId"] == {"S": ANONYMOUS_CONNECTION_ID}


def test_empty_user_id_query_parameter_stores_no_user_id(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect_without_authorizer")
    event["queryStringParameters"]["user_id"] = ""

    assert handler(event, lambda_context)["statusCode"] == 200

    assert "userId" not in stored(dynamodb, connections_table, ANONYMOUS_CONNECTION_ID)


def test_user_id_of_256_characters_is_accepted(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect")
    event["requestContext"]["authorizer"]["userId"] = "u" * 256

    assert handler(event, lambda_context)["statusCode"] == 200

    assert stored(dynamodb, connections_table, CONNECTION_ID)["userId"] == {"S": "u" * 256}


@pytest.mark.parametrize("source", ["authorizer", "query"])
def test_user_id_over_256_characters_is_refused_and_nothing_is_stored(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext, source: str
) -> None:
    if source == "authorizer":
        event = load_event("connect")
        event["requestContext"]["authorizer"]["userId"] = "u" * 257
    else:
        event = load_event("connect_without_authorizer")
        event["queryStringParameters"]["user_id"] = "u" * 257

    answer = handler(event, lambda_context)

    assert answer["statusCode"] == 400
    assert connection_ids(dynamodb, connections_table) == set()


@pytest.mark.parametrize("request_context", [{}, {"connectionId": ""}, None])
def test_missing_connection_id_is_a_400(
    dynamodb: Any,
    connections_table: str,
    lambda_context: FakeContext,
    request_context: dict[str, Any] | None,
) -> None:
    event = load_event("connect")
    event["requestContext"] = request_context

    answer = handler(event, lambda_context)

    assert answer["statusCode"] == 400
    assert connection_ids(dynamodb, connections_table) == set()


def test_storage_failure_refuses_the_connection_with_a_500(
    mocked_aws: None, lambda_context: FakeContext
) -> None:
    answer = handler(load_event("connect"), lambda_context)  # no table was created

    assert answer["statusCode"] == 500


def test_storage_failure_is_logged_with_the_exception(
    mocked_aws: None, lambda_context: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    handler(load_event("connect"), lambda_context)

    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.name == "handlers.connect"
    assert record.exc_info is not None
    assert "ResourceNotFoundException" in caplog.text
    assert record.connectionId == CONNECTION_ID  # type: ignore[attr-defined]


# --- CONNECTION_TTL_SECONDS ---------------------------------------------------------------


def test_connect_config_reads_the_table_and_ttl() -> None:
    loaded = config.connect_config({"CONNECTIONS_TABLE": "conns", "CONNECTION_TTL_SECONDS": "900"})

    assert loaded == config.ConnectConfig(connections_table="conns", ttl_seconds=900)


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_connection_ttl_defaults_to_two_hours(raw: str | None) -> None:
    env = {"CONNECTIONS_TABLE": "conns"}
    if raw is not None:
        env["CONNECTION_TTL_SECONDS"] = raw

    assert config.connect_config(env).ttl_seconds == 7200


@pytest.mark.parametrize("raw", ["60", "604800", " 3600 "])
def test_connection_ttl_accepts_the_range_bounds(raw: str) -> None:
    env = {"CONNECTIONS_TABLE": "conns", "CONNECTION_TTL_SECONDS": raw}

    assert config.connect_config(env).ttl_seconds == int(raw)


@pytest.mark.parametrize("raw", ["two hours", "7200.5", "1e3", "0x10"])
def test_non_integer_connection_ttl_is_a_config_error_naming_the_variable(raw: str) -> None:
    env = {"CONNECTIONS_TABLE": "conns", "CONNECTION_TTL_SECONDS": raw}

    with pytest.raises(ConfigError, match=r"CONNECTION_TTL_SECONDS=.* is not an integer"):
        config.connect_config(env)


@pytest.mark.parametrize("raw", ["59", "0", "-7200", "604801"])
def test_out_of_range_connection_ttl_is_a_config_error_naming_the_variable(raw: str) -> None:
    env = {"CONNECTIONS_TABLE": "conns", "CONNECTION_TTL_SECONDS": raw}

    with pytest.raises(ConfigError, match=r"CONNECTION_TTL_SECONDS=.* is out of range"):
        config.connect_config(env)


def test_connect_config_without_a_table_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="CONNECTIONS_TABLE"):
        config.connect_config({"CONNECTION_TTL_SECONDS": "600"})


def test_query_parameter_is_never_trusted_when_an_authorizer_ran(
    dynamodb: Any, connections_table: str, lambda_context: FakeContext
) -> None:
    event = load_event("connect")
    event["requestContext"]["authorizer"] = {"principalId": "someone", "integrationLatency": 3}
    event["queryStringParameters"]["user_id"] = "chosen-by-the-client"

    assert handler(event, lambda_context)["statusCode"] == 200

    assert "userId" not in stored(dynamodb, connections_table, CONNECTION_ID)
