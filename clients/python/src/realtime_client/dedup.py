"""A bounded window of the change ids one subscription has applied."""

from __future__ import annotations

from collections import deque


class SeenWindow:
    """Remembers the last ``size`` ids; ``add`` answers whether an id is new.

    A resume replays with an overlap (changes you already have), and delivery is at least
    once: within the window a repeat is recognised. The window is by count so memory is
    bounded whatever the rate; a repeat older than ``size`` ids is applied again (in order,
    which still ends at the right state, but its listener hears it twice)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the de-duplication window must hold at least one id")
        self.size = size
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def __contains__(self, change_id: object) -> bool:
        return change_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, change_id: str) -> bool:
        """Record ``change_id``; False when it is already in the window."""
        if change_id in self._ids:
            return False
        self._ids.add(change_id)
        self._order.append(change_id)
        while len(self._order) > self.size:
            self._ids.discard(self._order.popleft())
        return True
