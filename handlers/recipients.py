"""Who receives what for one change (pure): subscriptions in, one message per connection out.

For each subscription found on the change's topics, the item is *visible* to
it before (old image) and after (new image) when its filter matches the image
and, with ``targetAttribute``, the image names the subscriber as its owner
(an image that names no owner is visible to no one: fail closed); an image
the source's own filters leave out is visible to no subscription. From
before/after, ``handlers.filters.classify`` says ``added``, ``modified`` or
``removed``; subscriptions that see nothing are left out.

Each connection gets one message whatever the number of its matching
subscriptions: ``matches`` maps each subscription id to what it saw; ``data``
(the new image) is present when any match is ``added`` or ``modified``,
trimmed to the union of the fields those subscriptions were granted; ``old``
(when configured) is present when the item was visible to the connection
before and it still receives data or the item was deleted, trimmed the same
way. A ``removed`` that comes from leaving a filter or an owner carries keys
only. The previous owner of an item that changed owner is told ``removed``
and the new owner never sees the previous owner's ``old`` image.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from handlers import strict_json
from handlers.access import trim
from handlers.cursors import MAX_CURSOR_LENGTH, scope_digest
from handlers.dynamo_json import image_to_plain, to_plain
from handlers.filters import Filter, classify, matches, parse_filter
from handlers.subscriptions import split_sort_key

DATA_CHANGES = ("added", "modified")
MAX_MESSAGE_BYTES = 128 * 1024  # API Gateway WebSocket message limit


CURSOR_ROOM = len(b',"cursor":""') + MAX_CURSOR_LENGTH
"""Bytes a message keeps free for the cursor appended to it per connection."""


def with_cursor(data: bytes, cursor: str | None) -> bytes:
    """An encoded message (a JSON object) with ``cursor`` added as its last member."""
    if cursor is None:
        return data
    return data[:-1] + b',"cursor":"' + cursor.encode("ascii") + b'"}'


def encode(message: Mapping[str, Any], limit: int = MAX_MESSAGE_BYTES) -> tuple[bytes, bool]:
    """UTF-8 JSON of the message; over ``limit`` it drops ``data``/``old``, adds ``truncated``.
    Callers that append a cursor pass a limit ``CURSOR_ROOM`` lower."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(data) <= limit:
        return data, False
    slim = {key: value for key, value in message.items() if key not in ("data", "old")}
    slim["truncated"] = True
    return json.dumps(slim, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), True


@dataclass(frozen=True)
class Subscription:
    connection_id: str
    sub_id: str
    filter: Filter
    fields: frozenset[str] | None
    user_id: str | None
    scope: str = ""
    """The scope digest cursors of this subscription are bound to (``handlers.cursors``)."""
    expires_at: int | None = None
    """The connection's token expiry (epoch seconds); None: no token, never expires."""


@dataclass(frozen=True)
class Change:
    """One stream record, read: typed images and the envelope fields every message shares."""

    event_name: str
    keys: Mapping[str, Any]
    old: Mapping[str, Any] | None
    new: Mapping[str, Any] | None
    envelope: Mapping[str, Any]
    """type, action, table, keys (plain), id, sequence, timestamp (and cursor)."""


_filters: dict[str, Filter] = {}


def subscription_of(item: Mapping[str, Any], topic: str | None = None) -> Subscription:
    """A subscription from its stored item, whole or as ``topic_subscriptions`` projects it
    (the ids from ``sk``); its filter is compiled once per container. With the ``topic`` it
    was found on, its cursor scope too."""
    raw_filter = (item.get("filter") or {}).get("S")
    compiled: Filter = ()
    if raw_filter:
        compiled = _filters.get(raw_filter) or parse_filter(
            strict_json.loads(raw_filter, exact=True)
        )
        if len(_filters) < 10_000:
            _filters[raw_filter] = compiled
    fields = item.get("fields")
    if "connectionId" in item and "subId" in item:
        connection_id, sub_id = item["connectionId"]["S"], item["subId"]["S"]
    else:
        connection_id, sub_id = split_sort_key(item["sk"]["S"])
    return Subscription(
        connection_id=connection_id,
        sub_id=sub_id,
        filter=compiled,
        fields=None if fields is None else frozenset(v["S"] for v in fields["L"]),
        user_id=(item.get("userId") or {}).get("S"),
        scope=scope_digest(topic, raw_filter or None) if topic else "",
        expires_at=int(item["expiresAt"]["N"]) if "expiresAt" in item else None,
    )


def owner_of(image: Mapping[str, Any] | None, attribute: str) -> str | None:
    """The user an image names in ``attribute`` (a non-empty S, or an N), else None."""
    if image is None:
        return None
    value = image.get(attribute)
    if not isinstance(value, Mapping) or len(value) != 1:
        return None
    if isinstance(value.get("S"), str) and value["S"]:
        return str(value["S"])
    if isinstance(value.get("N"), str):
        return str(to_plain(value))
    return None


def _visible(
    subscription: Subscription, image: Mapping[str, Any] | None, target_attribute: str | None
) -> bool:
    if image is None:
        return False
    if target_attribute and (
        subscription.user_id is None or owner_of(image, target_attribute) != subscription.user_id
    ):
        return False
    return matches(subscription.filter, image)


def _union(fields: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    united: set[str] = set()
    for one in fields:
        if one is None:
            return None
        united.update(one)
    return frozenset(united)


@dataclass
class _Seen:
    matches: dict[str, str]
    data_fields: list[frozenset[str] | None]
    old_fields: list[frozenset[str] | None]


def plan(
    change: Change,
    subscriptions: Iterable[Subscription],
    *,
    key_names: Sequence[str],
    target_attribute: str | None,
    include_old: bool,
    old_visible: bool = True,
    new_visible: bool = True,
) -> dict[str, dict[str, Any]]:
    """connection id -> its message for this change (connections that see nothing are absent).
    A subscription listed twice (found on two topics) counts once. ``old_visible`` /
    ``new_visible`` False: the source's own filters leave that image out, so no
    subscription sees it (an item leaving them is ``removed``, keys only; one entering
    them is ``added``)."""
    seen: dict[str, _Seen] = {}
    for subscription in subscriptions:
        before: bool | None = None
        if change.old is not None or change.event_name == "INSERT":
            before = old_visible and _visible(subscription, change.old, target_attribute)
        after = new_visible and _visible(subscription, change.new, target_attribute)
        what = classify(change.event_name, before, after)
        if what is None:
            continue
        entry = seen.setdefault(subscription.connection_id, _Seen({}, [], []))
        if subscription.sub_id in entry.matches:
            continue
        entry.matches[subscription.sub_id] = what
        if what in DATA_CHANGES:
            entry.data_fields.append(subscription.fields)
        if before:
            entry.old_fields.append(subscription.fields)
    plain_new = image_to_plain(change.new) if change.new is not None else None
    plain_old = image_to_plain(change.old) if change.old is not None else None
    messages: dict[str, dict[str, Any]] = {}
    for connection_id, entry in seen.items():
        message = dict(change.envelope)
        message["matches"] = dict(sorted(entry.matches.items()))
        has_data = bool(entry.data_fields)
        if has_data:
            message["data"] = trim(plain_new, _union(entry.data_fields), key_names)
        deleted = change.event_name == "REMOVE"
        if include_old and plain_old is not None and entry.old_fields and (has_data or deleted):
            message["old"] = trim(plain_old, _union(entry.old_fields), key_names)
        messages[connection_id] = message
    return messages
