"""Shared test helpers: sample events, a fake Lambda context, table creation."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).parent / "events"
SECRET = "test-signing-secret-0123456789abcdef"


@cache
def _read(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"{name}.json").read_text())


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/events/<name>.json``."""
    return copy.deepcopy(_read(name))


@dataclass
class FakeContext:
    function_name: str = "realtime-test-fn"
    aws_request_id: str = "11111111-2222-3333-4444-555555555555"
    memory_limit_in_mb: int = 256
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def create_connections_table(client: Any, name: str) -> None:
    """The connections table as the component declares it (key, byUser and byExpiry)."""
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "connectionId", "AttributeType": "S"},
            {"AttributeName": "userId", "AttributeType": "S"},
            {"AttributeName": "expiryMinute", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "connectionId", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[
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
        ],
    )


def create_subscriptions_table(client: Any, name: str) -> None:
    """The subscriptions (topic index) table as the component declares it: ``topic`` + ``sk``."""
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "topic", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "topic", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
    )


def put_connection(client: Any, table: str, connection_id: str, user_id: str | None = None) -> None:
    item = {"connectionId": {"S": connection_id}, "ttl": {"N": "4102444800"}}
    if user_id:
        item["userId"] = {"S": user_id}
    client.put_item(TableName=table, Item=item)


def connection_ids(client: Any, table: str) -> set[str]:
    items = client.scan(TableName=table)["Items"]
    return {item["connectionId"]["S"] for item in items}


def create_replay_table(client: Any, name: str) -> None:
    """The replay table as the component declares it: ``topic`` + ``change``, the local
    index ``byTime`` (``topic`` + ``at``, all attributes) and TTL on ``ttl``."""
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "topic", "AttributeType": "S"},
            {"AttributeName": "change", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "topic", "KeyType": "HASH"},
            {"AttributeName": "change", "KeyType": "RANGE"},
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "byTime",
                "KeySchema": [
                    {"AttributeName": "topic", "KeyType": "HASH"},
                    {"AttributeName": "at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    client.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )


def create_source_table(client: Any, name: str, keys: list[tuple[str, str]]) -> None:
    """A source table keyed by ``keys``: (attribute, S|N|B) of the partition key, then the
    optional sort key (as ``Source.keys``)."""
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in keys],
        KeySchema=[
            {"AttributeName": n, "KeyType": kind}
            for (n, _), kind in zip(keys, ("HASH", "RANGE"), strict=False)
        ],
    )


def subscription_items(client: Any, table: str) -> list[dict[str, Any]]:
    """Every stored subscription (a Scan), without the topics' version items."""
    from handlers.subscriptions import VERSION_SK

    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return [item for item in items if item["sk"]["S"] != VERSION_SK]


def topic_version(client: Any, table: str, topic: str) -> int:
    """A topic's version as stored (0: no version item)."""
    from handlers.subscriptions import version_key

    item = client.get_item(TableName=table, Key=version_key(topic), ConsistentRead=True)
    return int(item.get("Item", {}).get("version", {}).get("N", "0"))
