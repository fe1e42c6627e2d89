"""Connection tokens: format, round-trip, and every way a token is refused."""

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

import handlers.tokens
from handlers.tokens import (
    CLOCK_SKEW_SECONDS,
    DEFAULT_MAX_LIFETIME_SECONDS,
    MAX_TOKEN_LENGTH,
    InvalidToken,
    mint_token,
    verify_token,
)
from tests.helpers import SECRET

NOW = 1_795_000_000
URLSAFE_ALPHABET = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(payload_part: str, secret: str = SECRET) -> str:
    digest = hmac.new(secret.encode(), payload_part.encode("ascii"), hashlib.sha256).digest()
    return b64url(digest)


def signed_token(payload: bytes, secret: str = SECRET) -> str:
    """A token for arbitrary payload bytes, correctly signed so it passes the signature check."""
    payload_part = b64url(payload)
    return f"{payload_part}.{sign(payload_part, secret)}"


def signed_json(payload: Any) -> str:
    return signed_token(json.dumps(payload).encode())


def refusal(token: Any, secret: str = SECRET, now: float = NOW, **options: Any) -> str:
    with pytest.raises(InvalidToken) as refused:
        verify_token(token, secret, now=now, **options)
    return refused.value.reason


# --- minting and the round trip -----------------------------------------------------------


def test_minted_token_verifies_to_its_subject_and_expiry() -> None:
    token = mint_token("user-1", SECRET, ttl_seconds=600, now=NOW)

    claims = verify_token(token, SECRET, now=NOW + 1)

    assert claims == {"sub": "user-1", "exp": NOW + 600}


def test_default_ttl_is_one_hour() -> None:
    token = mint_token("user-1", SECRET, now=NOW)

    assert verify_token(token, SECRET, now=NOW)["exp"] == NOW + 3600


def test_bytes_secret_verifies_like_the_same_text_secret() -> None:
    token = mint_token("user-1", SECRET.encode(), now=NOW)

    assert verify_token(token, SECRET, now=NOW)["sub"] == "user-1"


def test_token_format_is_unpadded_base64url_payload_dot_hmac_of_payload_part() -> None:
    token = mint_token("user-é-1", SECRET, ttl_seconds=90, now=NOW)

    payload_part, signature_part = token.split(".")
    assert set(payload_part) <= URLSAFE_ALPHABET
    assert set(signature_part) <= URLSAFE_ALPHABET  # no "=" padding, no "+" or "/"
    assert json.loads(b64url_decode(payload_part)) == {"sub": "user-é-1", "exp": NOW + 90}
    # Recomputed independently: HMAC-SHA256 over the ASCII payload part, base64url, unpadded.
    assert signature_part == sign(payload_part)
    assert len(signature_part) == 43  # 32 bytes unpadded


def test_extra_claims_are_kept_in_the_payload() -> None:
    token = mint_token("user-1", SECRET, ttl_seconds=60, claims={"role": "viewer"}, now=NOW)

    assert verify_token(token, SECRET, now=NOW) == {
        "sub": "user-1",
        "exp": NOW + 60,
        "role": "viewer",
    }


def test_extra_claims_cannot_override_sub_or_exp() -> None:
    token = mint_token(
        "user-1",
        SECRET,
        ttl_seconds=60,
        claims={"sub": "admin", "exp": NOW + 10**9, "role": "viewer"},
        now=NOW,
    )

    claims = verify_token(token, SECRET, now=NOW)

    assert claims["sub"] == "user-1"
    assert claims["exp"] == NOW + 60
    assert claims["role"] == "viewer"


def test_token_is_valid_until_just_before_its_expiry() -> None:
    token = mint_token("user-1", SECRET, ttl_seconds=60, now=NOW)

    assert verify_token(token, SECRET, now=NOW + 59.999)["sub"] == "user-1"


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", 12345, b"bytes.token", ["a", "b"]])
def test_missing_empty_or_non_string_token_is_refused(token: Any) -> None:
    assert refusal(token) == "missing token"


@pytest.mark.parametrize("token", ["no-dot-at-all", "a.b.c", "..", "a.b.c.d"])
def test_token_without_exactly_two_parts_is_refused(token: str) -> None:
    assert refusal(token) == "malformed token: expected two dot-separated parts"


def test_minted_token_with_an_extra_part_is_refused() -> None:
    token = mint_token("user-1", SECRET, now=NOW) + "." + sign("x")

    assert refusal(token) == "malformed token: expected two dot-separated parts"


def test_non_ascii_payload_part_is_refused() -> None:
    signature = mint_token("user-1", SECRET, now=NOW).split(".")[1]

    assert refusal(f"é.{signature}") == "malformed token: non-ASCII payload"


@pytest.mark.parametrize(
    "signature_part",
    [
        "",  # empty
        "A",  # one character cannot be base64
        "abc=",  # padded
        "ab+c",  # standard alphabet, not url-safe
        "ab/c",
    ],
)
def test_signature_part_that_is_not_base64url_is_refused(signature_part: str) -> None:
    payload_part = mint_token("user-1", SECRET, now=NOW).split(".")[0]

    assert refusal(f"{payload_part}.{signature_part}") == "not base64url"


@pytest.mark.parametrize("payload_part", ["A", "abcde", "ab=c"])
def test_correctly_signed_payload_part_that_is_not_base64url_is_refused(payload_part: str) -> None:
    assert refusal(f"{payload_part}.{sign(payload_part)}") == "not base64url"


def test_payload_re_encoded_with_another_subject_but_the_old_signature_is_refused() -> None:
    token = mint_token("user-1", SECRET, ttl_seconds=600, now=NOW)
    payload_part, signature_part = token.split(".")
    forged = dict(json.loads(b64url_decode(payload_part)), sub="admin")
    forged_part = b64url(json.dumps(forged, separators=(",", ":"), sort_keys=True).encode())

    assert refusal(f"{forged_part}.{signature_part}") == "bad signature"


def test_tampered_signature_is_refused() -> None:
    payload_part, signature_part = mint_token("user-1", SECRET, now=NOW).split(".")
    signature = bytearray(b64url_decode(signature_part))
    signature[0] ^= 0x01

    assert refusal(f"{payload_part}.{b64url(bytes(signature))}") == "bad signature"


def test_truncated_signature_is_refused() -> None:
    payload_part, signature_part = mint_token("user-1", SECRET, now=NOW).split(".")

    assert refusal(f"{payload_part}.{signature_part[:40]}") == "bad signature"


def test_token_signed_with_another_secret_is_refused() -> None:
    token = mint_token("user-1", "some-other-secret", now=NOW)

    assert refusal(token) == "bad signature"


@pytest.mark.parametrize("junk", ["~~", "!!!", "$$$$$$"])
def test_signature_with_characters_outside_the_base64url_alphabet_is_refused(junk: str) -> None:
    token = mint_token("user-1", SECRET, now=NOW)

    assert refusal(token + junk) == "not base64url"


def test_signature_spelled_with_non_canonical_trailing_bits_is_refused() -> None:
    token = mint_token("user-1", SECRET, now=NOW)
    payload_part, signature_part = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature_part[-1])
    sibling = alphabet[last ^ 1]  # same 4 significant bits, different unused bits

    assert refusal(f"{payload_part}.{signature_part[:-1]}{sibling}") == "not base64url"


def test_expired_token_is_refused() -> None:
    token = mint_token("user-1", SECRET, ttl_seconds=60, now=NOW)

    assert refusal(token, now=NOW + 61) == "expired"


def test_token_is_expired_at_exactly_its_expiry() -> None:
    token = mint_token("user-1", SECRET, ttl_seconds=60, now=NOW)

    assert refusal(token, now=NOW + 60) == "expired"


def test_verify_uses_the_clock_when_now_is_not_given() -> None:
    token = mint_token("user-1", SECRET, ttl_seconds=60, now=NOW)  # expired long ago

    with pytest.raises(InvalidToken) as refused:
        verify_token(token, SECRET)

    assert refused.value.reason == "expired"


@pytest.mark.parametrize("payload", [b"not json", b"{", b"\xff\xfe\x00", b""])
def test_signed_payload_that_is_not_json_is_refused(payload: bytes) -> None:
    token = signed_token(payload)

    expected = "not base64url" if not payload else "malformed payload: not JSON"
    assert refusal(token) == expected


@pytest.mark.parametrize("payload", [["user-1", NOW + 60], "user-1", 42, None, True])
def test_signed_payload_that_is_not_an_object_is_refused(payload: Any) -> None:
    assert refusal(signed_json(payload)) == "malformed payload: not an object"


@pytest.mark.parametrize(
    "payload",
    [
        {"exp": NOW + 60},
        {"sub": "", "exp": NOW + 60},
        {"sub": 42, "exp": NOW + 60},
        {"sub": None, "exp": NOW + 60},
        {"sub": ["user-1"], "exp": NOW + 60},
    ],
)
def test_signed_payload_without_a_string_subject_is_refused(payload: dict[str, Any]) -> None:
    assert refusal(signed_json(payload)) == "malformed payload: sub must be a non-empty string"


@pytest.mark.parametrize(
    "payload",
    [
        {"sub": "user-1"},
        {"sub": "user-1", "exp": str(NOW + 60)},
        {"sub": "user-1", "exp": True},
        {"sub": "user-1", "exp": None},
        {"sub": "user-1", "exp": [NOW + 60]},
    ],
)
def test_signed_payload_without_a_numeric_expiry_is_refused(payload: dict[str, Any]) -> None:
    assert refusal(signed_json(payload)) == "malformed payload: exp must be an integer"


@pytest.mark.parametrize(
    "exp",
    [NOW + 0.5, float(NOW + 60), 1e308, 1.7976931348623157e308],
    ids=["fraction", "integral-float", "1e308", "max-float"],
)
def test_signed_payload_with_a_non_integer_expiry_is_refused(exp: float) -> None:
    assert refusal(signed_json({"sub": "user-1", "exp": exp})) == (
        "malformed payload: exp must be an integer"
    )


@pytest.mark.parametrize(
    "payload",
    [
        b'{"sub": "user-1", "exp": NaN}',
        b'{"sub": "user-1", "exp": Infinity}',
        b'{"sub": "user-1", "exp": -Infinity}',
        b'{"sub": "user-1", "exp": 1e400}',  # json.loads makes this inf
        b'{"sub": "user-1", "exp": 1795000060, "x": NaN}',  # anywhere in the payload
    ],
    ids=["nan", "infinity", "minus-infinity", "overflow", "nan-elsewhere"],
)
def test_signed_payload_with_non_standard_json_numbers_is_refused(payload: bytes) -> None:
    assert refusal(signed_token(payload)) == "malformed payload: not JSON"


@pytest.mark.parametrize("exp", [10**12, 10**400], ids=["year-33658", "10^400"])
def test_expiry_far_in_the_future_is_refused_as_too_long(exp: int) -> None:
    assert refusal(signed_json({"sub": "user-1", "exp": exp})) == "lifetime too long"


def test_lifetime_cap_defaults_to_one_day_plus_clock_skew() -> None:
    limit = NOW + DEFAULT_MAX_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS
    at_limit = signed_json({"sub": "user-1", "exp": limit})
    beyond = signed_json({"sub": "user-1", "exp": limit + 1})

    assert verify_token(at_limit, SECRET, now=NOW)["exp"] == limit
    assert refusal(beyond) == "lifetime too long"


def test_lifetime_cap_is_the_given_max_lifetime() -> None:
    token = mint_token("user-1", SECRET, ttl_seconds=7200, now=NOW)

    assert verify_token(token, SECRET, now=NOW, max_lifetime=7200)["sub"] == "user-1"
    assert refusal(token, max_lifetime=3600) == "lifetime too long"
    # The cap is on what is left: the same token is accepted once it has less to live.
    assert verify_token(token, SECRET, now=NOW + 3600, max_lifetime=3600)["sub"] == "user-1"


def test_token_longer_than_the_limit_is_refused() -> None:
    assert refusal("a" * (MAX_TOKEN_LENGTH + 1)) == "token too long"


def test_correctly_signed_token_longer_than_the_limit_is_refused() -> None:
    token = mint_token("user-1", SECRET, claims={"pad": "x" * MAX_TOKEN_LENGTH}, now=NOW)
    assert len(token) > MAX_TOKEN_LENGTH

    assert refusal(token) == "token too long"


def test_invalid_token_is_a_value_error_whose_message_is_the_reason() -> None:
    with pytest.raises(ValueError, match=r"^expired$"):
        verify_token(mint_token("u", SECRET, ttl_seconds=1, now=NOW), SECRET, now=NOW + 5)


# --- mint_token input validation ----------------------------------------------------------


@pytest.mark.parametrize("user_id", ["", None, 42])
def test_mint_refuses_an_empty_or_non_string_user_id(user_id: Any) -> None:
    with pytest.raises(ValueError, match="user_id must be a non-empty string"):
        mint_token(user_id, SECRET)


@pytest.mark.parametrize("ttl", [0, -1, -3600, True, False, 1.5, "60", None])
def test_mint_refuses_a_ttl_that_is_not_a_positive_integer(ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl_seconds must be a positive integer"):
        mint_token("user-1", SECRET, ttl_seconds=ttl)


def test_mint_refuses_a_ttl_beyond_the_default_lifetime_cap() -> None:
    with pytest.raises(ValueError, match=r"ttl_seconds=86401 exceeds max_lifetime=86400"):
        mint_token("user-1", SECRET, ttl_seconds=DEFAULT_MAX_LIFETIME_SECONDS + 1)


def test_mint_accepts_a_ttl_up_to_the_given_cap_and_the_token_verifies_under_it() -> None:
    week = 7 * 24 * 3600
    token = mint_token("user-1", SECRET, ttl_seconds=week, now=NOW, max_lifetime=week)

    assert verify_token(token, SECRET, now=NOW, max_lifetime=week)["exp"] == NOW + week
    assert mint_token("user-1", SECRET, ttl_seconds=DEFAULT_MAX_LIFETIME_SECONDS)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_mint_refuses_claims_that_are_not_standard_json(value: float) -> None:
    with pytest.raises(ValueError, match="claims must be standard JSON"):
        mint_token("user-1", SECRET, claims={"score": value})


@pytest.mark.parametrize("secret", ["", b""])
def test_mint_refuses_an_empty_secret(secret: str | bytes) -> None:
    with pytest.raises(ValueError, match="secret must not be empty"):
        mint_token("user-1", secret)


# --- constant-time comparison -------------------------------------------------------------


@pytest.fixture
def compare_digest_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(handlers.tokens.hmac, "compare_digest", spy)
    return calls


def test_signature_is_compared_with_hmac_compare_digest(
    compare_digest_calls: list[tuple[bytes, bytes]],
) -> None:
    token = mint_token("user-1", SECRET, now=NOW)
    payload_part, signature_part = token.split(".")

    verify_token(token, SECRET, now=NOW)

    expected = hmac.new(SECRET.encode(), payload_part.encode(), hashlib.sha256).digest()
    assert compare_digest_calls == [(b64url_decode(signature_part), expected)]


def test_bad_signature_is_detected_by_hmac_compare_digest(
    compare_digest_calls: list[tuple[bytes, bytes]],
) -> None:
    token = mint_token("user-1", "some-other-secret", now=NOW)

    assert refusal(token) == "bad signature"
    assert len(compare_digest_calls) == 1
    presented, expected = compare_digest_calls[0]
    assert presented == b64url_decode(token.split(".")[1])
    assert presented != expected
