"""What a subscription hands its listeners: changes, resets, and errors with stable codes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["added", "modified", "removed"]
"""What a change is as seen through one subscription (its key, filter and access rule)."""
Origin = Literal["live", "replay", "snapshot"]
"""Where a change came from: a live ``event_update``, a resume's replay, or a snapshot that
(re)filled the subscription's view (then ``id`` is None)."""
State = Literal["connecting", "open", "reconnecting", "closed"]
"""The client's connection state: ``connecting`` until the first socket opens, ``open``,
``reconnecting`` after a socket was lost (backing off and trying again), ``closed`` for good."""

# Error codes of the client itself (the server's codes pass through unchanged: ``forbidden``,
# ``unknown_table``, ``invalid_subscription``, ``too_many_subscriptions``, ``invalid_token``,
# ``internal_error``, ...).
CONNECT_FAILED = "connect_failed"
"""A socket could not be opened (network, or the handshake refused: 401/403 for a token)."""
TOKEN_FAILED = "token_failed"  # noqa: S105 (an error code)
"""The token function raised, or returned something that is not a non-empty string."""
HEARTBEAT_TIMEOUT = "heartbeat_timeout"
"""No ``pong`` within ``pong_timeout``: the socket is presumed dead and replaced."""
AUTH_TIMEOUT = "auth_timeout"
"""No answer to ``auth`` within ``request_timeout``."""
TOKEN_NOT_EXTENDED = "token_not_extended"  # noqa: S105 (an error code)
"""``auth`` succeeded but the connection's expiry did not move (the token function returned
the same or an older token)."""
RESET = "reset"
"""A subscription was reset and could not be refetched (table-wide, or the snapshot failed)
and it has no ``on_reset`` listener: what it shows may miss changes."""
CALLBACK_FAILED = "callback_failed"
"""A listener (``on_change``, ``on_reset``, ``on_state``) raised; the client carries on."""
GAVE_UP = "gave_up"
"""``max_attempts`` consecutive connection attempts failed; the client is closed."""
CLOSED = "closed"
"""The client (or the subscription) was closed before the subscription became ready."""
INVALID_MESSAGE = "invalid_message"
"""The server sent something that is not a JSON object (ignored)."""

REFUSALS = frozenset(
    {"forbidden", "unknown_table", "invalid_subscription", "too_many_subscriptions"}
)
"""Server codes that end a subscription: it is removed and never retried."""


class RealtimeError(Exception):
    """An error with a stable ``code`` (the server's, or one of the client's above)."""

    def __init__(
        self,
        code: str,
        message: str = "",
        subscription_id: str | None = None,
        *,
        server: bool = False,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.subscription_id = subscription_id
        self.server = server
        """True when the server sent it (an ``error`` message); False for the client's own."""


@dataclass(frozen=True)
class Change:
    """One change to one item, as seen through one subscription."""

    subscription_id: str
    kind: Kind
    keys: Mapping[str, Any]
    data: Mapping[str, Any] | None
    """The new image (allowed fields only); None when removed, or when ``truncated``."""
    origin: Origin = "live"
    id: str | None = None
    """The change's id (the stream record's eventID); None for a snapshot's changes."""
    action: str | None = None
    """``created``, ``updated`` or ``deleted`` (the table's view); None for a snapshot's."""
    old: Mapping[str, Any] | None = None
    cursor: str | None = None
    timestamp: str | None = None
    truncated: bool = False
    """The item was too large to send: only ``keys``; read the item yourself."""
    message: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    """The server's ``event_update`` as received (None for a snapshot's changes)."""

    # The JavaScript client's names for the same fields, so code reads alike in both.
    @property
    def type(self) -> Kind:
        """``kind`` under the JavaScript client's name."""
        return self.kind

    @property
    def subscription(self) -> str:
        """``subscription_id`` under the JavaScript client's name."""
        return self.subscription_id

    @property
    def replay(self) -> bool:
        """True when a resume replayed this change rather than it arriving live."""
        return self.origin == "replay"

    @property
    def matches(self) -> Mapping[str, Kind]:
        """Every subscription of this connection the change matched, and how (the server's
        ``matches``); for a snapshot's change, this subscription only."""
        sent = (self.message or {}).get("matches")
        if isinstance(sent, Mapping):
            return dict(sent)
        return {self.subscription_id: self.kind}

    @property
    def table(self) -> str | None:
        """The source's label (None for a snapshot's change)."""
        table = (self.message or {}).get("table")
        return table if isinstance(table, str) else None

    @property
    def sequence(self) -> str | None:
        """The stream record's sequence number (None for a snapshot's change)."""
        sequence = (self.message or {}).get("sequence")
        return sequence if isinstance(sequence, str) else None


@dataclass(frozen=True)
class Reset:
    """The server could not prove a resume left no gap (``reason`` is its ``reset`` reason).

    ``refetched`` is True when the client refilled the view through a snapshot (keyed
    subscriptions): the changes that made the view whole were delivered as ``origin
    "snapshot"``. False: the application must read what it shows itself."""

    subscription_id: str
    reason: str
    refetched: bool
    cursor: str | None = None
