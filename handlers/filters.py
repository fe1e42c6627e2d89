"""The subscription filter language of protocol version 2 (pure: no I/O, no configuration).

A filter is a list of groups; an item matches when any group matches. A group
maps attribute paths to conditions and matches when every condition holds::

    [{"status": {"in": ["paid", "ready"]}, "total": {"gt": 20}},
     {"priority": "high"}]

* A path names an attribute; ``a.b.c`` walks nested maps (there is no list
  index and no escaping: an attribute whose name contains ``.`` cannot be
  named).
* A condition is a bare scalar (equals) or an object of operators, all of
  which must hold: ``eq``, ``ne``, ``lt``, ``le``, ``gt``, ``ge``,
  ``between`` (``[low, high]``, inclusive), ``in`` (a list of scalars),
  ``beginsWith`` (a string), ``contains`` (a substring of a string, or an
  element of a set or list), ``exists`` (``true``/``false``).
* Scalars are strings, numbers, booleans and ``null``. Types never coerce: the
  string ``"5"`` does not equal the number ``5``. Numbers compare by exact
  decimal value, as DynamoDB stores them (``1.10`` equals ``1.1``). Strings
  order by code point (DynamoDB's UTF-8 byte order).
* A missing attribute satisfies only ``{"exists": false}``: every other
  operator, ``ne`` included, is false for it (as in Firestore and SQL).
* Bounds: at most 5 groups, 10 conditions per group (each operator counts),
  4,096 bytes of JSON, 100 values in an ``in`` list, paths of 32 levels.

Filters are evaluated on DynamoDB-typed images (``{"N": "20"}``), so no
number is ever approximated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from handlers import strict_json

MAX_GROUPS = 5
MAX_CONDITIONS = 10
MAX_FILTER_BYTES = 4096
MAX_IN_VALUES = 100
MAX_PATH_DEPTH = 32
MAX_PATH_LENGTH = 255
OPERATORS = (
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "between",
    "in",
    "beginsWith",
    "contains",
    "exists",
)
_ORDERED = ("lt", "le", "gt", "ge")

Scalar = str | Decimal | bool | None


class InvalidFilter(ValueError):
    """A filter the server refuses; the message says what is wrong, for the client."""


@dataclass(frozen=True)
class Condition:
    path: tuple[str, ...]
    operator: str
    operand: Any
    """A scalar; a ``(low, high)`` pair for ``between``; a tuple of scalars for ``in``."""


Group = tuple[Condition, ...]
Filter = tuple[Group, ...]


def _scalar(value: Any, where: str) -> Scalar:
    """A JSON scalar as the evaluator holds it: numbers become exact ``Decimal``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise InvalidFilter(f"{where}: numbers must be finite")
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter(f"{where}: numbers must be finite")
        return Decimal(repr(value))
    raise InvalidFilter(f"{where}: expected a string, number, boolean or null")


def _kind(value: Scalar) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def _path(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_PATH_LENGTH:
        raise InvalidFilter(f"attribute path must be 1-{MAX_PATH_LENGTH} characters")
    parts = tuple(raw.split("."))
    if any(not part for part in parts):
        raise InvalidFilter(f"attribute path {raw!r} has an empty part")
    if len(parts) > MAX_PATH_DEPTH:
        raise InvalidFilter(f"attribute path {raw!r} is deeper than {MAX_PATH_DEPTH} levels")
    return parts


def _operand(operator: str, raw: Any, where: str) -> Any:
    if operator in ("eq", "ne"):
        return _scalar(raw, where)
    if operator in _ORDERED:
        value = _scalar(raw, where)
        if _kind(value) not in ("string", "number"):
            raise InvalidFilter(f"{where}: {operator} compares a string or a number")
        return value
    if operator == "between":
        if not isinstance(raw, list) or len(raw) != 2:
            raise InvalidFilter(f"{where}: between takes [low, high]")
        low, high = _scalar(raw[0], where), _scalar(raw[1], where)
        if _kind(low) != _kind(high) or _kind(low) not in ("string", "number"):
            raise InvalidFilter(f"{where}: between takes two strings or two numbers")
        if low > high:  # type: ignore[operator]
            raise InvalidFilter(f"{where}: between's low bound is above its high bound")
        return (low, high)
    if operator == "in":
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_IN_VALUES:
            raise InvalidFilter(f"{where}: in takes a list of 1 to {MAX_IN_VALUES} values")
        return tuple(_scalar(item, where) for item in raw)
    if operator == "beginsWith":
        if not isinstance(raw, str) or not raw:
            raise InvalidFilter(f"{where}: beginsWith takes a non-empty string")
        return raw
    if operator == "contains":
        value = _scalar(raw, where)
        if _kind(value) not in ("string", "number"):
            raise InvalidFilter(f"{where}: contains takes a string or a number")
        return value
    if not isinstance(raw, bool):  # exists
        raise InvalidFilter(f"{where}: exists takes true or false")
    return raw


def _conditions(raw_path: Any, raw: Any) -> list[Condition]:
    path = _path(raw_path)
    where = f"filter on {raw_path!r}"
    if isinstance(raw, Mapping):
        if not raw:
            raise InvalidFilter(f"{where}: an empty condition")
        unknown = [str(op)[:32] for op in raw if op not in OPERATORS]
        if unknown:
            raise InvalidFilter(
                f"{where}: unknown operator {unknown[0]!r}; known: {', '.join(OPERATORS)}"
            )
        return [Condition(path, op, _operand(op, value, where)) for op, value in raw.items()]
    if isinstance(raw, list):
        raise InvalidFilter(f'{where}: a bare list is ambiguous; use {{"in": [...]}}')
    return [Condition(path, "eq", _scalar(raw, where))]


def parse_filter(raw: Any) -> Filter:
    """Validate a client's ``filter`` and compile it; raise ``InvalidFilter`` saying why."""
    if raw is None:
        return ()
    try:
        size = len(strict_json.dumps(raw, ascii=False).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError):
        raise InvalidFilter("filter is not JSON") from None
    if size > MAX_FILTER_BYTES:
        raise InvalidFilter(f"filter is {size} bytes of JSON; the limit is {MAX_FILTER_BYTES}")
    if not isinstance(raw, list) or not raw:
        raise InvalidFilter("filter must be a non-empty list of groups")
    if len(raw) > MAX_GROUPS:
        raise InvalidFilter(f"filter has {len(raw)} groups; the limit is {MAX_GROUPS}")
    groups: list[Group] = []
    for group in raw:
        if not isinstance(group, Mapping) or not group:
            raise InvalidFilter("each filter group must be a non-empty object of conditions")
        conditions = [c for path, cond in group.items() for c in _conditions(path, cond)]
        if len(conditions) > MAX_CONDITIONS:
            raise InvalidFilter(
                f"a filter group has {len(conditions)} conditions; the limit is {MAX_CONDITIONS}"
            )
        groups.append(tuple(conditions))
    return tuple(groups)


def filter_attributes(compiled: Filter) -> set[str]:
    """The top-level attribute names a filter reads (to check them against a rule's fields)."""
    return {condition.path[0] for group in compiled for condition in group}


# -- evaluation on DynamoDB-typed images ------------------------------------------------------


def _lookup(image: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The typed attribute value at ``path``, or None when any part is missing."""
    value: Any = image.get(path[0])
    for part in path[1:]:
        if not isinstance(value, Mapping) or not isinstance(value.get("M"), Mapping):
            return None
        value = value["M"].get(part)
    return value if isinstance(value, Mapping) and len(value) == 1 else None


_MISSING = object()


def _typed_scalar(attribute: Mapping[str, Any]) -> Any:
    """A typed scalar as a comparable Python value; ``_MISSING`` for non-scalars and bad data."""
    ((kind, value),) = attribute.items()
    if kind == "S" and isinstance(value, str):
        return value
    if kind == "N":
        return _decimal(value)
    if kind == "BOOL" and isinstance(value, bool):
        return value
    if kind == "NULL":
        return None
    return _MISSING


def _decimal(text: Any) -> Any:
    try:
        number = Decimal(text)
    except (InvalidOperation, TypeError, ValueError):
        return _MISSING
    return number if number.is_finite() else _MISSING


def _equal(attribute_value: Any, operand: Scalar) -> bool:
    if attribute_value is _MISSING:
        return False
    # bool is an int subclass and Decimal(1) == True: compare kinds first.
    return bool(_kind(attribute_value) == _kind(operand) and attribute_value == operand)


def _contains(attribute: Mapping[str, Any], operand: Scalar) -> bool:
    ((kind, value),) = attribute.items()
    if kind == "S":
        return isinstance(operand, str) and isinstance(value, str) and operand in value
    if kind == "SS":
        return isinstance(operand, str) and operand in (value or ())
    if kind == "NS":
        return isinstance(operand, Decimal) and any(_decimal(v) == operand for v in value or ())
    if kind == "L" and isinstance(value, list):
        return any(
            isinstance(item, Mapping) and len(item) == 1 and _equal(_typed_scalar(item), operand)
            for item in value
        )
    return False


def _holds(condition: Condition, image: Mapping[str, Any]) -> bool:
    attribute = _lookup(image, condition.path)
    operator, operand = condition.operator, condition.operand
    if operator == "exists":
        return (attribute is not None) is bool(operand)
    if attribute is None:
        return False
    if operator == "contains":
        return _contains(attribute, operand)
    value = _typed_scalar(attribute)
    if operator == "eq":
        return _equal(value, operand)
    if operator == "ne":
        return not _equal(value, operand)
    if operator == "in":
        return any(_equal(value, item) for item in operand)
    if value is _MISSING:
        return False
    if operator == "beginsWith":
        return isinstance(value, str) and value.startswith(operand)
    if operator == "between":
        low, high = operand
        return _kind(value) == _kind(low) and bool(low <= value <= high)
    if _kind(value) != _kind(operand):
        return False
    if operator == "lt":
        return bool(value < operand)
    if operator == "le":
        return bool(value <= operand)
    if operator == "gt":
        return bool(value > operand)
    return bool(value >= operand)  # ge


def matches(compiled: Filter, image: Mapping[str, Any] | None) -> bool:
    """Whether a typed image (``None``: no item) passes the filter; no filter passes any item."""
    if image is None:
        return False
    if not compiled:
        return True
    return any(all(_holds(condition, image) for condition in group) for group in compiled)


def classify(event_name: str, before: bool | None, after: bool) -> str | None:
    """``added``, ``modified``, ``removed`` or None from whether the item was visible to a
    subscription before and after a change (``before`` None: unknown, no old image).

    ``added``: visible now and not before (or created); ``modified``: visible
    before and after; ``removed``: deleted, or no longer visible. Without an old
    image a visible MODIFY is ``modified`` and a REMOVE is ``removed`` (the best a
    ``NEW_IMAGE`` stream can tell: a client that never had the item ignores it).
    """
    after = after and event_name != "REMOVE"
    if before is None:
        if event_name == "REMOVE":
            return "removed"
        if event_name == "MODIFY":
            return "modified" if after else None
    before = bool(before) and event_name != "INSERT"  # an INSERT was never visible before
    if after:
        return "modified" if before else "added"
    return "removed" if before else None


def change_seen(
    compiled: Filter,
    event_name: str,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
) -> str | None:
    """What one change is, as seen through a filter (see ``classify``)."""
    before = None if old is None else matches(compiled, old)
    return classify(event_name, before, matches(compiled, new))
