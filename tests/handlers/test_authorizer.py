"""The $connect REQUEST authorizer, with the signing secret in (moto) SSM."""

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

import handlers.authorizer
from handlers import aws
from handlers.authorizer import handler
from handlers.tokens import mint_token
from tests.helpers import SECRET, FakeContext, load_event

METHOD_ARN = load_event("authorizer_request")["methodArn"]
USER = "user-7"


@pytest.fixture(autouse=True)
def _fresh_secret_cache() -> Iterator[None]:
    handlers.authorizer.forget_secret()
    yield
    handlers.authorizer.forget_secret()


@pytest.fixture
def get_parameter_calls(mocked_aws: None) -> list[dict[str, Any]]:
    """Every GetParameter call the handlers' SSM client makes (moto answers them)."""
    calls: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        calls.append(params)

    aws.client("ssm").meta.events.register("provide-client-params.ssm.GetParameter", record)
    return calls


def event_with(token: str | None) -> dict[str, Any]:
    event = load_event("authorizer_request")
    if token is None:
        del event["queryStringParameters"]["token"]
        del event["multiValueQueryStringParameters"]["token"]
    else:
        event["queryStringParameters"]["token"] = token
        event["multiValueQueryStringParameters"]["token"] = [token]
    return event


def statement(answer: dict[str, Any]) -> dict[str, Any]:
    statements = answer["policyDocument"]["Statement"]
    assert len(statements) == 1
    return statements[0]


def refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "handlers.authorizer" and record.getMessage() == "connection refused"
    ]


# --- Allow --------------------------------------------------------------------------------


def test_valid_token_is_allowed_for_exactly_the_method_arn(
    secret_parameter: str, lambda_context: FakeContext
) -> None:
    answer = handler(event_with(mint_token(USER, SECRET)), lambda_context)

    assert answer["policyDocument"]["Version"] == "2012-10-17"
    assert statement(answer) == {
        "Action": "execute-api:Invoke",
        "Effect": "Allow",
        "Resource": METHOD_ARN,
    }


def test_allowed_principal_is_the_token_subject(
    secret_parameter: str, lambda_context: FakeContext
) -> None:
    answer = handler(event_with(mint_token(USER, SECRET)), lambda_context)

    assert answer["principalId"] == USER


def test_allowed_context_carries_the_user_id_expiry_and_no_claim_unless_listed(
    secret_parameter: str, lambda_context: FakeContext
) -> None:
    assert handlers.authorizer.CONFIG.identity_claims == ()
    token = mint_token(USER, SECRET, claims={"role": "viewer"}, now=time.time())
    exp = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["exp"]

    answer = handler(event_with(token), lambda_context)

    assert answer["context"] == {"userId": USER, "claims": "{}", "expiresAt": exp}
    assert isinstance(answer["context"]["expiresAt"], int)


def test_handler_passes_the_claims_named_in_identity_claims(
    secret_parameter: str, lambda_context: FakeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = dataclasses.replace(handlers.authorizer.CONFIG, identity_claims=("tenant", "groups"))
    monkeypatch.setattr(handlers.authorizer, "CONFIG", listed)
    token = mint_token(
        USER, SECRET, claims={"tenant": "acme", "groups": ["a", "b"], "role": "admin"}
    )

    answer = handler(event_with(token), lambda_context)

    assert json.loads(answer["context"]["claims"]) == {"tenant": "acme", "groups": ["a", "b"]}


CLAIM_VALUES = {
    "string": ("acme", True),
    "empty_string": ("", True),
    "list_of_strings": (["a", "b"], True),
    "empty_list": ([], True),
    "number": (7, False),
    "boolean": (True, False),
    "null": (None, False),
    "object": ({"x": "y"}, False),
    "mixed_list": (["a", 1], False),
    "nested_list": ([["a"]], False),
}


@pytest.mark.parametrize("case", sorted(CLAIM_VALUES))
def test_only_string_or_string_list_claims_are_passed(case: str) -> None:
    value, kept = CLAIM_VALUES[case]
    token = mint_token(USER, SECRET, claims={"tenant": value}, now=1_000)

    answer = handlers.authorizer.decide(
        event_with(token), SECRET, now=1_000, claim_names=["tenant"]
    )

    expected = {"tenant": value} if kept else {}
    assert json.loads(answer["context"]["claims"]) == expected


def test_claims_not_in_the_allow_list_never_reach_the_context() -> None:
    token = mint_token(USER, SECRET, claims={"email": "a@example.com", "tenant": "t"}, now=1_000)

    answer = handlers.authorizer.decide(
        event_with(token), SECRET, now=1_000, claim_names=["tenant"]
    )

    assert "a@example.com" not in json.dumps(answer)
    assert json.loads(answer["context"]["claims"]) == {"tenant": "t"}


def test_sub_and_exp_are_not_duplicated_into_the_claims() -> None:
    token = mint_token(USER, SECRET, now=1_000)

    answer = handlers.authorizer.decide(
        event_with(token), SECRET, now=1_000, claim_names=["sub", "exp"]
    )

    assert answer["context"]["claims"] == "{}"
    assert answer["context"]["expiresAt"] == 1_000 + 3600


def test_claims_text_is_ascii_json_even_for_unpaired_surrogates() -> None:
    """The connect handler stores this text in DynamoDB, which takes only valid UTF-8."""
    token = _signed(json.dumps({"sub": USER, "exp": 2_000, "tenant": "\ud800x"}).encode())

    answer = handlers.authorizer.decide(
        event_with(token), SECRET, now=1_000, claim_names=["tenant"]
    )

    text = answer["context"]["claims"]
    text.encode("ascii")
    assert json.loads(text) == {"tenant": "\ud800x"}


# --- Deny ---------------------------------------------------------------------------------


def _tampered() -> str:
    payload_part, _ = mint_token(USER, SECRET).split(".")
    _, other_signature = mint_token("someone-else", SECRET).split(".")
    return f"{payload_part}.{other_signature}"


def _signed(payload: bytes) -> str:
    """A correctly signed token for arbitrary payload bytes (what a leaked-key forger or a
    careless backend could produce)."""
    part = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    digest = hmac.new(SECRET.encode(), part.encode(), hashlib.sha256).digest()
    return f"{part}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


REFUSED = {
    "missing": (lambda: None, "missing token"),
    "empty": (lambda: "", "missing token"),
    "malformed": (lambda: "not-a-token", "malformed token: expected two dot-separated parts"),
    "tampered": (_tampered, "bad signature"),
    "expired": (
        lambda: mint_token(USER, SECRET, ttl_seconds=60, now=time.time() - 3600),
        "expired",
    ),
    "wrong_secret": (lambda: mint_token(USER, "not-the-secret"), "bad signature"),
    "never_expires": (
        lambda: _signed(json.dumps({"sub": USER, "exp": 10**12}).encode()),
        "lifetime too long",
    ),
    "infinite_expiry": (
        lambda: _signed(b'{"sub": "user-7", "exp": Infinity}'),
        "malformed payload: not JSON",
    ),
    "float_expiry": (
        lambda: _signed(json.dumps({"sub": USER, "exp": 1e308}).encode()),
        "malformed payload: exp must be an integer",
    ),
}


@pytest.fixture(params=sorted(REFUSED))
def refused_case(request: pytest.FixtureRequest) -> tuple[str | None, str]:
    make_token, reason = REFUSED[request.param]
    return make_token(), reason


def test_refused_token_is_denied_for_the_method_arn(
    secret_parameter: str, lambda_context: FakeContext, refused_case: tuple[str | None, str]
) -> None:
    token, _ = refused_case

    answer = handler(event_with(token), lambda_context)

    assert statement(answer) == {
        "Action": "execute-api:Invoke",
        "Effect": "Deny",
        "Resource": METHOD_ARN,
    }


def test_refused_token_gets_no_context(
    secret_parameter: str, lambda_context: FakeContext, refused_case: tuple[str | None, str]
) -> None:
    token, _ = refused_case

    answer = handler(event_with(token), lambda_context)

    assert "context" not in answer
    assert answer["principalId"] != USER


def test_refusal_reason_is_logged(
    secret_parameter: str,
    lambda_context: FakeContext,
    refused_case: tuple[str | None, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token, reason = refused_case
    caplog.set_level(logging.INFO)

    handler(event_with(token), lambda_context)

    [record] = refusals(caplog)
    assert record.levelno == logging.WARNING
    assert record.reason == reason  # type: ignore[attr-defined]
    assert record.connectionId == "L0SM9cOFvHcCIhw="  # type: ignore[attr-defined]


def test_refusal_reason_and_token_are_not_in_the_answer(
    secret_parameter: str, lambda_context: FakeContext, refused_case: tuple[str | None, str]
) -> None:
    token, reason = refused_case

    serialized = json.dumps(handler(event_with(token), lambda_context))

    assert reason not in serialized
    if token:
        assert token not in serialized
        for part in token.split("."):
            assert part not in serialized


def test_refused_token_is_not_logged(
    secret_parameter: str, lambda_context: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = mint_token(USER, "not-the-secret")

    handler(event_with(token), lambda_context)

    assert refusals(caplog)
    assert token not in caplog.text
    assert token.split(".")[1] not in caplog.text


def test_event_without_query_parameters_is_denied(
    secret_parameter: str, lambda_context: FakeContext
) -> None:
    event = event_with(None)
    event["queryStringParameters"] = None

    assert statement(handler(event, lambda_context))["Effect"] == "Deny"


def test_allowed_request_logs_no_refusal(
    secret_parameter: str, lambda_context: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    handler(event_with(mint_token(USER, SECRET)), lambda_context)

    assert refusals(caplog) == []


# --- the secret ---------------------------------------------------------------------------


def test_secret_is_read_from_ssm_once_per_container(
    secret_parameter: str,
    get_parameter_calls: list[dict[str, Any]],
    lambda_context: FakeContext,
) -> None:
    for user in ("a", "b", "c"):
        answer = handler(event_with(mint_token(user, SECRET)), lambda_context)
        assert statement(answer)["Effect"] == "Allow"
    handler(event_with("garbage"), lambda_context)

    assert len(get_parameter_calls) == 1


def test_secret_is_read_decrypted_from_the_configured_parameter(
    secret_parameter: str,
    get_parameter_calls: list[dict[str, Any]],
    lambda_context: FakeContext,
) -> None:
    handler(event_with(mint_token(USER, SECRET)), lambda_context)

    [call] = get_parameter_calls
    assert call["Name"] == secret_parameter
    assert call["WithDecryption"] is True


def test_forgetting_the_secret_reads_it_again(
    secret_parameter: str,
    get_parameter_calls: list[dict[str, Any]],
    lambda_context: FakeContext,
) -> None:
    handler(event_with(mint_token(USER, SECRET)), lambda_context)
    handlers.authorizer.forget_secret()
    handler(event_with(mint_token(USER, SECRET)), lambda_context)

    assert len(get_parameter_calls) == 2


def test_missing_secret_parameter_denies(mocked_aws: None, lambda_context: FakeContext) -> None:
    answer = handler(event_with(mint_token(USER, SECRET)), lambda_context)

    assert statement(answer) == {
        "Action": "execute-api:Invoke",
        "Effect": "Deny",
        "Resource": METHOD_ARN,
    }
    assert "context" not in answer


def test_missing_secret_parameter_is_logged_with_the_error(
    mocked_aws: None, lambda_context: FakeContext, caplog: pytest.LogCaptureFixture
) -> None:
    handler(event_with(mint_token(USER, SECRET)), lambda_context)

    [record] = [r for r in caplog.records if r.getMessage() == "could not read the token secret"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "ParameterNotFound" in caplog.text
    assert record.parameter == handlers.authorizer.CONFIG.secret_parameter  # type: ignore[attr-defined]


def test_secret_failure_is_not_cached(
    mocked_aws: None,
    get_parameter_calls: list[dict[str, Any]],
    lambda_context: FakeContext,
) -> None:
    token = mint_token(USER, SECRET)
    assert statement(handler(event_with(token), lambda_context))["Effect"] == "Deny"

    aws.client("ssm").put_parameter(
        Name=handlers.authorizer.CONFIG.secret_parameter,
        Value=SECRET,
        Type="SecureString",
    )
    answer = handler(event_with(token), lambda_context)

    assert statement(answer)["Effect"] == "Allow"
    assert answer["principalId"] == USER
    assert len(get_parameter_calls) == 2


# --- the pure decision --------------------------------------------------------------------


def test_decide_uses_the_given_clock() -> None:
    token = mint_token(USER, SECRET, ttl_seconds=60, now=1_000)
    event = event_with(token)

    allowed = handlers.authorizer.decide(event, SECRET, now=1_059)
    denied = handlers.authorizer.decide(event, SECRET, now=1_060)

    assert statement(allowed)["Effect"] == "Allow"
    assert statement(denied)["Effect"] == "Deny"


def test_event_without_method_arn_is_denied_for_everything() -> None:
    event = event_with("garbage")
    del event["methodArn"]

    assert statement(handlers.authorizer.decide(event, SECRET, now=0)) == {
        "Action": "execute-api:Invoke",
        "Effect": "Deny",
        "Resource": "*",
    }


def test_handler_caps_token_lifetime_at_the_configured_maximum(
    secret_parameter: str,
    lambda_context: FakeContext,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = mint_token(USER, SECRET, ttl_seconds=7200)
    assert statement(handler(event_with(token), lambda_context))["Effect"] == "Allow"  # 1 day

    capped = dataclasses.replace(handlers.authorizer.CONFIG, token_max_lifetime=3600)
    monkeypatch.setattr(handlers.authorizer, "CONFIG", capped)
    caplog.set_level(logging.INFO)

    assert statement(handler(event_with(token), lambda_context))["Effect"] == "Deny"
    [record] = refusals(caplog)
    assert record.reason == "lifetime too long"  # type: ignore[attr-defined]
