"""Cursors: where a subscription is in the stream of changes, as signed opaque text (pure).

A **position** is ``(recorded_at_ms, change_id)``: the broadcaster records each
change in the replay store (``handlers.replay``) at its own clock, before any
delivery attempt, and positions order by that time, then by change id (the
stream record's ``eventID``, unique, so two changes never share a position). Stream
sequence numbers are never used: they order records within one shard only, and
a partition or a table spans many shards. A "now" position has the change id
``""``, which sorts before every change recorded in the same millisecond.

A **cursor** is the text a client holds::

    "c1." + base64url(payload JSON) + "." + base64url(HMAC-SHA256(key, "c1." + payload part)[:16])

with the payload ``{"c": change id, "s": scope digest, "t": recorded_at_ms,
"u": identity digest}`` (compact JSON, sorted keys). base64url is RFC 4648
section 5 without padding and read strictly (one spelling per value), as in
``handlers.tokens``; the signature is compared in constant time before the
payload is parsed. A cursor is at most ``MAX_CURSOR_LENGTH`` characters.

* The key is ``cursor_key(secret)`` = HMAC-SHA256(the channel's token secret,
  ``b"realtime-channel cursor v1"``): derived with a domain separator, so a
  cursor signature can never be replayed as a token signature or the reverse.
* ``s``, the **scope**: the concatenation of one or more scope digests
  (``scope_digest(topic, filter_json)``, ``SCOPE_LENGTH`` characters each). A
  subscription's scope is its topic (a keyed one's item or partition topic; every
  bucket of a table-wide topic is one scope, ``scope_topic``) and its filter as the
  stored JSON text: a cursor resumes only a subscription with the same table, key
  and filter (not the same connection or subscription id). The filter is compared
  as text, so the same filter written in another order is another scope: a
  ``reset``, never a wrong replay. One ``event_update`` reaches a connection once
  however many of its subscriptions match, so its cursor carries the scopes of
  every subscription in its ``matches`` and resumes any of them.
* ``u`` binds the cursor to the identity: ``""`` when anonymous, otherwise
  base64url of the first 12 bytes of SHA-256 of the token's ``sub`` (the
  digest rather than the ``sub`` itself keeps every cursor within
  ``MAX_CURSOR_LENGTH`` for any ``sub`` the connect handler accepts (256
  characters, up to 1 KB of UTF-8) and keeps user ids out of what clients
  store and log).

``read_cursor`` raises ``InvalidCursor`` for a cursor that is malformed, too
long, of an unknown version, badly signed, another identity's or another
scope's; the caller answers ``reset`` and never replays on it. Clients must
treat cursors as opaque: the format may change with its version prefix.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from handlers import strict_json

VERSION_PREFIX = "c1."
MAX_CURSOR_LENGTH = 1024
"""Room for the scopes of ``MAX_SCOPES`` subscriptions."""
MAX_SCOPES = 24
MAX_CHANGE_ID_LENGTH = 128
MAX_RECORDED_AT_MS = 10**13 - 1
"""Positions are written with 13 digits in the replay store (good until the year 2286)."""
SIGNATURE_BYTES = 16
DIGEST_BYTES = 12
SCOPE_LENGTH = 16
"""Characters of one scope digest (base64url of ``DIGEST_BYTES``)."""
KEY_DOMAIN = b"realtime-channel cursor v1"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_CHANGE_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_CHANGE_ID_LENGTH}}}")
_PAYLOAD_FIELDS = frozenset({"t", "c", "u", "s"})


class InvalidCursor(ValueError):
    """The cursor cannot be used: the caller answers ``reset``. ``reason`` is for logs only."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, order=True)
class Position:
    """A point in the recorded changes: ordered by ``recorded_at_ms``, then ``change_id``."""

    recorded_at_ms: int
    change_id: str
    """The stream ``eventID``; ``""`` for a "now" position (before every change of that ms)."""

    def __post_init__(self) -> None:
        check_position(self.recorded_at_ms, self.change_id)

    @property
    def sort_text(self) -> str:
        """The position as the replay store's ``at`` text: string order is position order."""
        return f"{self.recorded_at_ms:013d}#{self.change_id}"

    @classmethod
    def from_sort_text(cls, text: str) -> Position:
        millis, sep, change_id = text.partition("#")
        if not sep or len(millis) != 13 or not millis.isdigit() or not millis.isascii():
            raise ValueError(f"not a position: {text[:40]!r}")
        return cls(int(millis), change_id)


def check_position(recorded_at_ms: Any, change_id: Any) -> None:
    """``ValueError`` unless this is a position every cursor and store item can hold."""
    if isinstance(recorded_at_ms, bool) or not isinstance(recorded_at_ms, int):
        raise ValueError("recorded_at_ms must be an integer")
    if not 0 <= recorded_at_ms <= MAX_RECORDED_AT_MS:
        raise ValueError(f"recorded_at_ms out of range: {recorded_at_ms}")
    if not isinstance(change_id, str) or (change_id and not _CHANGE_ID.fullmatch(change_id)):
        raise ValueError(
            f"change id must be printable ASCII, at most {MAX_CHANGE_ID_LENGTH} characters"
        )


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strict RFC 4648 section 5 without padding: one spelling per value, or ``InvalidCursor``."""
    if not _B64URL.fullmatch(text):
        raise InvalidCursor("malformed: not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCursor("malformed: not base64url") from None
    if _b64url_encode(raw) != text:  # unused trailing bits set: not the canonical spelling
        raise InvalidCursor("malformed: not base64url")
    return raw


def _digest(text: str) -> str:
    return _b64url_encode(hashlib.sha256(text.encode("utf-8")).digest()[:DIGEST_BYTES])


def cursor_key(secret: str | bytes) -> bytes:
    """The cursor signing key, derived from the channel's token secret (domain-separated)."""
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not raw:
        raise ValueError("the token secret must not be empty")
    return hmac.new(raw, KEY_DOMAIN, hashlib.sha256).digest()


def scope_topic(topic: str) -> str:
    """The topic a scope names: a table-wide topic without its bucket (every bucket is one
    scope; it is also the topic the replay store records table-wide changes on), any other
    topic as it is."""
    if not isinstance(topic, str) or not topic:
        raise ValueError("topic must be a non-empty string")
    if topic.startswith("T|"):
        return topic.rsplit("|", 1)[0] + "|0"
    return topic


def scope_digest(topic: str, filter_json: str | None) -> str:
    """What a cursor is bound to: the subscription's topic (``scope_topic``) and its filter
    as stored JSON text (None: no filter). ``SCOPE_LENGTH`` characters."""
    if filter_json is not None and not isinstance(filter_json, str):
        raise ValueError("filter_json must be the stored JSON text or None")
    canonical = json.dumps(
        [scope_topic(topic), filter_json], separators=(",", ":"), ensure_ascii=True
    )
    return _digest(canonical)


def identity_digest(sub: str | None) -> str:
    """``""`` when anonymous, else a digest of the ``sub`` (see the module docstring)."""
    return _digest(sub) if sub else ""


def _signature(key: bytes, signed: str) -> bytes:
    return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()[:SIGNATURE_BYTES]


def _scopes(scope: str | Sequence[str]) -> str:
    scopes = [scope] if isinstance(scope, str) else list(scope)
    if not 1 <= len(scopes) <= MAX_SCOPES:
        raise ValueError(f"a cursor carries 1 to {MAX_SCOPES} scopes")
    for one in scopes:
        if not isinstance(one, str) or len(one) != SCOPE_LENGTH or not _B64URL.fullmatch(one):
            raise ValueError("not a scope digest")
    return "".join(dict.fromkeys(scopes))


def make_cursor(key: bytes, position: Position, sub: str | None, scope: str | Sequence[str]) -> str:
    """The cursor of ``position`` for this identity (``sub``, None when anonymous), valid for
    each of the scopes given (one, or those of every subscription a message matched)."""
    payload = {
        "c": position.change_id,
        "s": _scopes(scope),
        "t": position.recorded_at_ms,
        "u": identity_digest(sub),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    signed = VERSION_PREFIX + _b64url_encode(text.encode("ascii"))
    cursor = f"{signed}.{_b64url_encode(_signature(key, signed))}"
    if len(cursor) > MAX_CURSOR_LENGTH:  # only with a change id far longer than eventIDs
        raise ValueError(f"cursor longer than {MAX_CURSOR_LENGTH} characters")
    return cursor


def now_cursor(key: bytes, now_ms: int, sub: str | None, scope: str) -> str:
    """A cursor before every change recorded from ``now_ms`` on (``subscribed``, ``reset``)."""
    return make_cursor(key, Position(now_ms, ""), sub, scope)


def read_cursor(key: bytes, text: Any, sub: str | None, scope: str) -> Position:
    """The position of a cursor issued for this identity and scope, or ``InvalidCursor``."""
    if not isinstance(text, str) or not text:
        raise InvalidCursor("malformed: not a string")
    if len(text) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("too long")
    if not text.startswith(VERSION_PREFIX):
        raise InvalidCursor("unknown version")
    parts = text[len(VERSION_PREFIX) :].split(".")
    if len(parts) != 2:
        raise InvalidCursor("malformed: expected payload.signature")
    payload_part, signature_part = parts
    if not _B64URL.fullmatch(payload_part):
        raise InvalidCursor("malformed: not base64url")
    signature = _b64url_decode(signature_part)
    expected = _signature(key, VERSION_PREFIX + payload_part)
    if not hmac.compare_digest(signature, expected):
        raise InvalidCursor("bad signature")
    try:
        payload = strict_json.loads(_b64url_decode(payload_part))
    except strict_json.InvalidJson:
        raise InvalidCursor("malformed: payload is not JSON") from None
    if not isinstance(payload, dict) or set(payload) != _PAYLOAD_FIELDS:
        raise InvalidCursor("malformed: payload fields")
    user, bound = payload["u"], payload["s"]
    if not isinstance(user, str) or not isinstance(bound, str):
        raise InvalidCursor("malformed: payload fields")
    try:
        position = Position(payload["t"], payload["c"])
    except ValueError:
        raise InvalidCursor("malformed: position") from None
    if not hmac.compare_digest(user.encode("utf-8"), identity_digest(sub).encode("utf-8")):
        raise InvalidCursor("another identity")
    if len(bound) % SCOPE_LENGTH or not any(
        hmac.compare_digest(bound[at : at + SCOPE_LENGTH].encode("utf-8"), scope.encode("utf-8"))
        for at in range(0, len(bound), SCOPE_LENGTH)
    ):
        raise InvalidCursor("another scope")
    return position
