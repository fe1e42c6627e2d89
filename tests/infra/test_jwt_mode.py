"""JWT mode under Pulumi mocks: what the component declares, and configuration refused at
preview with errors naming the argument or the stack configuration key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.realtime_channel import jwt_environment
from components.stack_config import ConfigError
from handlers import config as handler_config
from tests.infra.harness import PROJECT, RecordingMocks, run, run_main
from tests.infra.test_component import FUNCTION, POLICY, channel_program

ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"
JWT = {
    "auth_mode": "jwt",
    "jwt_issuer": ISSUER,
    "jwt_audiences": ["1example23456789"],
    "jwt_claims": {"groups": "cognito:groups"},
    "jwt_required_claims": {"token_use": "access"},
    "jwt_required_scopes": ["realtime/connect"],
}
AUTHORIZER = "aws:apigatewayv2/authorizer:Authorizer"


def env_of(mocks: RecordingMocks, kind: str) -> dict[str, str]:
    variables: dict[str, str] = mocks.named(f"chat-{kind}").inputs["environment"]["variables"]
    return variables


@pytest.fixture(scope="module")
def jwt_stack() -> RecordingMocks:
    return run(channel_program(**JWT))


def test_jwt_mode_creates_no_token_secret_and_keeps_the_sweeper(jwt_stack: RecordingMocks) -> None:
    parameters = [p.name for p in jwt_stack.of_type("aws:ssm/parameter:Parameter")]
    assert parameters == ["chat-cursor-secret"]
    assert not jwt_stack.of_type("random:index/randomPassword:RandomPassword") or all(
        "token" not in r.name
        for r in jwt_stack.of_type("random:index/randomPassword:RandomPassword")
    )
    functions = {f.name for f in jwt_stack.of_type(FUNCTION)}
    assert {"chat-authorizer", "chat-sweeper"} <= functions


def test_jwt_mode_gives_the_authorizer_and_default_the_jwt_variables(
    jwt_stack: RecordingMocks,
) -> None:
    expected = {
        "AUTH_MODE": "jwt",
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCES": '["1example23456789"]',
        "JWT_ALGORITHMS": "RS256,ES256",
        "JWT_CLAIMS": '{"groups":"cognito:groups"}',
        "JWT_REQUIRED_CLAIMS": '{"token_use":"access"}',
        "JWT_REQUIRED_SCOPES": '["realtime/connect"]',
        "JWT_CLOCK_SKEW_SECONDS": "60",
        "JWKS_MAX_AGE_SECONDS": "3600",
        "JWKS_REFRESH_SECONDS": "60",
        "TOKEN_MAX_LIFETIME_SECONDS": "86400",
    }
    authorizer = env_of(jwt_stack, "authorizer")
    assert authorizer == {**expected, "IDENTITY_CLAIMS": ""}
    assert "TOKEN_SECRET_PARAMETER" not in env_of(jwt_stack, "default")
    assert {k: env_of(jwt_stack, "default")[k] for k in expected} == expected
    # and the handlers read them back as the component meant
    loaded = handler_config.authorizer_config(authorizer)
    assert loaded.jwt is not None
    assert loaded.jwt.rules.required_scopes == ("realtime/connect",)
    assert dict(loaded.jwt.claims) == {"groups": "cognito:groups"}


def test_jwt_mode_authorizer_has_no_identity_source_and_no_ttl(jwt_stack: RecordingMocks) -> None:
    authorizer = jwt_stack.one(AUTHORIZER)
    assert not authorizer.inputs.get("identitySources")
    assert "authorizerResultTtlInSeconds" not in authorizer.inputs


def test_jwt_mode_authorizer_may_only_write_its_logs(jwt_stack: RecordingMocks) -> None:
    policy = json.loads(jwt_stack.named("chat-authorizer-policy").inputs["policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["WriteOwnLogs"]
    default = json.loads(jwt_stack.named("chat-default-policy").inputs["policy"])
    assert "ReadTokenSecret" not in {s["Sid"] for s in default["Statement"]}
    assert jwt_stack.of_type(POLICY)


def test_hmac_mode_keeps_its_secret_variables() -> None:
    mocks = run(channel_program())
    assert env_of(mocks, "authorizer")["TOKEN_SECRET_PARAMETER"]
    assert "AUTH_MODE" not in env_of(mocks, "authorizer")


def test_jwks_url_and_algorithms_reach_the_functions() -> None:
    mocks = run(
        channel_program(
            **{**JWT, "jwt_jwks_url": "https://keys.example.test/jwks.json"},
            jwt_algorithms=["ES256"],
            jwt_clock_skew_seconds=5,
        )
    )
    env = env_of(mocks, "authorizer")
    assert (env["JWT_JWKS_URL"], env["JWT_ALGORITHMS"], env["JWT_CLOCK_SKEW_SECONDS"]) == (
        "https://keys.example.test/jwks.json",
        "ES256",
        "5",
    )


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"auth_mode": "oauth"}, "auth_mode"),
        ({"jwt_issuer": None}, "jwt_issuer"),
        ({"jwt_issuer": "http://issuer.example.test/"}, "jwt_issuer"),
        ({"jwt_jwks_url": "ftp://keys.example.test/"}, "jwt_jwks_url"),
        ({"jwt_audiences": []}, "jwt_audiences"),
        ({"jwt_algorithms": ["HS256"]}, "jwt_algorithms"),
        ({"jwt_algorithms": ["none"]}, "jwt_algorithms"),
        ({"jwt_algorithms": "RS256"}, "jwt_algorithms"),
        ({"jwt_required_scopes": ["a b"]}, "jwt_required_scopes"),
        ({"jwt_claims": {"sub": "email"}}, "jwt_claims"),
        ({"jwt_claims": {"g r": "groups"}}, "jwt_claims"),
        ({"jwt_clock_skew_seconds": 301}, "jwt_clock_skew_seconds"),
        ({"jwt_jwks_max_age_seconds": 10}, "jwt_jwks_max_age_seconds"),
        ({"jwt_jwks_refresh_seconds": 0}, "jwt_jwks_refresh_seconds"),
        ({"auth_enabled": False}, "auth_mode"),
    ],
)
def test_bad_jwt_arguments_are_refused_naming_the_argument(
    changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=f"RealtimeChannel 'chat': {named} "):
        run(channel_program(**{**JWT, **changes}))


def test_jwt_environment_is_pure_and_omits_what_is_unset() -> None:
    from components.realtime_channel import RealtimeChannelArgs

    env = jwt_environment(
        RealtimeChannelArgs(auth_mode="jwt", jwt_issuer=ISSUER, jwt_audiences=["a"])
    )
    assert set(env) == {
        "AUTH_MODE",
        "JWT_ISSUER",
        "JWT_AUDIENCES",
        "JWT_ALGORITHMS",
        "JWT_CLOCK_SKEW_SECONDS",
        "JWKS_MAX_AGE_SECONDS",
        "JWKS_REFRESH_SECONDS",
    }


# -- the stack program: configuration keys ------------------------------------------------------

STACK_JWT = {
    "authMode": "jwt",
    "jwtIssuer": "https://example-tenant.auth0.com/",
    "jwtAudiences": '["https://realtime.example.com"]',
    "jwtClaims": '{"role": "https://example.com/role"}',
}


def test_the_stack_program_in_jwt_mode_declares_the_jwt_authorizer() -> None:
    mocks = run_main("dev", overrides=STACK_JWT)
    env = mocks.named("realtime-authorizer").inputs["environment"]["variables"]
    assert env["AUTH_MODE"] == "jwt"
    assert env["JWT_ISSUER"] == "https://example-tenant.auth0.com/"
    assert env["JWT_AUDIENCES"] == '["https://realtime.example.com"]'
    assert env["JWT_CLAIMS"] == '{"role":"https://example.com/role"}'
    assert "realtime-token-secret" not in {
        p.name for p in mocks.of_type("aws:ssm/parameter:Parameter")
    }


def test_a_comma_separated_audience_list_is_read_as_a_list() -> None:
    mocks = run_main("dev", overrides={**STACK_JWT, "jwtAudiences": "app-1, app-2"})
    env = mocks.named("realtime-authorizer").inputs["environment"]["variables"]
    assert env["JWT_AUDIENCES"] == '["app-1","app-2"]'


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"jwtIssuer": ""}, "jwtIssuer"),
        ({"jwtIssuer": "http://issuer.example.test"}, "jwtIssuer"),
        ({"jwtAudiences": "[]"}, "jwtAudiences"),
        ({"jwtAudiences": "[1, 2]"}, "jwtAudiences"),
        ({"jwtAlgorithms": '["HS256"]'}, "jwtAlgorithms"),
        ({"jwtClaims": '["groups"]'}, "jwtClaims"),
        ({"jwtRequiredClaims": "token_use=access"}, "jwtRequiredClaims"),
        ({"jwtClockSkewSeconds": "-1"}, "jwtClockSkewSeconds"),
        ({"authMode": "saml"}, "authMode"),
    ],
)
def test_bad_stack_configuration_is_refused_at_preview_naming_the_key(
    changes: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError, match=f"{PROJECT}:{key}: "):
        run_main("dev", preview=True, overrides={**STACK_JWT, **changes})
