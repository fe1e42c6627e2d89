"""Who receives what: one message per connection, matches, trimming, owners, old images."""

from __future__ import annotations

import json
from typing import Any

import pytest

from handlers.filters import parse_filter
from handlers.recipients import Change, Subscription, owner_of, plan, subscription_of

KEYS = ("PK", "SK")
KEY = {"PK": {"S": "O#1"}, "SK": {"S": "A"}}


def image(**attributes: Any) -> dict[str, Any]:
    typed: dict[str, Any] = dict(KEY)
    for name, value in attributes.items():
        if isinstance(value, bool):
            typed[name] = {"BOOL": value}
        elif isinstance(value, (int, float)):
            typed[name] = {"N": str(value)}
        else:
            typed[name] = {"S": value}
    return typed


def change(event: str, old: Any = None, new: Any = None) -> Change:
    return Change(
        event_name=event,
        keys=KEY,
        old=old,
        new=new,
        envelope={"type": "event_update", "table": "orders", "id": "e1"},
    )


def sub(
    connection: str,
    sub_id: str = "s1",
    filter_: Any = None,
    fields: set[str] | None = None,
    user: str | None = "alice",
) -> Subscription:
    return Subscription(
        connection_id=connection,
        sub_id=sub_id,
        filter=parse_filter(filter_),
        fields=None if fields is None else frozenset(fields),
        user_id=user,
    )


def run(
    one: Change, subs: list[Subscription], target: str | None = None, old: bool = False
) -> dict[str, dict[str, Any]]:
    return plan(one, subs, key_names=KEYS, target_attribute=target, include_old=old)


PAID = image(status="paid", total=25, secret="x", owner="alice")
READY = image(status="ready", total=25, secret="x", owner="alice")


def test_one_message_per_connection_with_every_matching_subscription() -> None:
    out = run(change("INSERT", new=PAID), [sub("c1", "a"), sub("c1", "b"), sub("c2", "a")])
    assert set(out) == {"c1", "c2"}
    assert out["c1"]["matches"] == {"a": "added", "b": "added"}
    assert out["c1"]["data"]["status"] == "paid"
    assert out["c1"]["table"] == "orders" and out["c1"]["id"] == "e1"


def test_a_subscription_found_on_two_topics_counts_once() -> None:
    assert run(change("INSERT", new=PAID), [sub("c1"), sub("c1")])["c1"]["matches"] == {
        "s1": "added"
    }


def test_filters_say_added_modified_removed_and_removed_is_keys_only() -> None:
    only_paid = [sub("c1", filter_=[{"status": "paid"}])]
    assert run(change("MODIFY", READY, PAID), only_paid)["c1"]["matches"] == {"s1": "added"}
    assert run(change("MODIFY", PAID, PAID), only_paid)["c1"]["matches"] == {"s1": "modified"}
    left = run(change("MODIFY", PAID, READY), only_paid, old=True)["c1"]
    assert left["matches"] == {"s1": "removed"}
    assert "data" not in left and "old" not in left
    assert run(change("MODIFY", READY, READY), only_paid) == {}


def test_an_image_the_source_filters_leave_out_is_visible_to_no_subscription() -> None:
    subs = [sub("c1"), sub("c2", filter_=[{"total": {"gt": 20}}])]

    def seen(one: Change, old_visible: bool, new_visible: bool) -> dict[str, Any]:
        out = plan(
            one,
            subs,
            key_names=KEYS,
            target_attribute=None,
            include_old=True,
            old_visible=old_visible,
            new_visible=new_visible,
        )
        return {cid: message["matches"]["s1"] for cid, message in out.items()}

    modify = change("MODIFY", READY, PAID)
    assert seen(modify, True, True) == {"c1": "modified", "c2": "modified"}
    assert seen(modify, False, True) == {"c1": "added", "c2": "added"}  # entering
    assert seen(modify, True, False) == {"c1": "removed", "c2": "removed"}  # leaving
    assert seen(modify, False, False) == {}
    assert seen(change("REMOVE", old=PAID), False, False) == {}
    left = plan(modify, subs, key_names=KEYS, target_attribute=None, include_old=True,
                new_visible=False)["c1"]  # fmt: skip
    assert "data" not in left and "old" not in left  # keys only
    entered = plan(modify, subs, key_names=KEYS, target_attribute=None, include_old=True,
                   old_visible=False)["c1"]  # fmt: skip
    assert entered["data"]["status"] == "paid" and "old" not in entered  # not seen before


def test_deleted_items_are_removed_with_the_old_image_when_configured() -> None:
    out = run(change("REMOVE", old=PAID), [sub("c1")], old=True)["c1"]
    assert out["matches"] == {"s1": "removed"} and "data" not in out
    assert out["old"]["status"] == "paid"
    assert "old" not in run(change("REMOVE", old=PAID), [sub("c1")])["c1"]


def test_data_carries_the_union_of_the_fields_granted_to_matching_subscriptions() -> None:
    subs = [sub("c1", "a", fields={"status"}), sub("c1", "b", fields={"total"})]
    data = run(change("INSERT", new=PAID), subs)["c1"]["data"]
    assert data == {"PK": "O#1", "SK": "A", "status": "paid", "total": 25}


def test_fields_of_a_subscription_that_only_saw_removed_are_not_in_data() -> None:
    subs = [
        sub("c1", "a", fields={"status"}),
        sub("c1", "b", filter_=[{"status": "ready"}], fields={"secret"}),
    ]
    out = run(change("MODIFY", READY, PAID), subs)["c1"]
    assert out["matches"] == {"a": "modified", "b": "removed"}
    assert "secret" not in out["data"]


def test_trimmed_old_image() -> None:
    out = run(change("MODIFY", READY, PAID), [sub("c1", fields={"status"})], old=True)["c1"]
    assert out["old"] == {"PK": "O#1", "SK": "A", "status": "ready"}


def test_target_attribute_shows_items_to_their_owner_only() -> None:
    subs = [sub("c1", user="alice"), sub("c2", user="bob"), sub("c3", user=None)]
    assert set(run(change("INSERT", new=PAID), subs, target="owner")) == {"c1"}


@pytest.mark.parametrize("owner", [None, "", 7.5, True])
def test_an_item_naming_no_owner_reaches_no_one(owner: Any) -> None:
    item = image(status="paid") if owner is None else image(status="paid", owner=owner)
    if owner is True:
        item["owner"] = {"BOOL": True}
    subs = [sub("c1", user="alice"), sub("c2", user="7.5")]
    delivered = run(change("INSERT", new=item), subs, target="owner")
    assert delivered == ({"c2": delivered["c2"]} if owner == 7.5 else {})


def test_a_change_of_owner_tells_the_previous_owner_removed_and_gives_no_old_to_the_new() -> None:
    to_bob = image(status="paid", owner="bob")
    subs = [sub("c1", user="alice"), sub("c2", user="bob")]
    out = run(change("MODIFY", PAID, to_bob), subs, target="owner", old=True)
    assert out["c1"]["matches"] == {"s1": "removed"}
    assert "data" not in out["c1"] and "old" not in out["c1"]
    assert out["c2"]["matches"] == {"s1": "added"}
    assert out["c2"]["data"]["owner"] == "bob" and "old" not in out["c2"]


def test_without_an_old_image_a_modify_is_modified_and_a_remove_removed() -> None:
    assert run(change("MODIFY", None, PAID), [sub("c1")])["c1"]["matches"] == {"s1": "modified"}
    assert run(change("REMOVE", None, None), [sub("c1")])["c1"]["matches"] == {"s1": "removed"}


def test_owner_of_reads_strings_and_numbers_only() -> None:
    assert owner_of({"o": {"S": "alice"}}, "o") == "alice"
    assert owner_of({"o": {"N": "42"}}, "o") == "42"
    assert owner_of({"o": {"S": ""}}, "o") is None
    assert owner_of({"o": {"L": []}}, "o") is None
    assert owner_of({}, "o") is None
    assert owner_of(None, "o") is None


def test_subscription_of_a_stored_item() -> None:
    stored = {
        "connectionId": {"S": "c1"},
        "subId": {"S": "s1"},
        "filter": {"S": json.dumps([{"status": "paid"}])},
        "fields": {"L": [{"S": "status"}]},
        "userId": {"S": "alice"},
    }
    read = subscription_of(stored)
    assert read.filter == parse_filter([{"status": "paid"}])
    assert read.fields == frozenset({"status"}) and read.user_id == "alice"
    bare = subscription_of({"connectionId": {"S": "c1"}, "subId": {"S": "s1"}})
    assert bare.filter == () and bare.fields is None and bare.user_id is None
