"""Concurrent fan-out of messages to many connections, with bounded retries.

Each connection gets its own payload (connections whose subscriptions saw a
change differently, or were granted other fields, get different messages);
connections with the same message share one ``bytes`` object.

Outcome per connection:
* 2xx: delivered;
* 410 GoneException: the connection is stale; ``on_stale`` removes its record
  (or decides to keep it) and says whether it removed it; not an error;
* 429 / LimitExceeded / 5xx / network error: retried with exponential backoff
  and full jitter, at most ``max_attempts`` tries and never past the deadline;
* anything else, or retries exhausted: failed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from handlers import logs
from handlers import subscriptions as store
from handlers.connections import iso_utc
from handlers.management import Response

log = logs.logger(__name__)

BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0


class Poster(Protocol):
    def post_to_connection(
        self, connection_id: str, data: bytes, timeout: float | None = None
    ) -> Response: ...


@dataclass
class FanoutReport:
    delivered: int = 0
    stale: list[str] = field(default_factory=list)
    """Connections that answered 410."""
    stale_removed: int = 0
    """How many of ``stale`` had their record removed (``on_stale`` returned True)."""
    retried: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    """connection id -> last error code, for connections that never got the message."""


def backoff_delay(attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    """Full-jitter exponential backoff before try number ``attempt + 1`` (attempt >= 1)."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * (2 ** (attempt - 1)))
    return rng(0.0, ceiling)


DEADLINE_MARGIN_SECONDS = 2.0
"""Time an invocation keeps for itself after its last post (log lines, the answer)."""


def invocation_deadline(context: Any, clock: Callable[[], float], default_seconds: float) -> float:
    """The ``clock()`` value a Lambda invocation's delivery must end by: its remaining time
    (``default_seconds`` without a context) less ``DEADLINE_MARGIN_SECONDS``, at least 0.5 s."""
    remaining_ms = (
        context.get_remaining_time_in_millis() if context is not None else default_seconds * 1000
    )
    return clock() + max(remaining_ms / 1000 - DEADLINE_MARGIN_SECONDS, 0.5)


STALE_GRACE_SECONDS = 30.0
"""A 410 for a record younger than this may be a client still in $connect: keep it."""


def remove_stale(
    dynamodb: Any,
    *,
    connections_table: str,
    subscriptions_table: str,
    connection_id: str,
    known: Iterable[tuple[str, str]] = (),
) -> store.StaleRemoval | None:
    """Clean up after a connection that answered 410 (``subscriptions.remove_stale_connection``,
    keeping a record younger than ``STALE_GRACE_SECONDS``); None when it failed, logged: the
    record's and the subscriptions' ttl remove them later."""
    try:
        removal = store.remove_stale_connection(
            dynamodb,
            connections_table=connections_table,
            subscriptions_table=subscriptions_table,
            connection_id=connection_id,
            connected_before=iso_utc(time.time() - STALE_GRACE_SECONDS),
            known=known,
        )
    except Exception:
        log.warning(
            "could not remove a stale connection",
            exc_info=True,
            extra={"connectionId": connection_id},
        )
        return None
    if removal.subscriptions_left:
        log.warning(
            "some subscriptions of a stale connection were not deleted; their ttl will",
            extra={"connectionId": connection_id, "left": removal.subscriptions_left},
        )
    return removal


_executor_lock = threading.Lock()
_executors: dict[int, ThreadPoolExecutor] = {}


def close_connection(api: Any, connection_id: str, why: str) -> bool:
    """``@connections`` DELETE (API Gateway closes the socket and runs ``$disconnect``).
    True when it was closed, or was already gone (410); a failure is logged with ``why``."""
    delete = getattr(api, "delete_connection", None)
    try:
        response = delete(connection_id) if delete is not None else None
    except Exception:
        response = None
    if response is not None and (response.ok or response.gone):
        log.info(f"closed a connection: {why}", extra={"connectionId": connection_id})
        return True
    log.warning(
        f"could not close a connection: {why}",
        extra={"connectionId": connection_id, "status": getattr(response, "status", None)},
    )
    return False


def shared_executor(workers: int) -> ThreadPoolExecutor:
    """One pool per container and size, reused across invocations."""
    with _executor_lock:
        pool = _executors.get(workers)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fanout")
            _executors[workers] = pool
        return pool


def fan_out(
    api: Poster,
    deliveries: Iterable[tuple[str, bytes]],
    *,
    concurrency: int,
    max_attempts: int,
    deadline: float,
    on_stale: Callable[[str], bool],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> FanoutReport:
    """Post each (connection id, payload) pair; ``deadline`` is a ``clock()`` value.

    ``deliveries`` may be lazy: it is consumed as posts go out.
    """
    report = FanoutReport()
    lock = threading.Lock()

    def deliver(connection_id: str, data: bytes) -> None:
        attempt = 1
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                code = "DeadlineExceeded"
                break
            response = api.post_to_connection(connection_id, data, remaining)
            if response.ok:
                with lock:
                    report.delivered += 1
                return
            if response.gone:
                removed = on_stale(connection_id)
                with lock:
                    report.stale.append(connection_id)
                    report.stale_removed += bool(removed)
                return
            code = response.error_code or f"HTTP{response.status}"
            if not response.retryable or attempt >= max_attempts:
                break
            delay = backoff_delay(attempt)
            if clock() + delay >= deadline:
                code = f"{code} (deadline)"
                break
            with lock:
                report.retried += 1
            sleep(delay)
            attempt += 1
        with lock:
            report.failed[connection_id] = code

    if concurrency <= 1:
        for connection_id, data in deliveries:
            deliver(connection_id, data)
        return report
    pool = shared_executor(concurrency)
    pending = [pool.submit(deliver, connection_id, data) for connection_id, data in deliveries]
    for task in pending:
        task.result()  # waits for every post; re-raises the first unexpected exception
    return report
