"""The subscription filter language: validation, evaluation on typed images, ``change_seen``."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.filters import (
    MAX_CONDITIONS,
    MAX_FILTER_BYTES,
    MAX_GROUPS,
    InvalidFilter,
    change_seen,
    filter_attributes,
    matches,
    parse_filter,
)

ITEM = {
    "PK": {"S": "ORDER#1"},
    "status": {"S": "paid"},
    "total": {"N": "20.50"},
    "big": {"N": "12345678901234567890"},
    "vip": {"BOOL": True},
    "note": {"NULL": True},
    "tags": {"SS": ["a", "b"]},
    "sizes": {"NS": ["1", "2.5"]},
    "list": {"L": [{"S": "x"}, {"N": "7"}]},
    "address": {"M": {"city": {"S": "Lyon"}, "geo": {"M": {"zip": {"S": "69001"}}}}},
}


def ok(filter_: Any, image: Any = ITEM) -> bool:
    return matches(parse_filter(filter_), image)


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_", "fragment"),
    [
        ([], "non-empty list"),
        ({"status": "paid"}, "non-empty list"),
        ([{}], "non-empty object"),
        (["status"], "non-empty object"),
        ([{"status": {"like": "p%"}}], "unknown operator 'like'"),
        ([{"status": {}}], "empty condition"),
        ([{"status": ["paid", "ready"]}], 'use {"in"'),
        ([{"": "x"}], "1-255 characters"),
        ([{"a..b": "x"}], "empty part"),
        ([{".".join(["a"] * 33): "x"}], "deeper than 32"),
        ([{"total": {"gt": True}}], "string or a number"),
        ([{"total": {"between": [5]}}], "between takes [low, high]"),
        ([{"total": {"between": [5, "9"]}}], "two strings or two numbers"),
        ([{"total": {"between": [9, 5]}}], "low bound is above"),
        ([{"status": {"in": []}}], "list of 1 to 100"),
        ([{"status": {"in": list(range(101))}}], "list of 1 to 100"),
        ([{"status": {"beginsWith": ""}}], "non-empty string"),
        ([{"status": {"contains": None}}], "string or a number"),
        ([{"status": {"exists": "yes"}}], "true or false"),
        ([{"status": {"eq": {"nested": 1}}}], "string, number, boolean or null"),
        ([{"total": {"gt": float("inf")}}], "not JSON"),
        ([{"total": {"gt": Decimal("NaN")}}], "not JSON"),
    ],
)
def test_bad_filters_are_refused_with_a_reason(filter_: Any, fragment: str) -> None:
    with pytest.raises(InvalidFilter) as refused:
        parse_filter(filter_)
    assert fragment in str(refused.value)


def test_group_and_condition_limits() -> None:
    parse_filter([{"a": 1}] * MAX_GROUPS)
    with pytest.raises(InvalidFilter, match="groups; the limit is 5"):
        parse_filter([{"a": 1}] * (MAX_GROUPS + 1))
    parse_filter([{f"a{i}": 1 for i in range(MAX_CONDITIONS)}])
    with pytest.raises(InvalidFilter, match="11 conditions; the limit is 10"):
        parse_filter([{f"a{i}": 1 for i in range(MAX_CONDITIONS + 1)}])
    # Each operator counts as a condition.
    with pytest.raises(InvalidFilter, match="conditions; the limit"):
        parse_filter([{f"a{i}": {"gt": 1, "lt": 9} for i in range(6)}])


def test_exact_numbers_count_as_the_digits_the_client_sent() -> None:
    number = Decimal("12345678901234567890.5")
    text = json.dumps([{"a": ""}], separators=(",", ":"))
    value = "x" * (MAX_FILTER_BYTES - len(text) - len(',"n":') - len(str(number)))
    parse_filter([{"a": value, "n": number}])
    with pytest.raises(InvalidFilter, match="limit is 4096"):
        parse_filter([{"a": value + "x", "n": number}])


def test_filter_size_limit_in_bytes_of_json() -> None:
    value = "x" * (MAX_FILTER_BYTES - len(json.dumps([{"a": ""}], separators=(",", ":"))))
    parse_filter([{"a": value}])
    with pytest.raises(InvalidFilter, match="bytes of JSON; the limit is 4096"):
        parse_filter([{"a": value + "é"}])


def test_no_filter_is_an_empty_filter_that_matches_every_item() -> None:
    assert parse_filter(None) == ()
    assert matches((), ITEM)
    assert not matches((), None)


def test_filter_attributes_are_the_top_level_names() -> None:
    compiled = parse_filter([{"address.city": "Lyon", "total": {"gt": 1}}, {"vip": True}])
    assert filter_attributes(compiled) == {"address", "total", "vip"}


# -- evaluation ---------------------------------------------------------------------------


def test_numbers_compare_by_exact_decimal_value() -> None:
    assert ok([{"total": 20.5}])
    assert ok([{"total": Decimal("20.500")}])
    assert ok([{"big": Decimal("12345678901234567890")}])
    assert not ok([{"big": 12345678901234567891}])
    assert not ok([{"big": float(12345678901234567890)}])  # the float is 12345678901234567168
    assert ok([{"total": {"between": [20, 21]}, "big": {"gt": 2**63}}])


def test_types_never_coerce() -> None:
    assert not ok([{"total": "20.50"}])
    assert not ok([{"status": {"gt": 5}}])
    assert not ok([{"vip": 1}])
    assert ok([{"vip": True}])
    assert ok([{"vip": {"ne": 1}}])  # True is not the number 1
    assert ok([{"big": {"ne": "12345678901234567890"}}])
    assert not ok([{"total": {"between": ["a", "z"]}}])


def test_equality_on_each_scalar_type() -> None:
    assert ok([{"status": "paid", "vip": True, "note": None, "total": 20.5}])
    assert not ok([{"note": False}])


def test_missing_attribute_fails_every_operator_but_exists_false() -> None:
    for condition in ({"eq": 1}, {"ne": 1}, {"lt": 1}, {"in": [1]}, {"beginsWith": "a"}):
        assert not ok([{"absent": condition}]), condition
    assert not ok([{"absent": {"exists": True}}])
    assert ok([{"absent": {"exists": False}}])
    assert ok([{"note": {"exists": True}}])  # NULL is present, as in DynamoDB


def test_ordering_operators() -> None:
    assert ok([{"total": {"gt": 20, "lt": 21, "ge": 20.5, "le": 20.5}}])
    assert not ok([{"total": {"gt": 20.5}}])
    assert ok([{"status": {"gt": "paic", "lt": "paie"}}])
    assert ok([{"status": {"between": ["paid", "paid"]}}])


def test_in_ne_begins_with_contains() -> None:
    assert ok([{"status": {"in": ["ready", "paid"]}}])
    assert not ok([{"status": {"in": ["ready"]}}])
    assert ok([{"status": {"ne": "ready"}}])
    assert not ok([{"status": {"ne": "paid"}}])
    assert ok([{"PK": {"beginsWith": "ORDER#"}}])
    assert not ok([{"total": {"beginsWith": "20"}}])
    assert ok([{"status": {"contains": "ai"}}])
    assert ok([{"tags": {"contains": "b"}}])
    assert ok([{"sizes": {"contains": 2.50}}])
    assert not ok([{"sizes": {"contains": "1"}}])
    assert ok([{"list": {"contains": 7}}])
    assert not ok([{"list": {"contains": "7"}}])


def test_nested_paths_walk_maps_only() -> None:
    assert ok([{"address.city": "Lyon"}])
    assert ok([{"address.geo.zip": {"beginsWith": "69"}}])
    assert not ok([{"address.geo.zip.more": {"exists": True}}])
    assert not ok([{"status.inner": {"exists": True}}])


def test_groups_are_alternatives_and_conditions_all_hold() -> None:
    assert ok([{"status": "ready"}, {"vip": True}])
    assert not ok([{"status": "paid", "vip": False}])


def test_malformed_values_in_an_image_match_nothing_instead_of_raising() -> None:
    bad = {"total": {"N": "not a number"}, "odd": {"X": 1}, "two": {"S": "a", "N": "1"}}
    assert not ok([{"total": {"gt": 1}}], bad)
    assert not ok([{"odd": 1}], bad)
    assert not ok([{"two": "a"}], bad)


# -- change_seen ----------------------------------------------------------------------------

PAID = {"PK": {"S": "1"}, "status": {"S": "paid"}}
READY = {"PK": {"S": "1"}, "status": {"S": "ready"}}
ONLY_PAID = parse_filter([{"status": "paid"}])


@pytest.mark.parametrize(
    ("compiled", "event", "old", "new", "seen"),
    [
        ((), "INSERT", None, PAID, "added"),
        ((), "MODIFY", PAID, READY, "modified"),
        ((), "MODIFY", None, READY, "modified"),  # NEW_IMAGE stream: no old image
        ((), "REMOVE", PAID, None, "removed"),
        ((), "REMOVE", None, None, "removed"),  # NEW_IMAGE stream: no old image
        (ONLY_PAID, "INSERT", None, PAID, "added"),
        (ONLY_PAID, "INSERT", None, READY, None),
        (ONLY_PAID, "MODIFY", READY, PAID, "added"),
        (ONLY_PAID, "MODIFY", PAID, PAID, "modified"),
        (ONLY_PAID, "MODIFY", PAID, READY, "removed"),
        (ONLY_PAID, "MODIFY", READY, READY, None),
        (ONLY_PAID, "MODIFY", None, PAID, "modified"),
        (ONLY_PAID, "MODIFY", None, READY, None),
        (ONLY_PAID, "REMOVE", PAID, None, "removed"),
        (ONLY_PAID, "REMOVE", READY, None, None),
    ],
)
def test_change_as_seen_through_a_filter(
    compiled: Any, event: str, old: Any, new: Any, seen: str | None
) -> None:
    assert change_seen(compiled, event, old, new) == seen


# -- property: the evaluator agrees with a reference over plain values --------------------------

MISSING = object()
scalars = st.one_of(
    st.sampled_from(["", "a", "ab", "b", "é", "paid"]),
    st.decimals(min_value=-100, max_value=100, places=2, allow_nan=False),
    st.booleans(),
    st.none(),
)
names = st.sampled_from(["a", "b", "c"])
plain_values = st.recursive(
    scalars, lambda inner: st.dictionaries(names, inner, max_size=3), max_leaves=6
)
plain_items = st.dictionaries(names, plain_values, max_size=3)


def typed(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if value is None:
        return {"NULL": True}
    if isinstance(value, Decimal):
        return {"N": str(value)}
    if isinstance(value, str):
        return {"S": value}
    return {"M": {name: typed(inner) for name, inner in value.items()}}


def kind(value: Any) -> type | None:
    return None if value is None else type(value)


def reference(op: str, operand: Any, value: Any) -> bool:
    if op == "exists":
        return (value is not MISSING) == operand
    if value is MISSING:
        return False
    if isinstance(value, dict):  # a map is present but equals no scalar
        return op == "ne"
    same = kind(value) == kind(operand)
    if op == "eq":
        return same and value == operand
    if op == "ne":
        return not (same and value == operand)
    if op == "in":
        return any(kind(value) == kind(o) and value == o for o in operand)
    if op == "beginsWith":
        return isinstance(value, str) and value.startswith(operand)
    if op == "contains":
        return isinstance(value, str) and isinstance(operand, str) and operand in value
    if op == "between":
        return kind(value) == kind(operand[0]) and operand[0] <= value <= operand[1]
    if not same or operand is None or isinstance(operand, bool):
        return False
    return {
        "lt": value < operand,
        "le": value <= operand,
        "gt": value > operand,
        "ge": value >= operand,
    }[op]


def get(item: dict[str, Any], path: list[str]) -> Any:
    value: Any = item
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


ordered = st.one_of(
    st.sampled_from(["", "a", "ab", "b"]),
    st.decimals(min_value=-100, max_value=100, places=1, allow_nan=False),
)
conditions = st.one_of(
    st.tuples(st.sampled_from(["eq", "ne"]), scalars),
    st.tuples(st.sampled_from(["lt", "le", "gt", "ge"]), ordered),
    st.tuples(st.just("in"), st.lists(scalars, min_size=1, max_size=3)),
    st.tuples(st.just("beginsWith"), st.sampled_from(["a", "p", "é"])),
    st.tuples(st.just("contains"), st.sampled_from(["a", "b", "ai"])),
    st.tuples(st.just("exists"), st.booleans()),
    st.tuples(
        st.just("between"),
        st.one_of(
            st.tuples(st.sampled_from(["", "a"]), st.sampled_from(["ab", "b"])),
            st.tuples(
                st.decimals(min_value=-100, max_value=0, places=1, allow_nan=False),
                st.decimals(min_value=0, max_value=100, places=1, allow_nan=False),
            ),
        ).map(list),
    ),
)
paths = st.lists(names, min_size=1, max_size=3)
groups = st.lists(st.tuples(paths, conditions), min_size=1, max_size=4)


@settings(max_examples=400, deadline=None)
@given(item=plain_items, alternatives=st.lists(groups, min_size=1, max_size=3))
def test_evaluation_agrees_with_a_reference_over_plain_values(
    item: dict[str, Any], alternatives: list[list[tuple[list[str], tuple[str, Any]]]]
) -> None:
    raw = []
    expected = False
    for group in alternatives:
        spelled: dict[str, Any] = {}
        for path, (op, operand) in group:
            spelled.setdefault(".".join(path), {})[op] = operand
        raw.append(spelled)
        holds = True
        for joined, ops in spelled.items():
            value = get(item, joined.split("."))
            for op, operand in ops.items():
                operand = tuple(operand) if op == "between" else operand
                holds = holds and reference(op, operand, value)
        expected = expected or holds
    image = {name: typed(value) for name, value in item.items()}
    assert matches(parse_filter(raw), image) is expected
