"""Senders: deliver delivery jobs (``handlers.jobs``) from the SQS FIFO queue, in order per
message group. Not wired yet: no component, emulator or broadcaster uses it.

Lambda gives a sender a batch of FIFO messages, in order within each message group.
``deliver_batch`` handles them in that order:

* a job's recipients are posted concurrently (each connection appears once in a job,
  so this cannot reorder one connection's messages), retrying throttling and server
  errors with backoff (``delivery.fan_out``);
* a connection that answers 410 is gone: ``on_stale`` cleans it up;
* a connection that still fails after its retries is **closed** (``@connections``
  DELETE): it resumes with its cursor, and it cannot hold its group back. Recipients
  that got the message do not get it again, and the job succeeds;
* only when the sender itself cannot finish a job (a malformed body, a close that
  fails too, the deadline) is the job reported as a batch item failure, and so is
  every later job of the same group in this batch (Lambda's rule for FIFO partial
  batch responses): the group stops until that job is redelivered, so nothing of the
  group overtakes it, while other groups go on. A redelivered job may repeat posts
  that succeeded the first time (clients drop them by ``id``); after the queue's
  ``maxReceiveCount`` it goes to the dead-letter queue, whose message body is the
  whole job: enough to redeliver it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from handlers.delivery import Poster, close_connection, fan_out
from handlers.jobs import MalformedJob, read_job


@dataclass
class SenderStats:
    jobs: int = 0
    delivered: int = 0
    stale: int = 0
    closed: int = 0
    """Connections that kept failing and were closed (they resume with their cursor)."""
    retried: int = 0
    jobsFailed: int = 0
    """Jobs reported as batch item failures (including later jobs of a failed group)."""
    malformed: int = 0
    failedCodes: dict[str, int] = field(default_factory=dict)


def _group(record: Mapping[str, Any]) -> str:
    attributes = record.get("attributes") or {}
    return str(attributes.get("MessageGroupId") or "")


def deliver_batch(
    records: Iterable[Mapping[str, Any]],
    api: Poster,
    *,
    concurrency: int,
    max_attempts: int,
    deadline: float,
    on_stale: Callable[[str], bool],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[dict[str, str]], SenderStats]:
    """Deliver an SQS FIFO batch of jobs; (``batchItemFailures``, stats)."""
    stats = SenderStats()
    failures: list[dict[str, str]] = []
    stopped: set[str] = set()
    for record in records:
        stats.jobs += 1
        message_id = str(record.get("messageId") or "")
        group = _group(record)
        if group in stopped:  # an earlier job of this group failed: keep the group's order
            failures.append({"itemIdentifier": message_id})
            stats.jobsFailed += 1
            continue
        if not _deliver_one(record, api, stats, concurrency, max_attempts, deadline, on_stale,
                            sleep, clock):  # fmt: skip
            stopped.add(group)
            failures.append({"itemIdentifier": message_id})
            stats.jobsFailed += 1
    return failures, stats


def _deliver_one(
    record: Mapping[str, Any],
    api: Poster,
    stats: SenderStats,
    concurrency: int,
    max_attempts: int,
    deadline: float,
    on_stale: Callable[[str], bool],
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> bool:
    """One job; False when it must be redelivered."""
    if clock() >= deadline:
        return False
    try:
        deliveries = read_job(str(record.get("body") or ""))
    except MalformedJob:
        stats.malformed += 1
        return False  # redelivered until maxReceiveCount, then kept whole in the DLQ
    report = fan_out(
        api,
        deliveries,
        concurrency=concurrency,
        max_attempts=max_attempts,
        deadline=deadline,
        on_stale=on_stale,
        sleep=sleep,
        clock=clock,
    )
    stats.delivered += report.delivered
    stats.stale += len(report.stale)
    stats.retried += report.retried
    finished = True
    for connection_id, code in report.failed.items():
        stats.failedCodes[code] = stats.failedCodes.get(code, 0) + 1
        if code.startswith("DeadlineExceeded") or code.endswith("(deadline)"):
            finished = False  # out of time, not the connection's fault: redeliver
        elif close_connection(api, connection_id, f"it keeps failing ({code})"):
            stats.closed += 1
        else:
            finished = False
    return finished
