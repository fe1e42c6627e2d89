"""``handlers.jwks.KeySet`` against a real HTTP issuer on 127.0.0.1, with a fake clock."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from handlers.jwks import (
    FIRST_RETRY_SECONDS,
    Fetched,
    JwksError,
    KeySet,
    check_url,
    discovery_url,
    fetch_json,
    max_age_of,
    parse_jwks,
)
from handlers.jwt_verify import JwtRules, verify_jwt
from handlers.tokens import InvalidToken
from tests.jwt_helpers import AUDIENCE, FakeClock, LocalIssuer, claims, public_jwk, sign

DISCOVERY = "/.well-known/openid-configuration"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer([public_jwk("rsa-1", "RS256"), public_jwk("ec-1", "ES256")]) as running:
        yield running


def key_set(issuer: LocalIssuer, clock: FakeClock, **options: object) -> KeySet:
    return KeySet(issuer.url, clock=clock, **options)  # type: ignore[arg-type]


def verify(token: str, issuer: LocalIssuer, keys: KeySet) -> dict[str, object]:
    rules = JwtRules(issuer=issuer.url, audiences=(AUDIENCE,))
    return verify_jwt(token, rules, keys, time.time())


# -- steady state --------------------------------------------------------------------------


def test_discovery_then_one_fetch_serves_every_token_of_the_container(
    issuer: LocalIssuer,
) -> None:
    clock = FakeClock()
    keys = key_set(issuer, clock)
    for index in range(50):
        alg, kid = ("RS256", "rsa-1") if index % 2 else ("ES256", "ec-1")
        token = sign(claims(iss=issuer.url, sub=f"user-{index}"), kid, alg)
        assert verify(token, issuer, keys)["sub"] == f"user-{index}"
        clock.advance(10)  # 500 s in all: within the default hour
    assert issuer.served.count(DISCOVERY) == 1
    assert issuer.served.count("/jwks.json") == 1
    assert keys.fetches == 1


def test_a_configured_jwks_url_skips_discovery(issuer: LocalIssuer) -> None:
    keys = KeySet("https://issuer.example.test/", issuer.jwks_url, clock=FakeClock())
    assert [k.kid for k in keys.candidates("rsa-1")] == ["rsa-1"]
    assert issuer.served.count(DISCOVERY) == 0
    assert issuer.served.count("/jwks.json") == 1


def test_keys_are_fetched_again_after_the_max_age(issuer: LocalIssuer) -> None:
    clock = FakeClock()
    keys = key_set(issuer, clock, max_age=600)
    keys.candidates("rsa-1")
    clock.advance(599)
    keys.candidates("rsa-1")
    assert keys.fetches == 1
    clock.advance(2)
    keys.candidates("rsa-1")
    assert keys.fetches == 2


def test_cache_control_max_age_shortens_the_cache_but_not_below_the_refresh_interval(
    issuer: LocalIssuer,
) -> None:
    issuer.served.cache_control = "public, max-age=120, must-revalidate"
    clock = FakeClock()
    keys = key_set(issuer, clock)
    keys.candidates("rsa-1")
    clock.advance(121)
    keys.candidates("rsa-1")
    assert keys.fetches == 2
    issuer.served.cache_control = "no-store"
    clock.advance(1000)
    keys.candidates("rsa-1")
    clock.advance(30)  # no-store: still kept for the refresh interval (60 s)
    keys.candidates("rsa-1")
    assert keys.fetches == 3
    issuer.served.cache_control = "max-age=999999"
    clock.advance(61)
    keys.candidates("rsa-1")
    clock.advance(3601)  # capped at max_age (one hour)
    keys.candidates("rsa-1")
    assert keys.fetches == 5


# -- rotation and forged kids ----------------------------------------------------------------


def test_a_rotated_key_is_found_by_refreshing_on_its_unknown_kid(issuer: LocalIssuer) -> None:
    clock = FakeClock()
    keys = key_set(issuer, clock)
    assert verify(sign(claims(iss=issuer.url)), issuer, keys)["sub"] == "user-42"
    issuer.served.jwks = {"keys": [public_jwk("rsa-2", "RS256"), public_jwk("rsa-1", "RS256")]}
    clock.advance(61)
    token = sign(claims(iss=issuer.url, sub="rotated"), "rsa-2")
    assert verify(token, issuer, keys)["sub"] == "rotated"
    assert keys.fetches == 2


def test_an_unknown_kid_right_after_a_fetch_waits_for_the_refresh_interval(
    issuer: LocalIssuer,
) -> None:
    clock = FakeClock()
    keys = key_set(issuer, clock)
    keys.candidates("rsa-1")
    issuer.served.jwks = {"keys": [public_jwk("rsa-2", "RS256")]}
    clock.advance(30)
    with pytest.raises(InvalidToken, match="unknown kid"):
        verify(sign(claims(iss=issuer.url), "rsa-2"), issuer, keys)
    assert keys.fetches == 1
    clock.advance(31)
    assert verify(sign(claims(iss=issuer.url), "rsa-2"), issuer, keys)["sub"] == "user-42"
    assert keys.fetches == 2


def test_a_flood_of_forged_kids_costs_the_issuer_one_fetch_per_refresh_interval(
    issuer: LocalIssuer,
) -> None:
    clock = FakeClock()
    keys = key_set(issuer, clock, refresh_interval=60)
    forged = 0
    for second in range(300):  # five minutes, 5 forged tokens a second
        for index in range(5):
            token = sign(claims(iss=issuer.url), f"forged-{second}-{index}", key_name="rsa-1")
            with pytest.raises(InvalidToken, match="unknown kid"):
                verify(token, issuer, keys)
            forged += 1
        clock.advance(1)
    assert forged == 1500
    assert keys.fetches <= 6  # the first, then at most one each 60 s
    assert issuer.served.count("/jwks.json") == keys.fetches


# -- failures ----------------------------------------------------------------------------


def test_a_failed_refresh_keeps_the_keys_already_held(issuer: LocalIssuer) -> None:
    clock = FakeClock()
    keys = key_set(issuer, clock, max_age=300)
    keys.candidates("rsa-1")
    issuer.served.status = 503
    clock.advance(301)
    token = sign(claims(iss=issuer.url))
    assert verify(token, issuer, keys)["sub"] == "user-42"  # stale keys still verify
    assert keys.fetches == 2
    clock.advance(30)
    verify(token, issuer, keys)
    assert keys.fetches == 2  # the failed one is retried after the refresh interval
    issuer.served.status = 200
    clock.advance(31)
    verify(token, issuer, keys)
    assert keys.fetches == 3


def test_a_refresh_returning_garbage_keeps_the_keys(issuer: LocalIssuer) -> None:
    clock = FakeClock()
    keys = key_set(issuer, clock, max_age=300)
    keys.candidates("rsa-1")
    issuer.served.jwks = {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}
    clock.advance(301)
    assert [k.kid for k in keys.candidates("rsa-1")] == ["rsa-1"]
    assert keys.held() == 2


def test_without_any_keys_every_token_is_refused_and_retries_are_bounded(
    issuer: LocalIssuer,
) -> None:
    issuer.served.status = 500
    clock = FakeClock()
    keys = key_set(issuer, clock)
    token = sign(claims(iss=issuer.url))
    for _ in range(10):
        with pytest.raises(InvalidToken, match="keys are unavailable"):
            verify(token, issuer, keys)
    assert keys.fetches == 1
    clock.advance(FIRST_RETRY_SECONDS)
    issuer.served.status = 200
    assert verify(token, issuer, keys)["sub"] == "user-42"


def test_discovery_must_name_the_configured_issuer(issuer: LocalIssuer) -> None:
    issuer.served.issuer = "https://someone-else.example.test"
    keys = key_set(issuer, FakeClock())
    with pytest.raises(JwksError, match="names issuer"):
        keys.candidates("rsa-1")
    assert issuer.served.count("/jwks.json") == 0


def test_discovery_must_name_an_https_or_local_jwks_uri(issuer: LocalIssuer) -> None:
    issuer.served.jwks_uri = "http://keys.example.test/jwks.json"
    with pytest.raises(JwksError, match="must be https://"):
        key_set(issuer, FakeClock()).candidates("rsa-1")


def test_a_response_over_the_size_cap_is_refused(issuer: LocalIssuer) -> None:
    with pytest.raises(JwksError, match="byte limit"):
        fetch_json(issuer.jwks_url, timeout=2, max_bytes=100)


def test_an_unreachable_issuer_fails_within_the_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(JwksError):
        fetch_json("http://127.0.0.1:9/jwks.json", timeout=1, max_bytes=1000)
    assert time.monotonic() - started < 5


# -- pure parts ------------------------------------------------------------------------------


def test_urls_must_be_https_except_on_this_machine() -> None:
    for good in (
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc",
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://[::1]:9/x",
    ):
        assert check_url(good) == good
    for bad in (
        "http://issuer.example.test/",
        "ftp://x/",
        "file:///etc/passwd",
        "https://",
        "https://user:pw@issuer.example.test/",
        "",
        None,
    ):
        with pytest.raises(ValueError):
            check_url(bad)


def test_discovery_url_drops_the_issuers_trailing_slash() -> None:
    assert discovery_url("https://t.auth0.com/") == f"https://t.auth0.com{DISCOVERY}"
    assert discovery_url("https://c/eu_1") == f"https://c/eu_1{DISCOVERY}"


def test_max_age_of_cache_control() -> None:
    assert max_age_of("public, max-age=3600") == 3600
    assert max_age_of('max-age="60"') == 60
    assert max_age_of("no-cache") == 0
    assert max_age_of("public") is None
    assert max_age_of(None) is None


def test_parse_jwks_keeps_signature_keys_it_can_use_and_skips_the_rest() -> None:
    document = {
        "keys": [
            public_jwk("rsa-1", "RS256"),
            {**public_jwk("enc", "RS256"), "use": "enc"},
            {**public_jwk("ops", "RS256"), "key_ops": ["encrypt"]},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**public_jwk("ec-1", "ES256"), "crv": "P-384"},
            "not an object",
            public_jwk("ec-1", "ES256"),
        ]
    }
    assert [key.kid for key in parse_jwks(document)] == ["rsa-1", "ec-1"]
    with pytest.raises(JwksError, match="no usable"):
        parse_jwks({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})
    with pytest.raises(JwksError, match="not a JWK Set"):
        parse_jwks({"keys": "x"})


def test_a_token_without_kid_is_refused_when_the_set_holds_several_keys() -> None:
    fetched = Fetched({"keys": [public_jwk("rsa-1", "RS256"), public_jwk("rsa-2", "RS256")]}, None)
    keys = KeySet(
        "https://issuer.example.test/",
        "https://issuer.example.test/jwks",
        fetch=lambda *_: fetched,
        clock=FakeClock(),
    )
    assert keys.candidates(None) == []
    assert len(keys.candidates("rsa-2")) == 1
