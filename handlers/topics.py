"""Topics: what the subscription index is keyed by (pure).

A subscription with a key lives on the topic of that key; one without lives on
its source's table-wide topic, spread over ``buckets`` partitions so that a
popular table-wide feed does not make one hot DynamoDB partition. A change is
offered to the subscriptions on the topics it touches: its item (tables with a
sort key), its partition and its table.

Topic strings are built unambiguously: every part is typed and
length-prefixed, so the partition key ``A#B`` with sort key ``C`` can never
produce the topic of partition key ``A`` with sort key ``B#C``, and a number
key ``1`` never meets a string key ``"1"``. Numbers use their canonical
decimal form, so ``1.0`` and ``1`` are one topic, as in DynamoDB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

KEY_TYPES = ("S", "N", "B")


class InvalidKey(ValueError):
    """A subscription key that does not fit the source's key schema; the message says why."""


def _part(text: str) -> str:
    return f"{len(text)}:{text}"


def canonical_number(text: str) -> str:
    """One spelling per number: ``1.0``, ``1``, ``1E0`` -> ``1``; ``100`` -> ``1E+2``."""
    try:
        value = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidKey(f"not a number: {str(text)[:40]!r}") from None
    if not value.is_finite():
        raise InvalidKey("key numbers must be finite")
    return str(value.normalize()) if value != 0 else "0"


def typed_part(kind: str, value: str) -> str:
    """A key value as one topic part: its DynamoDB type, then its length-prefixed text."""
    if kind == "N":
        value = canonical_number(value)
    return kind + _part(value)


def table_topic(label: str, bucket: int = 0) -> str:
    return f"T|{_part(label)}|{bucket}"


def key_topic(label: str, parts: Sequence[str]) -> str:
    """The topic of a partition (one part) or an item (two parts), parts from ``typed_part``."""
    return ("P|" if len(parts) == 1 else "I|") + "|".join([_part(label), *parts])


def bucket_of(connection_id: str, buckets: int) -> int:
    """Which table-wide bucket a connection's subscription goes to (stable, spread evenly)."""
    if buckets <= 1:
        return 0
    digest = hashlib.sha256(connection_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % buckets


def record_topics(
    label: str,
    key_schema: Sequence[tuple[str, str]],
    keys: Mapping[str, Any],
    buckets: int,
) -> list[str]:
    """Every topic a change to the item with these typed ``keys`` touches: its item (when the
    table has a sort key), its partition, and each bucket of the table-wide topic."""
    parts = []
    for name, kind in key_schema:
        attribute = keys.get(name)
        if not isinstance(attribute, Mapping) or not isinstance(attribute.get(kind), str):
            raise InvalidKey(f"record key has no {kind} value for {name!r}")
        parts.append(typed_part(kind, attribute[kind]))
    topics = [key_topic(label, parts[:1])]
    if len(parts) == 2:
        topics.insert(0, key_topic(label, parts))
    topics.extend(table_topic(label, bucket) for bucket in range(max(buckets, 1)))
    return topics


def subscription_key(
    key_schema: Sequence[tuple[str, str]], raw: Any
) -> tuple[dict[str, str], list[str]]:
    """Validate a client's ``key`` against the source's key schema.

    Returns (attribute -> value as text, for access rules; typed topic parts).
    The key must name the partition key and may name the sort key; string keys
    take JSON strings, number keys JSON numbers (or their decimal text), binary
    keys base64 text.
    """
    if not isinstance(raw, Mapping) or not raw:
        raise InvalidKey("key must be an object naming the partition key")
    names = [name for name, _ in key_schema]
    unknown = [str(name)[:64] for name in raw if name not in names]
    if unknown:
        raise InvalidKey(f"key names {unknown[0]!r}; the key attributes are {', '.join(names)}")
    if names[0] not in raw:
        raise InvalidKey(f"key must name the partition key {names[0]!r}")
    texts: dict[str, str] = {}
    parts: list[str] = []
    for name, kind in key_schema:
        if name not in raw:
            break
        value = raw[name]
        if kind == "N":
            if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
                raise InvalidKey(f"key {name!r} is a number")
            text = canonical_number(repr(value) if isinstance(value, float) else str(value))
        elif not isinstance(value, str) or not value:
            raise InvalidKey(f"key {name!r} is a non-empty {'string' if kind == 'S' else 'base64'}")
        else:
            text = value
        if len(text.encode("utf-8")) > 2048:
            raise InvalidKey(f"key {name!r} is longer than DynamoDB allows")
        texts[name] = text
        parts.append(typed_part(kind, text))
    return texts, parts
