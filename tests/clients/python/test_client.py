"""The client's behaviour over time, on a fake clock against a fake server: backoff,
the state machine, heartbeat, the planned reconnect, resume with cursors, de-duplication,
token refresh, resets and refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from realtime_client import Change, RealtimeError, Reset

from tests.clients.python.fakes import START, FakeSocket, Rig, change, iso, make_token, run, settle


async def opened(rig: Rig, sockets: int = 1) -> FakeSocket:
    await rig.clock.advance(0)
    assert len(rig.server.sockets) == sockets, rig.errors
    return rig.server.last


async def reconnect(rig: Rig) -> FakeSocket:
    """Drop the current socket and let the client back off (at most ``backoff_max``)."""
    count = len(rig.server.sockets)
    rig.server.last.drop()
    await rig.clock.advance(rig.client.options.backoff_max)
    assert len(rig.server.sockets) == count + 1, rig.errors
    return rig.server.last


def record(into: list[Change]) -> Any:
    return into.append


# -- backoff and the state machine ----------------------------------------------------------


def test_failed_connects_back_off_exponentially_with_full_jitter_up_to_the_cap() -> None:
    async def test() -> None:
        rig = Rig(backoff_base=1.0, backoff_max=30.0)
        rig.random = 0.75
        rig.server.refuse = 7
        await rig.clock.advance(0)
        for _ in range(7):
            await rig.clock.advance(30)
        assert len(rig.server.sockets) == 1
        assert rig.clock.sleeps[:7] == [0.75 * c for c in (2, 4, 8, 16, 30, 30, 30)]
        assert rig.codes() == ["connect_failed"] * 7
        assert rig.states == ["connecting", "open"]
        await rig.client.close()

    run(test)


def test_a_stable_connection_resets_the_backoff_and_an_unstable_one_does_not() -> None:
    async def test() -> None:
        rig = Rig(backoff_base=1.0, backoff_max=60.0, stable_after=30.0)
        rig.random = 0.5

        def backoffs() -> list[float]:  # the other sleeps: heartbeat 300 s, planned ~6750 s
            return [delay for delay in rig.clock.sleeps if delay < 100]

        await opened(rig)
        await rig.clock.advance(31)  # stable
        for expected, sockets in ((0.5, 2), (1.0, 3), (2.0, 4)):
            rig.server.last.drop()  # the later ones right after opening: unstable
            await rig.clock.advance(expected)
            assert backoffs()[-1] == expected and len(rig.server.sockets) == sockets
        await rig.clock.advance(31)
        rig.server.last.drop()
        await rig.clock.advance(0.5)
        assert backoffs()[-1] == 0.5 and len(rig.server.sockets) == 5
        await rig.client.close()

    run(test)


def test_the_states_go_connecting_open_reconnecting_open_closed() -> None:
    async def test() -> None:
        rig = Rig()
        await opened(rig)
        assert rig.client.state == "open"
        await reconnect(rig)
        await rig.client.close()
        assert rig.states == ["connecting", "open", "reconnecting", "open", "closed"]
        assert rig.server.sockets[-1].closed == (1000, "client closed")
        with pytest.raises(RealtimeError) as closed:
            rig.client.subscribe("events")
        assert closed.value.code == "closed"

    run(test)


def test_max_attempts_gives_up_and_closes() -> None:
    async def test() -> None:
        rig = Rig(max_attempts=3)
        rig.server.refuse = 100
        for _ in range(5):
            await rig.clock.advance(60)
        assert rig.codes() == ["connect_failed"] * 3 + ["gave_up"]
        assert rig.states == ["connecting", "closed"]
        assert rig.server.refuse == 97

    run(test)


def test_the_token_function_is_called_for_every_socket_and_its_failure_is_reported() -> None:
    async def test() -> None:
        calls: list[str] = []

        async def token() -> str:
            calls.append("call")
            if len(calls) == 2:
                raise OSError("the identity provider is down")
            return make_token(START + 3600)

        rig = Rig(token=token)
        first = await opened(rig)
        assert first.url.startswith("ws://fake.invalid/dev?token=")
        first.drop()
        await rig.clock.advance(60)
        await rig.clock.advance(60)
        assert len(calls) == 3 and len(rig.server.sockets) == 2
        assert rig.codes() == ["token_failed"]
        await rig.client.close()

    run(test)


def test_a_token_function_that_never_answers_is_given_up_on_and_retried() -> None:
    async def test() -> None:
        calls: list[str] = []

        async def token() -> str:
            calls.append("call")
            if len(calls) == 1:
                await asyncio.Event().wait()  # a token endpoint that never answers
            return make_token(rig.clock.now + 3600)

        rig = Rig(token=token, request_timeout=10)
        await rig.clock.advance(10)
        assert rig.codes() == ["token_failed"], "a hanging token function stalled the client"
        assert "did not answer within 10 s" in str(rig.errors[0])
        await rig.clock.advance(60)
        assert len(calls) == 2 and len(rig.server.sockets) == 1
        assert rig.client.state == "open"
        await rig.client.close()

    run(test)


def test_a_refresh_whose_token_function_never_answers_is_tried_again() -> None:
    async def test() -> None:
        calls: list[str] = []

        async def token() -> str:
            calls.append("call")
            if len(calls) == 2:
                await asyncio.Event().wait()
            return make_token(rig.clock.now + 600)

        rig = Rig(token=token, token_refresh_margin=60, request_timeout=10)
        socket = await opened(rig)
        await rig.clock.advance(540)  # the refresh: its token call hangs
        assert len(calls) == 2
        await rig.clock.advance(10)
        assert rig.codes() == ["token_failed"]
        await rig.clock.advance(30)  # tried again, within the 50 s the token has left
        assert len(calls) == 3 and len(socket.actions("auth")) == 1
        await rig.client.close()

    run(test)


# -- heartbeat --------------------------------------------------------------------------------


def test_a_ping_goes_out_every_heartbeat_interval_below_the_idle_timeout() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        assert rig.client.options.heartbeat_interval < 600
        await rig.clock.advance(299)
        assert socket.actions("ping") == []
        await rig.clock.advance(1)
        assert socket.actions("ping") == [{"action": "ping", "id": 1}]
        await rig.clock.advance(300)
        assert [m["id"] for m in socket.actions("ping")] == [1, 2]
        assert socket.closed is None and len(rig.server.sockets) == 1
        await rig.client.close()

    run(test)


def test_a_missing_pong_replaces_the_socket_and_resumes() -> None:
    async def test() -> None:
        rig = Rig(heartbeat_interval=60, pong_timeout=10)
        socket = await opened(rig)
        sub = rig.client.subscribe("events")
        await settle()
        socket.push(change({sub.id: "added"}, 1))
        await settle()
        rig.server.answers.discard("ping")
        await rig.clock.advance(60 + 9)
        assert socket.closed is None
        await rig.clock.advance(1)
        assert socket.closed == (4000, "heartbeat timeout")
        assert "heartbeat_timeout" in rig.codes()
        await rig.clock.advance(60)
        resumed = rig.server.last.actions("subscribe")
        assert resumed == [
            {"action": "subscribe", "id": sub.id, "table": "events", "after": "c1.change-000001"}
        ]
        await rig.client.close()

    run(test)


# -- resume, holding back, de-duplication -------------------------------------------------------


def test_each_subscription_resumes_from_its_own_last_cursor_keyed_ones_with_snapshot() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        room = rig.client.subscribe("events", key={"PK": "ROOM#1"})
        everything = rig.client.subscribe("events", filter=[{"n": {"gt": 1}}])
        await settle()
        subscribed = {m["id"]: m for m in socket.actions("subscribe")}
        assert "after" not in subscribed[room.id] and "snapshot" not in subscribed[room.id]
        socket.push(change({room.id: "added", everything.id: "added"}, 1))
        socket.push(change({everything.id: "added"}, 2, pk="ROOM#2"))
        await settle()
        assert (room.cursor, everything.cursor) == ("c1.change-000001", "c1.change-000002")
        second = await reconnect(rig)
        again = {m["id"]: m for m in second.actions("subscribe")}
        assert again[room.id] == {
            "action": "subscribe",
            "id": room.id,
            "table": "events",
            "key": {"PK": "ROOM#1"},
            "after": "c1.change-000001",
            "snapshot": True,
        }
        assert again[everything.id] == {
            "action": "subscribe",
            "id": everything.id,
            "table": "events",
            "filter": [{"n": {"gt": 1}}],
            "after": "c1.change-000002",
        }
        await rig.client.close()

    run(test)


def test_live_changes_wait_for_resumed_replayed_ones_apply_at_once_and_repeats_are_dropped() -> (
    None
):
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        seen: list[Change] = []
        sub = rig.client.subscribe("events", on_change=seen.append)
        await settle()
        for n in (1, 2):
            socket.push(change({sub.id: "added"}, n))
        await settle()
        rig.server.answers.discard("subscribe")
        second = await reconnect(rig)
        assert second.actions("subscribe")[0]["after"] == "c1.change-000002"
        second.push({"type": "subscribed", "id": sub.id, "cursor": "c1.now"})
        second.push(change({sub.id: "added"}, 5))  # live, before the replay ends: held
        second.push(change({sub.id: "added"}, 2, replay=True))  # the overlap: a repeat
        second.push(change({sub.id: "added"}, 3, replay=True))
        await settle()
        assert [c.id for c in seen] == ["change-1", "change-2", "change-3"]
        assert sub.state == "syncing"
        second.push(change({sub.id: "added"}, 4, replay=True))
        second.push({"type": "resumed", "id": sub.id, "replayed": 3, "cursor": "c1.change-000004"})
        second.push(change({sub.id: "added"}, 5))  # the live one again: a repeat
        await settle()
        assert [c.id for c in seen] == [f"change-{n}" for n in (1, 2, 3, 4, 5)]
        assert [c.origin for c in seen] == ["live", "live", "replay", "replay", "live"]
        assert sub.state == "live" and sub.cursor == "c1.change-000005"
        assert sorted(item["n"] for item in sub.view) == [1, 2, 3, 4, 5]
        await rig.client.close()

    run(test)


def test_the_de_duplication_window_is_bounded() -> None:
    async def test() -> None:
        rig = Rig(dedup_window=2)
        socket = await opened(rig)
        seen: list[Change] = []
        sub = rig.client.subscribe("events", on_change=seen.append)
        await settle()
        for n in (1, 2, 2, 3, 1):  # the second 2 is in the window; 1 has left it
            socket.push(change({sub.id: "added"}, n))
        await settle()
        assert [c.id for c in seen] == ["change-1", "change-2", "change-3", "change-1"]
        await rig.client.close()

    run(test)


def test_one_message_matching_two_subscriptions_reaches_each_once() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        seen: list[Change] = []
        a = rig.client.subscribe("events", on_change=seen.append)
        b = rig.client.subscribe("events", key={"PK": "ROOM#1"}, on_change=seen.append)
        await settle()
        socket.push(change({a.id: "added", b.id: "modified", "gone": "added"}, 1))
        await settle()
        assert sorted((c.subscription_id, c.kind) for c in seen) == [
            (a.id, "added"),
            (b.id, "modified"),
        ]
        await rig.client.close()

    run(test)


# -- the planned reconnect ----------------------------------------------------------------------


def test_the_planned_reconnect_resumes_on_a_new_socket_before_closing_the_old() -> None:
    async def test() -> None:
        rig = Rig(max_connection_age=7200, planned_reconnect_margin=300)
        rig.random = 0.5  # planned at 7200 - 300 * 1.5 = 6750 s
        old = await opened(rig)
        seen: list[Change] = []
        sub = rig.client.subscribe("events", on_change=seen.append)
        await settle()
        old.push(change({sub.id: "added"}, 1))
        await rig.clock.advance(6749)
        assert len(rig.server.sockets) == 1
        rig.server.answers.discard("subscribe")
        await rig.clock.advance(1)
        new = await opened(rig, sockets=2)
        assert new.actions("subscribe")[0]["after"] == "c1.change-000001"
        assert old.closed is None  # still open while the new one resumes
        old.push(change({sub.id: "added"}, 2))  # from now on the resume delivers it
        new.push({"type": "subscribed", "id": sub.id, "cursor": "c1.now"})
        new.push(change({sub.id: "added"}, 2, replay=True))
        await settle()
        assert old.closed is None
        new.push({"type": "resumed", "id": sub.id, "replayed": 1, "cursor": "c1.change-000002"})
        await settle()
        assert old.closed == (1000, "planned reconnect")
        new.push(change({sub.id: "added"}, 3))
        await settle()
        assert [(c.id, c.origin) for c in seen] == [
            ("change-1", "live"),
            ("change-2", "replay"),
            ("change-3", "live"),
        ]
        assert rig.states == ["connecting", "open"]  # no gap, nothing to announce
        assert new.url != old.url  # a fresh token for the new socket
        await rig.client.close()

    run(test)


def test_the_planned_reconnect_closes_the_old_socket_after_the_handover_timeout() -> None:
    async def test() -> None:
        rig = Rig(max_connection_age=1000, planned_reconnect_margin=100, handover_timeout=20)
        rig.random = 0.0  # planned at 900 s
        old = await opened(rig)
        rig.client.subscribe("events")
        await settle()
        rig.server.answers.discard("subscribe")  # the new socket never answers
        await rig.clock.advance(900)
        await opened(rig, sockets=2)
        await rig.clock.advance(19)
        assert old.closed is None
        await rig.clock.advance(1)
        assert old.closed == (1000, "planned reconnect")
        await rig.client.close()

    run(test)


# -- token refresh -----------------------------------------------------------------------------


def test_the_token_is_refreshed_with_auth_before_it_expires() -> None:
    async def test() -> None:
        issued: list[str] = []

        def token() -> str:  # a plain function works too
            issued.append(make_token(rig.clock.now + 120))
            return issued[-1]

        rig = Rig(token=token, token_refresh_margin=30)
        socket = await opened(rig)
        assert rig.client.expires_at == START + 120
        await rig.clock.advance(89)
        assert socket.actions("auth") == []
        await rig.clock.advance(1)
        assert socket.actions("auth") == [{"action": "auth", "token": issued[1]}]
        assert rig.client.expires_at == START + 90 + 120
        await rig.clock.advance(90)
        assert len(socket.actions("auth")) == 2
        assert rig.errors == [] and len(rig.server.sockets) == 1
        await rig.client.close()

    run(test)


def test_a_refused_refresh_is_reported_with_the_servers_code() -> None:
    async def test() -> None:
        rig = Rig(token_refresh_margin=60)
        socket = await opened(rig)
        rig.server.answers.discard("auth")
        await rig.clock.advance(3600 - 60)
        assert len(socket.actions("auth")) == 1
        socket.push({"type": "error", "code": "invalid_token", "message": "refused"})
        await settle()
        (error,) = rig.errors
        assert (error.code, error.server, error.subscription_id) == ("invalid_token", True, None)
        await rig.client.close()

    run(test)


def test_an_opaque_token_has_its_expiry_asked_with_hello() -> None:
    async def test() -> None:
        rig = Rig(token="opaque-token", token_refresh_margin=60)
        rig.server.hello_expiry = START + 600
        socket = await opened(rig)
        assert socket.actions("hello") == [{"action": "hello"}]
        assert rig.client.expires_at == START + 600
        await rig.clock.advance(540)
        assert socket.actions("auth") == [{"action": "auth", "token": "opaque-token"}]
        await rig.client.close()

    run(test)


# -- snapshots and resets ------------------------------------------------------------------------


def test_a_snapshot_fills_the_view_and_live_changes_wait_for_its_last_page() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        rig.server.answers.discard("subscribe")
        seen: list[Change] = []
        sub = rig.client.subscribe(
            "events", key={"PK": "ROOM#1"}, snapshot=True, on_change=seen.append
        )
        await settle()
        assert socket.actions("subscribe")[0]["snapshot"] is True
        socket.push({"type": "subscribed", "id": sub.id, "cursor": "c1.s"})
        item = {"PK": "ROOM#1", "SK": "ITEM#1", "n": 1}
        socket.push(
            {"type": "snapshot", "id": sub.id, "items": [item], "more": True, "cursor": "c1.s"}
        )
        socket.push(change({sub.id: "modified"}, 1, value=11))
        await settle()
        assert [c.origin for c in seen] == [] and sub.state == "syncing"
        more = {"PK": "ROOM#1", "SK": "ITEM#2", "n": 2}
        socket.push(
            {"type": "snapshot", "id": sub.id, "items": [more], "more": False, "cursor": "c1.s"}
        )
        await settle()
        assert [(c.origin, c.kind) for c in seen] == [
            ("snapshot", "added"),
            ("snapshot", "added"),
            ("live", "modified"),
        ]
        assert sorted((i["SK"], i["n"]) for i in sub.view) == [("ITEM#1", 11), ("ITEM#2", 2)]
        assert (await sub.ready(timeout=1)) is sub
        await rig.client.close()

    run(test)


def test_a_resume_replays_repeats_into_the_view_in_order_without_telling_them_again() -> None:
    """The snapshot had ITEM#1, a live delete removed it; after a drop the server replays its
    overlap: ITEM#1's creation (older than the snapshot: no repeat by id) and the delete (a
    repeat). The view must end without ITEM#1, and the delete is told once."""

    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        rig.server.answers.discard("subscribe")
        seen: list[Change] = []
        sub = rig.client.subscribe(
            "events", key={"PK": "ROOM#1"}, snapshot=True, on_change=seen.append
        )
        await settle()
        socket.push({"type": "subscribed", "id": sub.id, "cursor": "c1.s"})
        item = {"PK": "ROOM#1", "SK": "ITEM#1", "n": 1}
        socket.push(
            {"type": "snapshot", "id": sub.id, "items": [item], "more": False, "cursor": "c1.s"}
        )
        socket.push(change({sub.id: "removed"}, 2, sk="ITEM#1"))
        await settle()
        assert list(sub.view) == []
        second = await reconnect(rig)
        second.push({"type": "subscribed", "id": sub.id, "cursor": "c1.now"})
        second.push(change({sub.id: "added"}, 1, replay=True))
        second.push(change({sub.id: "removed"}, 2, sk="ITEM#1", replay=True))
        second.push({"type": "resumed", "id": sub.id, "replayed": 2, "cursor": "c1.change-000002"})
        await settle()
        assert list(sub.view) == [], "a deleted item came back after the resume"
        assert [(c.kind, c.id, c.origin) for c in seen] == [
            ("added", None, "snapshot"),
            ("removed", "change-2", "live"),
            ("added", "change-1", "replay"),  # older than the snapshot: told once, as a replay
        ]
        await rig.client.close()

    run(test)


def test_a_reset_of_a_keyed_subscription_is_refetched_through_the_snapshot() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        seen: list[Change] = []
        resets: list[Reset] = []
        sub = rig.client.subscribe(
            "events", key={"PK": "ROOM#1"}, on_change=seen.append, on_reset=resets.append
        )
        await settle()
        for n in (1, 2):
            socket.push(change({sub.id: "added"}, n))
        await settle()
        rig.server.answers.discard("subscribe")
        second = await reconnect(rig)
        assert second.actions("subscribe")[0]["snapshot"] is True
        seen.clear()
        second.push({"type": "subscribed", "id": sub.id, "cursor": "c1.now"})
        second.push({"type": "reset", "id": sub.id, "reason": "cursor_expired", "cursor": "c1.now"})
        second.push(change({sub.id: "added"}, 9))  # live during the refetch: held
        items = [
            {"PK": "ROOM#1", "SK": "ITEM#2", "n": 20},
            {"PK": "ROOM#1", "SK": "ITEM#3", "n": 3},
        ]
        second.push(
            {"type": "snapshot", "id": sub.id, "items": items, "more": False, "cursor": "c1.now"}
        )
        await settle()
        assert resets == [Reset(sub.id, "cursor_expired", True, "c1.now")]
        assert sorted((c.kind, c.keys["SK"], c.origin) for c in seen) == [
            ("added", "ITEM#3", "snapshot"),
            ("added", "ITEM#9", "live"),
            ("modified", "ITEM#2", "snapshot"),
            ("removed", "ITEM#1", "snapshot"),
        ]
        assert sorted(i["SK"] for i in sub.view) == ["ITEM#2", "ITEM#3", "ITEM#9"]
        assert rig.errors == []
        await rig.client.close()

    run(test)


@pytest.mark.parametrize("listener", [True, False])
def test_a_reset_of_a_table_wide_subscription_goes_to_on_reset_else_to_on_error(
    listener: bool,
) -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        resets: list[Reset] = []
        sub = rig.client.subscribe("events", on_reset=resets.append if listener else None)
        await settle()
        socket.push(change({sub.id: "added"}, 1))
        await settle()
        rig.server.answers.discard("subscribe")
        second = await reconnect(rig)
        second.push({"type": "subscribed", "id": sub.id, "cursor": "c1.now"})
        second.push({"type": "reset", "id": sub.id, "reason": "replay_too_long", "cursor": "c1.r"})
        await settle()
        assert sub.state == "live" and sub.cursor == "c1.r"
        if listener:
            assert resets == [Reset(sub.id, "replay_too_long", False, "c1.r")]
            assert rig.errors == []
        else:
            (error,) = rig.errors
            assert (error.code, error.subscription_id) == ("reset", sub.id)
            assert "replay_too_long" in error.message
        await rig.client.close()

    run(test)


# -- refusals, errors, unsubscribe ---------------------------------------------------------


def test_a_forbidden_subscription_is_reported_through_the_error_callback_and_not_retried() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        rig.server.answers.discard("subscribe")
        mine: list[RealtimeError] = []
        sub = rig.client.subscribe("events", key={"PK": "USER#bob"}, on_error=mine.append)
        other = rig.client.subscribe("events", key={"PK": "USER#alice"})
        await settle()
        message = "this connection may not subscribe to that"
        socket.push({"type": "error", "code": "forbidden", "id": sub.id, "message": message})
        socket.push({"type": "subscribed", "id": other.id, "cursor": "c1.x"})
        await settle()
        (error,) = mine
        assert (error.code, error.subscription_id, error.server) == ("forbidden", sub.id, True)
        assert error.message == message and rig.errors == []
        assert sub.state == "failed" and sub.error is error
        with pytest.raises(RealtimeError) as raised:
            await sub.ready(timeout=1)
        assert raised.value.code == "forbidden"
        assert other.state == "live"
        second = await reconnect(rig)
        assert [m["id"] for m in second.actions("subscribe")] == [other.id]
        await rig.client.close()

    run(test)


def test_an_internal_error_on_subscribe_reconnects_and_subscribes_again() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        rig.server.answers.discard("subscribe")
        sub = rig.client.subscribe("events")
        await settle()
        socket.push({"type": "error", "code": "internal_error", "id": sub.id, "message": "x"})
        await settle()
        assert socket.closed is not None and rig.codes() == ["internal_error"]
        rig.server.answers.add("subscribe")
        await rig.clock.advance(60)
        assert len(rig.server.last.actions("subscribe")) == 1 and sub.state == "live"
        await rig.client.close()

    run(test)


def test_unsubscribe_tells_the_server_and_ends_the_iterator() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        sub = rig.client.subscribe("events")
        got: list[str | None] = []

        async def consume() -> None:
            async for item in sub:
                got.append(item.id)

        consumer = asyncio.ensure_future(consume())
        await settle()
        socket.push(change({sub.id: "added"}, 1))
        await settle()
        await sub()  # the unsubscribe function shape
        await settle()
        assert consumer.done() and got == ["change-1"]
        assert socket.actions("unsubscribe") == [{"action": "unsubscribe", "id": sub.id}]
        socket.push(change({sub.id: "added"}, 2))  # one already on its way: ignored
        await settle()
        assert got == ["change-1"] and sub.state == "closed"
        await rig.client.close()

    run(test)


def test_a_listener_that_raises_is_reported_and_delivery_goes_on() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        seen: list[str | None] = []

        def fragile(item: Change) -> None:
            seen.append(item.id)
            if item.id == "change-1":
                raise RuntimeError("bug in the application")

        sub = rig.client.subscribe("events", on_change=fragile)
        await settle()
        socket.push(change({sub.id: "added"}, 1))
        socket.push(change({sub.id: "added"}, 2))
        await settle()
        assert seen == ["change-1", "change-2"]
        assert rig.codes() == ["callback_failed"]
        await rig.client.close()

    run(test)


def test_timestamps_parse_as_the_server_writes_them() -> None:
    assert iso(START) == "2027-01-15T08:00:00.000Z"


def test_keep_items_false_delivers_changes_but_keeps_no_view() -> None:
    async def test() -> None:
        rig = Rig()
        socket = await opened(rig)
        seen: list[Change] = []
        sub = rig.client.subscribe("events", keep_items=False, on_change=seen.append)
        kept = rig.client.subscribe("events")
        await settle()
        socket.push(change({sub.id: "added", kept.id: "added"}, 1))
        await settle()
        assert [c.id for c in seen] == ["change-1"]
        assert len(sub.view) == 0 and len(kept.view) == 1
        await rig.client.close()

    run(test)


def test_giving_up_ends_iterators_with_the_reason() -> None:
    async def test() -> None:
        rig = Rig(max_attempts=2)
        socket = await opened(rig)
        sub = rig.client.subscribe("events")
        failure: list[RealtimeError] = []

        async def consume() -> None:
            try:
                async for _ in sub:
                    pass
            except RealtimeError as error:
                failure.append(error)

        consumer = asyncio.ensure_future(consume())
        rig.server.refuse = 100
        socket.drop()
        for _ in range(3):
            await rig.clock.advance(60)
        await consumer
        assert [e.code for e in failure] == ["gave_up"]
        assert rig.client.state == "closed" and sub.state == "failed"

    run(test)


def test_generated_ids_skip_ids_given_by_hand_and_an_id_in_use_is_refused() -> None:
    async def test() -> None:
        rig = Rig()
        await opened(rig)
        mine = rig.client.subscribe("events", id="s2")
        assert [rig.client.subscribe("events").id for _ in range(2)] == ["s1", "s3"]
        with pytest.raises(ValueError):
            rig.client.subscribe("events", id=mine.id)
        with pytest.raises(ValueError):
            rig.client.subscribe("events", snapshot=True)  # a snapshot needs a key
        await rig.client.close()

    run(test)
