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

EVENT_NAMES = ("INSERT", "MODIFY", "REMOVE")
LAMBDA_ENVIRONMENT_LIMIT = 4096
"""Lambda's limit on a function's environment variables, bytes (names plus values)."""
OTHER_BROADCASTER_VARIABLES = 1024
"""Room kept for the broadcaster's other variables when SOURCES is estimated before deploy:
a table name (at most 255), the management endpoint (about 80 + the stage name, at most
128) and a few short settings."""
AUTONAME_SUFFIX = "-0000000"
"""What Pulumi's autonaming adds to a logical name ("-" and 7 hex characters)."""
VIEW_TYPES_WITH_NEW_IMAGE = ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
MAX_FILTERS = 5
_LABEL = re.compile(r"[^a-zA-Z0-9-]+")
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+$")


class SourceError(ValueError):
    """A source that cannot feed the channel, with what to do about it."""


@dataclass(frozen=True)
class SourceFilter:
    """One Lambda filter (records matching any filter of a source are delivered).

    ``event_names``: subset of INSERT, MODIFY, REMOVE (default: all).
    ``new_image``: attribute -> rule on the DynamoDB-typed value, in Lambda's
    filter syntax: ``{"status": {"S": ["active"]}}``, ``{"priority": {"N": ["5"]}}``.
    A plain list of strings is shorthand for an ``S`` rule:
    ``{"status": ["active", "pending"]}``. ``N`` rules take exact values as strings
    (the stream carries numbers as strings); ``numeric`` rules and bare numbers on ``N``
    never match on AWS and are refused.
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
    """Up to 5 filters; default none (every record)."""
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


def check_source(component: str, source: StreamSource) -> None:
    """Raise ``SourceError`` naming the component, the source and the argument at fault."""
    where = f"RealtimeChannel {component!r}, source {label_of(source)!r}"

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
        try:
            filter_pattern(source_filter)
        except SourceError as bad:
            raise SourceError(f"{where}: filters[{position}]: {bad}") from None


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


def filter_pattern(source_filter: SourceFilter) -> str:
    """The filter as Lambda's ``FilterCriteria.Filters[].Pattern`` JSON for DynamoDB records."""
    pattern: dict[str, Any] = {}
    names = list(source_filter.event_names)
    unknown = [name for name in names if name not in EVENT_NAMES]
    if unknown:
        raise SourceError(f"unknown event names {unknown}; use {', '.join(EVENT_NAMES)}")
    if len(set(names)) != len(names):
        raise SourceError("event_names lists a name twice")
    if source_filter.new_image and "REMOVE" in names:
        raise SourceError(
            "a new_image rule never matches REMOVE (deleted items have no new image);"
            " filter REMOVE in a separate filter"
        )
    if names:
        pattern["eventName"] = names
    if source_filter.new_image:
        pattern["dynamodb"] = {
            "NewImage": {
                name: _image_rule(name, rule) for name, rule in source_filter.new_image.items()
            }
        }
    if not pattern:
        raise SourceError("an empty filter matches everything; leave filters out instead")
    return json.dumps(pattern, sort_keys=True, separators=(",", ":"))


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


def sources_variable(tables: Mapping[str, str]) -> str:
    """The broadcaster's ``SOURCES``: label -> {"table": physical name}, compact JSON."""
    return json.dumps(
        {label: {"table": name} for label, name in tables.items()},
        sort_keys=True,
        separators=(",", ":"),
    )


def environment_size(variables: Mapping[str, str]) -> int:
    """Bytes Lambda counts against its 4 KB environment limit: every name and value."""
    return sum(len(name.encode()) + len(value.encode()) for name, value in variables.items())
