"""The $connect authorizer in JWT mode, the token sources, and the connect response's
subprotocol: keys served by a local issuer on 127.0.0.1, tokens signed by PyJWT."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import handlers.authorizer
from handlers import config, signin
from handlers.connect import accepted
from handlers.tokens import mint_token
from tests.helpers import SECRET, FakeContext, load_event
from tests.jwt_helpers import AUDIENCE, LocalIssuer, claims, public_jwk, sign


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer([public_jwk("rsa-1", "RS256"), public_jwk("ec-1", "ES256")]) as running:
        yield running


def jwt_env(issuer: LocalIssuer, **extra: str) -> dict[str, str]:
    return {
        "AUTH_MODE": "jwt",
        "JWT_ISSUER": issuer.url,
        "JWT_AUDIENCES": json.dumps([AUDIENCE]),
        "IDENTITY_CLAIMS": "groups,tenant",
        **extra,
    }


@pytest.fixture
def jwt_mode(issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalIssuer]:
    """The authorizer module configured for JWT mode (as the component declares it)."""
    loaded = config.authorizer_config(
        jwt_env(issuer, JWT_CLAIMS=json.dumps({"groups": "cognito:groups"}))
    )
    monkeypatch.setattr(handlers.authorizer, "CONFIG", loaded)
    signin.forget_verifier()
    yield issuer
    signin.forget_verifier()


def event_with(
    token: str | None = None, protocols: str | None = None, multi: bool = True
) -> dict[str, Any]:
    event = load_event("authorizer_request")
    event["queryStringParameters"].pop("token", None)
    event["multiValueQueryStringParameters"].pop("token", None)
    if token is not None:
        event["queryStringParameters"]["token"] = token
        event["multiValueQueryStringParameters"]["token"] = [token]
    if protocols is not None:
        event["headers"]["Sec-WebSocket-Protocol"] = protocols
        if multi:
            event.setdefault("multiValueHeaders", {})["Sec-WebSocket-Protocol"] = [protocols]
    return event


def effect(answer: dict[str, Any]) -> str:
    return str(answer["policyDocument"]["Statement"][0]["Effect"])


# -- JWT mode ------------------------------------------------------------------------------


def test_a_valid_jwt_is_allowed_with_the_same_context_shape_as_hmac_mode(
    jwt_mode: LocalIssuer, lambda_context: FakeContext
) -> None:
    payload = claims(
        iss=jwt_mode.url, sub="alice", tenant="t1", **{"cognito:groups": ["admins"]}, email="x@y"
    )
    answer = handlers.authorizer.handler(event_with(sign(payload)), lambda_context)
    assert effect(answer) == "Allow"
    assert answer["principalId"] == "alice"
    assert answer["context"] == {
        "userId": "alice",
        "claims": '{"groups":["admins"],"tenant":"t1"}',  # mapped, allow-listed, nothing else
        "expiresAt": payload["exp"],
    }
    hmac_answer = handlers.authorizer.decide(
        event_with(mint_token("alice", SECRET)), SECRET, now=payload["iat"]
    )
    assert set(hmac_answer["context"]) == set(answer["context"])


def test_a_bad_jwt_is_denied_and_only_the_log_says_why(
    jwt_mode: LocalIssuer, lambda_context: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    token = sign(claims(iss=jwt_mode.url, aud="another-app"))
    answer = handlers.authorizer.handler(event_with(token), lambda_context)
    assert effect(answer) == "Deny"
    assert "context" not in answer and "audience" not in json.dumps(answer)
    refusals = [r for r in caplog.records if r.getMessage() == "connection refused"]
    assert [(r.reason, r.tokenSource) for r in refusals] == [("audience not accepted", "query")]  # type: ignore[attr-defined]


def test_an_hmac_token_is_denied_in_jwt_mode(
    jwt_mode: LocalIssuer, lambda_context: FakeContext
) -> None:
    answer = handlers.authorizer.handler(event_with(mint_token("alice", SECRET)), lambda_context)
    assert effect(answer) == "Deny"


def test_keys_are_fetched_once_for_many_connections(
    jwt_mode: LocalIssuer, lambda_context: FakeContext
) -> None:
    for index in range(20):
        token = sign(claims(iss=jwt_mode.url, sub=f"u{index}"), "ec-1", "ES256")
        assert effect(handlers.authorizer.handler(event_with(token), lambda_context)) == "Allow"
    assert jwt_mode.served.count("/jwks.json") == 1
    assert jwt_mode.served.count("/.well-known/openid-configuration") == 1


def test_the_token_may_come_in_the_subprotocol_header(
    jwt_mode: LocalIssuer, lambda_context: FakeContext
) -> None:
    token = sign(claims(iss=jwt_mode.url, sub="bob"))
    for multi in (True, False):  # API Gateway's multiValueHeaders, or headers alone
        event = event_with(protocols=f"realtime-channel, {token}", multi=multi)
        answer = handlers.authorizer.handler(event, lambda_context)
        assert (effect(answer), answer["principalId"]) == ("Allow", "bob")


def test_no_token_anywhere_is_denied(
    jwt_mode: LocalIssuer, lambda_context: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    for event in (
        event_with(),
        event_with(protocols="realtime-channel"),
        event_with(protocols="chat"),
    ):
        assert effect(handlers.authorizer.handler(event, lambda_context)) == "Deny"
    assert {r.reason for r in caplog.records if r.getMessage() == "connection refused"} == {  # type: ignore[attr-defined]
        "missing token"
    }


# -- token sources (both modes) ------------------------------------------------------------


@pytest.mark.parametrize(
    "query, protocols, expected",
    [
        ("q", None, ("q", "query")),
        ("q", "realtime-channel, p", ("q", "query")),  # the query string wins
        (None, "realtime-channel, p", ("p", "subprotocol")),
        (None, "p, realtime-channel", ("p", "subprotocol")),
        (None, "realtime-channel,p", ("p", "subprotocol")),
        (None, "p", (None, None)),  # without the fixed name, no token is taken
        (None, "realtime-channel, p, q", (None, None)),  # ambiguous
        (None, "realtime-channel", (None, None)),
        (None, None, (None, None)),
    ],
)
def test_token_sources(
    query: str | None, protocols: str | None, expected: tuple[str | None, str | None]
) -> None:
    assert signin.token_source(event_with(query, protocols)) == expected


def test_hmac_mode_also_takes_the_subprotocol_token() -> None:
    event = event_with(protocols=f"realtime-channel, {mint_token('carol', SECRET)}")
    answer = handlers.authorizer.decide(event, SECRET, now=time.time())
    assert (effect(answer), answer["principalId"]) == ("Allow", "carol")


def test_the_connect_answer_names_only_the_fixed_protocol_never_the_token() -> None:
    token = mint_token("carol", SECRET)
    event = load_event("connect")
    event["headers"]["Sec-WebSocket-Protocol"] = f"realtime-channel, {token}"
    answer = accepted(event)
    assert answer["statusCode"] == 200
    assert answer["headers"] == {"Sec-WebSocket-Protocol": "realtime-channel"}
    assert token not in json.dumps(answer)
    del event["headers"]["Sec-WebSocket-Protocol"]
    assert "headers" not in accepted(event)


# -- configuration ---------------------------------------------------------------------------


def test_jwt_mode_configuration_is_read_from_the_environment(issuer: LocalIssuer) -> None:
    loaded = config.authorizer_config(
        jwt_env(
            issuer,
            JWT_JWKS_URL=issuer.jwks_url,
            JWT_ALGORITHMS="ES256",
            JWT_REQUIRED_CLAIMS='{"token_use": "access"}',
            JWT_REQUIRED_SCOPES='["read"]',
            JWT_CLOCK_SKEW_SECONDS="30",
            JWKS_MAX_AGE_SECONDS="600",
            JWKS_REFRESH_SECONDS="15",
            TOKEN_MAX_LIFETIME_SECONDS="3600",
        )
    )
    assert loaded.secret_parameter is None and loaded.jwt is not None
    rules = loaded.jwt.rules
    assert (rules.issuer, rules.audiences, rules.algorithms) == (
        issuer.url,
        (AUDIENCE,),
        ("ES256",),
    )
    assert (rules.required_claims, rules.required_scopes) == ({"token_use": "access"}, ("read",))
    assert (rules.clock_skew, rules.max_lifetime) == (30, 3600)
    assert (loaded.jwt.jwks_url, loaded.jwt.jwks_max_age, loaded.jwt.jwks_refresh) == (
        issuer.jwks_url,
        600,
        15,
    )


@pytest.mark.parametrize(
    "change, named",
    [
        ({"AUTH_MODE": "oauth"}, "AUTH_MODE"),
        ({"JWT_ISSUER": ""}, "JWT_ISSUER"),
        ({"JWT_ISSUER": "http://issuer.example.test/"}, "JWT_ISSUER"),
        ({"JWT_JWKS_URL": "http://keys.example.test/"}, "JWT_JWKS_URL"),
        ({"JWT_AUDIENCES": ""}, "JWT_AUDIENCES"),
        ({"JWT_AUDIENCES": "app"}, "JWT_AUDIENCES"),
        ({"JWT_ALGORITHMS": "RS256,none"}, "JWT_ALGORITHMS"),
        ({"JWT_CLAIMS": '["groups"]'}, "JWT_CLAIMS"),
        ({"JWT_REQUIRED_CLAIMS": "{"}, "JWT_REQUIRED_CLAIMS"),
        ({"JWT_CLOCK_SKEW_SECONDS": "900"}, "JWT_CLOCK_SKEW_SECONDS"),
    ],
)
def test_bad_jwt_configuration_names_the_variable(
    issuer: LocalIssuer, change: dict[str, str], named: str
) -> None:
    with pytest.raises(config.ConfigError, match=named):
        config.authorizer_config({**jwt_env(issuer), **change})


def test_default_config_verifies_jwts_when_the_stack_is_in_jwt_mode(issuer: LocalIssuer) -> None:
    env = {
        **jwt_env(issuer),
        "CONNECTIONS_TABLE": "c",
        "SUBSCRIPTIONS_TABLE": "s",
        "SOURCES": '{"events": {"table": "t", "keys": [["PK", "S"]], "oldImage": true}}',
    }
    tokens = config.default_config(env).tokens
    assert tokens is not None and tokens.jwt is not None and tokens.secret_parameter is None
