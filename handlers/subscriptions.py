"""The subscription index: where subscriptions live and the calls that keep it exact.

Subscriptions table: partition key ``topic`` (S, see ``handlers.topics``), sort
key ``sk`` (S) = ``<connectionId> <subscription id>``. Each item also holds
``connectionId``, ``subId``, ``source`` (the source's label), optional
``filter`` (the client's filter as JSON text), optional ``fields`` (SS, the
fields its access rules grant; absent: every field), optional ``userId`` (the
subscriber, for ``targetAttribute``) and ``ttl`` (the connection's).

The connection's record keeps the map ``subs`` (subscription id -> topic). A
subscription is written in one transaction with that map entry, conditioned on
the connection's record existing and on the map's size, so

* no subscription is ever written for a connection whose ``$disconnect`` has
  deleted its record (no orphan survives a disconnect);
* the per-connection limit holds even when API Gateway runs one connection's
  messages concurrently;
* ``$disconnect`` knows every topic to clean from the record it deletes.

A crash between deleting the record and deleting its subscriptions leaves
items that the broadcaster removes on their first 410 and that TTL removes in
any case. Every read here is strongly consistent: the index is a table, not a
GSI, so a change recorded after a subscribe returns always sees it.

Each topic ever subscribed also holds one *version item* (sort key ``VERSION_SK``,
attribute ``version`` (N), no ``ttl``): every write that changes what the broadcaster
reads on a topic (a subscription put, replaced, moved or deleted, a connection's
removal, ``auth``'s new expiry and fields) adds one to it, in the same transaction or
after the change (never before), so a reader that sees a version also sees every change
it counts. The broadcaster keeps each topic's subscriptions across batches and Queries a
topic again only when its version moved (``handlers.broadcaster``); a topic without a
version item is at version 0 (it is read once: subscriptions stored before version items
existed have none). Version items never expire: a
deleted one would start again from 1 and could meet a version a cache still holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_TRANSACTION_ATTEMPTS = 3
BATCH_DELETE_SIZE = 25
BATCH_DELETE_ATTEMPTS = 5
BATCH_GET_SIZE = 100
"""Keys per BatchGetItem (DynamoDB's limit)."""
VERSION_SK = "#version"
"""The sort key of a topic's version item. It holds no space, and every subscription's
sort key does (``sort_key``), so no subscription can ever take it."""


class ConnectionGone(LookupError):
    """The connection's record is gone (it disconnected): nothing is stored."""


class TooManySubscriptions(ValueError):
    """The connection already holds the maximum number of subscriptions."""


class SubscriptionConflict(RuntimeError):
    """Concurrent changes to one connection's subscriptions kept cancelling the write."""


@dataclass(frozen=True)
class Connection:
    connection_id: str
    user_id: str | None
    claims: str | None
    """The stored identity claims, as the JSON text the connect handler wrote."""
    ttl: int | None
    subs: dict[str, str]
    """subscription id -> topic."""
    expires_at: int | None = None
    """The token's expiry (epoch seconds); None: the connection has no token."""


def sort_key(connection_id: str, sub_id: str) -> str:
    return f"{connection_id} {sub_id}"


def version_key(topic: str) -> dict[str, Any]:
    """The key of a topic's version item."""
    return {"topic": {"S": topic}, "sk": {"S": VERSION_SK}}


def version_bump(table: str, topic: str) -> dict[str, Any]:
    """A transaction's action that adds one to a topic's version (creating the item at 1)."""
    return {
        "Update": {
            "TableName": table,
            "Key": version_key(topic),
            "UpdateExpression": "ADD #version :one",
            "ExpressionAttributeNames": {"#version": "version"},
            "ExpressionAttributeValues": {":one": {"N": "1"}},
        }
    }


def bump_versions(client: Any, table: str, topics: Iterable[str]) -> None:
    """Add one to each topic's version, after a change to its subscriptions. Every topic is
    tried; the first failure is raised after the others (a broadcaster that misses a bump
    for a removal still posts to the gone connection, whose 410 removes and bumps again)."""
    failure: Exception | None = None
    for topic in sorted(set(topics)):
        try:
            client.update_item(**version_bump(table, topic)["Update"])
        except Exception as error:
            failure = failure or error
    if failure is not None:
        raise failure


def topic_versions(
    client: Any,
    table: str,
    topics: Sequence[str],
    *,
    attempts: int = BATCH_DELETE_ATTEMPTS,
    sleep: Callable[[float], None] | None = None,
) -> dict[str, int | None]:
    """topic -> its version (BatchGetItem, strongly consistent, 100 keys a call): 0 when it
    has no version item (never subscribed), None when DynamoDB left its key unprocessed
    ``attempts`` times (unknown: read its subscriptions, cache nothing)."""
    versions: dict[str, int | None] = {}
    unique = list(dict.fromkeys(topics))
    for start in range(0, len(unique), BATCH_GET_SIZE):
        chunk = unique[start : start + BATCH_GET_SIZE]
        versions.update(dict.fromkeys(chunk, 0))
        pending: dict[str, Any] = {
            table: {
                "Keys": [version_key(topic) for topic in chunk],
                "ConsistentRead": True,
                "ProjectionExpression": "topic, #version",
                "ExpressionAttributeNames": {"#version": "version"},
            }
        }
        for attempt in range(attempts):
            if attempt and sleep is not None:
                sleep(min(0.05 * 2**attempt, 1.0))
            answer = client.batch_get_item(RequestItems=pending)
            for item in answer.get("Responses", {}).get(table, []):
                versions[item["topic"]["S"]] = int(item.get("version", {}).get("N", "0"))
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                break
        for key in (pending.get(table) or {}).get("Keys", []):
            versions[key["topic"]["S"]] = None
    return versions


def read_connection(client: Any, table: str, connection_id: str) -> Connection:
    """The connection's record, strongly consistent; ``ConnectionGone`` if it has none."""
    item = client.get_item(
        TableName=table,
        Key={"connectionId": {"S": connection_id}},
        ConsistentRead=True,
    ).get("Item")
    if not item:
        raise ConnectionGone(connection_id)
    subs = {name: value["S"] for name, value in (item.get("subs") or {}).get("M", {}).items()}
    ttl = item.get("ttl", {}).get("N")
    expires = item.get("expiresAt", {}).get("N")
    return Connection(
        connection_id=connection_id,
        user_id=item.get("userId", {}).get("S"),
        claims=item.get("claims", {}).get("S"),
        ttl=int(ttl) if ttl else None,
        subs=subs,
        expires_at=int(expires) if expires else None,
    )


def subscription_item(
    connection: Connection,
    sub_id: str,
    topic: str,
    source: str,
    filter_json: str | None,
    fields: Sequence[str] | None,
    key: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The stored subscription, as DynamoDB attribute values (pure). ``key`` (attribute ->
    value as text) is kept for re-checking access rules when the token changes (``auth``);
    ``expiresAt`` (the connection's token expiry) lets the broadcaster skip expired
    connections without reading their records."""
    item: dict[str, Any] = {
        "topic": {"S": topic},
        "sk": {"S": sort_key(connection.connection_id, sub_id)},
        "connectionId": {"S": connection.connection_id},
        "subId": {"S": sub_id},
        "source": {"S": source},
    }
    if filter_json is not None:
        item["filter"] = {"S": filter_json}
    if fields is not None:
        item["fields"] = {"L": [{"S": name} for name in sorted(fields)]}
    if connection.user_id:
        item["userId"] = {"S": connection.user_id}
    if connection.ttl is not None:
        item["ttl"] = {"N": str(connection.ttl)}
    if connection.expires_at is not None:
        item["expiresAt"] = {"N": str(connection.expires_at)}
    if key is not None:
        item["key"] = {"M": {name: {"S": value} for name, value in key.items()}}
    return item


def _cancelled_reasons(error: Any) -> list[str]:
    reasons = (getattr(error, "response", None) or {}).get("CancellationReasons") or []
    return [str(reason.get("Code")) for reason in reasons]


def put_subscription(
    client: Any,
    *,
    connections_table: str,
    subscriptions_table: str,
    connection_id: str,
    sub_id: str,
    build: Any,
    limit: int,
) -> Connection:
    """Store (or replace, same id) one subscription; return the connection it was stored for.

    ``build(connection) -> (topic, item)`` makes the item from the fresh
    record (its ttl and user). Raises ``ConnectionGone`` or ``TooManySubscriptions``.
    """
    for _ in range(MAX_TRANSACTION_ATTEMPTS):
        connection = read_connection(client, connections_table, connection_id)
        topic, item = build(connection)
        previous = connection.subs.get(sub_id)
        if previous is None and len(connection.subs) >= limit:
            raise TooManySubscriptions(connection_id)
        names = {"#id": sub_id}
        values: dict[str, Any] = {":topic": {"S": topic}}
        if previous is None:
            condition = "attribute_exists(subs) AND attribute_not_exists(subs.#id)"
            condition += " AND size(subs) < :limit"
            values[":limit"] = {"N": str(limit)}
        else:
            condition = "subs.#id = :previous"
            values[":previous"] = {"S": previous}
        # the expiry the item copies must still be the record's: an `auth` in between
        # makes this write read the record again (never an old expiry on a new item)
        if connection.expires_at is None:
            condition += " AND attribute_not_exists(expiresAt)"
        else:
            condition += " AND expiresAt = :expires"
            values[":expires"] = {"N": str(connection.expires_at)}
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": connections_table,
                    "Key": {"connectionId": {"S": connection_id}},
                    "UpdateExpression": "SET subs.#id = :topic",
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": values,
                }
            },
            {"Put": {"TableName": subscriptions_table, "Item": item}},
            version_bump(subscriptions_table, topic),
        ]
        if previous is not None and previous != topic:
            actions.append(
                {
                    "Delete": {
                        "TableName": subscriptions_table,
                        "Key": {
                            "topic": {"S": previous},
                            "sk": {"S": sort_key(connection_id, sub_id)},
                        },
                    }
                }
            )
            actions.append(version_bump(subscriptions_table, previous))
        try:
            client.transact_write_items(TransactItems=actions)
        except client.exceptions.TransactionCanceledException as cancelled:
            if "ConditionalCheckFailed" in _cancelled_reasons(cancelled)[:1]:
                continue  # the record changed (or went) since it was read: read it again
            raise
        return connection
    raise SubscriptionConflict(connection_id)


def delete_subscription(
    client: Any,
    *,
    connections_table: str,
    subscriptions_table: str,
    connection_id: str,
    sub_id: str,
) -> bool:
    """Remove one subscription; False when the connection holds none with that id."""
    for _ in range(MAX_TRANSACTION_ATTEMPTS):
        try:
            connection = read_connection(client, connections_table, connection_id)
        except ConnectionGone:
            return False
        topic = connection.subs.get(sub_id)
        if topic is None:
            return False
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": connections_table,
                            "Key": {"connectionId": {"S": connection_id}},
                            "UpdateExpression": "REMOVE subs.#id",
                            "ConditionExpression": "subs.#id = :topic",
                            "ExpressionAttributeNames": {"#id": sub_id},
                            "ExpressionAttributeValues": {":topic": {"S": topic}},
                        }
                    },
                    {
                        "Delete": {
                            "TableName": subscriptions_table,
                            "Key": {
                                "topic": {"S": topic},
                                "sk": {"S": sort_key(connection_id, sub_id)},
                            },
                        }
                    },
                    version_bump(subscriptions_table, topic),
                ]
            )
        except client.exceptions.TransactionCanceledException as cancelled:
            if "ConditionalCheckFailed" in _cancelled_reasons(cancelled)[:1]:
                continue
            raise
        return True
    return False


def delete_items(client: Any, table: str, keys: Sequence[Mapping[str, Any]]) -> int:
    """Delete subscription items by key in batches of 25, retrying unprocessed ones (bounded).
    Returns how many were left undeleted (TTL removes them later)."""
    pending = [{"DeleteRequest": {"Key": dict(key)}} for key in keys]
    left = 0
    for start in range(0, len(pending), BATCH_DELETE_SIZE):
        requests = pending[start : start + BATCH_DELETE_SIZE]
        for _ in range(BATCH_DELETE_ATTEMPTS):
            answer = client.batch_write_item(RequestItems={table: requests})
            requests = (answer.get("UnprocessedItems") or {}).get(table) or []
            if not requests:
                break
        left += len(requests)
    return left


def subscription_keys(connection_id: str, subs: Mapping[str, str]) -> list[dict[str, Any]]:
    return [
        {"topic": {"S": topic}, "sk": {"S": sort_key(connection_id, sub_id)}}
        for sub_id, topic in subs.items()
    ]


def remove_connection(
    client: Any, *, connections_table: str, subscriptions_table: str, connection_id: str
) -> int:
    """Delete a connection's record, then every subscription it held, then bump the
    versions of their topics. Idempotent. Returns how many subscriptions were removed."""
    old = client.delete_item(
        TableName=connections_table,
        Key={"connectionId": {"S": connection_id}},
        ReturnValues="ALL_OLD",
    ).get("Attributes")
    if not old:
        return 0
    subs = {name: value["S"] for name, value in (old.get("subs") or {}).get("M", {}).items()}
    keys = subscription_keys(connection_id, subs)
    left = delete_items(client, subscriptions_table, keys)
    bump_versions(client, subscriptions_table, subs.values())
    return len(keys) - left


PROJECTION = "sk, #filter, #fields, userId, expiresAt"
"""What the broadcaster reads of each subscription on a topic: ``sk`` holds the connection
and subscription ids (``recipients.subscription_of`` splits it), the caller knows the
topic. Fewer attributes read is less work per subscription for every change."""


def split_sort_key(sk: str) -> tuple[str, str]:
    """(connection id, subscription id) from a sort key (connection ids hold no space,
    subscription ids may). ``ValueError`` if it holds no space."""
    connection_id, space, sub_id = sk.partition(" ")
    if not space or not connection_id or not sub_id:
        raise ValueError("not a subscription sort key")
    return connection_id, sub_id


def topic_subscriptions(client: Any, table: str, topic: str) -> Iterator[dict[str, Any]]:
    """Every subscription on one topic (``PROJECTION``), page by page, strongly consistent;
    never the topic's version item (a key condition cannot leave out one sort key in the
    middle of the range, so it is read and dropped here: one small item per topic)."""
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "topic = :topic",
        "ExpressionAttributeValues": {":topic": {"S": topic}},
        "ExpressionAttributeNames": {"#filter": "filter", "#fields": "fields"},
        "ProjectionExpression": PROJECTION,
        "ConsistentRead": True,
    }
    while True:
        page = client.query(**request)
        for item in page.get("Items", []):
            if item.get("sk", {}).get("S") != VERSION_SK:
                yield item
        last = page.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last


@dataclass(frozen=True)
class StaleRemoval:
    """What ``remove_stale_connection`` did."""

    record_removed: bool
    """False: the record is younger than the cutoff (a client still in ``$connect``): kept,
    with its subscriptions."""
    subscriptions_removed: int
    subscriptions_left: int
    """Subscriptions that could not be deleted now (TTL removes them later)."""


def remove_stale_connection(
    client: Any,
    *,
    connections_table: str,
    subscriptions_table: str,
    connection_id: str,
    connected_before: str,
    known: Iterable[tuple[str, str]] = (),
) -> StaleRemoval:
    """Clean up after a connection API Gateway no longer knows (it answered 410).

    The record goes only when it is older than ``connected_before`` (ISO-8601
    UTC) or has no ``connectedAt``: a client whose ``$connect`` stored its
    record but whose socket is not open yet also answers 410 and must keep it.
    Then every subscription goes: those the deleted record listed, and those in
    ``known`` ((subscription id, topic) pairs, as the caller found them on topics),
    which covers a record already deleted by a ``$disconnect`` that crashed
    before deleting the subscriptions; then the versions of their topics are bumped.
    Idempotent.
    """
    try:
        old = client.delete_item(
            TableName=connections_table,
            Key={"connectionId": {"S": connection_id}},
            ConditionExpression="attribute_not_exists(connectedAt) OR connectedAt < :cutoff",
            ExpressionAttributeValues={":cutoff": {"S": connected_before}},
            ReturnValues="ALL_OLD",
        ).get("Attributes")
    except client.exceptions.ConditionalCheckFailedException:
        return StaleRemoval(record_removed=False, subscriptions_removed=0, subscriptions_left=0)
    subs = {
        name: value["S"] for name, value in ((old or {}).get("subs") or {}).get("M", {}).items()
    }
    keyed = {(sub_id, topic) for sub_id, topic in subs.items()}
    keyed.update(known)
    keys = [
        {"topic": {"S": topic}, "sk": {"S": sort_key(connection_id, sub_id)}}
        for sub_id, topic in sorted(keyed)
    ]
    left = delete_items(client, subscriptions_table, keys) if keys else 0
    bump_versions(client, subscriptions_table, (topic for _, topic in keyed))
    return StaleRemoval(
        record_removed=True, subscriptions_removed=len(keys) - left, subscriptions_left=left
    )


def connection_subscriptions(
    client: Any, table: str, connection_id: str, subs: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """subscription id -> its stored item, for the ids and topics of a connection's ``subs``
    map (BatchGetItem, strongly consistent; an id whose item is gone is absent)."""
    found: dict[str, dict[str, Any]] = {}
    keys = subscription_keys(connection_id, subs)
    for start in range(0, len(keys), BATCH_GET_SIZE):
        pending: dict[str, Any] = {
            table: {"Keys": keys[start : start + BATCH_GET_SIZE], "ConsistentRead": True}
        }
        for _ in range(BATCH_DELETE_ATTEMPTS):
            answer = client.batch_get_item(RequestItems=pending)
            for item in answer.get("Responses", {}).get(table, []):
                found[split_sort_key(item["sk"]["S"])[1]] = item
            pending = answer.get("UnprocessedKeys") or {}
            if not pending:
                break
    return found


def extend_connection(
    client: Any,
    *,
    connections_table: str,
    subscriptions_table: str,
    connection: Connection,
    expires_at: int,
    claims: str,
    kept: Mapping[str, tuple[str, Sequence[str] | None]],
) -> None:
    """After ``auth``: the record's new expiry and claims (only while it exists: a
    concurrent ``$disconnect`` is never undone), then each kept subscription's expiry and
    granted fields (sub id -> (topic, fields), only while the item exists), each in one
    transaction with its topic's version bump (the broadcaster must not keep an old expiry
    or wider fields). ``ConnectionGone`` when the record went."""
    try:
        client.update_item(
            TableName=connections_table,
            Key={"connectionId": {"S": connection.connection_id}},
            UpdateExpression="SET expiresAt = :expires, expiryMinute = :minute, claims = :claims",
            ConditionExpression="attribute_exists(connectionId)",
            ExpressionAttributeValues={
                ":expires": {"N": str(expires_at)},
                ":minute": {"N": str(expires_at // 60)},
                ":claims": {"S": claims},
            },
        )
    except client.exceptions.ConditionalCheckFailedException:
        raise ConnectionGone(connection.connection_id) from None
    for sub_id, (topic, fields) in kept.items():
        values: dict[str, Any] = {":expires": {"N": str(expires_at)}}
        if fields is None:
            update = "SET expiresAt = :expires REMOVE #fields"
        else:
            update = "SET expiresAt = :expires, #fields = :fields"
            values[":fields"] = {"L": [{"S": name} for name in sorted(fields)]}
        try:
            client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": subscriptions_table,
                            "Key": {
                                "topic": {"S": topic},
                                "sk": {"S": sort_key(connection.connection_id, sub_id)},
                            },
                            "UpdateExpression": update,
                            "ConditionExpression": "attribute_exists(topic)",
                            "ExpressionAttributeNames": {"#fields": "fields"},
                            "ExpressionAttributeValues": values,
                        }
                    },
                    version_bump(subscriptions_table, topic),
                ]
            )
        except client.exceptions.TransactionCanceledException as cancelled:
            if "ConditionalCheckFailed" in _cancelled_reasons(cancelled)[:1]:
                continue  # unsubscribed meanwhile: nothing to extend
            raise
