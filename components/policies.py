"""IAM policy documents, built by pure functions from plain ARNs (tested as data).

No wildcard action anywhere; every resource is a specific ARN. The only ``*``
characters are inside ARNs, where the service requires a pattern: the
``@connections/*`` path of one stage, a log group's streams, and a table's
streams for ``dynamodb:ListStreams``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from handlers.jobs import FANOUT_STATE_KEY

Statement = dict[str, Any]


def document(statements: Sequence[Statement]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def _allow(sid: str, actions: Sequence[str], resources: Sequence[str]) -> Statement:
    return {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": list(resources)}


def service_assume_role_policy(service: str) -> str:
    """A role only ``service`` (e.g. ``lambda.amazonaws.com``) may assume."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                }
            ],
        },
        sort_keys=True,
    )


def lambda_assume_role_policy() -> str:
    return service_assume_role_policy("lambda.amazonaws.com")


def apigateway_assume_role_policy() -> str:
    """API Gateway's CloudWatch Logs role (the account setting access logs need)."""
    return service_assume_role_policy("apigateway.amazonaws.com")


def logs_statement(log_group_arn: str) -> Statement:
    """Write to the function's own log group (created by the component, so no CreateLogGroup)."""
    return _allow(
        "WriteOwnLogs",
        ["logs:CreateLogStream", "logs:PutLogEvents"],
        [f"{log_group_arn.removesuffix(':*')}:*"],
    )


def manage_connections_resource(stage_execution_arn: str, method: str = "POST") -> str:
    """``<stage execution ARN>/<METHOD>/@connections/*``."""
    return f"{stage_execution_arn}/{method}/@connections/*"


def authorizer_policy(log_group_arn: str, parameter_arn: str | None = None) -> str:
    """Logs, and in HMAC mode the token secret (JWT mode reads nothing in AWS)."""
    statements = [logs_statement(log_group_arn)]
    if parameter_arn is not None:
        statements.append(_allow("ReadTokenSecret", ["ssm:GetParameter"], [parameter_arn]))
    return document(statements)


def connect_policy(log_group_arn: str, table_arn: str) -> str:
    return document(
        [
            logs_statement(log_group_arn),
            _allow("StoreConnection", ["dynamodb:PutItem"], [table_arn]),
        ]
    )


def disconnect_policy(log_group_arn: str, table_arn: str, subscriptions_table_arn: str) -> str:
    """Remove the connection's record (returning its subscriptions map), then each of its
    subscriptions (batched; one by one when a batch leaves some unprocessed), then bump
    their topics' version items (UpdateItem)."""
    return document(
        [
            logs_statement(log_group_arn),
            _allow("RemoveConnection", ["dynamodb:DeleteItem"], [table_arn]),
            _allow(
                "RemoveSubscriptions",
                ["dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"],
                [subscriptions_table_arn],
            ),
        ]
    )


def _resume_statements(
    cursor_parameter_arn: str | None, replay: tuple[str, Sequence[str], str] | None
) -> list[Statement]:
    statements = []
    if cursor_parameter_arn:
        statements.append(_allow("ReadCursorSecret", ["ssm:GetParameter"], [cursor_parameter_arn]))
    if replay is not None:
        sid, actions, resource = replay
        statements.append(_allow(sid, actions, [resource]))
    return statements


def default_policy(
    log_group_arn: str,
    stage_execution_arn: str,
    table_arn: str,
    subscriptions_table_arn: str,
    *,
    cursor_parameter_arn: str | None = None,
    replay_table_arn: str | None = None,
    token_parameter_arn: str | None = None,
) -> str:
    """Answer clients (and close expired connections), and subscribe / unsubscribe: read the
    connection (its identity and subscriptions map), then one transaction that updates
    that map and puts or deletes the subscription (TransactWriteItems is authorised per
    action it holds; each also bumps its topic's version item, an Update). ``auth``: read
    the token secret, the connection's subscriptions (BatchGetItem) and update their expiry
    (with their topics' versions). Resume: read the cursor secret, and Query the
    replay store's ``byTime`` index only."""
    replay = (
        ("ReadReplay", ["dynamodb:Query"], f"{replay_table_arn}/index/byTime")
        if replay_table_arn
        else None
    )
    return document(
        [
            logs_statement(log_group_arn),
            _allow(
                "AnswerClients",
                ["execute-api:ManageConnections"],
                [
                    manage_connections_resource(stage_execution_arn),
                    manage_connections_resource(stage_execution_arn, "DELETE"),
                ],
            ),
            _allow(
                "ReadAndCountSubscriptions",
                ["dynamodb:GetItem", "dynamodb:UpdateItem"],
                [table_arn],
            ),
            _allow(
                "StoreSubscriptions",
                [
                    "dynamodb:BatchGetItem",
                    "dynamodb:DeleteItem",
                    "dynamodb:PutItem",
                    "dynamodb:UpdateItem",
                ],
                [subscriptions_table_arn],
            ),
            *_resume_statements(cursor_parameter_arn, replay),
            *(
                [_allow("ReadTokenSecret", ["ssm:GetParameter"], [token_parameter_arn])]
                if token_parameter_arn
                else []
            ),
        ]
    )


def broadcaster_policy(
    log_group_arn: str,
    table_arn: str,
    subscriptions_table_arn: str,
    stage_execution_arn: str,
    dead_letter_queue_arn: str,
    *,
    cursor_parameter_arn: str | None = None,
    replay_table_arn: str | None = None,
    fanout_queue_arn: str | None = None,
) -> str:
    """What the broadcaster does whatever its sources: find recipients with a Query per
    topic (never a Scan) whose version item (BatchGetItem) moved since it was cached,
    post, and remove connections that are gone with their subscriptions, bumping their
    topics' versions (UpdateItem); record each change in the replay store (BatchWriteItem
    only) and sign cursors with the cursor secret. With the queued fan-out: send delivery
    jobs to its queue, and read and set the channel's fan-out mode (one item of the
    connections table, ``#fanout``, and no other)."""
    replay = (
        ("RecordChanges", ["dynamodb:BatchWriteItem"], replay_table_arn)
        if replay_table_arn
        else None
    )
    fanout: list[Statement] = []
    if fanout_queue_arn:
        mode = _allow("FanoutMode", ["dynamodb:GetItem", "dynamodb:PutItem"], [table_arn])
        mode["Condition"] = {
            "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [FANOUT_STATE_KEY]}
        }
        fanout = [_allow("QueueDeliveryJobs", ["sqs:SendMessage"], [fanout_queue_arn]), mode]
    return document(
        [
            logs_statement(log_group_arn),
            _allow(
                "FindSubscribers",
                ["dynamodb:BatchGetItem", "dynamodb:Query"],
                [subscriptions_table_arn],
            ),
            _allow("RemoveStaleConnections", ["dynamodb:DeleteItem"], [table_arn]),
            _allow(
                "RemoveStaleSubscriptions",
                ["dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"],
                [subscriptions_table_arn],
            ),
            _allow(
                "PostToClients",
                ["execute-api:ManageConnections"],
                [
                    manage_connections_resource(stage_execution_arn),
                    manage_connections_resource(stage_execution_arn, "DELETE"),
                ],
            ),
            _allow("ReportFailedBatches", ["sqs:SendMessage"], [dead_letter_queue_arn]),
            *_resume_statements(cursor_parameter_arn, replay),
            *fanout,
        ]
    )


def sender_policy(
    log_group_arn: str,
    table_arn: str,
    subscriptions_table_arn: str,
    stage_execution_arn: str,
    fanout_queue_arn: str,
) -> str:
    """What a sender does: take delivery jobs from its queue (what Lambda's SQS poller needs
    of the function's role), post them, close connections that keep failing, and remove
    connections that are gone with their subscriptions, bumping their topics' versions."""
    return document(
        [
            logs_statement(log_group_arn),
            _allow(
                "TakeDeliveryJobs",
                ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"],
                [fanout_queue_arn],
            ),
            _allow(
                "PostToClients",
                ["execute-api:ManageConnections"],
                [
                    manage_connections_resource(stage_execution_arn),
                    manage_connections_resource(stage_execution_arn, "DELETE"),
                ],
            ),
            _allow("RemoveStaleConnections", ["dynamodb:DeleteItem"], [table_arn]),
            _allow(
                "RemoveStaleSubscriptions",
                ["dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"],
                [subscriptions_table_arn],
            ),
        ]
    )


def sweeper_policy(
    log_group_arn: str, table_arn: str, subscriptions_table_arn: str, stage_execution_arn: str
) -> str:
    """Find connections whose token has expired (a Query of the connections table's
    ``byExpiry`` index, nothing else of it), close them, and clean up after one API Gateway
    no longer knows (its record and subscriptions, bumping their topics' versions)."""
    return document(
        [
            logs_statement(log_group_arn),
            _allow("FindExpired", ["dynamodb:Query"], [f"{table_arn}/index/byExpiry"]),
            _allow(
                "CloseExpired",
                ["execute-api:ManageConnections"],
                [manage_connections_resource(stage_execution_arn, "DELETE")],
            ),
            _allow("RemoveStaleConnections", ["dynamodb:DeleteItem"], [table_arn]),
            _allow(
                "RemoveStaleSubscriptions",
                ["dynamodb:BatchWriteItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem"],
                [subscriptions_table_arn],
            ),
        ]
    )


def snapshot_read_policy(table_arn: str, kms_key_arn: str | None = None) -> str:
    """What ``$default`` needs to send a keyed subscription's snapshot (``handlers.snapshot``):
    a strongly consistent Query of one partition or GetItem of one item on the table itself
    (no index, no Scan); with the table's customer managed KMS key, decrypting its items."""
    statements = [_allow("ReadSnapshots", ["dynamodb:GetItem", "dynamodb:Query"], [table_arn])]
    if kms_key_arn:
        statements.append(_allow("DecryptItems", ["kms:Decrypt"], [kms_key_arn]))
    return document(statements)


def stream_read_policy(table_arn: str, stream_arn: str, kms_key_arn: str | None = None) -> str:
    """What Lambda's event source mapping needs to read one table's stream; with the customer
    managed KMS key the table is encrypted with, also decrypting its records."""
    statements = [
        _allow(
            "ReadStream",
            ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"],
            [stream_arn],
        ),
        _allow("ListStreams", ["dynamodb:ListStreams"], [f"{table_arn}/stream/*"]),
    ]
    if kms_key_arn:
        statements.append(_allow("DecryptStream", ["kms:Decrypt"], [kms_key_arn]))
    return document(statements)
