"""DynamoDB Streams -> WebSocket clients, through the subscription index.

For each stream record (INSERT, MODIFY, REMOVE), in stream order:

1. read it into a ``recipients.Change`` (its source by physical table name in
   ``SOURCES``; messages name the source by its label), and match each image against
   the source's own filters (``SOURCES`` ``filters``, Lambda's patterns on NewImage, with
   the record's eventName): an image they leave out is visible to no subscription, so
   an item leaving them is ``removed`` (keys only) and one entering them ``added``; a
   record neither image of which passes reaches no one and costs no Query;
2. find the subscriptions on the topics it touches (its item, its partition,
   each bucket of its table-wide topic), each topic read once per batch: the
   topics' version items first (BatchGetItem, strongly consistent), then one
   paginated, strongly consistent Query for each topic whose version is not the
   one its subscriptions are cached with in this container (``SubscriptionCache``);
   a topic without a version item counts as version 0 and is read once (it may hold
   subscriptions stored before version items existed: a stack updated under live
   connections must not lose them), then served from the cache until a subscribe bumps
   it;
3. ``recipients.plan`` decides, per connection, one ``event_update`` with
   ``matches`` and the fields its subscriptions were granted (filters,
   ``targetAttribute`` as row-level control, owner changes);
4. encode each distinct message once (truncated past 128 KB, after trimming)
   and post every connection its own payload concurrently; a connection that
   answers 410 Gone loses its record and its subscriptions.

With a target attribute configured, a record whose item names no user in
either image reaches no one (fail closed), is counted as ``untargeted`` and
costs no Query. The first record that cannot be delivered is reported in
``batchItemFailures`` and nothing after it is attempted, so Lambda retries from
that record and stream order is kept.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from handlers import aws, config, logs, replay
from handlers import subscriptions as store
from handlers.connections import iso_utc
from handlers.cursors import Position, cursor_key, make_cursor
from handlers.delivery import (
    Poster,
    backoff_delay,
    close_connection,
    fan_out,
    invocation_deadline,
    remove_stale,
)
from handlers.dynamo_json import MalformedAttribute, image_to_plain
from handlers.jobs import FANOUT_STATE_KEY, Job, plan_jobs
from handlers.lambda_filters import matches_any
from handlers.management import ManagementApi, frozen_credentials
from handlers.recipients import (
    CURSOR_ROOM,
    MAX_MESSAGE_BYTES,
    Change,
    Subscription,
    encode,
    owner_of,
    plan,
    subscription_of,
    with_cursor,
)
from handlers.topics import InvalidKey, record_topics, table_topic

ACTIONS = {"INSERT": "created", "MODIFY": "updated", "REMOVE": "deleted"}
QUERY_CONCURRENCY = 8
"""Topics of one record queried at the same time (a record touches 2 + buckets topics)."""
MAX_CACHED_SUBSCRIPTIONS = 200_000
"""Subscriptions the container keeps across batches, all topics together (some hundreds of
bytes each); past it the least recently used topics are forgotten."""
CACHED_SUBSCRIPTION_BYTES = 640
"""What one cached subscription costs in memory (measured)."""
CACHE_MEMORY_SHARE = 0.25
"""The share of the function's memory the cache may take."""
MAX_CACHED_TOPICS = 100_000
"""Topics the container keeps (most hold none: every item written is a topic)."""
METRICS_NAMESPACE = "RealtimeChannel"
SQS_BATCH_ENTRIES = 10
SQS_BATCH_BYTES = 256 * 1024
"""SendMessageBatch: at most 10 messages and 262,144 bytes of bodies per call."""
ENQUEUE_MAX_ATTEMPTS = 4

CONFIG = config.broadcaster_config()
log = logs.logger(__name__)


class MalformedRecord(ValueError):
    """A stream record that cannot become a message; it is reported, never skipped."""


@dataclass(frozen=True)
class Read:
    """One stream record, read (pure): what ``plan`` needs and where to look for recipients."""

    source: config.Source
    change: Change
    key_names: tuple[str, ...]
    topics: list[str]
    old_visible: bool = True
    """Whether the source's own filters let the old image through (True without filters)."""
    new_visible: bool = True
    """Whether they let the new image through."""

    @property
    def outside_source(self) -> bool:
        """The record has images and the source's filters let none of them through."""
        images = [
            visible
            for image, visible in (
                (self.change.old, self.old_visible),
                (self.change.new, self.new_visible),
            )
            if image is not None
        ]
        return bool(images) and not any(images)


@dataclass
class BatchStats:
    records: int = 0
    recipients: int = 0
    """Connections a message was addressed to (delivered, stale or failed)."""
    delivered: int = 0
    staleRemoved: int = 0
    """Connections that answered 410 and whose record was deleted."""
    staleKept: int = 0
    """Connections that answered 410 and whose record was kept: younger than
    ``STALE_GRACE_SECONDS`` (still in ``$connect``), or the clean-up failed (logged)."""
    subscriptionsRemoved: int = 0
    """Subscriptions deleted with the stale connections."""
    untargeted: int = 0
    """Records sent to no one: a target attribute is configured and neither image names a
    user in it (missing, empty or not S/N)."""
    unheard: int = 0
    """Records no subscription matched (nobody subscribed, filters, owners): not an error."""
    topicsQueried: int = 0
    """Topics read from the subscription index with a Query (each at most once per batch)."""
    topicsCached: int = 0
    """Topics whose subscriptions came from the container's cache (their version unchanged)."""
    subscriptionsRead: int = 0
    """Subscription items those queries returned."""
    skippedSubscriptions: int = 0
    """Stored subscriptions that could not be read (logged at ERROR); they receive nothing."""
    retried: int = 0
    failed: int = 0
    recordsFailed: int = 0
    malformed: int = 0
    truncated: int = 0
    """Messages sent without ``data``/``old`` because they passed 128 KB."""
    fanoutMs: float = 0.0
    expiredClosed: int = 0
    """Recipients whose token had expired: sent nothing, and closed."""
    replayWritten: int = 0
    """Items written to the replay store (2 or 3 per recorded change)."""
    replayMs: float = 0.0
    """Time spent recording the batch in the replay store."""
    queuedRecords: int = 0
    """Records handed to the senders (queued fan-out) instead of posted here."""
    queuedRecipients: int = 0
    """Recipients of those records (each gets its message from a sender)."""
    jobsQueued: int = 0
    """Delivery jobs (SQS FIFO messages) sent."""
    enqueueMs: float = 0.0
    """Time spent sending jobs."""
    failedCodes: dict[str, int] = field(default_factory=dict)


def table_of(event_source_arn: Any) -> str:
    """``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`` -> ``NAME``."""
    if isinstance(event_source_arn, str):
        parts = event_source_arn.split(":", 5)
        if len(parts) == 6 and parts[5].startswith("table/"):
            return parts[5].split("/")[1]
    raise MalformedRecord(f"eventSourceARN is not a DynamoDB stream ARN: {event_source_arn!r:.120}")


def source_of(table_name: str, sources: Mapping[str, config.Source]) -> config.Source:
    """The source (``SOURCES``) whose physical table is ``table_name``."""
    for source in sources.values():
        if source.table == table_name:
            return source
    raise MalformedRecord(
        f"record from table {table_name!r:.120}, which is not in SOURCES"
        f" ({', '.join(sorted(s.table for s in sources.values()))[:200]})"
    )


def source_label(table_name: str, sources: Mapping[str, config.Source]) -> str:
    """The label (``SOURCES``) of the source whose physical table is ``table_name``."""
    return source_of(table_name, sources).label


def timestamp_of(approximate_creation: Any, fallback: float) -> str:
    """ISO-8601 UTC of the record's ApproximateCreationDateTime (epoch seconds or datetime)."""
    if isinstance(approximate_creation, datetime):
        moment = approximate_creation
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return iso_utc(moment.timestamp())
    if isinstance(approximate_creation, (int, float)) and not isinstance(
        approximate_creation, bool
    ):
        return iso_utc(float(approximate_creation))
    return iso_utc(fallback)


def _image(stream: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    image = stream.get(name)
    if image is None:
        return None
    if not isinstance(image, dict):
        raise MalformedRecord(f"dynamodb.{name} is not an object")
    return image


def read_record(
    record: Any, *, now: float, sources: Mapping[str, config.Source], buckets: int
) -> Read:
    """A stream record as a ``Change`` and its topics (pure). Raises ``MalformedRecord``.

    The envelope every message of the record shares: type, action, table (the
    source's label), keys, id, sequence, timestamp. Images are checked here,
    whoever receives them, so a record that cannot become a message is always
    reported.
    """
    if not isinstance(record, dict):
        raise MalformedRecord("record is not an object")
    event_name = record.get("eventName")
    action = ACTIONS.get(event_name) if isinstance(event_name, str) else None
    if action is None or not isinstance(event_name, str):
        raise MalformedRecord(f"unknown eventName {event_name!r:.40}")
    stream = record.get("dynamodb")
    if not isinstance(stream, dict) or not isinstance(stream.get("Keys"), dict):
        raise MalformedRecord("record has no dynamodb.Keys")
    sequence = stream.get("SequenceNumber")
    if not isinstance(sequence, str) or not sequence:
        raise MalformedRecord("record has no dynamodb.SequenceNumber")
    source = source_of(table_of(record.get("eventSourceARN")), sources)
    keys: dict[str, Any] = stream["Keys"]
    new = _image(stream, "NewImage") if action != "deleted" else None
    if action != "deleted" and new is None:
        raise MalformedRecord(
            "record has no NewImage: set the stream view type to NEW_IMAGE or NEW_AND_OLD_IMAGES"
        )
    old = _image(stream, "OldImage")
    try:
        plain_keys = image_to_plain(keys)
        for image in (new, old):
            if image is not None:
                image_to_plain(image)
    except MalformedAttribute as bad:
        raise MalformedRecord(f"bad attribute value: {bad}") from None
    try:
        if source.keys:
            topics = record_topics(source.label, source.keys, keys, buckets)
        else:  # no key schema in SOURCES: no keyed subscription can exist
            topics = [table_topic(source.label, bucket) for bucket in range(max(buckets, 1))]
    except InvalidKey as bad:
        raise MalformedRecord(f"keys do not fit the key schema in SOURCES: {bad}") from None
    envelope = {
        "type": "event_update",
        "action": action,
        "table": source.label,
        "keys": plain_keys,
        "id": str(record.get("eventID") or sequence),
        "sequence": sequence,
        "timestamp": timestamp_of(stream.get("ApproximateCreationDateTime"), now),
    }
    return Read(
        source=source,
        change=Change(event_name=event_name, keys=keys, old=old, new=new, envelope=envelope),
        key_names=tuple(name for name, _ in source.keys) or tuple(keys),
        topics=topics,
        old_visible=old is not None and in_source(record, source, "OldImage"),
        new_visible=new is not None and in_source(record, source, "NewImage"),
    )


def in_source(record: Mapping[str, Any], source: config.Source, image: str) -> bool:
    """Whether the source's own filters let a record's image (``NewImage`` or ``OldImage``)
    through: each pattern (as written, on NewImage) is matched against the record as Lambda
    sees it, with that image as its NewImage, so the pattern's eventName still applies.
    True without filters; an absent image passes (nobody sees it anyway)."""
    stream = record["dynamodb"]
    if not source.filters or stream.get(image) is None:
        return True
    others = {name: value for name, value in stream.items() if name not in ("NewImage", "OldImage")}
    return matches_any(
        source.filters, {**record, "dynamodb": {**others, "NewImage": stream[image]}}
    )


def _shape(message: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two messages of one record differ: their matches and trimmed fields.

    ``data``/``old`` are the record's images trimmed to a set of top-level
    attributes, so their attribute names determine them.
    """
    data, old = message.get("data"), message.get("old")
    return (
        tuple(message["matches"].items()),
        None if data is None else tuple(data),
        None if old is None else tuple(old),
    )


def encoded(
    messages: Mapping[str, Mapping[str, Any]], *, cursor_room: bool
) -> tuple[list[tuple[str, bytes]], int]:
    """(connection id, encoded message without cursor) for each connection, encoding each
    distinct message once (leaving ``CURSOR_ROOM`` when cursors will be appended); and how
    many connections get a truncated one."""
    shapes: dict[tuple[Any, ...], tuple[bytes, bool]] = {}
    out: list[tuple[str, bytes]] = []
    truncated = 0
    limit = MAX_MESSAGE_BYTES - CURSOR_ROOM if cursor_room else MAX_MESSAGE_BYTES
    for connection_id, message in messages.items():
        shape = _shape(message)
        if shape not in shapes:
            shapes[shape] = encode(message, limit)
        data, cut = shapes[shape]
        truncated += cut
        out.append((connection_id, data))
    return out, truncated


def payloads(
    messages: Mapping[str, Mapping[str, Any]],
    cursors: Mapping[str, str] | None = None,
) -> tuple[list[tuple[str, bytes]], int]:
    """(connection id, encoded message) for each connection, encoding each distinct message
    once and appending the connection's cursor (``cursors``, when given) to its bytes; and
    how many connections get a truncated one."""
    out, truncated = encoded(messages, cursor_room=cursors is not None)
    if cursors is None:
        return out, truncated
    return [(c, with_cursor(data, cursors.get(c))) for c, data in out], truncated


def message_cursors(
    key: bytes,
    position: Position,
    messages: Mapping[str, Mapping[str, Any]],
    subscriptions: Iterable[Subscription],
) -> dict[str, str]:
    """Each connection's cursor for this change: its position, bound to the connection's
    identity and to the scope of every subscription in its ``matches`` (pure)."""
    by_id = {(s.connection_id, s.sub_id): s for s in subscriptions}
    cursors: dict[str, str] = {}
    for connection_id, message in messages.items():
        matched = [by_id[(connection_id, sub_id)] for sub_id in message["matches"]]
        cursors[connection_id] = make_cursor(
            key, position, matched[0].user_id, [s.scope for s in matched]
        )
    return cursors


def replay_topics(read: Read) -> list[str]:
    """Where a change is recorded: its item and partition topics, and its table's bucket 0
    (every bucket of a table-wide topic is one scope, ``handlers.cursors.scope_topic``)."""
    keyed = [topic for topic in read.topics if not topic.startswith("T|")]
    return [*keyed, table_topic(read.source.label, 0)]


def untargeted_reason(change: Change, attribute: str | None) -> str | None:
    """Why no one may see this change (fail closed), or None. With ``attribute`` set, an item
    reaches only the users its images name there; naming none, it reaches no one."""
    if not attribute:
        return None
    if owner_of(change.new, attribute) is not None or owner_of(change.old, attribute) is not None:
        return None
    images = [name for name, image in (("new", change.new), ("old", change.old)) if image]
    return (
        f"no image names a user in {attribute!r} (a non-empty S or an N);"
        f" images: {', '.join(images) or 'none'}"
    )


def _sequence_of(record: Any) -> str:
    if isinstance(record, dict):
        stream = record.get("dynamodb")
        if isinstance(stream, dict) and isinstance(stream.get("SequenceNumber"), str):
            return str(stream["SequenceNumber"])
    # Lambda treats an empty identifier as "the whole batch failed": still nothing lost.
    return ""


_query_lock = threading.Lock()
_query_pool: ThreadPoolExecutor | None = None


FANOUT_STATE_ITEM_KEY = {"connectionId": {"S": FANOUT_STATE_KEY}}
"""The key of the channel's fan-out mode item in the connections table."""


def query_pool() -> ThreadPoolExecutor:
    global _query_pool
    with _query_lock:
        if _query_pool is None:
            _query_pool = ThreadPoolExecutor(QUERY_CONCURRENCY, thread_name_prefix="topics")
        return _query_pool


def cache_limit(environ: Mapping[str, str] | None = None) -> int:
    """The cache's bound: ``MAX_CACHED_SUBSCRIPTIONS``, or fewer so that it takes at most a
    quarter of the function's memory (``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``, MB)."""
    raw = (os.environ if environ is None else environ).get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    try:
        memory_mb = int(raw)
    except ValueError:
        return MAX_CACHED_SUBSCRIPTIONS
    share = int(memory_mb * 1024 * 1024 * CACHE_MEMORY_SHARE / CACHED_SUBSCRIPTION_BYTES)
    return max(1000, min(MAX_CACHED_SUBSCRIPTIONS, share))


class SubscriptionCache:
    """topic -> (version, its subscriptions), kept across batches: a topic is read again
    only when its version item moved. At most ``limit`` subscriptions and ``max_topics``
    topics in all; the least recently used topics go first, and a topic holding more than
    ``limit`` is never kept. Thread-safe."""

    def __init__(
        self, limit: int = MAX_CACHED_SUBSCRIPTIONS, topics: int = MAX_CACHED_TOPICS
    ) -> None:
        self.limit = limit
        self.max_topics = topics
        self.size = 0
        """Subscriptions held, all topics together."""
        self._topics: OrderedDict[str, tuple[int, list[Subscription]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._topics)

    def __contains__(self, topic: object) -> bool:
        return topic in self._topics

    def get(self, topic: str, version: int) -> list[Subscription] | None:
        """The topic's subscriptions if they were cached at ``version``, else None."""
        with self._lock:
            entry = self._topics.get(topic)
            if entry is None or entry[0] != version:
                return None
            self._topics.move_to_end(topic)
            return entry[1]

    def put(self, topic: str, version: int, found: list[Subscription]) -> None:
        with self._lock:
            self._drop(topic)
            if len(found) > self.limit:
                return
            self._topics[topic] = (version, found)
            self.size += len(found)
            while self.size > self.limit or len(self._topics) > self.max_topics:
                _, (_, oldest) = self._topics.popitem(last=False)
                self.size -= len(oldest)

    def forget(self, topics: Iterable[str]) -> None:
        with self._lock:
            for topic in topics:
                self._drop(topic)

    def _drop(self, topic: str) -> None:
        entry = self._topics.pop(topic, None)
        if entry is not None:
            self.size -= len(entry[1])


class _Batch:
    """What one batch remembers: subscriptions per topic, connections gone, stale clean-ups."""

    def __init__(self) -> None:
        self.topics: dict[str, list[Subscription]] = {}
        self.versions: dict[str, int | None] = {}
        """topic -> its version as read in this batch (0: never subscribed; None: unknown)."""
        self.gone: set[str] = set()
        self.by_connection: dict[str, list[tuple[str, str]]] = {}
        """connection id -> (subscription id, topic) of its subscriptions seen in this batch."""
        self.lock = threading.Lock()
        self.subscriptions_removed = 0
        self.expired: set[str] = set()
        """Connections whose token has expired, closed once in this batch."""
        self.mode_read = False
        """Whether this batch read the channel's fan-out mode (once per batch at most)."""
        self.mode_future: Future[bool] | None = None
        """The mode's read, started with the batch so its round trip overlaps the replay
        store's write and the version reads (cold starts pay one fewer wait)."""

    def add(self, topic: str, found: list[Subscription]) -> None:
        self.topics[topic] = found
        for subscription in found:
            self.by_connection.setdefault(subscription.connection_id, []).append(
                (subscription.sub_id, topic)
            )


class Broadcaster:
    """One batch at a time; dependencies are passed in so tests can use real local ones."""

    def __init__(
        self,
        settings: config.BroadcasterConfig,
        *,
        dynamodb: Any,
        api: Poster,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        cursor_key: bytes | None = None,
        wall: Callable[[], float] = time.time,
        sqs: Any = None,
    ) -> None:
        self.settings = settings
        self.dynamodb = dynamodb
        self.api = api
        self.clock = clock
        self.sleep = sleep
        self.cursor_key = cursor_key
        """Signs each message's cursor; None: messages carry no cursor."""
        self.wall = wall
        self._last_ms = 0
        """The last position recorded: positions of one container strictly increase."""
        self.sqs = sqs
        """Sends delivery jobs (``settings.fanout``); made on first use when None."""
        self.queued = False
        """The channel's delivery is queued (seen or switched by this container): for good."""
        self.cache = SubscriptionCache(cache_limit())
        """Each topic's subscriptions, across batches (this broadcaster is the container's)."""

    def _remove_stale(self, connection_id: str, batch: _Batch) -> bool:
        """Delete the record and subscriptions of a connection that answered 410; whether
        the record was deleted."""
        # its topics are read again next batch, whether or not the removal (and the version
        # bumps that tell other containers) succeeds
        self.cache.forget(topic for _, topic in batch.by_connection.get(connection_id, ()))
        removal = remove_stale(
            self.dynamodb,
            connections_table=self.settings.connections_table,
            subscriptions_table=self.settings.subscriptions_table,
            connection_id=connection_id,
            known=batch.by_connection.get(connection_id, ()),
        )
        if removal is None:
            return False
        with batch.lock:
            batch.subscriptions_removed += removal.subscriptions_removed
        return removal.record_removed

    def _read_topic(self, topic: str) -> tuple[list[Subscription], int, int]:
        """(subscriptions on one topic, items read, items skipped as unreadable)."""
        found: list[Subscription] = []
        read = skipped = 0
        for item in store.topic_subscriptions(
            self.dynamodb, self.settings.subscriptions_table, topic
        ):
            read += 1
            try:
                found.append(subscription_of(item, topic))
            except Exception as bad:  # written by $default only; never block the shard on one
                skipped += 1
                log.error(
                    "unreadable subscription item; it receives nothing",
                    extra={"topic": topic, "sk": str(item.get("sk"))[:200], "reason": str(bad)},
                )
        return found, read, skipped

    def _read_versions(self, topics: Iterable[str], batch: _Batch) -> None:
        """The versions of the topics this batch has not read yet (``store.topic_versions``,
        100 a call, the calls concurrently). Read before any Query of those topics: a
        subscribe landing in between moves the version past the one the list is cached
        under, so the next batch reads it again (a list is never cached under a version
        that counts a change it lacks)."""
        unread = [topic for topic in dict.fromkeys(topics) if topic not in batch.versions]
        chunks = [
            unread[start : start + store.BATCH_GET_SIZE]
            for start in range(0, len(unread), store.BATCH_GET_SIZE)
        ]

        def read(chunk: Sequence[str]) -> dict[str, int | None]:
            return store.topic_versions(
                self.dynamodb, self.settings.subscriptions_table, chunk, sleep=self.sleep
            )

        results = [read(chunks[0])] if len(chunks) == 1 else query_pool().map(read, chunks)
        for versions in results:
            batch.versions.update(versions)

    def _prefetch_versions(
        self, reads: list[tuple[Any, Read]], positions: list[Position | None], batch: _Batch
    ) -> None:
        """The versions of every topic the batch's heard records touch, in one go (one
        BatchGetItem per 100 topics rather than one per record). Best effort: what it could
        not read is read with its record (where a failure is that record's)."""
        topics = [
            topic
            for (_, read), position in zip(reads, positions, strict=True)
            if position is not None
            for topic in read.topics
        ]
        try:
            self._read_versions(topics, batch)
        except Exception:
            log.warning("could not read the batch's topic versions up front", exc_info=True)

    def _subscriptions(
        self, topics: Iterable[str], batch: _Batch, stats: BatchStats
    ) -> list[Subscription]:
        """The subscriptions on these topics, each topic read once per batch: from the
        container's cache when the topic's version has not moved (no version item is version
        0), else with a Query (unread ones concurrently); without
        connections that answered 410 in this batch."""
        topics = list(topics)
        missing = [topic for topic in dict.fromkeys(topics) if topic not in batch.topics]
        if missing:
            self._read_versions(missing, batch)
        to_query = []
        for topic in missing:
            version = batch.versions.get(topic)
            cached = None if version is None else self.cache.get(topic, version)
            if cached is None:
                to_query.append(topic)
                continue
            batch.add(topic, cached)
            stats.topicsCached += 1
        if len(to_query) == 1:
            results = [self._read_topic(to_query[0])]
        else:
            results = list(query_pool().map(self._read_topic, to_query))
        for topic, (found, read, skipped) in zip(to_query, results, strict=True):
            batch.add(topic, found)
            version = batch.versions.get(topic)
            if version is not None:
                self.cache.put(topic, version, found)
            stats.topicsQueried += 1
            stats.subscriptionsRead += read
            stats.skippedSubscriptions += skipped
        return [
            subscription
            for topic in topics
            for subscription in batch.topics[topic]
            if subscription.connection_id not in batch.gone
        ]

    def run(self, records: list[Any], deadline: float) -> tuple[list[dict[str, str]], BatchStats]:
        stats = BatchStats(records=len(records))
        batch = _Batch()
        started = self.clock()
        if self.settings.fanout is not None and not self.queued and records:
            batch.mode_future = query_pool().submit(self._channel_is_queued)
        try:
            reads, malformed = self._read_all(records, stats)
            positions = self._positions(reads)
            if reads and not self._record(reads, positions, stats):
                stats.recordsFailed += 1
                return self._finish([_sequence_of(records[0])], stats, started)
            self._prefetch_versions(reads, positions, batch)
            for (record, read), position in zip(reads, positions, strict=True):
                if not self._one(record, read, position, deadline, batch, stats):
                    return self._finish([_sequence_of(record)], stats, started)
            if malformed is not None:
                return self._finish([_sequence_of(malformed)], stats, started)
            return self._finish([], stats, started)
        finally:
            stats.subscriptionsRemoved = batch.subscriptions_removed

    def _read_all(
        self, records: list[Any], stats: BatchStats
    ) -> tuple[list[tuple[Any, Read]], Any]:
        """The records read, up to the first malformed one (returned second, else None): it
        is reported and nothing after it is attempted."""
        reads: list[tuple[Any, Read]] = []
        for record in records:
            try:
                read = read_record(
                    record,
                    now=self.wall(),
                    sources=self.settings.sources,
                    buckets=self.settings.table_buckets,
                )
            except Exception as bad:  # MalformedRecord, or input shaped beyond what it checks
                stats.malformed += 1
                stats.recordsFailed += 1
                log.error(
                    "malformed stream record; reported as a batch item failure",
                    extra={"reason": str(bad), "sequence": _sequence_of(record), "record": record},
                )
                return reads, record
            reads.append((record, read))
        return reads, None

    def _heard(self, read: Read) -> bool:
        """Whether any subscriber could ever see this change (else it is neither recorded
        nor delivered)."""
        untargeted = untargeted_reason(read.change, self.settings.target_attribute)
        return untargeted is None and not read.outside_source

    def _positions(self, reads: list[tuple[Any, Read]]) -> list[Position | None]:
        """Each heard change's position: recorded now, strictly after the previous one."""
        positions: list[Position | None] = []
        for _, read in reads:
            if not self._heard(read):
                positions.append(None)
                continue
            self._last_ms = max(int(self.wall() * 1000), self._last_ms + 1)
            positions.append(Position(self._last_ms, str(read.change.envelope["id"])))
        return positions

    def _record(
        self, reads: list[tuple[Any, Read]], positions: list[Position | None], stats: BatchStats
    ) -> bool:
        """Write the batch's heard changes to the replay store before any delivery; False
        (logged) when the store could not take them all: the whole batch is retried."""
        resume = self.settings.resume
        if not resume.enabled or resume.table is None:
            return True
        started = self.clock()
        items: list[dict[str, Any]] = []
        try:
            for (_, read), position in zip(reads, positions, strict=True):
                if position is None:
                    continue
                change = read.change
                text = replay.record_text(
                    change.event_name,
                    change.keys,
                    change.new,
                    change.old,
                    change.envelope,
                    old_visible=read.old_visible,
                    new_visible=read.new_visible,
                )
                items.extend(
                    replay.replay_item(
                        topic,
                        position.change_id,
                        position.recorded_at_ms,
                        text,
                        resume.retention_seconds,
                    )
                    for topic in replay_topics(read)
                )
            stats.replayWritten += replay.record_change(
                self.dynamodb, resume.table, items, sleep=self.sleep
            )
        except Exception:
            log.exception(
                "could not record the batch in the replay store; the batch is retried",
                extra={"items": len(items)},
            )
            return False
        finally:
            stats.replayMs = round((self.clock() - started) * 1000, 3)
        return True

    def _unexpired(
        self, found: list[Subscription], batch: _Batch, stats: BatchStats
    ) -> list[Subscription]:
        """The subscriptions whose connection's token has not expired; each connection seen
        expired is closed (``@connections`` DELETE, once per batch: API Gateway then runs
        ``$disconnect``, which removes its record and subscriptions)."""
        now = self.wall()
        kept = []
        for subscription in found:
            if subscription.expires_at is None or now < subscription.expires_at:
                kept.append(subscription)
                continue
            if subscription.connection_id not in batch.expired:
                batch.expired.add(subscription.connection_id)
                closed = close_connection(
                    self.api, subscription.connection_id, "its token has expired"
                )
                stats.expiredClosed += closed
        return kept

    def _one(
        self,
        record: Any,
        read: Read,
        position: Position | None,
        deadline: float,
        batch: _Batch,
        stats: BatchStats,
    ) -> bool:
        """Deliver one record; False when it must be reported (and the batch stops)."""
        sequence = _sequence_of(record)
        if self.clock() >= deadline:
            log.warning(
                "out of time; the rest of the batch is retried", extra={"sequence": sequence}
            )
            stats.recordsFailed += 1
            return False
        nobody = untargeted_reason(read.change, self.settings.target_attribute)
        if nobody is not None:
            stats.untargeted += 1
            log.warning(
                "record names no recipient; sent to no one",
                extra={
                    "sequence": sequence,
                    "reason": nobody,
                    "targetAttribute": self.settings.target_attribute,
                },
            )
            return True
        if read.outside_source:  # Lambda's filters let it through on neither image either
            stats.unheard += 1
            return True
        try:
            found = self._unexpired(self._subscriptions(read.topics, batch, stats), batch, stats)
            messages = plan(
                read.change,
                found,
                key_names=read.key_names,
                target_attribute=self.settings.target_attribute,
                include_old=self.settings.include_old_image,
                old_visible=read.old_visible,
                new_visible=read.new_visible,
            )
            cursors = None
            if self.cursor_key is not None and position is not None:
                cursors = message_cursors(self.cursor_key, position, messages, found)
            if not messages:
                stats.unheard += 1
                return True
            if self._queued_mode(len(messages), batch):
                return self._enqueue(read, messages, cursors, found, sequence, stats)
            deliveries, truncated = payloads(messages, cursors)
            stats.truncated += truncated
            report = fan_out(
                self.api,
                deliveries,
                concurrency=self.settings.send_concurrency,
                max_attempts=self.settings.send_max_attempts,
                deadline=deadline,
                on_stale=lambda connection_id: self._remove_stale(connection_id, batch),
                sleep=self.sleep,
                clock=self.clock,
            )
        except Exception:
            stats.recordsFailed += 1
            log.exception("could not deliver a record", extra={"sequence": sequence})
            return False
        batch.gone.update(report.stale)
        stats.recipients += report.delivered + len(report.stale) + len(report.failed)
        stats.delivered += report.delivered
        stats.staleRemoved += report.stale_removed
        stats.staleKept += len(report.stale) - report.stale_removed
        stats.retried += report.retried
        stats.failed += len(report.failed)
        for code in report.failed.values():
            stats.failedCodes[code] = stats.failedCodes.get(code, 0) + 1
        if report.failed:
            stats.recordsFailed += 1
            log.warning(
                "record not delivered to every recipient; it will be retried",
                extra={"sequence": sequence, "failed": dict(list(report.failed.items())[:10])},
            )
            return False
        return True

    def _channel_is_queued(self) -> bool:
        """Whether the channel's fan-out mode item (``FANOUT_STATE_KEY``) says queued."""
        found = self.dynamodb.get_item(
            TableName=self.settings.connections_table,
            Key=FANOUT_STATE_ITEM_KEY,
            ConsistentRead=True,
        )
        return "Item" in found

    def _queued_mode(self, recipients: int, batch: _Batch) -> bool:
        """Whether this record goes through the queue: once the channel has queued one, every
        later record does, whatever its audience, so an inline post never overtakes a queued
        job of an earlier record. The switch is stored (``FANOUT_STATE_KEY``) for every
        container and read once per batch until this container has seen it."""
        fanout = self.settings.fanout
        if fanout is None:
            return False
        if self.queued:
            return True
        if not batch.mode_read:
            batch.mode_read = True
            future, batch.mode_future = batch.mode_future, None
            if future.result() if future is not None else self._channel_is_queued():
                self.queued = True
                return True
        if recipients < fanout.threshold:
            return False
        self.dynamodb.put_item(
            TableName=self.settings.connections_table,
            Item={
                **FANOUT_STATE_ITEM_KEY,
                "mode": {"S": "queued"},
                "since": {"S": iso_utc(self.wall())},
                "recipients": {"N": str(recipients)},
            },
        )
        self.queued = True
        log.info(
            "delivery is queued from now on",
            extra={"recipients": recipients, "threshold": fanout.threshold},
        )
        return True

    def _enqueue(
        self,
        read: Read,
        messages: Mapping[str, Mapping[str, Any]],
        cursors: Mapping[str, str] | None,
        found: Iterable[Subscription],
        sequence: str,
        stats: BatchStats,
    ) -> bool:
        """Hand one record's delivery to the senders; True once every job is accepted. Each
        recipient's token expiry goes with it, so a job that waits past it is not posted."""
        expires: dict[str, int] = {}
        for subscription in found:
            if subscription.expires_at is not None and subscription.connection_id in messages:
                known = expires.get(subscription.connection_id)
                expires[subscription.connection_id] = min(
                    subscription.expires_at, known if known is not None else subscription.expires_at
                )
        fanout = self.settings.fanout
        assert fanout is not None
        started = self.clock()
        out, truncated = encoded(messages, cursor_room=cursors is not None)
        jobs = plan_jobs(
            str(read.change.envelope["id"]),
            dict(out),
            fanout.groups,
            channel=fanout.channel,
            cursors=cursors,
            expires=expires,
            max_recipients=fanout.slice,
        )
        try:
            self._send_jobs(fanout.queue_url, jobs)
        except Exception as bad:
            stats.recordsFailed += 1
            log.warning(
                "could not queue a record's delivery; it will be retried",
                extra={"sequence": sequence, "jobs": len(jobs), "reason": str(bad)[:300]},
            )
            return False
        finally:
            stats.enqueueMs = round(stats.enqueueMs + (self.clock() - started) * 1000, 3)
        stats.truncated += truncated
        stats.queuedRecords += 1
        stats.queuedRecipients += len(out)
        stats.recipients += len(out)
        stats.jobsQueued += len(jobs)
        return True

    def _send_jobs(self, queue_url: str, jobs: list[Job]) -> None:
        """Send a record's jobs so no job overtakes an earlier one of its group: round ``r``
        holds the ``r``-th job of each group (its part ``r``), rounds go one after the
        other, and a call never holds two jobs of one group, so a failed entry can never be
        passed by a later one that succeeded. The calls of a round run concurrently."""
        rounds: list[list[Job]] = []
        seen: dict[str, int] = {}
        for job in jobs:
            index = seen.get(job.group_id, 0)
            seen[job.group_id] = index + 1
            if index == len(rounds):
                rounds.append([])
            rounds[index].append(job)
        for jobs_of_round in rounds:
            calls: list[list[Job]] = [[]]
            size = 0
            for job in jobs_of_round:
                body = len(job.body.encode("utf-8"))
                if len(calls[-1]) == SQS_BATCH_ENTRIES or size + body > SQS_BATCH_BYTES:
                    calls.append([])
                    size = 0
                calls[-1].append(job)
                size += body
            if len(calls) == 1:
                self._send_call(queue_url, calls[0])
            else:
                for _ in query_pool().map(lambda call: self._send_call(queue_url, call), calls):
                    pass

    def _send_call(self, queue_url: str, jobs: list[Job]) -> None:
        """One SendMessageBatch, its failed entries retried (bounded, with backoff); raises
        when an entry cannot be sent."""
        pending = {f"j{n}": job for n, job in enumerate(jobs)}
        if self.sqs is None:  # made on first use: a channel that never queues never pays for it
            self.sqs = aws.client("sqs")
        for attempt in range(1, ENQUEUE_MAX_ATTEMPTS + 1):
            answer = self.sqs.send_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {
                        "Id": entry_id,
                        "MessageBody": job.body,
                        "MessageGroupId": job.group_id,
                        "MessageDeduplicationId": job.deduplication_id,
                    }
                    for entry_id, job in pending.items()
                ],
            )
            failed = answer.get("Failed") or []
            if not failed:
                return
            fatal = [f for f in failed if f.get("SenderFault")]
            if fatal or attempt == ENQUEUE_MAX_ATTEMPTS:
                first = (fatal or failed)[0]
                raise RuntimeError(
                    f"SendMessageBatch refused {len(failed)} job(s):"
                    f" {first.get('Code')}: {first.get('Message')}"
                )
            pending = {f["Id"]: pending[f["Id"]] for f in failed}
            self.sleep(backoff_delay(attempt))

    def _finish(
        self, failed: list[str], stats: BatchStats, started: float
    ) -> tuple[list[dict[str, str]], BatchStats]:
        stats.fanoutMs = round((self.clock() - started) * 1000, 3)
        return [{"itemIdentifier": sequence} for sequence in failed], stats


def record_batch(stats: BatchStats, function_name: str) -> None:
    """One JSON log line and one EMF line per batch."""
    log.info("batch", extra=asdict(stats))
    logs.emit_metrics(
        logs.emf_line(
            METRICS_NAMESPACE,
            {"FunctionName": function_name},
            {
                "Delivered": stats.delivered,
                "Recipients": stats.recipients,
                "StaleRemoved": stats.staleRemoved,
                "StaleKept": stats.staleKept,
                "SubscriptionsRemoved": stats.subscriptionsRemoved,
                "Untargeted": stats.untargeted,
                "Unheard": stats.unheard,
                "TopicsQueried": stats.topicsQueried,
                "TopicsCached": stats.topicsCached,
                "SubscriptionsRead": stats.subscriptionsRead,
                "SkippedSubscriptions": stats.skippedSubscriptions,
                "Retried": stats.retried,
                "Failed": stats.failed,
                "RecordsFailed": stats.recordsFailed,
                "Truncated": stats.truncated,
                "ReplayWritten": stats.replayWritten,
                "ExpiredClosed": stats.expiredClosed,
                "QueuedRecords": stats.queuedRecords,
                "QueuedRecipients": stats.queuedRecipients,
                "JobsQueued": stats.jobsQueued,
            },
            milliseconds={
                "FanoutTime": stats.fanoutMs,
                "ReplayTime": stats.replayMs,
                "EnqueueTime": stats.enqueueMs,
            },
        )
    )


_lock = threading.Lock()
_broadcaster: Broadcaster | None = None


def broadcaster() -> Broadcaster:
    """The container's broadcaster, built on first use."""
    global _broadcaster
    with _lock:
        if _broadcaster is None:
            api = ManagementApi(
                CONFIG.management_endpoint,
                region=aws.region(),
                credentials=frozen_credentials(aws.session()),
            )
            parameter = CONFIG.resume.cursor_secret_parameter
            _broadcaster = Broadcaster(
                CONFIG,
                dynamodb=aws.client("dynamodb"),
                api=api,
                cursor_key=cursor_key(aws.secure_parameter(parameter)) if parameter else None,
            )
        return _broadcaster


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    worker = broadcaster()
    deadline = invocation_deadline(context, worker.clock, 60)
    records = event.get("Records") if isinstance(event, dict) else None
    failures, stats = worker.run(list(records or []), deadline)
    record_batch(stats, getattr(context, "function_name", None) or "broadcaster")
    return {"batchItemFailures": failures}
