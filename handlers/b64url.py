"""Strict base64url (RFC 4648 section 5, no ``=`` padding), as JWS and JWK use it (pure).

One spelling per value: characters outside ``A-Z a-z 0-9 - _``, padding, a
length that leaves a lone character (``len % 4 == 1``) and unused trailing
bits that are set are all refused, so a token cannot be altered without
changing what it decodes to.
"""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


class InvalidBase64(ValueError):
    """Not strict unpadded base64url."""


def encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """The bytes ``text`` spells, or ``InvalidBase64``."""
    if not isinstance(text, str) or not _ALPHABET.fullmatch(text) or len(text) % 4 == 1:
        raise InvalidBase64("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidBase64("not base64url") from None
    if encode(raw) != text:  # unused trailing bits set: not the canonical spelling
        raise InvalidBase64("not base64url")
    return raw
