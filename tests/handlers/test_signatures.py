"""The pure-Python RS256 and ES256 verifiers against published vectors and a real library.

Vectors: RFC 7515 appendix A.2 (RS256) and A.3 (ES256), and Project Wycheproof's
``rsa_signature_2048_sha256_test.json`` and ``ecdsa_secp256r1_sha256_p1363_test.json``
(tests/vectors/, see its README): every ``valid`` vector must verify and every
``invalid`` one must not (``acceptable`` ones are legacy encodings: either answer is
allowed, and the answer is pinned so a change is noticed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from handlers import b64url
from handlers.signatures import (
    GX,
    GY,
    EcKey,
    InvalidKey,
    N,
    P,
    RsaKey,
    ec_key,
    key_from_jwk,
    rsa_key,
    verify,
    verify_es256,
    verify_rs256,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

# RFC 7515 appendix A.2: {"alg":"RS256"} over the example payload, and the RSA key of A.2.1.
RFC7515_A2_JWS = (
    "eyJhbGciOiJSUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5"
    "jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07"
    "Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI"
    "8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
)
RFC7515_A2_JWK = {
    "kty": "RSA",
    "n": (
        "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm"
        "4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5re"
        "xMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFv"
        "UK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
    ),
    "e": "AQAB",
}
# RFC 7515 appendix A.3: {"alg":"ES256"} over the same payload, and the P-256 key of A.3.1.
RFC7515_A3_JWS = (
    "eyJhbGciOiJFUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
)
RFC7515_A3_JWK = {
    "kty": "EC",
    "crv": "P-256",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}


def split(jws: str) -> tuple[bytes, bytes]:
    header, payload, signature = jws.split(".")
    return f"{header}.{payload}".encode(), b64url.decode(signature)


# -- RFC 7515 ---------------------------------------------------------------------------------


def test_rfc7515_a2_rs256_example_verifies() -> None:
    message, signature = split(RFC7515_A2_JWS)
    assert verify("RS256", key_from_jwk(RFC7515_A2_JWK), message, signature)


def test_rfc7515_a3_es256_example_verifies() -> None:
    message, signature = split(RFC7515_A3_JWS)
    assert verify("ES256", key_from_jwk(RFC7515_A3_JWK), message, signature)


@pytest.mark.parametrize(
    "jws, jwk", [(RFC7515_A2_JWS, RFC7515_A2_JWK), (RFC7515_A3_JWS, RFC7515_A3_JWK)]
)
def test_rfc7515_examples_fail_with_one_payload_byte_changed(jws: str, jwk: dict[str, str]) -> None:
    message, signature = split(jws)
    alg = "RS256" if jwk["kty"] == "RSA" else "ES256"
    tampered = message[:-1] + bytes([message[-1] ^ 1])
    assert not verify(alg, key_from_jwk(jwk), tampered, signature)


def test_an_algorithm_never_verifies_with_the_other_key_type() -> None:
    message, signature = split(RFC7515_A2_JWS)
    assert not verify("ES256", key_from_jwk(RFC7515_A2_JWK), message, signature)
    assert not verify("HS256", key_from_jwk(RFC7515_A2_JWK), message, signature)
    message, signature = split(RFC7515_A3_JWS)
    assert not verify("RS256", key_from_jwk(RFC7515_A3_JWK), message, signature)


# -- Wycheproof -------------------------------------------------------------------------------


def wycheproof(name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    document = json.loads((VECTORS / name).read_text())
    return [(group, test) for group in document["testGroups"] for test in group["tests"]]


def _ec_group_key(group: dict[str, Any]) -> EcKey:
    public = group["publicKey"]
    return ec_key(int(public["wx"], 16), int(public["wy"], 16))


RSA_CASES = wycheproof("rsa_signature_2048_sha256_test.json")
EC_CASES = wycheproof("ecdsa_secp256r1_sha256_p1363_test.json")
ACCEPTABLE = {
    ("rsa", 8): False,  # MissingNull: the DigestInfo without its NULL is not the one encoding
}


def _expect(kind: str, test: dict[str, Any]) -> bool:
    if test["result"] == "acceptable":
        return ACCEPTABLE[(kind, test["tcId"])]
    return bool(test["result"] == "valid")


def test_wycheproof_files_hold_what_the_tests_expect() -> None:
    assert len(RSA_CASES) == 259 and len(EC_CASES) == 262
    assert sum(t["result"] == "valid" for _, t in RSA_CASES) >= 5
    assert sum(t["result"] == "invalid" for _, t in EC_CASES) >= 80


@pytest.mark.parametrize("group, test", RSA_CASES, ids=[f"tc{t['tcId']}" for _, t in RSA_CASES])
def test_wycheproof_rsa_pkcs1_sha256(group: dict[str, Any], test: dict[str, Any]) -> None:
    key = key_from_jwk(group["keyJwk"])
    found = verify_rs256(
        key,  # type: ignore[arg-type]
        bytes.fromhex(test["msg"]),
        bytes.fromhex(test["sig"]),
    )
    assert found is _expect("rsa", test), (test["comment"], test["flags"])


@pytest.mark.parametrize("group, test", EC_CASES, ids=[f"tc{t['tcId']}" for _, t in EC_CASES])
def test_wycheproof_ecdsa_p256_sha256_p1363(group: dict[str, Any], test: dict[str, Any]) -> None:
    found = verify_es256(
        _ec_group_key(group), bytes.fromhex(test["msg"]), bytes.fromhex(test["sig"])
    )
    assert found is _expect("ec", test), (test["comment"], test["flags"])


# -- against cryptography ---------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2048, 3072, 4096])
def test_rs256_signatures_by_cryptography_verify_and_a_flipped_bit_does_not(bits: int) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    numbers = private.public_key().public_numbers()
    key = rsa_key(numbers.n, numbers.e)
    for message in (b"", b"x", b"header.payload" * 100):
        signature = private.sign(message, padding.PKCS1v15(), hashes.SHA256())
        assert verify_rs256(key, message, signature)
        flipped = bytearray(signature)
        flipped[len(flipped) // 2] ^= 0x01
        assert not verify_rs256(key, message, bytes(flipped))
        assert not verify_rs256(key, message + b"!", signature)


def test_rs256_refuses_pss_signatures_and_other_hashes_of_the_same_key() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.public_key().public_numbers()
    key = rsa_key(numbers.n, numbers.e)
    message = b"a.b"
    pss = private.sign(
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    sha384 = private.sign(message, padding.PKCS1v15(), hashes.SHA384())
    assert not verify_rs256(key, message, pss)
    assert not verify_rs256(key, message, sha384)


def test_es256_signatures_by_cryptography_verify_for_many_keys_and_messages() -> None:
    for index in range(20):
        private = ec.generate_private_key(ec.SECP256R1())
        numbers = private.public_key().public_numbers()
        key = ec_key(numbers.x, numbers.y)
        message = f"message {index}".encode() * index
        r, s = utils.decode_dss_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))
        raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        assert verify_es256(key, message, raw)
        assert not verify_es256(key, message + b".", raw)
        # the same (r, s) with s negated is also a valid ECDSA signature: accepted, as
        # ECDSA is malleable (a JWT is not a nonce), and r, s stay within [1, n-1]
        assert verify_es256(key, message, r.to_bytes(32, "big") + (N - s).to_bytes(32, "big"))


def test_es256_refuses_der_encoded_and_wrong_length_signatures() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.public_key().public_numbers()
    key = ec_key(numbers.x, numbers.y)
    der = private.sign(b"m", ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert verify_es256(key, b"m", raw)
    assert not verify_es256(key, b"m", der)
    assert not verify_es256(key, b"m", raw[:-1])
    assert not verify_es256(key, b"m", raw + b"\x00")


@pytest.mark.parametrize(
    "r, s",
    [(0, 1), (1, 0), (0, 0), (N, 1), (1, N), (N + 1, 1)],
    ids=["r=0", "s=0", "both-0", "r=n", "s=n", "r=n+1"],
)
def test_es256_refuses_r_and_s_outside_one_to_n_minus_one(r: int, s: int) -> None:
    key = ec_key(GX, GY)
    raw = (r % 2**256).to_bytes(32, "big") + (s % 2**256).to_bytes(32, "big")
    assert not verify_es256(key, b"m", raw)


# -- keys -------------------------------------------------------------------------------------


def test_a_point_off_the_curve_is_not_a_key() -> None:
    with pytest.raises(InvalidKey, match="not a point on P-256"):
        ec_key(GX, GY + 1)
    with pytest.raises(InvalidKey, match="not a point on P-256"):
        ec_key(GX + P, GY)  # coordinates must be reduced


def test_rsa_keys_below_2048_bits_or_with_a_bad_exponent_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    numbers = small.public_key().public_numbers()
    with pytest.raises(InvalidKey, match="1024 bits"):
        rsa_key(numbers.n, numbers.e)
    big = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n = big.public_key().public_numbers().n
    for e in (1, 2, 65536, 2**33 + 1):
        with pytest.raises(InvalidKey, match="exponent"):
            rsa_key(n, e)
    assert isinstance(rsa_key(n, 3), RsaKey)


@pytest.mark.parametrize(
    "jwk, why",
    [
        ({"kty": "oct", "k": "c2VjcmV0"}, "key type 'oct'"),
        ({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}, "P-384"),
        ({**RFC7515_A3_JWK, "x": RFC7515_A3_JWK["x"][:-3]}, "must be 32 bytes"),
        ({**RFC7515_A3_JWK, "y": RFC7515_A3_JWK["y"] + "="}, "not base64url"),
        ({**RFC7515_A2_JWK, "n": RFC7515_A2_JWK["n"].replace("-", "+")}, "not base64url"),
        ({"kty": "RSA", "e": "AQAB"}, "'n'"),
    ],
    ids=["symmetric", "p384", "short-x", "padded-y", "base64-not-url", "no-modulus"],
)
def test_jwks_that_cannot_be_keys_are_refused_with_the_reason(
    jwk: dict[str, str], why: str
) -> None:
    with pytest.raises(InvalidKey, match=why.replace("(", r"\(")):
        key_from_jwk(jwk)


def test_strict_base64url_refuses_padding_bad_characters_and_noncanonical_spellings() -> None:
    assert b64url.decode("QQ") == b"A"
    for bad in ("QQ==", "Q", "QR", "Q+", "Q/", "Q Q", "QQ\n", "é"):
        with pytest.raises(b64url.InvalidBase64):
            b64url.decode(bad)
