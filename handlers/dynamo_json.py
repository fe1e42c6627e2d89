"""DynamoDB attribute values -> plain JSON values.

The rule for numbers (one rule, everywhere):

* an integer whose magnitude is at most 2**53 - 1 becomes a JSON integer;
* any other number becomes a JSON number when a binary float holds exactly the
  same decimal value (``1.5``, ``0.1``, ``1e+125``);
* everything else (``12345678901234567890``, ``3.14159265358979323846``)
  becomes a string holding the exact decimal text DynamoDB stored.

So every JSON number a client receives means exactly what DynamoDB held, in
Python and in JavaScript alike, and no digit is ever lost. Sets become sorted
lists (strings by code point, numbers by value, binaries by bytes); binary
becomes standard base64 text.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1


class MalformedAttribute(ValueError):
    """An attribute value that is not valid DynamoDB JSON."""


def number_to_plain(text: str) -> int | float | str:
    """Convert a DynamoDB number (its decimal text) by the module's rule."""
    if not isinstance(text, str):
        raise MalformedAttribute(f"number must be a string of digits, got {type(text).__name__}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise MalformedAttribute(f"not a number: {text[:40]!r}") from None
    if not value.is_finite():
        raise MalformedAttribute(f"not a finite number: {text[:40]!r}")
    if value == value.to_integral_value() and abs(value) <= MAX_SAFE_INTEGER:
        return int(value)
    as_float = float(value)
    if Decimal(repr(as_float)) == value:
        return as_float
    return text


def _binary_to_plain(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, str):  # Lambda stream events carry binary already base64-encoded
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise MalformedAttribute("binary value is not valid base64") from None
        return value
    raise MalformedAttribute(f"binary must be bytes or base64 text, got {type(value).__name__}")


def _binary_sort_key(value: Any) -> bytes:
    try:
        if isinstance(value, str):
            return base64.b64decode(value, validate=True)
        return bytes(value)
    except (binascii.Error, ValueError, TypeError):
        raise MalformedAttribute("binary value is not valid base64 or bytes") from None


def _number_sort_key(value: Any) -> Decimal:
    try:
        return Decimal(value)
    except (InvalidOperation, TypeError):
        raise MalformedAttribute(f"not a number: {str(value)[:40]!r}") from None


def to_plain(attribute: Mapping[str, Any]) -> Any:
    """Convert one attribute value such as ``{"N": "1"}`` to a plain JSON value."""
    if not isinstance(attribute, Mapping) or len(attribute) != 1:
        raise MalformedAttribute(f"attribute value must be a one-key object, got {attribute!r:.80}")
    ((kind, value),) = attribute.items()
    if kind == "S":
        if not isinstance(value, str):
            raise MalformedAttribute("S value must be a string")
        return value
    if kind == "N":
        return number_to_plain(value)
    if kind == "BOOL":
        if not isinstance(value, bool):
            raise MalformedAttribute("BOOL value must be true or false")
        return value
    if kind == "NULL":
        return None
    if kind == "B":
        return _binary_to_plain(value)
    if kind == "M":
        return image_to_plain(value)
    if kind == "L":
        if not isinstance(value, list):
            raise MalformedAttribute("L value must be a list")
        return [to_plain(item) for item in value]
    if kind == "SS":
        _require_list(kind, value)
        return sorted(str(item) for item in value)
    if kind == "NS":
        _require_list(kind, value)
        return [number_to_plain(item) for item in sorted(value, key=_number_sort_key)]
    if kind == "BS":
        _require_list(kind, value)
        return [_binary_to_plain(item) for item in sorted(value, key=_binary_sort_key)]
    raise MalformedAttribute(f"unknown DynamoDB type {kind!r}")


def _require_list(kind: str, value: Any) -> None:
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise MalformedAttribute(f"{kind} value must be a list")


def image_to_plain(image: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a whole item (``NewImage``, ``Keys``, an ``M`` value) to a plain dict."""
    if not isinstance(image, Mapping):
        raise MalformedAttribute(f"item must be an object, got {type(image).__name__}")
    return {str(name): to_plain(value) for name, value in image.items()}
