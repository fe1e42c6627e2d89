"""Full-jitter exponential backoff (AWS Architecture Blog, "Exponential Backoff And Jitter")."""

from __future__ import annotations

from collections.abc import Callable


def full_jitter(attempt: int, *, base: float, cap: float, random: Callable[[], float]) -> float:
    """The delay before retry number ``attempt`` (0 for the first retry after a loss):
    uniform in ``[0, min(cap, base * 2**attempt))``; never negative, never above ``cap``."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = cap if attempt >= 64 else min(cap, base * (2.0**attempt))
    return max(0.0, min(ceiling, random() * ceiling))
