"""Token lifetime end to end: the dev stack in the emulator, real WebSocket clients.

A connection whose token has expired receives no more changes and is closed; ``auth`` with
a fresh token for the same user extends it; another user's token changes nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe
from tests.emulator.test_resume import put

PK = "ROOM#tokens"


@pytest.fixture(scope="module")
def local() -> Iterator[RunningEmulator]:
    yield from start()


def short_lived(local: RunningEmulator, user: str, seconds: int) -> ClientConnection:
    url = f"{local.emulator.url}?token={local.token(user, ttl=seconds)}"
    return connect(url, open_timeout=20)


@pytest.mark.slow
def test_an_expired_connection_stops_receiving_and_is_closed_and_auth_extends_another(
    local: RunningEmulator,
) -> None:
    with short_lived(local, "frank", 3) as expiring, short_lived(local, "grace", 3) as renewed:
        subscribe(expiring, "s1", key={"PK": PK})
        subscribe(renewed, "s1", key={"PK": PK})
        # grace refreshes before expiry; a token for another user changes nothing
        renewed.send(json.dumps({"action": "auth", "token": local.token("mallory")}))
        refused = receive_json(renewed)
        assert (refused["type"], refused["code"]) == ("error", "invalid_token")
        renewed.send(json.dumps({"action": "auth", "token": local.token("grace", ttl=600)}))
        authenticated = receive_json(renewed)
        assert authenticated["type"] == "authenticated", authenticated
        renewed.send(json.dumps({"action": "hello"}))
        assert receive_json(renewed)["expiresAt"] == authenticated["expiresAt"]

        put(local, "BEFORE", 1, pk=PK)
        assert receive_json(expiring)["keys"]["SK"] == "BEFORE"
        assert receive_json(renewed)["keys"]["SK"] == "BEFORE"

        time.sleep(3.5)  # frank's token has expired, grace's has not
        put(local, "AFTER", 2, pk=PK)
        assert receive_json(renewed)["keys"]["SK"] == "AFTER"
        with pytest.raises(ConnectionClosed):  # nothing more, then closed by the server
            message = expiring.recv(timeout=10)
            pytest.fail(f"an expired connection received {message!r}")


@pytest.mark.slow
def test_a_message_on_an_expired_connection_gets_invalid_token_and_closes_it(
    local: RunningEmulator,
) -> None:
    with short_lived(local, "heidi", 2) as client:
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client) == {"type": "pong"}
        time.sleep(2.5)
        client.send(json.dumps({"action": "ping"}))
        told = receive_json(client)
        assert (told["type"], told["code"]) == ("error", "invalid_token")
        with pytest.raises(ConnectionClosed):
            client.recv(timeout=10)
