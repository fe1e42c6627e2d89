"""The client's pure parts: backoff, the de-duplication window, the view, token expiry."""

from __future__ import annotations

import pytest
from realtime_client import SeenWindow, View, full_jitter, token_expiry, with_token
from realtime_client.tokens import parse_time

from tests.clients.python.fakes import make_token


@pytest.mark.parametrize("attempt", range(12))
@pytest.mark.parametrize("draw", [0.0, 0.25, 0.999999])
def test_full_jitter_is_uniform_below_the_capped_exponential(attempt: int, draw: float) -> None:
    delay = full_jitter(attempt, base=1.0, cap=30.0, random=lambda: draw)
    ceiling = min(30.0, 2.0**attempt)
    assert delay == pytest.approx(draw * ceiling)
    assert 0.0 <= delay < ceiling or ceiling == delay == 0.0


def test_full_jitter_never_passes_the_cap_even_for_huge_attempts() -> None:
    assert full_jitter(10_000, base=1.0, cap=60.0, random=lambda: 0.999999) <= 60.0
    assert full_jitter(3, base=0.5, cap=60.0, random=lambda: 1.0) == 4.0
    with pytest.raises(ValueError):
        full_jitter(-1, base=1.0, cap=60.0, random=lambda: 0.5)


def test_the_seen_window_recognises_repeats_and_forgets_the_oldest_beyond_its_size() -> None:
    window = SeenWindow(3)
    assert [window.add(i) for i in ("a", "b", "a", "c")] == [True, True, False, True]
    assert window.add("d") is True  # "a" falls out: the window holds b, c, d
    assert len(window) == 3
    assert "a" not in window and "b" in window
    assert window.add("a") is True
    assert window.add("d") is False
    with pytest.raises(ValueError):
        SeenWindow(0)


def test_the_view_applies_added_modified_removed_by_key() -> None:
    view = View()
    view.apply("added", {"PK": "A", "SK": "1"}, {"PK": "A", "SK": "1", "n": 1})
    view.apply("added", {"SK": "2", "PK": "A"}, {"PK": "A", "SK": "2", "n": 2})
    view.apply("modified", {"PK": "A", "SK": "1"}, {"PK": "A", "SK": "1", "n": 10})
    view.apply("removed", {"PK": "A", "SK": "2"}, None)
    assert view.items() == [{"PK": "A", "SK": "1", "n": 10}]
    assert view.get({"SK": "1", "PK": "A"}) == {"PK": "A", "SK": "1", "n": 10}
    assert {"PK": "A", "SK": "2"} not in view
    view.apply("modified", {"PK": "A", "SK": "1"}, None)  # truncated: keys only, flagged
    assert view.get({"PK": "A", "SK": "1"}) == {"PK": "A", "SK": "1"}
    assert view.truncated


def test_a_snapshot_replacing_the_view_yields_the_changes_between_them() -> None:
    view = View(key_names=["PK", "SK"])
    first = view.replace([{"PK": "A", "SK": "1", "n": 1}, {"PK": "A", "SK": "2", "n": 2}])
    assert sorted((kind, keys["SK"]) for kind, keys, _ in first) == [("added", "1"), ("added", "2")]
    second = view.replace([{"PK": "A", "SK": "2", "n": 20}, {"PK": "A", "SK": "3", "n": 3}])
    assert sorted((kind, keys["SK"]) for kind, keys, _ in second) == [
        ("added", "3"),
        ("modified", "2"),
        ("removed", "1"),
    ]
    assert sorted(item["SK"] for item in view) == ["2", "3"]


def test_snapshot_items_wait_unindexed_until_a_change_names_the_key_attributes() -> None:
    view = View(partial_names=["PK"])
    changes = view.replace([{"PK": "A", "SK": "1", "n": 1}, {"PK": "A", "SK": "2", "n": 2}])
    assert [(kind, keys) for kind, keys, _ in changes] == [("added", {"PK": "A"})] * 2
    assert len(view) == 2 and view.get({"PK": "A", "SK": "1"}) is None
    view.apply("removed", {"PK": "A", "SK": "1"}, None)  # the first change teaches PK, SK
    assert view.key_names == ("PK", "SK")
    assert view.items() == [{"PK": "A", "SK": "2", "n": 2}]


def test_token_expiry_is_read_from_the_payload_and_opaque_tokens_give_none() -> None:
    assert token_expiry(make_token(1_900_000_000)) == 1_900_000_000.0
    assert token_expiry("opaque") is None
    assert token_expiry("!!!.sig") is None
    assert token_expiry(None) is None
    assert parse_time("2026-11-18T12:06:40.000Z") == 1_795_003_600.0
    assert parse_time(None) is None


def test_the_token_goes_in_the_query_replacing_one_already_there() -> None:
    assert with_token("ws://h:1/dev", "t.s") == "ws://h:1/dev?token=t.s"
    assert with_token("ws://h:1/dev?token=old&x=1", "new") == "ws://h:1/dev?x=1&token=new"
    assert with_token("ws://h:1/dev?user_id=u", None) == "ws://h:1/dev?user_id=u"


def test_a_change_answers_to_the_javascript_clients_names_too() -> None:
    from realtime_client import Change

    message = {
        "type": "event_update",
        "table": "events",
        "sequence": "42",
        "matches": {"s1": "modified", "s2": "added"},
    }
    live = Change("s1", "modified", {"PK": "A"}, {"PK": "A"}, "replay", "e1", message=message)
    assert (live.type, live.subscription, live.replay) == ("modified", "s1", True)
    assert live.matches == {"s1": "modified", "s2": "added"}
    assert (live.table, live.sequence) == ("events", "42")
    snapshot = Change("s2", "added", {"PK": "B"}, {"PK": "B"}, "snapshot")
    assert (snapshot.replay, snapshot.matches, snapshot.table) == (False, {"s2": "added"}, None)
