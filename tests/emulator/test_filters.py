"""The emulator filters stream records with the matcher the functions ship (one implementation;
its tests are tests/handlers/test_lambda_filters.py)."""

from __future__ import annotations

import emulator.filters
import emulator.streams
import handlers.lambda_filters


def test_the_emulator_uses_the_handlers_matcher() -> None:
    for name in emulator.filters.__all__:
        assert getattr(emulator.filters, name) is getattr(handlers.lambda_filters, name), name
    assert emulator.streams.matches_any is handlers.lambda_filters.matches_any
    assert emulator.streams.parse_pattern is handlers.lambda_filters.parse_pattern
