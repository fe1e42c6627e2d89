"""Connection tokens: ``base64url(JSON payload) "." base64url(HMAC-SHA256(secret, payload part))``.

The payload is a JSON object with at least ``sub`` (the user id, a non-empty
string) and ``exp`` (expiry, epoch seconds as a JSON integer). Extra claims
are allowed and ignored by the authorizer. base64url is RFC 4648 section 5
without ``=`` padding; the HMAC is computed over the ASCII text of the payload
part exactly as it appears in the token. The payload must be standard JSON
(``NaN``/``Infinity`` are refused), and a token whose ``exp`` lies further
ahead than ``max_lifetime`` seconds (default one day) is refused: a token
cannot be made to live forever.

Free of configuration and AWS calls, so backends, tests and the emulator can
import ``mint_token`` without a Lambda environment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from handlers import strict_json

MAX_TOKEN_LENGTH = 4096
DEFAULT_MAX_LIFETIME_SECONDS = 86400
"""The longest a token may still have to live when it is presented (one day)."""
CLOCK_SKEW_SECONDS = 60
"""Allowance for a minting clock ahead of the verifying one, on top of ``max_lifetime``."""
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class InvalidToken(ValueError):
    """The token is missing, malformed, tampered with or expired. ``reason`` is for logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict RFC 4648 section 5 without padding: one spelling per value, or ``InvalidToken``."""
    if not _B64URL.fullmatch(text):
        raise InvalidToken("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("not base64url") from None
    if _b64url_encode(raw) != text:  # unused trailing bits set: not the canonical spelling
        raise InvalidToken("not base64url")
    return raw


def _key(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the token secret must not be empty")
    return key


def _signature(key: bytes, payload_part: str) -> bytes:
    return hmac.new(key, payload_part.encode("ascii"), hashlib.sha256).digest()


def mint_token(
    user_id: str,
    secret: str | bytes,
    ttl_seconds: int = 3600,
    *,
    claims: Mapping[str, Any] | None = None,
    now: float | None = None,
    max_lifetime: int = DEFAULT_MAX_LIFETIME_SECONDS,
) -> str:
    """Return a token for ``user_id`` that expires ``ttl_seconds`` from now.

    ``claims`` adds extra payload fields; ``sub`` and ``exp`` cannot be overridden.
    A ``ttl_seconds`` above ``max_lifetime`` is refused (``ValueError``): the
    authorizer would refuse the token. Pass the stack's
    ``TOKEN_MAX_LIFETIME_SECONDS`` as ``max_lifetime`` when it raises the cap.
    """
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be a positive integer")
    if ttl_seconds > max_lifetime:
        raise ValueError(
            f"ttl_seconds={ttl_seconds} exceeds max_lifetime={max_lifetime}: the authorizer"
            " refuses a token that lives longer than TOKEN_MAX_LIFETIME_SECONDS"
            f" (default {DEFAULT_MAX_LIFETIME_SECONDS}); mint a shorter one, or pass"
            " max_lifetime= with the stack's value"
        )
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = dict(claims or {})
    payload.update(sub=user_id, exp=issued + ttl_seconds)
    try:  # NaN or Infinity in a claim would make a token the authorizer cannot parse
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except ValueError as bad:
        raise ValueError(f"claims must be standard JSON: {bad}") from None
    payload_part = _b64url_encode(text.encode("utf-8"))
    return f"{payload_part}.{_b64url_encode(_signature(_key(secret), payload_part))}"


def verify_token(
    token: Any,
    secret: str | bytes,
    *,
    now: float | None = None,
    max_lifetime: int = DEFAULT_MAX_LIFETIME_SECONDS,
) -> dict[str, Any]:
    """Return the token's payload, or raise ``InvalidToken`` saying why it is refused.

    The signature is checked (in constant time) before the payload is parsed.
    ``exp`` must be a JSON integer after ``now`` and at most ``max_lifetime``
    seconds (plus ``CLOCK_SKEW_SECONDS``) after it.
    """
    if not isinstance(token, str) or not token:
        raise InvalidToken("missing token")
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("token too long")
    parts = token.split(".")
    if len(parts) != 2:
        raise InvalidToken("malformed token: expected two dot-separated parts")
    payload_part, signature_part = parts
    try:
        payload_part.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidToken("malformed token: non-ASCII payload") from None
    signature = _b64url_decode(signature_part)
    expected = _signature(_key(secret), payload_part)
    if not hmac.compare_digest(signature, expected):
        raise InvalidToken("bad signature")
    try:
        payload = strict_json.loads(_b64url_decode(payload_part))
    except strict_json.InvalidJson:
        raise InvalidToken("malformed payload: not JSON") from None
    if not isinstance(payload, dict):
        raise InvalidToken("malformed payload: not an object")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("malformed payload: sub must be a non-empty string")
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int):
        raise InvalidToken("malformed payload: exp must be an integer")
    current = time.time() if now is None else now
    if exp <= current:
        raise InvalidToken("expired")
    if exp > current + max_lifetime + CLOCK_SKEW_SECONDS:  # exact even for a huge int
        raise InvalidToken("lifetime too long")
    return payload


def _claim_value(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(item, str) for item in value)
    )


def identity_claims(payload: Mapping[str, Any], names: Sequence[str]) -> str:
    """The allow-listed claims of a verified payload, as compact JSON text (pure).

    Only the claims in ``names`` are kept, and only when a string or a list of
    strings (what access rules compare); ``sub`` and ``exp`` travel separately.
    """
    kept = {
        name: payload[name]
        for name in names
        if name not in ("sub", "exp") and name in payload and _claim_value(payload[name])
    }
    return json.dumps(kept, separators=(",", ":"), sort_keys=True)
