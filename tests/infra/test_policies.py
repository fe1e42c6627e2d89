"""IAM policies, stream source checks and filters, and the management endpoint, as pure data."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from components import policies
from components.realtime_channel import management_endpoint_from_invoke_url
from components.sources import (
    MAX_FILTERS,
    SourceError,
    SourceFilter,
    StreamSource,
    broadcaster_filters,
    check_source,
    check_stream,
    filter_pattern,
    lambda_patterns,
)

ACCOUNT = "123456789012"
LOG_GROUP = f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:realtime-connect-logs"
TABLE = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/realtime-connections"
SUBSCRIPTIONS = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/realtime-subscriptions"
SOURCE_TABLE = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/events"
STREAM = f"{SOURCE_TABLE}/stream/2026-01-01T00:00:00.000"
STAGE = f"arn:aws:execute-api:us-east-1:{ACCOUNT}:abc123/dev"
QUEUE = f"arn:aws:sqs:us-east-1:{ACCOUNT}:realtime-dlq"
PARAMETER = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/realtime-token-secret"

KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"

LOGS = {
    ("logs:CreateLogStream", f"{LOG_GROUP}:*"),
    ("logs:PutLogEvents", f"{LOG_GROUP}:*"),
}
MANAGE = ("execute-api:ManageConnections", f"{STAGE}/POST/@connections/*")
CLOSE = ("execute-api:ManageConnections", f"{STAGE}/DELETE/@connections/*")
REPLAY = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/realtime-replay"
REPLAY_INDEX = f"{REPLAY}/index/byTime"
CURSOR = f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/realtime-cursor-secret"

# name -> (document, every (action, resource) pair it grants)
POLICIES: dict[str, tuple[Callable[[], str], set[tuple[str, str]]]] = {
    "authorizer": (
        lambda: policies.authorizer_policy(LOG_GROUP, PARAMETER),
        LOGS | {("ssm:GetParameter", PARAMETER)},
    ),
    "connect": (
        lambda: policies.connect_policy(LOG_GROUP, TABLE),
        LOGS | {("dynamodb:PutItem", TABLE)},
    ),
    "disconnect": (
        lambda: policies.disconnect_policy(LOG_GROUP, TABLE, SUBSCRIPTIONS),
        LOGS
        | {
            ("dynamodb:DeleteItem", TABLE),
            ("dynamodb:DeleteItem", SUBSCRIPTIONS),
            ("dynamodb:BatchWriteItem", SUBSCRIPTIONS),
            ("dynamodb:UpdateItem", SUBSCRIPTIONS),  # the topics' version items
        },
    ),
    "default": (
        lambda: policies.default_policy(
            LOG_GROUP,
            STAGE,
            TABLE,
            SUBSCRIPTIONS,
            cursor_parameter_arn=CURSOR,
            replay_table_arn=REPLAY,
            token_parameter_arn=PARAMETER,
        ),
        LOGS
        | {
            MANAGE,
            CLOSE,  # a connection whose token has expired
            ("dynamodb:GetItem", TABLE),
            ("dynamodb:UpdateItem", TABLE),
            ("dynamodb:PutItem", SUBSCRIPTIONS),
            ("dynamodb:DeleteItem", SUBSCRIPTIONS),
            ("dynamodb:BatchGetItem", SUBSCRIPTIONS),  # auth: the connection's subscriptions
            ("dynamodb:UpdateItem", SUBSCRIPTIONS),  # auth: their expiry and fields; versions
            ("dynamodb:Query", REPLAY_INDEX),  # resume
            ("ssm:GetParameter", CURSOR),
            ("ssm:GetParameter", PARAMETER),  # auth verifies fresh tokens
        },
    ),
    "broadcaster": (
        lambda: policies.broadcaster_policy(
            LOG_GROUP,
            TABLE,
            SUBSCRIPTIONS,
            STAGE,
            QUEUE,
            cursor_parameter_arn=CURSOR,
            replay_table_arn=REPLAY,
        ),
        LOGS
        | {
            ("dynamodb:Query", SUBSCRIPTIONS),
            ("dynamodb:BatchGetItem", SUBSCRIPTIONS),  # the topics' version items
            ("dynamodb:DeleteItem", TABLE),
            ("dynamodb:DeleteItem", SUBSCRIPTIONS),
            ("dynamodb:BatchWriteItem", SUBSCRIPTIONS),
            ("dynamodb:UpdateItem", SUBSCRIPTIONS),  # versions bumped after a 410's removal
            MANAGE,
            CLOSE,  # recipients whose token has expired
            ("sqs:SendMessage", QUEUE),
            ("dynamodb:BatchWriteItem", REPLAY),
            ("ssm:GetParameter", CURSOR),
        },
    ),
    "sweeper": (
        lambda: policies.sweeper_policy(LOG_GROUP, TABLE, SUBSCRIPTIONS, STAGE),
        LOGS
        | {
            ("dynamodb:Query", f"{TABLE}/index/byExpiry"),
            CLOSE,
            ("dynamodb:DeleteItem", TABLE),
            ("dynamodb:DeleteItem", SUBSCRIPTIONS),
            ("dynamodb:BatchWriteItem", SUBSCRIPTIONS),
            ("dynamodb:UpdateItem", SUBSCRIPTIONS),  # versions bumped after a 410's removal
        },
    ),
    "snapshot_read": (
        lambda: policies.snapshot_read_policy(SOURCE_TABLE),
        {("dynamodb:GetItem", SOURCE_TABLE), ("dynamodb:Query", SOURCE_TABLE)},
    ),
    "snapshot_read_encrypted": (
        lambda: policies.snapshot_read_policy(SOURCE_TABLE, KEY),
        {
            ("dynamodb:GetItem", SOURCE_TABLE),
            ("dynamodb:Query", SOURCE_TABLE),
            ("kms:Decrypt", KEY),
        },
    ),
    "stream_read": (
        lambda: policies.stream_read_policy(SOURCE_TABLE, STREAM),
        {
            ("dynamodb:DescribeStream", STREAM),
            ("dynamodb:GetRecords", STREAM),
            ("dynamodb:GetShardIterator", STREAM),
            ("dynamodb:ListStreams", f"{SOURCE_TABLE}/stream/*"),
        },
    ),
    "stream_read_encrypted": (
        lambda: policies.stream_read_policy(SOURCE_TABLE, STREAM, KEY),
        {
            ("dynamodb:DescribeStream", STREAM),
            ("dynamodb:GetRecords", STREAM),
            ("dynamodb:GetShardIterator", STREAM),
            ("dynamodb:ListStreams", f"{SOURCE_TABLE}/stream/*"),
            ("kms:Decrypt", KEY),
        },
    ),
}
FUNCTION_POLICIES = [
    name for name in POLICIES if not name.startswith(("stream_read", "snapshot_read"))
]


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _statements(name: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = json.loads(POLICIES[name][0]())["Statement"]
    return statements


def _grants(statements: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        (action, resource)
        for statement in statements
        for action in _listed(statement["Action"])
        for resource in _listed(statement["Resource"])
    }


# -- every policy --------------------------------------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
def test_policy_is_a_2012_10_17_document(name: str) -> None:
    document = json.loads(POLICIES[name][0]())
    assert document["Version"] == "2012-10-17"
    assert document["Statement"]


@pytest.mark.parametrize("name", POLICIES)
def test_policy_only_allows(name: str) -> None:
    assert {statement["Effect"] for statement in _statements(name)} == {"Allow"}


@pytest.mark.parametrize("name", POLICIES)
def test_policy_has_no_wildcard_action(name: str) -> None:
    actions = [a for s in _statements(name) for a in _listed(s["Action"])]
    assert actions
    assert [a for a in actions if "*" in a] == []


@pytest.mark.parametrize("name", POLICIES)
def test_policy_resources_are_specific_arns(name: str) -> None:
    for statement in _statements(name):
        assert "NotResource" not in statement
        resources = _listed(statement["Resource"])
        assert resources
        for resource in resources:
            assert isinstance(resource, str)
            assert resource != "*"
            assert resource.startswith("arn:")


@pytest.mark.parametrize("name", POLICIES)
def test_policy_grants_exactly_what_the_function_needs(name: str) -> None:
    assert _grants(_statements(name)) == POLICIES[name][1]


@pytest.mark.parametrize("name", FUNCTION_POLICIES)
def test_function_writes_only_its_own_log_group(name: str) -> None:
    logs = [
        s for s in _statements(name) if any(a.startswith("logs:") for a in _listed(s["Action"]))
    ]
    assert len(logs) == 1
    assert sorted(_listed(logs[0]["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert _listed(logs[0]["Resource"]) == [f"{LOG_GROUP}:*"]


@pytest.mark.parametrize("name", POLICIES)
def test_policy_never_creates_log_groups(name: str) -> None:
    assert "logs:CreateLogGroup" not in POLICIES[name][0]()


@pytest.mark.parametrize("name", FUNCTION_POLICIES)
def test_no_function_scans_a_table_or_reads_an_index_but_its_own(name: str) -> None:
    # recipients are found with a Query per topic on the subscriptions table, never a Scan
    # of every connection; the connections table's byUser index is no one's business; the
    # index reads are the replay store's byTime, by $default (resume), and the connections
    # table's byExpiry, by the sweeper
    grants = _grants(_statements(name))
    assert not [action for action, _ in grants if action == "dynamodb:Scan"]
    indexes = {(a, r) for a, r in grants if "/index/" in r}
    expected = {
        "default": {("dynamodb:Query", REPLAY_INDEX)},
        "sweeper": {("dynamodb:Query", f"{TABLE}/index/byExpiry")},
    }
    assert indexes == expected.get(name, set())


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("authorizer", set()),
        ("connect", {"dynamodb:PutItem"}),
        ("disconnect", {"dynamodb:DeleteItem"}),
        ("default", {"dynamodb:GetItem", "dynamodb:UpdateItem"}),
        ("broadcaster", {"dynamodb:DeleteItem"}),
        ("sweeper", {"dynamodb:DeleteItem"}),
    ],
)
def test_connections_table_actions_per_function(name: str, allowed: set[str]) -> None:
    granted = {a for a, r in _grants(_statements(name)) if r == TABLE}
    assert granted == allowed


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("authorizer", set()),
        ("connect", set()),
        (
            "disconnect",
            {"dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"},
        ),
        (
            "default",
            {
                "dynamodb:PutItem",
                "dynamodb:DeleteItem",
                "dynamodb:BatchGetItem",
                "dynamodb:UpdateItem",
            },
        ),
        (
            "broadcaster",
            {
                "dynamodb:Query",
                "dynamodb:BatchGetItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:DeleteItem",
                "dynamodb:UpdateItem",
            },
        ),
        (
            "sweeper",
            {"dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"},
        ),
    ],
)
def test_subscriptions_table_actions_per_function(name: str, allowed: set[str]) -> None:
    granted = {a for a, r in _grants(_statements(name)) if r == SUBSCRIPTIONS}
    assert granted == allowed


def test_logs_statement_accepts_an_arn_that_already_ends_in_star() -> None:
    assert policies.logs_statement(f"{LOG_GROUP}:*") == policies.logs_statement(LOG_GROUP)
    assert policies.logs_statement(LOG_GROUP)["Resource"] == [f"{LOG_GROUP}:*"]


def test_manage_connections_resource_is_one_stage_post_path() -> None:
    assert policies.manage_connections_resource(STAGE) == f"{STAGE}/POST/@connections/*"


def test_lambda_role_trusts_only_the_lambda_service() -> None:
    document = json.loads(policies.lambda_assume_role_policy())
    assert document["Version"] == "2012-10-17"
    assert document["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]


# -- filter patterns ---------------------------------------------------------------------------


def test_filter_on_event_names() -> None:
    pattern = filter_pattern(SourceFilter(event_names=["INSERT", "MODIFY"]))
    assert json.loads(pattern) == {"eventName": ["INSERT", "MODIFY"]}


def test_filter_new_image_string_list_is_shorthand_for_an_s_rule() -> None:
    pattern = filter_pattern(SourceFilter(new_image={"status": ["active", "pending"]}))
    assert json.loads(pattern) == {
        "dynamodb": {"NewImage": {"status": {"S": ["active", "pending"]}}}
    }


def test_filter_exact_number_strings_pass_through() -> None:
    rule = {"N": ["5", "10"]}
    pattern = filter_pattern(SourceFilter(new_image={"priority": rule}))
    assert json.loads(pattern) == {"dynamodb": {"NewImage": {"priority": rule}}}


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param({"N": [{"numeric": [">", 5]}]}, id="numeric"),
        pytest.param({"N": [{"numeric": [">=", 1, "<", 9]}]}, id="numeric-range"),
        pytest.param({"N": [{"anything-but": {"numeric": ["=", 0]}}]}, id="nested-numeric"),
        pytest.param({"N": ["1", {"numeric": ["<", 0]}]}, id="numeric-beside-a-string"),
    ],
)
def test_filter_numeric_rule_on_n_is_refused_saying_why_and_what_instead(
    rule: dict[str, Any],
) -> None:
    with pytest.raises(SourceError) as failure:
        filter_pattern(SourceFilter(new_image={"priority": rule}))
    message = str(failure.value)
    assert "new_image['priority']" in message
    assert "never matches on AWS" in message and "numbers as strings" in message
    assert '{"N": ["5"]}' in message and "filter in the handler" in message


def test_filter_bare_numbers_on_n_are_refused_with_the_string_spelling() -> None:
    with pytest.raises(SourceError, match=r'\{"N": \["5", "7.5"\]\}'):
        filter_pattern(SourceFilter(new_image={"priority": {"N": [5, 7.5]}}))


def test_numeric_filter_fails_the_channel_at_preview_naming_component_source_and_filter() -> None:
    source = StreamSource(
        "orders",
        filters=[
            SourceFilter(event_names=["INSERT"]),
            SourceFilter(new_image={"total": {"N": [{"numeric": [">", 100]}]}}),
        ],
    )
    with pytest.raises(SourceError) as failure:
        check_source("chat", source)
    assert str(failure.value).startswith(
        "RealtimeChannel 'chat', source 'orders': filters[1]: new_image['total']: a numeric rule"
    )


def test_filter_combines_event_names_and_new_image() -> None:
    pattern = filter_pattern(SourceFilter(event_names=["INSERT"], new_image={"kind": ["order"]}))
    assert json.loads(pattern) == {
        "eventName": ["INSERT"],
        "dynamodb": {"NewImage": {"kind": {"S": ["order"]}}},
    }


@pytest.mark.parametrize(
    ("source_filter", "fragment"),
    [
        pytest.param(SourceFilter(event_names=["INSERTED"]), "unknown event names", id="unknown"),
        pytest.param(SourceFilter(event_names=["INSERT", "INSERT"]), "twice", id="duplicate"),
        pytest.param(
            SourceFilter(event_names=["REMOVE"], new_image={"status": ["gone"]}),
            "never matches REMOVE",
            id="remove-with-new-image",
        ),
        pytest.param(SourceFilter(), "empty filter", id="empty"),
        pytest.param(
            SourceFilter(new_image={"status": "active"}), "new_image['status']", id="bare-string"
        ),
        pytest.param(
            SourceFilter(new_image={"status": {"S": "active"}}),
            "new_image['status']",
            id="rule-values-not-a-list",
        ),
        pytest.param(
            SourceFilter(new_image={"status": {"X": ["active"]}}),
            "new_image['status']",
            id="unknown-type-key",
        ),
        pytest.param(
            SourceFilter(new_image={"status": {"S": ["a"], "N": ["1"]}}),
            "new_image['status']",
            id="two-type-keys",
        ),
    ],
)
def test_bad_filter_raises_source_error(source_filter: SourceFilter, fragment: str) -> None:
    with pytest.raises(SourceError) as failure:
        filter_pattern(source_filter)
    assert fragment in str(failure.value)


def test_new_image_rules_on_remove_are_allowed_with_old_images() -> None:
    paid = SourceFilter(event_names=["REMOVE"], new_image={"status": ["paid"]})
    assert json.loads(filter_pattern(paid, old_image=True)) == {
        "eventName": ["REMOVE"],
        "dynamodb": {"NewImage": {"status": {"S": ["paid"]}}},
    }
    assert json.loads(filter_pattern(paid, image="OldImage", old_image=True)) == {
        "eventName": ["REMOVE"],
        "dynamodb": {"OldImage": {"status": {"S": ["paid"]}}},
    }


def test_lambda_patterns_match_new_image_rules_on_both_images_with_old_images() -> None:
    filters = [SourceFilter(new_image={"status": ["paid"]}), SourceFilter(event_names=["REMOVE"])]
    rule = {"status": {"S": ["paid"]}}
    assert [json.loads(p) for p in lambda_patterns(filters, old_image=True)] == [
        {"dynamodb": {"NewImage": rule}},
        {"dynamodb": {"OldImage": rule}},
        {"eventName": ["REMOVE"]},
    ]
    assert [json.loads(p) for p in lambda_patterns(filters, old_image=False)] == [
        {"dynamodb": {"NewImage": rule}},
        {"eventName": ["REMOVE"]},
    ]
    assert broadcaster_filters(filters, old_image=True) == [
        {"dynamodb": {"NewImage": rule}},
        {"eventName": ["REMOVE"]},
    ]
    assert broadcaster_filters(filters, old_image=False) == []


def test_lambda_patterns_refuse_more_than_five_saying_why() -> None:
    three = [SourceFilter(new_image={"n": [str(i)]}) for i in range(3)]
    assert len(lambda_patterns(three, old_image=False)) == 3
    with pytest.raises(SourceError) as failure:
        lambda_patterns(three, old_image=True)
    message = str(failure.value)
    assert "3 filters compile to 6 Lambda filters, over Lambda's 5" in message
    assert "counts twice" in message
    with pytest.raises(SourceError, match=r"^filters\[1\]: a new_image rule never matches"):
        lambda_patterns(
            [three[0], SourceFilter(event_names=["REMOVE"], new_image={"n": ["1"]})],
            old_image=False,
        )


def test_a_source_filter_that_is_not_a_source_filter_is_refused() -> None:
    source = StreamSource(table="orders", filters=[{"new_image": {"s": ["x"]}}])  # type: ignore[list-item]
    with pytest.raises(SourceError, match=r"filters\[0\] must be a SourceFilter, not dict"):
        check_source("chan", source)


# -- stream checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enabled", "view_type", "fragment"),
    [
        (False, None, "has no stream"),
        (True, "KEYS_ONLY", "lacks the new image"),
        (True, "OLD_IMAGE", "lacks the new image"),
    ],
)
def test_stream_without_new_images_is_rejected_naming_the_table(
    enabled: bool, view_type: str | None, fragment: str
) -> None:
    with pytest.raises(SourceError) as failure:
        check_stream("orders", enabled, view_type)
    message = str(failure.value)
    assert "'orders'" in message
    assert fragment in message
    assert 'stream_view_type="NEW_AND_OLD_IMAGES"' in message


@pytest.mark.parametrize("view_type", ["NEW_IMAGE", "NEW_AND_OLD_IMAGES"])
def test_stream_with_new_images_is_accepted(view_type: str) -> None:
    assert check_stream("orders", True, view_type) is None


# -- source bounds -----------------------------------------------------------------------------

ONE_FILTER = SourceFilter(event_names=["INSERT"])


@pytest.mark.parametrize(
    ("changes", "argument"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 10_001}, "batch_size"),
        ({"batching_window_seconds": 301}, "batching_window_seconds"),
        ({"parallelization_factor": 11}, "parallelization_factor"),
        ({"maximum_record_age_seconds": 59}, "maximum_record_age_seconds"),
        ({"maximum_retry_attempts": 10_001}, "maximum_retry_attempts"),
        ({"filters": [ONE_FILTER] * (MAX_FILTERS + 1)}, "filters"),
        ({"kms_key_arn": "alias/orders"}, "kms_key_arn"),
        ({"kms_key_arn": f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/orders"}, "kms_key_arn"),
        ({"kms_key_arn": "1234abcd-12ab-34cd-56ef-1234567890ab"}, "kms_key_arn"),
    ],
    ids=lambda value: json.dumps(value, default=str)[:40] if isinstance(value, dict) else value,
)
def test_out_of_bounds_source_names_the_argument_and_the_source(
    changes: dict[str, Any], argument: str
) -> None:
    with pytest.raises(SourceError) as failure:
        check_source("chan", StreamSource(table="orders", name="Orders Feed", **changes))
    message = str(failure.value)
    assert "RealtimeChannel 'chan'" in message
    assert "source 'orders-feed'" in message
    assert argument in message


@pytest.mark.parametrize(
    "changes",
    [
        {"batch_size": 1},
        {"batch_size": 10_000},
        {"batching_window_seconds": 300},
        {"parallelization_factor": 10},
        {"maximum_record_age_seconds": 60},
        {"maximum_record_age_seconds": -1},
        {"maximum_retry_attempts": -1},
        {"filters": [ONE_FILTER] * MAX_FILTERS},
    ],
    ids=lambda value: json.dumps(value, default=str)[:40],
)
def test_source_at_its_bounds_is_accepted(changes: dict[str, Any]) -> None:
    assert check_source("chan", StreamSource(table="orders", **changes)) is None


def test_bad_filter_in_a_source_names_its_position() -> None:
    source = StreamSource(table="orders", filters=[ONE_FILTER, SourceFilter()])
    with pytest.raises(SourceError, match=r"source 'orders': filters\[1\]: an empty filter"):
        check_source("chan", source)


# -- management endpoint -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("invoke_url", "endpoint"),
    [
        ("wss://abc.execute-api.us-east-1.amazonaws.com/dev", "https://abc.execute-api.us-east-1.amazonaws.com/dev"),
        ("ws://127.0.0.1:4510/dev", "http://127.0.0.1:4510/dev"),
        ("wss://abc.execute-api.us-east-1.amazonaws.com/dev/", "https://abc.execute-api.us-east-1.amazonaws.com/dev"),
    ],
    ids=["wss-to-https", "ws-to-http", "trailing-slash-trimmed"],
)  # fmt: skip
def test_management_endpoint_from_invoke_url(invoke_url: str, endpoint: str) -> None:
    assert management_endpoint_from_invoke_url(invoke_url) == endpoint


@pytest.mark.parametrize("url", ["https://abc.execute-api.us-east-1.amazonaws.com/dev", ""])
def test_management_endpoint_rejects_a_non_websocket_url(url: str) -> None:
    with pytest.raises(ValueError, match="not a WebSocket invoke URL"):
        management_endpoint_from_invoke_url(url)
