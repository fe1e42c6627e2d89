"""Token lifetime with moto: ``auth`` replaces a connection's token (same user only), access
rules are checked again with the new claims, and an expired connection receives nothing more
and is closed (by ``$default`` on any message, by the broadcaster on delivery)."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import pytest

from bench.management_api import FakeManagementApi
from handlers import aws
from handlers.broadcaster import Broadcaster
from handlers.default import CLOSE, DynamoStore, Reply, replies, respond
from handlers.management import ManagementApi, frozen_credentials
from handlers.subscriptions import read_connection
from handlers.tokens import mint_token
from tests.handlers.test_broadcaster import settings as broadcaster_settings
from tests.handlers.test_broadcaster import stream
from tests.handlers.test_default import (
    CONNECTION_ID,
    SUBSCRIPTIONS,
    connect,
    settings_with,
    stored,
    subs_of,
)
from tests.helpers import SECRET, topic_version

TOKENS = settings_with(
    TOKEN_SECRET_PARAMETER="/test/token-secret",
    IDENTITY_CLAIMS="role,tenant",
    TOKEN_MAX_LIFETIME_SECONDS="86400",
)


@pytest.fixture
def tables(dynamodb: Any, connections_table: str) -> Any:
    from tests.helpers import create_subscriptions_table

    create_subscriptions_table(dynamodb, SUBSCRIPTIONS)
    return dynamodb


def send(client: Any, message: dict[str, Any], cfg: Any = TOKENS) -> list[Reply]:
    return list(
        replies(
            json.dumps(message),
            False,
            cfg.max_input_bytes,
            connection_id=CONNECTION_ID,
            store=DynamoStore(cfg, client, token_secret=SECRET),
            settings=cfg,
        )
    )


def token(user: str = "alice", ttl: int = 3600, **claims: Any) -> str:
    return mint_token(user, SECRET, ttl, claims=claims or None)


def record(client: Any) -> dict[str, Any]:
    item: dict[str, Any] = client.get_item(
        TableName="connections-test", Key={"connectionId": {"S": CONNECTION_ID}}
    )["Item"]
    return item


@pytest.fixture
def admin(tables: Any) -> Any:
    """alice, an admin whose token expires in 60 s, holding a table-wide subscription (admins
    only) and one on her own partition."""
    connect(tables, user="alice", claims={"role": "admin"}, expires_at=int(time.time()) + 60)
    for sub_id, fields in (("all", {}), ("mine", {"key": {"PK": "USER#alice"}})):
        (answer,) = send(tables, {"action": "subscribe", "id": sub_id, "table": "orders", **fields})
        assert answer["type"] == "subscribed", answer  # type: ignore[index]
    return tables


def versions(client: Any) -> dict[str, int]:
    """sub id -> the version of its topic."""
    return {
        sub_id: topic_version(client, SUBSCRIPTIONS, topic)
        for sub_id, topic in subs_of(client).items()
    }


def test_a_fresh_token_for_the_same_user_extends_the_connection_and_its_subscriptions(
    admin: Any,
) -> None:
    fresh = token(ttl=7200, role="admin")
    assert versions(admin) == {"all": 1, "mine": 1}

    (answer,) = send(admin, {"action": "auth", "token": fresh})

    expires = json.loads(__import__("base64").urlsafe_b64decode(fresh.split(".")[0] + "=="))["exp"]
    assert answer == {"type": "authenticated", "expiresAt": aws_iso(expires)}
    assert record(admin)["expiresAt"] == {"N": str(expires)}
    assert {i["subId"]["S"]: i["expiresAt"]["N"] for i in stored(admin).values()} == {
        "all": str(expires),
        "mine": str(expires),
    }
    assert versions(admin) == {"all": 2, "mine": 2}  # the broadcaster reads the new expiry


def aws_iso(epoch: int) -> str:
    from handlers.connections import iso_utc

    return iso_utc(epoch)


@pytest.mark.parametrize(
    "case", ["another user", "bad signature", "expired", "too long-lived", "not a string", "none"]
)
def test_a_refused_token_gets_invalid_token_and_changes_nothing(admin: Any, case: str) -> None:
    before = (record(admin), stored(admin), versions(admin))
    value: Any = {
        "another user": token("mallory", role="admin"),
        "bad signature": mint_token("alice", "another secret of 32 characters!!", 3600),
        "expired": None,
        "too long-lived": None,
        "not a string": 42,
        "none": None,
    }[case]
    if case == "expired":
        from handlers import tokens

        payload = {"sub": "alice", "exp": int(time.time()) - 10}
        body = tokens._b64url_encode(json.dumps(payload).encode())
        value = f"{body}.{tokens._b64url_encode(tokens._signature(tokens._key(SECRET), body))}"
    if case == "too long-lived":
        value = mint_token("alice", SECRET, 30 * 86400, max_lifetime=30 * 86400)
    message = {"action": "auth"} if case == "none" else {"action": "auth", "token": value}

    (answer,) = send(admin, message)

    assert answer["type"] == "error" and answer["code"] == "invalid_token", answer  # type: ignore[index]
    assert "id" not in answer  # type: ignore[operator]
    assert (record(admin), stored(admin), versions(admin)) == before


def test_claims_that_no_longer_allow_a_subscription_remove_it_with_forbidden(admin: Any) -> None:
    topics = subs_of(admin)
    answers = send(admin, {"action": "auth", "token": token(role="viewer")})

    assert [(a["type"], a.get("code"), a.get("id")) for a in answers] == [  # type: ignore[union-attr]
        ("error", "forbidden", "all"),
        ("authenticated", None, None),
    ]
    assert list(subs_of(admin)) == ["mine"]
    assert [i["subId"]["S"] for i in stored(admin).values()] == ["mine"]
    # removed, and kept with a new expiry: both topics' subscribers changed
    assert [topic_version(admin, SUBSCRIPTIONS, topics[s]) for s in ("all", "mine")] == [2, 2]
    assert json.loads(record(admin)["claims"]["S"]) == {"role": "viewer"}


def test_auth_on_a_stack_without_tokens_is_invalid_token(tables: Any) -> None:
    connect(tables, user="alice")
    (answer,) = send(tables, {"action": "auth", "token": token()}, cfg=settings_with())
    assert answer["code"] == "invalid_token"  # type: ignore[index]
    assert "auth is off" in answer["message"]  # type: ignore[index]


@pytest.mark.parametrize("action", [{"action": "ping"}, {"action": "hello"}, {"action": "auth"}])
def test_any_message_on_an_expired_connection_gets_invalid_token_then_closes_it(
    tables: Any, action: dict[str, Any]
) -> None:
    connect(tables, user="alice", expires_at=int(time.time()) - 1)
    message = {**action, "token": token()} if action["action"] == "auth" else action

    answers = send(tables, message)

    assert answers[-1] is CLOSE
    (error,) = answers[:-1]
    assert error["code"] == "invalid_token" and "expired" in error["message"]  # type: ignore[index]


def test_before_expiry_messages_are_answered_as_usual(tables: Any) -> None:
    connect(tables, user="alice", expires_at=int(time.time()) + 30)
    assert send(tables, {"action": "ping", "id": 1}) == [{"type": "pong", "id": 1}]


def test_respond_closes_an_expired_connection_through_the_management_api(
    tables: Any, management_api: FakeManagementApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    import handlers.default as default_module

    monkeypatch.setattr(default_module, "CONFIG", dataclasses.replace(TOKENS))
    connect(tables, user="alice", expires_at=int(time.time()) - 1)
    management_api.connect(CONNECTION_ID)
    api = ManagementApi(
        management_api.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )
    event = {"requestContext": {"connectionId": CONNECTION_ID}, "body": '{"action": "ping"}'}

    assert respond(event, api, DynamoStore(TOKENS, tables, token_secret=SECRET)) == {
        "statusCode": 200
    }

    (told,) = management_api.messages(CONNECTION_ID)
    assert told["code"] == "invalid_token"
    assert CONNECTION_ID not in management_api.state.known  # deleted: API Gateway closes it


def test_the_broadcaster_skips_and_closes_expired_recipients(
    tables: Any, management_api: FakeManagementApi
) -> None:
    from tests.handlers.test_broadcaster import add_connection, subscribe

    now = time.time()
    for cid, expires in (("OLD=", int(now) - 5), ("NEW=", int(now) + 600), ("ANON=", None)):
        add_connection(tables, cid, "u-" + cid)
        if expires is not None:
            tables.update_item(
                TableName="connections-test",
                Key={"connectionId": {"S": cid}},
                UpdateExpression="SET expiresAt = :e",
                ExpressionAttributeValues={":e": {"N": str(expires)}},
            )
        subscribe(tables, cid, "s1")
        management_api.connect(cid)
    api = ManagementApi(
        management_api.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )
    worker = Broadcaster(broadcaster_settings(management_api.endpoint), dynamodb=tables, api=api)
    records = [stream("INSERT", f"{n:024d}", new={"n": n}) for n in (1, 2)]

    failures, stats = worker.run(records, deadline=worker.clock() + 60)

    assert failures == []
    assert management_api.messages("OLD=") == []
    assert len(management_api.messages("NEW=")) == 2 and len(management_api.messages("ANON=")) == 2
    assert stats.expiredClosed == 1  # once per batch, however many records
    assert "OLD=" not in management_api.state.known
    assert read_connection(tables, "connections-test", "NEW=").expires_at == int(now) + 600


def test_a_subscribe_racing_an_auth_stores_the_new_expiry(
    tables: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import handlers.subscriptions as subscriptions_module

    connect(tables, user="alice", claims={"role": "admin"}, expires_at=int(time.time()) + 60)
    fresh = int(time.time()) + 7200
    real = subscriptions_module.read_connection
    reads: list[int | None] = []

    def read_then_auth(client: Any, table: str, connection_id: str) -> Any:
        connection = real(client, table, connection_id)
        reads.append(connection.expires_at)
        if len(reads) == 1:  # an auth lands between the subscribe's read and its write
            client.update_item(
                TableName=table,
                Key={"connectionId": {"S": connection_id}},
                UpdateExpression="SET expiresAt = :e",
                ExpressionAttributeValues={":e": {"N": str(fresh)}},
            )
        return connection

    monkeypatch.setattr(subscriptions_module, "read_connection", read_then_auth)
    (answer,) = send(tables, {"action": "subscribe", "id": "s1", "table": "orders"})

    assert answer["type"] == "subscribed", answer  # type: ignore[index]
    assert len(reads) == 2  # the first write was refused and the record read again
    (item,) = stored(tables).values()
    assert item["expiresAt"] == {"N": str(fresh)}
