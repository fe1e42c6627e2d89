"""JWT mode end to end: the dev stack with ``authMode=jwt`` in the emulator, which acts as
the identity provider (its own key, discovery document and JWKS on 127.0.0.1), and real
WebSocket clients signing in with its JWTs, in the query string or the subprotocol."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from emulator.issuer import LocalIssuer
from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe
from tests.emulator.test_resume import put

ACCESS = [
    {"key": {"PK": "TENANT#{claims.tenant}"}},
    {"table": True, "when": {"claims.groups": "admins"}},
]


@pytest.fixture(scope="module")
def local() -> Iterator[RunningEmulator]:
    yield from start(
        overrides={
            "authMode": "jwt",
            "sourceAccess": json.dumps(ACCESS),
            "jwtClaims": json.dumps({"groups": "cognito:groups"}),
        }
    )


def jwt(local: RunningEmulator, user: str, **claims: object) -> str:
    return local.emulator.token(user, 600, claims=claims)


def refused(url: str, **options: object) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        connect(url, open_timeout=20, **options)  # type: ignore[arg-type]
    return caught.value


def test_the_emulator_serves_its_issuer_and_the_stack_points_at_it(
    local: RunningEmulator,
) -> None:
    from handlers.jwks import fetch_json

    issuer = local.emulator.issuer
    assert issuer is not None and issuer.url == f"http://127.0.0.1:{local.emulator.port}"
    assert local.emulator.jwt_issuer() == issuer.url
    document = fetch_json(f"{issuer.url}/.well-known/openid-configuration", 5, 10_000).document
    assert document["issuer"] == issuer.url
    keys = fetch_json(document["jwks_uri"], 5, 10_000).document
    assert keys["keys"] == [issuer.public_jwk()]


def test_a_jwt_from_the_local_issuer_signs_in_and_its_claims_drive_the_access_rules(
    local: RunningEmulator,
) -> None:
    url = local.emulator.url
    with (
        connect(f"{url}?token={jwt(local, 'alice', tenant='t1')}", open_timeout=20) as alice,
        connect(
            f"{url}?token={jwt(local, 'root', tenant='t9', **{'cognito:groups': ['admins']})}",
            open_timeout=20,
        ) as admin,
    ):
        subscribe(alice, "mine", key={"PK": "TENANT#t1"})
        alice.send(json.dumps({"action": "subscribe", "id": "other", "table": "events",
                               "key": {"PK": "TENANT#t2"}}))  # fmt: skip
        assert receive_json(alice)["code"] == "forbidden"
        alice.send(json.dumps({"action": "subscribe", "id": "all", "table": "events"}))
        assert receive_json(alice)["code"] == "forbidden"  # not in the admins group
        subscribe(admin, "all")  # cognito:groups, mapped to groups, allows the table

        put(local, "ORDER-1", 1, pk="TENANT#t1")
        for client in (alice, admin):
            change = receive_json(client)
            assert change["type"] == "event_update" and change["keys"]["PK"] == "TENANT#t1"

        alice.send(json.dumps({"action": "hello"}))
        assert receive_json(alice)["expiresAt"] is not None  # the JWT's exp


@pytest.mark.parametrize("case", ["tampered", "another issuer's key", "hmac token", "expired"])
def test_a_bad_jwt_is_refused_with_no_reason_given_to_the_client(
    local: RunningEmulator, case: str
) -> None:
    from handlers.tokens import mint_token

    good = jwt(local, "mallory", tenant="t1")
    issuer = local.emulator.issuer
    assert issuer is not None
    token = {
        "tampered": good[:-8] + ("A" if good[-8] != "A" else "B") + good[-7:],
        "another issuer's key": LocalIssuer.generate(issuer.url, issuer.audience).mint("mallory"),
        "hmac token": mint_token("mallory", local.emulator.secret),
        "expired": issuer.mint("mallory", 1, now=1_000_000_000),
    }[case]
    before = len(local.lines)
    answer = refused(f"{local.emulator.url}?token={token}")
    assert answer.response.status_code == 403
    body = answer.response.body.decode()
    assert json.loads(body) == {"message": "Forbidden"}  # nothing about why
    assert any("refused (403)" in line for line in local.lines[before:])


def test_a_token_in_the_subprotocol_signs_in_and_only_the_fixed_name_is_echoed(
    local: RunningEmulator,
) -> None:
    token = jwt(local, "bob", tenant="t1")
    with connect(
        local.emulator.url, subprotocols=["realtime-channel", token], open_timeout=20
    ) as client:
        assert client.subprotocol == "realtime-channel"
        assert client.response is not None
        assert client.response.headers.get_all("Sec-WebSocket-Protocol") == ["realtime-channel"]
        assert token not in str(client.response.headers)
        subscribe(client, "mine", key={"PK": "TENANT#t1"})


def test_with_neither_a_query_token_nor_a_subprotocol_token_the_client_is_refused(
    local: RunningEmulator,
) -> None:
    assert refused(local.emulator.url).response.status_code == 403
    only_name = refused(local.emulator.url, subprotocols=["realtime-channel"])
    assert only_name.response.status_code == 403


def test_the_cli_token_command_mints_a_jwt_the_stack_accepts(
    local: RunningEmulator,
    tmp_path: object,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import emulator.__main__ as cli

    issuer = local.emulator.issuer
    assert issuer is not None
    state = {"issuer": issuer.state(), "authMode": "jwt", "tokenMaxLifetimeSeconds": 86400}
    monkeypatch.setattr(cli, "_state", lambda stack: state)
    assert cli.main(["token", "carol", "--ttl", "300"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.count(".") == 2
    with connect(f"{local.emulator.url}?token={token}", open_timeout=20) as client:
        client.send(json.dumps({"action": "ping"}))
        assert receive_json(client) == {"type": "pong"}
