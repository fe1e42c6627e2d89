"""The whole stack program (``__main__.py``) under Pulumi mocks, with the real stack files.

Runs are cached per (stack, preview) so the suite stays fast: each distinct program run
happens once, and the tests below only read what it declared.
"""

from __future__ import annotations

import gc
import json
import re
import runpy
from collections.abc import Iterator
from functools import cache
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime.rpc import _special_secret_sig, _special_sig_key

from components import stack_config
from components.realtime_channel import FUNCTION_KINDS
from tests.infra.harness import (
    DEV_SECRET,
    PROJECT,
    ROOT,
    RecordingMocks,
    retrieve_failures,
    run,
    run_main,
    stream_mapping,
    unretrieved_failures,
)
from tests.infra.harness import stack_config as stack_file_config

TABLE = "aws:dynamodb/table:Table"
FUNCTION = "aws:lambda/function:Function"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
PARAMETER = "aws:ssm/parameter:Parameter"
GET_TABLE = "aws:dynamodb/getTable:getTable"
CONNECTIONS_TABLE = "realtime-connections"
SUBSCRIPTIONS_TABLE = "realtime-subscriptions"
EXISTING = "orders"
EXISTING_STREAM_ARN = (
    f"arn:aws:dynamodb:us-east-1:123456789012:table/{EXISTING}/stream/2026-02-02T00:00:00.000"
)
# Pulumi.prod.yaml turns alarms on and, honestly, names no destination (an operator sets
# alarmTopicArn or alarmEmail); the prod runs give it one, as the operator would.
PROD_ALARM_TOPIC = "arn:aws:sns:us-east-1:123456789012:oncall"
STACK_OVERRIDES = {"dev": {}, "prod": {"alarmTopicArn": PROD_ALARM_TOPIC}}
STACK_RUNS = [
    pytest.param("dev", True, id="dev-preview"),
    pytest.param("dev", False, id="dev-up"),
    pytest.param("prod", True, id="prod-preview"),
    pytest.param("prod", False, id="prod-up"),
]


@cache
def _stack_run(stack: str, preview: bool) -> RecordingMocks:
    return run_main(stack, preview=preview, overrides=STACK_OVERRIDES[stack])


@cache
def _existing_table_run() -> RecordingMocks:
    mocks = RecordingMocks(
        tables={
            EXISTING: {
                "streamEnabled": True,
                "streamViewType": "NEW_AND_OLD_IMAGES",
                "streamArn": EXISTING_STREAM_ARN,
                **ORDERS_KEYS,
            }
        }
    )
    return run_main("dev", overrides={"sourceTableName": EXISTING}, mocks=mocks)


ORDERS_KEYS = {
    "hashKey": "customer",
    "rangeKey": "orderId",
    "attributes": [{"name": "customer", "type": "S"}, {"name": "orderId", "type": "S"}],
}


def _sources(mocks: RecordingMocks, kind: str = "default") -> dict[str, Any]:
    env = mocks.one(FUNCTION, f"realtime-{kind}").inputs["environment"]["variables"]
    sources: dict[str, Any] = json.loads(env["SOURCES"])
    return sources


def _main_program() -> None:
    runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")


# -- what every stack declares ------------------------------------------------------------


@pytest.mark.parametrize(("stack", "preview"), STACK_RUNS)
def test_declares_the_demo_events_table_with_a_new_and_old_images_stream(
    stack: str, preview: bool
) -> None:
    events = _stack_run(stack, preview).one(TABLE, "events").inputs
    assert events["hashKey"] == "PK"
    assert events["rangeKey"] == "SK"
    assert events["attributes"] == [{"name": "PK", "type": "S"}, {"name": "SK", "type": "S"}]
    assert events["streamEnabled"] is True
    assert events["streamViewType"] == "NEW_AND_OLD_IMAGES"


@pytest.mark.parametrize(("stack", "preview"), STACK_RUNS)
def test_declares_one_realtime_channel_component(stack: str, preview: bool) -> None:
    mocks = _stack_run(stack, preview)
    assert [r.name for r in mocks.of_type("realtime:index:RealtimeChannel")] == ["realtime"]


@pytest.mark.parametrize(("stack", "preview"), STACK_RUNS)
def test_declares_one_function_per_kind(stack: str, preview: bool) -> None:
    functions = _stack_run(stack, preview).of_type(FUNCTION)
    assert len(functions) == len(FUNCTION_KINDS) == 7
    assert sorted(f.name for f in functions) == sorted(f"realtime-{k}" for k in FUNCTION_KINDS)


@pytest.mark.parametrize(("stack", "preview"), STACK_RUNS)
def test_maps_the_events_table_stream_to_the_broadcaster(stack: str, preview: bool) -> None:
    mocks = _stack_run(stack, preview)
    mapping = stream_mapping(mocks).inputs
    if preview:
        # The stream ARN of a table not created yet is unknown, as in a real preview.
        assert isinstance(mapping["eventSourceArn"], pulumi.output.Unknown)
    else:
        stream_arn = mocks.one(TABLE, "events").outputs["streamArn"]
        assert stream_arn.startswith("arn:aws:dynamodb:")
        assert mapping["eventSourceArn"] == stream_arn
        assert mapping["functionName"] == mocks.one(FUNCTION, "realtime-broadcaster").outputs["arn"]


# -- dev vs prod ----------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "protected"), [("dev", False), ("prod", True)])
def test_connections_table_protection_follows_the_stack(stack: str, protected: bool) -> None:
    table = _stack_run(stack, False).one(TABLE, CONNECTIONS_TABLE).inputs
    assert table["pointInTimeRecovery"] == {"enabled": protected}
    assert table["deletionProtectionEnabled"] is protected


@pytest.mark.parametrize(("stack", "days"), [("dev", 7), ("prod", 90)])
def test_every_log_group_keeps_the_stack_retention(stack: str, days: int) -> None:
    log_groups = _stack_run(stack, False).of_type(LOG_GROUP)
    # one log group per function and the stage's access logs
    assert len(log_groups) == len(FUNCTION_KINDS) + 1
    assert {g.name: g.inputs["retentionInDays"] for g in log_groups} == {
        g.name: days for g in log_groups
    }


@pytest.mark.parametrize(("stack", "memory"), [("dev", 256), ("prod", 512)])
def test_broadcaster_memory_is_its_own_setting(stack: str, memory: int) -> None:
    functions = {f.name: f.inputs["memorySize"] for f in _stack_run(stack, False).of_type(FUNCTION)}
    assert functions.pop("realtime-broadcaster") == 1769
    assert functions.pop("realtime-sender") == 1024
    assert set(functions.values()) == {memory}
    tuned = run_main(stack, overrides={**STACK_OVERRIDES[stack], "broadcasterMemorySize": "3008"})
    assert tuned.one(FUNCTION, "realtime-broadcaster").inputs["memorySize"] == 3008


@pytest.mark.parametrize(("stack", "alarms"), [("dev", 0), ("prod", 6)])
def test_alarms_only_in_prod(stack: str, alarms: int) -> None:
    assert len(_stack_run(stack, False).of_type(ALARM)) == alarms


def test_prod_alarms_notify_the_configured_topic() -> None:
    alarms = _stack_run("prod", False).of_type(ALARM)
    assert [a.inputs["alarmActions"] for a in alarms] == [[PROD_ALARM_TOPIC]] * 6
    assert not _stack_run("prod", False).of_type("aws:sns/topic:Topic")


def test_prod_alarms_can_mail_instead() -> None:
    mocks = run_main("prod", overrides={"alarmEmail": "oncall@example.com"})
    topic = mocks.one("aws:sns/topic:Topic")
    assert {tuple(a.inputs["alarmActions"]) for a in mocks.of_type(ALARM)} == {
        (topic.outputs["arn"],)
    }


@pytest.mark.parametrize("preview", [True, False])
def test_alarms_without_a_destination_fail_naming_both_keys(preview: bool) -> None:
    # the committed Pulumi.prod.yaml, as it stands before an operator picks a destination
    with pytest.raises(stack_config.ConfigError) as error:
        run_main("prod", preview=preview)
    message = str(error.value)
    assert f"{PROJECT}:alarmTopicArn" in message and f"{PROJECT}:alarmEmail" in message
    with pytest.raises(stack_config.ConfigError, match="alarmTopicArn"):
        run_main("dev", overrides={"alarms": "true"})


@pytest.mark.parametrize(("stack", "preview"), STACK_RUNS)
def test_a_fresh_account_gets_api_gateways_cloudwatch_role(stack: str, preview: bool) -> None:
    account = _stack_run(stack, preview).one("aws:apigateway/account:Account")
    assert account.name == "realtime-apigateway-account"


def test_an_account_already_set_up_is_left_alone() -> None:
    mocks = run_main("dev", overrides={"manageApiGatewayAccount": "false"})
    assert mocks.of_type("aws:apigateway/account:Account") == []
    assert mocks.one("aws:apigatewayv2/stage:Stage").inputs["accessLogSettings"]


def test_token_max_lifetime_config_reaches_the_authorizer() -> None:
    mocks = run_main("dev", overrides={"tokenMaxLifetimeSeconds": "3600"})
    env = mocks.one(FUNCTION, "realtime-authorizer").inputs["environment"]["variables"]
    assert env["TOKEN_MAX_LIFETIME_SECONDS"] == "3600"


# -- an existing source table --------------------------------------------------------------


def test_source_table_override_declares_no_demo_table() -> None:
    tables = _existing_table_run().of_type(TABLE)
    assert [t.name for t in tables] == [CONNECTIONS_TABLE, SUBSCRIPTIONS_TABLE, "realtime-replay"]


def test_source_table_override_looks_the_table_up_by_name() -> None:
    lookups = [args for token, args in _existing_table_run().calls if token == GET_TABLE]
    assert [args["name"] for args in lookups] == [EXISTING]


def test_source_table_override_maps_that_tables_stream() -> None:
    mapping = _existing_table_run().one(MAPPING, f"realtime-source-{EXISTING}")
    assert mapping.inputs["eventSourceArn"] == EXISTING_STREAM_ARN


@pytest.mark.parametrize(
    "table",
    [
        pytest.param({}, id="no-stream"),
        pytest.param({"streamEnabled": True, "streamViewType": "KEYS_ONLY"}, id="keys-only"),
    ],
)
def test_source_table_without_new_images_fails_naming_the_table_and_the_fix(
    table: dict[str, Any],
) -> None:
    mocks = RecordingMocks(tables={EXISTING: table})
    with pytest.raises(ValueError, match=f"table '{EXISTING}'") as failure:
        run_main("dev", overrides={"sourceTableName": EXISTING}, mocks=mocks)
    assert 'stream_view_type="NEW_AND_OLD_IMAGES"' in str(failure.value)
    # The senders' queue mapping may or may not be declared before the lookup fails
    # (it races the getTable call); what must never exist is a stream mapping.
    assert not [m for m in mocks.of_type(MAPPING) if m.name.startswith("realtime-source-")]


# -- subscriptions: who may subscribe, limits -----------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_demo_table_lets_any_signed_in_user_subscribe_to_all_of_it(stack: str) -> None:
    mocks = _stack_run(stack, False)
    events = mocks.one(TABLE, "events").outputs["name"]
    expected = {
        "events": {
            "table": events,
            "keys": [["PK", "S"], ["SK", "S"]],
            "oldImage": True,
            "access": [{"table": True}],
        }
    }
    assert _sources(mocks, "default") == _sources(mocks, "broadcaster") == expected
    authorizer = mocks.one(FUNCTION, "realtime-authorizer").inputs["environment"]["variables"]
    assert authorizer["IDENTITY_CLAIMS"] == ""


def test_an_existing_table_without_source_access_accepts_no_one_and_says_so() -> None:
    warnings: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pulumi.log, "warn", lambda message, *a, **k: warnings.append(message))
        mocks = RecordingMocks(tables={EXISTING: {**ORDERS_KEYS, "streamEnabled": True,
                                                  "streamViewType": "NEW_IMAGE"}})  # fmt: skip
        run_main("dev", overrides={"sourceTableName": EXISTING}, mocks=mocks)
    assert _sources(mocks)[EXISTING] == {
        "table": EXISTING,
        "keys": [["customer", "S"], ["orderId", "S"]],
        "oldImage": False,
        "access": [],
    }
    (warning,) = [w for w in warnings if "sourceAccess" in w]
    assert f"table {EXISTING!r} accepts no subscription (default deny)" in warning


def test_source_access_sets_the_rules_of_an_existing_table() -> None:
    rules = [
        {"key": {"customer": "{sub}"}},
        {"table": True, "when": {"claims.role": "admin"}, "fields": ["status"]},
    ]
    mocks = RecordingMocks(tables={EXISTING: {**ORDERS_KEYS, "streamEnabled": True,
                                              "streamViewType": "NEW_AND_OLD_IMAGES"}})  # fmt: skip
    run_main(
        "dev",
        overrides={"sourceTableName": EXISTING, "sourceAccess": json.dumps(rules)},
        mocks=mocks,
    )
    assert _sources(mocks)[EXISTING]["access"] == rules
    assert _sources(mocks, "broadcaster")[EXISTING]["access"] == rules
    authorizer = mocks.one(FUNCTION, "realtime-authorizer").inputs["environment"]["variables"]
    assert authorizer["IDENTITY_CLAIMS"] == "role"


def test_source_access_replaces_the_demo_rule() -> None:
    rules = [{"key": {"PK": "USER#{sub}"}}]
    mocks = run_main("dev", overrides={"sourceAccess": json.dumps(rules)})
    assert _sources(mocks)["events"]["access"] == rules


@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
def test_source_access_that_does_not_fit_the_tables_keys_fails_naming_source_and_rule(
    preview: bool,
) -> None:
    mocks = RecordingMocks(preview=preview, tables={EXISTING: {**ORDERS_KEYS,
        "streamEnabled": True, "streamViewType": "NEW_AND_OLD_IMAGES"}})  # fmt: skip
    access = json.dumps([{"table": True}, {"key": {"PK": "USER#{sub}"}}])
    with pytest.raises(ValueError) as error:
        run_main(
            "dev",
            preview=preview,
            overrides={"sourceTableName": EXISTING, "sourceAccess": access},
            mocks=mocks,
        )
    assert f"source {EXISTING!r}: access[1]: key must name the partition key 'customer'" in str(
        error.value
    )


def test_identity_rules_without_auth_fail_naming_source_access() -> None:
    access = json.dumps([{"key": {"PK": "USER#{sub}"}}])
    with pytest.raises(stack_config.ConfigError) as error:
        run_main("dev", overrides={"authEnabled": "false", "sourceAccess": access})
    message = str(error.value)
    assert message.startswith(f"{PROJECT}:sourceAccess: access[0] uses the identity ({{sub}})")


def test_subscription_limits_come_from_the_stack_config() -> None:
    mocks = run_main("dev", overrides={"maxSubscriptions": "5", "tableTopicBuckets": "16"})
    default = mocks.one(FUNCTION, "realtime-default").inputs["environment"]["variables"]
    broadcaster = mocks.one(FUNCTION, "realtime-broadcaster").inputs["environment"]["variables"]
    assert (default["MAX_SUBSCRIPTIONS"], default["TABLE_TOPIC_BUCKETS"]) == ("5", "16")
    assert broadcaster["TABLE_TOPIC_BUCKETS"] == "16"


# -- stack outputs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports() -> Iterator[dict[str, Any]]:
    """name -> resolved value of every ``pulumi.export`` of a dev deployment, in order."""
    original = pulumi.export
    names: list[str] = []
    resolved: dict[str, Any] = {}

    def record(name: str, value: Any) -> None:
        names.append(name)
        pulumi.Output.from_input(value).apply(lambda v: resolved.__setitem__(name, v))
        original(name, value)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pulumi, "export", record)
        run_main("dev")
    assert set(resolved) == set(names), "every export resolves during the run"
    yield {name: resolved[name] for name in names}


def test_exports_the_documented_names(exports: dict[str, Any]) -> None:
    assert list(exports) == [
        "url",
        "executeApiUrl",
        "customDomainTarget",
        "managementEndpoint",
        "connectionsTableName",
        "subscriptionsTableName",
        "replayTableName",
        "apiId",
        "stageName",
        "deadLetterQueueUrl",
        "fanoutQueueUrl",
        "functionNames",
        "sourceTableName",
        "tokenSecretParameter",
    ]


def test_exported_fanout_queue_is_the_one_the_broadcaster_sends_jobs_to(
    exports: dict[str, Any],
) -> None:
    mocks = _stack_run("dev", False)
    broadcaster = mocks.one(FUNCTION, "realtime-broadcaster").inputs["environment"]["variables"]
    assert exports["fanoutQueueUrl"] == broadcaster["FANOUT_QUEUE_URL"]
    assert exports["fanoutQueueUrl"].endswith("/realtime-fanout.fifo")


def test_exported_token_secret_parameter_is_the_authorizers_parameter(
    exports: dict[str, Any],
) -> None:
    mocks = _stack_run("dev", False)
    assert (
        exports["tokenSecretParameter"]
        == mocks.one(PARAMETER, "realtime-token-secret").outputs["name"]
    )
    authorizer = mocks.one(FUNCTION, "realtime-authorizer").inputs["environment"]["variables"]
    assert authorizer["TOKEN_SECRET_PARAMETER"] == exports["tokenSecretParameter"]


def test_exported_url_is_a_websocket_url(exports: dict[str, Any]) -> None:
    assert exports["url"].startswith("wss://")
    assert exports["url"].endswith("/dev")


def test_without_a_custom_domain_the_url_is_execute_apis_and_there_is_no_target(
    exports: dict[str, Any],
) -> None:
    assert exports["url"] == exports["executeApiUrl"]
    assert ".execute-api." in exports["url"]
    assert exports["customDomainTarget"] == ""


def test_exported_management_endpoint_is_the_https_form_of_the_url(
    exports: dict[str, Any],
) -> None:
    assert exports["managementEndpoint"] == "https://" + exports["url"].removeprefix("wss://")


def test_exported_function_names_cover_every_kind(exports: dict[str, Any]) -> None:
    assert set(exports["functionNames"]) == set(FUNCTION_KINDS)


def test_exported_source_table_name_is_the_demo_tables_physical_name(
    exports: dict[str, Any],
) -> None:
    assert exports["sourceTableName"].startswith("events-")
    assert exports["connectionsTableName"].startswith("realtime-connections-")
    assert exports["subscriptionsTableName"].startswith("realtime-subscriptions-")
    mocks = _stack_run("dev", False)
    default = mocks.one(FUNCTION, "realtime-default").inputs["environment"]["variables"]
    assert default["SUBSCRIPTIONS_TABLE"] == mocks.one(TABLE, SUBSCRIPTIONS_TABLE).outputs["name"]


# -- configuration errors name the key ------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("logRetentionDays", "13"),
        ("batchSize", "0"),
        ("batchSize", "abc"),
        ("connectionTtlSeconds", "10"),
        ("tokenMaxLifetimeSeconds", "30"),
        ("tokenMaxLifetimeSeconds", "one day"),
        ("memorySize", "64"),
        ("broadcasterMemorySize", "100"),
        ("throttlingRateLimit", "-1"),
        ("maxRecordAgeSeconds", "30"),
        ("alarmEmail", "not-an-email"),
        ("alarmTopicArn", "oncall"),
        ("stageName", "bad name!"),
        ("authEnabled", "maybe"),
        ("maxSubscriptions", "0"),
        ("maxSubscriptions", "101"),
        ("tableTopicBuckets", "65"),
        ("tableTopicBuckets", "many"),
        ("sourceAccess", "table: true"),
        ("sourceAccess", '{"table": true}'),
        ("sourceAccess", '[{"table": "yes"}]'),
        ("sourceAccess", '[{"table": true}, {"key": {"PK": "{user}"}}]'),
    ],
)
def test_bad_config_value_raises_config_error_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(stack_config.ConfigError, match=re.escape(f"{PROJECT}:{key}:")):
        run_main("dev", overrides={key: value})


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("preview", [True, False], ids=["preview", "up"])
def test_a_new_stack_without_token_secret_runs_on_a_generated_one(
    stack: str, preview: bool
) -> None:
    # what a first `pulumi preview` / `pulumi up` of a new stack sees: no tokenSecret set
    config = stack_file_config(stack, STACK_OVERRIDES[stack])
    assert not any(key.endswith(":tokenSecret") for key in config)
    mocks = run(_main_program, config=config, preview=preview)
    password = mocks.one(
        "random:index/randomPassword:RandomPassword", "realtime-token-secret-value"
    )
    parameter = mocks.one(PARAMETER, "realtime-token-secret").inputs["value"]
    if not preview:
        assert parameter == {
            _special_sig_key: _special_secret_sig,
            "value": password.outputs["result"],
        }


def test_a_set_token_secret_wins() -> None:
    generated = _stack_run("dev", False).of_type("random:index/randomPassword:RandomPassword")
    assert [r.name for r in generated] == ["realtime-cursor-secret-value"]


def test_short_token_secret_fails_at_run_time_naming_token_secret() -> None:
    with pytest.raises(ValueError, match="token_secret must be at least 16 characters"):
        run_main("dev", overrides={"tokenSecret": "too-short"})


# -- the token secret never appears in plain text ------------------------------------------


def _is_parameter_value(resource_type: str, key: str) -> bool:
    return resource_type == PARAMETER and key == "value"


def test_token_secret_appears_nowhere_but_the_parameter_value() -> None:
    mocks = _stack_run("dev", False)
    leaks = []
    for resource in mocks.resources:
        for side, properties in (("inputs", resource.inputs), ("outputs", resource.outputs)):
            for key, value in properties.items():
                # The mocks echo inputs as outputs, so the parameter's `value` shows up on
                # both sides; a real provider returns it as a secret output.
                if _is_parameter_value(resource.type, key):
                    continue
                if DEV_SECRET in json.dumps(value, default=str):
                    leaks.append(f"{resource.type} {resource.name} {side}.{key}")
    leaks += [token for token, args in mocks.calls if DEV_SECRET in json.dumps(args, default=str)]
    assert leaks == []


def test_token_secret_reaches_the_parameter_marked_secret() -> None:
    value = _stack_run("dev", False).one(PARAMETER, "realtime-token-secret").inputs["value"]
    assert value == {_special_sig_key: _special_secret_sig, "value": DEV_SECRET}


# -- Pulumi.yaml and stack_config.KEYS agree ------------------------------------------------

YAML_TYPES = {str: "string", int: "integer", bool: "boolean", list: "array"}


@cache
def _declared_config() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    declared: dict[str, dict[str, Any]] = document["config"]
    return declared


def _convert(kind: type, value: Any) -> Any:
    """A Pulumi.yaml default as the Python value the program would read."""
    if kind is bool:
        text = str(value).lower()
        assert text in ("true", "false"), f"{value!r} is not a boolean"
        return text == "true"
    if kind is int:
        assert not isinstance(value, bool), f"{value!r} is not an integer"
        return int(value)
    if kind is list:
        assert isinstance(value, list), f"{value!r} is not a list"
        return value
    return str(value)


def test_pulumi_yaml_declares_exactly_the_keys_the_program_reads() -> None:
    assert set(_declared_config()) == set(stack_config.KEYS)


@pytest.mark.parametrize("key", sorted(stack_config.KEYS))
def test_pulumi_yaml_key_has_type_description_and_default(key: str) -> None:
    declared = _declared_config().get(key, {})
    assert {"type", "description", "default"} <= set(declared)
    assert str(declared["description"]).strip()


@pytest.mark.parametrize("key", sorted(stack_config.KEYS))
def test_pulumi_yaml_default_equals_the_program_default(key: str) -> None:
    kind, default, _ = stack_config.KEYS[key]
    declared = _declared_config()[key]
    assert _convert(kind, declared["default"]) == default
    assert type(_convert(kind, declared["default"])) is type(default)


@pytest.mark.parametrize("key", sorted(stack_config.KEYS))
def test_pulumi_yaml_type_matches_the_program_type(key: str) -> None:
    kind, _, _ = stack_config.KEYS[key]
    assert _declared_config()[key]["type"] == YAML_TYPES[kind]


# -- harness ------------------------------------------------------------------------------------


def test_failed_run_leaves_no_unretrieved_exceptions_behind() -> None:
    retrieve_failures()
    mocks = RecordingMocks(tables={EXISTING: {}})
    try:
        with pytest.raises(ValueError, match="has no stream"):
            run_main("dev", overrides={"sourceTableName": EXISTING}, mocks=mocks)
        gc.collect()
        assert unretrieved_failures() == []
    finally:
        retrieve_failures()
