"""The RealtimeChannel component, declared under Pulumi mocks and checked as data."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from pulumi.runtime import rpc

from components import (
    AccessRule,
    RealtimeChannel,
    RealtimeChannelArgs,
    RealtimeChannelTransforms,
    SourceFilter,
    StreamSource,
)
from components.realtime_channel import ACCESS_LOG_FORMAT, FUNCTION_KINDS, RUNTIME
from components.sources import SourceError
from handlers import config as handler_config
from handlers.access import parse_rule
from tests.infra.harness import (
    ACCOUNT,
    REGION,
    RecordingMocks,
    run,
    stream_mapping,
    stream_mappings,
)

SECRET = "component-test-secret-0123456789"
FUNCTION = "aws:lambda/function:Function"
ROUTE = "aws:apigatewayv2/route:Route"
PERMISSION = "aws:lambda/permission:Permission"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
POLICY = "aws:iam/rolePolicy:RolePolicy"


def events_table(name: str = "events", view: str = "NEW_AND_OLD_IMAGES", **extra: Any):
    return aws.dynamodb.Table(
        name,
        hash_key="PK",
        attributes=extra.pop("attributes", [aws.dynamodb.TableAttributeArgs(name="PK", type="S")]),
        stream_enabled=extra.pop("stream_enabled", True),
        stream_view_type=view,
        **extra,
    )


def channel_program(
    sources: Callable[[], list[StreamSource]] = lambda: [StreamSource(events_table())],
    captured: dict[str, Any] | None = None,
    **changes: Any,
) -> Callable[[], None]:
    def program() -> None:
        args = RealtimeChannelArgs(sources=sources(), token_secret=SECRET, **changes)
        channel = RealtimeChannel("chat", args)
        if captured is not None:
            captured["channel"] = channel
            for attribute in (
                "url", "management_endpoint", "connections_table_name", "subscriptions_table_name",
                "api_id", "stage_name",
                "dead_letter_queue_url", "fanout_queue_url", "function_names",
            ):  # fmt: skip
                getattr(channel, attribute).apply(
                    lambda value, a=attribute: captured.__setitem__(a, value)
                )

    return program


DECLARED_CHANNEL: dict[str, Any] = {
    "alarms": True,
    "alarm_email": "ops@example.com",
    "target_attribute": "owner",
    "point_in_time_recovery": True,
    "deletion_protection": True,
}


def filtered_source() -> StreamSource:
    return StreamSource(
        events_table(),
        filters=[SourceFilter(event_names=["INSERT", "MODIFY"], new_image={"status": ["live"]})],
        batch_size=50,
        batching_window_seconds=1,
        maximum_retry_attempts=4,
        maximum_record_age_seconds=600,
    )


@pytest.fixture(scope="module")
def declared() -> RecordingMocks:
    """One channel with auth, access logs, alarms by e-mail and a filtered source."""
    return run(channel_program(sources=lambda: [filtered_source()], **DECLARED_CHANNEL))


def outputs_of(mocks: RecordingMocks, name: str) -> dict[str, Any]:
    return mocks.named(name).outputs


def documents(mocks: RecordingMocks) -> dict[str, dict[str, Any]]:
    return {r.name: json.loads(r.inputs["policy"]) for r in mocks.of_type(POLICY)}


# -- API, routes, authorizer -----------------------------------------------------------------


def test_api_is_websocket_routed_by_action(declared: RecordingMocks) -> None:
    api = declared.one("aws:apigatewayv2/api:Api")
    assert api.name == "chat-api"
    assert api.inputs["protocolType"] == "WEBSOCKET"
    assert api.inputs["routeSelectionExpression"] == "$request.body.action"


def test_three_routes_are_lambda_proxy_integrations_of_their_functions(
    declared: RecordingMocks,
) -> None:
    routes = {r.inputs["routeKey"]: r for r in declared.of_type(ROUTE)}
    assert set(routes) == {"$connect", "$disconnect", "$default"}
    for route_key, kind in (
        ("$connect", "connect"),
        ("$disconnect", "disconnect"),
        ("$default", "default"),
    ):
        integration = declared.named(f"chat-{kind}-integration").inputs
        assert integration["integrationType"] == "AWS_PROXY"
        assert integration["integrationUri"] == outputs_of(declared, f"chat-{kind}")["invokeArn"]
        assert routes[route_key].inputs["target"] == f"integrations/chat-{kind}-integration-id"


def test_connect_route_uses_the_request_authorizer_on_the_token(declared: RecordingMocks) -> None:
    authorizer = declared.one("aws:apigatewayv2/authorizer:Authorizer")
    assert authorizer.inputs["authorizerType"] == "REQUEST"
    # no identity source (the token may be in the query or the subprotocol header, and API
    # Gateway skips the authorizer unless every declared source is present); no result TTL
    # (WebSocket authorizers cache nothing, and API Gateway refuses the setting for them)
    assert not authorizer.inputs.get("identitySources")
    assert "authorizerResultTtlInSeconds" not in authorizer.inputs
    assert (
        authorizer.inputs["authorizerUri"] == outputs_of(declared, "chat-authorizer")["invokeArn"]
    )
    routes = {r.inputs["routeKey"]: r.inputs for r in declared.of_type(ROUTE)}
    assert routes["$connect"]["authorizationType"] == "CUSTOM"
    assert routes["$connect"]["authorizerId"] == "chat-token-authorizer-id"
    assert routes["$disconnect"]["authorizationType"] == "NONE"
    assert routes["$default"]["authorizationType"] == "NONE"


def test_each_function_invoked_by_api_gateway_has_one_permission_scoped_to_this_api(
    declared: RecordingMocks,
) -> None:
    execution_arn = outputs_of(declared, "chat-api")["executionArn"]
    permissions = {p.name: p.inputs for p in declared.of_type(PERMISSION)}
    sweeper = permissions.pop("chat-sweeper-invoke")  # EventBridge's, below
    assert sweeper["principal"] == "events.amazonaws.com"
    assert sweeper["sourceArn"] == outputs_of(declared, "chat-sweep")["arn"]
    assert set(permissions) == {
        f"chat-{k}-invoke" for k in ("authorizer", "connect", "disconnect", "default")
    }
    for name, inputs in permissions.items():
        kind = name.removeprefix("chat-").removesuffix("-invoke")
        assert inputs["function"] == outputs_of(declared, f"chat-{kind}")["name"]
        assert inputs["principal"] == "apigateway.amazonaws.com"
        assert inputs["action"] == "lambda:InvokeFunction"
        assert inputs["sourceArn"].startswith(execution_arn + "/")
    assert permissions["chat-connect-invoke"]["sourceArn"] == f"{execution_arn}/dev/$connect"
    assert permissions["chat-authorizer-invoke"]["sourceArn"] == (
        f"{execution_arn}/authorizers/chat-token-authorizer-id"
    )


def test_auth_disabled_declares_no_authorizer_secret_or_function() -> None:
    mocks = run(channel_program(auth_enabled=False))
    assert mocks.of_type("aws:apigatewayv2/authorizer:Authorizer") == []
    parameters = [p.name for p in mocks.of_type("aws:ssm/parameter:Parameter")]
    assert parameters == ["chat-cursor-secret"]  # cursors are signed with auth off too
    assert "chat-authorizer" not in {f.name for f in mocks.of_type(FUNCTION)}
    (connect,) = [r for r in mocks.of_type(ROUTE) if r.inputs["routeKey"] == "$connect"]
    assert connect.inputs["authorizationType"] == "NONE"


# -- secret --------------------------------------------------------------------------------------


def test_token_secret_goes_only_into_an_ssm_secure_string(declared: RecordingMocks) -> None:
    parameter = declared.one("aws:ssm/parameter:Parameter", "chat-token-secret")
    assert parameter.inputs["type"] == "SecureString"
    # the value reaches the engine wrapped as a Pulumi secret, never as plain text
    assert parameter.inputs["value"] == {
        rpc._special_sig_key: rpc._special_secret_sig,
        "value": SECRET,
    }
    others = [r for r in declared.resources if r is not parameter]
    assert SECRET not in json.dumps([(r.inputs, r.outputs) for r in others], default=str)
    env = outputs_of(declared, "chat-authorizer")["environment"]["variables"]
    assert env == {
        "TOKEN_SECRET_PARAMETER": outputs_of(declared, "chat-token-secret")["name"],
        "TOKEN_MAX_LIFETIME_SECONDS": "86400",
        "IDENTITY_CLAIMS": "",  # the source's rules read no claim
    }


@pytest.mark.parametrize("seconds", [60, 3600, 2_592_000])
def test_token_max_lifetime_reaches_the_authorizer(seconds: int) -> None:
    mocks = run(channel_program(token_max_lifetime_seconds=seconds))
    env = mocks.named("chat-authorizer").inputs["environment"]["variables"]
    assert handler_config.authorizer_config(env).token_max_lifetime == seconds


def test_short_token_secret_is_rejected() -> None:
    def short() -> None:
        RealtimeChannel(
            "chat",
            RealtimeChannelArgs(token_secret="too-short", sources=[StreamSource(events_table())]),
        )

    with pytest.raises(ValueError, match="token_secret must be at least 16 characters"):
        run(short)


PASSWORD = "random:index/randomPassword:RandomPassword"


def test_auth_without_a_secret_generates_one_into_the_parameter() -> None:
    mocks = run(lambda: RealtimeChannel("chat", RealtimeChannelArgs()))
    password = mocks.one(PASSWORD, "chat-token-secret-value")
    assert (password.inputs["length"], password.inputs["special"]) == (64, False)
    generated = password.outputs["result"]
    assert len(generated) == 64
    assert mocks.one("aws:ssm/parameter:Parameter", "chat-token-secret").inputs["value"] == {
        rpc._special_sig_key: rpc._special_secret_sig,
        "value": generated,
    }
    others = [
        r for r in mocks.resources if r.name not in ("chat-token-secret-value", "chat-token-secret")
    ]
    assert generated not in json.dumps([(r.inputs, r.outputs) for r in others], default=str)


def test_auth_without_a_secret_previews() -> None:
    mocks = run(lambda: RealtimeChannel("chat", RealtimeChannelArgs()), preview=True)
    assert mocks.one(PASSWORD, "chat-token-secret-value").inputs["length"] == 64
    assert (
        mocks.one("aws:ssm/parameter:Parameter", "chat-token-secret").inputs["type"]
        == "SecureString"
    )


def test_a_given_secret_wins_over_generating_one(declared: RecordingMocks) -> None:
    def tokens(mocks: RecordingMocks) -> list[str]:
        return [r.name for r in mocks.of_type(PASSWORD) if r.name.startswith("chat-token")]

    assert tokens(declared) == []
    assert tokens(run(channel_program(auth_enabled=False))) == []


# -- stage -----------------------------------------------------------------------------------------


def test_stage_auto_deploys_with_throttling_and_json_access_logs(declared: RecordingMocks) -> None:
    stage = declared.one("aws:apigatewayv2/stage:Stage")
    assert stage.inputs["name"] == "dev" and stage.inputs["autoDeploy"] is True
    api_endpoint = outputs_of(declared, "chat-api")["apiEndpoint"]
    assert api_endpoint == f"wss://{stage.inputs['apiId']}.execute-api.{REGION}.amazonaws.com"
    throttling = stage.inputs["defaultRouteSettings"]
    assert (throttling["throttlingBurstLimit"], throttling["throttlingRateLimit"]) == (500, 1000)
    logs = stage.inputs["accessLogSettings"]
    assert logs["destinationArn"] == outputs_of(declared, "chat-access-logs")["arn"]
    assert logs["format"] == ACCESS_LOG_FORMAT
    fields = json.loads(sample_access_log_line(ACCESS_LOG_FORMAT))
    assert {"connectionId", "requestId", "routeKey", "eventType", "status"} <= set(fields)
    assert declared.named("chat-access-logs").inputs["retentionInDays"] == 14


# The $context variables API Gateway supports in WebSocket API access logs, from "Configure
# logging for WebSocket APIs in API Gateway" (developer guide, websocket-api-logging).
# HTTP-API-only variables such as $context.integrationErrorMessage, $context.httpMethod or
# $context.path are deliberately absent: in a WebSocket stage they never resolve.
WEBSOCKET_ACCESS_LOG_VARIABLES = frozenset(
    "$context." + name
    for name in [
        "apiId",
        "authorize.error",
        "authorize.latency",
        "authorize.status",
        "authorizer.error",
        "authorizer.integrationLatency",
        "authorizer.integrationStatus",
        "authorizer.latency",
        "authorizer.requestId",
        "authorizer.status",
        "authorizer.principalId",
        "authenticate.error",
        "authenticate.latency",
        "authenticate.status",
        "connectedAt",
        "connectionId",
        "domainName",
        "error.message",
        "error.messageString",
        "error.responseType",
        "error.validationErrorString",
        "eventType",
        "extendedRequestId",
        "identity.accountId",
        "identity.caller",
        "identity.cognitoAuthenticationProvider",
        "identity.cognitoAuthenticationType",
        "identity.cognitoIdentityId",
        "identity.cognitoIdentityPoolId",
        "identity.principalOrgId",
        "identity.sourceIp",
        "identity.user",
        "identity.userAgent",
        "identity.userArn",
        "integration.error",
        "integration.integrationStatus",
        "integration.latency",
        "integration.requestId",
        "integration.status",
        "integrationLatency",
        "messageId",
        "requestId",
        "requestTime",
        "requestTimeEpoch",
        "routeKey",
        "stage",
        "status",
    ]
)


def test_access_log_format_uses_only_websocket_context_variables() -> None:
    used = set(re.findall(r"\$context\.[A-Za-z0-9_.]*[A-Za-z0-9_]", ACCESS_LOG_FORMAT))
    assert used, "the format logs no variable"
    assert used - WEBSOCKET_ACCESS_LOG_VARIABLES == set()


def sample_access_log_line(log_format: str, error: str = "Forbidden") -> str:
    """What API Gateway writes: messageString arrives JSON-quoted, the others as bare text."""
    line = log_format.replace("$context.error.messageString", json.dumps(error))
    return re.sub(r"\$context\.[A-Za-z0-9_.]*[A-Za-z0-9_]", "x", line)


def test_access_log_format_is_json_whatever_the_error_message_holds() -> None:
    line = sample_access_log_line(ACCESS_LOG_FORMAT, 'Forbidden: "bad" token')
    assert json.loads(line)["error"] == 'Forbidden: "bad" token'


def test_access_logs_can_be_turned_off() -> None:
    mocks = run(channel_program(access_logs=False))
    assert "accessLogSettings" not in mocks.one("aws:apigatewayv2/stage:Stage").inputs
    assert "chat-access-logs" not in {r.name for r in mocks.resources}


# -- connections table and queue -----------------------------------------------------------------


def test_connections_table_follows_the_contract(declared: RecordingMocks) -> None:
    table = declared.named("chat-connections").inputs
    assert table["hashKey"] == "connectionId"
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert table["ttl"] == {"attributeName": "ttl", "enabled": True}
    index, expiry = table["globalSecondaryIndexes"]
    assert index["name"] == "byUser"
    assert index["keySchemas"] == [{"attributeName": "userId", "keyType": "HASH"}]
    # the sweeper's: connections by the minute their token expires (sparse)
    assert expiry["name"] == "byExpiry"
    assert expiry["keySchemas"] == [
        {"attributeName": "expiryMinute", "keyType": "HASH"},
        {"attributeName": "connectionId", "keyType": "RANGE"},
    ]
    assert (expiry["projectionType"], expiry["nonKeyAttributes"]) == ("INCLUDE", ["expiresAt"])
    assert {"name": "expiryMinute", "type": "N"} in table["attributes"]
    assert {"name": "userId", "type": "S"} in table["attributes"]
    assert table["serverSideEncryption"] == {"enabled": True}
    assert table["pointInTimeRecovery"] == {"enabled": True}
    assert table["deletionProtectionEnabled"] is True


def test_subscriptions_table_is_the_topic_index(declared: RecordingMocks) -> None:
    table = declared.named("chat-subscriptions").inputs
    assert (table["hashKey"], table["rangeKey"]) == ("topic", "sk")
    assert table["attributes"] == [{"name": "topic", "type": "S"}, {"name": "sk", "type": "S"}]
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert table["ttl"] == {"attributeName": "ttl", "enabled": True}
    assert "globalSecondaryIndexes" not in table  # strongly consistent reads: a table, no GSI
    assert table["serverSideEncryption"] == {"enabled": True}
    assert table["pointInTimeRecovery"] == {"enabled": True}
    assert table["deletionProtectionEnabled"] is True


def test_table_protection_defaults_off() -> None:
    mocks = run(channel_program())
    for name in ("chat-connections", "chat-subscriptions"):
        table = mocks.named(name).inputs
        assert table["pointInTimeRecovery"] == {"enabled": False}
        assert table["deletionProtectionEnabled"] is False


def test_dead_letter_queue_is_encrypted(declared: RecordingMocks) -> None:
    queue = declared.named("chat-dlq").inputs
    assert queue["sqsManagedSseEnabled"] is True


# -- functions ---------------------------------------------------------------------------------


def newest_python_runtime() -> str:
    versions = [
        tuple(int(p) for p in r.value.removeprefix("python").split("."))
        for r in aws.lambda_.Runtime
        if r.value.startswith("python3")
    ]
    return "python" + ".".join(map(str, max(versions)))


def test_functions_run_the_newest_python_on_arm64_with_json_logs(declared: RecordingMocks) -> None:
    functions = {f.name: f.inputs for f in declared.of_type(FUNCTION)}
    assert set(functions) == {f"chat-{k}" for k in FUNCTION_KINDS}
    assert newest_python_runtime() == RUNTIME
    roles = set()
    for name, inputs in functions.items():
        kind = name.removeprefix("chat-")
        assert inputs["runtime"] == RUNTIME
        assert inputs["architectures"] == ["arm64"]
        assert inputs["handler"] == f"handlers.{kind}.handler"
        assert inputs["loggingConfig"]["logFormat"] == "JSON"
        assert (
            inputs["loggingConfig"]["logGroup"] == outputs_of(declared, f"chat-{kind}-logs")["name"]
        )
        assert declared.named(f"chat-{kind}-logs").inputs["retentionInDays"] == 14
        assert inputs["role"] == outputs_of(declared, f"chat-{kind}-role")["arn"]
        roles.add(inputs["role"])
    assert len(roles) == len(FUNCTION_KINDS)  # one role each


def test_every_function_gets_the_environment_its_handler_requires(declared: RecordingMocks) -> None:
    loaders = {
        "authorizer": handler_config.authorizer_config,
        "connect": handler_config.connect_config,
        "disconnect": handler_config.disconnect_config,
        "default": handler_config.default_config,
        "broadcaster": handler_config.broadcaster_config,
    }
    for kind, load in loaders.items():
        env = declared.named(f"chat-{kind}").inputs["environment"]["variables"]
        load(env)  # raises ConfigError naming anything missing or malformed
    connections = outputs_of(declared, "chat-connections")["name"]
    subscriptions = outputs_of(declared, "chat-subscriptions")["name"]
    broadcaster = handler_config.broadcaster_config(
        declared.named("chat-broadcaster").inputs["environment"]["variables"]
    )
    assert broadcaster.connections_table == connections
    assert broadcaster.subscriptions_table == subscriptions
    assert broadcaster.table_buckets == 4
    assert broadcaster.target_attribute == "owner"
    assert broadcaster.send_concurrency == 64
    default = handler_config.default_config(
        declared.named("chat-default").inputs["environment"]["variables"]
    )
    assert (default.connections_table, default.subscriptions_table) == (connections, subscriptions)
    assert (default.max_subscriptions, default.table_buckets) == (20, 4)
    assert set(default.sources) == {"events"}
    disconnect = handler_config.disconnect_config(
        declared.named("chat-disconnect").inputs["environment"]["variables"]
    )
    assert (disconnect.connections_table, disconnect.subscriptions_table) == (
        connections, subscriptions
    )  # fmt: skip


def test_subscription_limits_reach_the_functions() -> None:
    mocks = run(channel_program(max_subscriptions=100, table_topic_buckets=64))
    default = handler_config.default_config(default_env(mocks))
    assert (default.max_subscriptions, default.table_buckets) == (100, 64)
    assert handler_config.broadcaster_config(broadcaster_env(mocks)).table_buckets == 64


def test_management_endpoint_is_derived_from_the_stage_invoke_url(declared: RecordingMocks) -> None:
    invoke_url = outputs_of(declared, "chat-stage")["invokeUrl"]
    assert invoke_url.startswith("wss://")
    expected = "https://" + invoke_url.removeprefix("wss://")
    for kind in ("broadcaster", "default"):
        env = declared.named(f"chat-{kind}").inputs["environment"]["variables"]
        assert env["MANAGEMENT_ENDPOINT"] == expected


def test_all_functions_share_one_archive_of_the_handlers_package(declared: RecordingMocks) -> None:
    codes = [f.inputs["code"] for f in declared.of_type(FUNCTION)]
    assert all(isinstance(code, pulumi.AssetArchive) for code in codes)
    names = {tuple(sorted(code.assets)) for code in codes}
    assert len(names) == 1
    (files,) = names
    assert "handlers/broadcaster.py" in files and "handlers/__init__.py" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


# -- sources -----------------------------------------------------------------------------------


def test_source_becomes_a_mapping_with_lambda_semantics(declared: RecordingMocks) -> None:
    mapping = stream_mapping(declared).inputs
    assert mapping["eventSourceArn"] == outputs_of(declared, "events")["streamArn"]
    assert mapping["functionName"] == outputs_of(declared, "chat-broadcaster")["arn"]
    assert mapping["startingPosition"] == "LATEST"
    assert mapping["batchSize"] == 50
    assert mapping["maximumBatchingWindowInSeconds"] == 1
    assert mapping["bisectBatchOnFunctionError"] is True
    assert mapping["maximumRetryAttempts"] == 4
    assert mapping["maximumRecordAgeInSeconds"] == 600
    assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert (
        mapping["destinationConfig"]["onFailure"]["destinationArn"]
        == outputs_of(declared, "chat-dlq")["arn"]
    )
    # a NEW_AND_OLD_IMAGES stream: the rules on both images, so an item leaving the filter
    # still reaches the broadcaster (which tells its subscribers removed)
    patterns = [json.loads(f["pattern"]) for f in mapping["filterCriteria"]["filters"]]
    assert patterns == [
        {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"status": {"S": ["live"]}}}},
        {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"OldImage": {"status": {"S": ["live"]}}}},
    ]


def mapping_patterns(mocks: RecordingMocks) -> list[dict[str, Any]]:
    criteria = stream_mapping(mocks).inputs.get("filterCriteria")
    return [json.loads(f["pattern"]) for f in (criteria or {}).get("filters", [])]


def sources_of(mocks: RecordingMocks) -> dict[str, Any]:
    variables: dict[str, Any] = mocks.named("chat-broadcaster").inputs["environment"]["variables"]
    return dict(json.loads(variables["SOURCES"]))


PAID = SourceFilter(new_image={"status": ["paid"]})
DELETES = SourceFilter(event_names=["REMOVE"])


def test_source_filters_on_a_stream_without_old_images_match_the_new_image_only() -> None:
    sources = lambda: [StreamSource(events_table(view="NEW_IMAGE"), filters=[PAID, DELETES])]  # noqa: E731
    mocks = run(channel_program(sources=sources))
    assert mapping_patterns(mocks) == [
        {"dynamodb": {"NewImage": {"status": {"S": ["paid"]}}}},
        {"eventName": ["REMOVE"]},
    ]
    assert "filters" not in sources_of(mocks)["events"]  # Lambda matched the only image


@pytest.mark.parametrize("preview", [False, True])
def test_new_image_rules_count_twice_against_lambdas_five_filters_with_old_images(
    preview: bool,
) -> None:
    three = [PAID, SourceFilter(new_image={"kind": ["a"]}), SourceFilter(new_image={"n": ["1"]})]
    with pytest.raises(ValueError) as failure:
        run(
            channel_program(sources=lambda: [StreamSource(events_table(), filters=three)]),
            preview=preview,
        )
    message = str(failure.value)
    assert "RealtimeChannel 'chat', source 'events': 3 filters compile to 6" in message
    assert "over Lambda's 5" in message and "counts twice" in message
    # the same filters on a stream without old images are three Lambda filters
    mocks = run(
        channel_program(
            sources=lambda: [StreamSource(events_table(view="NEW_IMAGE"), filters=three)]
        )
    )
    assert len(mapping_patterns(mocks)) == 3
    # five at the limit: two doubled and one event-name filter
    five = [PAID, SourceFilter(new_image={"kind": ["a"]}), DELETES]
    mocks = run(channel_program(sources=lambda: [StreamSource(events_table(), filters=five)]))
    assert len(mapping_patterns(mocks)) == 5


def test_new_image_rules_may_name_remove_only_when_the_stream_has_old_images() -> None:
    paid_any = SourceFilter(event_names=["MODIFY", "REMOVE"], new_image={"status": ["paid"]})
    mocks = run(channel_program(sources=lambda: [StreamSource(events_table(), filters=[paid_any])]))
    rule = {"status": {"S": ["paid"]}}
    assert mapping_patterns(mocks) == [
        {"eventName": ["MODIFY", "REMOVE"], "dynamodb": {"NewImage": rule}},
        {"eventName": ["MODIFY", "REMOVE"], "dynamodb": {"OldImage": rule}},  # deleted, paid
    ]
    assert sources_of(mocks)["events"]["filters"] == [
        {"eventName": ["MODIFY", "REMOVE"], "dynamodb": {"NewImage": rule}}
    ]
    table = lambda: [StreamSource(events_table(view="NEW_IMAGE"), filters=[paid_any])]  # noqa: E731
    with pytest.raises(ValueError) as failure:
        run(channel_program(sources=table), preview=True)
    assert (
        "RealtimeChannel 'chat', source 'events': filters[0]: a new_image rule never matches"
        " REMOVE on a stream without old images"
    ) in str(failure.value)


def test_an_existing_tables_source_filters_follow_its_stream() -> None:
    orders = {**ORDERS, "streamViewType": "NEW_AND_OLD_IMAGES"}
    mocks = RecordingMocks(tables={"orders": orders})
    run(channel_program(sources=lambda: [StreamSource("orders", filters=[PAID])]), mocks=mocks)
    rule = {"status": {"S": ["paid"]}}
    assert mapping_patterns(mocks) == [
        {"dynamodb": {"NewImage": rule}},
        {"dynamodb": {"OldImage": rule}},
    ]
    assert sources_of(mocks)["orders"]["filters"] == [{"dynamodb": {"NewImage": rule}}]
    mocks = RecordingMocks(tables={"orders": ORDERS})  # NEW_IMAGE
    run(channel_program(sources=lambda: [StreamSource("orders", filters=[PAID])]), mocks=mocks)
    assert mapping_patterns(mocks) == [{"dynamodb": {"NewImage": rule}}]
    assert "filters" not in sources_of(mocks)["orders"]


def test_source_filters_count_in_the_environment_estimate_at_preview() -> None:
    values = [f"value_{i:03d}_{'x' * 30}" for i in range(70)]
    big = [SourceFilter(new_image={f"a{n}": values}) for n in range(2)]

    with pytest.raises(SourceError, match=r"source 'events': the functions' SOURCES") as error:
        run(
            channel_program(sources=lambda: [StreamSource(events_table(), filters=big)]),
            preview=True,
        )
    assert "source filters" in str(error.value)


def test_existing_table_is_looked_up_by_name() -> None:
    mocks = RecordingMocks(
        tables={"orders": {"streamEnabled": True, "streamViewType": "NEW_IMAGE"}}
    )
    run(channel_program(sources=lambda: [StreamSource("orders")]), mocks=mocks)
    assert ("aws:dynamodb/getTable:getTable", {"name": "orders"}) in [
        (token, {k: v for k, v in args.items() if k == "name"}) for token, args in mocks.calls
    ]
    mapping = stream_mapping(mocks)
    assert mapping.name == "chat-source-orders"
    assert mapping.inputs["eventSourceArn"].startswith(
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/orders/stream/"
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"stream_enabled": False}, "table 'events' has no stream"),
        ({"view": "KEYS_ONLY"}, "table 'events' streams 'KEYS_ONLY', which lacks the new image"),
        ({"view": "OLD_IMAGE"}, "streams 'OLD_IMAGE'"),
    ],
)
def test_managed_table_without_new_images_is_rejected(
    kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment) as error:
        run(channel_program(sources=lambda: [StreamSource(events_table(**kwargs))]))
    assert "stream_view_type" in str(error.value)  # says how to fix it


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ({"streamEnabled": False}, "table 'orders' has no stream"),
        (
            {"streamEnabled": True, "streamViewType": "KEYS_ONLY"},
            "table 'orders' streams 'KEYS_ONLY'",
        ),
    ],
)
def test_existing_table_without_new_images_is_rejected(
    table: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        run(
            channel_program(sources=lambda: [StreamSource("orders")]),
            mocks=RecordingMocks(tables={"orders": table}),
        )


def test_same_table_twice_is_rejected() -> None:
    def sources() -> list[StreamSource]:
        table = events_table()
        return [StreamSource(table), StreamSource(table, name="again")]

    with pytest.raises(SourceError, match="source 'again' is attached twice"):
        run(channel_program(sources=sources))


def test_same_table_name_twice_is_rejected() -> None:
    mocks = RecordingMocks(
        tables={"orders": {"streamEnabled": True, "streamViewType": "NEW_IMAGE"}}
    )
    with pytest.raises(SourceError, match="attached twice"):
        run(
            channel_program(
                sources=lambda: [StreamSource("orders"), StreamSource("orders", name="o2")]
            ),
            mocks=mocks,
        )


def test_attach_adds_a_table_after_construction_with_its_own_read_policy() -> None:
    def program() -> None:
        channel = RealtimeChannel("chat", RealtimeChannelArgs(token_secret=SECRET))
        channel.attach(StreamSource(events_table("later")))

    mocks = run(program)
    assert [m.name for m in stream_mappings(mocks)] == ["chat-source-later"]
    read = documents(mocks)["chat-source-later-read"]
    stream_arn = outputs_of(mocks, "later")["streamArn"]
    assert {stream_arn} == set(read["Statement"][0]["Resource"])


# -- IAM -------------------------------------------------------------------------------------------


def test_no_policy_grants_a_wildcard_action_or_resource(declared: RecordingMocks) -> None:
    docs = documents(declared)
    assert len(docs) == len(FUNCTION_KINDS) + 2  # functions + one source (stream, snapshot)
    for name, doc in docs.items():
        for statement in doc["Statement"]:
            assert statement["Effect"] == "Allow"
            for action in statement["Action"]:
                assert "*" not in action, (name, action)
            for resource in statement["Resource"]:
                assert resource.startswith("arn:aws:"), (name, resource)
                assert resource != "*"


def test_manage_connections_is_granted_only_on_this_stage_posts_and_deletes(
    declared: RecordingMocks,
) -> None:
    stage_arn = outputs_of(declared, "chat-stage")["executionArn"]
    grants = [
        (name, statement["Resource"])
        for name, doc in documents(declared).items()
        for statement in doc["Statement"]
        if "execute-api:ManageConnections" in statement["Action"]
    ]
    by_policy = dict(grants)
    assert sorted(by_policy) == [
        "chat-broadcaster-policy",
        "chat-default-policy",
        "chat-sender-policy",
        "chat-sweeper-policy",
    ]
    # POST answers and changes; DELETE closes a connection whose token has expired
    expected = [f"{stage_arn}/POST/@connections/*", f"{stage_arn}/DELETE/@connections/*"]
    assert by_policy["chat-broadcaster-policy"] == by_policy["chat-default-policy"] == expected
    assert by_policy["chat-sweeper-policy"] == [f"{stage_arn}/DELETE/@connections/*"]


def test_each_role_policy_names_its_own_resources(declared: RecordingMocks) -> None:
    docs = documents(declared)
    table_arn = outputs_of(declared, "chat-connections")["arn"]
    subscriptions_arn = outputs_of(declared, "chat-subscriptions")["arn"]
    by_sid = {s["Sid"]: s for s in docs["chat-broadcaster-policy"]["Statement"]}
    assert by_sid["FindSubscribers"]["Action"] == ["dynamodb:BatchGetItem", "dynamodb:Query"]
    assert by_sid["FindSubscribers"]["Resource"] == [subscriptions_arn]
    assert by_sid["RemoveStaleConnections"]["Resource"] == [table_arn]
    assert by_sid["RemoveStaleSubscriptions"]["Resource"] == [subscriptions_arn]
    assert by_sid["ReportFailedBatches"]["Resource"] == [outputs_of(declared, "chat-dlq")["arn"]]
    default = {s["Sid"]: s for s in docs["chat-default-policy"]["Statement"]}
    assert default["ReadAndCountSubscriptions"]["Resource"] == [table_arn]
    assert default["StoreSubscriptions"]["Resource"] == [subscriptions_arn]
    disconnect = {s["Sid"]: s for s in docs["chat-disconnect-policy"]["Statement"]}
    assert disconnect["RemoveConnection"]["Resource"] == [table_arn]
    assert disconnect["RemoveSubscriptions"]["Resource"] == [subscriptions_arn]
    connect = {s["Sid"]: s for s in docs["chat-connect-policy"]["Statement"]}
    assert connect["StoreConnection"]["Action"] == ["dynamodb:PutItem"]
    assert connect["StoreConnection"]["Resource"] == [table_arn]
    logs_arn = outputs_of(declared, "chat-connect-logs")["arn"]
    assert connect["WriteOwnLogs"]["Resource"] == [f"{logs_arn}:*"]
    authorizer = {s["Sid"]: s for s in docs["chat-authorizer-policy"]["Statement"]}
    assert authorizer["ReadTokenSecret"]["Resource"] == [
        outputs_of(declared, "chat-token-secret")["arn"]
    ]


# -- alarms ----------------------------------------------------------------------------------


def test_alarms_watch_iterator_age_errors_and_dead_letters(declared: RecordingMocks) -> None:
    alarms = {
        a.inputs["metricName"]: a.inputs
        for a in declared.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    by_name = {a.name: a.inputs for a in declared.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert set(by_name) == {
        "chat-iterator-age-alarm",
        "chat-broadcaster-errors-alarm",
        "chat-dlq-depth-alarm",
        "chat-fanout-age-alarm",
        "chat-sender-errors-alarm",
        "chat-fanout-dlq-depth-alarm",
    }
    broadcaster = outputs_of(declared, "chat-broadcaster")["name"]
    assert alarms["IteratorAge"]["dimensions"] == {"FunctionName": broadcaster}
    assert alarms["IteratorAge"]["threshold"] == 60_000
    assert by_name["chat-broadcaster-errors-alarm"]["dimensions"] == {"FunctionName": broadcaster}
    assert by_name["chat-dlq-depth-alarm"]["dimensions"] == {
        "QueueName": outputs_of(declared, "chat-dlq")["name"]
    }
    topic_arn = outputs_of(declared, "chat-alarms")["arn"]
    assert all(a["alarmActions"] == [topic_arn] for a in alarms.values())
    # an alias/aws/sns topic silently drops CloudWatch's alarm actions
    assert "kmsMasterKeyId" not in declared.named("chat-alarms").inputs
    subscription = declared.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert (subscription["protocol"], subscription["endpoint"]) == ("email", "ops@example.com")


def test_alarms_can_use_an_existing_topic() -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:oncall"
    mocks = run(channel_program(alarms=True, alarm_topic_arn=topic))
    assert mocks.of_type("aws:sns/topic:Topic") == []
    alarms = mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    assert len(alarms) == 6 and all(a.inputs["alarmActions"] == [topic] for a in alarms)


def test_no_alarms_by_default() -> None:
    assert run(channel_program()).of_type("aws:cloudwatch/metricAlarm:MetricAlarm") == []


# -- transforms, naming, outputs -----------------------------------------------------------------


def test_transforms_adjust_child_args_before_creation() -> None:
    seen: list[str] = []

    def function(kind: str, args: aws.lambda_.FunctionArgs) -> None:
        seen.append(kind)
        if kind == "broadcaster":
            args.memory_size = 1024

    def api(args: aws.apigatewayv2.ApiArgs) -> aws.apigatewayv2.ApiArgs:
        args.description = "transformed"
        return args

    transforms = RealtimeChannelTransforms(
        api=api,
        function=function,
        stage=lambda args: setattr(args, "description", "stage!"),
        connections_table=lambda args: setattr(args, "table_class", "STANDARD_INFREQUENT_ACCESS"),
        subscriptions_table=lambda args: setattr(args, "table_class", "STANDARD"),
        dead_letter_queue=lambda args: setattr(args, "message_retention_seconds", 3600),
        event_source_mapping=lambda label, args: setattr(args, "batch_size", 7),
    )
    mocks = run(channel_program(transforms=transforms))
    assert sorted(seen) == sorted(FUNCTION_KINDS)
    assert mocks.named("chat-api").inputs["description"] == "transformed"
    assert mocks.named("chat-broadcaster").inputs["memorySize"] == 1024
    assert mocks.named("chat-connect").inputs["memorySize"] == 256
    assert mocks.named("chat-stage").inputs["description"] == "stage!"
    assert mocks.named("chat-connections").inputs["tableClass"] == "STANDARD_INFREQUENT_ACCESS"
    assert mocks.named("chat-subscriptions").inputs["tableClass"] == "STANDARD"
    assert mocks.named("chat-dlq").inputs["messageRetentionSeconds"] == 3600
    assert stream_mapping(mocks).inputs["batchSize"] == 7


def test_two_channels_in_one_stack_do_not_collide() -> None:
    def program() -> None:
        table = events_table()
        for name in ("chat", "feed"):
            RealtimeChannel(
                name, RealtimeChannelArgs(token_secret=SECRET, sources=[StreamSource(table)])
            )

    mocks = run(program)
    names = [(r.type, r.name) for r in mocks.resources]
    assert len(names) == len(set(names))
    assert len(mocks.of_type(FUNCTION)) == 2 * len(FUNCTION_KINDS)
    assert len(mocks.of_type(MAPPING)) == 4  # a source and the senders, each
    queues = [q.inputs["name"] for q in mocks.of_type("aws:sqs/queue:Queue") if "name" in q.inputs]
    assert sorted(queues) == [
        "chat-fanout-dlq.fifo", "chat-fanout.fifo", "feed-fanout-dlq.fifo", "feed-fanout.fifo"
    ]  # fmt: skip


def test_children_are_parented_to_the_component() -> None:
    urns: list[str] = []
    captured: dict[str, Any] = {}
    run(channel_program(captured=captured))
    channel = captured["channel"]
    children = [channel.api, channel.stage, channel.connections_table, channel.subscriptions_table,
                channel.dead_letter_queue, channel.fanout_queue,
                channel.fanout_dead_letter_queue, channel.fanout_mapping,
                *channel.functions.values(),
                *channel.event_source_mappings.values()]  # fmt: skip

    def collect() -> None:
        for child in children:
            child.urn.apply(urns.append)

    run(collect)
    assert len(urns) == len(children) == 16
    assert all("::realtime:index:RealtimeChannel$aws:" in urn for urn in urns)


def test_outputs_resolve_to_the_children_values() -> None:
    captured: dict[str, Any] = {}
    mocks = run(channel_program(captured=captured))
    stage = outputs_of(mocks, "chat-stage")
    assert captured["url"] == stage["invokeUrl"]
    assert captured["management_endpoint"] == "https://" + stage["invokeUrl"].removeprefix("wss://")
    assert captured["connections_table_name"] == outputs_of(mocks, "chat-connections")["name"]
    assert captured["subscriptions_table_name"] == outputs_of(mocks, "chat-subscriptions")["name"]
    assert captured["stage_name"] == "dev"
    assert captured["dead_letter_queue_url"] == outputs_of(mocks, "chat-dlq")["url"]
    assert captured["fanout_queue_url"] == outputs_of(mocks, "chat-fanout")["url"]
    assert captured["function_names"] == {
        k: outputs_of(mocks, f"chat-{k}")["name"] for k in FUNCTION_KINDS
    }
    assert captured["api_id"]


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"stage_name": "has space"}, "stage_name"),
        ({"connection_ttl_seconds": 5}, "connection_ttl_seconds"),
        ({"token_max_lifetime_seconds": 59}, "token_max_lifetime_seconds"),
        ({"token_max_lifetime_seconds": 2_592_001}, "token_max_lifetime_seconds"),
        ({"token_max_lifetime_seconds": 3600.0}, "token_max_lifetime_seconds"),
        ({"log_retention_days": 15}, "log_retention_days"),
        ({"memory_size": 64}, "memory_size"),
        ({"broadcaster_memory_size": 10_241}, "broadcaster_memory_size"),
        ({"broadcaster_timeout_seconds": 901}, "broadcaster_timeout_seconds"),
        ({"send_concurrency": 0}, "send_concurrency"),
        ({"fanout_threshold": -1}, "fanout_threshold"),
        ({"fanout_groups": 0}, "fanout_groups"),
        ({"fanout_groups": 1001}, "fanout_groups"),
        ({"fanout_slice": 0}, "fanout_slice"),
        ({"delivery_budget": 10_001}, "delivery_budget"),
        ({"sender_rate": 0}, "sender_rate"),
        ({"delivery_budget": 900, "sender_rate": 500}, "delivery_budget"),
        ({"sender_memory_size": 127}, "sender_memory_size"),
        ({"sender_timeout_seconds": 2}, "sender_timeout_seconds"),
        ({"fanout_age_alarm_seconds": 0}, "fanout_age_alarm_seconds"),
        ({"max_subscriptions": 0}, "max_subscriptions"),
        ({"max_subscriptions": 101}, "max_subscriptions"),
        ({"table_topic_buckets": 0}, "table_topic_buckets"),
        ({"table_topic_buckets": 65}, "table_topic_buckets"),
        ({"table_topic_buckets": 4.0}, "table_topic_buckets"),
        ({"alarm_email": "nobody"}, "alarm_email"),
        ({"alarms": True, "alarm_topic_arn": "arn:aws:sqs:us-east-1:1:q"}, "alarm_topic_arn"),
        ({"alarms": True}, "alarm_topic_arn or alarm_email"),
        ({"target_attribute": "bad attr"}, "target_attribute"),
        ({"throttling_rate_limit": -1.0}, "throttling_rate_limit"),
    ],
)
def test_bad_arguments_are_rejected_naming_component_and_argument(
    changes: dict[str, Any], argument: str
) -> None:
    with pytest.raises(ValueError, match=rf"RealtimeChannel 'chat': {argument} "):
        run(channel_program(**changes))


def test_preview_with_unknown_outputs_declares_the_same_resources(declared: RecordingMocks) -> None:
    preview = run(
        channel_program(sources=lambda: [filtered_source()], **DECLARED_CHANNEL), preview=True
    )
    assert sorted((r.type, r.name) for r in preview.resources) == sorted(
        (r.type, r.name) for r in declared.resources
    )


def test_invoke_permissions_follow_a_stage_renamed_by_a_transform() -> None:
    transforms = RealtimeChannelTransforms(stage=lambda args: setattr(args, "name", "live"))
    mocks = run(channel_program(transforms=transforms))
    execution_arn = outputs_of(mocks, "chat-api")["executionArn"]
    assert mocks.one("aws:apigatewayv2/stage:Stage").inputs["name"] == "live"
    permissions = {p.name: p.inputs["sourceArn"] for p in mocks.of_type(PERMISSION)}
    for kind, route_key in (
        ("connect", "$connect"),
        ("disconnect", "$disconnect"),
        ("default", "$default"),
    ):
        assert permissions[f"chat-{kind}-invoke"] == f"{execution_arn}/live/{route_key}"


# -- the broadcaster's SOURCES -------------------------------------------------------------------


def broadcaster_env(mocks: RecordingMocks) -> dict[str, Any]:
    variables: dict[str, Any] = mocks.named("chat-broadcaster").inputs["environment"]["variables"]
    return variables


def default_env(mocks: RecordingMocks) -> dict[str, Any]:
    variables: dict[str, Any] = mocks.named("chat-default").inputs["environment"]["variables"]
    return variables


def test_sources_describe_each_source_to_the_broadcaster_and_the_default_function(
    declared: RecordingMocks,
) -> None:
    events = outputs_of(declared, "events")["name"]
    live = {
        "eventName": ["INSERT", "MODIFY"],
        "dynamodb": {"NewImage": {"status": {"S": ["live"]}}},
    }
    expected = {
        "events": {
            "table": events,
            "keys": [["PK", "S"]],
            "oldImage": True,
            "access": [],
            "filters": [live],  # the source filter as written, for the broadcaster
        }
    }
    assert json.loads(broadcaster_env(declared)["SOURCES"]) == expected
    assert default_env(declared)["SOURCES"] == broadcaster_env(declared)["SOURCES"]
    config = handler_config.broadcaster_config(broadcaster_env(declared))
    source = config.sources["events"]
    assert (source.table, source.keys, source.old_image, source.access, source.filters) == (
        events, (("PK", "S"),), True, (), (live,)
    )  # fmt: skip


ORDERS = {
    "streamEnabled": True,
    "streamViewType": "NEW_IMAGE",
    "hashKey": "customer",
    "rangeKey": "placedAt",
    "attributes": [{"name": "customer", "type": "S"}, {"name": "placedAt", "type": "N"}],
}


def test_sources_attached_after_the_constructor_reach_both_functions() -> None:
    def program() -> None:
        channel = RealtimeChannel(
            "chat", RealtimeChannelArgs(token_secret=SECRET, sources=[StreamSource(events_table())])
        )
        channel.attach(StreamSource(events_table("later"), name="news"))
        channel.attach(StreamSource("orders", access=[AccessRule(key={"customer": "{sub}"})]))

    mocks = RecordingMocks(tables={"orders": ORDERS})
    run(program, mocks=mocks)
    expected = {
        "events": {
            "table": outputs_of(mocks, "events")["name"],
            "keys": [["PK", "S"]],
            "oldImage": True,
            "access": [],
        },
        "news": {
            "table": outputs_of(mocks, "later")["name"],
            "keys": [["PK", "S"]],
            "oldImage": True,
            "access": [],
        },
        "orders": {
            "table": "orders",
            "keys": [["customer", "S"], ["placedAt", "N"]],
            "oldImage": False,
            "access": [{"key": {"customer": "{sub}"}}],
        },
    }
    assert json.loads(broadcaster_env(mocks)["SOURCES"]) == expected
    assert json.loads(default_env(mocks)["SOURCES"]) == expected


# -- access rules ----------------------------------------------------------------------------

RULES = [
    AccessRule(key={"PK": "USER#{sub}"}),
    AccessRule(key={"PK": "TENANT#{claims.tenant}"}, fields=["status", "total"]),
    AccessRule(table=True, when={"claims.role": "admin"}),
    AccessRule(table=True, when={"claims.groups": ["ops", "support"]}, fields=("status",)),
]
RULES_JSON: list[dict[str, Any]] = [
    {"key": {"PK": "USER#{sub}"}},
    {"key": {"PK": "TENANT#{claims.tenant}"}, "fields": ["status", "total"]},
    {"table": True, "when": {"claims.role": "admin"}},
    {"table": True, "when": {"claims.groups": ["ops", "support"]}, "fields": ["status"]},
]


def test_access_rules_are_compiled_into_sources_as_the_functions_read_them() -> None:
    mocks = run(channel_program(sources=lambda: [StreamSource(events_table(), access=RULES)]))
    for env in (broadcaster_env(mocks), default_env(mocks)):
        assert json.loads(env["SOURCES"])["events"]["access"] == RULES_JSON
    parsed = handler_config.default_config(default_env(mocks)).sources["events"].access
    assert [rule.to_json() for rule in parsed] == [
        {"key": {"PK": "USER#{sub}"}},
        {"key": {"PK": "TENANT#{claims.tenant}"}, "fields": ["status", "total"]},
        {"table": True, "when": {"claims.role": ["admin"]}},
        {"table": True, "when": {"claims.groups": ["ops", "support"]}, "fields": ["status"]},
    ]


def test_access_rules_may_be_given_as_json_objects() -> None:
    mocks = run(channel_program(sources=lambda: [StreamSource(events_table(), access=RULES_JSON)]))
    assert json.loads(default_env(mocks)["SOURCES"])["events"]["access"] == RULES_JSON


def test_access_rule_to_json_is_what_the_handlers_parse_back() -> None:
    for rule, expected in zip(RULES, RULES_JSON, strict=True):
        assert rule.to_json() == expected
        assert parse_rule(rule.to_json(), ["PK"]) == parse_rule(expected, ["PK"])


def test_the_authorizer_passes_on_exactly_the_claims_the_rules_read() -> None:
    def program() -> None:
        channel = RealtimeChannel(
            "chat",
            RealtimeChannelArgs(
                token_secret=SECRET, sources=[StreamSource(events_table(), access=RULES)]
            ),
        )
        channel.attach(
            StreamSource(
                "orders", access=[AccessRule(key={"customer": "{claims.org}-{claims.tenant}"})]
            )
        )

    mocks = RecordingMocks(tables={"orders": ORDERS})
    run(program, mocks=mocks)
    env = mocks.named("chat-authorizer").inputs["environment"]["variables"]
    assert env["IDENTITY_CLAIMS"] == "groups,org,role,tenant"
    assert handler_config.authorizer_config(env).identity_claims == (
        "groups", "org", "role", "tenant"
    )  # fmt: skip


def test_identity_claims_are_known_in_a_preview_of_a_new_stack() -> None:
    sources = lambda: [StreamSource(events_table(), access=RULES)]  # noqa: E731
    mocks = run(channel_program(sources=sources), preview=True)
    env = mocks.named("chat-authorizer").inputs["environment"]["variables"]
    assert env["IDENTITY_CLAIMS"] == "groups,role,tenant"


BAD_RULES = [
    pytest.param(
        [AccessRule(table=True), AccessRule(key={"SK": "x"})],
        r"access\[1\]: key must name the partition key 'PK'",
        id="no-partition-key",
    ),
    pytest.param(
        [AccessRule(key={"PK": "x", "owner": "{sub}"})],
        r"access\[0\]: key names 'owner', which is not a key attribute \(PK, SK\)",
        id="not-a-key-attribute",
    ),
    pytest.param(
        [AccessRule(key={"PK": "x"}, table=True)],
        r"access\[0\]: a rule has either a key or table=True",
        id="key-and-table",
    ),
    pytest.param([AccessRule()], r"access\[0\]: a rule has either a key", id="neither"),
    pytest.param(
        [AccessRule(key={"PK": "USER#{user}"})],
        r"access\[0\]: placeholder \{user\}",
        id="unknown-placeholder",
    ),
    pytest.param(
        [AccessRule(key={"PK": "USER#{sub"})], r"access\[0\]: .*unmatched brace", id="brace"
    ),
    pytest.param(
        [AccessRule(table=True, when={"role": "admin"})],
        r"access\[0\]: when names 'role'",
        id="when-path",
    ),
    pytest.param(
        [AccessRule(table=True, fields="status")],
        r"access\[0\]: fields must be a list",
        id="fields-not-a-list",
    ),
    pytest.param(
        [{"table": True, "columns": ["a"]}], r"access\[0\]: unknown rule field 'columns'", id="json"
    ),
    pytest.param(["table"], r"access\[0\] must be an AccessRule", id="not-a-rule"),
]


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
@pytest.mark.parametrize(("rules", "message"), BAD_RULES)
def test_bad_rules_fail_naming_the_component_source_and_rule(
    rules: list[Any], message: str, preview: bool
) -> None:
    def sources() -> list[StreamSource]:
        table = events_table(
            range_key="SK",
            attributes=[
                aws.dynamodb.TableAttributeArgs(name="PK", type="S"),
                aws.dynamodb.TableAttributeArgs(name="SK", type="S"),
            ],
        )
        return [StreamSource(table, access=rules)]

    # SourceError is a ValueError; Pulumi wraps one raised while resolving an input
    with pytest.raises(ValueError, match=r"RealtimeChannel 'chat', source 'events': " + message):
        run(channel_program(sources=sources), preview=preview)


def test_a_preview_that_does_not_know_the_sort_key_yet_still_checks_the_partition_key() -> None:
    # events_table() sets no range_key: a mocked preview shows it unknown
    def sources(rule: AccessRule) -> Callable[[], list[StreamSource]]:
        return lambda: [StreamSource(events_table(), access=[rule])]

    with pytest.raises(ValueError, match=r"access\[0\]: key must name the partition key 'PK'"):
        run(channel_program(sources=sources(AccessRule(key={"SK": "x"}))), preview=True)
    # the deploy knows there is no sort key
    run(channel_program(sources=sources(AccessRule(key={"PK": "x", "SK": "y"}))), preview=True)
    with pytest.raises(ValueError, match=r"key names 'SK', which is not a key attribute \(PK\)"):
        run(channel_program(sources=sources(AccessRule(key={"PK": "x", "SK": "y"}))))


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
def test_rules_of_an_existing_table_are_checked_against_its_key_schema(preview: bool) -> None:
    source = StreamSource("orders", access=[AccessRule(key={"customer": "{sub}", "PK": "x"})])
    with pytest.raises(
        ValueError,
        match=r"source 'orders': access\[0\]: key names 'PK', which is not a key attribute"
        r" \(customer, placedAt\)",
    ):
        run(
            channel_program(sources=lambda: [source]),
            mocks=RecordingMocks(preview=preview, tables={"orders": ORDERS}),
            preview=preview,
        )


@pytest.mark.parametrize(
    ("rule", "uses"),
    [
        (AccessRule(key={"PK": "USER#{sub}"}), "{sub}"),
        (AccessRule(key={"PK": "T#{claims.tenant}"}), "{claims.tenant}"),
        (AccessRule(table=True, when={"sub": "alice"}), "when"),
    ],
)
def test_identity_rules_are_refused_without_auth(rule: AccessRule, uses: str) -> None:
    def sources() -> list[StreamSource]:
        return [StreamSource(events_table(), access=[AccessRule(table=True), rule])]

    with pytest.raises(SourceError) as error:
        run(channel_program(sources=sources, auth_enabled=False), preview=True)
    message = str(error.value)
    assert message.startswith("RealtimeChannel 'chat', source 'events': access[1] uses the")
    assert uses in message and "auth_enabled is off" in message


def test_rules_without_identity_are_accepted_without_auth() -> None:
    def sources() -> list[StreamSource]:
        return [StreamSource(events_table(), access=[AccessRule(table=True, fields=["status"])])]

    mocks = run(channel_program(sources=sources, auth_enabled=False))
    assert json.loads(default_env(mocks)["SOURCES"])["events"]["access"] == [
        {"table": True, "fields": ["status"]}
    ]


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
def test_target_attribute_needs_old_images_on_every_source(preview: bool) -> None:
    def sources() -> list[StreamSource]:
        return [StreamSource(events_table()), StreamSource(events_table("news", "NEW_IMAGE"))]

    with pytest.raises(ValueError) as error:
        run(channel_program(sources=sources, target_attribute="owner"), preview=preview)
    message = str(error.value)
    assert "RealtimeChannel 'chat', source 'news': target_attribute 'owner'" in message
    assert "needs the old image, but table 'news' streams 'NEW_IMAGE'" in message
    assert 'stream_view_type="NEW_AND_OLD_IMAGES"' in message


def test_target_attribute_needs_old_images_on_an_existing_table_too() -> None:
    mocks = RecordingMocks(tables={"orders": ORDERS})
    with pytest.raises(ValueError, match=r"source 'orders': target_attribute 'owner'"):
        run(
            channel_program(sources=lambda: [StreamSource("orders")], target_attribute="owner"),
            mocks=mocks,
        )


def test_rules_count_in_the_environment_estimate_at_preview() -> None:
    # short names, but rules long enough to leave no room for the other variables
    fields = [f"attribute_{i:03d}_{'x' * 20}" for i in range(100)]

    def sources() -> list[StreamSource]:
        return [StreamSource(events_table(), access=[AccessRule(table=True, fields=fields)])]

    with pytest.raises(SourceError, match=r"source 'events': the functions' SOURCES") as error:
        run(channel_program(sources=sources), preview=True)
    assert "fewer or shorter access rules" in str(error.value)


def test_sources_are_unknown_not_wrong_in_a_preview_of_a_new_stack() -> None:
    # the names of tables (and the other variables it is checked with) are not known yet
    mocks = run(channel_program(), preview=True)
    assert isinstance(broadcaster_env(mocks)["SOURCES"], pulumi.output.Unknown)


def test_attach_inside_an_apply_is_refused_with_a_clear_error() -> None:
    def program() -> None:
        channel = RealtimeChannel("chat", RealtimeChannelArgs(token_secret=SECRET))
        late = channel.url.apply(lambda _: channel.attach(StreamSource(events_table("late"))))
        pulumi.export("late", late)

    with pytest.raises(SourceError, match=r"attach\(\) must be called while the program runs"):
        run(program)


def test_sources_that_would_overflow_the_broadcaster_environment_are_refused_at_preview() -> None:
    names = [f"{'t' * 240}{i:02d}" for i in range(12)]
    mocks = RecordingMocks(
        preview=True,
        tables={name: {"streamEnabled": True, "streamViewType": "NEW_IMAGE"} for name in names},
    )
    sources = [StreamSource(name, name=f"s{i}") for i, name in enumerate(names)]
    with pytest.raises(SourceError, match=r"source 's\d+': the functions' SOURCES") as error:
        run(channel_program(sources=lambda: sources), mocks=mocks, preview=True)
    assert "4 KB" in str(error.value) and "split the sources" in str(error.value)


def test_long_explicit_table_names_that_overflow_the_environment_fail_the_deploy() -> None:
    # autonamed estimates fit; the explicit 250-character names only show once resolved
    def sources() -> list[StreamSource]:
        return [
            StreamSource(
                aws.dynamodb.Table(
                    f"t{i}",
                    name=f"{'n' * 247}{i:03d}",
                    hash_key="PK",
                    attributes=[aws.dynamodb.TableAttributeArgs(name="PK", type="S")],
                    stream_enabled=True,
                    stream_view_type="NEW_IMAGE",
                ),
                name=f"s{i}",
            )
            for i in range(16)
        ]

    with pytest.raises(ValueError, match=r"environment would be \d+ bytes .* over Lambda's 4096"):
        run(channel_program(sources=sources))


def test_broadcaster_gets_a_full_vcpu_of_memory_by_default_and_the_others_memory_size(
    declared: RecordingMocks,
) -> None:
    memory = {f.name: f.inputs["memorySize"] for f in declared.of_type(FUNCTION)}
    assert memory.pop("chat-broadcaster") == 1769
    assert memory.pop("chat-sender") == 1024
    assert set(memory.values()) == {256}


def test_broadcaster_memory_is_set_apart_from_memory_size() -> None:
    mocks = run(channel_program(memory_size=512, broadcaster_memory_size=3008))
    memory = {f.name: f.inputs["memorySize"] for f in mocks.of_type(FUNCTION)}
    assert memory.pop("chat-broadcaster") == 3008
    assert memory.pop("chat-sender") == 1024
    assert set(memory.values()) == {512}


# -- sources encrypted with a customer managed key -------------------------------------------------

KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_a_source_encrypted_with_a_customer_key_may_decrypt_its_stream_only() -> None:
    def sources() -> list[StreamSource]:
        return [
            StreamSource(events_table(), kms_key_arn=pulumi.Output.from_input(KEY_ARN)),
            StreamSource(events_table("plain")),
        ]

    docs = documents(run(channel_program(sources=sources)))
    grants = {
        name: {s["Sid"]: s for s in doc["Statement"]}
        for name, doc in docs.items()
        if name.startswith("chat-source-")
    }
    decrypt = grants["chat-source-events-read"]["DecryptStream"]
    assert (decrypt["Action"], decrypt["Resource"]) == (["kms:Decrypt"], [KEY_ARN])
    assert "DecryptStream" not in grants["chat-source-plain-read"]
    assert not [
        s for name, doc in docs.items() if not name.startswith("chat-source-")
        for s in doc["Statement"] if "kms:Decrypt" in s["Action"]
    ]  # fmt: skip


def test_a_key_alias_is_refused_naming_the_source() -> None:
    alias = StreamSource(events_table(), kms_key_arn="alias/events")
    with pytest.raises(SourceError, match=r"source 'events': kms_key_arn must be a KMS key ARN"):
        run(channel_program(sources=lambda: [alias]))


# -- API Gateway's account-wide CloudWatch role (access logs need it) ----------------------------

ACCOUNT_SETTING = "aws:apigateway/account:Account"


def options_of(program: Callable[[], None]) -> dict[str, pulumi.ResourceOptions]:
    """Each child's resource options (logical name ->), seen through a transformation."""
    seen: dict[str, pulumi.ResourceOptions] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        seen[args.name] = args.opts

    real = RealtimeChannel.__init__

    def init(self: RealtimeChannel, name: str, args: Any = None, opts: Any = None) -> None:
        real(self, name, args, pulumi.ResourceOptions(transformations=[record]))

    def with_transformation() -> None:
        RealtimeChannel.__init__ = init  # type: ignore[method-assign]
        try:
            program()
        finally:
            RealtimeChannel.__init__ = real  # type: ignore[method-assign]

    run(with_transformation)
    return seen


def dependencies_of(program: Callable[[], None], child: str) -> list[str]:
    """Logical names ``child`` explicitly depends on."""
    depends_on = options_of(program)[child].depends_on
    resources = depends_on if isinstance(depends_on, list) else [depends_on]
    return [r._name for r in resources if isinstance(r, pulumi.Resource)]


def test_access_logs_get_the_account_cloudwatch_role_before_the_stage(
    declared: RecordingMocks,
) -> None:
    role = declared.named("chat-apigateway-logs-role")
    assert json.loads(role.inputs["assumeRolePolicy"])["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "apigateway.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    attachment = declared.one("aws:iam/rolePolicyAttachment:RolePolicyAttachment").inputs
    assert attachment == {
        "role": role.outputs["name"],
        "policyArn": "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs",
    }
    account = declared.one(ACCOUNT_SETTING)
    assert account.inputs["cloudwatchRoleArn"] == role.outputs["arn"]
    assert dependencies_of(channel_program(), "chat-stage") == ["chat-apigateway-account"]
    assert dependencies_of(channel_program(), "chat-apigateway-account") == [
        "chat-apigateway-logs-policy"
    ]


def test_destroy_leaves_the_account_wide_setting_and_its_role() -> None:
    options = options_of(channel_program())
    for child in ("apigateway-logs-role", "apigateway-logs-policy", "apigateway-account"):
        assert options[f"chat-{child}"].retain_on_delete is True
    assert not options["chat-stage"].retain_on_delete


@pytest.mark.parametrize(
    "changes",
    [{"manage_api_gateway_account": False}, {"access_logs": False}],
    ids=["account-already-set-up", "no-access-logs"],
)
def test_no_account_setting_when_set_elsewhere_or_not_needed(changes: dict[str, Any]) -> None:
    mocks = run(channel_program(**changes))
    assert mocks.of_type(ACCOUNT_SETTING) == []
    assert "chat-apigateway-logs-role" not in {r.name for r in mocks.resources}
    assert dependencies_of(channel_program(**changes), "chat-stage") == []
    stage = mocks.one("aws:apigatewayv2/stage:Stage").inputs
    assert ("accessLogSettings" in stage) is changes.get("access_logs", True)


# -- resume: the replay store and the cursor secret --------------------------------------------


def test_the_replay_table_is_keyed_for_idempotent_writes_with_a_time_index_and_ttl(
    declared: RecordingMocks,
) -> None:
    table = declared.named("chat-replay").inputs
    assert (table["hashKey"], table["rangeKey"]) == ("topic", "change")
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert {a["name"]: a["type"] for a in table["attributes"]} == {
        "topic": "S",
        "change": "S",
        "at": "S",
    }
    (index,) = table["localSecondaryIndexes"]
    assert (index["name"], index["rangeKey"], index["projectionType"]) == ("byTime", "at", "ALL")
    assert table["ttl"] == {"attributeName": "ttl", "enabled": True}
    assert table["serverSideEncryption"] == {"enabled": True}


def test_resume_settings_reach_the_broadcaster_and_default(declared: RecordingMocks) -> None:
    replay_name = outputs_of(declared, "chat-replay")["name"]
    parameter = outputs_of(declared, "chat-cursor-secret")["name"]
    broadcaster = handler_config.broadcaster_config(
        outputs_of(declared, "chat-broadcaster")["environment"]["variables"]
    )
    default = handler_config.default_config(
        outputs_of(declared, "chat-default")["environment"]["variables"]
    )
    for resume in (broadcaster.resume, default.resume):
        assert resume.enabled
        assert (resume.table, resume.cursor_secret_parameter) == (replay_name, parameter)
        assert resume.retention_seconds == 3600
    # a replay starts a whole broadcaster timeout before the cursor: a change recorded
    # earlier but posted later (a slow batch) is never skipped
    assert default.resume.overlap_ms == 60_000
    assert default.resume.max_changes == 5000
    assert default.resume.max_seconds == 20
    assert declared.named("chat-default").inputs["timeout"] == 29


def test_resume_is_least_privilege(declared: RecordingMocks) -> None:
    docs = documents(declared)
    replay_arn = outputs_of(declared, "chat-replay")["arn"]
    parameter_arn = outputs_of(declared, "chat-cursor-secret")["arn"]
    broadcaster = {s["Sid"]: s for s in docs["chat-broadcaster-policy"]["Statement"]}
    default = {s["Sid"]: s for s in docs["chat-default-policy"]["Statement"]}
    assert broadcaster["RecordChanges"]["Action"] == ["dynamodb:BatchWriteItem"]
    assert broadcaster["RecordChanges"]["Resource"] == [replay_arn]
    assert default["ReadReplay"]["Action"] == ["dynamodb:Query"]
    assert default["ReadReplay"]["Resource"] == [f"{replay_arn}/index/byTime"]
    for doc in (broadcaster, default):
        assert doc["ReadCursorSecret"]["Action"] == ["ssm:GetParameter"]
        assert doc["ReadCursorSecret"]["Resource"] == [parameter_arn]
    others = [
        name for name in docs if name not in ("chat-broadcaster-policy", "chat-default-policy")
    ]
    for name in others:
        assert replay_arn not in json.dumps(docs[name]), name
        assert parameter_arn not in json.dumps(docs[name]), name


def test_a_retention_of_zero_turns_resume_off_with_no_replay_table() -> None:
    mocks = run(channel_program(replay_retention_seconds=0))
    assert "chat-replay" not in {t.name for t in mocks.of_type("aws:dynamodb/table:Table")}
    env = mocks.named("chat-default").inputs["environment"]["variables"]
    assert "REPLAY_TABLE" not in env
    assert not handler_config.default_config(env).resume.enabled
    policy = json.dumps(documents(mocks)["chat-broadcaster-policy"])
    assert "RecordChanges" not in policy and "ReadCursorSecret" in policy


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("replay_retention_seconds", -1),
        ("replay_retention_seconds", 7 * 24 * 3600 + 1),
        ("replay_retention_seconds", 1.5),
        ("replay_max_changes", 0),
        ("replay_max_changes", 100_001),
    ],
)
def test_resume_settings_out_of_range_are_refused_naming_the_argument(arg: str, value: Any) -> None:
    with pytest.raises(ValueError, match=arg):
        run(channel_program(**{arg: value}))


def test_a_retention_no_longer_than_the_overlap_is_refused_saying_why() -> None:
    with pytest.raises(ValueError, match=r"replay_retention_seconds.*broadcaster_timeout_seconds"):
        run(channel_program(replay_retention_seconds=60))  # the default timeout: 60 s
    run(channel_program(replay_retention_seconds=61))
    run(channel_program(replay_retention_seconds=5, broadcaster_timeout_seconds=3))


def test_the_cursor_secret_is_generated_once_into_a_secure_string(
    declared: RecordingMocks,
) -> None:
    password = declared.one(PASSWORD, "chat-cursor-secret-value")
    assert (password.inputs["length"], password.inputs["special"]) == (64, False)
    parameter = declared.named("chat-cursor-secret").inputs
    assert parameter["type"] == "SecureString"
    assert parameter["value"] == {
        rpc._special_sig_key: rpc._special_secret_sig,
        "value": password.outputs["result"],
    }


def test_default_may_read_exactly_each_sources_items_for_snapshots(
    declared: RecordingMocks,
) -> None:
    docs = documents(declared)
    (snapshots,) = [name for name in docs if name.endswith("-snapshots")]
    role = declared.named(snapshots).inputs["role"]
    assert role == declared.named("chat-default-role").id
    (statement,) = docs[snapshots]["Statement"]
    assert statement["Action"] == ["dynamodb:GetItem", "dynamodb:Query"]
    (table,) = statement["Resource"]
    assert table == declared.one("aws:dynamodb/table:Table", "events").outputs["arn"]
    default = json.dumps(docs["chat-default-policy"])
    assert "dynamodb:Scan" not in default and "dynamodb:Scan" not in json.dumps(docs[snapshots])


def test_default_verifies_fresh_tokens_as_the_authorizer_does(declared: RecordingMocks) -> None:
    env = outputs_of(declared, "chat-default")["environment"]["variables"]
    authorizer = outputs_of(declared, "chat-authorizer")["environment"]["variables"]
    for name in ("TOKEN_SECRET_PARAMETER", "TOKEN_MAX_LIFETIME_SECONDS", "IDENTITY_CLAIMS"):
        assert env[name] == authorizer[name], name
    tokens = handler_config.default_config(env).tokens
    assert tokens is not None and tokens.token_max_lifetime == 86_400
    default = {s["Sid"]: s for s in documents(declared)["chat-default-policy"]["Statement"]}
    assert default["ReadTokenSecret"]["Resource"] == [
        outputs_of(declared, "chat-token-secret")["arn"]
    ]


def test_without_auth_default_takes_no_tokens() -> None:
    mocks = run(channel_program(auth_enabled=False))
    env = mocks.named("chat-default").inputs["environment"]["variables"]
    assert "TOKEN_SECRET_PARAMETER" not in env
    assert handler_config.default_config(env).tokens is None
    assert "ReadTokenSecret" not in json.dumps(documents(mocks)["chat-default-policy"])


def test_the_sweeper_runs_every_minute_and_may_only_find_and_close_expired_connections(
    declared: RecordingMocks,
) -> None:
    rule = declared.named("chat-sweep").inputs
    assert rule["scheduleExpression"] == "rate(1 minute)"
    target = declared.named("chat-sweep-target").inputs
    assert target["arn"] == outputs_of(declared, "chat-sweeper")["arn"]
    assert target["rule"] == outputs_of(declared, "chat-sweep")["name"]
    env = outputs_of(declared, "chat-sweeper")["environment"]["variables"]
    settings = handler_config.sweeper_config(env)
    assert settings.connections_table == outputs_of(declared, "chat-connections")["name"]
    table_arn = outputs_of(declared, "chat-connections")["arn"]
    statements = {s["Sid"]: s for s in documents(declared)["chat-sweeper-policy"]["Statement"]}
    assert statements["FindExpired"]["Action"] == ["dynamodb:Query"]
    assert statements["FindExpired"]["Resource"] == [f"{table_arn}/index/byExpiry"]
    assert "dynamodb:Scan" not in json.dumps(statements)


def test_without_auth_there_is_no_sweep() -> None:
    mocks = run(channel_program(auth_enabled=False))
    assert mocks.of_type("aws:cloudwatch/eventRule:EventRule") == []
    assert "chat-sweeper" not in {f.name for f in mocks.of_type(FUNCTION)}


# -- queued fan-out --------------------------------------------------------------------------------


QUEUE = "aws:sqs/queue:Queue"


def test_fanout_queue_is_high_throughput_fifo_with_a_dead_letter_queue(
    declared: RecordingMocks,
) -> None:
    queue = declared.named("chat-fanout").inputs
    dlq = declared.named("chat-fanout-dlq").inputs
    for inputs in (queue, dlq):
        assert inputs["fifoQueue"] is True
        assert inputs["contentBasedDeduplication"] is False
        assert inputs["deduplicationScope"] == "messageGroup"
        assert inputs["fifoThroughputLimit"] == "perMessageGroupId"
        assert inputs["sqsManagedSseEnabled"] is True
    assert (queue["name"], dlq["name"]) == ("chat-fanout.fifo", "chat-fanout-dlq.fifo")
    assert queue["visibilityTimeoutSeconds"] == 6 * 30
    assert json.loads(queue["redrivePolicy"]) == {
        "deadLetterTargetArn": outputs_of(declared, "chat-fanout-dlq")["arn"],
        "maxReceiveCount": 5,
    }


def test_senders_take_jobs_in_batches_with_partial_failures_and_the_budgets_concurrency(
    declared: RecordingMocks,
) -> None:
    mapping = declared.named("chat-fanout-senders").inputs
    assert mapping["eventSourceArn"] == outputs_of(declared, "chat-fanout")["arn"]
    assert mapping["functionName"] == outputs_of(declared, "chat-sender")["arn"]
    assert mapping["batchSize"] == 10
    assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["scalingConfig"] == {"maximumConcurrency": 18}  # 9,000/s / 500/s
    assert "startingPosition" not in mapping
    sender = declared.named("chat-sender").inputs
    assert sender["handler"] == "handlers.sender.handler"
    assert sender["timeout"] == 30
    env = sender["environment"]["variables"]
    assert env["SENDER_RATE"] == "500" and env["SEND_CONCURRENCY"] == "64"


@pytest.mark.parametrize(("budget", "rate", "senders"), [(1000, 100, 10), (3000, 1000, 3)])
def test_the_budget_sets_the_senders_maximum_concurrency(
    budget: int, rate: int, senders: int
) -> None:
    mocks = run(channel_program(delivery_budget=budget, sender_rate=rate))
    mapping = mocks.named("chat-fanout-senders").inputs
    assert mapping["scalingConfig"] == {"maximumConcurrency": senders}
    assert budget / rate >= senders > budget / rate - 1


def test_the_broadcaster_knows_the_queue_and_its_settings(declared: RecordingMocks) -> None:
    env = declared.named("chat-broadcaster").inputs["environment"]["variables"]
    assert env["FANOUT_QUEUE_URL"] == outputs_of(declared, "chat-fanout")["url"]
    assert env["FANOUT_CHANNEL"] == "chat"
    assert (env["FANOUT_THRESHOLD"], env["FANOUT_GROUPS"], env["FANOUT_SLICE"]) == (
        "100", "32", "500"
    )  # fmt: skip
    config = handler_config.broadcaster_config({**env, "SOURCES": env["SOURCES"]})
    assert config.fanout is not None and config.fanout.groups == 32


def test_sender_and_broadcaster_policies_are_least_privilege_for_the_queue(
    declared: RecordingMocks,
) -> None:
    docs = documents(declared)
    queue_arn = outputs_of(declared, "chat-fanout")["arn"]
    table_arn = outputs_of(declared, "chat-connections")["arn"]
    sender = {st["Sid"]: st for st in docs["chat-sender-policy"]["Statement"]}
    assert sender["TakeDeliveryJobs"]["Action"] == [
        "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"
    ]  # fmt: skip
    assert sender["TakeDeliveryJobs"]["Resource"] == [queue_arn]
    assert sender["RemoveStaleConnections"]["Resource"] == [table_arn]
    assert set(sender) == {
        "WriteOwnLogs", "TakeDeliveryJobs", "PostToClients", "RemoveStaleConnections",
        "RemoveStaleSubscriptions",
    }  # fmt: skip
    broadcaster = {st["Sid"]: st for st in docs["chat-broadcaster-policy"]["Statement"]}
    assert broadcaster["QueueDeliveryJobs"] == {
        "Sid": "QueueDeliveryJobs", "Effect": "Allow", "Action": ["sqs:SendMessage"],
        "Resource": [queue_arn],
    }  # fmt: skip
    mode = broadcaster["FanoutMode"]
    assert mode["Action"] == ["dynamodb:GetItem", "dynamodb:PutItem"]
    assert mode["Resource"] == [table_arn]
    assert mode["Condition"] == {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["#fanout"]}}
    # nobody else may send jobs
    senders_of_jobs = [
        name
        for name, doc in docs.items()
        for st in doc["Statement"]
        if queue_arn in st["Resource"] and "sqs:SendMessage" in st["Action"]
    ]
    assert senders_of_jobs == ["chat-broadcaster-policy"]


def test_fanout_alarms_watch_queue_age_sender_errors_and_dead_jobs(
    declared: RecordingMocks,
) -> None:
    age = declared.named("chat-fanout-age-alarm").inputs
    assert age["metricName"] == "ApproximateAgeOfOldestMessage"
    assert age["dimensions"] == {"QueueName": outputs_of(declared, "chat-fanout")["name"]}
    assert age["threshold"] == 30
    errors = declared.named("chat-sender-errors-alarm").inputs
    assert errors["dimensions"] == {"FunctionName": outputs_of(declared, "chat-sender")["name"]}
    dead = declared.named("chat-fanout-dlq-depth-alarm").inputs
    assert dead["dimensions"] == {"QueueName": outputs_of(declared, "chat-fanout-dlq")["name"]}


def test_queued_fanout_off_declares_no_queue_sender_or_grant() -> None:
    captured: dict[str, Any] = {}
    mocks = run(channel_program(queued_fanout=False, alarms=True, alarm_email="a@b.example",
                                captured=captured))  # fmt: skip
    assert [q.name for q in mocks.of_type(QUEUE)] == ["chat-dlq"]
    assert "chat-sender" not in [f.name for f in mocks.of_type(FUNCTION)]
    assert [m.name for m in mocks.of_type(MAPPING)] == ["chat-source-events"]
    env = mocks.named("chat-broadcaster").inputs["environment"]["variables"]
    assert not [k for k in env if k.startswith("FANOUT_")]
    sids = {st["Sid"] for st in documents(mocks)["chat-broadcaster-policy"]["Statement"]}
    assert not sids & {"QueueDeliveryJobs", "FanoutMode"}
    assert len(mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")) == 3
    assert captured["fanout_queue_url"] == ""


def test_fanout_transforms_adjust_the_queues_and_the_mapping() -> None:
    transforms = RealtimeChannelTransforms(
        fanout_queue=lambda args: setattr(args, "message_retention_seconds", 7200),
        fanout_dead_letter_queue=lambda args: setattr(args, "message_retention_seconds", 86400),
        fanout_mapping=lambda args: setattr(args, "batch_size", 5),
    )
    mocks = run(channel_program(transforms=transforms))
    assert mocks.named("chat-fanout").inputs["messageRetentionSeconds"] == 7200
    assert mocks.named("chat-fanout-dlq").inputs["messageRetentionSeconds"] == 86400
    assert mocks.named("chat-fanout-senders").inputs["batchSize"] == 5


def test_a_channel_name_sqs_refuses_in_group_ids_is_refused_naming_the_setting() -> None:
    def program() -> None:
        RealtimeChannel("chat room", RealtimeChannelArgs(token_secret=SECRET))

    with pytest.raises(ValueError, match="queued_fanout"):
        run(program)
