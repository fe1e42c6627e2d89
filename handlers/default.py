"""``$default``: JSON messages from clients, routed by ``action`` (protocol version 2).

=============================================  ==================================================
client sends                                   server answers
=============================================  ==================================================
``{"action": "ping", "id": 7}``                ``{"type": "pong", "id": 7}``
``{"action": "hello"}``                        ``{"type": "hello", "version": 2, "expiresAt":
                                               ..., "limits": {"subscriptions": 20}}``
``{"action": "subscribe", "id": "s1",          ``{"type": "subscribed", "id": "s1", "cursor": ...}``
"table": "events", "key": {...}?,
"filter": [...]?}``
``{"action": "unsubscribe", "id": "s1"}``      ``{"type": "unsubscribed", "id": "s1"}``
``{"action": "auth", "token": "..."}``         ``{"type": "authenticated", "expiresAt": ...}``
=============================================  ==================================================

A ping's ``id`` is echoed back when it is a string of at most 128 characters
or an integer; an integer goes back by the project's number rule
(``handlers.dynamo_json``): a JSON number when JavaScript holds it exactly,
else the exact decimal string, and not at all beyond 128 digits.

A subscription's ``id`` is the client's name for it: a string of 1 to 64
characters, unique per connection; subscribing again with the same id
replaces it (a refused replacement leaves the previous one in place), and
unsubscribing an unknown id still answers ``unsubscribed`` (idempotent).

Anything refused gets ``{"type": "error", "code": ..., "id": ..., "message":
...}``: ``id`` is the subscription id when the message carried a valid one;
``message`` is human text that names no rule, no secret and no other user's
data. Codes:

========================  ==============================================================
code                      when
========================  ==============================================================
binary_frame              the client sent a binary frame
too_large                 the message exceeds ``MAX_INPUT_BYTES``
invalid_json              the message is empty or not standard JSON (``NaN``, ``Infinity``)
invalid_message           the JSON is not an object
missing_action            the object has no string ``action``
unknown_action            ``action`` names no known action
invalid_subscription      bad ``id``, ``table``, ``key`` or ``filter``; a filter on a field the
                          subscription may not see; a filter on a source without old
                          images; ``snapshot`` not a boolean or without a key
unknown_table             ``table`` names no source
forbidden                 no access rule allows this subscription for this connection
too_many_subscriptions    the connection holds ``MAX_SUBSCRIPTIONS`` already
invalid_token             ``auth`` with a refused token or on a stack without tokens;
                          any message on a connection whose token has expired (closed)
internal_error            the server could not read or write its tables (logged); retry
========================  ==============================================================

The handler never raises on client input, and a reply that cannot be delivered
(the client left) is logged, not retried. Deciding is pure (``read_message``,
``subscribe_request``, ``authorize``); storage goes through a ``Store``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from handlers import aws, config, logs, signin, strict_json
from handlers.access import Grant, grant
from handlers.config import DefaultConfig, Source
from handlers.connections import connection_expiry, iso_utc
from handlers.cursors import cursor_key, now_cursor
from handlers.delivery import Poster, close_connection
from handlers.dynamo_json import number_to_plain
from handlers.filters import Filter, InvalidFilter, filter_attributes, parse_filter
from handlers.management import ManagementApi, endpoint_from_request, frozen_credentials
from handlers.recipients import Subscription, subscription_of
from handlers.resume import Resume, replay_messages, reset
from handlers.snapshot import (
    SnapshotLimits,
    SnapshotPage,
    SnapshotTooLarge,
    page_messages,
    snapshot_pages,
    typed_key,
)
from handlers.subscriptions import (
    Connection,
    ConnectionGone,
    SubscriptionConflict,
    TooManySubscriptions,
    connection_subscriptions,
    delete_subscription,
    extend_connection,
    put_subscription,
    read_connection,
    split_sort_key,
    subscription_item,
)
from handlers.tokens import InvalidToken, identity_claims, verify_token
from handlers.topics import InvalidKey, bucket_of, key_topic, subscription_key, table_topic

CONFIG = config.default_config()
log = logs.logger(__name__)

ACTIONS = ("ping", "hello", "subscribe", "unsubscribe", "auth")
PROTOCOL_VERSION = 2
MAX_ECHOED_ID_LENGTH = 128
MAX_SUBSCRIPTION_ID_LENGTH = 64
MAX_SHOWN = 64
"""Client text quoted back in an error message is cut to this many characters."""

_apis: dict[str, ManagementApi] = {}
_apis_lock = threading.Lock()


class Refusal(Exception):
    """A client message the server will not act on: becomes one ``error`` reply."""

    def __init__(self, code: str, message: str, sub_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.sub_id = sub_id

    def reply(self) -> dict[str, Any]:
        return error(self.code, self.message, self.sub_id)


def error(code: str, message: str, sub_id: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"type": "error", "code": code}
    if sub_id is not None:
        answer["id"] = sub_id
    answer["message"] = message
    return answer


def shown(text: str) -> str:
    """Client text as an error message may quote it: cut, and as a Python repr (escaped)."""
    return repr(text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "...")


def echoed_id(value: Any) -> str | int | float | None:
    """What a pong carries back as ``id`` (pure), or None to leave it out.

    Strings up to ``MAX_ECHOED_ID_LENGTH`` go back as they came. Integers follow
    the number rule every message follows: beyond 2**53 - 1 a JSON number may
    not mean the same value in JavaScript, so such an id goes back as its exact
    decimal text (or as a float's number when that is exact).
    """
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHOED_ID_LENGTH else None
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
        return number_to_plain(text) if len(text) <= MAX_ECHOED_ID_LENGTH else None
    return None


def _is_text(value: str) -> bool:
    """Whether a string is valid Unicode (no unpaired surrogate from a ``\\ud800`` escape):
    DynamoDB stores only valid UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- reading a message (pure) ---------------------------------------------------------------


def read_message(body: Any, is_base64: bool, max_bytes: int) -> dict[str, Any]:
    """The client's message as a JSON object with a string ``action``; else ``Refusal``."""
    if is_base64:
        raise Refusal("binary_frame", "binary frames are not supported; send JSON text")
    if not isinstance(body, str) or not body.strip():
        raise Refusal(
            "invalid_json", 'empty message; send a JSON object such as {"action": "ping"}'
        )
    size = len(body.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise Refusal("too_large", f"message is {size} bytes; the limit is {max_bytes}")
    try:
        parsed = strict_json.loads(body, exact=True)  # filters compare numbers exactly
    except strict_json.InvalidJson as bad:
        raise Refusal("invalid_json", f"message is not valid JSON: {bad}") from None
    if not isinstance(parsed, dict):
        raise Refusal("invalid_message", 'message must be a JSON object with an "action"')
    action = parsed.get("action")
    if not isinstance(action, str) or not action:
        raise Refusal("missing_action", 'message has no "action" string')
    return parsed


def subscription_id(message: Mapping[str, Any]) -> str:
    """The message's subscription ``id``: a string of 1 to 64 characters; else ``Refusal``."""
    sub_id = message.get("id")
    if (
        not isinstance(sub_id, str)
        or not 1 <= len(sub_id) <= MAX_SUBSCRIPTION_ID_LENGTH
        or not _is_text(sub_id)
    ):
        raise Refusal(
            "invalid_subscription",
            f'{message.get("action")} needs an "id": a string of 1 to'
            f" {MAX_SUBSCRIPTION_ID_LENGTH} characters naming the subscription",
        )
    return sub_id


@dataclass(frozen=True)
class SubscribeRequest:
    """A subscribe message, validated against its source (before any identity is known)."""

    sub_id: str
    source: Source
    key: dict[str, str] | None
    """Key attribute -> value as text (what access rules compare); None: table-wide."""
    topic: str
    filter: Filter
    filter_json: str | None
    """The client's filter as compact JSON text (what is stored); None: no filter."""
    after: Any = None
    """The cursor to resume after, as sent (unread: a malformed one gets ``reset``); None:
    no resume."""
    snapshot: bool = False
    """Send the key's current items first (keyed subscriptions only)."""


def _has_bad_text(value: Any, depth: int = 0) -> bool:
    """Whether any string (or object key) in a parsed JSON value is not valid Unicode."""
    if isinstance(value, str):
        return not _is_text(value)
    if depth > 64:
        return False  # strict_json bounds nesting; a filter deeper than this is refused anyway
    if isinstance(value, dict):
        return any(_has_bad_text(k) or _has_bad_text(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_bad_text(item, depth + 1) for item in value)
    return False


def subscribe_request(
    message: Mapping[str, Any],
    sources: Mapping[str, Source],
    connection_id: str,
    buckets: int,
) -> SubscribeRequest:
    """Validate a ``subscribe`` message into what to store (pure); ``Refusal`` says why not."""
    sub_id = subscription_id(message)

    def refuse(code: str, text: str) -> Refusal:
        return Refusal(code, text, sub_id)

    for name in ("table", "key", "filter"):
        if _has_bad_text(message.get(name)):
            raise refuse("invalid_subscription", f"{name} holds text that is not valid Unicode")
    snapshot = message.get("snapshot")
    if snapshot is not None and not isinstance(snapshot, bool):
        raise refuse("invalid_subscription", "snapshot must be true or false")
    if snapshot and message.get("key") is None:
        raise refuse(
            "invalid_subscription",
            "snapshot needs a key: a table-wide subscription has no snapshot (read the"
            " table yourself, then resume with after)",
        )
    after = message.get("after")  # anything but a cursor of this subscription: reset
    label = message.get("table")
    if not isinstance(label, str) or not label:
        raise refuse("invalid_subscription", 'subscribe needs "table": the label of a source')
    source = sources.get(label)
    if source is None:
        raise refuse("unknown_table", f"no source is named {shown(label)}")
    raw_key = message.get("key")
    key: dict[str, str] | None = None
    if raw_key is None:
        topic = table_topic(label, bucket_of(connection_id, buckets))
    else:
        if not source.keys:
            raise refuse(
                "invalid_subscription",
                f"source {shown(label)} takes table-wide subscriptions only (no key)",
            )
        try:
            key, parts = subscription_key(source.keys, raw_key)
        except InvalidKey as bad:
            raise refuse("invalid_subscription", str(bad)) from None
        topic = key_topic(label, parts)
    try:
        compiled = parse_filter(message.get("filter"))
    except InvalidFilter as bad:
        raise refuse("invalid_subscription", str(bad)) from None
    if compiled and not source.old_image:
        raise refuse(
            "invalid_subscription",
            f"source {shown(label)} cannot take filters: its stream carries new images"
            " only, and telling an item leaving a filter needs the old one",
        )
    filter_json = strict_json.dumps(message["filter"]) if compiled else None  # every digit
    return SubscribeRequest(
        sub_id, source, key, topic, compiled, filter_json, after=after, snapshot=bool(snapshot)
    )


def _still_granted(
    item: Mapping[str, Any], topic: str, identity: Mapping[str, Any], settings: DefaultConfig
) -> Grant | None:
    """What the rules grant a stored subscription for this identity now (pure); None: it
    is no longer allowed (or cannot be checked: a source gone from SOURCES, a keyed
    subscription stored without its key)."""
    source = settings.sources.get((item.get("source") or {}).get("S", ""))
    if source is None:
        return None
    key_values = (item.get("key") or {}).get("M")
    key = None if key_values is None else {n: v["S"] for n, v in key_values.items()}
    if key is None and not topic.startswith("T|"):
        return None
    filter_json = (item.get("filter") or {}).get("S")
    compiled = parse_filter(strict_json.loads(filter_json, exact=True)) if filter_json else ()
    sub_id = split_sort_key(item["sk"]["S"])[1]
    request = SubscribeRequest(sub_id, source, key, topic, compiled, filter_json)
    try:
        return authorize(request, identity)
    except Refusal:
        return None


def identity_of(connection: Connection) -> dict[str, Any]:
    """``{"sub": userId, "claims": {...}}`` from the connection's record (pure).

    Unreadable stored claims count as none: claims only widen what rules allow.
    """
    claims: Any = {}
    if connection.claims:
        try:
            claims = strict_json.loads(connection.claims)
        except strict_json.InvalidJson:
            claims = {}
    return {"sub": connection.user_id, "claims": claims if isinstance(claims, dict) else {}}


def authorize(request: SubscribeRequest, identity: Mapping[str, Any]) -> Grant:
    """What the source's access rules grant this identity for this subscription (pure).

    No rule allows it: ``forbidden``. A filter naming a top-level attribute the
    grant hides: ``invalid_subscription`` (else ``added``/``removed`` would leak
    the hidden value). Neither message says which rule or field decided.
    """
    granted = grant(request.source.access, identity, request.key)
    if granted is None:
        raise Refusal("forbidden", "this connection may not subscribe to that", request.sub_id)
    if granted.fields is not None:
        visible = granted.fields.union(name for name, _ in request.source.keys)
        hidden = sorted(filter_attributes(request.filter) - visible)
        if hidden:
            raise Refusal(
                "invalid_subscription",
                f"the filter names {shown(hidden[0])}, which this subscription cannot see",
                request.sub_id,
            )
    return granted


# --- storage ------------------------------------------------------------------------------


class Store(Protocol):
    def subscribe(self, connection_id: str, request: SubscribeRequest) -> Subscription:
        """Store (or replace) the subscription after ``authorize`` on the fresh record;
        returns it as the broadcaster will read it."""

    def cursor_key(self) -> bytes | None:
        """The key cursors are signed with; None: no cursors (and no resume)."""

    def replay(
        self, resume: Resume, after: Any, now_ms: int, deadline: float
    ) -> Iterator[dict[str, Any] | bytes]:
        """The messages of a resume (``handlers.resume.replay_messages``)."""

    def snapshot(
        self, request: SubscribeRequest, subscription: Subscription, deadline: float
    ) -> list[SnapshotPage]:
        """The current items of a keyed subscription (``handlers.snapshot``), as pages."""

    def token_secret(self) -> str:
        """The token signing secret (``auth`` verifies with it as the authorizer does)."""

    def authenticate(
        self, connection_id: str, payload: Mapping[str, Any], claims: str
    ) -> tuple[int, list[str]]:
        """Apply a verified fresh token (``payload``, its allow-listed ``claims`` as JSON):
        (the new expiry, the subscriptions its claims no longer allow, now removed).
        ``WrongUser`` for another user's token, ``ConnectionGone`` without a record."""

    def unsubscribe(self, connection_id: str, sub_id: str) -> bool: ...

    def expiry(self, connection_id: str) -> int | None: ...


class WrongUser(ValueError):
    """A fresh token whose ``sub`` is not the connection's user."""


class DynamoStore:
    """The connections and subscriptions tables, through one (lazily created) client."""

    def __init__(
        self,
        settings: DefaultConfig,
        client: Any = None,
        cursor_key: bytes | None = None,
        token_secret: str | None = None,
    ) -> None:
        self.settings = settings
        self._client = client
        self._cursor_key = cursor_key
        """Given (tests): used as is; else derived from the secret in SSM on first use."""
        self._token_secret = token_secret
        """Given (tests): used as is; else read from SSM on first use."""

    def token_secret(self) -> str:
        if self._token_secret is None:
            tokens = self.settings.tokens
            if tokens is None:
                raise LookupError("this stack takes no tokens")
            if tokens.secret_parameter is None:
                raise LookupError("JWT mode: there is no token secret")
            self._token_secret = aws.secure_parameter(tokens.secret_parameter)
        return self._token_secret

    def authenticate(
        self, connection_id: str, payload: Mapping[str, Any], claims: str
    ) -> tuple[int, list[str]]:
        settings = self.settings
        connection = read_connection(self.client, settings.connections_table, connection_id)
        if connection.user_id != payload["sub"]:
            raise WrongUser(connection_id)
        identity = {"sub": payload["sub"], "claims": strict_json.loads(claims)}
        items = connection_subscriptions(
            self.client, settings.subscriptions_table, connection_id, connection.subs
        )
        kept: dict[str, tuple[str, list[str] | None]] = {}
        lost: list[str] = []
        for sub_id, topic in sorted(connection.subs.items()):
            item = items.get(sub_id)
            if item is None:
                continue  # unsubscribed meanwhile
            granted = _still_granted(item, topic, identity, settings)
            if granted is None:
                lost.append(sub_id)
            else:
                kept[sub_id] = (topic, None if granted.fields is None else sorted(granted.fields))
        for sub_id in lost:
            self.unsubscribe(connection_id, sub_id)
        expires_at = int(payload["exp"])
        extend_connection(
            self.client,
            connections_table=settings.connections_table,
            subscriptions_table=settings.subscriptions_table,
            connection=connection,
            expires_at=expires_at,
            claims=claims,
            kept=kept,
        )
        return expires_at, lost

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    def subscribe(self, connection_id: str, request: SubscribeRequest) -> Subscription:
        built: list[dict[str, Any]] = []

        def build(connection: Connection) -> tuple[str, dict[str, Any]]:
            granted = authorize(request, identity_of(connection))
            fields = None if granted.fields is None else sorted(granted.fields)
            item = subscription_item(
                connection,
                request.sub_id,
                request.topic,
                request.source.label,
                request.filter_json,
                fields,
                key=request.key,
            )
            built.append(item)
            return request.topic, item

        put_subscription(
            self.client,
            connections_table=self.settings.connections_table,
            subscriptions_table=self.settings.subscriptions_table,
            connection_id=connection_id,
            sub_id=request.sub_id,
            build=build,
            limit=self.settings.max_subscriptions,
        )
        return subscription_of(built[-1], request.topic)

    def cursor_key(self) -> bytes | None:
        parameter = self.settings.resume.cursor_secret_parameter
        if parameter is None:
            return None
        if self._cursor_key is None:
            self._cursor_key = cursor_key(aws.secure_parameter(parameter))
        return self._cursor_key

    def replay(
        self, resume: Resume, after: Any, now_ms: int, deadline: float
    ) -> Iterator[dict[str, Any] | bytes]:
        return replay_messages(
            self.client,
            self.settings.resume,
            self.cursor_key(),
            resume,
            after,
            now_ms=now_ms,
            deadline=deadline,
        )

    def snapshot(
        self, request: SubscribeRequest, subscription: Subscription, deadline: float
    ) -> list[SnapshotPage]:
        assert request.key is not None  # subscribe_request refuses a table-wide snapshot
        return snapshot_pages(
            self.client,
            source=request.source,
            key=typed_key(request.source.keys, request.key),
            filter=request.filter,
            fields=subscription.fields,
            target_attribute=self.settings.target_attribute,
            user_id=subscription.user_id,
            limits=SnapshotLimits(),
            deadline=deadline,
        )

    def unsubscribe(self, connection_id: str, sub_id: str) -> bool:
        return delete_subscription(
            self.client,
            connections_table=self.settings.connections_table,
            subscriptions_table=self.settings.subscriptions_table,
            connection_id=connection_id,
            sub_id=sub_id,
        )

    def expiry(self, connection_id: str) -> int | None:
        _, expires_at = connection_expiry(
            self.client, self.settings.connections_table, connection_id
        )
        return expires_at


# --- answering ----------------------------------------------------------------------------


def _ping(message: Mapping[str, Any]) -> dict[str, Any]:
    pong: dict[str, Any] = {"type": "pong"}
    echoed = echoed_id(message.get("id"))
    if echoed is not None:
        pong["id"] = echoed
    return pong


def _storage_failed(what: str, connection_id: str, sub_id: str | None) -> dict[str, Any]:
    log.exception(what, extra={"connectionId": connection_id, "subId": sub_id})
    return error("internal_error", f"{what}; try again", sub_id)


def _subscribe(
    message: Mapping[str, Any], connection_id: str, store: Store, settings: DefaultConfig
) -> Iterator[dict[str, Any] | bytes]:
    """``subscribed`` (with the cursor of "now", taken before the subscription is stored),
    then, with ``after``, the resume (``handlers.resume``)."""
    request = subscribe_request(message, settings.sources, connection_id, settings.table_buckets)
    sub_id = request.sub_id
    started = time.monotonic()
    now_ms = int(time.time() * 1000)
    try:
        key = store.cursor_key()
    except Exception:  # no cursors this time (resume answers reset); the subscription stands
        log.exception("could not read the cursor secret", extra={"connectionId": connection_id})
        key = None
    try:
        subscription = store.subscribe(connection_id, request)
    except Refusal:
        raise
    except TooManySubscriptions:
        raise Refusal(
            "too_many_subscriptions",
            f"this connection holds {settings.max_subscriptions} subscriptions, the limit;"
            " unsubscribe one first",
            sub_id,
        ) from None
    except ConnectionGone:
        log.warning(
            "subscribe from a connection with no record", extra={"connectionId": connection_id}
        )
        yield error(
            "internal_error", "the server has no record of this connection; reconnect", sub_id
        )
        return
    except SubscriptionConflict:
        log.warning("subscribe kept conflicting", extra={"connectionId": connection_id})
        yield error("internal_error", "too many concurrent changes; try again", sub_id)
        return
    except Exception:
        yield _storage_failed("could not store the subscription", connection_id, sub_id)
        return
    log.info(
        "subscribed",
        extra={"connectionId": connection_id, "subId": sub_id, "source": request.source.label},
    )
    subscribed: dict[str, Any] = {"type": "subscribed", "id": sub_id}
    if key is not None:
        subscribed["cursor"] = now_cursor(key, now_ms, subscription.user_id, subscription.scope)
    yield subscribed
    ended = None
    deadline = started + settings.resume.max_seconds
    if request.after is not None:
        resume = Resume(
            subscription=subscription,
            topic=request.topic,
            key_names=tuple(name for name, _ in request.source.keys),
            target_attribute=settings.target_attribute,
            include_old=settings.include_old_image,
        )
        try:
            for reply in store.replay(resume, request.after, now_ms, deadline):
                if isinstance(reply, dict):
                    ended = reply["type"]
                yield reply
        except Exception:
            log.exception(
                "could not replay; answered reset",
                extra={"connectionId": connection_id, "subId": sub_id},
            )
            ended = "reset"
            yield reset(sub_id, "replay_failed", subscribed.get("cursor"))
    if request.snapshot and ended != "resumed":  # a reset is followed by the refetch
        yield from _snapshot(store, request, subscription, deadline, subscribed.get("cursor"))


def _snapshot(
    store: Store,
    request: SubscribeRequest,
    subscription: Subscription,
    deadline: float,
    cursor: str | None,
) -> Iterator[dict[str, Any]]:
    """The snapshot pages (each with the cursor of "now" taken before the subscription was
    stored, so the pages and the live changes after it leave no gap), or a ``reset``."""
    try:
        pages = store.snapshot(request, subscription, deadline)
    except SnapshotTooLarge as bound:
        reason = "snapshot_timeout" if bound.reason == "time" else "snapshot_too_large"
        yield reset(request.sub_id, reason, cursor)
        return
    except Exception:
        log.exception(
            "could not read the snapshot; answered reset",
            extra={"subId": request.sub_id, "source": request.source.label},
        )
        yield reset(request.sub_id, "snapshot_failed", cursor)
        return
    yield from page_messages(request.sub_id, pages, cursor)


def _unsubscribe(message: Mapping[str, Any], connection_id: str, store: Store) -> dict[str, Any]:
    sub_id = subscription_id(message)
    try:
        store.unsubscribe(connection_id, sub_id)
    except Exception:
        return _storage_failed("could not remove the subscription", connection_id, sub_id)
    return {"type": "unsubscribed", "id": sub_id}


def _hello(
    connection_id: str, store: Store, settings: DefaultConfig, expires_at: int | Unread | None
) -> dict[str, Any]:
    if isinstance(expires_at, Unread):
        try:
            expires_at = store.expiry(connection_id)
        except Exception:
            return _storage_failed("could not read the connection", connection_id, None)
    return {
        "type": "hello",
        "version": PROTOCOL_VERSION,
        "expiresAt": iso_utc(expires_at) if expires_at is not None else None,
        "limits": {"subscriptions": settings.max_subscriptions},
    }


class Unread:
    """The connection's token expiry was not read (the stack takes no tokens, or reading
    it failed)."""


class Close:
    """A reply that closes the connection (``@connections`` DELETE) after those before it."""


CLOSE = Close()
Reply = dict[str, Any] | bytes | Close


def _expiry(connection_id: str, store: Store, settings: DefaultConfig) -> int | Unread | None:
    """The connection's token expiry, read on every message of a stack that takes tokens."""
    if settings.tokens is None:
        return Unread()
    try:
        return store.expiry(connection_id)
    except Exception:  # not a reason to refuse a ping; what needs the tables fails on its own
        log.warning(
            "could not read the connection's expiry",
            exc_info=True,
            extra={"connectionId": connection_id},
        )
        return Unread()


def _auth(
    message: Mapping[str, Any], connection_id: str, store: Store, settings: DefaultConfig
) -> Iterator[Reply]:
    """Replace the connection's token with a fresh one for the same user: its expiry and
    claims (and each subscription's), the access rules checked again with the new claims
    (a subscription they no longer allow is removed and gets ``forbidden``); then
    ``authenticated``. A refused token changes nothing."""
    tokens = settings.tokens
    if tokens is None:
        raise Refusal("invalid_token", "this stack takes no tokens (auth is off)")
    try:
        if tokens.jwt is not None:  # JWT mode: the issuer's keys, cached per container
            payload = signin.jwt_verifier(tokens.jwt).verify(message.get("token"), time.time())
        else:
            try:
                secret = store.token_secret()
            except Exception:
                yield _storage_failed("could not read the token secret", connection_id, None)
                return
            payload = verify_token(
                message.get("token"),
                secret,
                now=time.time(),
                max_lifetime=tokens.token_max_lifetime,
            )
    except InvalidToken as refused:
        log.info("auth refused", extra={"connectionId": connection_id, "reason": refused.reason})
        raise Refusal("invalid_token", "the token was refused; nothing changed") from None
    claims = identity_claims(payload, tokens.identity_claims)
    try:
        expires_at, lost = store.authenticate(connection_id, payload, claims)
    except WrongUser:
        raise Refusal("invalid_token", "the token is for another user; nothing changed") from None
    except ConnectionGone:
        yield error("internal_error", "the server has no record of this connection; reconnect")
        return
    except Exception:
        yield _storage_failed("could not store the fresh token", connection_id, None)
        return
    for sub_id in lost:
        yield error("forbidden", "this connection may no longer subscribe to that", sub_id)
    log.info(
        "token refreshed",
        extra={"connectionId": connection_id, "expiresAt": expires_at, "lost": len(lost)},
    )
    yield {"type": "authenticated", "expiresAt": iso_utc(expires_at)}


def answer(
    message: Mapping[str, Any], connection_id: str, store: Store, settings: DefaultConfig
) -> Iterator[Reply]:
    """The replies to one parsed message, in order (a message, bytes already encoded, or
    ``CLOSE``); ``Refusal`` for anything the client got wrong. On a stack that takes
    tokens, a connection whose token has expired gets ``invalid_token`` and is closed,
    whatever it sent (``auth`` included: a token is refreshed before it expires)."""
    action = message["action"]
    expires_at = _expiry(connection_id, store, settings)
    if isinstance(expires_at, int) and time.time() >= expires_at:
        log.info("token expired; closing", extra={"connectionId": connection_id})
        yield error(
            "invalid_token", "this connection's token has expired; reconnect with a fresh one"
        )
        yield CLOSE
        return
    if action == "ping":
        yield _ping(message)
    elif action == "hello":
        yield _hello(connection_id, store, settings, expires_at)
    elif action == "auth":
        yield from _auth(message, connection_id, store, settings)
    elif action == "subscribe":
        yield from _subscribe(message, connection_id, store, settings)
    elif action == "unsubscribe":
        yield _unsubscribe(message, connection_id, store)
    else:
        raise Refusal(
            "unknown_action", f"unknown action {shown(action)}; known: {', '.join(ACTIONS)}"
        )


def replies(
    body: Any,
    is_base64: bool,
    max_bytes: int,
    *,
    connection_id: str = "",
    store: Store | None = None,
    settings: DefaultConfig | None = None,
) -> Iterator[Reply]:
    """The messages to send back for one client message, in order; never raises (a failure
    after some replies is one more reply, ``error``); ``CLOSE`` closes the connection."""
    settings = settings or CONFIG
    try:
        message = read_message(body, is_base64, max_bytes)
        yield from answer(message, connection_id, store or DynamoStore(settings), settings)
    except Refusal as refused:
        yield refused.reply()
    except Exception:  # a bug, not the client's fault: say so, and keep the handler alive
        log.exception("could not answer the message", extra={"connectionId": connection_id})
        yield error("internal_error", "the server could not handle this message; try again")


def reply_for(
    body: Any,
    is_base64: bool,
    max_bytes: int,
    *,
    connection_id: str = "",
    store: Store | None = None,
    settings: DefaultConfig | None = None,
) -> dict[str, Any]:
    """The first message sent back for one client message: the whole answer to ``ping``,
    ``hello``, ``unsubscribe`` and a subscribe without ``after`` or ``snapshot`` (``replies``
    gives every message); never raises."""
    first = next(
        replies(
            body,
            is_base64,
            max_bytes,
            connection_id=connection_id,
            store=store,
            settings=settings,
        )
    )
    if isinstance(first, bytes):
        value: dict[str, Any] = json.loads(first)
        return value
    if isinstance(first, Close):
        raise AssertionError("a close is never the first reply")
    return first


def api_for(endpoint: str) -> ManagementApi:
    with _apis_lock:
        api = _apis.get(endpoint)
        if api is None:
            session = aws.session()
            api = ManagementApi(
                endpoint, region=aws.region(), credentials=frozen_credentials(session)
            )
            _apis[endpoint] = api
        return api


POST_ATTEMPTS = 3


def _post(poster: Poster, connection_id: str, data: bytes) -> bool:
    """Post one reply, retrying throttling and server errors briefly; whether it arrived
    (logged when not)."""
    response = None
    for attempt in range(POST_ATTEMPTS):
        if attempt:
            time.sleep(0.05 * 2**attempt)
        try:
            response = poster.post_to_connection(connection_id, data)
        except Exception:
            log.exception("could not answer the client", extra={"connectionId": connection_id})
            return False
        if response.ok or response.status not in (429, 500, 502, 503, 504):
            break
    if response is not None and not response.ok:
        log.warning(
            "could not answer the client",
            extra={
                "connectionId": connection_id,
                "status": response.status,
                "code": response.error_code,
            },
        )
        return False
    return True


def respond(event: dict[str, Any], poster: Poster, store: Store | None = None) -> dict[str, Any]:
    request_context = event.get("requestContext") or {}
    connection_id = str(request_context.get("connectionId") or "")
    for reply in replies(
        event.get("body"),
        bool(event.get("isBase64Encoded")),
        CONFIG.max_input_bytes,
        connection_id=connection_id,
        store=store,
        settings=CONFIG,
    ):
        if isinstance(reply, Close):
            close_connection(poster, connection_id, "its token has expired")
            break
        if isinstance(reply, dict):
            if reply["type"] == "error":
                log.info(
                    "client error", extra={"connectionId": connection_id, "code": reply["code"]}
                )
            data = json.dumps(reply, separators=(",", ":")).encode("utf-8")
        else:
            data = reply
        if not _post(poster, connection_id, data):
            break  # the rest would arrive with a gap: the client resubscribes
    return {"statusCode": 200}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    request_context = event.get("requestContext") or {}
    try:
        endpoint = CONFIG.management_endpoint or endpoint_from_request(request_context)
    except ValueError:
        log.exception("cannot answer: no management endpoint")
        return {"statusCode": 200}
    return respond(event, api_for(endpoint))
