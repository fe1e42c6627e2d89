"""Resume: what a subscription missed after a cursor, replayed exactly as it was delivered live.

``subscribe`` with ``after`` stores the subscription first (so live changes
flow from then on), then calls ``replay_messages``, which

1. reads the cursor (``handlers.cursors``): malformed, unknown, another
   identity's or another scope's: ``reset`` (``cursor_invalid``);
2. checks that the store still holds everything after it (``replay.covers``,
   the cursor against the clock and the retention): else ``reset``
   (``cursor_expired``);
3. reads the changes of the subscription's topic after the cursor, moved back by
   the overlap (one strongly consistent Query on ``byTime``, across pages),
   at most ``max_changes``: more: ``reset`` (``replay_too_long``), before
   anything is sent;
4. turns each into the ``event_update`` this subscription would have received
   live (``recipients.plan`` with its filter, its access rule's fields,
   ``targetAttribute`` and the source filters' visibility), marked ``"replay":
   true``, each with its cursor; a change the subscription would not have seen
   sends nothing;
5. ends with ``resumed`` (how many were sent, and the cursor to resume from).

A change stored without its images (past DynamoDB's 400 KB, ``truncated``)
reaches a subscription without filter or ``targetAttribute`` as live would
send it past 128 KB (keys only, ``truncated: true``); with either, whether it
matched cannot be told, so the resume is refused with ``reset``
(``replay_incomplete``) before anything is sent. Past ``max_seconds`` the
replay stops with ``reset`` (``replay_timeout``). Never a silent partial replay:
every path ends with exactly one ``resumed`` or ``reset``.

Live changes that reach the connection during the replay are not held back
here: the client tells them from replayed ones by ``replay`` (a live change to
an item may arrive before the replay reaches that item's older changes), applies
replayed ones as they come, holds live ones until ``resumed`` and then applies
them, de-duplicating by (subscription id, change ``id``); the overlap may replay
a change the client already had, which the same de-duplication hides.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from handlers import replay
from handlers.config import ResumeConfig
from handlers.cursors import InvalidCursor, Position, make_cursor, now_cursor, read_cursor
from handlers.cursors import scope_topic as replay_topic
from handlers.recipients import (
    CURSOR_ROOM,
    MAX_MESSAGE_BYTES,
    Subscription,
    encode,
    plan,
    with_cursor,
)

RESET_REASONS = (
    "resume_off",
    "cursor_invalid",
    "cursor_expired",
    "replay_too_long",
    "replay_incomplete",
    "replay_timeout",
    "replay_failed",
    "snapshot_too_large",
    "snapshot_timeout",
    "snapshot_failed",
)
LIVE_MATCH = {"INSERT": "added", "MODIFY": "modified", "REMOVE": "removed"}


@dataclass(frozen=True)
class Resume:
    """What one resume needs besides the store: the subscription as the broadcaster sees it."""

    subscription: Subscription
    topic: str
    """The subscription's topic (a table-wide one in any bucket)."""
    key_names: Sequence[str]
    target_attribute: str | None
    include_old: bool


def reset(sub_id: str, reason: str, cursor: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "reset", "id": sub_id, "reason": reason}
    if cursor is not None:
        message["cursor"] = cursor
    return message


def _truncated_message(replayed: replay.Replayed, sub_id: str) -> dict[str, Any]:
    message = dict(replayed.change.envelope)
    message["matches"] = {sub_id: LIVE_MATCH[replayed.change.event_name]}
    message["truncated"] = True
    return message


def replay_messages(
    client: Any,
    settings: ResumeConfig,
    key: bytes | None,
    resume: Resume,
    after: Any,
    *,
    now_ms: int,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    page_size: int | None = None,
) -> Iterator[dict[str, Any] | bytes]:
    """The messages of one resume, in order: replayed ``event_update`` s (encoded, each with
    its cursor), then ``resumed``; or a ``reset`` (possibly after some of them when the
    time bound is passed)."""
    subscription = resume.subscription
    sub_id, user = subscription.sub_id, subscription.user_id
    if key is None or not settings.enabled or settings.table is None:
        yield reset(
            sub_id,
            "resume_off",
            None if key is None else now_cursor(key, now_ms, user, subscription.scope),
        )
        return
    fresh = now_cursor(key, now_ms, user, subscription.scope)
    try:
        position = read_cursor(key, after, user, subscription.scope)
    except InvalidCursor:
        yield reset(sub_id, "cursor_invalid", fresh)
        return
    if not replay.covers(position, settings.overlap_ms, now_ms, settings.retention_seconds):
        yield reset(sub_id, "cursor_expired", fresh)
        return
    stored, more = replay.changes_after(
        client,
        settings.table,
        replay_topic(resume.topic),
        position,
        settings.overlap_ms,
        settings.max_changes,
        page_size=page_size,
    )
    if more:
        yield reset(sub_id, "replay_too_long", fresh)
        return
    changes = [replay.replayed(one) for one in stored]
    if any(c.truncated for c in changes) and (subscription.filter or resume.target_attribute):
        yield reset(sub_id, "replay_incomplete", fresh)
        return
    sent = 0
    last: Position = position
    for change in changes:
        if clock() >= deadline:
            yield reset(sub_id, "replay_timeout", fresh)
            return
        if change.truncated:
            message: dict[str, Any] | None = _truncated_message(change, sub_id)
        else:
            message = plan(
                change.change,
                [subscription],
                key_names=resume.key_names,
                target_attribute=resume.target_attribute,
                include_old=resume.include_old,
                old_visible=change.old_visible,
                new_visible=change.new_visible,
            ).get(subscription.connection_id)
        last = max(last, change.position)
        if message is None:
            continue
        message["replay"] = True  # what the client applies at once; live ones wait
        cursor = make_cursor(key, change.position, user, subscription.scope)
        data, _ = encode(message, MAX_MESSAGE_BYTES - CURSOR_ROOM)
        yield with_cursor(data, cursor)
        sent += 1
    yield {
        "type": "resumed",
        "id": sub_id,
        "replayed": sent,
        "cursor": make_cursor(key, last, user, subscription.scope),
    }
