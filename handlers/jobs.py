"""Delivery jobs for the queued fan-out (pure): what the broadcaster puts on the SQS FIFO
queue and what a sender reads back.

Order. Every message to one connection goes through one FIFO message group:
``group_of`` (sha256 of the connection id mod ``groups``, the hash of
``topics.bucket_of``) is stable, and a job's slice of recipients is exactly one
group, named ``f"{channel}-{group}"``. SQS FIFO delivers a group's messages in the
order they were sent, one batch at a time, so a connection gets its messages in
stream order provided that (a) the broadcaster sends a record's jobs in the order
``plan_jobs`` returns them (a group's parts in part order) and a record's jobs
only once the previous record's were accepted, and (b) a sender that fails a
batch item also reports every later item of the same group as failed (Lambda's
rule for FIFO partial batch responses): the group then stops until that item is
redelivered, and nothing of that group overtakes it. Groups run in parallel.

Dedupe. ``deduplication_id`` is sha256 (hex, 64 characters, under SQS's 128) of
the channel, the change id (the stream eventID), the group, the part and the
part's connection ids in order. A retried stream batch plans the same record
again: when the part holds the same connections it gets the same id, and SQS
drops the copy for 5 minutes (its deduplication window), even though each
message's cursor may differ (a retry records the change at a later clock). When
the recipients changed in between (someone subscribed or left, so parts split
elsewhere), the changed parts get new ids and are sent again: some connections
may get the change twice (clients drop it by ``id``), none lose it, which an id
of (change, group, part) alone would allow (a retried part 1 dropped as a
duplicate of a first part 1 holding other connections). After 5 minutes a retry
is delivered again (duplicates, never losses).

Sizes. A job body is compact JSON, ASCII outside the messages::

    {"v":1,"change":ID,"group":G,"part":P,"to":[[CONNECTION,INDEX,CURSOR],...],"payloads":[...]}

The change travels once: each distinct message (identical bytes: the same
``matches`` and trimmed fields) is stored once per job, and each recipient names
its index into ``payloads`` and, when messages carry cursors, its own cursor, which
the sender appends as the message's last member (``recipients.with_cursor``):
exactly the bytes inline delivery posts. A recipient without a cursor is
``[CONNECTION,INDEX]``. A recipient whose token expires carries that time (epoch
seconds) fourth, ``[CONNECTION,INDEX,CURSOR,EXPIRES]`` (``CURSOR`` may be ``null``):
a job that waited in the queue past it is not posted to that connection, which is
closed instead, as the broadcaster does. A message that is a JSON object or
array (every message ``recipients.encode`` makes) is spliced in as it is, so
the reader recovers its exact bytes from the body and it costs no escaping; any
other (or one holding U+FFFE/U+FFFF, characters SQS refuses) is stored as a
JSON string. A group whose slice passes ``max_job_bytes`` (default 240 KiB: SQS
takes 256 KiB per message including its attributes) is split in recipient order
into parts, same group id. A message of at most 128 KiB (API Gateway's frame
limit, which ``encode`` keeps with the cursor's room) always fits one job; a
recipient whose entry alone would not fit raises ``MessageTooLarge``.

Budget. API Gateway allows 10,000 @connections requests per second per account
and region (429 above), shared by every channel's posts, pongs, snapshots,
replays and closes. Each channel gets a ceiling below its share, e.g. 9,000/s
for one channel that leaves 1,000/s to the rest. Senders respect it together:
the SQS event source mapping's maximum concurrency caps how many senders run
(reserved concurrency would also do it, but a new account cannot spare it), and
each sender posts at most its own rate (``TokenBucket``), so::

    maximum concurrency = floor(ceiling / per-sender rate)   (2 to 1,000, SQS's range)
    9,000/s / 500/s per sender = 18 senders, together at most 9,000 posts/s

A ceiling below two senders' rate cannot be met (2 is the smallest maximum
concurrency SQS allows): ``mapping_concurrency`` refuses it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from handlers.cursors import MAX_CURSOR_LENGTH
from handlers.recipients import with_cursor
from handlers.topics import bucket_of

FORMAT_VERSION = 1
DEFAULT_MAX_JOB_BYTES = 240 * 1024
"""Under SQS's 262,144 bytes per message, with room for message attributes."""
SQS_MAX_MESSAGE_BYTES = 256 * 1024
FANOUT_STATE_KEY = "#fanout"
"""The connections table item that says the channel's delivery is queued, read and set by
the broadcaster (API Gateway connection ids never start with ``#``)."""
DEFAULT_MAX_RECIPIENTS = 500
"""Recipients one job (a slice) holds at most: one sender posts them, so this bounds a
job's work (500 posts at 64 concurrent, 20 ms each: about 0.2 s)."""
MAX_ID_LENGTH = 128
"""SQS's limit for a message group id and a deduplication id."""
MIN_MAPPING_CONCURRENCY = 2
MAX_MAPPING_CONCURRENCY = 1000
"""The range of an SQS event source mapping's ``ScalingConfig.MaximumConcurrency``."""
_ID_CHARACTERS = re.compile(r"[A-Za-z0-9!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]+")
"""What SQS accepts in a group id: alphanumerics and punctuation."""
_SQS_REFUSED = ("\ufffe", "\uffff")
"""Valid UTF-8 that SQS refuses in a message body (others: controls, which JSON escapes)."""
_DECODER = json.JSONDecoder()
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9._-]+")
"""What a cursor is made of (``handlers.cursors``: a prefix and base64url parts)."""


class MessageTooLarge(ValueError):
    """One recipient's message does not fit a job on its own."""


class MalformedJob(ValueError):
    """A job body that ``plan_jobs`` did not write; the message says what is wrong."""


class BudgetTooSmall(ValueError):
    """A delivery ceiling that two senders (SQS's minimum concurrency) would exceed."""


@dataclass(frozen=True)
class Job:
    """One SQS FIFO message: ``MessageGroupId``, ``MessageDeduplicationId``, ``MessageBody``."""

    group_id: str
    deduplication_id: str
    body: str


def group_of(connection_id: str, groups: int) -> int:
    """The message group (0 to ``groups`` - 1) of every message to this connection: stable,
    spread evenly (sha256 of the id, as ``topics.bucket_of``)."""
    _check_groups(groups)
    return bucket_of(connection_id, groups)


def _check_groups(groups: int) -> None:
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer, not {groups!r:.40}")


def group_id(channel: str, group: int) -> str:
    """The FIFO message group id of ``group``: ``f"{channel}-{group}"``."""
    return f"{channel}-{group}"


def deduplication_id(
    channel: str, change_id: str, group: int, part: int, connection_ids: list[str]
) -> str:
    """sha256 (hex) of the channel, change, group, part and the part's connections in order:
    the same for the same part of a retried batch (the module docstring says why the
    connections are in it)."""
    digest = hashlib.sha256()
    for text in (channel, change_id, str(group), str(part), *connection_ids):
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _ascii_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def _payload_text(message: bytes) -> str:
    """A message as it appears in ``payloads``: spliced as it is when it is a JSON object or
    array whose bytes the reader gets back exactly, else a JSON string."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise ValueError(f"a message is not UTF-8 text: {bad}") from None
    if text[:1] in ("{", "[") and not any(char in text for char in _SQS_REFUSED):
        try:
            _, end = _DECODER.raw_decode(text)
        except ValueError:
            end = -1
        if end == len(text):
            return text
    quoted = json.dumps(text, ensure_ascii=False)
    for char in _SQS_REFUSED:
        quoted = quoted.replace(char, f"\\u{ord(char):04x}")
    return quoted


def _check_cursor(cursor: Any, error: type[ValueError], where: str = "") -> None:
    if not (
        isinstance(cursor, str)
        and len(cursor) <= MAX_CURSOR_LENGTH
        and _CURSOR_TEXT.fullmatch(cursor)
    ):
        raise error(
            f"{where}a cursor must be 1 to {MAX_CURSOR_LENGTH} characters of base64url and"
            f" '.', not {cursor!r:.60}"
        )


def _check_expiry(expiry: Any, error: type[ValueError], where: str = "") -> None:
    if isinstance(expiry, bool) or not isinstance(expiry, int) or expiry < 0:
        raise error(
            f"{where}an expiry is a non-negative integer (epoch seconds), not {expiry!r:.40}"
        )


def check_channel(channel: str, groups: int) -> None:
    if not isinstance(channel, str) or not _ID_CHARACTERS.fullmatch(channel):
        raise ValueError(
            f"channel {channel!r:.60} must be non-empty, letters, digits and punctuation"
            " (SQS message group ids)"
        )
    if len(group_id(channel, groups - 1)) > MAX_ID_LENGTH:
        raise ValueError(f"channel {channel[:60]!r}... makes group ids over {MAX_ID_LENGTH}")


def plan_jobs(
    change_id: str,
    envelope_bytes_by_connection: Mapping[str, bytes],
    groups: int,
    *,
    channel: str,
    cursors: Mapping[str, str] | None = None,
    expires: Mapping[str, int] | None = None,
    max_job_bytes: int = DEFAULT_MAX_JOB_BYTES,
    max_recipients: int = DEFAULT_MAX_RECIPIENTS,
) -> list[Job]:
    """The jobs that deliver one change: each connection's message (encoded, without its
    cursor), its cursor (``cursors``, when messages carry them) and its token's expiry
    (``expires``, for connections that have one), sliced by ``group_of``,
    in group order then part order; within a group, recipients keep the mapping's order.
    A slice over ``max_recipients`` recipients or ``max_job_bytes`` (UTF-8 body) is split
    into parts. Raises ``MessageTooLarge`` when one recipient alone does not fit,
    ``ValueError`` for bad arguments, a message that is not UTF-8 or a bad cursor."""
    _check_groups(groups)
    if isinstance(max_recipients, bool) or not isinstance(max_recipients, int):
        raise ValueError("max_recipients must be an integer")
    if max_recipients < 1:
        raise ValueError(f"max_recipients must be at least 1, not {max_recipients}")
    check_channel(channel, groups)
    if not isinstance(change_id, str) or not change_id:
        raise ValueError("change_id must be a non-empty string")
    if isinstance(max_job_bytes, bool) or not isinstance(max_job_bytes, int):
        raise ValueError("max_job_bytes must be an integer")
    if max_job_bytes > SQS_MAX_MESSAGE_BYTES:
        raise ValueError(f"max_job_bytes {max_job_bytes} is over SQS's {SQS_MAX_MESSAGE_BYTES}")
    slices: dict[int, list[str]] = {}
    for connection_id in envelope_bytes_by_connection:
        if not isinstance(connection_id, str) or not connection_id:
            raise ValueError(f"connection ids must be non-empty strings: {connection_id!r:.40}")
        if cursors is not None:
            _check_cursor(cursors.get(connection_id), ValueError)
        if expires is not None and connection_id in expires:
            _check_expiry(expires[connection_id], ValueError)
        slices.setdefault(group_of(connection_id, groups), []).append(connection_id)
    texts: dict[bytes, tuple[str, int]] = {}
    """Each distinct message's text in ``payloads`` and its UTF-8 size, made once."""
    jobs: list[Job] = []
    for group in sorted(slices):
        for part, recipients in enumerate(
            _parts(
                change_id,
                group,
                slices[group],
                envelope_bytes_by_connection,
                cursors,
                expires or {},
                texts,
                max_job_bytes,
                max_recipients,
            )
        ):
            jobs.append(
                Job(
                    group_id=group_id(channel, group),
                    deduplication_id=deduplication_id(
                        channel, change_id, group, part, [entry[0] for entry in recipients]
                    ),
                    body=_body(change_id, group, part, recipients, texts),
                )
            )
    return jobs


def _header(change_id: str, group: int, part: int) -> str:
    return (
        f'{{"v":{FORMAT_VERSION},"change":{_ascii_json(change_id)},'
        f'"group":{group},"part":{part},"to":['
    )


_PAYLOADS = '],"payloads":['
_END = "]}"


_Entry = tuple[str, bytes, str | None, int | None]
"""A recipient in a job: connection id, message (without cursor), cursor, expiry."""


def _entry(connection_id: str, index: int, cursor: str | None, expiry: int | None) -> str:
    if expiry is not None:
        return _ascii_json([connection_id, index, cursor, expiry])
    return _ascii_json([connection_id, index] if cursor is None else [connection_id, index, cursor])


def _parts(
    change_id: str,
    group: int,
    recipients: list[str],
    messages: Mapping[str, bytes],
    cursors: Mapping[str, str] | None,
    expires: Mapping[str, int],
    texts: dict[bytes, tuple[str, int]],
    max_job_bytes: int,
    max_recipients: int,
) -> list[list[_Entry]]:
    """A group's recipients split in order into parts of at most ``max_recipients`` whose
    bodies fit ``max_job_bytes``, counting each body's bytes as ``_body`` writes them
    (header, entries, payloads)."""
    parts: list[list[_Entry]] = []
    current: list[_Entry] = []
    indexes: dict[bytes, int] = {}
    size = 0
    for connection_id in recipients:
        message = messages[connection_id]
        cursor = cursors[connection_id] if cursors is not None else None
        expiry = expires.get(connection_id)
        if len(current) >= max_recipients:
            parts.append(current)
            current = []
        if message not in texts:
            text = _payload_text(message)
            texts[message] = (text, len(text.encode("utf-8")))
        for attempt in (0, 1):
            if not current:
                indexes = {}
                size = len(_header(change_id, group, len(parts)) + _PAYLOADS + _END)
            index = indexes.get(message, len(indexes))
            added = len(_entry(connection_id, index, cursor, expiry)) + (1 if current else 0)
            if message not in indexes:
                added += texts[message][1] + (1 if indexes else 0)
            if size + added <= max_job_bytes:
                break
            if not current or attempt:
                raise MessageTooLarge(
                    f"the message to {connection_id!r:.40} ({len(message)} bytes) makes a job"
                    f" of {size + added} bytes alone, over max_job_bytes {max_job_bytes}"
                )
            parts.append(current)
            current = []
        current.append((connection_id, message, cursor, expiry))
        indexes.setdefault(message, len(indexes))
        size += added
    if current:
        parts.append(current)
    return parts


def _body(
    change_id: str,
    group: int,
    part: int,
    recipients: list[_Entry],
    texts: Mapping[bytes, tuple[str, int]],
) -> str:
    indexes: dict[bytes, int] = {}
    entries = []
    for connection_id, message, cursor, expiry in recipients:
        index = indexes.setdefault(message, len(indexes))
        entries.append(_entry(connection_id, index, cursor, expiry))
    return (
        _header(change_id, group, part)
        + ",".join(entries)
        + _PAYLOADS
        + ",".join(texts[message][0] for message in indexes)
        + _END
    )


def _expect(body: str, at: int, text: str) -> int:
    if not body.startswith(text, at):
        raise MalformedJob(f"expected {text!r} at character {at} of the job body")
    return at + len(text)


def _value(body: str, at: int, what: str) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(body, at)
    except ValueError as bad:
        raise MalformedJob(f"job body: {what} is not JSON ({bad})") from None


@dataclass(frozen=True)
class Recipient:
    connection_id: str
    message: bytes
    """What to post: the message with the recipient's cursor appended."""
    expires_at: int | None = None
    """When the recipient's token expires (epoch seconds); None: it does not."""


def read_job(body: str) -> list[tuple[str, bytes]]:
    """(connection id, message bytes) of each recipient of a job body, in order: the message
    ``plan_jobs`` was given with the recipient's cursor appended (``with_cursor``), the
    bytes inline delivery posts. Raises ``MalformedJob`` for anything it did not write."""
    return [(r.connection_id, r.message) for r in read_recipients(body)]


def read_recipients(body: str) -> list[Recipient]:
    """Each recipient of a job body, in order, with its token's expiry (``read_job``)."""
    if not isinstance(body, str):
        raise MalformedJob(f"a job body is text, not {type(body).__name__}")
    at = _expect(body, 0, f'{{"v":{FORMAT_VERSION},"change":')
    change_id, at = _value(body, at, "change")
    if not isinstance(change_id, str) or not change_id:
        raise MalformedJob("job body: change is not a non-empty string")
    for name in ("group", "part"):
        at = _expect(body, at, f',"{name}":')
        number, at = _value(body, at, name)
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise MalformedJob(f"job body: {name} is not a non-negative integer")
    at = _expect(body, at, ',"to":')
    entries, at = _value(body, at, "to")
    at = _expect(body, at, ',"payloads":[')
    payloads: list[bytes] = []
    while not body.startswith("]", at):
        if payloads:
            at = _expect(body, at, ",")
        start = at
        value, at = _value(body, at, f"payload {len(payloads)}")
        text = value if isinstance(value, str) else body[start:at]
        if not isinstance(value, (str, dict, list)):
            raise MalformedJob(f"job body: payload {len(payloads)} is not a message")
        payloads.append(text.encode("utf-8"))
    if body[at:] != _END:
        raise MalformedJob(f"job body: unexpected text after the payloads at character {at + 1}")
    if not isinstance(entries, list) or not entries:
        raise MalformedJob("job body: to is not a non-empty list")
    recipients: list[Recipient] = []
    for number, entry in enumerate(entries):
        if not (
            isinstance(entry, list)
            and len(entry) in (2, 3, 4)
            and isinstance(entry[0], str)
            and entry[0]
            and isinstance(entry[1], int)
            and not isinstance(entry[1], bool)
            and 0 <= entry[1] < len(payloads)
        ):
            raise MalformedJob(
                f"job body: recipient {number} is not [connection id, payload index"
                f" below {len(payloads)}, cursor, expiry]: {entry!r:.80}"
            )
        cursor = entry[2] if len(entry) >= 3 else None
        expiry = entry[3] if len(entry) == 4 else None
        if len(entry) == 3 and cursor is None:
            raise MalformedJob(f"job body: recipient {number}: a null cursor and no expiry")
        if len(entry) == 4:
            _check_expiry(expiry, MalformedJob, f"job body: recipient {number}: ")
        if cursor is not None:
            _check_cursor(cursor, MalformedJob, f"job body: recipient {number}: ")
            if not payloads[entry[1]].endswith(b"}"):
                raise MalformedJob(f"job body: recipient {number}: a cursor on a non-object")
        recipients.append(Recipient(entry[0], with_cursor(payloads[entry[1]], cursor), expiry))
    return recipients


def mapping_concurrency(ceiling_posts_per_second: float, per_sender_posts_per_second: float) -> int:
    """The SQS event source mapping's maximum concurrency that keeps all senders together
    under the ceiling: floor(ceiling / per-sender rate), at most SQS's 1,000. Raises
    ``BudgetTooSmall`` when two senders (SQS's minimum) would exceed the ceiling."""
    for name, rate in (
        ("ceiling_posts_per_second", ceiling_posts_per_second),
        ("per_sender_posts_per_second", per_sender_posts_per_second),
    ):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"{name} must be a positive number, not {rate!r:.40}")
        if not math.isfinite(rate):
            raise ValueError(f"{name} must be finite")
    # exact decimal ratio: 0.3 / 0.1 is 3 senders, not 2.9999999999999996
    ratio = Fraction(repr(float(ceiling_posts_per_second))) / Fraction(
        repr(float(per_sender_posts_per_second))
    )
    senders = math.floor(ratio)
    if senders < MIN_MAPPING_CONCURRENCY:
        raise BudgetTooSmall(
            f"a ceiling of {ceiling_posts_per_second:g} posts/s is below"
            f" {MIN_MAPPING_CONCURRENCY} senders at {per_sender_posts_per_second:g} posts/s"
            f" each (SQS's smallest maximum concurrency): lower the per-sender rate to at most"
            f" {ceiling_posts_per_second / MIN_MAPPING_CONCURRENCY:g} posts/s"
        )
    return min(senders, MAX_MAPPING_CONCURRENCY)


class TokenBucket:
    """A sender's share of the budget: ``rate`` posts per second, at most ``burst`` at once.

    ``take(n)`` reserves ``n`` tokens now and returns how many seconds the caller must
    wait before acting on them (0 when the bucket holds them): the bucket may go into debt,
    so callers that each sleep what they were told act in the order they took, at ``rate``
    on average. Pure: it only reads ``clock`` (seconds, monotonic); it starts full.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)):
            raise ValueError("rate must be a number")
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive finite number, not {rate!r:.40}")
        if isinstance(burst, bool) or not isinstance(burst, (int, float)):
            raise ValueError("burst must be a number")
        if not (burst >= 1 and math.isfinite(burst)):
            raise ValueError(f"burst must be at least 1, not {burst!r:.40}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self, n: float = 1) -> float:
        """Reserve ``n`` tokens (0 < n <= burst); the seconds to wait before using them."""
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 < n <= self.burst:
            raise ValueError(f"take between 0 and burst ({self.burst:g}) tokens, not {n!r:.40}")
        now = self.clock()
        elapsed = max(now - self._at, 0.0)  # a clock that goes back refills nothing
        self._at = max(now, self._at)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate) - n
        return max(-self._tokens / self.rate, 0.0)
