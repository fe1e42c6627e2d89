"""Snapshots: the current items of a keyed subscription, read and cut into message pages.

``subscribe`` with ``snapshot: true`` on a keyed subscription answers the items
its key holds now, then live changes. The caller takes the subscription's
cursor position *before* reading (so the snapshot plus the changes recorded
after that position leave no gap; the client de-duplicates the overlap), calls
``snapshot_pages`` and sends one ``snapshot`` message per page
(``page_message``), ``more: true`` on all but the last.

What the subscriber gets is what live changes would give it:

* **Reading.** A key naming the partition key only is one Query on the table
  (``#pk = :pk``, ``ConsistentRead``, no index), followed across its pages
  (``LastEvaluatedKey``): items come in sort-key order. A key naming the whole
  key (partition and sort key, or the partition key of a hash-key-only table)
  is one GetItem with ``ConsistentRead``. Both are strongly consistent, so a
  change the broadcaster recorded before the cursor position was taken is in
  the snapshot. **Least privilege:** this module calls ``dynamodb:Query`` (on
  the table itself, never an index) and ``dynamodb:GetItem`` on the source
  table, nothing else; the component grants exactly these to ``$default``.
* **Visibility**, as ``handlers.recipients`` decides it for a change's new
  image: the source's own filters (``Source.filters``) must let the item
  through; with ``targetAttribute`` the item must name the subscriber's user id
  there (``recipients.owner_of``: an item naming no owner, or a subscriber
  without a user id, sees nothing: fail closed); and the subscription's filter
  must match the item *as the subscriber may see it* (the typed image trimmed
  to the granted fields and the key attributes), so a filter can never probe a
  hidden attribute. Source filters are Lambda patterns that may name
  ``eventName``; a current item was made by an INSERT or a MODIFY, so it
  passes when some pattern matches it as the new image of either.
* **Values**: plain JSON by the project's number rule
  (``dynamo_json.image_to_plain``: exact numbers stay exact, as strings when a
  double cannot hold them), trimmed with ``access.trim`` (granted fields plus
  key attributes).

Pages. Each page's body (``{"items": [...]}``, plus ``"truncated": [...]``
when needed), as compact UTF-8 JSON (``separators=(",", ":")``,
``ensure_ascii=False``), is at most ``SnapshotLimits.page_bytes`` (96 KB by
default), which leaves room under API Gateway's 128 KB message limit for the
envelope (``type``, an ``id`` of at most 64 characters, ``more``, ``cursor``);
``MAX_PAGE_BYTES`` keeps 8 KB of it. Items are packed in order, a page is cut
when the next item would not fit, and every item appears exactly once. No
items at all is one page with ``"items": []``.

An item too large for a page on its own (a DynamoDB item can be 400 KB) is not
sent: its keys go in the page's ``truncated`` list, at the page where the item
would have been, and it is left out of ``items``. This mirrors ``event_update``,
which drops ``data`` past 128 KB and says ``truncated``: ``items`` only ever
holds whole items (a client never mistakes a cut item for the item), and a
client that needs a truncated item reads it by its keys itself.

Bounds. A snapshot is all or nothing: past a bound, ``SnapshotTooLarge`` says
which, and the caller answers ``reset`` instead of a partial snapshot:

* ``items``: more than ``max_items`` visible items (truncated ones count);
* ``bytes``: the items' JSON adds up to more than ``max_bytes`` (each item
  counted as sent: whole, or its keys when truncated), or an item's keys alone
  do not fit a page;
* ``time``: the clock is past ``deadline`` before a read (the caller sets it
  from the Lambda's remaining time, keeping enough to send the pages). A read
  that started before the deadline completes the snapshot.

Items the filter or the owner check leave out cost reads but count against no
bound but time: the filter is evaluated here (exact decimals, the protocol's
type rules), not translated into a ``FilterExpression``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from handlers.access import trim
from handlers.config import Source
from handlers.dynamo_json import image_to_plain
from handlers.filters import Filter, matches
from handlers.lambda_filters import matches_any
from handlers.recipients import MAX_MESSAGE_BYTES, owner_of
from handlers.topics import InvalidKey

"""API Gateway's WebSocket message limit."""
MAX_PAGE_BYTES = MAX_MESSAGE_BYTES - 8 * 1024
"""The largest ``page_bytes``: 8 KB stay for the message's envelope."""
REASONS = ("items", "bytes", "time")
CURRENT_EVENTS = ("INSERT", "MODIFY")
"""The stream events that can have made an item that exists (for source filters)."""

_ITEMS_OPEN = len('{"items":[')
_TRUNCATED_OPEN = len(',"truncated":[')


class SnapshotTooLarge(Exception):
    """The snapshot passes a bound; ``reason`` is ``items``, ``bytes`` or ``time``."""

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown snapshot bound {reason!r}")
        super().__init__(f"snapshot too large ({reason}): {detail}")
        self.reason = reason


@dataclass(frozen=True)
class SnapshotLimits:
    max_items: int = 1000
    """Visible items one snapshot may hold; more: ``SnapshotTooLarge("items")``."""
    max_bytes: int = 4 * 1024 * 1024
    """JSON bytes of all items sent; more: ``SnapshotTooLarge("bytes")``."""
    page_bytes: int = 96 * 1024
    """JSON bytes of one page's body (``items`` and ``truncated``)."""
    read_page_items: int = 100
    """The Query's ``Limit``: items read per request."""

    def __post_init__(self) -> None:
        for name in ("max_items", "max_bytes", "page_bytes", "read_page_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SnapshotLimits.{name} must be a positive integer")
        if self.page_bytes > MAX_PAGE_BYTES:
            raise ValueError(
                f"SnapshotLimits.page_bytes must be at most {MAX_PAGE_BYTES}: a page and its"
                f" envelope must stay under {MAX_MESSAGE_BYTES} bytes"
            )


@dataclass(frozen=True)
class SnapshotPage:
    items: tuple[dict[str, Any], ...] = ()
    """Whole items (plain JSON values, trimmed), in sort-key order."""
    truncated: tuple[dict[str, Any], ...] = ()
    """The keys (plain) of items too large for a page, where they would have been."""

    def body(self) -> dict[str, Any]:
        """The page's fields of a ``snapshot`` message: ``items``, and ``truncated`` if any."""
        out: dict[str, Any] = {"items": list(self.items)}
        if self.truncated:
            out["truncated"] = list(self.truncated)
        return out


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as the messages are sent: compact UTF-8 JSON."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return len(text.encode("utf-8"))


def page_message(
    sub_id: str, page: SnapshotPage, *, more: bool, cursor: str | None
) -> dict[str, Any]:
    """The ``snapshot`` message for one page (``more``: pages follow; no ``cursor`` when the
    stack signs none)."""
    message = {"type": "snapshot", "id": sub_id, **page.body(), "more": more}
    if cursor is not None:
        message["cursor"] = cursor
    return message


def page_messages(
    sub_id: str, pages: Sequence[SnapshotPage], cursor: str | None
) -> list[dict[str, Any]]:
    """One ``snapshot`` message per page, ``more`` false on the last only."""
    last = len(pages) - 1
    return [
        page_message(sub_id, page, more=index < last, cursor=cursor)
        for index, page in enumerate(pages)
    ]


# -- keys -------------------------------------------------------------------------------------


def typed_key(key_schema: Sequence[tuple[str, str]], texts: Mapping[str, str]) -> dict[str, Any]:
    """A subscription key as ``topics.subscription_key`` returns it (attribute -> value as
    text) in DynamoDB attribute values for the low-level client: ``S`` and ``N`` as text,
    ``B`` as the bytes its base64 text holds."""
    typed: dict[str, Any] = {}
    for name, kind in key_schema:
        if name not in texts:
            continue
        text = texts[name]
        if kind == "B":
            try:
                typed[name] = {"B": base64.b64decode(text, validate=True)}
            except (binascii.Error, ValueError):
                raise InvalidKey(f"key {name!r} is not base64") from None
        else:
            typed[name] = {kind: text}
    unknown = sorted(set(texts) - set(typed))
    if unknown:
        raise InvalidKey(f"key names {unknown[0]!r}, not a key attribute in that place")
    return typed


def _check_key(key_schema: Sequence[tuple[str, str]], key: Mapping[str, Any]) -> bool:
    """Validate a typed key against the schema; True when it names the whole key."""
    if not key_schema:
        raise InvalidKey("the source declares no key schema: it takes no keyed subscription")
    names = [name for name, _ in key_schema]
    unknown = sorted(str(name) for name in key if name not in names)
    if unknown:
        raise InvalidKey(f"key names {unknown[0]!r}; the key attributes are {', '.join(names)}")
    for name, kind in key_schema:
        value = key.get(name)
        if value is None:
            if name == names[0]:
                raise InvalidKey(f"key must name the partition key {name!r}")
            continue
        if not isinstance(value, Mapping) or list(value) != [kind]:
            raise InvalidKey(f"key {name!r} must be a {kind} attribute value")
    return len(key) == len(names)


# -- reading (client) -------------------------------------------------------------------------


def _in_time(deadline: float, clock: Callable[[], float]) -> None:
    if clock() > deadline:
        raise SnapshotTooLarge("time", "the deadline passed while reading")


def current_items(
    client: Any,
    table: str,
    key_schema: Sequence[tuple[str, str]],
    key: Mapping[str, Any],
    *,
    read_page_items: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[dict[str, Any]]:
    """The typed items the key holds now, in sort-key order, strongly consistent: GetItem for
    a whole key, else a Query on the partition followed across pages. The clock is checked
    before each request (``SnapshotTooLarge("time")`` past ``deadline``). The key is
    checked at once (``InvalidKey``), before anything is read."""
    whole = _check_key(key_schema, key)
    return _read(client, table, key_schema, key, whole, read_page_items, deadline, clock)


def _read(
    client: Any,
    table: str,
    key_schema: Sequence[tuple[str, str]],
    key: Mapping[str, Any],
    whole: bool,
    read_page_items: int,
    deadline: float,
    clock: Callable[[], float],
) -> Iterator[dict[str, Any]]:
    if whole:
        _in_time(deadline, clock)
        answer = client.get_item(TableName=table, Key=dict(key), ConsistentRead=True)
        if answer.get("Item"):
            yield answer["Item"]
        return
    partition = key_schema[0][0]
    request: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "#pk = :pk",
        "ExpressionAttributeNames": {"#pk": partition},
        "ExpressionAttributeValues": {":pk": key[partition]},
        "ConsistentRead": True,
        "Limit": read_page_items,
    }
    while True:
        _in_time(deadline, clock)
        answer = client.query(**request)
        yield from answer.get("Items", [])
        last = answer.get("LastEvaluatedKey")
        if not last:
            return
        request["ExclusiveStartKey"] = last


# -- what the subscriber sees (pure) ----------------------------------------------------------


def in_source(source_filters: Sequence[Mapping[str, Any]], image: Mapping[str, Any]) -> bool:
    """Whether the source's own filters let a current item through: as the new image of an
    INSERT or a MODIFY (one of them made it). No filters: every item."""
    if not source_filters:
        return True
    return any(
        matches_any(
            source_filters,
            {"eventName": event, "eventSource": "aws:dynamodb", "dynamodb": {"NewImage": image}},
        )
        for event in CURRENT_EVENTS
    )


def visible_item(
    image: Mapping[str, Any],
    *,
    key_names: Sequence[str],
    filter: Filter,
    fields: frozenset[str] | None,
    target_attribute: str | None,
    user_id: str | None,
    source_filters: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any] | None:
    """The item as the subscriber sees it (plain, trimmed), or None when it may not see it."""
    if not in_source(source_filters, image):
        return None
    if target_attribute and (user_id is None or owner_of(image, target_attribute) != user_id):
        return None
    seen = trim(image, fields, key_names)
    if seen is None or not matches(filter, seen):
        return None
    return image_to_plain(seen)


@dataclass
class _Packer:
    """Cuts entries into pages whose body JSON stays within ``page_bytes``."""

    page_bytes: int
    pages: list[SnapshotPage] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    truncated: list[dict[str, Any]] = field(default_factory=list)
    item_bytes: int = 0
    truncated_bytes: int = 0

    def size(self, extra_item: int = -1, extra_truncated: int = -1) -> int:
        """The body's size with the current entries, plus one more item or truncated key."""
        items, item_bytes = len(self.items), self.item_bytes
        truncated, truncated_bytes = len(self.truncated), self.truncated_bytes
        if extra_item >= 0:
            items, item_bytes = items + 1, item_bytes + extra_item
        if extra_truncated >= 0:
            truncated, truncated_bytes = truncated + 1, truncated_bytes + extra_truncated
        size = _ITEMS_OPEN + item_bytes + max(items - 1, 0) + 1
        if truncated:
            size += _TRUNCATED_OPEN + truncated_bytes + truncated - 1 + 1
        return size + 1

    @staticmethod
    def alone(extra_item: int = -1, extra_truncated: int = -1) -> int:
        return _Packer(0).size(extra_item, extra_truncated)

    def add_item(self, item: dict[str, Any], size: int) -> None:
        if self.size(extra_item=size) > self.page_bytes:
            self.cut()
        self.items.append(item)
        self.item_bytes += size

    def add_truncated(self, keys: dict[str, Any], size: int) -> None:
        if self.size(extra_truncated=size) > self.page_bytes:
            self.cut()
        self.truncated.append(keys)
        self.truncated_bytes += size

    def cut(self) -> None:
        if self.items or self.truncated:
            self.pages.append(SnapshotPage(tuple(self.items), tuple(self.truncated)))
        self.items, self.truncated = [], []
        self.item_bytes = self.truncated_bytes = 0

    def finish(self) -> list[SnapshotPage]:
        self.cut()
        return self.pages or [SnapshotPage()]


def paginate(
    items: Iterable[dict[str, Any]],
    key_names: Sequence[str],
    limits: SnapshotLimits,
) -> list[SnapshotPage]:
    """Visible items (plain) in order -> pages (see the module docstring), or
    ``SnapshotTooLarge("items" | "bytes")``."""
    packer = _Packer(limits.page_bytes)
    total = 0
    for count, item in enumerate(items, start=1):
        if count > limits.max_items:
            raise SnapshotTooLarge("items", f"more than {limits.max_items} items")
        size = encoded_size(item)
        if _Packer.alone(extra_item=size) <= limits.page_bytes:
            packer.add_item(item, size)
        else:
            keys = {name: item[name] for name in key_names if name in item}
            size = encoded_size(keys)
            if _Packer.alone(extra_truncated=size) > limits.page_bytes:
                raise SnapshotTooLarge("bytes", "an item's keys alone do not fit a page")
            packer.add_truncated(keys, size)
        total += size
        if total > limits.max_bytes:
            raise SnapshotTooLarge("bytes", f"more than {limits.max_bytes} bytes of items")
    return packer.finish()


# -- the whole snapshot -----------------------------------------------------------------------


def snapshot_pages(
    client: Any,
    *,
    source: Source,
    key: Mapping[str, Any],
    filter: Filter,
    fields: frozenset[str] | None,
    target_attribute: str | None,
    user_id: str | None,
    limits: SnapshotLimits,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[SnapshotPage]:
    """The pages of a keyed subscription's snapshot: the items ``key`` (typed attribute values,
    e.g. from ``typed_key``) holds now that the subscriber may see, in sort-key order.

    ``fields``: the grant's fields (None: all); ``target_attribute``/``user_id``: row-level
    control (fail closed); ``deadline``: a ``clock()`` value. Raises ``SnapshotTooLarge``
    past a bound (answer ``reset``), ``InvalidKey`` for a key that does not fit the source.
    """
    key_names = [name for name, _ in source.keys]
    typed = current_items(
        client,
        source.table,
        source.keys,
        key,
        read_page_items=limits.read_page_items,
        deadline=deadline,
        clock=clock,
    )
    seen = (
        visible_item(
            image,
            key_names=key_names,
            filter=filter,
            fields=fields,
            target_attribute=target_attribute,
            user_id=user_id,
            source_filters=source.filters,
        )
        for image in typed
    )
    return paginate((item for item in seen if item is not None), key_names, limits)
