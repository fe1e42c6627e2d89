"""Strict JSON parsing (pure): standard JSON (RFC 8259) and nothing else.

``json.loads`` accepts more than JSON: the bare constants ``NaN``,
``Infinity`` and ``-Infinity``, and numbers too large for a float (``1e400``),
which it silently turns into infinity. Values like these have no JSON
spelling, cannot be answered back, and compare in surprising ways (a token
whose ``exp`` is ``Infinity`` never expires). Everything the handlers read
from outside (client messages, token payloads) goes through ``loads`` here.

``loads(text, exact=True)`` keeps numbers exact: a number with a fraction or
an exponent becomes a ``Decimal`` holding every digit the text has (a double
holds about 17, and DynamoDB's ``N`` up to 38), so a client's filter compares
by the value it wrote. ``dumps`` writes such values back as JSON text with
those digits (``json.dumps`` cannot write a ``Decimal``).
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any


class InvalidJson(ValueError):
    """The text is not standard JSON; the message says why (for logs and error replies)."""


def _refuse_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson(f"number out of range: {text[:40]}")
    return value


def _exact_number(text: str) -> Decimal:
    _finite_float(text)  # the same range as without ``exact``: 1e400 is refused either way
    return Decimal(text)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise InvalidJson(f"duplicate object key {key[:40]!r}")
        found[key] = value
    return found


def loads(text: str | bytes, *, exact: bool = False, unique_keys: bool = False) -> Any:
    """Parse ``text`` as standard JSON, or raise ``InvalidJson``.

    Refused besides what ``json.loads`` refuses: ``NaN``, ``Infinity``,
    ``-Infinity`` anywhere, numbers beyond a float's range, and nesting too
    deep for the parser (which would otherwise raise ``RecursionError``).
    Integers are ``int`` (exact); other numbers are ``float``, or with
    ``exact`` a ``Decimal`` with every digit of the text. With ``unique_keys``,
    an object naming a key twice is refused too (``json.loads`` keeps the last,
    so two readers of one text could disagree: what JWTs must not allow).
    """
    parse_float = _exact_number if exact else _finite_float
    hook = _unique if unique_keys else None
    try:
        return json.loads(
            text, parse_constant=_refuse_constant, parse_float=parse_float, object_pairs_hook=hook
        )
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except ValueError as bad:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise InvalidJson(str(bad)) from None


def _write(value: Any, out: list[str], depth: int, ascii: bool = True) -> None:
    if depth > 512:
        raise ValueError("nested too deeply to write")
    if isinstance(value, str) or value is None or isinstance(value, (bool, int)):
        out.append(json.dumps(value, ensure_ascii=ascii))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no JSON spelling")
        out.append(str(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no JSON spelling")
        out.append(repr(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, not {type(key).__name__}")
            out.append(("," if index else "") + json.dumps(key, ensure_ascii=ascii) + ":")
            _write(item, out, depth + 1, ascii)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out, depth + 1, ascii)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any, *, ascii: bool = True) -> str:
    """Compact JSON text for a parsed JSON value, ``Decimal`` numbers with every digit
    (``str(Decimal)`` is valid JSON for a finite number: ``1.10``, ``1E+400``).

    Like ``json.dumps(value, separators=(",", ":"), allow_nan=False)`` otherwise
    (non-ASCII escaped unless ``ascii=False``); raises ``ValueError``/``TypeError``
    for what has no JSON.
    """
    out: list[str] = []
    _write(value, out, 0, ascii)
    return "".join(out)
