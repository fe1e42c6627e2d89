"""Stream sources: which tables feed a channel, how their records are filtered and batched.

Pure data and pure functions; the component turns each source into an event
source mapping.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from handlers.access import InvalidRule, parse_rules, placeholders
from handlers.topics import KEY_TYPES

EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")
LAMBDA_ENVIRONMENT_LIMIT = 4096
"""Lambda's limit on a function's environment variables, bytes (names plus values)."""
OTHER_BROADCASTER_VARIABLES = 1024
"""Room kept for a function's other variables when SOURCES is estimated before deploy: the
broadcaster's are the most (two table names, autonamed about 30 bytes each, the management
endpoint, about 80 + the stage name, and a few short settings). The estimate is a guard;
the exact check runs once the names are known."""
ESTIMATED_KEYS = (("PK", "S"), ("SK", "S"))
"""A source's key schema as counted in the estimate (before a table's schema is known)."""
AUTONAME_SUFFIX = "-0000000"
"""What Pulumi's autonaming adds to a logical name ("-" and 7 hex characters)."""
VIEW_TYPES_WITH_NEW_IMAGE = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
MAX_FILTERS = 5
_LABEL = re.compile(r"[^a-zA-Z0-9-]+")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")


class SourceError(ValueError):
    """A source that cannot feed the channel, with what to do about it."""


@dataclass(frozen=True)
class AccessRule:
    """Who may subscribe to what on one source, and which fields they see.

    A source with no rule accepts no subscription (default deny); a subscription is
    accepted when some rule allows it. Checked at preview against the table's key schema
    (``handlers.access`` is the one implementation, shared with the functions).

    ``AccessRule(key={"PK": "USER#{sub}"})``: the partition the placeholders name, and
    any item in it (name the sort key too to allow one item only).
    ``AccessRule(table=True)``: table-wide subscriptions, and therefore any key.
    ``when={"claims.role": "admin"}``: only identities whose claim has that value (or one
    of a list); ``sub`` or ``claims.NAME``.
    ``fields=["id", "status"]``: subscribers see only these top-level attributes (and the
    key attributes) in ``data`` and ``old``; default every field.
    Placeholders: ``{sub}`` and ``{claims.NAME}`` from the verified token; a missing claim
    makes the rule not match. They, and ``when``, need ``auth_enabled``.
    """

    key: Mapping[str, str] | None = None
    """Key attribute -> template; must name the partition key, may name the sort key."""
    table: bool = False
    """Allow table-wide subscriptions (and any key). Either ``key`` or ``table``."""
    when: Mapping[str, str | Sequence[str]] | None = None
    """Identity path (``sub``, ``claims.NAME``) -> required value or list of allowed values."""
    fields: Sequence[str] | None = None
    """Top-level attributes subscribers may see (key attributes always); default all."""

    def to_json(self) -> dict[str, Any]:
        """The rule as the functions read it (``handlers.access.parse_rule``'s shape)."""
        out: dict[str, Any] = {}
        if self.key is not None:
            out["key"] = dict(self.key) if isinstance(self.key, Mapping) else self.key
        if self.table is not False:
            out["table"] = self.table
        if self.when:
            when = self.when
            out["when"] = (
                {
                    path: list(value) if isinstance(value, (list, tuple)) else value
                    for path, value in when.items()
                }
                if isinstance(when, Mapping)
                else when
            )
        if self.fields is not None:
            fields = self.fields
            out["fields"] = list(fields) if isinstance(fields, (list, tuple)) else fields
        return out


@dataclass(frozen=True)
class SourceFilter:
    """One source filter (records matching any filter of a source are delivered).

    ``event_names``: subset of INSERT, MODIFY, REMOVE (default: all).
    ``new_image``: attribute -> rule on the DynamoDB-typed value, in Lambda's
    filter syntax: ``{"status": {"S": ["active"]}}``, ``{"priority": {"N": ["5"]}}``.
    A plain list of strings is shorthand for an ``S`` rule:
    ``{"status": ["active", "pending"]}``. ``N`` rules take exact values as strings
    (the stream carries numbers as strings); ``numeric`` rules and bare numbers on ``N``
    never match on AWS and are refused.

    On a ``NEW_AND_OLD_IMAGES`` stream the item is matched before and after the change:
    ``new_image`` rules compile to two Lambda filters (on NewImage and on OldImage), so a
    record whose item leaves the filter (or is deleted while in it) still reaches the
    broadcaster, which tells the subscribers that saw the item ``removed``; each counts
    against Lambda's 5 filters. On a ``NEW_IMAGE`` stream they match the new image only
    (an item leaving the filter is never heard of, and REMOVE cannot be named with them).
    """

    event_names: Sequence[str] = ()
    new_image: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamSource:
    """A table whose changes the channel broadcasts."""

    table: aws.dynamodb.Table | str
    """A table managed in the same program, or the name of an existing table (looked up)."""
    name: str | None = None
    """Label used in child resource names. Default: the table's logical or physical name."""
    filters: Sequence[SourceFilter] = ()
    """Up to 5 Lambda filters (a ``new_image`` filter counts twice on a ``NEW_AND_OLD_IMAGES``
    stream); default none (every record)."""
    batch_size: int = 100
    """Records per invocation, 1 to 10,000. Default 100."""
    batching_window_seconds: int = 0
    """Wait up to this long to fill a batch, 0 to 300. Default 0 (lowest latency)."""
    bisect_on_error: bool = True
    """Split a failing batch in two on each retry. Default on."""
    maximum_retry_attempts: int = 3
    """Retries of a failing batch before it goes to the dead-letter queue, 0 to 10,000 or -1.
    Default 3."""
    maximum_record_age_seconds: int = 3600
    """Records older than this go to the dead-letter queue, 60 to 604,800 or -1. Default 3,600."""
    parallelization_factor: int = 1
    """Concurrent batches per shard, 1 to 10. Default 1 (keeps order per shard)."""
    enabled: bool = True
    """Whether the mapping polls. Default on."""
    kms_key_arn: pulumi.Input[str] | None = None
    """ARN of the customer managed KMS key the table is encrypted with (e.g. ``key.arn``);
    the broadcaster's source policy then allows ``kms:Decrypt`` on it, which reading the
    stream needs. Default none: the table uses an AWS owned or AWS managed key."""
    access: Sequence[AccessRule | Mapping[str, Any]] = ()
    """Who may subscribe to this source (``AccessRule``s, or the same as JSON objects).
    Default none: no subscription is accepted (default deny)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def label_of(source: StreamSource) -> str:
    if source.name:
        raw = source.name
    elif isinstance(source.table, str):
        raw = source.table
    else:
        raw = source.table._name  # the logical name given to the Table resource
    label = _LABEL.sub("-", raw).strip("-").lower()
    if not label:
        raise SourceError(f"source {raw!r} has no usable name: pass StreamSource(name=...)")
    return label


def where_of(component: str, source: StreamSource) -> str:
    return f"RealtimeChannel {component!r}, source {label_of(source)!r}"


def access_json(component: str, source: StreamSource) -> list[dict[str, Any]]:
    """The source's rules as the JSON the functions read, each an object."""
    if isinstance(source.access, (str, bytes, Mapping)) or not isinstance(source.access, Sequence):
        raise SourceError(
            f"{where_of(component, source)}: access must be a list of AccessRule,"
            f" not {type(source.access).__name__}"
        )
    rules: list[dict[str, Any]] = []
    for position, rule in enumerate(source.access):
        if isinstance(rule, AccessRule):
            rules.append(rule.to_json())
        elif isinstance(rule, Mapping):
            rules.append(dict(rule))
        else:
            raise SourceError(
                f"{where_of(component, source)}: access[{position}] must be an AccessRule,"
                f" not {type(rule).__name__}"
            )
    try:
        json.dumps(rules)
    except (TypeError, ValueError):
        raise SourceError(
            f"{where_of(component, source)}: access rules must hold only strings, lists,"
            " objects and booleans"
        ) from None
    return rules


def check_access(
    component: str,
    source: StreamSource,
    *,
    auth_enabled: bool = True,
    key_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The source's rules as JSON, checked with the functions' own parser (against the key
    schema when ``key_names`` is given); ``SourceError`` names the component, the source
    and the rule. Without auth, rules that read the identity are refused: the identity
    is then only a query parameter anyone can set."""
    where = where_of(component, source)
    rules = access_json(component, source)
    try:
        parsed = parse_rules(rules, list(key_names) if key_names else None)
    except InvalidRule as bad:
        raise SourceError(f"{where}: {bad}") from None
    if not auth_enabled:
        for position, rule in enumerate(parsed):
            named = [name for _, template in rule.key or () for name in placeholders(template)]
            if rule.when or named:
                uses = f"{{{named[0]}}}" if named else "when"
                raise SourceError(
                    f"{where}: access[{position}] uses the identity ({uses}) but auth_enabled"
                    " is off, so the identity is only a query parameter anyone can set: turn"
                    " auth on, or allow without placeholders or when (e.g. table=True)"
                )
    return rules


def check_source(component: str, source: StreamSource, *, auth_enabled: bool = True) -> None:
    """Raise ``SourceError`` naming the component, the source and the argument at fault."""
    where = where_of(component, source)

    def bounded(arg: str, value: Any, low: int, high: int, *also: int) -> None:
        if not _is_int(value) or not (low <= value <= high or value in also):
            extra = f" or {', '.join(map(str, also))}" if also else ""
            raise SourceError(f"{where}: {arg} must be an integer from {low} to {high}{extra}")

    if not isinstance(source.table, (str, aws.dynamodb.Table)) or source.table == "":
        raise SourceError(f"{where}: table must be an aws.dynamodb.Table or a table name")
    bounded("batch_size", source.batch_size, 1, 10_000)
    bounded("batching_window_seconds", source.batching_window_seconds, 0, 300)
    bounded("maximum_retry_attempts", source.maximum_retry_attempts, 0, 10_000, -1)
    bounded("maximum_record_age_seconds", source.maximum_record_age_seconds, 60, 604_800, -1)
    bounded("parallelization_factor", source.parallelization_factor, 1, 10)
    key = source.kms_key_arn
    if isinstance(key, str) and not _KMS_KEY_ARN.match(key):
        raise SourceError(
            f"{where}: kms_key_arn must be a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>),"
            f" not {key!r}: IAM grants kms:Decrypt on keys, not on aliases or key ids"
        )
    if len(source.filters) > MAX_FILTERS:
        raise SourceError(f"{where}: at most {MAX_FILTERS} filters (Lambda's limit)")
    for position, source_filter in enumerate(source.filters):
        if not isinstance(source_filter, SourceFilter):
            raise SourceError(
                f"{where}: filters[{position}] must be a SourceFilter,"
                f" not {type(source_filter).__name__}"
            )
        try:
            filter_pattern(source_filter, old_image=True)
        except SourceError as bad:
            raise SourceError(f"{where}: filters[{position}]: {bad}") from None
    check_access(component, source, auth_enabled=auth_enabled)


def _uses_numeric(value: Any) -> bool:
    if isinstance(value, Mapping):
        return "numeric" in value or any(_uses_numeric(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_uses_numeric(v) for v in value)
    return False


def _check_number_rule(attribute: str, values: Sequence[Any]) -> None:
    """Lambda compares an ``N`` value as the string the stream carries: ``numeric`` rules and
    numbers never match it (they would filter out every record, silently)."""
    if _uses_numeric(values):
        raise SourceError(
            f"new_image[{attribute!r}]: a numeric rule on N never matches on AWS, because"
            " DynamoDB streams carry numbers as strings and Lambda's filtering does not compare"
            ' them as numbers; match exact values as strings ({"N": ["5"]}) or filter in the'
            " handler"
        )
    bare = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if bare:
        raise SourceError(
            f"new_image[{attribute!r}]: N values must be written as strings, as the stream"
            f' carries them: {{"N": {json.dumps([str(v) for v in bare])}}}, not {bare}'
        )


def _image_rule(attribute: str, rule: Any) -> Any:
    if isinstance(rule, (list, tuple)) and all(isinstance(item, str) for item in rule):
        return {"S": list(rule)}
    if isinstance(rule, Mapping) and len(rule) == 1:
        ((kind, values),) = rule.items()
        if kind in ("S", "N", "B", "BOOL", "NULL") and isinstance(values, (list, tuple)):
            if kind == "N":
                _check_number_rule(attribute, values)
            return {kind: list(values)}
    raise SourceError(
        f"new_image[{attribute!r}] must be a list of strings or a one-key object such as"
        f' {{"S": ["active"]}} or {{"N": ["5"]}}'
    )


def filter_pattern(
    source_filter: SourceFilter, *, image: str = "NewImage", old_image: bool = False
) -> str:
    """The filter as Lambda's ``FilterCriteria.Filters[].Pattern`` JSON for DynamoDB records,
    its ``new_image`` rules on ``image`` (``NewImage``, or ``OldImage`` for the filter that
    lets an item leaving it through). ``old_image``: the stream carries old images, so
    ``new_image`` rules may be combined with REMOVE (the OldImage filter matches it)."""
    pattern: dict[str, Any] = {}
    names = list(source_filter.event_names)
    unknown = [name for name in names if name not in EVENT_NAMES]
    if unknown:
        raise SourceError(f"unknown event names {unknown}; use {', '.join(EVENT_NAMES)}")
    if len(set(names)) != len(names):
        raise SourceError("event_names lists a name twice")
    if source_filter.new_image and "REMOVE" in names and not old_image:
        raise SourceError(
            "a new_image rule never matches REMOVE on a stream without old images (deleted"
            ' items have no new image): set stream_view_type="NEW_AND_OLD_IMAGES", or filter'
            " REMOVE in a separate filter"
        )
    if names:
        pattern["eventName"] = names
    if source_filter.new_image:
        pattern["dynamodb"] = {
            image: {name: _image_rule(name, rule) for name, rule in source_filter.new_image.items()}
        }
    if not pattern:
        raise SourceError("an empty filter matches everything; leave filters out instead")
    return json.dumps(pattern, sort_keys=True, separators=(",", ":"))


def lambda_patterns(filters: Sequence[SourceFilter], *, old_image: bool) -> list[str]:
    """The Lambda filters (pattern JSON) of a source's filters. With old images, a filter with
    ``new_image`` rules gives two: the rules on NewImage and on OldImage, so a record passes
    when its item matches before or after the change (an item leaving the filter, or
    deleted while in it, still reaches the broadcaster). ``SourceError`` past Lambda's 5."""
    patterns: list[str] = []
    for position, source_filter in enumerate(filters):
        try:
            patterns.append(filter_pattern(source_filter, old_image=old_image))
            if old_image and source_filter.new_image:
                patterns.append(filter_pattern(source_filter, image="OldImage", old_image=True))
        except SourceError as bad:
            raise SourceError(f"filters[{position}]: {bad}") from None
    if len(patterns) > MAX_FILTERS:
        doubled = sum(1 for f in filters if f.new_image)
        raise SourceError(
            f"{len(filters)} filters compile to {len(patterns)} Lambda filters, over Lambda's"
            f" {MAX_FILTERS}: on a NEW_AND_OLD_IMAGES stream each of the {doubled} filters with"
            " new_image rules is matched on the new image and on the old one (so an item"
            " leaving the filter still reaches subscribers as removed) and counts twice;"
            " merge filters (a rule lists several values) or use fewer"
        )
    return patterns


def broadcaster_filters(filters: Sequence[SourceFilter], *, old_image: bool) -> list[Any]:
    """The source filters as the broadcaster applies them to each image (``SOURCES``
    ``filters``: the NewImage patterns, as objects); none without old images, where Lambda
    has already matched the only image there is."""
    if not old_image:
        return []
    return [json.loads(filter_pattern(f, old_image=True)) for f in filters]


def check_stream(table_name: str, stream_enabled: Any, view_type: Any) -> None:
    """A source table must stream new images; say how to fix it otherwise."""
    if not stream_enabled:
        raise SourceError(
            f"table {table_name!r} has no stream: enable it with stream_enabled=True and"
            ' stream_view_type="NEW_AND_OLD_IMAGES" (or "NEW_IMAGE")'
        )
    if view_type not in VIEW_TYPES_WITH_NEW_IMAGE:
        raise SourceError(
            f"table {table_name!r} streams {view_type!r}, which lacks the new image: set"
            ' stream_view_type="NEW_AND_OLD_IMAGES" (or "NEW_IMAGE")'
        )


def check_old_image(where: str, table_name: str, view_type: Any, why: str) -> None:
    """A setting that needs the old image (``why``) refuses a stream without it."""
    if view_type != "NEW_AND_OLD_IMAGES":
        raise SourceError(
            f"{where}: {why} needs the old image, but table {table_name!r} streams"
            f' {view_type!r}: set stream_view_type="NEW_AND_OLD_IMAGES"'
        )


def _field(value: Any, name: str) -> Any:
    """An attribute of a pulumi output object, or a key of the plain dict mocks may give."""
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def key_schema(
    where: str, table_name: str, hash_key: Any, range_key: Any, attributes: Any
) -> list[list[str]]:
    """``[[partition key, type], [sort key, type]?]`` from a table's (or getTable's) fields."""
    types = {_field(attribute, "name"): _field(attribute, "type") for attribute in attributes or []}
    schema = []
    for role, name in (("partition", hash_key), ("sort", range_key)):
        if not name:
            if role == "partition":
                raise SourceError(f"{where}: table {table_name!r} has no partition key")
            continue
        kind = types.get(name)
        if kind not in KEY_TYPES:
            raise SourceError(
                f"{where}: table {table_name!r} declares no S, N or B type for its {role} key"
                f" {name!r} (attributes: {', '.join(map(str, types)) or 'none'})"
            )
        schema.append([str(name), str(kind)])
    return schema


def source_entry(
    table: str,
    keys: Sequence[Sequence[str]],
    old_image: bool,
    access: Sequence[Any],
    filters: Sequence[Any] = (),
) -> dict[str, Any]:
    """One source as the functions read it in ``SOURCES`` (``filters`` only when some)."""
    entry: dict[str, Any] = {
        "table": table,
        "keys": [list(key) for key in keys],
        "oldImage": old_image,
        "access": list(access),
    }
    if filters:
        entry["filters"] = list(filters)
    return entry


def sources_variable(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """``SOURCES``: label -> {"table", "keys", "oldImage", "access", "filters"?}, compact
    JSON."""
    return json.dumps(dict(entries), sort_keys=True, separators=(",", ":"))


def environment_size(variables: Mapping[str, str]) -> int:
    """Bytes Lambda counts against its 4 KB environment limit: every name and value."""
    return sum(len(name.encode()) + len(value.encode()) for name, value in variables.items())
