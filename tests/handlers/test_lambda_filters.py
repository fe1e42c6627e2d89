"""Lambda event filtering of DynamoDB stream records (handlers.lambda_filters), as the
emulator and the broadcaster apply it."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from components.sources import SourceFilter, filter_pattern
from handlers.lambda_filters import FilterError, check_pattern, matches, matches_any, parse_pattern

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/items/stream/2026-01-01T00:00:00.000"
NEW_IMAGE: dict[str, Any] = {
    "id": {"S": "item-1"},
    "status": {"S": "active"},
    "priority": {"N": "7"},
    "tags": {"SS": ["a", "b"]},
    "flag": {"BOOL": True},
    "nothing": {"NULL": True},
}


def record(
    event_name: str = "INSERT",
    new_image: dict[str, Any] | None = None,
    old_image: dict[str, Any] | None = None,
    **new_attributes: Any,
) -> dict[str, Any]:
    """A Lambda-shaped stream record; keyword arguments override NewImage attributes."""
    image = copy.deepcopy(NEW_IMAGE if new_image is None else new_image)
    image.update(new_attributes)
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": 1795000000.0,
        "Keys": {"id": {"S": "item-1"}},
        "SequenceNumber": "100000000000000000001",
        "SizeBytes": 12,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if event_name != "REMOVE":
        dynamodb["NewImage"] = image
    if event_name != "INSERT":
        dynamodb["OldImage"] = copy.deepcopy(NEW_IMAGE if old_image is None else old_image)
    return {
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM_ARN,
        "dynamodb": dynamodb,
    }


def on_new(attribute: str, rule: Any) -> dict[str, Any]:
    """A pattern on one NewImage attribute, validated the way the emulator loads it."""
    return parse_pattern(json.dumps({"dynamodb": {"NewImage": {attribute: rule}}}))


# --- literals, AND and OR ----------------------------------------------------------


def test_event_name_list_matches_listed_names_only() -> None:
    pattern = parse_pattern('{"eventName": ["INSERT", "MODIFY"]}')

    assert matches(pattern, record("INSERT"))
    assert matches(pattern, record("MODIFY"))
    assert not matches(pattern, record("REMOVE"))


def test_new_image_string_value_matches() -> None:
    assert matches(on_new("status", {"S": ["active"]}), record())


def test_new_image_string_value_mismatch() -> None:
    assert not matches(on_new("status", {"S": ["active"]}), record(status={"S": "archived"}))


def test_string_literal_is_case_sensitive() -> None:
    assert not matches(on_new("status", {"S": ["Active"]}), record())


def test_remove_record_without_new_image_never_matches_a_new_image_rule() -> None:
    pattern = on_new("status", {"S": ["active"]})

    assert matches(pattern, record("MODIFY"))
    assert not matches(pattern, record("REMOVE"))


def test_leaf_matchers_are_ored() -> None:
    pattern = on_new("status", {"S": ["pending", "active"]})

    assert matches(pattern, record())
    assert not matches(pattern, record(status={"S": "archived"}))


def test_keys_are_anded() -> None:
    pattern = parse_pattern(
        json.dumps(
            {
                "eventName": ["INSERT"],
                "dynamodb": {"NewImage": {"status": {"S": ["active"]}, "flag": {"BOOL": [True]}}},
            }
        )
    )

    assert matches(pattern, record())
    assert not matches(pattern, record("MODIFY"))
    assert not matches(pattern, record(status={"S": "archived"}))
    assert not matches(pattern, record(flag={"BOOL": False}))


def test_or_primitive_ors_sub_patterns() -> None:
    pattern = parse_pattern(
        json.dumps(
            {
                "dynamodb": {
                    "NewImage": {
                        "$or": [
                            {"status": {"S": ["archived"]}},
                            {"priority": {"N": ["7"]}},
                        ]
                    }
                }
            }
        )
    )

    assert matches(pattern, record())
    assert matches(pattern, record(status={"S": "archived"}, priority={"N": "2"}))
    assert not matches(pattern, record(priority={"N": "2"}))


def test_boolean_literal_matches_bool_only() -> None:
    pattern = on_new("flag", {"BOOL": [True]})

    assert matches(pattern, record())
    assert not matches(pattern, record(flag={"BOOL": False}))
    assert not matches(pattern, record(flag={"BOOL": 1}))
    assert not matches(on_new("flag", {"N": [1]}), record(flag={"N": True}))


def test_null_literal_matches_a_present_null_only() -> None:
    pattern = on_new("note", [None])

    assert matches(pattern, record(note=None))
    assert not matches(pattern, record())
    assert not matches(pattern, record(note="null"))


def test_number_literal_never_equals_an_n_string() -> None:
    # DynamoDB numbers arrive as strings ({"N": "7"}); as on AWS, only a string matches them.
    assert not matches(on_new("priority", {"N": [7]}), record())
    assert not matches(on_new("priority", {"N": [7.0]}), record(priority={"N": "7.0"}))
    assert matches(on_new("priority", {"N": ["7"]}), record())


def test_number_literal_equals_a_json_number_by_value() -> None:
    assert matches(parse_pattern('{"dynamodb": {"SizeBytes": [12.0]}}'), record())
    assert not matches(parse_pattern('{"dynamodb": {"SizeBytes": [13]}}'), record())


def test_number_literal_equals_a_json_number() -> None:
    assert matches(parse_pattern('{"dynamodb": {"SizeBytes": [12]}}'), record())


def test_string_literal_does_not_equal_a_json_number() -> None:
    assert not matches(parse_pattern('{"dynamodb": {"SizeBytes": ["12"]}}'), record())


def test_untyped_rule_does_not_match_a_typed_attribute() -> None:
    # {"status": {"S": "active"}} is an object, not a leaf value: the "S" level is required.
    assert not matches(on_new("status", ["active"]), record())


# --- numeric --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("numeric", "value", "expected"),
    [
        ([">", 5], 7, True),
        ([">", 5], 5, False),
        ([">=", 5], 5, True),
        (["<", 5], 5, False),
        (["<=", 5], 5, True),
        (["=", 7], 7.0, True),
        (["=", 7], 7.5, False),
        ([">", 0, "<=", 10], 10, True),
        ([">", 0, "<=", 10], 0, False),
        ([">=", 0, "<", 10], 0, True),
        ([">=", 0, "<", 10], 10, False),
        ([">", -1.5, "<", 1e3], -1.25, True),
        ([">", 100, "<", 1e4], 1e3, True),
    ],
)
def test_numeric_range_on_json_numbers(numeric: list[Any], value: Any, expected: bool) -> None:
    pattern = parse_pattern(json.dumps({"dynamodb": {"SizeBytes": [{"numeric": numeric}]}}))
    item = record()
    item["dynamodb"]["SizeBytes"] = value

    assert matches(pattern, item) is expected


@pytest.mark.parametrize(
    ("numeric", "value"),
    [
        ([">", 5], "7"),
        ([">=", 5], "5"),
        (["=", 7], "7"),
        ([">", 0, "<=", 10], "10"),
        ([">", -1.5, "<", 1e3], "-1.25"),
        (["<", 1e4], "1E+3"),
    ],
)
def test_numeric_never_matches_a_dynamodb_n_value(numeric: list[Any], value: str) -> None:
    # As on AWS: N values arrive as strings and `numeric` applies to JSON numbers only.
    pattern = on_new("priority", {"N": [{"numeric": numeric}]})

    assert not matches(pattern, record(priority={"N": value}))


def test_numeric_matches_json_numbers() -> None:
    pattern = parse_pattern('{"dynamodb": {"SizeBytes": [{"numeric": [">", 10, "<", 13]}]}}')

    assert matches(pattern, record())


@pytest.mark.parametrize("value", ["seven", "", "nan", "Infinity", "1_000", " 7", True, None])
def test_numeric_never_matches_non_numeric_values(value: Any) -> None:
    pattern = on_new("priority", {"N": [{"numeric": [">", 0]}]})

    assert not matches(pattern, record(priority={"N": value}))


# --- string matchers ------------------------------------------------------------------


def test_prefix() -> None:
    pattern = on_new("id", {"S": [{"prefix": "item-"}]})

    assert matches(pattern, record())
    assert not matches(pattern, record(id={"S": "order-1"}))


def test_suffix() -> None:
    pattern = on_new("id", {"S": [{"suffix": "-1"}]})

    assert matches(pattern, record())
    assert not matches(pattern, record(id={"S": "item-2"}))


def test_equals_ignore_case() -> None:
    pattern = on_new("status", {"S": [{"equals-ignore-case": "ACTIVE"}]})

    assert matches(pattern, record())
    assert not matches(pattern, record(status={"S": "inactive"}))


def test_wildcard_matches_any_run_of_characters() -> None:
    pattern = on_new("id", {"S": [{"wildcard": "it*-*"}]})

    assert matches(pattern, record())
    assert matches(pattern, record(id={"S": "it-"}))
    assert not matches(pattern, record(id={"S": "order-1"}))
    assert not matches(pattern, record(id={"S": "item1"}))


def test_wildcard_escaped_star_is_literal() -> None:
    pattern = on_new("id", {"S": [{"wildcard": "a\\*b"}]})

    assert matches(pattern, record(id={"S": "a*b"}))
    assert not matches(pattern, record(id={"S": "axb"}))


def test_string_matchers_ignore_non_strings() -> None:
    pattern = on_new("priority", {"N": [{"prefix": "7"}]})

    assert not matches(pattern, record(priority={"N": 7}))


# --- anything-but ---------------------------------------------------------------------


def test_anything_but_list() -> None:
    pattern = on_new("status", {"S": [{"anything-but": ["archived", "deleted"]}]})

    assert matches(pattern, record())
    assert not matches(pattern, record(status={"S": "deleted"}))


def test_anything_but_single_value() -> None:
    pattern = on_new("status", {"S": [{"anything-but": "archived"}]})

    assert matches(pattern, record())
    assert not matches(pattern, record(status={"S": "archived"}))


def test_anything_but_number_excludes_json_numbers_by_value() -> None:
    pattern = parse_pattern('{"dynamodb": {"SizeBytes": [{"anything-but": [12.0, 13]}]}}')

    assert not matches(pattern, record())
    assert matches(parse_pattern('{"dynamodb": {"SizeBytes": [{"anything-but": 7}]}}'), record())


def test_anything_but_number_never_excludes_an_n_string() -> None:
    pattern = on_new("priority", {"N": [{"anything-but": [7, 8]}]})

    assert matches(pattern, record(priority={"N": "7"}))


def test_anything_but_prefix() -> None:
    pattern = on_new("id", {"S": [{"anything-but": {"prefix": "tmp-"}}]})

    assert matches(pattern, record())
    assert not matches(pattern, record(id={"S": "tmp-1"}))


def test_anything_but_does_not_match_a_missing_field() -> None:
    pattern = on_new("owner", {"S": [{"anything-but": "nobody"}]})

    assert not matches(pattern, record())
    assert not matches(pattern, record("REMOVE"))


# --- exists ---------------------------------------------------------------------------


def test_exists_true_requires_the_field() -> None:
    pattern = on_new("status", {"S": [{"exists": True}]})

    assert matches(pattern, record())
    assert not matches(pattern, record(new_image={"id": {"S": "item-1"}}))


def test_exists_false_requires_the_field_absent() -> None:
    pattern = on_new("status", {"S": [{"exists": False}]})

    assert not matches(pattern, record())
    assert matches(pattern, record(new_image={"id": {"S": "item-1"}}))


def test_exists_false_matches_when_the_whole_image_is_missing() -> None:
    assert matches(on_new("status", {"S": [{"exists": False}]}), record("REMOVE"))


def test_exists_works_on_leaves_only() -> None:
    # As in AWS: "status" holds an object, so it is not a leaf and counts as absent.
    assert matches(on_new("status", [{"exists": False}]), record())
    assert not matches(on_new("status", [{"exists": True}]), record())


def test_exists_true_matches_a_null_value() -> None:
    assert matches(on_new("nothing", {"NULL": [{"exists": True}]}), record())


# --- arrays ---------------------------------------------------------------------------


def test_array_field_matches_when_any_element_matches() -> None:
    assert matches(on_new("tags", {"SS": ["b"]}), record())
    assert matches(on_new("tags", {"SS": [{"prefix": "a"}]}), record())
    assert not matches(on_new("tags", {"SS": ["c"]}), record())


def test_number_set_elements_never_match_numeric() -> None:
    pattern = on_new("scores", {"NS": [{"numeric": [">=", 90]}]})

    assert not matches(pattern, record(scores={"NS": ["12", "95"]}))
    assert matches(on_new("scores", {"NS": ["95"]}), record(scores={"NS": ["12", "95"]}))


def test_nested_rule_tries_each_object_of_a_list() -> None:
    pattern = on_new("items", {"L": {"S": ["b"]}})

    assert matches(pattern, record(items={"L": [{"S": "a"}, {"S": "b"}]}))
    assert not matches(pattern, record(items={"L": [{"S": "a"}, {"N": "2"}]}))


def test_empty_array_counts_as_absent() -> None:
    assert matches(on_new("tags", {"SS": [{"exists": False}]}), record(tags={"SS": []}))
    assert not matches(on_new("tags", {"SS": [{"exists": True}]}), record(tags={"SS": []}))


# --- matches_any ----------------------------------------------------------------------


def test_matches_any_with_no_patterns_passes_everything() -> None:
    assert matches_any([], record("REMOVE"))


def test_matches_any_ors_patterns() -> None:
    patterns = [
        parse_pattern('{"eventName": ["REMOVE"]}'),
        on_new("status", {"S": ["active"]}),
    ]

    assert matches_any(patterns, record("REMOVE"))
    assert matches_any(patterns, record("INSERT"))
    assert not matches_any(patterns, record("INSERT", status={"S": "archived"}))


# --- invalid patterns -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("not json", "not valid JSON"),
        ('["INSERT"]', "must be a JSON object"),
        ('"INSERT"', "must be a JSON object"),
        ("{}", "empty objects"),
        ('{"dynamodb": {}}', "dynamodb: empty objects"),
        ('{"eventName": "INSERT"}', "eventName: must be an object or a non-empty array"),
        ('{"eventName": 5}', "eventName: must be an object or a non-empty array"),
        ('{"eventName": []}', "eventName: empty arrays"),
        ('{"eventName": [["INSERT"]]}', "eventName[0]: a matcher must be"),
        ('{"a": [{"contains": "x"}]}', "unknown matcher 'contains'"),
        ('{"a": [{"cidr": "10.0.0.0/8"}]}', "unknown matcher 'cidr'"),
        ('{"a": [{"prefix": "x", "suffix": "y"}]}', "exactly one key"),
        ('{"a": [{}]}', "exactly one key"),
        ('{"a": [{"prefix": 5}]}', "a[0].prefix: must be a string"),
        ('{"a": [{"exists": "yes"}]}', "must be true or false"),
        ('{"a": [{"numeric": ["!=", 5]}]}', "unknown operator '!='"),
        ('{"a": [{"numeric": ["=>", 5]}]}', "unknown operator '=>'"),
        ('{"a": [{"numeric": [">", "5"]}]}', "must be a number"),
        ('{"a": [{"numeric": [">", true]}]}', "must be a number"),
        ('{"a": [{"numeric": [">", 5, "<"]}]}', "must be [op, n]"),
        ('{"a": [{"numeric": ">5"}]}', "must be [op, n]"),
        ('{"a": [{"numeric": ["<", 10, ">", 0]}]}', "a range is"),
        ('{"a": [{"numeric": [">", 10, "<", 10]}]}', "must be below its top"),
        ('{"a": [{"anything-but": []}]}', "must not be empty"),
        ('{"a": [{"anything-but": ["x", 1]}]}', "all strings or all numbers"),
        ('{"a": [{"anything-but": true}]}', "all strings or all numbers"),
        ('{"a": [{"anything-but": {"suffix": "x"}}]}', "only object form"),
        ('{"a": [{"anything-but": {"prefix": ""}}]}', "non-empty string"),
        ('{"a": [{"wildcard": "a**b"}]}', "consecutive '*'"),
        ('{"a": [{"wildcard": "a\\\\b"}]}', "backslash may only escape"),
        ('{"a": [NaN]}', "NaN"),
        ('{"a": [1e999]}', "out of range"),
        ('{"a": ["x"], "a": ["y"]}', "repeats the key 'a'"),
        ('{"$or": [{"a": ["x"]}]}', "at least 2 objects"),
        ('{"$or": [{"a": ["x"]}, "b"]}', "$or[1]: must be an object"),
    ],
)
def test_invalid_patterns_raise_filter_error(text: str, complaint: str) -> None:
    with pytest.raises(FilterError, match=re.escape(complaint)):
        parse_pattern(text)


def test_filter_error_is_a_value_error() -> None:
    assert issubclass(FilterError, ValueError)


def test_parse_pattern_returns_the_pattern() -> None:
    text = '{"dynamodb": {"NewImage": {"status": {"S": ["active", {"prefix": "act"}]}}}}'

    assert parse_pattern(text) == json.loads(text)


def test_matches_rejects_an_unknown_matcher_it_meets() -> None:
    with pytest.raises(FilterError, match="unknown matcher"):
        matches({"eventName": [{"contains": "INS"}]}, record())


# --- the component's patterns ---------------------------------------------------------

COMPONENT_CASES: list[tuple[SourceFilter, list[dict[str, Any]], list[dict[str, Any]]]] = [
    (
        SourceFilter(event_names=["INSERT", "MODIFY"]),
        [record("INSERT"), record("MODIFY")],
        [record("REMOVE")],
    ),
    (
        SourceFilter(new_image={"status": ["active", "pending"]}),
        [record(), record("MODIFY", status={"S": "pending"})],
        [record(status={"S": "archived"}), record("REMOVE")],
    ),
    (
        SourceFilter(event_names=("INSERT",), new_image={"priority": {"N": ["7", "8"]}}),
        [record(), record(priority={"N": "8"})],
        [record(priority={"N": "5"}), record("MODIFY"), record(priority={"S": "7"})],
    ),
    (
        SourceFilter(
            event_names=("INSERT", "MODIFY"),
            new_image={"status": {"S": ["active"]}, "flag": {"BOOL": [True]}},
        ),
        [record(), record("MODIFY")],
        [record(flag={"BOOL": False}), record(status={"S": "archived"})],
    ),
    (
        SourceFilter(new_image={"nothing": {"NULL": [True]}, "id": {"S": [{"prefix": "item-"}]}}),
        [record()],
        [record(new_image={"id": {"S": "item-1"}}), record(id={"S": "other"})],
    ),
]


@pytest.mark.parametrize(
    ("source_filter", "passing", "failing"),
    COMPONENT_CASES,
    ids=[f"filter{position}" for position in range(len(COMPONENT_CASES))],
)
def test_component_patterns_parse_and_match(
    source_filter: SourceFilter,
    passing: list[dict[str, Any]],
    failing: list[dict[str, Any]],
) -> None:
    pattern = parse_pattern(filter_pattern(source_filter))

    assert [matches(pattern, item) for item in passing] == [True] * len(passing)
    assert [matches(pattern, item) for item in failing] == [False] * len(failing)


def test_component_filters_of_one_source_are_ored() -> None:
    filters = [
        SourceFilter(event_names=["REMOVE"]),
        SourceFilter(new_image={"priority": {"N": ["7"]}}),
    ]
    patterns = [parse_pattern(filter_pattern(item)) for item in filters]

    assert matches_any(patterns, record("REMOVE"))
    assert matches_any(patterns, record("MODIFY"))
    assert not matches_any(patterns, record("MODIFY", priority={"N": "6"}))


def test_check_pattern_validates_a_pattern_already_read() -> None:
    pattern = {"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"s": {"S": ["a"]}}}}

    assert check_pattern(pattern) is pattern
    with pytest.raises(FilterError, match="must be a JSON object, got an array"):
        check_pattern([pattern])
    with pytest.raises(FilterError, match=re.escape("dynamodb.NewImage.s: empty arrays")):
        check_pattern({"dynamodb": {"NewImage": {"s": []}}})
