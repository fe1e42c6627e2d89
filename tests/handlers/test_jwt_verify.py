"""``handlers.jwt_verify`` on tokens signed by PyJWT (RS256 and ES256), each refusal by reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from handlers.jwt_verify import (
    MAX_TOKEN_BYTES,
    JwtRules,
    claim_holds,
    json_equal,
    mapped_claims,
    scopes_of,
    verify_jwt,
)
from handlers.tokens import InvalidToken
from tests.jwt_helpers import AUDIENCE, ISSUER, StaticKeys, claims, public_jwk, sign

RULES = JwtRules(issuer=ISSUER, audiences=(AUDIENCE, "other-app"))
KEYS = [public_jwk("rsa-1", "RS256"), public_jwk("ec-1", "ES256")]


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def check(token: str, rules: JwtRules = RULES, keys: StaticKeys | None = None) -> dict[str, Any]:
    return verify_jwt(token, rules, keys or StaticKeys(KEYS), time.time())


def refused(token: Any, reason: str, rules: JwtRules = RULES, keys: Any = None) -> None:
    with pytest.raises(InvalidToken) as caught:
        verify_jwt(token, rules, keys or StaticKeys(KEYS), time.time())
    assert reason in caught.value.reason, caught.value.reason


# -- accepted ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg, kid", [("RS256", "rsa-1"), ("ES256", "ec-1")])
def test_a_valid_token_of_either_algorithm_gives_its_payload(alg: str, kid: str) -> None:
    payload = claims(role="admin")
    assert check(sign(payload, kid, alg)) == payload


def test_aud_may_be_a_list_naming_an_accepted_audience() -> None:
    payload = claims(aud=["someone-else", "other-app"])
    assert check(sign(payload))["aud"] == ["someone-else", "other-app"]


def test_a_cognito_access_token_is_matched_by_client_id_when_it_has_no_aud() -> None:
    payload = claims(aud=None, client_id=AUDIENCE, token_use="access", scope="openid profile")
    assert check(sign(payload))["client_id"] == AUDIENCE


def test_a_token_without_kid_uses_the_only_key_of_a_one_key_set() -> None:
    keys = StaticKeys([public_jwk("rsa-1", "RS256")])
    assert check(sign(claims(), kid=None, key_name="rsa-1"), keys=keys)["sub"] == "user-42"


def test_clock_skew_accepts_an_expiry_just_past_and_times_just_ahead() -> None:
    now = int(time.time())
    token = sign(claims(exp=now - 30, iat=now + 30, nbf=now + 30))
    assert check(token)["sub"] == "user-42"


def test_required_claims_and_scopes_when_present() -> None:
    rules = JwtRules(
        issuer=ISSUER,
        audiences=(AUDIENCE,),
        required_claims={"cognito:groups": "admins", "email_verified": True},
        required_scopes=("read", "write"),
    )
    token = sign(
        claims(**{"cognito:groups": ["users", "admins"], "email_verified": True, "scp": ["read"]},
               scope="write")
    )  # fmt: skip
    assert check(token, rules)["sub"] == "user-42"


def test_the_header_may_carry_typ_and_a_certificate_thumbprint() -> None:
    token = sign(claims(), headers={"typ": "at+jwt", "x5t": "bm90LXVzZWQ"})
    assert check(token)["sub"] == "user-42"


# -- refused: time, issuer, audience ----------------------------------------------------------


def test_expired() -> None:
    refused(sign(claims(exp=int(time.time()) - 61)), "expired")


def test_not_yet_valid() -> None:
    refused(sign(claims(nbf=int(time.time()) + 120)), "not yet valid")


def test_issued_in_the_future() -> None:
    refused(sign(claims(iat=int(time.time()) + 120)), "issued in the future")


def test_without_exp() -> None:
    refused(sign(claims(exp=None)), "exp must be a number")


def test_exp_further_ahead_than_the_lifetime_cap() -> None:
    refused(sign(claims(exp=int(time.time()) + 86400 + 3600)), "lifetime too long")


@pytest.mark.parametrize("value", ["1700000000", True, [1], {"a": 1}])
def test_exp_that_is_not_a_number(value: Any) -> None:
    refused(sign(claims(exp=value)), "exp must be a number")


def test_wrong_issuer() -> None:
    refused(sign(claims(iss="https://evil.example.test/")), "wrong issuer")


def test_issuer_must_match_exactly_trailing_slash_included() -> None:
    refused(sign(claims(iss=ISSUER.rstrip("/"))), "wrong issuer")


def test_wrong_audience() -> None:
    refused(sign(claims(aud="someone-else")), "audience not accepted")


def test_a_client_id_does_not_rescue_a_wrong_aud() -> None:
    refused(sign(claims(aud="someone-else", client_id=AUDIENCE)), "audience not accepted")


def test_no_audience_at_all() -> None:
    refused(sign(claims(aud=None)), "audience not accepted")


def test_sub_missing_or_empty() -> None:
    refused(sign(claims(sub=None)), "sub must be a non-empty string")
    refused(sign(claims(sub="")), "sub must be a non-empty string")


def test_required_claim_missing_or_different() -> None:
    rules = JwtRules(issuer=ISSUER, audiences=(AUDIENCE,), required_claims={"token_use": "access"})
    refused(sign(claims()), "required claim 'token_use'", rules)
    refused(sign(claims(token_use="id")), "required claim 'token_use'", rules)


def test_required_scope_missing() -> None:
    rules = JwtRules(issuer=ISSUER, audiences=(AUDIENCE,), required_scopes=("admin",))
    refused(sign(claims(scope="read write")), "required scope 'admin'", rules)


# -- refused: keys and algorithms -------------------------------------------------------------


def test_unknown_kid() -> None:
    refused(sign(claims(), kid="rotated-away", key_name="rsa-1"), "unknown kid")


def test_a_token_signed_by_another_key_under_a_known_kid() -> None:
    refused(sign(claims(), kid="rsa-1", key_name="rsa-2"), "bad signature")


def test_tampered_payload() -> None:
    header, _, signature = sign(claims()).split(".")
    forged = b64(json.dumps(claims(sub="admin")))
    refused(f"{header}.{forged}.{signature}", "bad signature")


def test_tampered_signature() -> None:
    header, payload, signature = sign(claims(), "ec-1", "ES256").split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=="))
    raw[5] ^= 0x40
    refused(f"{header}.{payload}.{b64(bytes(raw))}", "bad signature")


def test_alg_none_is_refused_even_with_an_empty_signature() -> None:
    header = b64(json.dumps({"alg": "none", "kid": "rsa-1"}))
    refused(f"{header}.{b64(json.dumps(claims()))}.", "algorithm 'none' not accepted")


def test_hs256_signed_with_the_public_key_is_refused() -> None:
    """The classic confusion: HMAC keyed with the RSA public key's PEM (or JWK) text."""
    from cryptography.hazmat.primitives import serialization

    from tests.jwt_helpers import rsa_private

    pem = (
        rsa_private("rsa-1")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}))
    payload = b64(json.dumps(claims()))
    for secret in (pem, json.dumps(KEYS[0]).encode()):
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        refused(f"{header}.{payload}.{b64(mac)}", "algorithm 'HS256' not accepted")


def test_an_algorithm_the_stack_did_not_configure_is_refused() -> None:
    rules = JwtRules(issuer=ISSUER, audiences=(AUDIENCE,), algorithms=("RS256",))
    refused(sign(claims(), "ec-1", "ES256"), "algorithm 'ES256' not accepted", rules)


def test_alg_switched_to_the_other_key_type_is_refused() -> None:
    """An ES256 header naming an RSA key (or the reverse) never reaches a verifier."""
    refused(sign(claims(), kid="rsa-1", alg="ES256", key_name="ec-1"), "not a ES256 key")
    refused(sign(claims(), kid="ec-1", alg="RS256", key_name="rsa-1"), "not a RS256 key")


def test_a_key_whose_alg_differs_from_the_tokens_is_not_used() -> None:
    keys = StaticKeys([{**public_jwk("rsa-1", "RS256"), "alg": "RS512"}])
    refused(sign(claims()), "not a RS256 key", keys=keys)


@pytest.mark.parametrize("field", ["jku", "x5u", "jwk", "x5c", "crit"])
def test_a_header_that_points_to_or_carries_a_key_is_refused(field: str) -> None:
    value: Any = {"jwk": KEYS[0], "x5c": ["MIIB"], "crit": ["exp"]}.get(
        field, "https://evil.example.test/keys"
    )
    refused(sign(claims(), headers={field: value}), f"header carries '{field}'")


def test_a_kid_is_only_compared_never_used_as_a_path() -> None:
    keys = StaticKeys(KEYS)
    refused(sign(claims(), kid="../../etc/passwd", key_name="rsa-1"), "unknown kid", keys=keys)
    assert keys.asked == ["../../etc/passwd"]


def test_a_kid_that_is_not_a_short_string() -> None:
    header = b64(json.dumps({"alg": "RS256", "kid": 7}))
    refused(f"{header}.{b64(json.dumps(claims()))}.c2ln", "kid must be")
    refused(sign(claims(), kid="k" * 257, key_name="rsa-1"), "kid must be")


# -- refused: malformed ------------------------------------------------------------------------


def test_oversized_token() -> None:
    token = sign(claims(padding="x" * MAX_TOKEN_BYTES))
    refused(token, "token longer than")


def test_oversized_header() -> None:
    refused(sign(claims(), headers={"x": "y" * 2000}), "header too long")


@pytest.mark.parametrize("token", [None, "", 7, "a.b", "a.b.c.d", "a.b.c.d.e"])
def test_not_three_parts_or_not_a_string(token: Any) -> None:
    with pytest.raises(InvalidToken):
        check(token)


def test_malformed_base64_in_each_part() -> None:
    header, payload, signature = sign(claims()).split(".")
    refused(f"{header}=.{payload}.{signature}", "header is not base64url")
    refused(f"{header}.{payload}+.{signature}", "payload is not base64url")
    refused(f"{header}.{payload}.{signature}==", "signature is not base64url")
    refused(f"{header}.{payload}.{signature[:-1]}!", "signature is not base64url")


def test_non_ascii_token() -> None:
    refused(sign(claims()) + "é", "not ASCII")


def test_malformed_json_header_and_payload() -> None:
    refused(f"{b64('{alg: RS256}')}.{b64('{}')}.c2ln", "header is not JSON")
    refused(f"{b64('[1]')}.{b64('{}')}.c2ln", "header is not a JSON object")
    dup = b64('{"alg":"RS256","alg":"none"}')
    refused(f"{dup}.{b64('{}')}.c2ln", "duplicate object key")


def test_payload_json_is_read_only_after_the_signature() -> None:
    """A payload that is not JSON under a bad signature is refused for the signature."""
    header = b64(json.dumps({"alg": "RS256", "kid": "rsa-1"}))
    refused(f"{header}.{b64('not json')}.{b64(b'x' * 256)}", "bad signature")


def test_payload_with_a_duplicate_claim_is_refused_even_when_signed() -> None:
    import jwt as pyjwt

    from tests.jwt_helpers import rsa_private

    expires = int(time.time()) + 60
    text = f'{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"a","sub":"admin","exp":{expires}}}'
    token = pyjwt.api_jws.encode(
        text.encode(), rsa_private("rsa-1"), algorithm="RS256", headers={"kid": "rsa-1"}
    )
    refused(token, "duplicate object key")


def test_nan_in_the_payload_is_refused_even_when_signed() -> None:
    import jwt as pyjwt

    from tests.jwt_helpers import rsa_private

    text = f'{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"a","exp":NaN}}'
    token = pyjwt.api_jws.encode(
        text.encode(), rsa_private("rsa-1"), algorithm="RS256", headers={"kid": "rsa-1"}
    )
    refused(token, "payload is not JSON")


# -- rules and helpers -------------------------------------------------------------------------


def test_rules_cannot_name_an_unsupported_algorithm_or_no_audience() -> None:
    for algorithms in (("none",), ("HS256",), ("RS256", "PS256"), ()):
        with pytest.raises(ValueError, match="algorithms must be"):
            JwtRules(issuer=ISSUER, audiences=(AUDIENCE,), algorithms=algorithms)
    with pytest.raises(ValueError, match="audience"):
        JwtRules(issuer=ISSUER, audiences=())


def test_json_equality_keeps_booleans_apart_from_numbers() -> None:
    assert json_equal(True, True) and json_equal(1, 1.0)
    assert not json_equal(True, 1) and not json_equal(0, False) and not json_equal("1", 1)
    assert claim_holds(["a", "b"], "b") and not claim_holds(["a"], "b")
    assert claim_holds(["a"], ["a"]) and not claim_holds([1], True)


def test_scopes_from_scope_text_and_scp_list_or_text() -> None:
    assert scopes_of({"scope": "a b", "scp": ["c"]}) == {"a", "b", "c"}
    assert scopes_of({"scp": "d e"}) == {"d", "e"}
    assert scopes_of({"scope": 7}) == set()


def test_mapped_claims_rename_and_never_let_the_token_supply_a_mapped_name() -> None:
    payload = {"sub": "u", "cognito:groups": ["admins"], "groups": ["forged"]}
    assert mapped_claims(payload, {"groups": "cognito:groups"})["groups"] == ["admins"]
    assert "groups" not in mapped_claims(
        {"sub": "u", "groups": ["x"]}, {"groups": "cognito:groups"}
    )
