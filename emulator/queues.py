"""SQS event source mappings: poll a queue and invoke the function like Lambda does.

Per declared queue mapping, Lambda's SQS poller:

* up to ``maximumConcurrency`` invocations run at once (``concurrency`` caps it further:
  the emulator passes its worker pool's size, so no received batch waits for a worker
  while its visibility timeout runs). A receiver takes a free slot before it receives,
  so a received batch is invoked at once;
* each receive asks for ``batch_size`` messages (at most SQS's 10 per call: there is no
  batching window here) with every system attribute and message attribute, under the
  queue's visibility timeout, and the function gets Lambda's SQS event;
* the outcome, with Lambda's semantics:

  - success: every message of the batch is deleted;
  - with ``ReportBatchItemFailures`` and a valid partial batch response
    (``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``): the messages not
    listed are deleted; the listed ones are left in flight and come back when their
    visibility timeout ends (Lambda does not change their visibility);
  - an invalid partial batch response (an item that is not an object, an empty or
    missing ``itemIdentifier``, one that is not in the batch), a function error or a
    timeout: nothing is deleted, the whole batch comes back after the visibility timeout;
  - without ``ReportBatchItemFailures`` a successful function's answer is ignored;

* FIFO queues: a message group is never in two invocations at once, and its order is
  kept, because SQS does not hand out a group's messages while one of them is in flight
  (``emulator.services.fifo_queues_like_sqs`` makes moto do so too). After the queue's
  ``maxReceiveCount`` receives, SQS itself moves a message to the dead-letter queue.

A receive that fails (the queue cannot be read) is retried with exponential backoff up
to ``max_retry_delay``; the first failure is logged, then one reminder per
``reminder_interval`` while it lasts, and one line when receiving recovers. Failed
batches are logged the same way: the first, then one summary per ``reminder_interval``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from emulator.model import QueueMappingModel
from emulator.program import REGION
from emulator.streams import Invoke, _short
from emulator.workers import InvokeResult

T = TypeVar("T")

SQS_BATCH_LIMIT = 10
"""ReceiveMessage returns at most 10 messages."""

LAMBDA_ATTRIBUTES = (
    "ApproximateReceiveCount",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
)
"""The system attributes Lambda puts in a record (those the message has)."""


def lambda_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as boto3 returns it -> as Lambda hands it to a function."""
    import base64

    binary = value.get("BinaryValue")
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": base64.b64encode(binary).decode("ascii")
        if isinstance(binary, (bytes, bytearray))
        else binary,
        "stringListValues": list(value.get("StringListValues") or []),
        "binaryListValues": list(value.get("BinaryListValues") or []),
        "dataType": value.get("DataType"),
    }


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """A message as ReceiveMessage (boto3) returns it -> as Lambda hands it to a function."""
    attributes = message.get("Attributes") or {}
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message.get("Body", ""),
        "attributes": {k: attributes[k] for k in LAMBDA_ATTRIBUTES if k in attributes},
        "messageAttributes": {
            name: lambda_attribute(value)
            for name, value in (message.get("MessageAttributes") or {}).items()
        },
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }
    if message.get("MD5OfMessageAttributes"):
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def failed_items(result: InvokeResult, batch: list[dict[str, Any]], report: bool) -> set[str]:
    """The message ids of the batch Lambda would leave in the queue (not delete).

    A function error, or with ``report`` (ReportBatchItemFailures) an answer Lambda cannot
    read as a partial batch response, fails the whole batch.
    """
    everything = {r["messageId"] for r in batch}
    if not result.ok:
        return everything
    payload = result.payload
    if not report or not isinstance(payload, dict):
        return set()
    items = payload.get("batchItemFailures")
    if items is None or items == []:
        return set()
    if not isinstance(items, list):
        return everything
    failed = set()
    for item in items:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(identifier, str) or not identifier or identifier not in everything:
            return everything
        failed.add(identifier)
    return failed


class _Throttled:
    """Logs a kind of problem once, then at most one summary per ``interval``."""

    def __init__(self, log: Callable[[str], None], interval: float) -> None:
        self.log = log
        self.interval = interval
        self.logged_at: float | None = None
        self.since = 0

    def report(self, line: str) -> None:
        now = time.monotonic()
        if self.logged_at is None or now - self.logged_at >= self.interval:
            more = f" ({self.since} more like it since the last line)" if self.since else ""
            self.log(line + more)
            self.logged_at, self.since = now, 0
        else:
            self.since += 1


class QueuePoller:
    def __init__(
        self,
        mapping: QueueMappingModel,
        *,
        aws: Any,
        invoke: Invoke,
        log: Callable[[str], None] = print,
        concurrency: int | None = None,
        receivers: int = 3,
        wait_seconds: int = 1,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
        reminder_interval: float = 60.0,
        function_timeout: float | None = None,
    ) -> None:
        self.mapping = mapping
        self.aws = aws
        self.invoke = invoke
        self.log = log
        self.limit = max(1, min(mapping.maximum_concurrency, concurrency or 1_000_000))
        """Invocations at most at once."""
        self.receivers = max(1, min(receivers, self.limit))
        self.wait_seconds = wait_seconds
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.reminder_interval = reminder_interval
        self.function_timeout = function_timeout
        self.queue_url = ""
        self.queue_arn = ""
        self.visibility_timeout = 30
        self.invocations = 0
        self.received = 0
        self.deleted = 0
        self.failed_items = 0
        """Messages left in the queue after an invocation (listed, or of a failed batch)."""
        self.failed_batches = 0
        """Invocations whose whole batch was left (function error, timeout, bad answer)."""
        self.running = 0
        """Invocations in progress."""
        self._slots = asyncio.Semaphore(self.limit)
        self._tasks: list[asyncio.Task[None]] = []
        self._batches: set[asyncio.Task[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._failed_batch_log = _Throttled(log, reminder_interval)
        self._delete_log = _Throttled(log, reminder_interval)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve the queue (URL, ARN, visibility timeout) and start receiving."""
        # SQS calls run on the poller's own threads: a long poll holds one for up to
        # wait_seconds, which must not starve the event loop's default executor
        self._executor = ThreadPoolExecutor(
            max_workers=self.receivers + 2, thread_name_prefix=f"sqs-{self.mapping.logical}"
        )
        await self._call(self._open)
        if self.function_timeout is not None and self.visibility_timeout < self.function_timeout:
            self.log(
                f"queue: {self.mapping.logical}: the queue's visibility timeout"
                f" ({self.visibility_timeout} s) is shorter than the function's timeout"
                f" ({self.function_timeout:g} s); Lambda refuses such a mapping"
            )
        self._tasks = [asyncio.ensure_future(self._receive_loop()) for _ in range(self.receivers)]

    def _open(self) -> None:
        sqs = self.aws.client("sqs")
        self.queue_url = sqs.get_queue_url(QueueName=self.mapping.queue)["QueueUrl"]
        attributes = sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["QueueArn", "VisibilityTimeout"]
        )["Attributes"]
        self.queue_arn = attributes["QueueArn"]
        self.visibility_timeout = int(attributes.get("VisibilityTimeout", 30))

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._batches]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    # -- receiving ---------------------------------------------------------------------------

    def receive_backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th receive failure in a row (doubling,
        capped)."""
        return float(min(self.retry_delay * 2 ** min(failures - 1, 30), self.max_retry_delay))

    def _receive(self) -> list[dict[str, Any]]:
        answer = self.aws.client("sqs").receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.mapping.batch_size, SQS_BATCH_LIMIT),
            WaitTimeSeconds=self.wait_seconds,
            VisibilityTimeout=self.visibility_timeout,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(answer.get("Messages") or [])

    async def _receive_loop(self) -> None:
        name = self.mapping.logical
        failures = 0
        failing_since = reported_at = 0.0
        while True:
            await self._slots.acquire()
            handed_over = False
            try:
                messages = await self._call(self._receive)
                if failures:
                    self.log(f"queue: {name}: receiving recovered after {failures} failure(s)")
                    failures = 0
                if messages:
                    self.received += len(messages)
                    batch = [sqs_record(m, self.queue_arn) for m in messages]
                    task = asyncio.ensure_future(self._process(batch))
                    self._batches.add(task)
                    task.add_done_callback(self._batches.discard)
                    handed_over = True  # _process releases the slot
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep polling: a mapping never dies silently
                failures += 1
                now = time.monotonic()
                why = _short(error)
                if failures == 1:
                    failing_since = reported_at = now
                    self.log(f"queue: {name}: receive failed, retrying with backoff: {why}")
                elif now - reported_at >= self.reminder_interval:
                    reported_at = now
                    self.log(
                        f"queue: {name}: receive still failing after {failures} attempts"
                        f" over {now - failing_since:.0f} s, nothing delivered since: {why}"
                    )
            finally:
                if not handed_over:
                    self._slots.release()
            if failures:
                await asyncio.sleep(self.receive_backoff(failures))
            elif not self.wait_seconds and not handed_over:
                await asyncio.sleep(0.05)  # no long poll to pace an empty queue

    # -- one batch ---------------------------------------------------------------------------

    async def _process(self, batch: list[dict[str, Any]]) -> None:
        self.running += 1
        try:
            try:
                result = await self.invoke(self.mapping.function, {"Records": batch})
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the pool closed, a worker could not start...
                result = InvokeResult(
                    ok=False, error_type=type(error).__name__, error_message=str(error)
                )
            self.invocations += 1
            failed = failed_items(result, batch, self.mapping.report_item_failures)
            self.failed_items += len(failed)
            if len(failed) == len(batch):
                self.failed_batches += 1
                why = (
                    f"{result.error_type}: {result.error_message}"
                    if not result.ok
                    else f"invalid partial batch response {_short(ValueError(result.payload))}"
                )
                self._failed_batch_log.report(
                    f"queue: {self.mapping.logical}: a batch of {len(batch)} message(s) failed"
                    f" ({why}); it comes back after the visibility timeout"
                    f" ({self.visibility_timeout} s)"
                )
            done = [r for r in batch if r["messageId"] not in failed]
            if done:
                await self._delete(done)
        finally:
            self.running -= 1
            self._slots.release()

    async def _delete(self, records: list[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
            for index, record in enumerate(records)
        ]
        try:
            answer = await self._call(
                functools.partial(
                    self.aws.client("sqs").delete_message_batch,
                    QueueUrl=self.queue_url,
                    Entries=entries,
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._delete_log.report(
                f"queue: {self.mapping.logical}: deleting {len(records)} processed message(s)"
                f" failed, they come back after the visibility timeout: {_short(error)}"
            )
            return
        self.deleted += len(answer.get("Successful") or [])
        failed = answer.get("Failed") or []
        if failed:
            self._delete_log.report(
                f"queue: {self.mapping.logical}: {len(failed)} processed message(s) could not"
                f" be deleted ({failed[0].get('Code')}), they may come back"
            )
