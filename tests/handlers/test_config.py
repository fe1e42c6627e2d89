"""Configuration: a missing variable fails the cold start by name; the loaders' defaults."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from handlers import config
from handlers.config import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]

BROADCASTER_ENV = {
    "CONNECTIONS_TABLE": "conns",
    "MANAGEMENT_ENDPOINT": "https://x.example/dev",
    "SOURCES": '{"events": {"table": "events-862417b"}}',
    "SUBSCRIPTIONS_TABLE": "subs",
}
DEFAULT_ENV = {
    "CONNECTIONS_TABLE": "conns",
    "SUBSCRIPTIONS_TABLE": "subs",
    "SOURCES": '{"events": {"table": "events-862417b"}}',
}


def import_without(module: str, *missing: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in missing}
    return subprocess.run(
        [sys.executable, "-c", f"import handlers.{module}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "module", ["authorizer", "connect", "disconnect", "default", "broadcaster"]
)
def test_handler_imports_with_its_environment_set(module: str) -> None:
    imported = import_without(module)

    assert imported.returncode == 0, imported.stderr


@pytest.mark.parametrize(
    ("module", "variable"),
    [
        ("authorizer", "TOKEN_SECRET_PARAMETER"),
        ("connect", "CONNECTIONS_TABLE"),
        ("disconnect", "CONNECTIONS_TABLE"),
        ("disconnect", "SUBSCRIPTIONS_TABLE"),
        ("default", "CONNECTIONS_TABLE"),
        ("default", "SUBSCRIPTIONS_TABLE"),
        ("default", "SOURCES"),
        ("broadcaster", "SUBSCRIPTIONS_TABLE"),
        ("broadcaster", "CONNECTIONS_TABLE"),
        ("broadcaster", "MANAGEMENT_ENDPOINT"),
        ("broadcaster", "SOURCES"),
    ],
)
def test_handler_import_fails_naming_the_missing_variable(module: str, variable: str) -> None:
    imported = import_without(module, variable)

    assert imported.returncode != 0
    assert "ConfigError" in imported.stderr
    assert f"environment variable {variable} is not set" in imported.stderr


def test_default_handler_imports_without_a_management_endpoint() -> None:
    imported = import_without("default", "MANAGEMENT_ENDPOINT")

    assert imported.returncode == 0, imported.stderr


# --- loaders ------------------------------------------------------------------------------


def test_authorizer_config_reads_the_secret_parameter() -> None:
    loaded = config.authorizer_config({"TOKEN_SECRET_PARAMETER": " /app/secret "})

    assert loaded.secret_parameter == "/app/secret"
    assert loaded.token_max_lifetime == 86400  # one day unless configured


@pytest.mark.parametrize("raw", ["60", " 3600 ", "2592000"])
def test_authorizer_config_reads_the_token_lifetime_cap(raw: str) -> None:
    loaded = config.authorizer_config(
        {"TOKEN_SECRET_PARAMETER": "/app/secret", "TOKEN_MAX_LIFETIME_SECONDS": raw}
    )

    assert loaded.token_max_lifetime == int(raw)


@pytest.mark.parametrize("raw", ["59", "2592001", "0", "-1", "1.5", "1e5", "day"])
def test_bad_token_lifetime_cap_is_a_config_error_naming_it(raw: str) -> None:
    with pytest.raises(ConfigError, match="TOKEN_MAX_LIFETIME_SECONDS"):
        config.authorizer_config(
            {"TOKEN_SECRET_PARAMETER": "/app/secret", "TOKEN_MAX_LIFETIME_SECONDS": raw}
        )


@pytest.mark.parametrize(
    "env", [{}, {"TOKEN_SECRET_PARAMETER": ""}, {"TOKEN_SECRET_PARAMETER": " "}]
)
def test_authorizer_config_without_a_secret_parameter_names_it(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="TOKEN_SECRET_PARAMETER is not set"):
        config.authorizer_config(env)


def test_disconnect_config_reads_the_tables() -> None:
    loaded = config.disconnect_config({"CONNECTIONS_TABLE": "conns", "SUBSCRIPTIONS_TABLE": "s"})
    assert (loaded.connections_table, loaded.subscriptions_table) == ("conns", "s")


def test_disconnect_config_without_a_table_names_it() -> None:
    with pytest.raises(ConfigError, match="CONNECTIONS_TABLE is not set"):
        config.disconnect_config({})


def test_default_config_defaults() -> None:
    loaded = config.default_config(DEFAULT_ENV)

    assert loaded == config.DefaultConfig(
        management_endpoint=None,
        max_input_bytes=32 * 1024,
        connections_table="conns",
        subscriptions_table="subs",
        sources={"events": config.Source("events", "events-862417b", (), False, ())},
        max_subscriptions=20,
        table_buckets=4,
    )


def test_default_config_reads_endpoint_and_input_limit() -> None:
    loaded = config.default_config(
        {
            **DEFAULT_ENV,
            "MANAGEMENT_ENDPOINT": "https://x.example/dev",
            "MAX_INPUT_BYTES": "1024",
            "MAX_SUBSCRIPTIONS": "5",
            "TABLE_TOPIC_BUCKETS": "1",
        }
    )

    assert (loaded.management_endpoint, loaded.max_input_bytes) == ("https://x.example/dev", 1024)
    assert (loaded.max_subscriptions, loaded.table_buckets) == (5, 1)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("MAX_SUBSCRIPTIONS", "0"),
        ("MAX_SUBSCRIPTIONS", "101"),
        ("TABLE_TOPIC_BUCKETS", "0"),
        ("TABLE_TOPIC_BUCKETS", "65"),
    ],
)
def test_default_config_bad_subscription_limits_name_them(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        config.default_config({**DEFAULT_ENV, variable: raw})


def test_authorizer_reads_the_claims_to_pass_on() -> None:
    loaded = config.authorizer_config(
        {"TOKEN_SECRET_PARAMETER": "/p", "IDENTITY_CLAIMS": "tenant, cognito:groups,,"}
    )
    assert loaded.identity_claims == ("tenant", "cognito:groups")
    assert config.authorizer_config({"TOKEN_SECRET_PARAMETER": "/p"}).identity_claims == ()


@pytest.mark.parametrize("raw", ["0", "131073", "big"])
def test_default_config_bad_input_limit_names_it(raw: str) -> None:
    with pytest.raises(ConfigError, match="MAX_INPUT_BYTES"):
        config.default_config({**DEFAULT_ENV, "MAX_INPUT_BYTES": raw})


def test_broadcaster_config_defaults() -> None:
    loaded = config.broadcaster_config(BROADCASTER_ENV)

    assert loaded == config.BroadcasterConfig(
        connections_table="conns",
        management_endpoint="https://x.example/dev",
        target_attribute=None,
        include_old_image=False,
        send_concurrency=64,
        send_max_attempts=5,
        sources={"events": config.Source("events", "events-862417b", (), False, ())},
        subscriptions_table="subs",
        table_buckets=4,
    )


def test_broadcaster_config_reads_every_setting() -> None:
    loaded = config.broadcaster_config(
        {
            **BROADCASTER_ENV,
            "TARGET_ATTRIBUTE": "owner",
            "INCLUDE_OLD_IMAGE": "true",
            "SEND_CONCURRENCY": "8",
            "SEND_MAX_ATTEMPTS": "2",
        }
    )

    assert loaded == config.BroadcasterConfig(
        connections_table="conns",
        management_endpoint="https://x.example/dev",
        target_attribute="owner",
        include_old_image=True,
        send_concurrency=8,
        send_max_attempts=2,
        sources={"events": config.Source("events", "events-862417b", (), False, ())},
        subscriptions_table="subs",
        table_buckets=4,
    )


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " true "])
def test_include_old_image_true_values(raw: str) -> None:
    loaded = config.broadcaster_config({**BROADCASTER_ENV, "INCLUDE_OLD_IMAGE": raw})

    assert loaded.include_old_image is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "OFF", ""])
def test_include_old_image_false_values(raw: str) -> None:
    loaded = config.broadcaster_config({**BROADCASTER_ENV, "INCLUDE_OLD_IMAGE": raw})

    assert loaded.include_old_image is False


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "enabled"])
def test_bad_include_old_image_is_a_config_error_naming_it(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"INCLUDE_OLD_IMAGE=.* is not a boolean"):
        config.broadcaster_config({**BROADCASTER_ENV, "INCLUDE_OLD_IMAGE": raw})


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SEND_CONCURRENCY", "0"),
        ("SEND_CONCURRENCY", "257"),
        ("SEND_CONCURRENCY", "many"),
        ("SEND_MAX_ATTEMPTS", "0"),
        ("SEND_MAX_ATTEMPTS", "11"),
    ],
)
def test_bad_broadcaster_numbers_are_config_errors_naming_them(variable: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        config.broadcaster_config({**BROADCASTER_ENV, variable: raw})


@pytest.mark.parametrize("variable", ["CONNECTIONS_TABLE", "MANAGEMENT_ENDPOINT", "SOURCES"])
def test_broadcaster_config_without_a_required_variable_names_it(variable: str) -> None:
    env = {name: value for name, value in BROADCASTER_ENV.items() if name != variable}

    with pytest.raises(ConfigError, match=f"{variable} is not set"):
        config.broadcaster_config(env)


def test_sources_map_each_label_to_its_table_ignoring_unknown_fields() -> None:
    raw = (
        '{"events": {"table": "events-862417b", "filters": [], "later": 1},'
        ' "orders": {"table": " orders-prod "}}'
    )

    loaded = config.broadcaster_config({**BROADCASTER_ENV, "SOURCES": raw})

    assert {label: source.table for label, source in loaded.sources.items()} == {
        "events": "events-862417b",
        "orders": "orders-prod",
    }


def test_sources_carry_key_schema_stream_images_and_access_rules() -> None:
    raw = json.dumps(
        {
            "orders": {
                "table": "orders-1",
                "keys": [["PK", "S"], ["SK", "N"]],
                "oldImage": True,
                "access": [{"key": {"PK": "USER#{sub}"}, "fields": ["status"]}],
            }
        }
    )
    (source,) = config.broadcaster_config({**BROADCASTER_ENV, "SOURCES": raw}).sources.values()
    assert source.keys == (("PK", "S"), ("SK", "N"))
    assert source.old_image is True
    assert source.access[0].to_json() == {"key": {"PK": "USER#{sub}"}, "fields": ["status"]}


def test_sources_carry_their_filters_as_lambda_patterns() -> None:
    paid = {"eventName": ["INSERT", "MODIFY"], "dynamodb": {"NewImage": {"s": {"S": ["paid"]}}}}
    removals = {"eventName": ["REMOVE"]}
    raw = json.dumps({"orders": {"table": "o", "oldImage": True, "filters": [paid, removals]}})

    (source,) = config.broadcaster_config({**BROADCASTER_ENV, "SOURCES": raw}).sources.values()

    assert source.filters == (paid, removals)
    assert config.broadcaster_config(BROADCASTER_ENV).sources["events"].filters == ()


def test_no_source_yet_is_an_empty_object() -> None:
    assert config.broadcaster_config({**BROADCASTER_ENV, "SOURCES": "{}"}).sources == {}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("events-862417b", "is not JSON"),
        ('{"events": {"table": "t"}', "is not JSON"),
        ("[]", "must be a JSON object"),
        ('"events"', "must be a JSON object"),
        ('{"e": {"table": "t", "keys": [["PK", "X"]]}}', '"keys" must list'),
        ('{"e": {"table": "t", "keys": [["PK", "S"], ["SK", "S"], ["Z", "S"]]}}', '"keys"'),
        ('{"e": {"table": "t", "oldImage": "yes"}}', '"oldImage" must be'),
        ('{"e": {"table": "t", "keys": [["PK", "S"]], "access": [{}]}}', "access[0]"),
        ('{"e": {"table": "t", "keys": [["PK", "S"]], "access": [{"key": {"SK": "x"}}]}}', "'PK'"),
        ('{"events": "events-862417b"}', "source 'events' must be an object"),
        ('{"events": {}}', "source 'events' must be an object"),
        ('{"events": {"table": ""}}', "source 'events' must be an object"),
        ('{"events": {"table": 7}}', "source 'events' must be an object"),
        ('{" ": {"table": "t"}}', "must be an object"),
        ('{"a": {"table": "t"}, "b": {"table": "t"}}', "named by both 'a' and 'b'"),
        ('{"e": {"table": "t", "oldImage": true, "filters": {}}}', '"filters" must be a list'),
        (
            '{"e": {"table": "t", "oldImage": true, "filters": [' + '{"a": ["x"]},' * 5 + "{}]}}",
            "at most 5",
        ),
        ('{"e": {"table": "t", "oldImage": true, "filters": ["x"]}}', '"filters"[0]: pattern'),
        ('{"e": {"table": "t", "oldImage": true, "filters": [{"a": []}]}}', "a: empty arrays"),
        (
            '{"e": {"table": "t", "oldImage": true, "filters": [{"a": [{"contains": "x"}]}]}}',
            "unknown matcher 'contains'",
        ),
        ('{"e": {"table": "t", "filters": [{"eventName": ["INSERT"]}]}}', 'need "oldImage"'),
    ],
)
def test_bad_sources_are_config_errors_naming_sources(raw: str, says: str) -> None:
    with pytest.raises(ConfigError, match="environment variable SOURCES") as refused:
        config.broadcaster_config({**BROADCASTER_ENV, "SOURCES": raw})

    assert says in str(refused.value)
