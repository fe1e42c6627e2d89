"""Strict JSON parsing (pure): standard JSON (RFC 8259) and nothing else.

``json.loads`` accepts more than JSON: the bare constants ``NaN``,
``Infinity`` and ``-Infinity``, and numbers too large for a float (``1e400``),
which it silently turns into infinity. Values like these have no JSON
spelling, cannot be answered back, and compare in surprising ways (a token
whose ``exp`` is ``Infinity`` never expires). Everything the handlers read
from outside (client messages, token payloads) goes through ``loads`` here.
"""

from __future__ import annotations

import json
import math
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


def loads(text: str | bytes) -> Any:
    """Parse ``text`` as standard JSON, or raise ``InvalidJson``.

    Refused besides what ``json.loads`` refuses: ``NaN``, ``Infinity``,
    ``-Infinity`` anywhere, numbers beyond a float's range, and nesting too
    deep for the parser (which would otherwise raise ``RecursionError``).
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except InvalidJson:
        raise
    except RecursionError:
        raise InvalidJson("nested too deeply") from None
    except ValueError as bad:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise InvalidJson(str(bad)) from None
