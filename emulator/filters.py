"""Lambda event filtering, as the emulator's stream pollers apply a mapping's filters.

The matcher ships with the functions (``handlers.lambda_filters``: the broadcaster applies
a source's filters to each image of a record); the emulator uses that one implementation
and never re-implements it.
"""

from __future__ import annotations

from handlers.lambda_filters import FilterError, check_pattern, matches, matches_any, parse_pattern

__all__ = ["FilterError", "check_pattern", "matches", "matches_any", "parse_pattern"]
