"""``auth`` (token refresh) in JWT mode: ``$default`` verifies the fresh JWT against the
issuer's keys as the authorizer does, with the same claim mapping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from handlers import signin
from handlers.default import DynamoStore, Reply, replies
from tests.handlers.test_auth import record
from tests.handlers.test_default import CONNECTION_ID, SUBSCRIPTIONS, connect, settings_with
from tests.jwt_helpers import AUDIENCE, LocalIssuer, claims, public_jwk, sign


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    signin.forget_verifier()
    with LocalIssuer([public_jwk("ec-1", "ES256")]) as running:
        yield running
    signin.forget_verifier()


@pytest.fixture
def tables(dynamodb: Any, connections_table: str) -> Any:
    from tests.helpers import create_subscriptions_table

    create_subscriptions_table(dynamodb, SUBSCRIPTIONS)
    return dynamodb


def send(client: Any, issuer: LocalIssuer, message: dict[str, Any]) -> list[Reply]:
    cfg = settings_with(
        AUTH_MODE="jwt",
        JWT_ISSUER=issuer.url,
        JWT_AUDIENCES=json.dumps([AUDIENCE]),
        JWT_CLAIMS=json.dumps({"role": "custom:role"}),
        IDENTITY_CLAIMS="role,tenant",
    )
    return list(
        replies(
            json.dumps(message),
            False,
            cfg.max_input_bytes,
            connection_id=CONNECTION_ID,
            store=DynamoStore(cfg, client),  # no token secret: JWT mode never reads one
            settings=cfg,
        )
    )


def test_a_fresh_jwt_for_the_same_user_extends_the_connection_with_mapped_claims(
    tables: Any, issuer: LocalIssuer
) -> None:
    connect(tables, user="alice", claims={"role": "user"}, expires_at=int(time.time()) + 60)
    payload = claims(iss=issuer.url, sub="alice", exp=int(time.time()) + 3000)
    payload["custom:role"] = "admin"
    (answer,) = send(tables, issuer, {"action": "auth", "token": sign(payload, "ec-1", "ES256")})
    assert answer["type"] == "authenticated", answer  # type: ignore[index]
    stored = record(tables)
    assert stored["expiresAt"] == {"N": str(payload["exp"])}
    assert json.loads(stored["claims"]["S"]) == {"role": "admin"}


@pytest.mark.parametrize("case", ["another user", "wrong audience", "hmac token"])
def test_a_refused_jwt_gets_invalid_token_and_changes_nothing(
    tables: Any, issuer: LocalIssuer, case: str
) -> None:
    from handlers.tokens import mint_token
    from tests.helpers import SECRET

    connect(tables, user="alice", claims={"role": "user"}, expires_at=int(time.time()) + 60)
    before = record(tables)
    token = {
        "another user": sign(claims(iss=issuer.url, sub="mallory"), "ec-1", "ES256"),
        "wrong audience": sign(claims(iss=issuer.url, sub="alice", aud="x"), "ec-1", "ES256"),
        "hmac token": mint_token("alice", SECRET),
    }[case]
    (answer,) = send(tables, issuer, {"action": "auth", "token": token})
    assert answer["type"] == "error" and answer["code"] == "invalid_token", answer  # type: ignore[index]
    assert record(tables) == before
