"""Senders: deliver delivery jobs (``handlers.jobs``) from the SQS FIFO queue, in order per
message group. The component attaches this function to the queue (an SQS event source
mapping with ``ReportBatchItemFailures`` and a maximum concurrency: the budget).

Lambda gives a sender a batch of FIFO messages, in order within each message group.
``deliver_batch`` handles them in that order:

* a job's recipients are posted concurrently (each connection appears once in a job,
  so this cannot reorder one connection's messages), retrying throttling and server
  errors with backoff (``delivery.fan_out``);
* a connection that answers 410 is gone: ``on_stale`` cleans it up;
* a recipient whose token expired while its job waited in the queue is sent nothing
  and closed (as the broadcaster does with expired recipients);
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

Posts go through ``handlers.fastpost`` (one event loop over kept-alive connections,
signing by ``handlers.sigv4``): about a fifth of the CPU per post of the thread-pool
client (``bench.sender``), which Lambda bills.

Budget: each sender posts at most ``SENDER_RATE`` posts per second (a ``TokenBucket``
reserved per job before it is posted); the mapping's maximum concurrency caps how
many senders run, so together they stay under the channel's ceiling
(``jobs.mapping_concurrency``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from handlers import aws, config, fastpost, logs
from handlers.delivery import (
    FanoutReport,
    Poster,
    close_connection,
    fan_out,
    invocation_deadline,
    remove_stale,
)
from handlers.jobs import MalformedJob, TokenBucket, read_recipients
from handlers.management import frozen_credentials

METRICS_NAMESPACE = "RealtimeChannel"

CONFIG = config.sender_config()
log = logs.logger(__name__)


@dataclass
class SenderStats:
    jobs: int = 0
    delivered: int = 0
    stale: int = 0
    closed: int = 0
    """Connections that kept failing and were closed (they resume with their cursor)."""
    expiredClosed: int = 0
    """Recipients whose token expired while their job waited: sent nothing, and closed."""
    retried: int = 0
    jobsFailed: int = 0
    """Jobs reported as batch item failures (including later jobs of a failed group)."""
    malformed: int = 0
    pacedMs: float = 0.0
    """Time spent waiting for the budget (``SENDER_RATE``)."""
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
    budget: TokenBucket | None = None,
    post: Callable[..., FanoutReport] = fan_out,
    wall: Callable[[], float] = time.time,
) -> tuple[list[dict[str, str]], SenderStats]:
    """Deliver an SQS FIFO batch of jobs; (``batchItemFailures``, stats). With ``budget``,
    each job's posts are reserved from it (and waited for) before they go out. ``post`` is
    ``delivery.fan_out`` or ``fastpost.fan_out`` (same contract)."""
    stats = SenderStats()
    failures: list[dict[str, str]] = []
    stopped: set[str] = set()
    expired: set[str] = set()
    for record in records:
        stats.jobs += 1
        message_id = str(record.get("messageId") or "")
        group = _group(record)
        if group in stopped:  # an earlier job of this group failed: keep the group's order
            failures.append({"itemIdentifier": message_id})
            stats.jobsFailed += 1
            continue
        if not _deliver_one(record, api, stats, concurrency, max_attempts, deadline, on_stale,
                            sleep, clock, budget, post, wall, expired):  # fmt: skip
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
    budget: TokenBucket | None,
    post: Callable[..., FanoutReport],
    wall: Callable[[], float],
    expired: set[str],
) -> bool:
    """One job; False when it must be redelivered. ``expired``: connections closed for an
    expired token in this batch (each is closed once)."""
    if clock() >= deadline:
        return False
    try:
        recipients = read_recipients(str(record.get("body") or ""))
    except MalformedJob as bad:
        stats.malformed += 1
        log.error(
            "malformed delivery job; it goes back to the queue (then its dead-letter queue)",
            extra={"messageId": record.get("messageId"), "reason": str(bad)[:300]},
        )
        return False  # redelivered until maxReceiveCount, then kept whole in the DLQ
    now = wall()
    deliveries = []
    for recipient in recipients:
        if recipient.expires_at is None or now < recipient.expires_at:
            deliveries.append((recipient.connection_id, recipient.message))
        elif recipient.connection_id not in expired:
            expired.add(recipient.connection_id)
            why = "its token expired while the message waited"
            stats.expiredClosed += close_connection(api, recipient.connection_id, why)
    if budget is not None:
        wait = 0.0
        left = len(deliveries)
        while left > 0:
            chunk = min(left, int(budget.burst))
            wait = max(wait, budget.take(chunk))
            left -= chunk
        if wait > 0:
            if clock() + wait >= deadline:
                return False
            stats.pacedMs = round(stats.pacedMs + wait * 1000, 3)
            sleep(wait)
    report = post(
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


class Sender:
    """The container's sender: its @connections client, DynamoDB client and budget."""

    def __init__(
        self,
        settings: config.SenderConfig,
        *,
        dynamodb: Any,
        api: Poster,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.dynamodb = dynamodb
        self.api = api
        self.clock = clock
        self.sleep = sleep
        self.budget = TokenBucket(settings.rate, max(settings.rate, 1), clock)

    def remove_stale(self, connection_id: str) -> bool:
        """Delete the record and subscriptions of a connection that answered 410 (as the
        broadcaster does); whether the record was deleted."""
        removal = remove_stale(
            self.dynamodb,
            connections_table=self.settings.connections_table,
            subscriptions_table=self.settings.subscriptions_table,
            connection_id=connection_id,
        )
        return removal is not None and removal.record_removed

    def run(
        self, records: list[Mapping[str, Any]], deadline: float
    ) -> tuple[list[dict[str, str]], SenderStats]:
        return deliver_batch(
            records,
            self.api,
            concurrency=self.settings.send_concurrency,
            max_attempts=self.settings.send_max_attempts,
            deadline=deadline,
            on_stale=self.remove_stale,
            sleep=self.sleep,
            clock=self.clock,
            budget=self.budget,
            post=fastpost.fan_out if isinstance(self.api, fastpost.FastManagementApi) else fan_out,
        )


def record_batch(stats: SenderStats, function_name: str) -> None:
    """One JSON log line and one EMF line per batch."""
    log.info("jobs", extra=asdict(stats))
    logs.emit_metrics(
        logs.emf_line(
            METRICS_NAMESPACE,
            {"FunctionName": function_name},
            {
                "Jobs": stats.jobs,
                "Delivered": stats.delivered,
                "StaleRemoved": stats.stale,
                "Closed": stats.closed,
                "ExpiredClosed": stats.expiredClosed,
                "Retried": stats.retried,
                "JobsFailed": stats.jobsFailed,
                "Malformed": stats.malformed,
            },
            milliseconds={"PacedTime": stats.pacedMs},
        )
    )


_lock = threading.Lock()
_sender: Sender | None = None


def sender() -> Sender:
    """The container's sender, built on first use."""
    global _sender
    with _lock:
        if _sender is None:
            _sender = Sender(
                CONFIG,
                dynamodb=aws.client("dynamodb"),
                api=fastpost.FastManagementApi(
                    CONFIG.management_endpoint,
                    region=aws.region(),
                    credentials=frozen_credentials(aws.session()),
                ),
            )
        return _sender


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    worker = sender()
    deadline = invocation_deadline(context, worker.clock, 30)
    records = event.get("Records") if isinstance(event, dict) else None
    failures, stats = worker.run(list(records or []), deadline)
    record_batch(stats, getattr(context, "function_name", None) or "sender")
    return {"batchItemFailures": failures}
