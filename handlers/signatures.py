"""Public-key signature verification for JWTs, in pure Python (stdlib only).

The Lambda Python runtime ships no ``cryptography``, so the two algorithms the
JWT authorizer accepts are written here:

* **RS256** (RSASSA-PKCS1-v1_5 with SHA-256, RFC 8017 section 8.2.2): the
  signature, as an integer below the modulus, is raised to the public exponent
  (``pow``), and the resulting block is compared, whole and in constant time,
  with the one expected encoding ``00 01 FF..FF 00 DigestInfo(SHA-256, hash)``.
  The block is never parsed, so no ASN.1 leniency (BER lengths, missing NULL,
  trailing garbage) can creep in. Keys below 2,048 bits are refused.
* **ES256** (ECDSA over P-256 with SHA-256, FIPS 186-5; the signature is
  ``r || s``, 32 bytes each, RFC 7518 section 3.4): ``r`` and ``s`` must lie in
  [1, n-1], the key must be a point on the curve; ``u1*G + u2*Q`` is computed
  in Jacobian coordinates with both scalars in width-5 NAF (Shamir's trick),
  against tables of odd multiples in affine coordinates: G's built once per
  process, each key's once per key (cached with the key).

Verification only: nothing here signs, so there is no secret to leak through
timing. Every function returns False (never raises) for a bad signature;
``InvalidKey`` is raised only when a JWK cannot be a key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from handlers.b64url import InvalidBase64, decode

# -- RSA ------------------------------------------------------------------------------------

MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
"""DER of DigestInfo{sha256, NULL} up to the 32-byte hash (RFC 8017 section 9.2, note 1)."""


class InvalidKey(ValueError):
    """A JWK that cannot be used as a verification key (the message says why)."""


@dataclass(frozen=True)
class RsaKey:
    n: int
    e: int

    @property
    def size(self) -> int:
        """The modulus length in bytes (k): every signature is exactly this long."""
        return (self.n.bit_length() + 7) // 8


def rsa_key(n: int, e: int) -> RsaKey:
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise InvalidKey(
            f"RSA modulus of {n.bit_length()} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} accepted"
        )
    if n % 2 == 0:
        raise InvalidKey("RSA modulus is even")
    if not 3 <= e < 2**32 or e % 2 == 0:
        raise InvalidKey("RSA public exponent must be odd, at least 3 and below 2**32")
    return RsaKey(n, e)


def pkcs1_sha256_block(message: bytes, size: int) -> bytes:
    """The EMSA-PKCS1-v1_5 encoding of ``message``'s SHA-256 in ``size`` bytes."""
    digest_info = _SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    padding = size - len(digest_info) - 3
    return b"\x00\x01" + b"\xff" * padding + b"\x00" + digest_info


def verify_rs256(key: RsaKey, message: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5-VERIFY with SHA-256 (RFC 8017 section 8.2.2)."""
    size = key.size
    if len(signature) != size:
        return False
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        return False
    block = pow(s, key.e, key.n).to_bytes(size, "big")
    return hmac.compare_digest(block, pkcs1_sha256_block(message, size))


# -- P-256 ----------------------------------------------------------------------------------

P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
A = P - 3
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
WINDOW = 5
"""NAF width: 2**(WINDOW-2) = 8 precomputed odd multiples per point."""

Affine = tuple[int, int]
Jacobian = tuple[int, int, int]
"""(X, Y, Z) standing for (X/Z^2, Y/Z^3); Z == 0 is the point at infinity."""
_INFINITY: Jacobian = (1, 1, 0)


def on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def _double(point: Jacobian) -> Jacobian:
    """2P for a = -3 (dbl-2001-b)."""
    x1, y1, z1 = point
    if z1 == 0 or y1 == 0:
        return _INFINITY
    delta = z1 * z1 % P
    gamma = y1 * y1 % P
    beta = x1 * gamma % P
    alpha = 3 * (x1 - delta) * (x1 + delta) % P
    x3 = (alpha * alpha - 8 * beta) % P
    z3 = ((y1 + z1) * (y1 + z1) - gamma - delta) % P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % P
    return x3, y3, z3


def _add_affine(point: Jacobian, x2: int, y2: int) -> Jacobian:
    """P + (x2, y2) with the second point affine (madd-2007-bl), every special case handled:
    P at infinity, P == Q (doubling), P == -Q (infinity)."""
    x1, y1, z1 = point
    if z1 == 0:
        return x2, y2, 1
    z1z1 = z1 * z1 % P
    u2 = x2 * z1z1 % P
    s2 = y2 * z1 * z1z1 % P
    h = (u2 - x1) % P
    r = 2 * (s2 - y1) % P
    if h == 0:
        return _double(point) if r == 0 else _INFINITY
    hh = h * h % P
    i = 4 * hh % P
    j = h * i % P
    v = x1 * i % P
    x3 = (r * r - j - 2 * v) % P
    y3 = (r * (v - x3) - 2 * y1 * j) % P
    z3 = ((z1 + h) * (z1 + h) - z1z1 - hh) % P
    return x3, y3, z3


def _to_affine(point: Jacobian) -> Affine | None:
    x, y, z = point
    if z == 0:
        return None
    inverse = pow(z, -1, P)
    inverse2 = inverse * inverse % P
    return x * inverse2 % P, y * inverse2 * inverse % P


def _odd_multiples(x: int, y: int) -> list[Affine]:
    """[1P, 3P, 5P, ..., (2**(WINDOW-1) - 1)P] in affine coordinates (P of prime order, so
    none is infinity)."""
    twice = _to_affine(_double((x, y, 1)))
    assert twice is not None
    table: list[Affine] = [(x, y)]
    current: Jacobian = (x, y, 1)
    for _ in range(2 ** (WINDOW - 2) - 1):
        current = _add_affine(current, *twice)
        found = _to_affine(current)
        assert found is not None
        table.append(found)
    return table


def _naf(k: int) -> list[int]:
    """Width-``WINDOW`` NAF digits of ``k``, least significant first."""
    digits: list[int] = []
    full, half = 1 << WINDOW, 1 << (WINDOW - 1)
    while k:
        if k & 1:
            digit = k & (full - 1)
            if digit >= half:
                digit -= full
            k -= digit
        else:
            digit = 0
        digits.append(digit)
        k >>= 1
    return digits


_G_TABLE: list[Affine] | None = None


def _g_table() -> list[Affine]:
    global _G_TABLE
    if _G_TABLE is None:
        _G_TABLE = _odd_multiples(GX, GY)
    return _G_TABLE


@dataclass(frozen=True)
class EcKey:
    x: int
    y: int
    _table: list[Affine] = field(default_factory=list, compare=False, repr=False)

    def table(self) -> list[Affine]:
        if not self._table:
            self._table.extend(_odd_multiples(self.x, self.y))
        return self._table


def ec_key(x: int, y: int) -> EcKey:
    """A P-256 public key; ``InvalidKey`` unless (x, y) is a point on the curve (P-256 has
    cofactor 1, so any such point other than infinity has order n)."""
    if not on_curve(x, y):
        raise InvalidKey("the EC public key is not a point on P-256")
    return EcKey(x, y)


def _shamir(u1: int, u2: int, key: EcKey) -> Jacobian:
    """u1*G + u2*Q."""
    g_table, q_table = _g_table(), key.table()
    naf1, naf2 = _naf(u1), _naf(u2)
    length = max(len(naf1), len(naf2))
    naf1 += [0] * (length - len(naf1))
    naf2 += [0] * (length - len(naf2))
    point = _INFINITY
    for index in range(length - 1, -1, -1):
        point = _double(point)
        for digit, table in ((naf1[index], g_table), (naf2[index], q_table)):
            if digit > 0:
                x, y = table[digit >> 1]
                point = _add_affine(point, x, y)
            elif digit < 0:
                x, y = table[(-digit) >> 1]
                point = _add_affine(point, x, P - y)
    return point


def multiply_base(k: int) -> Affine:
    """k*G for 1 <= k < n (what a signer needs: the emulator's local issuer signs with it)."""
    if not 1 <= k < N:
        raise ValueError("scalar out of range")
    found = _to_affine(_shamir(k, 0, EcKey(GX, GY)))
    assert found is not None
    return found


def verify_es256(key: EcKey, message: bytes, signature: bytes) -> bool:
    """ECDSA P-256 SHA-256 verification of a 64-byte ``r || s`` signature."""
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (1 <= r < N and 1 <= s < N):
        return False
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")  # 256 bits: no truncation
    w = pow(s, -1, N)
    found = _to_affine(_shamir(e * w % N, r * w % N, key))
    return found is not None and found[0] % N == r


# -- JWK ------------------------------------------------------------------------------------

Key = RsaKey | EcKey


def _b64url_int(value: Any, name: str, length: int | None = None) -> int:
    if not isinstance(value, str) or not value:
        raise InvalidKey(f"JWK member {name!r} must be a non-empty base64url string")
    try:
        raw = decode(value)
    except InvalidBase64:
        raise InvalidKey(f"JWK member {name!r} is not base64url") from None
    if length is not None and len(raw) != length:
        raise InvalidKey(f"JWK member {name!r} must be {length} bytes, not {len(raw)}")
    return int.from_bytes(raw, "big")


def key_from_jwk(jwk: dict[str, Any]) -> Key:
    """An RSA or P-256 public key from its JWK members (RFC 7518 section 6); private members
    are ignored. ``InvalidKey`` for any other key type, curve or a malformed member."""
    kty = jwk.get("kty")
    if kty == "RSA":
        return rsa_key(_b64url_int(jwk.get("n"), "n"), _b64url_int(jwk.get("e"), "e"))
    if kty == "EC":
        if jwk.get("crv") != "P-256":
            raise InvalidKey(f"EC curve {jwk.get('crv')!r} is not supported (only P-256)")
        return ec_key(_b64url_int(jwk.get("x"), "x", 32), _b64url_int(jwk.get("y"), "y", 32))
    raise InvalidKey(f"key type {kty!r} is not supported (RSA, EC)")


ALGORITHMS: dict[str, type[RsaKey] | type[EcKey]] = {"RS256": RsaKey, "ES256": EcKey}
"""The algorithms this module verifies, and the key type each needs."""


def verify(alg: str, key: Key, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``alg``'s signature of ``message`` under ``key``; False for
    an algorithm this module does not know or a key of the wrong type."""
    if alg == "RS256" and isinstance(key, RsaKey):
        return verify_rs256(key, message, signature)
    if alg == "ES256" and isinstance(key, EcKey):
        return verify_es256(key, message, signature)
    return False
