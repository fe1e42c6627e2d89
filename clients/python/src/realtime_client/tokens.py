"""Reading a token's expiry and the server's timestamps (no verification: the server does it)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime


def token_expiry(token: str | None) -> float | None:
    """The ``exp`` (epoch seconds) of a realtime-channel token (``base64url(payload).sig``),
    or None when the token is not of that shape (then the client asks the server: ``hello``)."""
    if not token:
        return None
    payload = token.split(".", 1)[0]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def parse_time(text: object) -> float | None:
    """An ISO-8601 UTC time as the server writes it (``2026-11-18T12:06:40.000Z``) in epoch
    seconds; None for anything else (``null`` on a stack without tokens)."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
