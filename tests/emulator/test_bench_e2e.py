"""``bench.e2e`` under subscriptions: who should receive what, how deliveries are tallied, and
a small run through the real emulator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.e2e import FILTER, KEYED_ID, STATUSES, TABLE_ID, Plan, Tally
from handlers.filters import matches, parse_filter

ROOT = Path(__file__).resolve().parents[2]


def test_half_the_clients_watch_a_partition_and_half_the_table_with_a_filter() -> None:
    plan = Plan("P#", clients=6, partitions=2)
    assert [plan.subscribe(i) for i in range(4)] == [
        {"action": "subscribe", "id": KEYED_ID, "table": "events", "key": {"PK": "P#ROOM#0000"}},
        {"action": "subscribe", "id": TABLE_ID, "table": "events", "filter": FILTER},
        {"action": "subscribe", "id": KEYED_ID, "table": "events", "key": {"PK": "P#ROOM#0001"}},
        {"action": "subscribe", "id": TABLE_ID, "table": "events", "filter": FILTER},
    ]
    assert plan.subscribe(4)["key"] == {"PK": "P#ROOM#0000"}  # rooms wrap around


def test_every_client_has_something_to_receive_and_the_filter_drops_a_third() -> None:
    plan = Plan("P#", clients=500, partitions=20)
    groups, members = plan.expected(range(60))  # the default run: 2 writes/s for 30 s
    assert all(groups[name] for name in members)
    assert len(groups[TABLE_ID]) == 40
    assert sum(len(groups[name]) for name in members) == 250 * 3 + 250 * 40


def test_expected_items_are_what_the_handlers_filter_admits() -> None:
    """The plan's idea of the filter agrees with the filter language's evaluation."""
    plan = Plan("P#", clients=2, partitions=3)
    parsed = parse_filter(FILTER)
    groups, _ = plan.expected(range(len(STATUSES) * 2))
    admitted = [
        plan.item_id(n) for n in range(len(STATUSES) * 2) if matches(parsed, plan.item(n, 1.0))
    ]
    assert groups[TABLE_ID] == admitted
    assert len(admitted) == 4


def delivery(item: str, sub_id: str, change: str, kind: str = "added") -> list[Any]:
    return [item, sub_id, kind, change, 0.05]


def test_the_tally_counts_lost_duplicates_and_unexpected_by_subscription_and_change() -> None:
    plan = Plan("P#", clients=2, partitions=1)
    # items 0, 1, 2: statuses new, paid, shipped; client 0 in the room sees all three,
    # client 1 (table-wide) the first two
    deliveries = {
        "0": [
            delivery("P#000000", KEYED_ID, "c0"),
            delivery("P#000000", KEYED_ID, "c0"),  # a duplicate
            delivery("P#000001", KEYED_ID, "c1"),  # P#000002 lost
        ],
        "1": [
            delivery("P#000000", TABLE_ID, "c0"),
            delivery("P#000001", TABLE_ID, "c1", kind="modified"),  # wrong kind
            delivery("P#000002", TABLE_ID, "c2"),  # outside its filter
        ],
    }
    tally = Tally(plan, range(3), deliveries, range(2))
    assert (tally.expected, tally.received) == (5, 6)
    assert (tally.lost, tally.duplicates, tally.unexpected) == (2, 1, 2)
    assert tally.clients_missing == 2
    assert len(tally.latencies) == 3

    clean = {
        "0": [delivery(f"P#00000{n}", KEYED_ID, f"c{n}") for n in range(3)],
        "1": [delivery(f"P#00000{n}", TABLE_ID, f"c{n}") for n in range(2)],
    }
    tally = Tally(plan, range(3), clean, range(2))
    assert (tally.lost, tally.duplicates, tally.unexpected) == (0, 0, 0)


@pytest.mark.slow
def test_a_small_run_delivers_everything_through_the_emulator() -> None:
    answer = subprocess.run(
        [sys.executable, "-m", "bench.e2e", "--clients", "8", "--duration", "2",
         "--partitions", "2", "--p50-ms", "5000", "--p99-ms", "5000"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stdout + answer.stderr
    out = answer.stdout
    assert "8 subscribed" in out, out
    # 4 items: 4 keyed clients on 2 rooms get 2 each, 4 table-wide ones 3 each (status
    # new, paid, shipped, new)
    assert re.search(r"^deliveries expected\s+20$", out, re.M), out
    for name in ("lost", "duplicates", "unexpected"):
        assert re.search(rf"^{name}\s+0$", out, re.M), out
    assert "0 connection records, 0 subscriptions left" in out, out


def test_table_subscriptions_watch_everything_without_a_filter() -> None:
    plan = Plan("P#", clients=3, partitions=2, subscriptions="table")
    assert [plan.subscribe(i) for i in range(3)] == [
        {"action": "subscribe", "id": TABLE_ID, "table": "events"}
    ] * 3
    groups, members = plan.expected(range(6))
    assert members == [TABLE_ID] * 3
    assert groups[TABLE_ID] == [plan.item_id(n) for n in range(6)]  # "shipped" too
    with pytest.raises(ValueError):
        Plan("P#", clients=1, partitions=1, subscriptions="some")


def test_the_tally_counts_an_item_received_after_a_later_one_as_reordered() -> None:
    plan = Plan("P#", clients=2, partitions=1, subscriptions="table")
    deliveries = {
        "0": [delivery(f"P#00000{n}", TABLE_ID, f"c{n}") for n in (0, 2, 1, 3)],  # 1 late
        "1": [
            delivery("P#000000", TABLE_ID, "c0"),
            delivery("P#000001", TABLE_ID, "c1"),
            delivery("P#000000", TABLE_ID, "c0"),  # a duplicate, not a reordering
            delivery("P#000002", TABLE_ID, "c2"),
            delivery("P#000003", TABLE_ID, "c3"),
        ],
    }
    tally = Tally(plan, range(4), deliveries, range(2))
    assert (tally.lost, tally.duplicates, tally.unexpected, tally.reordered) == (0, 1, 0, 1)
    assert plan.item_number("P#000012") == 12
    assert plan.item_number("Q#000012") is None


def test_an_earlier_phases_late_deliveries_are_stragglers_not_unexpected() -> None:
    plan = Plan("P#", clients=1, partitions=1, subscriptions="table")
    deliveries = {"0": [delivery("P#000001", TABLE_ID, "c1"), delivery("P#000005", TABLE_ID, "c5")]}
    tally = Tally(plan, range(5, 6), deliveries, range(1))
    assert (tally.stragglers, tally.unexpected, tally.lost, tally.reordered) == (1, 0, 0, 0)
