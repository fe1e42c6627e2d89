"""The client: one logical connection to a realtime-channel stack, made of WebSocket sockets
over time, and the subscriptions it keeps across them.

How it keeps its promises (the protocol is the README's "Protocol (version 2)"):

- **Reconnect**: a lost socket is replaced after a full-jitter exponential backoff
  (``random() * min(backoff_max, backoff_base * 2**failures)``); a socket that stayed open
  ``stable_after`` seconds resets the count.
- **Resume**: every subscription keeps the cursor of the last change it applied; on a new
  socket it subscribes again with ``after`` that cursor (keyed ones also with ``snapshot``,
  so a ``reset`` is refetched in the same answer). Replayed changes are applied as they
  come, live ones are held back until ``resumed`` (or the snapshot's last page), then applied.
- **De-duplication** by (subscription, change ``id``) in a bounded window, across sockets.
- **Heartbeat**: a protocol ``ping`` every ``heartbeat_interval`` (below the 10-minute idle
  timeout); no ``pong`` within ``pong_timeout`` replaces the socket.
- **Planned reconnect** before the 2-hour cut: a new socket is opened and every subscription
  resumed on it from its cursor *before* the old one is closed; from the moment the new one
  is subscribed the old one's messages are ignored (the resume delivers them), so a
  subscription never sees a gap nor two orders of one item.
- **Token**: the token function is called for every socket (``?token=``) and again before the
  socket's token expires (``auth``); the expiry is read from the token (``exp``), else asked
  with ``hello``, and taken from the server's ``authenticated`` answer after a refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from realtime_client.backoff import full_jitter
from realtime_client.dedup import SeenWindow
from realtime_client.events import (
    AUTH_TIMEOUT,
    CALLBACK_FAILED,
    CLOSED,
    CONNECT_FAILED,
    GAVE_UP,
    HEARTBEAT_TIMEOUT,
    INVALID_MESSAGE,
    REFUSALS,
    RESET,
    TOKEN_FAILED,
    TOKEN_NOT_EXTENDED,
    Change,
    Kind,
    RealtimeError,
    Reset,
    State,
)
from realtime_client.tokens import parse_time, token_expiry
from realtime_client.view import View

log = logging.getLogger("realtime_client")

T = TypeVar("T")
TokenSource = str | Callable[[], str | Awaitable[str]]
"""A token, or a function (sync or async) returning a fresh one; called for every socket and
before expiry."""
Listener = Callable[[T], Any]
"""A callback; if it returns an awaitable, the client awaits it before the next message."""

_KINDS: frozenset[str] = frozenset({"added", "modified", "removed"})
_END = object()


class Transport(Protocol):
    """What the client needs of a WebSocket (``websockets``' ``ClientConnection`` is one)."""

    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


ConnectFactory = Callable[[str], Awaitable[Transport]]


@dataclass(frozen=True)
class Options:
    """Every setting has a default fit for API Gateway's limits; durations in seconds."""

    heartbeat_interval: float = 300.0
    """A ``ping`` this often, whatever else flows (API Gateway closes after 10 idle minutes)."""
    pong_timeout: float = 30.0
    """No ``pong`` this long after a ``ping``: the socket is replaced."""
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    """Reconnect delays are uniform in ``[0, min(backoff_max, backoff_base * 2**failures))``."""
    stable_after: float = 30.0
    """A socket that stayed open this long resets the backoff."""
    max_attempts: int | None = None
    """Give up (state ``closed``, error ``gave_up``) after this many failures in a row;
    None: never."""
    max_connection_age: float = 7200.0
    """The server's cut (API Gateway: 2 hours)."""
    planned_reconnect_margin: float = 300.0
    """The planned reconnect starts ``margin`` to ``2 * margin`` before the cut (jittered)."""
    token_refresh_margin: float = 60.0
    """``auth`` this long before the token expires (at most half its remaining life)."""
    request_timeout: float = 30.0
    """How long to wait for the answer to ``auth`` or ``unsubscribe``, and for an async token
    function (past it: ``token_failed``, and tried again)."""
    handover_timeout: float = 30.0
    """A planned reconnect closes the old socket at the latest this long after the new one
    opened, even if a subscription has not resumed yet."""
    dedup_window: int = 5000
    """Change ids remembered per subscription."""
    websocket_options: Mapping[str, Any] = field(
        default_factory=lambda: {"open_timeout": 20.0, "max_size": 2**20}
    )
    """Passed to ``websockets.asyncio.client.connect`` (e.g. ``additional_headers``)."""

    def __post_init__(self) -> None:
        positive = (
            "heartbeat_interval",
            "pong_timeout",
            "backoff_base",
            "backoff_max",
            "max_connection_age",
            "request_timeout",
            "handover_timeout",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"Options.{name} must be > 0, got {getattr(self, name)!r}")
        if self.backoff_max < self.backoff_base:
            raise ValueError("Options.backoff_max must be >= backoff_base")
        if self.planned_reconnect_margin < 0 or self.token_refresh_margin < 0:
            raise ValueError("Options margins must be >= 0")
        if 2 * self.planned_reconnect_margin >= self.max_connection_age:
            raise ValueError("Options.planned_reconnect_margin must be < max_connection_age / 2")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("Options.max_attempts must be >= 1 or None")
        if self.dedup_window < 1:
            raise ValueError("Options.dedup_window must be >= 1")


async def _websocket(url: str, options: Mapping[str, Any]) -> Transport:
    from websockets.asyncio.client import connect as ws_connect

    return await ws_connect(url, **dict(options))


@dataclass(frozen=True)
class Runtime:
    """What the client takes from the world, replaceable in tests."""

    clock: Callable[[], float] = time.monotonic
    """Seconds, for intervals (heartbeat, connection age, timeouts)."""
    wall_clock: Callable[[], float] = time.time
    """Epoch seconds, for token expiry."""
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    random: Callable[[], float] = random.random
    connect: ConnectFactory | None = None
    """Opens a socket for a URL; default: ``websockets`` with ``Options.websocket_options``."""


def with_token(url: str, token: str | None) -> str:
    """``url`` with its ``token`` query parameter set (replaced if present)."""
    if token is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"the server refused the handshake with HTTP {status}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _TimedOut(Exception):
    """An awaited call did not answer in time (``Client._bounded``)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"no answer within {timeout:g} s")
        self.timeout = timeout


class _Link:
    """One socket: its tasks, its outbox and what is waiting on its answers."""

    def __init__(self, transport: Transport, number: int, opened_at: float) -> None:
        self.transport = transport
        self.number = number
        self.opened_at = opened_at
        self.expires_at: float | None = None
        self.outbox: asyncio.Queue[str] = asyncio.Queue()
        self.lost = asyncio.Event()
        self.changed = asyncio.Event()
        """Set when a subscription on it became live or failed, or when it was lost."""
        self.tasks: set[asyncio.Task[None]] = set()
        self.pongs: dict[int, asyncio.Event] = {}
        self.auth: asyncio.Future[dict[str, Any]] | None = None
        self.unsubscribes: dict[str, asyncio.Event] = {}
        self.refreshing = False

    def post(self, message: Mapping[str, Any]) -> None:
        if not self.lost.is_set():
            self.outbox.put_nowait(json.dumps(message, separators=(",", ":")))


class Client:
    """A connection that reconnects, resumes and refreshes its token by itself.

    Create it with ``connect(...)`` inside a running event loop; it starts at once. Use it as
    ``async with connect(...) as client:`` or call ``await client.close()``."""

    def __init__(
        self,
        url: str,
        token: TokenSource | None = None,
        *,
        on_state: Listener[State] | None = None,
        on_error: Listener[RealtimeError] | None = None,
        options: Options | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "realtime_client.connect() needs a running event loop: call it from a coroutine"
            ) from None
        self.url = url
        self.options = options or Options()
        self.runtime = runtime or Runtime()
        self._token = token
        self._on_state = on_state
        self._on_error = on_error
        self._connect: ConnectFactory = self.runtime.connect or (
            lambda target: _websocket(target, self.options.websocket_options)
        )
        self._state: State = "connecting"
        self._announced: State | None = None
        self._subs: dict[str, Subscription] = {}
        self._links: set[_Link] = set()
        self._current: _Link | None = None
        self._wake = asyncio.Event()
        self._is_open = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._background: set[asyncio.Task[Any]] = set()
        self._sub_numbers = itertools.count(1)
        self._link_numbers = itertools.count(1)
        self._ping_ids = itertools.count(1)
        self._key_names: dict[str, tuple[str, ...]] = {}
        self.hello: Mapping[str, Any] | None = None
        """The server's last ``hello`` answer (version, limits), when one was asked."""
        self._task = asyncio.ensure_future(self._run())

    # -- public ----------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subs.values())

    @property
    def expires_at(self) -> float | None:
        """When the current socket's token expires (epoch seconds), if known."""
        return self._current.expires_at if self._current is not None else None

    @property
    def socket_number(self) -> int:
        """How many sockets this client has opened (the current one's number); 0 before any."""
        return self._current.number if self._current is not None else 0

    def subscribe(
        self,
        table: str,
        key: Mapping[str, Any] | None = None,
        filter: Sequence[Mapping[str, Any]] | None = None,
        snapshot: bool = False,
        *,
        on_change: Listener[Change] | None = None,
        on_reset: Listener[Reset] | None = None,
        on_error: Listener[RealtimeError] | None = None,
        key_names: Sequence[str] | None = None,
        keep_items: bool = True,
        id: str | None = None,
    ) -> Subscription:
        """Subscribe to a source (its label, e.g. ``events``): the whole table, or one
        partition or item (``key``), optionally filtered; ``snapshot`` (keyed only) first
        fills the view with the key's current items. Returns at once; the subscription is
        sent now if a socket is open, else when one opens, and again on every new socket.
        ``await sub.ready()`` waits until it is live; ``await sub.unsubscribe()`` (or
        ``await sub()``) ends it. ``keep_items=False`` keeps no view (``sub.view`` stays
        empty): for a table-wide subscription to a large table whose listener needs only
        the changes. ``key_names`` (the table's key attributes) lets the view index
        snapshot items before the first change has shown them."""
        if self._closing:
            raise RealtimeError(CLOSED, "the client is closed")
        if snapshot and key is None:
            raise ValueError("snapshot needs a key: a table-wide subscription has no snapshot")
        sub_id = id
        while sub_id is None or (id is None and sub_id in self._subs):
            sub_id = f"s{next(self._sub_numbers)}"  # skips ids given by hand
        if not 1 <= len(sub_id) <= 64:
            raise ValueError("a subscription id has 1 to 64 characters")
        if sub_id in self._subs:
            raise ValueError(f"subscription id {sub_id!r} is in use")
        sub = Subscription(
            self,
            sub_id,
            table,
            dict(key) if key is not None else None,
            [dict(group) for group in filter] if filter is not None else None,
            snapshot,
            on_change=on_change,
            on_reset=on_reset,
            on_error=on_error,
            key_names=key_names or self._key_names.get(table),
            keep_items=keep_items,
        )
        self._subs[sub_id] = sub
        link = self._current
        if link is not None and not link.lost.is_set():
            sub._subscribe_on(link)
        return sub

    async def wait_open(self, timeout: float | None = None) -> None:
        """Wait until a socket is open (raises ``TimeoutError``, or ``RealtimeError`` when
        the client is closed)."""
        if self._closing:
            raise RealtimeError(CLOSED, "the client is closed")
        waiter = asyncio.ensure_future(self._is_open.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            done, _ = await asyncio.wait(
                {waiter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            closed.cancel()
        if not done:
            raise TimeoutError("no socket opened in time")
        if waiter not in done:
            raise RealtimeError(CLOSED, "the client is closed")

    async def close(self) -> None:
        """Close every socket and end every subscription; state ``closed``. Idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._wake.set()
        if self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._finish()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the supervisor ----------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        retry = False
        try:
            await self._set_state("connecting")
            while not self._closing:
                if retry:
                    delay = full_jitter(
                        failures,
                        base=self.options.backoff_base,
                        cap=self.options.backoff_max,
                        random=self.runtime.random,
                    )
                    await self.runtime.sleep(delay)
                    if self._closing:
                        break
                retry = True
                try:
                    link = await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failures += 1
                    await self._report(self._open_error(exc))
                    if await self._gave_up(failures):
                        break
                    continue
                await self._adopt(link)
                lost = await self._follow()
                if lost is None or self._closing:
                    break
                stable = self.runtime.clock() - lost.opened_at >= self.options.stable_after
                failures = 0 if stable else failures + 1
                if await self._gave_up(failures):
                    break
                await self._set_state("reconnecting")
        except asyncio.CancelledError:
            if not self._closing:
                raise
            return
        if not self._closing:  # gave up
            self._closing = True
            await self._finish(RealtimeError(GAVE_UP, "the client gave up reconnecting"))

    async def _gave_up(self, failures: int) -> bool:
        limit = self.options.max_attempts
        if limit is None or failures < limit:
            return False
        await self._report(RealtimeError(GAVE_UP, f"{failures} attempts in a row failed"))
        return True

    async def _follow(self) -> _Link | None:
        """Wait while the current socket (whichever it is after planned reconnects) lives;
        return it once lost, or None when the client closes."""
        while not self._closing:
            link = self._current
            if link is None:
                return None
            if link.lost.is_set():
                return link
            self._wake.clear()
            if link is self._current and not link.lost.is_set() and not self._closing:
                await self._wake.wait()
        return None

    async def _finish(self, reason: RealtimeError | None = None) -> None:
        for link in list(self._links):
            self._shutdown(link, 1000, "client closed")
        self._current = None
        self._is_open.clear()
        for sub in list(self._subs.values()):
            code, text = (reason.code, reason.message) if reason else (CLOSED, "client closed")
            sub._end(RealtimeError(code, text, sub.id))
        pending = [task for task in self._background if task is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending, timeout=15)
        await self._set_state("closed")
        self._closed.set()

    async def _open(self) -> _Link:
        token = await self._fetch_token() if self._token is not None else None
        transport = await self._connect(with_token(self.url, token))
        link = _Link(transport, next(self._link_numbers), self.runtime.clock())
        link.expires_at = token_expiry(token)
        self._links.add(link)
        self._spawn(link, self._read(link))
        self._spawn(link, self._write(link))
        if self._closing:
            self._shutdown(link, 1000, "client closed")
            raise RealtimeError(CLOSED, "the client is closed")
        return link

    def _open_error(self, exc: Exception) -> RealtimeError:
        if isinstance(exc, RealtimeError):
            return exc
        error = RealtimeError(CONNECT_FAILED, _describe(exc))
        error.__cause__ = exc
        return error

    async def _adopt(self, link: _Link) -> None:
        """Make ``link`` the current socket: resubscribe everything on it, start its timers."""
        self._current = link
        for sub in list(self._subs.values()):
            sub._detach()
            sub._subscribe_on(link)
        self._spawn(link, self._heartbeat(link))
        self._spawn(link, self._planned(link))
        if link.expires_at is not None:
            self._spawn(link, self._refresh(link))
        elif self._token is not None:
            link.post({"action": "hello"})  # learn the expiry from the server
        self._is_open.set()
        await self._set_state("open")

    # -- one socket --------------------------------------------------------------------------

    def _spawn(self, link: _Link, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        link.tasks.add(task)
        task.add_done_callback(link.tasks.discard)

    def _shutdown(self, link: _Link, code: int, reason: str) -> None:
        """Stop a socket: its timers, its waiters, then close it in the background."""
        if link.lost.is_set():
            return
        link.lost.set()
        link.changed.set()
        me = asyncio.current_task()
        for task in list(link.tasks):
            if task is not me:
                task.cancel()
        if link.auth is not None and not link.auth.done():
            link.auth.cancel()
        for done in link.unsubscribes.values():
            done.set()
        self._links.discard(link)
        if link is self._current:
            self._is_open.clear()
            for sub in self._subs.values():
                sub._detach()
        log.debug("socket %d closed: %s", link.number, reason)
        closing = asyncio.ensure_future(self._close_transport(link.transport, code, reason))
        self._background.add(closing)
        closing.add_done_callback(self._background.discard)
        self._wake.set()

    @staticmethod
    async def _close_transport(transport: Transport, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await transport.close(code, reason)

    async def _read(self, link: _Link) -> None:
        reason = "closed"
        try:
            while not link.lost.is_set():
                raw = await link.transport.recv()
                await self._dispatch(link, raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = _describe(exc)
        finally:
            self._shutdown(link, 1000, reason)

    async def _write(self, link: _Link) -> None:
        try:
            while True:
                text = await link.outbox.get()
                await link.transport.send(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._shutdown(link, 1000, f"send failed: {_describe(exc)}")

    async def _heartbeat(self, link: _Link) -> None:
        while not link.lost.is_set():
            await self.runtime.sleep(self.options.heartbeat_interval)
            ping_id = next(self._ping_ids)
            answered = asyncio.Event()
            link.pongs[ping_id] = answered
            link.post({"action": "ping", "id": ping_id})
            if not await self._wait_event(answered, self.options.pong_timeout):
                if link.lost.is_set():
                    return
                await self._report(
                    RealtimeError(
                        HEARTBEAT_TIMEOUT, f"no pong within {self.options.pong_timeout:g} s"
                    )
                )
                self._shutdown(link, 4000, "heartbeat timeout")
                return
            link.pongs.pop(ping_id, None)

    async def _planned(self, link: _Link) -> None:
        """Before the server's cut: a new socket, every subscription resumed on it, then the
        old one closed."""
        options = self.options
        age = options.max_connection_age - options.planned_reconnect_margin * (
            1 + self.runtime.random()
        )
        await self.runtime.sleep(max(0.0, link.opened_at + age - self.runtime.clock()))
        for attempt in range(10):
            if link.lost.is_set() or self._closing or link is not self._current:
                return
            try:
                new = await self._open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._report(self._open_error(exc))
                await self.runtime.sleep(
                    full_jitter(
                        attempt,
                        base=options.backoff_base,
                        cap=options.backoff_max,
                        random=self.runtime.random,
                    )
                )
                continue
            if link.lost.is_set() or self._closing or link is not self._current:
                self._shutdown(new, 1000, "not needed")  # the supervisor reconnects instead
                return
            await self._handover(link, new)
            return

    async def _handover(self, old: _Link, new: _Link) -> None:
        await self._adopt(new)  # the old socket's messages are ignored from here
        self._wake.set()  # the supervisor follows the new socket from now on
        deadline = self.runtime.clock() + self.options.handover_timeout
        while not new.lost.is_set():
            if all(sub._settled for sub in self._subs.values()):
                break
            left = deadline - self.runtime.clock()
            if left <= 0:
                break
            new.changed.clear()
            await self._wait_event(new.changed, left)
        self._shutdown(old, 1000, "planned reconnect")

    async def _refresh(self, link: _Link) -> None:
        """``auth`` with a fresh token before the socket's token expires, again and again."""
        if link.refreshing:
            return
        link.refreshing = True
        failures = 0
        while not link.lost.is_set() and link.expires_at is not None and failures <= 10:
            remaining = link.expires_at - self.runtime.wall_clock()
            lead = min(self.options.token_refresh_margin, max(remaining, 0.0) / 2)
            await self.runtime.sleep(max(0.0, remaining - lead))
            if link.lost.is_set():
                return
            before = link.expires_at
            error = await self._authenticate(link)
            if error is None and link.expires_at is not None and link.expires_at > before:
                failures = 0
                continue
            await self._report(
                error or RealtimeError(TOKEN_NOT_EXTENDED, "auth did not extend the expiry")
            )
            failures += 1
            left = before - self.runtime.wall_clock()
            if left <= 0:
                return  # expired: the server closes the socket; the next one gets a fresh token
            await self.runtime.sleep(
                min(
                    left / 2,
                    full_jitter(
                        failures,
                        base=self.options.backoff_base,
                        cap=self.options.backoff_max,
                        random=self.runtime.random,
                    ),
                )
            )

    async def _authenticate(self, link: _Link) -> RealtimeError | None:
        try:
            token = await self._fetch_token()
        except RealtimeError as error:
            return error
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        link.auth = answer
        link.post({"action": "auth", "token": token})
        try:
            got = await self._wait_future(answer, self.options.request_timeout)
        finally:
            link.auth = None
        if got is None:
            if link.lost.is_set():
                return None
            return RealtimeError(AUTH_TIMEOUT, "no answer to auth")
        if got.get("type") == "authenticated":
            expires = parse_time(got.get("expiresAt")) or token_expiry(token)
            if expires is not None:
                link.expires_at = expires
            return None
        return RealtimeError(
            str(got.get("code") or "invalid_token"), str(got.get("message") or ""), server=True
        )

    async def _fetch_token(self) -> str:
        """A fresh token; ``token_failed`` when the function raised, returned no string, or
        (async) did not answer within ``request_timeout``: a hung token endpoint must not
        stall a reconnect or the refreshes for ever (the caller retries)."""
        source = self._token
        try:
            value: Any = source() if callable(source) else source
            if inspect.isawaitable(value):
                value = await self._bounded(value, self.options.request_timeout)
        except asyncio.CancelledError:
            raise
        except _TimedOut as late:
            raise RealtimeError(
                TOKEN_FAILED, f"the token function did not answer within {late.timeout:g} s"
            ) from None
        except Exception as exc:
            error = RealtimeError(TOKEN_FAILED, f"the token function raised {exc!r}")
            error.__cause__ = exc
            raise error from exc
        if not isinstance(value, str) or not value:
            raise RealtimeError(TOKEN_FAILED, "the token function returned no token")
        return value

    # -- timers on the injected clock --------------------------------------------------------

    async def _bounded(self, awaitable: Awaitable[T], timeout: float) -> T:
        """``awaitable``'s result; past ``timeout`` it is cancelled and ``_TimedOut`` raised."""
        task = asyncio.ensure_future(awaitable)
        timer: asyncio.Future[None] | None = None
        try:
            await asyncio.sleep(0)  # an answer at hand (a cached token) needs no timer
            if not task.done():
                timer = asyncio.ensure_future(self.runtime.sleep(timeout))
                await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if timer is not None:
                timer.cancel()
            if not task.done():
                task.cancel()
        if not task.done():
            raise _TimedOut(timeout)
        return task.result()

    async def _wait_event(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        waiter = asyncio.ensure_future(event.wait())
        timer = asyncio.ensure_future(self.runtime.sleep(timeout))
        try:
            await asyncio.wait({waiter, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            timer.cancel()
        return event.is_set()

    async def _wait_future(
        self, future: asyncio.Future[dict[str, Any]], timeout: float
    ) -> dict[str, Any] | None:
        timer: asyncio.Future[Any] = asyncio.ensure_future(self.runtime.sleep(timeout))
        try:
            await asyncio.wait({future, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
        if future.done() and not future.cancelled():
            return future.result()
        return None

    # -- messages ----------------------------------------------------------------------------

    async def _dispatch(self, link: _Link, raw: str | bytes) -> None:
        if link is not self._current or link.lost.is_set():
            return  # a socket being replaced: the new one's resume delivers what it carries
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            await self._report(RealtimeError(INVALID_MESSAGE, f"not a JSON object: {raw!r:.80}"))
            return
        kind = message.get("type")
        sub_id = message.get("id")
        sub = self._subs.get(sub_id) if isinstance(sub_id, str) else None
        if kind == "event_update":
            await self._on_change_message(message)
        elif kind == "pong":
            if isinstance(sub_id, int) and sub_id in link.pongs:
                link.pongs[sub_id].set()
        elif kind == "unsubscribed":
            if isinstance(sub_id, str) and sub_id in link.unsubscribes:
                link.unsubscribes.pop(sub_id).set()
        elif kind == "authenticated":
            if link.auth is not None and not link.auth.done():
                link.auth.set_result(message)
        elif kind == "hello":
            self.hello = message
            expires = parse_time(message.get("expiresAt"))
            if expires is not None and link.expires_at is None:
                link.expires_at = expires
                self._spawn(link, self._refresh(link))
        elif kind == "error":
            await self._on_error_message(link, message, sub)
        elif sub is not None:
            if kind == "subscribed":
                await sub._on_subscribed(message)
            elif kind == "resumed":
                await sub._on_resumed(message)
            elif kind == "reset":
                await sub._on_reset(message)
            elif kind == "snapshot":
                await sub._on_snapshot(message)
            link.changed.set()

    async def _on_change_message(self, message: dict[str, Any]) -> None:
        keys = message.get("keys")
        table = message.get("table")
        if isinstance(keys, dict) and keys and isinstance(table, str):
            self._key_names.setdefault(table, tuple(sorted(keys)))
        matches = message.get("matches")
        if not isinstance(matches, dict):
            return
        for sub_id, kind in matches.items():
            sub = self._subs.get(sub_id)
            if sub is not None and kind in _KINDS:
                await sub._on_change(message, kind)

    async def _on_error_message(
        self, link: _Link, message: dict[str, Any], sub: Subscription | None
    ) -> None:
        code = str(message.get("code") or "unknown")
        text = str(message.get("message") or "")
        sub_id = message.get("id") if isinstance(message.get("id"), str) else None
        auth = link.auth
        if sub_id is None and code == "invalid_token" and auth is not None and not auth.done():
            auth.set_result(message)
            return
        error = RealtimeError(code, text, sub_id, server=True)
        if sub is None:
            await self._report(error)
            return
        if code in REFUSALS:
            await sub._fail(error)
            link.changed.set()
        elif code == "internal_error":  # "reconnect": a new socket resumes from the cursors
            await self._report(error, sub)
            self._shutdown(link, 4000, f"server internal_error for {sub.id}")
        else:
            await self._report(error, sub)

    # -- listeners ---------------------------------------------------------------------------

    async def _set_state(self, state: State) -> None:
        if state == self._announced:
            return
        self._announced = state
        self._state = state
        if self._on_state is not None:
            await self._call(self._on_state, state, "on_state")

    async def _report(self, error: RealtimeError, sub: Subscription | None = None) -> None:
        listener = sub._on_error_listener if sub is not None else None
        listener = listener or self._on_error
        if listener is None:
            log.warning("realtime_client: %s", error)
            return
        await self._call(listener, error, "on_error")

    async def _call(self, listener: Listener[T], value: T, what: str) -> None:
        try:
            result = listener(value)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if what == "on_error":
                log.exception("realtime_client: the on_error listener raised")
                return
            error = RealtimeError(CALLBACK_FAILED, f"{what} raised {exc!r}")
            error.__cause__ = exc
            await self._report(error)


Phase = Literal["pending", "subscribing", "resuming", "snapshot", "live", "closed", "failed"]


class Subscription:
    """One standing subscription: its view, its cursor, its listeners; it survives sockets.

    ``state``: ``pending`` (no socket), ``syncing`` (sent; waiting for its answer, snapshot or
    resume), ``live``, ``closed`` (unsubscribed, or the client closed), ``failed`` (refused:
    ``error`` has the server's code)."""

    def __init__(
        self,
        client: Client,
        sub_id: str,
        table: str,
        key: dict[str, Any] | None,
        filter: list[dict[str, Any]] | None,
        snapshot: bool,
        *,
        on_change: Listener[Change] | None,
        on_reset: Listener[Reset] | None,
        on_error: Listener[RealtimeError] | None,
        key_names: Sequence[str] | None,
        keep_items: bool = True,
    ) -> None:
        self.id = sub_id
        self.table = table
        self.key = key
        self.filter = filter
        self.snapshot = snapshot
        self.view = View(key_names, partial_names=sorted(key or ()))
        self.keep_items = keep_items
        self.cursor: str | None = None
        """The cursor of the last change applied: where a new socket resumes."""
        self.error: RealtimeError | None = None
        self._client = client
        self._on_change_listener = on_change
        self._on_reset_listener = on_reset
        self._on_error_listener = on_error
        self._phase: Phase = "pending"
        self._established = False
        self._asked_snapshot = False
        self._held: list[tuple[dict[str, Any], Kind]] = []
        self._pages: list[dict[str, Any]] = []
        self._page_truncated: list[dict[str, Any]] = []
        self._pending_reset: Mapping[str, Any] | None = None
        self._seen = SeenWindow(client.options.dedup_window)
        self._ready = asyncio.Event()
        self._streams: list[asyncio.Queue[Any]] = []

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.table} key={self.key} {self.state}>"

    @property
    def state(self) -> Literal["pending", "syncing", "live", "closed", "failed"]:
        phase = self._phase
        if phase == "subscribing" or phase == "resuming" or phase == "snapshot":
            return "syncing"
        return phase

    @property
    def _settled(self) -> bool:
        return self._phase in ("live", "closed", "failed")

    async def ready(self, timeout: float | None = None) -> Subscription:
        """Wait until it is live (its answer, snapshot or resume done) for the first time.
        Raises the server's ``RealtimeError`` (e.g. ``forbidden``) if it was refused,
        ``RealtimeError("closed")`` if it ended first, ``TimeoutError`` after ``timeout``."""
        await asyncio.wait_for(self._ready.wait(), timeout)
        if self.error is not None:
            raise self.error
        return self

    async def unsubscribe(self) -> None:
        """End it (idempotent): nothing more reaches its listeners, the server is told."""
        if self._phase in ("closed", "failed"):
            return
        client = self._client
        link = client._current
        self._end(None)
        if link is None or link.lost.is_set():
            return
        done = asyncio.Event()
        link.unsubscribes[self.id] = done
        link.post({"action": "unsubscribe", "id": self.id})
        await client._wait_event(done, client.options.request_timeout)

    def __call__(self) -> Coroutine[Any, Any, None]:
        """``await sub()`` unsubscribes: the shape ``unsubscribe = client.subscribe(...)``."""
        return self.unsubscribe()

    async def __aiter__(self) -> AsyncIterator[Change]:
        """Its changes from now on, until it ends; raises its error if it is refused."""
        queue: asyncio.Queue[Any] = asyncio.Queue()
        if self._phase in ("closed", "failed"):
            if self.error is not None:
                raise self.error
            return
        self._streams.append(queue)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, RealtimeError):
                    raise item
                yield item
        finally:
            with contextlib.suppress(ValueError):
                self._streams.remove(queue)

    # -- the client drives these ------------------------------------------------------------

    def _detach(self) -> None:
        """Its socket is gone (or replaced): forget what was in flight on it."""
        if self._phase in ("closed", "failed"):
            return
        self._phase = "pending"
        self._held.clear()
        self._pages.clear()
        self._page_truncated.clear()
        self._pending_reset = None

    def _subscribe_on(self, link: _Link) -> None:
        message: dict[str, Any] = {"action": "subscribe", "id": self.id, "table": self.table}
        if self.key is not None:
            message["key"] = self.key
        if self.filter is not None:
            message["filter"] = self.filter
        if self._established and self.cursor is not None:
            message["after"] = self.cursor
            if self.key is not None:  # a reset is refetched in the same answer
                message["snapshot"] = True
            self._phase = "resuming"
        elif self._established and self.key is not None:  # nothing to resume from: refetch
            message["snapshot"] = True
            self._pending_reset = {"reason": "no_cursor"}
            self._phase = "snapshot"
        elif self.snapshot:
            message["snapshot"] = True
            self._phase = "snapshot"
        else:
            if self._established:  # table-wide with no cursor: the application must refetch
                self._pending_reset = {"reason": "no_cursor"}
            self._phase = "subscribing"
        self._asked_snapshot = message.get("snapshot") is True
        self._held.clear()
        self._pages.clear()
        self._page_truncated.clear()
        link.post(message)

    async def _on_subscribed(self, message: Mapping[str, Any]) -> None:
        self._established = True
        if self._phase != "subscribing":
            return  # a resume or a snapshot follows
        cursor = message.get("cursor")
        if self.cursor is None and isinstance(cursor, str):
            self.cursor = cursor
        self._phase = "live"
        pending, self._pending_reset = self._pending_reset, None
        if pending is not None:
            await self._notify_reset(str(pending.get("reason")), False, self.cursor)
        self._ready.set()

    async def _on_change(self, message: dict[str, Any], kind: Kind) -> None:
        replayed = self._phase == "resuming" and message.get("replay") is True
        if self._phase in ("live", "subscribing") or replayed:
            await self._apply(message, kind)
        elif self._phase in ("resuming", "snapshot"):
            self._held.append((message, kind))

    async def _on_resumed(self, message: Mapping[str, Any]) -> None:
        if self._phase != "resuming":
            return
        cursor = message.get("cursor")
        if isinstance(cursor, str):
            self.cursor = cursor
        await self._go_live()

    async def _on_reset(self, message: Mapping[str, Any]) -> None:
        if self._phase not in ("resuming", "snapshot", "subscribing"):
            return
        if self._phase == "resuming" and self._asked_snapshot:
            self._pending_reset = message  # the snapshot pages follow (or a second reset)
            self._phase = "snapshot"
            self._pages.clear()
            self._page_truncated.clear()
            return
        cursor = message.get("cursor")
        if isinstance(cursor, str):
            self.cursor = cursor
        self._pending_reset = None
        await self._notify_reset(str(message.get("reason") or "unknown"), False, self.cursor)
        await self._go_live()

    async def _on_snapshot(self, message: Mapping[str, Any]) -> None:
        if self._phase != "snapshot":
            return
        items = message.get("items")
        truncated = message.get("truncated")
        self._pages.extend(
            i for i in (items if isinstance(items, list) else []) if isinstance(i, dict)
        )
        self._page_truncated.extend(
            k for k in (truncated if isinstance(truncated, list) else []) if isinstance(k, dict)
        )
        if message.get("more") is True:
            return
        view = self.view if self.keep_items else View(self.view.key_names)
        changes = view.replace(self._pages, self._page_truncated)
        if view.key_names is not None:
            self._client._key_names.setdefault(self.table, view.key_names)
        self._pages.clear()
        self._page_truncated.clear()
        cursor = message.get("cursor")
        if isinstance(cursor, str):
            self.cursor = cursor
        pending, self._pending_reset = self._pending_reset, None
        if pending is not None:
            await self._notify_reset(str(pending.get("reason") or "unknown"), True, self.cursor)
        for kind, keys, data in changes:
            await self._deliver(
                Change(
                    subscription_id=self.id,
                    kind=kind,
                    keys=keys,
                    data=data,
                    origin="snapshot",
                    cursor=self.cursor,
                    truncated=kind != "removed" and data is None,
                )
            )
        await self._go_live()

    async def _go_live(self) -> None:
        """Apply what was held back (in order, de-duplicated), then deliver live."""
        self._phase = "live"
        held, self._held = self._held, []
        for message, kind in held:
            if self._phase != "live":
                break  # ended (or its socket lost) meanwhile: a resume brings the rest
            await self._apply(message, kind)
        self._ready.set()

    async def _apply(self, message: dict[str, Any], kind: Kind) -> None:
        change_id = message.get("id")
        cursor = message.get("cursor")
        duplicate = isinstance(change_id, str) and not self._seen.add(change_id)
        replayed = message.get("replay") is True
        if duplicate and not replayed:
            if isinstance(cursor, str):
                self.cursor = cursor
            return  # already applied (a retried delivery)
        raw_keys = message.get("keys")
        keys: dict[str, Any] = raw_keys if isinstance(raw_keys, dict) else {}
        raw_data = message.get("data") if kind != "removed" else None
        data: dict[str, Any] | None = raw_data if isinstance(raw_data, dict) else None
        old = message.get("old")
        if self.keep_items:
            # A replayed duplicate goes into the view again all the same (untold): a replay
            # runs in order to the present, and its start may reach before the snapshot the
            # view holds, so skipping a repeated delete there would bring back an item the
            # replay's earlier, new-looking creation re-added.
            self.view.apply(kind, keys, data)
        if isinstance(cursor, str):
            self.cursor = cursor
        if duplicate:
            return
        await self._deliver(
            Change(
                subscription_id=self.id,
                kind=kind,
                keys=keys,
                data=data,
                origin="replay" if message.get("replay") is True else "live",
                id=change_id if isinstance(change_id, str) else None,
                action=message.get("action") if isinstance(message.get("action"), str) else None,
                old=old if isinstance(old, dict) else None,
                cursor=cursor if isinstance(cursor, str) else None,
                timestamp=(
                    message.get("timestamp") if isinstance(message.get("timestamp"), str) else None
                ),
                truncated=message.get("truncated") is True,
                message=message,
            )
        )

    async def _deliver(self, change: Change) -> None:
        for queue in list(self._streams):
            queue.put_nowait(change)
        if self._on_change_listener is not None:
            await self._client._call(self._on_change_listener, change, "on_change")

    async def _notify_reset(self, reason: str, refetched: bool, cursor: str | None) -> None:
        reset = Reset(self.id, reason, refetched, cursor)
        if self._on_reset_listener is not None:
            await self._client._call(self._on_reset_listener, reset, "on_reset")
        elif not refetched:
            await self._client._report(
                RealtimeError(
                    RESET,
                    f"{reason}: the server cannot prove nothing was missed; refetch what you show",
                    self.id,
                ),
                self,
            )

    async def _fail(self, error: RealtimeError) -> None:
        self._end(error)
        await self._client._report(error, self)

    def _end(self, error: RealtimeError | None) -> None:
        """Closed (``error`` None: unsubscribed) or failed; listeners stop, iterators end."""
        if self._phase in ("closed", "failed"):
            return
        failed = error is not None and error.code != CLOSED
        self._phase = "failed" if failed else "closed"
        if failed or not self._ready.is_set():
            self.error = error or RealtimeError(CLOSED, "unsubscribed", self.id)
        self._client._subs.pop(self.id, None)
        self._held.clear()
        for queue in self._streams:
            queue.put_nowait(error if failed else _END)
        self._ready.set()


def connect(
    url: str,
    token: TokenSource | None = None,
    *,
    on_state: Listener[State] | None = None,
    on_error: Listener[RealtimeError] | None = None,
    options: Options | None = None,
    runtime: Runtime | None = None,
    **settings: Any,
) -> Client:
    """Connect to a realtime-channel WebSocket URL (``wss://…/{stage}``, ``ws://127.0.0.1:8080/dev``)
    and keep connected until ``close()``; call from a coroutine (it starts at once).

    ``token``: a token or a function (sync or async) returning a fresh one, called for every
    socket and before the token expires; None for a stack without tokens. ``settings`` are
    ``Options`` fields (``heartbeat_interval=60``)."""
    if settings:
        options = dataclasses.replace(options or Options(), **settings)
    return Client(
        url, token, on_state=on_state, on_error=on_error, options=options, runtime=runtime
    )
