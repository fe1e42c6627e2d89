"""The model the emulator builds from a recorded program, and the table requests it makes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from emulator.model import (
    SECRET_SIG,
    SIG_KEY,
    Model,
    ModelError,
    TableSpec,
    archive_digest,
    build,
    plain,
    rate_seconds,
)
from emulator.program import (
    PROJECT,
    ROOT,
    Declared,
    RecordingMocks,
    project_defaults,
    run_main,
    stack_config,
)
from emulator.services import table_request

SECRET = "x" * 32
API = "aws:apigatewayv2/api:Api"
STAGE = "aws:apigatewayv2/stage:Stage"
INTEGRATION = "aws:apigatewayv2/integration:Integration"
QUEUE = "aws:sqs/queue:Queue"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"


@pytest.fixture(scope="module")
def declared() -> list[Declared]:
    mocks = run_main(
        "dev", secret=SECRET, with_defaults=True, mocks=RecordingMocks(gateway=("127.0.0.1", 8123))
    )
    return list(mocks.resources)


@pytest.fixture(scope="module")
def model(declared: list[Declared]) -> Model:
    return build(declared)


def one(resources: list[Declared], type_: str, name: str | None = None) -> Declared:
    found = [r for r in resources if r.type == type_ and (name is None or r.name == name)]
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def function(model: Model, logical: str) -> Any:
    (found,) = [f for f in model.functions.values() if f.logical == logical]
    return found


def without(resources: list[Declared], type_: str, name: str | None = None) -> list[Declared]:
    gone = one(resources, type_, name)
    return [r for r in resources if r is not gone]


# --- build on the dev program -------------------------------------------------------------


def test_build_has_the_api_and_stage(model: Model, declared: list[Declared]) -> None:
    assert model.api_id == one(declared, API).id
    assert model.stage == "dev"
    assert model.route_selection_expression == "$request.body.action"


@pytest.mark.parametrize(
    ("logical", "handler"),
    [
        ("realtime-authorizer", "handlers.authorizer.handler"),
        ("realtime-connect", "handlers.connect.handler"),
        ("realtime-disconnect", "handlers.disconnect.handler"),
        ("realtime-default", "handlers.default.handler"),
        ("realtime-broadcaster", "handlers.broadcaster.handler"),
    ],
)
def test_build_functions_have_handler_timeout_and_archive_on_disk(
    model: Model, logical: str, handler: str
) -> None:
    found = function(model, logical)
    assert found.handler == handler
    assert found.timeout > 0 and isinstance(found.timeout, float)
    assert found.memory_mb == (1769 if logical == "realtime-broadcaster" else 256)
    assert found.arn.endswith(f":function:{found.name}")
    module = handler.rsplit(".", 1)[0].replace(".", "/") + ".py"
    assert module in found.archive
    for inside, source in found.archive.items():
        assert Path(source).is_file(), inside


def test_build_lists_tables_by_logical_name_whatever_their_registration_order(
    declared: list[Declared],
) -> None:
    expected = ["events", "realtime-connections", "realtime-replay", "realtime-subscriptions"]
    for order in (declared, list(reversed(declared))):
        assert [t.logical for t in build(order).tables.values()] == expected


def test_build_broadcaster_environment(model: Model) -> None:
    broadcaster = function(model, "realtime-broadcaster")
    connections = next(t for t in model.tables.values() if t.logical == "realtime-connections")
    assert broadcaster.timeout == 60.0
    assert broadcaster.environment["CONNECTIONS_TABLE"] == connections.name
    assert "USER_INDEX_NAME" not in broadcaster.environment  # recipients come from topics
    subscriptions = next(t for t in model.tables.values() if t.logical == "realtime-subscriptions")
    assert broadcaster.environment["SUBSCRIPTIONS_TABLE"] == subscriptions.name
    assert all(isinstance(v, str) for v in broadcaster.environment.values())


@pytest.mark.parametrize("logical", ["realtime-broadcaster", "realtime-default"])
def test_build_management_endpoint_points_at_the_local_gateway(model: Model, logical: str) -> None:
    assert function(model, logical).environment["MANAGEMENT_ENDPOINT"] == (
        "http://127.0.0.1:8123/dev"
    )


def test_build_routes_map_to_their_functions_with_the_authorizer_on_connect(
    model: Model,
) -> None:
    assert set(model.routes) == {"$connect", "$disconnect", "$default"}
    connect = model.routes["$connect"]
    assert connect.function == function(model, "realtime-connect").name
    assert connect.authorization_type == "CUSTOM"
    assert connect.authorizer is not None
    assert connect.authorizer.function == function(model, "realtime-authorizer").name
    # none declared: API Gateway would run the authorizer only when every declared source is
    # present, and the token may come in the query string or in Sec-WebSocket-Protocol
    assert connect.authorizer.identity_sources == []
    assert model.routes["$disconnect"].function == function(model, "realtime-disconnect").name
    assert model.routes["$default"].function == function(model, "realtime-default").name
    assert model.routes["$disconnect"].authorizer is None
    assert model.routes["$default"].authorizer is None


def test_build_maps_the_events_stream_to_the_broadcaster_with_the_queue(
    model: Model, declared: list[Declared]
) -> None:
    (mapping,) = model.mappings
    events = one(declared, "aws:dynamodb/table:Table", "events")
    queue = one(declared, QUEUE, "realtime-dlq")
    assert mapping.table == events.outputs["name"]
    assert mapping.function == function(model, "realtime-broadcaster").name
    assert mapping.on_failure_queue == queue.outputs["name"]
    assert model.queues == {
        q.outputs["arn"]: q.outputs["name"] for q in declared if q.type == QUEUE
    }
    assert sorted(model.queues.values()) == [
        queue.outputs["name"], "realtime-fanout-dlq.fifo", "realtime-fanout.fifo"
    ]  # fmt: skip
    assert mapping.report_item_failures is True
    assert mapping.enabled is True
    assert mapping.maximum_retry_attempts == 3
    assert mapping.maximum_record_age == 3600


def test_build_runs_the_senders_on_the_fanout_queue_within_the_budget(model: Model) -> None:
    (senders,) = model.queue_mappings
    assert senders.queue == "realtime-fanout.fifo"
    assert senders.function == function(model, "realtime-sender").name
    assert (senders.batch_size, senders.report_item_failures) == (10, True)
    assert senders.maximum_concurrency == 18  # 9,000 posts/s / 500 per sender


def test_build_parameter_holds_the_secret_unwrapped(model: Model) -> None:
    token, cursor = sorted(model.parameters.items(), key=lambda p: "cursor" in p[0])
    assert token[1] == ("SecureString", SECRET)
    kind, generated = cursor[1]  # the cursor secret, generated by the mocks' RandomPassword
    assert "cursor-secret" in cursor[0] and kind == "SecureString"
    assert len(generated) == 64 and generated != SECRET


def test_build_tables(model: Model) -> None:
    events = next(t for t in model.tables.values() if t.logical == "events")
    assert (events.hash_key, events.range_key) == ("PK", "SK")
    assert events.stream_view_type == "NEW_AND_OLD_IMAGES"
    connections = next(t for t in model.tables.values() if t.logical == "realtime-connections")
    assert connections.ttl_attribute == "ttl"
    assert connections.stream_view_type is None


# --- plain ----------------------------------------------------------------------------------


def secret(value: Any) -> dict[str, Any]:
    return {SIG_KEY: SECRET_SIG, "value": value}


def test_plain_unwraps_nested_secrets() -> None:
    wrapped = {
        "a": secret("s1"),
        "b": [1, secret({"c": secret("s2")})],
        "d": {"e": "clear"},
    }
    assert plain(wrapped) == {"a": "s1", "b": [1, {"c": "s2"}], "d": {"e": "clear"}}


def test_plain_keeps_a_dict_with_a_signature_that_is_not_a_secret() -> None:
    other = {SIG_KEY: "not-the-secret-sig", "value": "v"}
    assert plain(other) == other


# --- ModelError -----------------------------------------------------------------------------


def test_build_refuses_a_program_without_an_api(declared: list[Declared]) -> None:
    with pytest.raises(ModelError, match="exactly one WebSocket API; the program declares 0"):
        build(without(declared, API))


def test_build_refuses_two_apis(declared: list[Declared]) -> None:
    api = one(declared, API)
    with pytest.raises(ModelError, match="declares 2"):
        build([*declared, dataclasses.replace(api, name="second-api")])


def test_build_refuses_an_http_api(declared: list[Declared]) -> None:
    api = one(declared, API)
    http = dataclasses.replace(api, inputs={**api.inputs, "protocolType": "HTTP"})
    with pytest.raises(ModelError, match="not a WebSocket API"):
        build([http if r is api else r for r in declared])


def test_build_refuses_two_stages(declared: list[Declared]) -> None:
    stage = one(declared, STAGE)
    prod = dataclasses.replace(stage, name="other-stage", inputs={**stage.inputs, "name": "prod"})
    with pytest.raises(ModelError, match="exactly one stage; the program declares 2"):
        build([*declared, prod])


def test_build_refuses_a_route_whose_integration_is_missing(declared: list[Declared]) -> None:
    with pytest.raises(ModelError, match=r"route '\$default' targets"):
        build(without(declared, INTEGRATION, "realtime-default-integration"))


def test_build_refuses_a_mapping_whose_on_failure_queue_is_not_declared(
    declared: list[Declared],
) -> None:
    with pytest.raises(ModelError, match="is no declared queue"):
        build(without(declared, QUEUE, "realtime-dlq"))


def test_build_refuses_a_mapping_for_an_undeclared_function(declared: list[Declared]) -> None:
    mapping = one(declared, MAPPING, "realtime-source-events")
    stray = dataclasses.replace(
        mapping, inputs={**mapping.inputs, "functionName": "somebody-elses-function"}
    )
    with pytest.raises(ModelError, match="somebody-elses-function"):
        build([stray if r is mapping else r for r in declared])


# --- stack_config ---------------------------------------------------------------------------


def test_stack_config_with_defaults_includes_every_pulumi_yaml_default() -> None:
    document = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    declared_defaults = {
        f"{PROJECT}:{key}" for key, spec in document["config"].items() if "default" in spec
    }
    values = stack_config("dev", with_defaults=True)
    assert declared_defaults <= set(values)
    assert values[f"{PROJECT}:batchSize"] == "100"
    assert values[f"{PROJECT}:includeOldImage"] == "false"
    assert values[f"{PROJECT}:tokenSecret"] == ""


def test_stack_config_stack_file_overrides_the_defaults() -> None:
    defaults = project_defaults()
    values = stack_config("dev", with_defaults=True)
    assert defaults[f"{PROJECT}:logRetentionDays"] == "14"
    assert values[f"{PROJECT}:logRetentionDays"] == "7"
    assert defaults[f"{PROJECT}:throttlingBurstLimit"] == "500"
    assert values[f"{PROJECT}:throttlingBurstLimit"] == "100"
    assert values["aws:region"] == "us-east-1"


def test_stack_config_overrides_beat_the_stack_file_and_defaults() -> None:
    values = stack_config("dev", {"logRetentionDays": "30", "batchSize": "5"}, with_defaults=True)
    assert values[f"{PROJECT}:logRetentionDays"] == "30"
    assert values[f"{PROJECT}:batchSize"] == "5"


def test_stack_config_without_defaults_has_only_the_stack_file() -> None:
    values = stack_config("dev")
    assert f"{PROJECT}:batchSize" not in values
    assert values[f"{PROJECT}:logRetentionDays"] == "7"


def test_stack_config_reads_another_root(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.yaml").write_text(
        "name: x\nconfig:\n  flag:\n    type: boolean\n    default: true\n"
        "  size:\n    type: integer\n    default: 3\n  aws:region:\n    default: eu-west-1\n"
    )
    (tmp_path / "Pulumi.s.yaml").write_text(
        f"config:\n  {PROJECT}:size: 4\n  {PROJECT}:secret:\n    secure: AAAA\n"
    )
    values = stack_config("s", with_defaults=True, root=tmp_path)
    assert values == {f"{PROJECT}:flag": "true", f"{PROJECT}:size": "4", "aws:region": "eu-west-1"}


# --- table_request --------------------------------------------------------------------------


def test_table_request_for_the_connections_table(model: Model) -> None:
    table = next(t for t in model.tables.values() if t.logical == "realtime-connections")
    request = table_request(table)
    assert request["TableName"] == table.name
    assert request["BillingMode"] == "PAY_PER_REQUEST"
    assert request["KeySchema"] == [{"AttributeName": "connectionId", "KeyType": "HASH"}]
    assert request["AttributeDefinitions"] == [
        {"AttributeName": "connectionId", "AttributeType": "S"},
        {"AttributeName": "expiryMinute", "AttributeType": "N"},
        {"AttributeName": "userId", "AttributeType": "S"},
    ]
    assert request["GlobalSecondaryIndexes"] == [
        {
            "IndexName": "byUser",
            "KeySchema": [{"AttributeName": "userId", "KeyType": "HASH"}],
            "Projection": {"ProjectionType": "KEYS_ONLY"},
        },
        {
            "IndexName": "byExpiry",
            "KeySchema": [
                {"AttributeName": "expiryMinute", "KeyType": "HASH"},
                {"AttributeName": "connectionId", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["expiresAt"]},
        },
    ]
    assert "StreamSpecification" not in request


def test_table_request_for_the_events_table(model: Model) -> None:
    table = next(t for t in model.tables.values() if t.logical == "events")
    request = table_request(table)
    assert request["KeySchema"] == [
        {"AttributeName": "PK", "KeyType": "HASH"},
        {"AttributeName": "SK", "KeyType": "RANGE"},
    ]
    assert request["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    assert "GlobalSecondaryIndexes" not in request


def test_table_request_with_an_index_range_key() -> None:
    table = TableSpec(
        logical="t",
        name="t-1",
        hash_key="id",
        range_key=None,
        attributes={"id": "S", "owner": "S", "at": "N"},
        indexes=[{"name": "byOwner", "hash_key": "owner", "range_key": "at", "projection": "ALL"}],
        stream_view_type=None,
        ttl_attribute=None,
    )
    (index,) = table_request(table)["GlobalSecondaryIndexes"]
    assert index["KeySchema"] == [
        {"AttributeName": "owner", "KeyType": "HASH"},
        {"AttributeName": "at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}


def test_schedules_are_read_from_rate_rules_and_their_targets(model: Model) -> None:
    (schedule,) = model.schedules
    assert schedule.seconds == 60.0
    assert function(model, "realtime-sweeper").name == schedule.function
    assert rate_seconds("rate(5 minutes)") == 300.0
    with pytest.raises(ModelError, match="rate"):
        rate_seconds("cron(0 12 * * ? *)")


def test_table_request_for_the_replay_table_has_its_local_time_index(model: Model) -> None:
    table = next(t for t in model.tables.values() if t.logical == "realtime-replay")
    request = table_request(table)
    assert request["KeySchema"] == [
        {"AttributeName": "topic", "KeyType": "HASH"},
        {"AttributeName": "change", "KeyType": "RANGE"},
    ]
    assert request["LocalSecondaryIndexes"] == [
        {
            "IndexName": "byTime",
            "KeySchema": [
                {"AttributeName": "topic", "KeyType": "HASH"},
                {"AttributeName": "at", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
    ]
    assert table.ttl_attribute == "ttl"
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(**request)
        described = client.describe_table(TableName=table.name)["Table"]
        assert [i["IndexName"] for i in described["LocalSecondaryIndexes"]] == ["byTime"]


# --- archive_digest -------------------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_archive_digest_is_the_same_for_the_same_content(tmp_path: Path) -> None:
    first = {
        "a.py": write(tmp_path / "one" / "a.py", "A"),
        "b.py": write(tmp_path / "one" / "b.py", "B"),
    }
    copy = {
        "b.py": write(tmp_path / "two" / "b.py", "B"),
        "a.py": write(tmp_path / "two" / "a.py", "A"),
    }
    assert archive_digest(first) == archive_digest(first)
    assert archive_digest(first) == archive_digest(copy)
    assert len(archive_digest(first)) == 16


def test_archive_digest_changes_with_the_content(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    archive = {"a.py": write(path, "A")}
    before = archive_digest(archive)
    path.write_text("A changed")
    assert archive_digest(archive) != before


def test_archive_digest_changes_with_a_name_inside_the_archive(tmp_path: Path) -> None:
    source = write(tmp_path / "a.py", "A")
    assert archive_digest({"a.py": source}) != archive_digest({"b.py": source})
