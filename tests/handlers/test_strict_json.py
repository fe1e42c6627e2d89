"""Strict JSON: standard JSON parses as json.loads parses it; nothing else does."""

import json
from typing import Any

import pytest

from handlers.strict_json import InvalidJson, loads


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
