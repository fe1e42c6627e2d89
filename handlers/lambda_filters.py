"""Lambda event filtering for DynamoDB stream records, as an event source mapping applies it.

Pure (stdlib only), shared by the broadcaster (which applies a source's filters to each
image of a record, so an item leaving a source filter reaches its subscribers as
``removed``) and the emulator (whose stream pollers apply a mapping's filters as Lambda
does; ``emulator.filters`` re-exports this module).

A mapping's ``FilterCriteria`` holds up to five patterns; a record is delivered when
any of them matches (``matches_any``). A pattern is JSON in the content-filtering
syntax Lambda shares with EventBridge:

* every key of an object must match (AND); ``"$or": [{...}, {...}]`` ORs sub-patterns;
* a nested object descends into the record's object at that key;
* a leaf is a non-empty array of matchers, any of which may match (OR);
* when the record's field is an array (``SS``, ``NS``, ``L`` ...), it matches when any
  element matches; an object-valued pattern tries each object element in turn.

Matchers: literal string, number, ``true``/``false``, ``null``; ``{"prefix": s}``,
``{"suffix": s}``, ``{"equals-ignore-case": s}``, ``{"wildcard": "a*b"}`` (string fields
only); ``{"anything-but": value | [values] | {"prefix": s}}``;
``{"numeric": [op, n]}`` or ``{"numeric": [">" | ">=", low, "<" | "<=", high]}``;
``{"exists": true | false}``.

Choices where AWS gives no single answer (the emulator and the broadcaster share them):

* **Numbers.** As in Event Ruler, the engine behind Lambda's filtering, numbers match
  JSON numbers only: a pattern number equals a record number by value (``7 == 7.0``),
  and ``numeric`` applies to JSON numbers only. DynamoDB writes numbers as strings
  (``{"N": "7"}``), so a number or ``numeric`` rule on an ``N`` value never matches,
  exactly as on AWS (``{"N": [{"numeric": [">", 5]}]}`` lets nothing through); match
  ``N`` values with strings (``{"N": ["7"]}``) instead. Likewise a pattern string only
  equals a record string (``"7"`` does not match the number ``7``), and
  ``anything-but`` a number never excludes a string.
* **Leaves.** As in AWS, only scalars are leaf values: a field holding an object
  (``"status": {"S": "x"}``) satisfies no leaf matcher except ``{"exists": false}``, and
  neither does a missing field or an empty array. ``anything-but`` never matches a
  missing field; ``null`` is a present value (``exists: true`` matches it).
* **Validation** follows Event Ruler: empty objects, empty arrays, ``NaN``/``Infinity``,
  duplicate keys, a range whose bottom is not below its top, an empty
  ``anything-but`` prefix, and a ``wildcard`` with ``**`` or a stray backslash are all
  ``FilterError``. Matchers not listed above (``cidr``, ``exact``,
  ``anything-but``/``suffix`` ...) are ``FilterError`` too: the emulator refuses rather
  than guesses.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

__all__ = ["FilterError", "check_pattern", "matches", "matches_any", "parse_pattern"]

OR_KEY = "$or"
MATCHERS = (
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
)
COMPARISONS = ("=", "<", "<=", ">", ">=")
LOWER_BOUNDS = (">", ">=")
UPPER_BOUNDS = ("<", "<=")


class FilterError(ValueError):
    """A filter pattern Lambda would reject, saying where and what is wrong."""


# --- parsing -------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise FilterError(f"pattern contains {name}, which is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise FilterError(f"pattern repeats the key {key!r}")
        result[key] = value
    return result


def parse_pattern(text: str) -> dict[str, Any]:
    """Validate one ``FilterCriteria.Filters[].Pattern`` and return it as a dict.

    Raises ``FilterError`` naming the offending path (``dynamodb.NewImage.x``) when the
    text is not JSON, not an object, or not valid filter syntax.
    """
    if not isinstance(text, str):
        raise FilterError(f"pattern must be a JSON string, got {type(text).__name__}")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as bad:
        raise FilterError(f"pattern is not valid JSON: {bad}") from None
    return check_pattern(value)


def check_pattern(value: Any) -> dict[str, Any]:
    """Validate a pattern already read from JSON (an object) and return it.

    Raises ``FilterError`` as ``parse_pattern`` does (duplicate keys cannot be seen here:
    the JSON reader has already kept one of them).
    """
    if not isinstance(value, dict):
        raise FilterError(f"pattern must be a JSON object, got {_json_type(value)}")
    _check_object(value, "")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_object(node: dict[str, Any], path: str) -> None:
    where = path or "pattern"
    if not node:
        raise FilterError(f"{where}: empty objects are not allowed")
    for key, rule in node.items():
        here = _join(path, key)
        if key == OR_KEY:
            _check_or(rule, here)
        elif isinstance(rule, dict):
            _check_object(rule, here)
        elif isinstance(rule, list):
            _check_leaf(rule, here)
        else:
            raise FilterError(
                f"{here}: must be an object or a non-empty array of matchers,"
                f" got {_json_type(rule)}"
            )


def _check_or(rule: Any, here: str) -> None:
    if not isinstance(rule, list) or len(rule) < 2:
        raise FilterError(f"{here}: must be an array of at least 2 objects")
    for position, branch in enumerate(rule):
        if not isinstance(branch, dict):
            raise FilterError(f"{here}[{position}]: must be an object")
        _check_object(branch, here)


def _check_leaf(rule: list[Any], here: str) -> None:
    if not rule:
        raise FilterError(f"{here}: empty arrays are not allowed")
    for position, matcher in enumerate(rule):
        _check_matcher(matcher, f"{here}[{position}]")


def _check_literal_number(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{where}: number {value!r} is out of range")


def _check_matcher(matcher: Any, where: str) -> None:
    if matcher is None or isinstance(matcher, (str, bool)):
        return
    if _is_number(matcher):
        _check_literal_number(matcher, where)
        return
    if not isinstance(matcher, dict):
        raise FilterError(
            f"{where}: a matcher must be a string, number, boolean, null or object,"
            f" got {_json_type(matcher)}"
        )
    if len(matcher) != 1:
        raise FilterError(
            f"{where}: a matcher object has exactly one key, got {sorted(matcher) or 'none'}"
        )
    ((kind, argument),) = matcher.items()
    if kind not in MATCHERS:
        raise FilterError(f"{where}: unknown matcher {kind!r}; use one of {', '.join(MATCHERS)}")
    where = f"{where}.{kind}"
    if kind in ("prefix", "suffix", "equals-ignore-case"):
        if not isinstance(argument, str):
            raise FilterError(f"{where}: must be a string, got {_json_type(argument)}")
    elif kind == "wildcard":
        if not isinstance(argument, str):
            raise FilterError(f"{where}: must be a string, got {_json_type(argument)}")
        _wildcard_regex(argument, where)
    elif kind == "exists":
        if not isinstance(argument, bool):
            raise FilterError(f"{where}: must be true or false, got {_json_type(argument)}")
    elif kind == "numeric":
        _check_numeric(argument, where)
    else:
        _check_anything_but(argument, where)


def _check_numeric(argument: Any, where: str) -> None:
    if not isinstance(argument, list) or len(argument) not in (2, 4):
        raise FilterError(f'{where}: must be [op, n] or [">"|">=", low, "<"|"<=", high]')
    for position in range(0, len(argument), 2):
        op, bound = argument[position], argument[position + 1]
        if not isinstance(op, str) or op not in COMPARISONS:
            raise FilterError(
                f"{where}: unknown operator {op!r}; use one of {', '.join(COMPARISONS)}"
            )
        if not _is_number(bound):
            raise FilterError(f"{where}: the value after {op!r} must be a number")
        _check_literal_number(bound, where)
    if len(argument) == 4:
        low_op, low, high_op, high = argument
        if low_op not in LOWER_BOUNDS or high_op not in UPPER_BOUNDS:
            raise FilterError(
                f'{where}: a range is [">"|">=", low, "<"|"<=", high], got {argument!r}'
            )
        if _decimal(low) >= _decimal(high):
            raise FilterError(f"{where}: the range's bottom {low!r} must be below its top {high!r}")


def _check_anything_but(argument: Any, where: str) -> None:
    if isinstance(argument, dict):
        if list(argument) != ["prefix"]:
            raise FilterError(f'{where}: the only object form is {{"prefix": "..."}}')
        prefix = argument["prefix"]
        if not isinstance(prefix, str) or not prefix:
            raise FilterError(f"{where}.prefix: must be a non-empty string")
        return
    values = argument if isinstance(argument, list) else [argument]
    if not values:
        raise FilterError(f"{where}: the list must not be empty")
    if all(isinstance(value, str) for value in values):
        return
    if all(_is_number(value) for value in values):
        for value in values:
            _check_literal_number(value, where)
        return
    raise FilterError(
        f"{where}: must be a string, a number, a list of all strings or all numbers,"
        ' or {"prefix": "..."}'
    )


@lru_cache(maxsize=256)
def _wildcard_regex(text: str, where: str = "wildcard") -> re.Pattern[str]:
    parts: list[str] = []
    index = 0
    previous_star = False
    while index < len(text):
        char = text[index]
        if char == "*":
            if previous_star:
                raise FilterError(f"{where}: consecutive '*' are not allowed in {text!r}")
            parts.append(".*")
            previous_star = True
            index += 1
            continue
        previous_star = False
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if escaped not in ("*", "\\"):
                raise FilterError(f"{where}: a backslash may only escape '*' or '\\' in {text!r}")
            parts.append(re.escape(escaped))
            index += 2
            continue
        parts.append(re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL)


# --- matching ------------------------------------------------------------------------


class _Missing:
    """The record has no value at this path."""


_MISSING = _Missing()


def matches(pattern: Mapping[str, Any], record: Mapping[str, Any]) -> bool:
    """Whether ``record`` passes ``pattern`` (a dict from ``parse_pattern``).

    A malformed pattern met during matching raises ``FilterError``; validate patterns
    with ``parse_pattern`` first to report every problem up front.
    """
    if not isinstance(pattern, Mapping):
        raise FilterError(f"pattern must be an object, got {_json_type(pattern)}")
    return _match_object(pattern, record)


def matches_any(patterns: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> bool:
    """Lambda's rule for one mapping: no filters pass everything, else any filter may match."""
    return not patterns or any(matches(pattern, record) for pattern in patterns)


def _match_object(pattern: Mapping[str, Any], node: Any) -> bool:
    for key, rule in pattern.items():
        if key == OR_KEY and isinstance(rule, list):
            if not any(_match_object(branch, node) for branch in rule):
                return False
            continue
        child = node.get(key, _MISSING) if isinstance(node, Mapping) else _MISSING
        if isinstance(rule, Mapping):
            matched = _match_nested(rule, child)
        elif isinstance(rule, list):
            matched = _match_leaf(rule, child)
        else:
            raise FilterError(f"{key}: must be an object or an array, got {_json_type(rule)}")
        if not matched:
            return False
    return True


def _match_nested(rule: Mapping[str, Any], child: Any) -> bool:
    if isinstance(child, (list, tuple)):
        objects = [element for element in _flatten(child) if isinstance(element, Mapping)]
        if objects:
            return any(_match_object(rule, element) for element in objects)
    return _match_object(rule, child)


def _flatten(values: Sequence[Any]) -> Iterator[Any]:
    for value in values:
        if isinstance(value, (list, tuple)):
            yield from _flatten(value)
        else:
            yield value


def _leaf_values(child: Any) -> list[Any]:
    """The scalar values at a leaf path; empty when the path holds nothing a leaf can match."""
    if child is _MISSING or isinstance(child, Mapping):
        return []
    if isinstance(child, (list, tuple)):
        return [value for value in _flatten(child) if not isinstance(value, Mapping)]
    return [child]


def _match_leaf(rule: list[Any], child: Any) -> bool:
    values = _leaf_values(child)
    if not values:
        return any(_is_absent_matcher(matcher) for matcher in rule)
    return any(_match_value(matcher, value) for matcher in rule for value in values)


def _is_absent_matcher(matcher: Any) -> bool:
    return isinstance(matcher, Mapping) and matcher.get("exists", True) is False


def _decimal(value: Any) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(value))


def _as_number(value: Any) -> Decimal | None:
    """A record value as a number when it is a JSON number; None for anything else.

    Strings never count, even numeric ones: DynamoDB's ``N`` values arrive as strings
    and Lambda's filtering does not compare them as numbers.
    """
    if not _is_number(value):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return _decimal(value)


def _equals(expected: Any, value: Any) -> bool:
    if isinstance(expected, bool) or expected is None:
        return value is expected
    if isinstance(expected, str):
        return isinstance(value, str) and value == expected
    number = _as_number(value)
    return number is not None and number == _decimal(expected)


def _compare(op: str, number: Decimal, bound: Any) -> bool:
    limit = _decimal(bound)
    if op == "=":
        return number == limit
    if op == "<":
        return number < limit
    if op == "<=":
        return number <= limit
    if op == ">":
        return number > limit
    if op == ">=":
        return number >= limit
    raise FilterError(f"numeric: unknown operator {op!r}")


def _match_value(matcher: Any, value: Any) -> bool:
    if not isinstance(matcher, Mapping):
        return _equals(matcher, value)
    if len(matcher) != 1:
        raise FilterError(f"a matcher object has exactly one key, got {sorted(matcher)}")
    ((kind, argument),) = matcher.items()
    if kind == "exists":
        return argument is True
    if kind == "prefix":
        return isinstance(value, str) and value.startswith(argument)
    if kind == "suffix":
        return isinstance(value, str) and value.endswith(argument)
    if kind == "equals-ignore-case":
        return isinstance(value, str) and value.casefold() == str(argument).casefold()
    if kind == "wildcard":
        return isinstance(value, str) and _wildcard_regex(argument).fullmatch(value) is not None
    if kind == "numeric":
        number = _as_number(value)
        if number is None:
            return False
        return all(
            _compare(argument[i], number, argument[i + 1]) for i in range(0, len(argument), 2)
        )
    if kind == "anything-but":
        if isinstance(argument, Mapping):
            prefix = argument.get("prefix")
            return not (isinstance(value, str) and value.startswith(str(prefix)))
        excluded = argument if isinstance(argument, list) else [argument]
        return not any(_equals(item, value) for item in excluded)
    raise FilterError(f"unknown matcher {kind!r}; use one of {', '.join(MATCHERS)}")
