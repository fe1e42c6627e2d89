"""Event source mappings: poll a table's stream and invoke the function like Lambda does.

Per declared mapping: read the stream from its starting position, keep records
that pass the declared filters, build batches (batch size, batching window),
invoke the function, and handle the outcome with Lambda's semantics:

* success: checkpoint after the batch;
* partial batch response (``batchItemFailures``): checkpoint before the first
  failed sequence number and retry from there;
* function error or timeout: retry the batch; with bisect on error, split it
  in two halves, processed in order;
* retries past ``MaximumRetryAttempts`` or records older than
  ``MaximumRecordAgeInSeconds``: the batch's description goes to the
  on-failure SQS queue and processing continues after it.

Order within a shard is kept: one batch at a time per shard.

A poll that fails (the stream cannot be read) is retried from the same
position with exponential backoff up to ``max_retry_delay``; the first failure
is logged, then one reminder per ``reminder_interval`` while it lasts, and one
line when polling recovers, so a lasting failure cannot flood the log.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from emulator.filters import matches_any, parse_pattern
from emulator.model import MappingModel
from emulator.program import REGION
from emulator.workers import InvokeResult

Invoke = Callable[[str, Any], Awaitable[InvokeResult]]


def _plain_value(value: Any) -> Any:
    """boto3's attribute values -> the JSON Lambda sends (binary as base64 text)."""
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {k: _plain_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_value(v) for v in value]
    if isinstance(value, set):
        return [_plain_value(v) for v in sorted(value)]
    return value


def lambda_record(raw: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """A stream record as boto3 returns it -> as Lambda hands it to a function."""
    stream = dict(raw.get("dynamodb") or {})
    created = stream.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        stream["ApproximateCreationDateTime"] = created.timestamp()
    for image in ("Keys", "NewImage", "OldImage"):
        if image in stream:
            stream[image] = _plain_value(stream[image])
    return {
        "eventID": raw.get("eventID"),
        "eventName": raw.get("eventName"),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": raw.get("awsRegion") or REGION,
        "dynamodb": stream,
        "eventSourceARN": stream_arn,
    }


def first_failure(result: InvokeResult, batch: list[dict[str, Any]]) -> int | None:
    """Index of the first record to retry; None when the whole batch succeeded.

    A function error, or an answer Lambda cannot read, fails the whole batch (index 0).
    """
    if not result.ok:
        return 0
    payload = result.payload
    if not isinstance(payload, dict) or not payload.get("batchItemFailures"):
        return None
    sequences = [r["dynamodb"]["SequenceNumber"] for r in batch]
    failed = []
    for item in payload["batchItemFailures"]:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not identifier or identifier not in sequences:
            return 0
        failed.append(sequences.index(identifier))
    return min(failed)


class StreamPoller:
    def __init__(
        self,
        mapping: MappingModel,
        *,
        aws: Any,
        invoke: Invoke,
        function_arn: str,
        log: Callable[[str], None] = print,
        poll_interval: float = 0.05,
        retry_delay: float = 0.1,
        max_retry_delay: float = 5.0,
        reminder_interval: float = 60.0,
    ) -> None:
        self.mapping = mapping
        self.aws = aws
        self.invoke = invoke
        self.function_arn = function_arn
        self.log = log
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.reminder_interval = reminder_interval
        self.filters = [parse_pattern(text) for text in mapping.filters]
        self.stream_arn = ""
        self._iterators: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self.invocations = 0
        self.dead_lettered = 0

    async def start(self) -> None:
        """Resolve the stream and open every shard at the starting position."""
        await asyncio.to_thread(self._open)
        self._task = asyncio.ensure_future(self._run())

    def _open(self) -> None:
        dynamodb = self.aws.client("dynamodb")
        table = dynamodb.describe_table(TableName=self.mapping.table)["Table"]
        self.stream_arn = table.get("LatestStreamArn") or ""
        if not self.stream_arn:
            raise ValueError(f"table {self.mapping.table!r} has no stream to poll")
        self._streams = self.aws.client("dynamodbstreams")
        shards = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"][
            "Shards"
        ]
        kind = "TRIM_HORIZON" if self.mapping.starting_position == "TRIM_HORIZON" else "LATEST"
        for shard in shards:
            self._iterators[shard["ShardId"]] = self._streams.get_shard_iterator(
                StreamArn=self.stream_arn, ShardId=shard["ShardId"], ShardIteratorType=kind
            )["ShardIterator"]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _read(self, shard: str) -> list[dict[str, Any]]:
        iterator = self._iterators.get(shard)
        if not iterator:
            return []
        answer = self._streams.get_records(ShardIterator=iterator, Limit=1000)
        self._iterators[shard] = answer.get("NextShardIterator") or ""
        return [lambda_record(raw, self.stream_arn) for raw in answer.get("Records", [])]

    def poll_backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th poll failure in a row (doubling, capped)."""
        base = max(self.retry_delay, self.poll_interval)
        return float(min(base * 2 ** min(failures - 1, 30), self.max_retry_delay))

    async def _run(self) -> None:
        pending: dict[str, deque[dict[str, Any]]] = {s: deque() for s in self._iterators}
        name = self.mapping.logical
        failures = 0
        failing_since = reported_at = 0.0
        while True:
            try:
                got_any = await self._poll_once(pending)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # keep polling: a mapping never dies silently
                failures += 1
                now = time.monotonic()
                why = _short(error)
                if failures == 1:
                    failing_since = reported_at = now
                    self.log(f"stream: {name}: poll failed, retrying with backoff: {why}")
                elif now - reported_at >= self.reminder_interval:
                    reported_at = now
                    self.log(
                        f"stream: {name}: poll still failing after {failures} attempts"
                        f" over {now - failing_since:.0f} s, nothing delivered since: {why}"
                    )
                await asyncio.sleep(self.poll_backoff(failures))
                continue
            if failures:
                self.log(f"stream: {name}: polling recovered after {failures} failed attempt(s)")
                failures = 0
            if not got_any:
                await asyncio.sleep(self.poll_interval)

    async def _poll_once(self, pending: dict[str, deque[dict[str, Any]]]) -> bool:
        """Read every shard once and deliver what arrived; whether anything was read."""
        got_any = False
        for shard in list(self._iterators):
            records = await asyncio.to_thread(self._read, shard)
            pending[shard].extend(r for r in records if matches_any(self.filters, r))
            got_any = got_any or bool(records)
            if pending[shard]:
                await self._fill(shard, pending[shard])
                while pending[shard]:
                    size = min(self.mapping.batch_size, len(pending[shard]))
                    batch = [pending[shard][i] for i in range(size)]
                    await self._deliver(shard, batch)
                    for _ in range(size):  # checkpoint only once the batch is handled
                        pending[shard].popleft()
        return got_any

    async def _fill(self, shard: str, queue: deque[dict[str, Any]]) -> None:
        """Wait up to the batching window for more records, unless the batch is full."""
        deadline = time.monotonic() + self.mapping.batching_window
        while len(queue) < self.mapping.batch_size and time.monotonic() < deadline:
            await asyncio.sleep(min(self.poll_interval, max(deadline - time.monotonic(), 0)))
            records = await asyncio.to_thread(self._read, shard)
            queue.extend(r for r in records if matches_any(self.filters, r))

    def _expired(self, batch: list[dict[str, Any]]) -> int:
        """How many records at the front of the batch are older than the maximum record age."""
        limit = self.mapping.maximum_record_age
        if limit < 0:
            return 0
        now = time.time()
        count = 0
        for record in batch:
            created = record["dynamodb"].get("ApproximateCreationDateTime")
            if not (isinstance(created, (int, float)) and now - created > limit):
                break
            count += 1
        return count

    async def _deliver(self, shard: str, batch: list[dict[str, Any]]) -> None:
        work: deque[list[dict[str, Any]]] = deque([batch])
        while work:
            current = work.popleft()
            attempts = 0
            while current:
                expired = self._expired(current)
                if expired:
                    old, current = current[:expired], current[expired:]
                    await self._dead_letter(shard, old, attempts, "RecordAgeExceeded", None)
                    continue
                result = await self.invoke(self.mapping.function, {"Records": current})
                self.invocations += 1
                attempts += 1
                failed_at = first_failure(result, current)
                if result.ok and not self.mapping.report_item_failures:
                    failed_at = None  # without ReportBatchItemFailures Lambda ignores the answer
                if failed_at is None:
                    break
                current = current[failed_at:]  # checkpoint before the first failure
                limit = self.mapping.maximum_retry_attempts
                if limit >= 0 and attempts > limit:
                    await self._dead_letter(
                        shard, current, attempts, "RetryAttemptsExhausted", result
                    )
                    break
                if self.mapping.bisect_on_error and len(current) > 1 and failed_at == 0:
                    middle = len(current) // 2
                    work.appendleft(current[middle:])
                    work.appendleft(current[:middle])
                    break
                await asyncio.sleep(self.retry_delay * min(2 ** (attempts - 1), 10))

    async def _dead_letter(
        self,
        shard: str,
        batch: list[dict[str, Any]],
        attempts: int,
        condition: str,
        result: InvokeResult | None,
    ) -> None:
        """Send Lambda's on-failure record for a stream batch to the declared queue."""
        self.dead_lettered += len(batch)
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]
        body = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.function_arn,
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": None if result is None or result.ok else "Unhandled",
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _iso(first.get("ApproximateCreationDateTime")),
                "approximateArrivalOfLastRecord": _iso(last.get("ApproximateCreationDateTime")),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        self.log(
            f"stream: {self.mapping.logical}: {len(batch)} record(s) from"
            f" {first['SequenceNumber']} sent to the on-failure destination ({condition})"
        )
        queue = self.mapping.on_failure_queue
        if queue is None:
            return
        await asyncio.to_thread(self._send, queue, json.dumps(body))

    def _send(self, queue: str, body: str) -> None:
        sqs = self.aws.client("sqs")
        url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=body)


def _short(error: Exception, limit: int = 300) -> str:
    """An error for one log line: its repr, cut (a server's HTML error page can be long)."""
    text = " ".join(repr(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _iso(epoch: Any) -> str | None:
    if not isinstance(epoch, (int, float)):
        return None
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )
