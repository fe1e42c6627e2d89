"""Writing an item to a running emulator's tables: one path for the CLI's ``put``/``delete``
and the console page's write form.

Items are plain JSON (numbers exact: parsed as ``Decimal``), turned into DynamoDB's typed
values by boto3's serializer and written with boto3 against the emulator's DynamoDB
endpoint, as any SDK would; the change then flows through the table's stream like any
other write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

WriteCommand = Literal["put", "delete"]


class WriteError(Exception):
    """A write refused before or by DynamoDB: one line the user can act on."""


def physical_table(tables: Mapping[str, str], table: str) -> str:
    """The physical name of ``table``, given as its name in the program (``events``) or its
    physical name; ``tables`` maps the former to the latter."""
    if table in tables:
        return tables[table]
    if table in tables.values():
        return table
    raise WriteError(f"unknown table {table!r}; known: {', '.join(tables)}")


def parse_item(text: str) -> dict[str, Any]:
    """An item (or key) from its plain JSON text, as DynamoDB's typed values."""
    try:
        item = json.loads(text, parse_float=Decimal)
    except ValueError as bad:
        raise WriteError(f"not JSON: {bad}") from None
    return typed_item(item)


def typed_item(item: object) -> dict[str, Any]:
    """A plain item (parsed with ``parse_float=Decimal``) as DynamoDB's typed values."""
    if not isinstance(item, dict) or not item:
        raise WriteError("the item must be a non-empty JSON object")
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    try:
        return {key: serializer.serialize(value) for key, value in item.items()}
    except TypeError as bad:
        raise WriteError(f"cannot store that item: {bad}") from None


def aws_client(service: str, endpoint: str) -> Any:
    """A boto3 client of the emulator's ``service`` at ``endpoint`` (its fake credentials)."""
    import boto3

    from emulator.services import FAKE_CREDENTIALS

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def write_item(endpoint: str, command: WriteCommand, table: str, item: Mapping[str, Any]) -> None:
    """``put`` ``item`` into, or ``delete`` the item with key ``item`` from, the physical
    ``table`` of the emulator whose DynamoDB answers at ``endpoint``."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = aws_client("dynamodb", endpoint)
    try:
        if command == "put":
            client.put_item(TableName=table, Item=dict(item))
        else:
            client.delete_item(TableName=table, Key=dict(item))
    except (ClientError, BotoCoreError) as bad:
        raise WriteError(f"{command} failed: {bad}") from None
