from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handlers.dynamo_json import MalformedAttribute, image_to_plain, number_to_plain, to_plain
from tests.helpers import load_event


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("-7", -7),
        ("1.0", 1),
        ("1E+2", 100),
        ("9007199254740991", 9007199254740991),
        ("19.99", 19.99),
        ("0.1", 0.1),
        ("-0.5", -0.5),
        ("1E+125", 1e125),
    ],
)
def test_numbers_that_json_holds_exactly_become_json_numbers(text: str, expected: Any) -> None:
    converted = number_to_plain(text)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize("text", ["12345678901234567890", "3.14159265358979323846", "1E-130"])
def test_numbers_a_float_would_change_stay_exact_strings(text: str) -> None:
    converted = number_to_plain(text)
    if isinstance(converted, str):
        assert converted == text
    else:  # 1E-130 is representable; then it must be exactly equal
        assert Decimal(repr(converted)) == Decimal(text)


def test_integers_beyond_javascript_safe_range_are_not_json_integers() -> None:
    assert number_to_plain("12345678901234567891") == "12345678901234567891"
    assert not isinstance(number_to_plain("9007199254740993"), int)


def test_sample_item_converts_every_type() -> None:
    image = load_event("stream_batch")["Records"][0]["dynamodb"]["NewImage"]
    plain = image_to_plain(image)
    assert plain["title"] == "Launch été 🚀"
    assert plain["count"] == 42
    assert plain["price"] == 19.99
    assert plain["big"] == "12345678901234567890"
    assert plain["precise"] == "3.14159265358979323846"
    assert plain["blob"] == "AAECAwQ="
    assert plain["active"] is True
    assert plain["nothing"] is None
    assert plain["meta"] == {"tags": ["a", 1, False], "nested": {"deep": -0.5}}
    assert plain["list"] == ["x", None, {"k": "v"}]
    assert plain["labels"] == ["Mu", "alpha", "zeta"]
    assert plain["scores"] == [-2.5, 3, 10]
    assert plain["chunks"] == ["AQ==", "Ag=="]


def test_binary_from_boto3_bytes_becomes_base64_text() -> None:
    assert to_plain({"B": b"\x00\x01\xff"}) == "AAH/"
    assert to_plain({"BS": [b"\x02", b"\x01"]}) == ["AQ==", "Ag=="]


@pytest.mark.parametrize(
    ("attribute", "fragment"),
    [
        ({"X": "1"}, "unknown DynamoDB type"),
        ({"S": "a", "N": "1"}, "one-key object"),
        ({"N": "twelve"}, "not a number"),
        ({"N": "Infinity"}, "not a finite number"),
        ({"N": 12}, "must be a string"),
        ({"B": "not base64!"}, "not valid base64"),
        ({"BOOL": "true"}, "true or false"),
        ({"L": "x"}, "must be a list"),
        ({"M": ["x"]}, "must be an object"),
        ({"NS": ["1", "x"]}, "not a number"),
    ],
)
def test_malformed_values_raise_a_clear_error(attribute: dict[str, Any], fragment: str) -> None:
    with pytest.raises(MalformedAttribute, match=fragment):
        to_plain(attribute)


# --- property: every type round-trips through JSON text by value --------------------------

numbers = st.one_of(
    st.integers(min_value=-(10**37), max_value=10**37).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(
        min_value=-(10**20), max_value=10**20, places=12, allow_nan=False, allow_infinity=False
    ).map(str),
)
blobs = st.binary(max_size=32)
scalars = st.one_of(
    st.text(max_size=20).map(lambda s: {"S": s}),
    numbers.map(lambda n: {"N": n}),
    blobs.map(lambda b: {"B": b}),
    blobs.map(lambda b: {"B": base64.b64encode(b).decode()}),
    st.booleans().map(lambda b: {"BOOL": b}),
    st.just({"NULL": True}),
    st.sets(st.text(max_size=8), min_size=1, max_size=5).map(lambda s: {"SS": list(s)}),
    st.lists(numbers, min_size=1, max_size=5, unique_by=Decimal).map(lambda n: {"NS": n}),
    st.sets(blobs, min_size=1, max_size=5).map(lambda s: {"BS": list(s)}),
)
attributes = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: {"L": items}),
        st.dictionaries(st.text(max_size=8), inner, max_size=4).map(lambda m: {"M": m}),
    ),
    max_leaves=20,
)


def _raw_bytes(value: Any) -> bytes:
    return base64.b64decode(value) if isinstance(value, str) else bytes(value)


def _same_number(original: str, plain: Any) -> bool:
    if isinstance(plain, bool):
        return False
    if isinstance(plain, int):
        return Decimal(plain) == Decimal(original)
    if isinstance(plain, float):
        return Decimal(repr(plain)) == Decimal(original)
    return plain == original


def equivalent(attribute: dict[str, Any], plain: Any) -> bool:
    """An independent oracle: does ``plain`` hold the same value as ``attribute``?"""
    ((kind, value),) = attribute.items()
    if kind in ("S", "BOOL"):
        return plain == value and type(plain) is type(value)
    if kind == "NULL":
        return plain is None
    if kind == "N":
        return _same_number(value, plain)
    if kind == "B":
        return base64.b64decode(plain, validate=True) == _raw_bytes(value)
    if kind == "L":
        return len(plain) == len(value) and all(map(equivalent, value, plain))
    if kind == "M":
        return plain.keys() == value.keys() and all(equivalent(value[k], plain[k]) for k in value)
    if kind == "SS":
        return plain == sorted(value)
    if kind == "NS":
        ordered = sorted(value, key=Decimal)
        return len(plain) == len(value) and all(map(_same_number, ordered, plain))
    if kind == "BS":
        return [base64.b64decode(p) for p in plain] == sorted(_raw_bytes(v) for v in value)
    raise AssertionError(kind)


@settings(max_examples=300, deadline=None)
@given(attributes)
def test_every_type_round_trips_through_json_text(attribute: dict[str, Any]) -> None:
    text = json.dumps(to_plain(attribute), allow_nan=False)
    assert equivalent(attribute, json.loads(text))


@settings(max_examples=300, deadline=None)
@given(numbers)
def test_json_numbers_parse_back_to_the_exact_stored_value(text: str) -> None:
    plain = number_to_plain(text)
    if isinstance(plain, int):
        assert abs(plain) <= 2**53 - 1
    parsed = json.loads(json.dumps(plain))
    assert _same_number(text, parsed)
