"""A subscription's local view: its current items by key, kept from snapshots and changes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from realtime_client.events import Kind

Item = dict[str, Any]


def key_text(keys: Mapping[str, Any]) -> str:
    """One text per key, whatever the attributes' order: the view's index."""
    return json.dumps(dict(keys), sort_keys=True, separators=(",", ":"), default=str)


class View:
    """The items a subscription sees now, by key.

    Changes carry their item's ``keys``; snapshot pages carry whole items, whose key
    attributes the client does not know until it has seen one change's ``keys`` for the
    table (or until ``key_names`` is given to ``subscribe``). Until then snapshot items are
    held unindexed: they are in ``items()`` and ``len()``, ``get`` cannot find them, and a
    refetch compares them by value. The first change for the table indexes them."""

    def __init__(
        self, key_names: Sequence[str] | None = None, partial_names: Sequence[str] = ()
    ) -> None:
        self._names: tuple[str, ...] | None = tuple(key_names) if key_names else None
        self._partial = tuple(partial_names)
        self._items: dict[str, Item] = {}
        self._unindexed: list[Item] = []
        self.truncated: set[str] = set()
        """Key texts of items known only by their keys (too large to send): read them."""

    # -- reading -------------------------------------------------------------------------------

    @property
    def key_names(self) -> tuple[str, ...] | None:
        return self._names

    def items(self) -> list[Item]:
        """Every current item (keys only for truncated ones)."""
        return [*self._items.values(), *self._unindexed]

    def get(self, keys: Mapping[str, Any]) -> Item | None:
        """The item with these key attributes, or None."""
        return self._items.get(key_text(keys))

    def __len__(self) -> int:
        return len(self._items) + len(self._unindexed)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items())

    def __contains__(self, keys: object) -> bool:
        return isinstance(keys, Mapping) and key_text(keys) in self._items

    # -- updating (the client calls these) -----------------------------------------------------

    def learn(self, names: Iterable[str]) -> None:
        """The table's key attributes (from a change's ``keys``): index held snapshot items."""
        if self._names is not None:
            return
        self._names = tuple(sorted(names))
        held, self._unindexed = self._unindexed, []
        for item in held:
            self._items[key_text(self._keys_of(item))] = item

    def apply(self, kind: Kind, keys: Mapping[str, Any], data: Mapping[str, Any] | None) -> None:
        """Apply one change: ``removed`` drops the item, else ``data`` (or, truncated, the
        keys alone) becomes the item."""
        self.learn(keys)
        text = key_text(keys)
        if kind == "removed":
            self._items.pop(text, None)
            self.truncated.discard(text)
        elif data is None:
            self._items[text] = dict(keys)
            self.truncated.add(text)
        else:
            self._items[text] = dict(data)
            self.truncated.discard(text)

    def replace(
        self, items: Sequence[Mapping[str, Any]], truncated: Sequence[Mapping[str, Any]] = ()
    ) -> list[tuple[Kind, dict[str, Any], Item | None]]:
        """Make a snapshot the whole view; returns the ``(kind, keys, data)`` changes that
        turn the previous view into it (all ``added`` the first time)."""
        for keys in truncated:
            self.learn(keys)
        new_items = [dict(item) for item in items]
        if self._names is None:  # identity unknown: compare by value, index later
            old = self._unindexed
            changes: list[tuple[Kind, dict[str, Any], Item | None]] = [
                ("removed", self._partial_keys(item), None) for item in old if item not in new_items
            ]
            changes += [
                ("added", self._partial_keys(item), item) for item in new_items if item not in old
            ]
            self._unindexed = new_items
            return changes
        fresh: dict[str, Item] = {key_text(self._keys_of(item)): item for item in new_items}
        fresh_truncated = {key_text(keys): dict(keys) for keys in truncated}
        for text, keys in fresh_truncated.items():
            fresh.setdefault(text, keys)
        changes = []
        for text, item in self._items.items():
            if text not in fresh:
                changes.append(("removed", self._keys_of(item), None))
        for text, item in fresh.items():
            data = None if text in fresh_truncated else item
            if text not in self._items:
                changes.append(("added", self._keys_of(item), data))
            elif self._items[text] != item or text in fresh_truncated:
                changes.append(("modified", self._keys_of(item), data))
        self._items = fresh
        self.truncated = set(fresh_truncated)
        return changes

    def _keys_of(self, item: Mapping[str, Any]) -> dict[str, Any]:
        names = self._names or ()
        return {name: item[name] for name in names if name in item}

    def _partial_keys(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self._partial if name in item}
