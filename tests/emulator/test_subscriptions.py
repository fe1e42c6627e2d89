"""Subscriptions end to end: the dev stack with stricter access rules (``sourceAccess``), run by
the emulator and driven by real WebSocket clients over 127.0.0.1.

Proof that something was *not* sent leans on stream order: the source has one shard, the
broadcaster handles its records one after another and the gateway keeps each connection's
messages in order, so when a client's first message is a change written *after* another one,
the earlier change was not sent to it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from handlers.connections import iso_utc
from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe, wait_for

RULES = [
    {"key": {"PK": "USER#{sub}"}},  # a user: their own partition (and any item in it), all fields
    {"table": True, "when": {"claims.role": "admin"}},  # admins: everything
    {"table": True, "when": {"claims.role": "support"}, "fields": ["status"]},  # trimmed
]
LIMIT = 5
FORBIDDEN = "this connection may not subscribe to that"
ADMIN = {"role": "admin"}
SUPPORT = {"role": "support"}


@pytest.fixture(scope="module")
def strict() -> Iterator[RunningEmulator]:
    """The dev stack with per-user rules for its table, old images in messages and a small
    subscription limit, all through stack config as `make dev ARGS="--config ..."` sets it."""
    yield from start(
        overrides={
            "sourceAccess": json.dumps(RULES),
            "includeOldImage": "true",
            "maxSubscriptions": str(LIMIT),
        }
    )


def write(local: RunningEmulator, pk: str, sk: str = "METADATA", **attributes: Any) -> None:
    item: dict[str, Any] = {"PK": {"S": pk}, "SK": {"S": sk}}
    for name, value in attributes.items():
        item[name] = {"N": str(value)} if isinstance(value, (int, Decimal)) else {"S": value}
    local.dynamodb().put_item(TableName=local.table(), Item=item)


def update(local: RunningEmulator, pk: str, **attributes: str) -> None:
    names = sorted(attributes)
    local.dynamodb().update_item(
        TableName=local.table(),
        Key={"PK": {"S": pk}, "SK": {"S": "METADATA"}},
        UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(names))),
        ExpressionAttributeNames={f"#a{i}": name for i, name in enumerate(names)},
        ExpressionAttributeValues={f":v{i}": {"S": attributes[n]} for i, n in enumerate(names)},
    )


def delete(local: RunningEmulator, pk: str) -> None:
    local.dynamodb().delete_item(
        TableName=local.table(), Key={"PK": {"S": pk}, "SK": {"S": "METADATA"}}
    )


def ask(client: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    client.send(json.dumps(message))
    return receive_json(client)


def silent(*clients: ClientConnection, seconds: float = 1.5) -> None:
    """Nothing arrives on these clients for a while (the records before were all handled)."""
    for client in clients:
        with pytest.raises(TimeoutError):
            client.recv(timeout=seconds)


def subscriptions_of(local: RunningEmulator, connection_id: str) -> list[dict[str, Any]]:
    return [i for i in local.subscriptions() if i["connectionId"]["S"] == connection_id]


def own_connection_id(local: RunningEmulator, before: set[str]) -> str:
    """The id of the one connection opened since ``before``."""
    (connection_id,) = wait_for(lambda: local.connection_ids() - before, what="the record")
    return str(connection_id)


# -- access: each user sees only their own partition ------------------------------------------


def test_two_users_each_see_only_their_own_partition(strict: RunningEmulator) -> None:
    with strict.connect("alice") as alice, strict.connect("bob") as bob:
        subscribe(alice, "mine", key={"PK": "USER#alice"})
        subscribe(bob, "mine", key={"PK": "USER#bob"})

        write(strict, "USER#bob", title="bob's first")
        write(strict, "USER#carol", title="carol's")
        write(strict, "USER#alice", title="alice's")
        write(strict, "USER#bob", "NOTE#2", title="bob's second")

        first = receive_json(alice)  # neither of bob's nor carol's came before it
        assert (first["keys"], first["matches"]) == (
            {"PK": "USER#alice", "SK": "METADATA"},
            {"mine": "added"},
        )
        assert first["data"]["title"] == "alice's"
        seen_by_bob = [receive_json(bob), receive_json(bob)]
        assert [m["data"]["title"] for m in seen_by_bob] == ["bob's first", "bob's second"]
        silent(alice, bob)


def test_an_unauthorised_subscription_gets_forbidden_and_nothing_else(
    strict: RunningEmulator,
) -> None:
    before = strict.connection_ids()
    with strict.connect("bob") as bob:
        bob_id = own_connection_id(strict, before)
        refusals = [
            ask(bob, {"action": "subscribe", "id": "peek", "table": "events", "key": key})
            for key in ({"PK": "USER#alice"}, {"PK": "USER#alice", "SK": "METADATA"})
        ]
        refusals.append(ask(bob, {"action": "subscribe", "id": "all", "table": "events"}))
        refusals.append(  # a filter does not make a table-wide subscription any narrower
            ask(
                bob,
                {
                    "action": "subscribe",
                    "id": "all",
                    "table": "events",
                    "filter": [{"PK": "USER#bob"}],
                },
            )
        )

        assert refusals == [
            {"type": "error", "code": "forbidden", "id": sub_id, "message": FORBIDDEN}
            for sub_id in ("peek", "peek", "all", "all")
        ]  # the same words whatever rule decided: no rule, claim or data in them
        assert subscriptions_of(strict, bob_id) == []
        write(strict, "USER#alice", title="not for bob")
        write(strict, "USER#x", title="nor this")
        silent(bob)


def test_a_claim_in_the_token_opens_what_the_rules_give_it(strict: RunningEmulator) -> None:
    with strict.connect("root", claims=ADMIN) as admin, strict.connect("eve") as eve:
        subscribe(admin, "all")  # table-wide: the admin rule
        # the claim must come from the verified token, never from the message
        eve.send(
            json.dumps(
                {
                    "action": "subscribe",
                    "id": "all",
                    "table": "events",
                    "claims": ADMIN,
                    "role": "admin",
                }
            )
        )
        assert receive_json(eve)["code"] == "forbidden"
        write(strict, "USER#anyone", title="for admins")
        message = receive_json(admin)
        assert message["keys"]["PK"] == "USER#anyone" and message["matches"] == {"all": "added"}
        silent(eve)


# -- filters: added / modified / removed as items enter and leave --------------------------------


def test_a_table_wide_filtered_subscriber_sees_items_enter_and_leave_its_filter(
    strict: RunningEmulator,
) -> None:
    paid_or_ready = [{"PK": {"beginsWith": "ORDER#"}, "status": {"in": ["paid", "ready"]}}]
    with strict.connect("root", claims=ADMIN) as admin:
        subscribe(admin, "open", filter=paid_or_ready)

        write(strict, "ORDER#1", status="new")  # outside: nothing
        update(strict, "ORDER#1", status="paid")  # enters
        update(strict, "ORDER#1", status="ready")  # stays
        write(strict, "ORDER#2", status="new")  # another item, outside: nothing
        update(strict, "ORDER#1", status="cancelled")  # leaves
        update(strict, "ORDER#1", status="paid")  # enters again
        delete(strict, "ORDER#1")  # gone

        seen = [receive_json(admin) for _ in range(5)]
        assert [(m["action"], m["matches"]) for m in seen] == [
            ("updated", {"open": "added"}),
            ("updated", {"open": "modified"}),
            ("updated", {"open": "removed"}),
            ("updated", {"open": "added"}),
            ("deleted", {"open": "removed"}),
        ]
        assert all(m["keys"] == {"PK": "ORDER#1", "SK": "METADATA"} for m in seen)
        assert [m.get("data", {}).get("status") for m in seen] == [
            "paid",
            "ready",
            None,
            "paid",
            None,
        ]
        left = seen[2]
        assert "data" not in left and "old" not in left  # leaving a filter: keys only
        assert seen[1]["old"]["status"] == "paid"  # includeOldImage: the image before
        assert seen[4]["old"]["status"] == "paid"  # a delete carries what was deleted
        silent(admin)


def test_filters_compare_numbers_by_exact_value(strict: RunningEmulator) -> None:
    exact = "12345678901234567890.5"  # more digits than a double holds
    with strict.connect("root", claims=ADMIN) as admin:
        admin.send(
            '{"action": "subscribe", "id": "n", "table": "events",'
            f' "filter": [{{"PK": {{"beginsWith": "NUM#"}}, "n": {exact}}}]}}'
        )
        reply = receive_json(admin)
        assert (reply["type"], reply["id"]) == ("subscribed", "n"), reply

        write(strict, "NUM#1", n=Decimal("12345678901234567890.4"))  # a double equals both
        write(strict, "NUM#2", n=Decimal("12345678901234567890"))
        write(strict, "NUM#3", n=Decimal(exact))

        message = receive_json(admin)
        assert message["keys"]["PK"] == "NUM#3"
        assert message["data"]["n"] == exact  # beyond a double: the exact decimal text
        silent(admin)


# -- fields: a rule that trims --------------------------------------------------------------------


def test_a_user_never_receives_a_field_a_rule_trims(strict: RunningEmulator) -> None:
    with strict.connect("sam", claims=SUPPORT) as support:
        refused = ask(
            support,
            {
                "action": "subscribe",
                "id": "probe",
                "table": "events",
                "filter": [{"secret": {"exists": True}}],
            },
        )
        assert refused["code"] == "invalid_subscription" and refused["id"] == "probe"
        assert "secret" in refused["message"]  # it named the field the client sent, no rule
        subscribe(support, "status", filter=[{"PK": {"beginsWith": "TRIM#"}}])

        write(strict, "TRIM#1", status="open", secret="s3cr3t", total=99)
        update(strict, "TRIM#1", status="closed", secret="still secret")

        created, updated = receive_json(support), receive_json(support)
        assert created["data"] == {"PK": "TRIM#1", "SK": "METADATA", "status": "open"}
        assert updated["data"] == {"PK": "TRIM#1", "SK": "METADATA", "status": "closed"}
        assert updated["old"] == {"PK": "TRIM#1", "SK": "METADATA", "status": "open"}
        for message in (created, updated):
            text = json.dumps(message)
            assert "s3cr3t" not in text and "still secret" not in text and "total" not in text


def test_one_message_per_connection_with_the_union_of_granted_fields(
    strict: RunningEmulator,
) -> None:
    with strict.connect("sam", claims=SUPPORT) as sam:
        subscribe(sam, "wide", filter=[{"PK": {"beginsWith": "USER#sam"}}])  # status only
        subscribe(sam, "own", key={"PK": "USER#sam"})  # own partition: every field

        write(strict, "USER#samuel", status="a", secret="hidden")  # only "wide" sees it
        write(strict, "USER#sam", status="b", secret="mine")  # both see it

        other = receive_json(sam)
        assert other["matches"] == {"wide": "added"}
        assert other["data"] == {"PK": "USER#samuel", "SK": "METADATA", "status": "a"}
        both = receive_json(sam)
        assert both["matches"] == {"own": "added", "wide": "added"}  # one message, two matches
        assert both["data"]["secret"] == "mine"  # the union: "own" grants every field
        silent(sam)


# -- lifecycle ------------------------------------------------------------------------------------


def test_unsubscribe_stops_delivery(strict: RunningEmulator) -> None:
    with strict.connect("una") as una:
        subscribe(una, "a", key={"PK": "USER#una"})
        subscribe(una, "b", key={"PK": "USER#una"}, filter=[{"kind": "note"}])
        subscribe(una, "sentinel", key={"PK": "USER#una", "SK": "SENTINEL"})

        write(strict, "USER#una", kind="note")
        assert receive_json(una)["matches"] == {"a": "added", "b": "added"}
        assert ask(una, {"action": "unsubscribe", "id": "a"}) == {
            "type": "unsubscribed",
            "id": "a",
        }
        write(strict, "USER#una", kind="note", n=2)
        assert receive_json(una)["matches"] == {"b": "modified"}
        assert ask(una, {"action": "unsubscribe", "id": "b"})["type"] == "unsubscribed"
        assert ask(una, {"action": "unsubscribe", "id": "b"}) == {
            "type": "unsubscribed", "id": "b",
        }  # fmt: skip  # again: idempotent

        write(strict, "USER#una", kind="note", n=3)  # no subscription left for this item
        write(strict, "USER#una", "SENTINEL", kind="sentinel")
        message = receive_json(una)  # the item's change was not sent before it
        assert (message["keys"]["SK"], message["matches"]) == ("SENTINEL", {"sentinel": "added"})


def test_disconnect_leaves_no_subscription_behind(strict: RunningEmulator) -> None:
    before = strict.connection_ids()
    with strict.connect("root", claims=ADMIN) as admin:
        connection_id = own_connection_id(strict, before)
        subscribe(admin, "table")
        subscribe(admin, "partition", key={"PK": "USER#dan"})
        subscribe(admin, "item", key={"PK": "USER#dan", "SK": "METADATA"})
        subscribe(admin, "filtered", filter=[{"status": "open"}])
        stored = subscriptions_of(strict, connection_id)
        assert sorted(i["subId"]["S"] for i in stored) == ["filtered", "item", "partition", "table"]
        assert len({i["topic"]["S"] for i in stored}) == 3  # both table-wide share a bucket
    wait_for(lambda: connection_id not in strict.connection_ids(), what="the record to go")
    wait_for(
        lambda: not subscriptions_of(strict, connection_id),
        what="every subscription of the closed connection to go",
    )


def test_the_subscription_limit_is_enforced_and_told_by_hello(strict: RunningEmulator) -> None:
    with strict.connect("lim") as client:
        hello = ask(client, {"action": "hello"})
        assert hello["limits"] == {"subscriptions": LIMIT}
        for number in range(LIMIT):
            subscribe(client, f"s{number}", key={"PK": "USER#lim", "SK": f"ITEM#{number}"})
        refused = ask(
            client,
            {"action": "subscribe", "id": "one-more", "table": "events", "key": {"PK": "USER#lim"}},
        )
        assert (refused["code"], refused["id"]) == ("too_many_subscriptions", "one-more")
        subscribe(client, "s0", key={"PK": "USER#lim"})  # replacing an id still works


def test_hello_answers_the_version_the_token_expiry_and_the_limits(
    strict: RunningEmulator,
) -> None:
    token = strict.token("hal", ttl=600)
    payload = token.split(".", 1)[0]
    expiry = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]
    from websockets.sync.client import connect

    with connect(f"{strict.emulator.url}?token={token}", open_timeout=20) as client:
        assert ask(client, {"action": "hello"}) == {
            "type": "hello",
            "version": 2,
            "expiresAt": iso_utc(expiry),
            "limits": {"subscriptions": LIMIT},
        }


def test_refusals_name_the_problem_and_store_nothing(strict: RunningEmulator) -> None:
    before = strict.connection_ids()
    with strict.connect("ivy") as client:
        connection_id = own_connection_id(strict, before)
        answers = {
            "unknown_table": {"table": "orders", "key": {"PK": "USER#ivy"}},
            "invalid_subscription": {"table": "events", "key": {"SK": "only the sort key"}},
            "snapshot": {"table": "events", "snapshot": True},  # table-wide: no snapshot
        }
        replies = {
            name: ask(client, {"action": "subscribe", "id": "x", **fields})
            for name, fields in answers.items()
        }
        assert replies["unknown_table"]["code"] == "unknown_table"
        assert replies["invalid_subscription"]["code"] == "invalid_subscription"
        assert replies["snapshot"]["code"] == "invalid_subscription"
        assert "snapshot needs a key" in replies["snapshot"]["message"]
        assert all(reply["id"] == "x" for reply in replies.values())
        assert subscriptions_of(strict, connection_id) == []
