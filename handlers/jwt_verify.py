"""Verifying a JWT from the stack's identity provider (RFC 7519, JWS compact form) (pure).

What a token must be, in the order it is checked (the first failure refuses
it with ``InvalidToken``, whose ``reason`` goes to the log, never the client):

1. A string of at most ``MAX_TOKEN_BYTES`` ASCII characters: three
   dot-separated parts, each strict unpadded base64url (``handlers.b64url``).
2. Its header: at most ``MAX_HEADER_BYTES``, a JSON object (strict: no
   duplicate keys, no ``NaN``) whose ``alg`` is one of the stack's
   algorithms (configured, never taken from the token: ``none`` and ``HS*``
   can never be configured); no ``crit`` (no extension is understood); no
   ``jku``, ``x5u``, ``jwk`` or ``x5c`` (a token never says where its key
   is); ``kid``, when present, a string of at most 256 characters.
3. Its key: the issuer's JWKS key with that ``kid`` (or the set's only key
   when the token names none), of the type the algorithm needs (RS256: RSA,
   ES256: EC P-256), with the same ``alg`` when the key states one. An
   unknown ``kid`` refreshes the set (rate-limited, ``handlers.jwks``).
4. Its signature, over the ASCII of ``header.payload`` exactly as sent.
5. Only then its payload: a JSON object (strict) with
   ``iss`` equal to the issuer; ``aud`` (a string or a list) naming an
   accepted audience, or, without ``aud``, ``client_id`` naming one (Cognito
   access tokens); ``exp`` a number, after now - skew and at most
   ``max_lifetime`` + skew ahead; ``nbf`` (if any) before now + skew;
   ``iat`` (if any) before now + skew; ``sub`` a non-empty string of at
   most 256 characters; every required claim; every required scope.

A required claim holds when the token's value equals it (JSON equality:
``true`` is not ``1``), or, when the token's value is a list and the
required one is not, contains it (``{"cognito:groups": "admins"}``). Scopes
are read from ``scope`` (space-separated, RFC 8693) and ``scp`` (a list, or
space-separated text).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from handlers import strict_json
from handlers.b64url import InvalidBase64, decode
from handlers.jwks import Jwk, JwksError
from handlers.signatures import ALGORITHMS, verify
from handlers.tokens import DEFAULT_MAX_LIFETIME_SECONDS, InvalidToken

MAX_TOKEN_BYTES = 8 * 1024
MAX_HEADER_BYTES = 1024
MAX_KID_LENGTH = 256
MAX_SUB_LENGTH = 256
"""As ``handlers.connect`` stores a user id at most."""
DEFAULT_CLOCK_SKEW_SECONDS = 60
SUPPORTED_ALGORITHMS = tuple(ALGORITHMS)
"""RS256 and ES256."""
REFUSED_HEADER_FIELDS = ("jku", "x5u", "jwk", "x5c", "crit")
"""Header members that would make the token say where its key is, or that ask for
extensions this verifier does not implement (RFC 7515 section 4.1.11)."""


@dataclass(frozen=True)
class JwtRules:
    """What the stack accepts; the stack's configuration, never the token, sets each."""

    issuer: str
    audiences: tuple[str, ...]
    """Accepted ``aud`` values (or ``client_id`` values, when a token has no ``aud``)."""
    algorithms: tuple[str, ...] = SUPPORTED_ALGORITHMS
    required_claims: Mapping[str, Any] = field(default_factory=dict)
    required_scopes: tuple[str, ...] = ()
    clock_skew: int = DEFAULT_CLOCK_SKEW_SECONDS
    max_lifetime: int = DEFAULT_MAX_LIFETIME_SECONDS
    """The furthest ahead ``exp`` may lie (as ``TOKEN_MAX_LIFETIME_SECONDS`` for HMAC tokens)."""

    def __post_init__(self) -> None:
        unknown = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if unknown or not self.algorithms:
            raise ValueError(
                f"algorithms must be some of {', '.join(SUPPORTED_ALGORITHMS)}, not {unknown}"
            )
        if not self.issuer:
            raise ValueError("the issuer must not be empty")
        if not self.audiences:
            raise ValueError("at least one audience must be accepted")


class KeySource(Protocol):
    def candidates(self, kid: str | None) -> list[Jwk]: ...


def _part(text: str, what: str) -> bytes:
    try:
        return decode(text)
    except InvalidBase64:
        raise InvalidToken(f"malformed token: {what} is not base64url") from None


def _object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = strict_json.loads(raw, unique_keys=True)
    except strict_json.InvalidJson as bad:
        raise InvalidToken(f"malformed token: {what} is not JSON ({bad})") from None
    if not isinstance(parsed, dict):
        raise InvalidToken(f"malformed token: {what} is not a JSON object")
    return parsed


def _numeric_date(payload: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = payload.get(name)
    if value is None and name not in payload and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidToken(f"malformed payload: {name} must be a number (NumericDate)")
    return float(value)


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two parsed JSON values as JSON sees it (``true`` is not ``1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def claim_holds(value: Any, wanted: Any) -> bool:
    if json_equal(value, wanted):
        return True
    return (
        isinstance(value, list)
        and not isinstance(wanted, list)
        and any(json_equal(item, wanted) for item in value)
    )


def scopes_of(payload: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = payload.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return found


def _audience_ok(payload: Mapping[str, Any], audiences: Sequence[str]) -> bool:
    if "aud" in payload:
        aud = payload["aud"]
        values = [aud] if isinstance(aud, str) else aud
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidToken("malformed payload: aud must be a string or a list of strings")
        return any(value in audiences for value in values)
    client_id = payload.get("client_id")
    return isinstance(client_id, str) and client_id in audiences


def check_claims(payload: Mapping[str, Any], rules: JwtRules, now: float) -> None:
    """Step 5 of the module's text on a payload whose signature is verified."""
    if payload.get("iss") != rules.issuer:
        raise InvalidToken("wrong issuer")
    if not _audience_ok(payload, rules.audiences):
        raise InvalidToken("audience not accepted")
    skew = rules.clock_skew
    exp = _numeric_date(payload, "exp", required=True)
    assert exp is not None
    if now >= exp + skew:
        raise InvalidToken("expired")
    if exp > now + rules.max_lifetime + skew:
        raise InvalidToken("lifetime too long")
    nbf = _numeric_date(payload, "nbf", required=False)
    if nbf is not None and nbf > now + skew:
        raise InvalidToken("not yet valid (nbf)")
    iat = _numeric_date(payload, "iat", required=False)
    if iat is not None and iat > now + skew:
        raise InvalidToken("issued in the future (iat)")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("malformed payload: sub must be a non-empty string")
    if len(sub) > MAX_SUB_LENGTH:
        raise InvalidToken(f"sub longer than {MAX_SUB_LENGTH} characters")
    for name, wanted in rules.required_claims.items():
        if not claim_holds(payload.get(name), wanted):
            raise InvalidToken(f"required claim {name!r} missing or different")
    missing = [scope for scope in rules.required_scopes if scope not in scopes_of(payload)]
    if missing:
        raise InvalidToken(f"required scope {missing[0]!r} missing")


def verify_jwt(token: Any, rules: JwtRules, keys: KeySource, now: float) -> dict[str, Any]:
    """The verified payload of ``token``, or ``InvalidToken`` saying why it is refused.

    ``JwksError`` (keys unavailable) also becomes ``InvalidToken``: fail closed.
    """
    if not isinstance(token, str) or not token:
        raise InvalidToken("missing token")
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken(f"token longer than {MAX_TOKEN_BYTES} characters")
    if not token.isascii():
        raise InvalidToken("malformed token: not ASCII")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(f"malformed token: {len(parts)} dot-separated parts, not 3")
    header_part, payload_part, signature_part = parts
    if len(header_part) > MAX_HEADER_BYTES * 4 // 3 + 4:
        raise InvalidToken("malformed token: header too long")
    header = _object(_part(header_part, "header"), "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in rules.algorithms:
        raise InvalidToken(f"algorithm {str(alg)[:20]!r} not accepted")
    for name in REFUSED_HEADER_FIELDS:
        if name in header:
            raise InvalidToken(f"header carries {name!r}, which this verifier refuses")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH):
        raise InvalidToken("malformed token: kid must be a string of 1 to 256 characters")
    signature = _part(signature_part, "signature")
    payload_raw = _part(payload_part, "payload")
    try:
        candidates = keys.candidates(kid)
    except JwksError as unavailable:
        raise InvalidToken(f"the issuer's keys are unavailable: {unavailable}") from None
    if not candidates:
        raise InvalidToken("unknown kid" if kid is not None else "no kid, and no single key")
    wanted_type = ALGORITHMS[alg]
    usable = [
        jwk
        for jwk in candidates
        if isinstance(jwk.key, wanted_type) and (jwk.alg is None or jwk.alg == alg)
    ]
    if not usable:
        raise InvalidToken(f"the key named by kid is not a {alg} key")
    signing_input = f"{header_part}.{payload_part}".encode("ascii")
    if not any(verify(alg, jwk.key, signing_input, signature) for jwk in usable):
        raise InvalidToken("bad signature")
    payload = _object(payload_raw, "payload")
    check_claims(payload, rules, now)
    return payload


def mapped_claims(payload: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """The payload with the stack's claim names: for each (ours, theirs) of ``mapping``,
    ``ours`` takes the token's ``theirs`` (and is absent when the token has no ``theirs``:
    a token cannot supply a mapped claim under our name)."""
    renamed = dict(payload)
    for ours, theirs in mapping.items():
        if theirs in payload:
            renamed[ours] = payload[theirs]
        else:
            renamed.pop(ours, None)
    return renamed
