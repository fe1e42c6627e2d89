"""The stream poller: Lambda's record shape, batch outcomes, retries, dead letters."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from moto import mock_aws

from emulator.model import MappingModel
from emulator.streams import StreamPoller, first_failure, lambda_record
from emulator.workers import InvokeResult

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/events/stream/2026-01-01T00:00:00.000"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:broadcaster"
SUCCESS = InvokeResult(ok=True, payload=None)
FUNCTION_ERROR = InvokeResult(ok=False, error_type="RuntimeError", error_message="boom")


def mapping(**changes: Any) -> MappingModel:
    base = MappingModel(
        logical="source-events",
        function="broadcaster",
        table="events",
        batch_size=100,
        batching_window=0.0,
        bisect_on_error=False,
        maximum_retry_attempts=-1,
        maximum_record_age=-1,
        starting_position="LATEST",
        filters=[],
        report_item_failures=True,
        on_failure_queue="dead-letters",
        enabled=True,
    )
    return dataclasses.replace(base, **changes)


def record(index: int, created: float | None = None) -> dict[str, Any]:
    """A Lambda-shaped stream record; sequence numbers grow with ``index``."""
    return {
        "eventID": f"event-{index}",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": time.time() if created is None else created,
            "Keys": {"PK": {"S": f"item-{index}"}},
            "NewImage": {"PK": {"S": f"item-{index}"}},
            "SequenceNumber": f"{1000 + index:021d}",
            "SizeBytes": 20,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventSourceARN": STREAM_ARN,
    }


def key(rec: dict[str, Any]) -> str:
    return str(rec["dynamodb"]["Keys"]["PK"]["S"])


def sequence(rec: dict[str, Any]) -> str:
    return str(rec["dynamodb"]["SequenceNumber"])


def failures(*records: dict[str, Any]) -> InvokeResult:
    return InvokeResult(
        ok=True, payload={"batchItemFailures": [{"itemIdentifier": sequence(r)} for r in records]}
    )


class ScriptedInvoke:
    """An async ``invoke``: records each batch and answers with ``answer(batch, call_number)``."""

    def __init__(self, answer: Callable[[list[dict[str, Any]], int], InvokeResult]) -> None:
        self.answer = answer
        self.batches: list[list[dict[str, Any]]] = []
        self.functions: list[str] = []

    async def __call__(self, function: str, event: Any) -> InvokeResult:
        batch = list(event["Records"])
        self.functions.append(function)
        self.batches.append(batch)
        return self.answer(batch, len(self.batches))

    def delivered(self) -> list[dict[str, Any]]:
        return [r for batch in self.batches for r in batch]

    def keys(self) -> list[list[str]]:
        return [[key(r) for r in batch] for batch in self.batches]


class NoAws:
    """An ``aws`` that must not be used."""

    def client(self, name: str) -> Any:
        raise AssertionError(f"unexpected client({name!r})")


def poller_for(
    invoke: ScriptedInvoke, log: list[str] | None = None, aws: Any = None, **changes: Any
) -> tuple[StreamPoller, list[tuple[str, dict[str, Any]]]]:
    """A poller whose on-failure messages are captured instead of sent."""
    lines = [] if log is None else log
    poller = StreamPoller(
        mapping(**changes),
        aws=aws or NoAws(),
        invoke=invoke,
        function_arn=FUNCTION_ARN,
        log=lines.append,
        retry_delay=0,
    )
    poller.stream_arn = STREAM_ARN
    sent: list[tuple[str, dict[str, Any]]] = []
    poller._send = lambda queue, body: sent.append((queue, json.loads(body)))  # type: ignore[method-assign]
    return poller, sent


def deliver(poller: StreamPoller, records: list[dict[str, Any]]) -> None:
    asyncio.run(poller._deliver("shard-1", records))


# --- lambda_record -----------------------------------------------------------------------


def boto3_record() -> dict[str, Any]:
    return {
        "eventID": "e1",
        "eventName": "MODIFY",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(
                2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))
            ),
            "Keys": {"PK": {"B": b"\x00\x01key"}},
            "NewImage": {
                "PK": {"B": b"\x00\x01key"},
                "blobs": {"BS": [b"a", b"\xff"]},
                "nested": {
                    "M": {
                        "inner": {"B": b"in"},
                        "list": {"L": [{"B": b"x"}, {"S": "text"}, {"N": "1"}]},
                    }
                },
            },
            "OldImage": {"PK": {"B": b"\x00\x01key"}, "flag": {"BOOL": True}},
            "SequenceNumber": "300",
            "SizeBytes": 40,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_lambda_record_turns_the_creation_datetime_into_epoch_seconds() -> None:
    converted = lambda_record(boto3_record(), STREAM_ARN)
    created = converted["dynamodb"]["ApproximateCreationDateTime"]
    assert isinstance(created, (int, float)) and not isinstance(created, bool)
    assert created == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


def test_lambda_record_encodes_binary_keys_and_images_as_base64_text() -> None:
    dynamodb = lambda_record(boto3_record(), STREAM_ARN)["dynamodb"]
    assert dynamodb["Keys"] == {"PK": {"B": b64(b"\x00\x01key")}}
    assert dynamodb["NewImage"]["blobs"] == {"BS": [b64(b"a"), b64(b"\xff")]}
    assert dynamodb["OldImage"] == {"PK": {"B": b64(b"\x00\x01key")}, "flag": {"BOOL": True}}


def test_lambda_record_encodes_binary_inside_nested_maps_and_lists() -> None:
    nested = lambda_record(boto3_record(), STREAM_ARN)["dynamodb"]["NewImage"]["nested"]
    assert nested == {
        "M": {
            "inner": {"B": b64(b"in")},
            "list": {"L": [{"B": b64(b"x")}, {"S": "text"}, {"N": "1"}]},
        }
    }


def test_lambda_record_is_json_serialisable_with_the_event_fields_lambda_sets() -> None:
    raw = boto3_record()
    raw.pop("awsRegion")
    converted = json.loads(json.dumps(lambda_record(raw, STREAM_ARN)))
    assert converted["eventSourceARN"] == STREAM_ARN
    assert converted["eventVersion"] == "1.1"
    assert converted["eventSource"] == "aws:dynamodb"
    assert converted["eventID"] == "e1"
    assert converted["eventName"] == "MODIFY"
    assert converted["awsRegion"] == "us-east-1"
    assert converted["dynamodb"]["SequenceNumber"] == "300"
    assert converted["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"


def test_lambda_record_leaves_the_boto3_record_unchanged() -> None:
    raw = boto3_record()
    lambda_record(raw, STREAM_ARN)
    assert raw == boto3_record()


# --- first_failure -----------------------------------------------------------------------


BATCH = [record(i) for i in range(4)]


@pytest.mark.parametrize(
    "payload", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}, "done"]
)
def test_first_failure_is_none_when_the_function_reports_no_failures(payload: Any) -> None:
    assert first_failure(InvokeResult(ok=True, payload=payload), BATCH) is None


def test_first_failure_is_the_index_of_the_smallest_failed_sequence_number() -> None:
    assert first_failure(failures(BATCH[3], BATCH[1], BATCH[2]), BATCH) == 1


@pytest.mark.parametrize(
    "item",
    [{"itemIdentifier": "999999"}, {"itemIdentifier": ""}, {"itemIdentifier": None}, {}, "x"],
)
def test_first_failure_fails_the_whole_batch_for_an_unreadable_item(item: Any) -> None:
    payload = {"batchItemFailures": [{"itemIdentifier": sequence(BATCH[2])}, item]}
    assert first_failure(InvokeResult(ok=True, payload=payload), BATCH) == 0


def test_first_failure_fails_the_whole_batch_on_a_function_error() -> None:
    assert first_failure(FUNCTION_ERROR, BATCH) == 0


# --- _deliver ------------------------------------------------------------------------------


def test_successful_batch_is_invoked_once_with_every_record() -> None:
    invoke = ScriptedInvoke(lambda batch, n: SUCCESS)
    poller, sent = poller_for(invoke)
    records = [record(i) for i in range(3)]
    deliver(poller, records)
    assert invoke.batches == [records]
    assert invoke.functions == ["broadcaster"]
    assert poller.invocations == 1
    assert sent == []


def test_partial_failure_retries_from_the_first_failed_record_only() -> None:
    records = [record(i) for i in range(5)]
    invoke = ScriptedInvoke(
        lambda batch, n: failures(records[2], records[4]) if n == 1 else SUCCESS
    )
    poller, sent = poller_for(invoke)
    deliver(poller, records)
    assert invoke.batches == [records, records[2:]]
    assert sent == []


def test_function_error_with_bisect_retries_the_halves_in_order() -> None:
    records = [record(i) for i in range(4)]
    invoke = ScriptedInvoke(lambda batch, n: FUNCTION_ERROR if n == 1 else SUCCESS)
    poller, _ = poller_for(invoke, bisect_on_error=True)
    deliver(poller, records)
    assert invoke.batches == [records, records[:2], records[2:]]


def test_function_error_without_bisect_retries_the_whole_batch() -> None:
    records = [record(i) for i in range(4)]
    invoke = ScriptedInvoke(lambda batch, n: FUNCTION_ERROR if n == 1 else SUCCESS)
    poller, _ = poller_for(invoke)
    deliver(poller, records)
    assert invoke.batches == [records, records]


def test_poison_record_is_dead_lettered_alone_after_the_retries_and_the_rest_flow() -> None:
    records = [record(i) for i in range(4)]
    poison = records[1]
    invoke = ScriptedInvoke(lambda batch, n: FUNCTION_ERROR if poison in batch else SUCCESS)
    poller, sent = poller_for(invoke, bisect_on_error=True, maximum_retry_attempts=2)
    deliver(poller, records)
    assert invoke.batches.count([poison]) == 3  # the first try and two retries
    assert len(sent) == 1
    info = sent[0][1]["DDBStreamBatchInfo"]
    assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (sequence(poison),) * 2
    assert info["batchSize"] == 1
    assert sent[0][1]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert sent[0][1]["requestContext"]["approximateInvokeCount"] == 3
    assert invoke.batches[-1] == records[2:]  # after the poison record: invoked, succeeded
    succeeded = {sequence(r) for batch in invoke.batches if poison not in batch for r in batch}
    assert succeeded == {sequence(r) for r in records if r is not poison}
    assert poller.dead_lettered == 1


def test_exhausted_partial_failure_dead_letters_from_the_checkpoint() -> None:
    records = [record(i) for i in range(4)]
    invoke = ScriptedInvoke(lambda batch, n: failures(records[2]))
    poller, sent = poller_for(invoke, maximum_retry_attempts=1)
    deliver(poller, records)
    assert invoke.batches == [records, records[2:]]
    (queue, body) = sent[0]
    assert queue == "dead-letters"
    info = body["DDBStreamBatchInfo"]
    assert info["startSequenceNumber"] == sequence(records[2])
    assert info["endSequenceNumber"] == sequence(records[3])
    assert info["batchSize"] == 2


def test_unlimited_retries_deliver_a_record_that_fails_twice_then_succeeds() -> None:
    records = [record(0)]
    invoke = ScriptedInvoke(lambda batch, n: FUNCTION_ERROR if n <= 2 else SUCCESS)
    poller, sent = poller_for(invoke, maximum_retry_attempts=-1)
    deliver(poller, records)
    assert invoke.batches == [records] * 3
    assert sent == []
    assert poller.dead_lettered == 0


def test_record_older_than_the_maximum_age_is_dead_lettered_without_invoking() -> None:
    old = record(0, created=time.time() - 120)
    invoke = ScriptedInvoke(lambda batch, n: SUCCESS)
    poller, sent = poller_for(invoke, maximum_record_age=60)
    deliver(poller, [old])
    assert invoke.batches == []
    assert len(sent) == 1
    assert sent[0][1]["requestContext"]["condition"] == "RecordAgeExceeded"
    assert sent[0][1]["requestContext"]["approximateInvokeCount"] == 0


def test_only_the_expired_records_of_a_batch_are_dead_lettered() -> None:
    old = record(0, created=time.time() - 120)
    fresh = record(1)
    invoke = ScriptedInvoke(lambda batch, n: SUCCESS)
    poller, sent = poller_for(invoke, maximum_record_age=60)
    deliver(poller, [old, fresh])
    assert invoke.batches == [[fresh]]
    assert [body["DDBStreamBatchInfo"]["batchSize"] for _, body in sent] == [1]
    assert sent[0][1]["DDBStreamBatchInfo"]["startSequenceNumber"] == sequence(old)


def test_record_younger_than_the_maximum_age_is_invoked() -> None:
    invoke = ScriptedInvoke(lambda batch, n: SUCCESS)
    poller, sent = poller_for(invoke, maximum_record_age=60)
    deliver(poller, [record(0, created=time.time() - 10)])
    assert len(invoke.batches) == 1
    assert sent == []


def test_dead_letter_body_has_lambdas_on_failure_shape() -> None:
    records = [record(i, created=1767323045.25 + i) for i in range(3)]
    invoke = ScriptedInvoke(lambda batch, n: FUNCTION_ERROR)
    poller, sent = poller_for(invoke, maximum_retry_attempts=0)
    deliver(poller, records)
    assert len(sent) == 1
    queue, body = sent[0]
    assert queue == "dead-letters"
    context = body["requestContext"]
    assert context["condition"] == "RetryAttemptsExhausted"
    assert context["approximateInvokeCount"] == 1
    assert context["functionArn"] == FUNCTION_ARN
    assert isinstance(context["requestId"], str) and context["requestId"]
    assert body["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert body["version"] == "1.0"
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert body["DDBStreamBatchInfo"] == {
        "shardId": "shard-1",
        "startSequenceNumber": sequence(records[0]),
        "endSequenceNumber": sequence(records[2]),
        "approximateArrivalOfFirstRecord": "2026-01-02T03:04:05.250Z",
        "approximateArrivalOfLastRecord": "2026-01-02T03:04:07.250Z",
        "batchSize": 3,
        "streamArn": STREAM_ARN,
    }


def test_dead_letter_without_on_failure_queue_sends_nothing_and_goes_on() -> None:
    lines: list[str] = []
    records = [record(0), record(1)]
    invoke = ScriptedInvoke(lambda batch, n: FUNCTION_ERROR if n == 1 else SUCCESS)
    poller = StreamPoller(
        mapping(on_failure_queue=None, maximum_retry_attempts=0),
        aws=NoAws(),  # any SQS client use fails the test
        invoke=invoke,
        function_arn=FUNCTION_ARN,
        log=lines.append,
        retry_delay=0,
    )
    deliver(poller, records)
    deliver(poller, [record(2)])
    assert poller.dead_lettered == 2
    assert invoke.keys() == [["item-0", "item-1"], ["item-2"]]
    assert any("on-failure" in line and sequence(records[0]) in line for line in lines)


class RecordingSqs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def get_queue_url(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("get_queue_url", kwargs))
        return {"QueueUrl": f"http://sqs.local/123456789012/{kwargs['QueueName']}"}

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("send_message", kwargs))
        return {"MessageId": "m1"}


class SqsOnly:
    def __init__(self) -> None:
        self.sqs = RecordingSqs()

    def client(self, name: str) -> Any:
        assert name == "sqs"
        return self.sqs


def test_dead_letter_is_sent_to_the_declared_queue_by_name() -> None:
    aws = SqsOnly()
    invoke = ScriptedInvoke(lambda batch, n: FUNCTION_ERROR)
    poller = StreamPoller(
        mapping(maximum_retry_attempts=0),
        aws=aws,
        invoke=invoke,
        function_arn=FUNCTION_ARN,
        log=lambda line: None,
        retry_delay=0,
    )
    deliver(poller, [record(0)])
    (name, lookup), (verb, message) = aws.sqs.calls
    assert (name, lookup) == ("get_queue_url", {"QueueName": "dead-letters"})
    assert verb == "send_message"
    assert message["QueueUrl"] == "http://sqs.local/123456789012/dead-letters"
    assert json.loads(message["MessageBody"])["DDBStreamBatchInfo"]["batchSize"] == 1


def test_batch_item_failures_are_ignored_without_report_batch_item_failures() -> None:
    records = [record(i) for i in range(3)]
    invoke = ScriptedInvoke(lambda batch, n: failures(records[1]) if n == 1 else SUCCESS)
    poller, _ = poller_for(invoke, report_item_failures=False)
    deliver(poller, records)
    assert invoke.batches == [records]


# --- against a moto stream ----------------------------------------------------------------


class MotoAws:
    """Boto3 clients created inside ``mock_aws``, once per service."""

    def __init__(self) -> None:
        self.clients: dict[str, Any] = {}

    def client(self, name: str) -> Any:
        if name not in self.clients:
            self.clients[name] = boto3.client(name, region_name="us-east-1")
        return self.clients[name]


def create_table(aws: MotoAws) -> None:
    aws.client("dynamodb").create_table(
        TableName="events",
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )


def put(aws: MotoAws, key: str, **attributes: Any) -> None:
    item = {"PK": {"S": key}, **attributes}
    aws.client("dynamodb").put_item(TableName="events", Item=item)


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the poller"
        await asyncio.sleep(0.01)


def run_against_moto(
    scenario: Callable[[MotoAws, ScriptedInvoke], Any], **changes: Any
) -> tuple[StreamPoller, ScriptedInvoke]:
    invoke = ScriptedInvoke(lambda batch, n: SUCCESS)

    async def main(aws: MotoAws) -> StreamPoller:
        poller = StreamPoller(
            mapping(**changes),
            aws=aws,
            invoke=invoke,
            function_arn=FUNCTION_ARN,
            log=lambda line: None,
            poll_interval=0.01,
            retry_delay=0,
        )
        trim_horizon = poller.mapping.starting_position == "TRIM_HORIZON"
        if trim_horizon:  # the records exist before the poller opens the stream
            await scenario(aws, invoke)
        await poller.start()
        try:
            if trim_horizon:
                await wait_for(lambda: sum(len(b) for b in invoke.batches) >= 3)
            else:
                await scenario(aws, invoke)
        finally:
            await poller.stop()
        return poller

    with mock_aws():
        aws = MotoAws()
        create_table(aws)
        poller = asyncio.run(main(aws))
    return poller, invoke


def test_poller_delivers_new_items_in_order_in_lambdas_shape() -> None:
    async def scenario(aws: MotoAws, invoke: ScriptedInvoke) -> None:
        for key in ("a", "b", "c"):
            put(aws, key, data={"B": b"\x01\x02"})
        await wait_for(lambda: sum(len(b) for b in invoke.batches) >= 3)

    poller, invoke = run_against_moto(scenario)
    delivered = invoke.delivered()
    assert [key(r) for r in delivered] == ["a", "b", "c"]
    assert invoke.functions == ["broadcaster"] * len(invoke.batches)
    first = json.loads(json.dumps(delivered[0]))
    assert first["eventName"] == "INSERT"
    assert first["eventSource"] == "aws:dynamodb"
    assert first["eventSourceARN"] == poller.stream_arn
    assert poller.stream_arn.startswith("arn:aws:dynamodb:us-east-1:")
    assert first["dynamodb"]["NewImage"]["data"] == {"B": b64(b"\x01\x02")}
    assert isinstance(first["dynamodb"]["ApproximateCreationDateTime"], (int, float))
    sequences = [int(r["dynamodb"]["SequenceNumber"]) for r in delivered]
    assert sequences == sorted(sequences)


def test_poller_drops_records_the_filter_rejects() -> None:
    async def scenario(aws: MotoAws, invoke: ScriptedInvoke) -> None:
        put(aws, "a", n={"N": "1"})
        put(aws, "a", n={"N": "2"})  # MODIFY
        aws.client("dynamodb").delete_item(TableName="events", Key={"PK": {"S": "a"}})
        put(aws, "z")  # the last INSERT: once it arrives, everything before it was seen
        await wait_for(lambda: any(key(r) == "z" for r in invoke.delivered()))

    _, invoke = run_against_moto(scenario, filters=['{"eventName":["INSERT"]}'])
    delivered = [(r["eventName"], key(r)) for r in invoke.delivered()]
    assert delivered == [("INSERT", "a"), ("INSERT", "z")]


def test_poller_splits_records_into_batches_of_the_batch_size() -> None:
    async def scenario(aws: MotoAws, invoke: ScriptedInvoke) -> None:
        for key in ("a", "b", "c"):
            put(aws, key)

    _, invoke = run_against_moto(scenario, batch_size=2, starting_position="TRIM_HORIZON")
    assert invoke.keys() == [["a", "b"], ["c"]]


def test_a_failed_poll_is_logged_and_polling_goes_on() -> None:
    log: list[str] = []
    invoke = ScriptedInvoke(lambda batch, n: SUCCESS)
    poller, _ = poller_for(invoke, log=log)
    poller.poll_interval = 0.01
    poller._iterators = {"shard-1": "iterator"}
    reads = iter([RuntimeError("moto hiccup"), [record(0)]])

    def read(shard: str) -> list[dict[str, Any]]:
        answer = next(reads, [])
        if isinstance(answer, Exception):
            raise answer
        return answer

    poller._read = read  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.ensure_future(poller._run())
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert any("poll failed" in line and "moto hiccup" in line for line in log)
    assert [[r["eventID"] for r in batch] for batch in invoke.batches] == [["event-0"]]


def test_a_lasting_poll_failure_backs_off_logs_once_then_reminds_and_recovers() -> None:
    log: list[str] = []
    invoke = ScriptedInvoke(lambda batch, n: SUCCESS)
    poller, _ = poller_for(invoke, log=log)
    poller.poll_interval = 0.01
    poller.retry_delay = 0.01
    poller.max_retry_delay = 0.08
    poller.reminder_interval = 0.5
    poller._iterators = {"shard-1": "iterator"}
    failing_until = time.monotonic() + 1.2
    attempts: list[float] = []

    def read(shard: str) -> list[dict[str, Any]]:
        attempts.append(time.monotonic())
        if time.monotonic() < failing_until:
            raise RuntimeError("GetRecords: 500 <html>" + "x" * 5000)
        return [record(0)] if len(invoke.batches) == 0 else []

    poller._read = read  # type: ignore[method-assign]

    async def main() -> None:
        task = asyncio.ensure_future(poller._run())
        deadline = time.monotonic() + 5
        while not invoke.batches and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    failed = [at for at in attempts if at < failing_until]
    # without backoff: one attempt per 10 ms (~120); with it: 10, 20, 40, then every 80 ms
    assert 5 <= len(failed) <= 25
    failures = [line for line in log if "poll failed" in line]
    reminders = [line for line in log if "still failing" in line]
    assert len(failures) == 1
    assert 1 <= len(reminders) <= 3  # one per 0.5 s while it lasts
    assert all(len(line) < 500 for line in log)  # the 5 KB error is cut
    assert any("recovered" in line for line in log)
    assert [[r["eventID"] for r in batch] for batch in invoke.batches] == [["event-0"]]


@pytest.mark.parametrize(
    ("failures", "seconds"), [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, 5.0), (10_000, 5.0)]
)
def test_poll_backoff_doubles_up_to_the_maximum(failures: int, seconds: float) -> None:
    poller, _ = poller_for(ScriptedInvoke(lambda batch, n: SUCCESS))
    poller.retry_delay = 0.1

    assert poller.poll_backoff(failures) == pytest.approx(seconds)
