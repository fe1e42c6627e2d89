"""Strict JSON: standard JSON parses as json.loads parses it; nothing else does."""

import json
from decimal import Decimal
from typing import Any

import pytest

from handlers.strict_json import InvalidJson, dumps, loads


@pytest.mark.parametrize(
    "text",
    ['{"a": [1, 2.5, -0.0, 1e308, "x", true, null]}', "9007199254740993", '"NaN"', "[]"],
)
def test_standard_json_parses_as_json_loads_parses_it(text: str) -> None:
    assert loads(text) == json.loads(text)


def test_bytes_are_parsed_as_utf8() -> None:
    assert loads('{"sub": "é"}'.encode()) == {"sub": "é"}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("NaN", "NaN is not JSON"),
        ("[Infinity]", "Infinity is not JSON"),
        ('{"a": -Infinity}', "-Infinity is not JSON"),
        ("1e400", "number out of range"),
        ("-1e400", "number out of range"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("{", "Expecting"),
        (b"\xff", "codec"),
        ("1" * 5000, "digits"),  # beyond Python's int-to-str conversion limit
    ],
)
def test_everything_else_is_refused_saying_why(text: Any, says: str) -> None:
    with pytest.raises(InvalidJson, match=says):
        loads(text)


def test_invalid_json_is_a_value_error() -> None:
    assert issubclass(InvalidJson, ValueError)


# -- exact numbers (client messages: filters compare numbers by exact value) -----------------


def test_exact_keeps_every_digit_a_double_would_lose() -> None:
    parsed = loads('{"n": 12345678901234567890.5, "i": 12345678901234567890}', exact=True)

    assert parsed == {"n": Decimal("12345678901234567890.5"), "i": 12345678901234567890}
    assert loads("12345678901234567890.5") == 12345678901234567890.5  # a float without exact
    assert Decimal(repr(loads("12345678901234567890.5"))) != Decimal("12345678901234567890.5")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("NaN", "NaN is not JSON"),
        ("[Infinity]", "Infinity is not JSON"),
        ("1e400", "number out of range"),
        ("-1.5e400", "number out of range"),
        ("{", "Expecting"),
    ],
)
def test_exact_refuses_what_loads_refuses(text: str, says: str) -> None:
    with pytest.raises(InvalidJson, match=says):
        loads(text, exact=True)


@pytest.mark.parametrize(
    "text",
    [
        '[{"n":12345678901234567890.5,"m":{"between":[-0.0000001,1.10]}}]',
        '{"a":[1,2.5,-0.0,1E+308,"x\\u00e9\\"",true,null,{}],"b":[]}',
        "123456789012345678901234567890123456789.000",
    ],
)
def test_dumps_writes_exact_numbers_back_with_every_digit(text: str) -> None:
    parsed = loads(text, exact=True)

    written = dumps(parsed)

    assert loads(written, exact=True) == parsed
    assert json.loads(written, parse_float=Decimal) == parsed
    assert "12345678901234567890.5" in dumps(loads('{"n": 12345678901234567890.5}', exact=True))


def test_dumps_writes_what_json_dumps_writes_for_plain_values() -> None:
    value = {"s": "é\n", "l": [1, 2.5, True, False, None], "m": {"k": -3}}

    assert dumps(value) == json.dumps(value, separators=(",", ":"), allow_nan=False)


@pytest.mark.parametrize(
    "value", [Decimal("NaN"), Decimal("Infinity"), float("nan"), float("inf"), {1: 2}, {1, 2}]
)
def test_dumps_refuses_what_has_no_json(value: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        dumps(value)
