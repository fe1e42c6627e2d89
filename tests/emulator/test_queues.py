"""SQS queues in the emulator: the model of declared queues and queue mappings, provisioning,
moto's FIFO semantics (as patched in emulator.services), and the queue poller's Lambda
semantics, against the embedded moto server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pulumi
import pytest

from emulator.local import Emulator, EmulatorOptions, budget_share
from emulator.model import Model, ModelError, QueueMappingModel, QueueSpec, build
from emulator.program import ACCOUNT, REGION, Declared
from emulator.queues import QueuePoller, failed_items, sqs_record
from emulator.services import LocalAws, provision, queue_request
from emulator.workers import InvokeResult

SUCCESS = InvokeResult(ok=True, payload=None)
FUNCTION_ERROR = InvokeResult(ok=False, error_type="RuntimeError", error_message="boom")


@pytest.fixture(scope="module")
def aws() -> Iterator[LocalAws]:
    local = LocalAws().start()
    local.reset()
    try:
        yield local
    finally:
        local.stop()


def fifo_queue(
    aws: LocalAws, *, visibility: int = 1, max_receives: int | None = None
) -> tuple[str, str | None]:
    """A fresh FIFO queue (and its dead-letter queue with ``max_receives``): URLs."""
    sqs = aws.client("sqs")
    stem = f"q{uuid.uuid4().hex[:12]}"
    dead_letter_url = None
    attributes = {
        "FifoQueue": "true",
        "ContentBasedDeduplication": "false",
        "DeduplicationScope": "messageGroup",
        "FifoThroughputLimit": "perMessageGroupId",
        "VisibilityTimeout": str(visibility),
    }
    if max_receives is not None:
        dead_letter_url = sqs.create_queue(
            QueueName=f"{stem}-dlq.fifo", Attributes={"FifoQueue": "true"}
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dead_letter_url, AttributeNames=["QueueArn"])
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": arn["Attributes"]["QueueArn"],
                "maxReceiveCount": max_receives,
            }
        )
    url = sqs.create_queue(QueueName=f"{stem}.fifo", Attributes=attributes)["QueueUrl"]
    return url, dead_letter_url


def send(aws: LocalAws, url: str, group: str, count: int, start: int = 0) -> None:
    sqs = aws.client("sqs")
    for index in range(start, start + count):
        sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps({"group": group, "index": index}),
            MessageGroupId=group,
            MessageDeduplicationId=f"{group}-{index}",
        )


def receive(aws: LocalAws, url: str, count: int = 10, wait: int = 0) -> list[dict[str, Any]]:
    answer = aws.client("sqs").receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=count,
        WaitTimeSeconds=wait,
        MessageSystemAttributeNames=["All"],
        MessageAttributeNames=["All"],
    )
    return list(answer.get("Messages") or [])


def bodies(messages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(json.loads(m["Body"])["group"], json.loads(m["Body"])["index"]) for m in messages]


def delete(aws: LocalAws, url: str, messages: list[dict[str, Any]]) -> None:
    for message in messages:
        aws.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def in_flight(aws: LocalAws, url: str) -> int:
    attributes = aws.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesNotVisible"])


# --- moto's FIFO queues, as the emulator patches them -----------------------------------------


def test_a_send_batch_builds_the_queues_attributes_once_whatever_the_backlog(
    aws: LocalAws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto rebuilt them (three counts over every message) four times per message sent."""
    from moto.sqs import models

    url, _ = fifo_queue(aws)
    send(aws, url, "backlog", 40)
    builds: list[int] = []
    counted = models.Queue.approximate_number_of_messages_delayed.fget  # type: ignore[attr-defined]

    def counting(queue: Any) -> int:
        builds.append(1)
        return int(counted(queue))

    monkeypatch.setattr(models.Queue, "approximate_number_of_messages_delayed", property(counting))
    time.sleep(0.06)  # past ATTRIBUTES_FRESH_SECONDS since the sends above
    aws.client("sqs").send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": f"e{n}", "MessageBody": "x", "MessageGroupId": f"g{n}",
             "MessageDeduplicationId": f"batch-{n}"}
            for n in range(10)
        ],
    )  # fmt: skip
    assert len(builds) == 1  # moto: 40, four per message
    time.sleep(0.06)  # past ATTRIBUTES_FRESH_SECONDS: the counts are read again, and right
    attributes = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "50"
    assert len(builds) == 2


def test_changed_settings_are_seen_at_once(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws)
    sqs = aws.client("sqs")
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])[
        "Attributes"
    ] == {"VisibilityTimeout": "1"}
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "7"})
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])[
        "Attributes"
    ] == {"VisibilityTimeout": "7"}


def test_fifo_hands_out_a_group_in_send_order_also_when_it_comes_back(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws)
    send(aws, url, "A", 5)
    first = receive(aws, url)
    assert bodies(first) == [("A", i) for i in range(5)]
    time.sleep(1.1)  # not deleted: all five come back, in order
    again = receive(aws, url)
    assert bodies(again) == [("A", i) for i in range(5)]
    assert {m["Attributes"]["ApproximateReceiveCount"] for m in again} == {"2"}


def test_fifo_group_with_a_message_in_flight_gives_nothing_but_other_groups_do(
    aws: LocalAws,
) -> None:
    url, _ = fifo_queue(aws, visibility=30)
    send(aws, url, "A", 3)
    send(aws, url, "B", 2)
    (a0,) = receive(aws, url, count=1)
    assert bodies([a0]) == [("A", 0)]
    assert bodies(receive(aws, url)) == [("B", 0), ("B", 1)]  # not A1: A is locked
    assert receive(aws, url) == []
    delete(aws, url, [a0])
    assert bodies(receive(aws, url)) == [("A", 1), ("A", 2)]


def test_fifo_fills_a_batch_from_one_group_before_the_next(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws)
    sqs = aws.client("sqs")
    for index in range(3):
        for group in ("A", "B"):
            sqs.send_message(
                QueueUrl=url,
                MessageBody=json.dumps({"group": group, "index": index}),
                MessageGroupId=group,
                MessageDeduplicationId=f"{group}-{index}",
            )
    assert bodies(receive(aws, url, count=4)) == [("A", 0), ("A", 1), ("A", 2), ("B", 0)]


def test_fifo_concurrent_receives_never_share_a_group(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws, visibility=30)
    send(aws, url, "A", 20)
    got: list[list[dict[str, Any]]] = []
    start = threading.Barrier(8)

    def one() -> None:
        start.wait()
        got.append(receive(aws, url, count=1))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(len(messages) for messages in got) == [0] * 7 + [1]


def test_fifo_deduplicates_for_five_minutes_after_delete_per_group(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws)
    sqs = aws.client("sqs")
    first = sqs.send_message(
        QueueUrl=url, MessageBody="one", MessageGroupId="A", MessageDeduplicationId="d"
    )
    delete(aws, url, receive(aws, url))
    again = sqs.send_message(
        QueueUrl=url, MessageBody="two", MessageGroupId="A", MessageDeduplicationId="d"
    )
    assert again["MessageId"] == first["MessageId"]
    other_group = sqs.send_message(
        QueueUrl=url, MessageBody="three", MessageGroupId="B", MessageDeduplicationId="d"
    )
    assert other_group["MessageId"] != first["MessageId"]
    assert [m["Body"] for m in receive(aws, url)] == ["three"]


def test_fifo_messages_carry_the_system_attributes_and_growing_sequence_numbers(
    aws: LocalAws,
) -> None:
    url, _ = fifo_queue(aws)
    send(aws, url, "A", 3)
    messages = receive(aws, url)
    for message in messages:
        assert set(message["Attributes"]) >= {
            "ApproximateReceiveCount",
            "ApproximateFirstReceiveTimestamp",
            "MessageGroupId",
            "MessageDeduplicationId",
            "SenderId",
            "SentTimestamp",
            "SequenceNumber",
        }
        assert message["Attributes"]["MessageGroupId"] == "A"
    numbers = [int(m["Attributes"]["SequenceNumber"]) for m in messages]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3


def test_fifo_redrives_after_max_receive_count_with_body_and_attributes(aws: LocalAws) -> None:
    url, dead_letter_url = fifo_queue(aws, max_receives=2)
    assert dead_letter_url is not None
    aws.client("sqs").send_message(
        QueueUrl=url,
        MessageBody='{"job": 1}',
        MessageGroupId="A",
        MessageDeduplicationId="job-1",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "delivery"}},
    )
    for _ in range(2):
        assert len(receive(aws, url)) == 1
        time.sleep(1.1)
    assert receive(aws, url) == []  # the third receive moves it
    (dead,) = receive(aws, dead_letter_url)
    assert dead["Body"] == '{"job": 1}'
    assert dead["Attributes"]["MessageGroupId"] == "A"
    assert dead["Attributes"]["MessageDeduplicationId"] == "job-1"
    assert dead["MessageAttributes"]["kind"]["StringValue"] == "delivery"


def test_a_long_poll_wakes_when_a_message_is_sent(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws)
    timer = threading.Timer(0.2, send, (aws, url, "A", 1))
    timer.start()
    started = time.monotonic()
    assert len(receive(aws, url, wait=5)) == 1
    assert time.monotonic() - started < 1.5
    timer.join()


# --- the model ---------------------------------------------------------------------------------


def queue_declared(logical: str, name: str, **inputs: Any) -> Declared:
    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
    return Declared(
        "aws:sqs/queue:Queue",
        logical,
        {"name": name, **inputs},
        {"name": name, "arn": arn, "url": f"https://sqs/{name}"},
        name,
    )


def base_program() -> list[Declared]:
    code = pulumi.AssetArchive({"handlers/sender.py": pulumi.FileAsset(__file__)})
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sender-1"
    return [
        Declared("aws:apigatewayv2/api:Api", "api", {"protocolType": "WEBSOCKET"}, {}, "api1"),
        Declared("aws:apigatewayv2/stage:Stage", "stage", {"name": "dev"}, {}, "dev"),
        Declared(
            "aws:lambda/function:Function",
            "sender",
            {"handler": "handlers.sender.handler", "code": code, "timeout": 30},
            {"name": "sender-1", "arn": function_arn, "invokeArn": f"{function_arn}/invoke"},
            "sender-1",
        ),
    ]


def fifo_inputs(**changes: Any) -> dict[str, Any]:
    return {
        "fifoQueue": True,
        "contentBasedDeduplication": False,
        "deduplicationScope": "messageGroup",
        "fifoThroughputLimit": "perMessageGroupId",
        "visibilityTimeoutSeconds": 180,
        "messageRetentionSeconds": 86400,
        **changes,
    }


def jobs_program(**mapping_inputs: Any) -> list[Declared]:
    dlq_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:jobs-dlq.fifo"
    policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
    return [
        *base_program(),
        # the queue first: the model must still create the dead-letter queue before it
        queue_declared("jobs", "jobs.fifo", **fifo_inputs(redrivePolicy=policy)),
        queue_declared("jobs-dlq", "jobs-dlq.fifo", **fifo_inputs(visibilityTimeoutSeconds=30)),
        Declared(
            "aws:lambda/eventSourceMapping:EventSourceMapping",
            "sender-jobs",
            {
                "functionName": "sender-1",
                "eventSourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:jobs.fifo",
                "batchSize": 10,
                "functionResponseTypes": ["ReportBatchItemFailures"],
                "scalingConfig": {"maximumConcurrency": 8},
                **mapping_inputs,
            },
            {},
            "esm-1",
        ),
    ]


def test_build_reads_fifo_queues_with_their_redrive_policy_dead_letter_queue_first() -> None:
    model = build(jobs_program())
    assert list(model.queue_specs) == ["jobs-dlq.fifo", "jobs.fifo"]
    jobs = model.queue_specs["jobs.fifo"]
    assert jobs == QueueSpec(
        logical="jobs",
        name="jobs.fifo",
        arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:jobs.fifo",
        fifo=True,
        visibility_timeout=180,
        retention=86400,
        content_based_deduplication=False,
        deduplication_scope="messageGroup",
        throughput_limit="perMessageGroupId",
        dead_letter_queue="jobs-dlq.fifo",
        max_receive_count=5,
    )
    assert model.queue_specs["jobs-dlq.fifo"].dead_letter_queue is None


def test_build_makes_an_sqs_mapping_a_queue_mapping_not_a_stream_mapping() -> None:
    model = build(jobs_program())
    assert model.mappings == []
    assert model.queue_mappings == [
        QueueMappingModel(
            logical="sender-jobs",
            function="sender-1",
            queue="jobs.fifo",
            batch_size=10,
            report_item_failures=True,
            maximum_concurrency=8,
            enabled=True,
        )
    ]
    disabled = build(jobs_program(enabled=False, functionResponseTypes=[]))
    assert not disabled.queue_mappings[0].enabled
    assert not disabled.queue_mappings[0].report_item_failures


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eventSourceArn": "arn:aws:kinesis:us-east-1:1:stream/x"}, "arn:aws:kinesis"),
        ({"eventSourceArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:other"}, "no declared queue"),
        ({"batchSize": 11}, "batch size is 1 to 10"),
        ({"scalingConfig": {"maximumConcurrency": 1}}, "maximumConcurrency is 2 to 1000"),
    ],
)
def test_build_refuses_a_queue_mapping_it_cannot_run(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        build(jobs_program(**changes))


def test_build_refuses_a_redrive_policy_to_an_undeclared_queue() -> None:
    program = [r for r in jobs_program() if r.name != "jobs-dlq"]
    with pytest.raises(ModelError, match=r"dead-letter target .* is no declared queue"):
        build(program)


def test_provision_creates_the_fifo_queue_with_its_redrive_policy(aws: LocalAws) -> None:
    model = build(jobs_program())
    model.queue_specs = {
        name: dataclasses.replace(spec, name=spec.name.replace("jobs", "prov"))
        for name, spec in model.queue_specs.items()
    }
    model.queue_specs["jobs.fifo"] = dataclasses.replace(
        model.queue_specs["jobs.fifo"], dead_letter_queue="prov-dlq.fifo"
    )
    model.queue_specs = {spec.name: spec for spec in model.queue_specs.values()}
    model.queues = {}
    provision(aws, Model(queue_specs=model.queue_specs))
    sqs = aws.client("sqs")
    url = sqs.get_queue_url(QueueName="prov.fifo")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["FifoQueue"] == "true"
    assert attributes["VisibilityTimeout"] == "180"
    assert attributes["MessageRetentionPeriod"] == "86400"
    assert attributes["DeduplicationScope"] == "messageGroup"
    assert attributes["FifoThroughputLimit"] == "perMessageGroupId"
    policy = json.loads(attributes["RedrivePolicy"])
    assert policy == {
        "deadLetterTargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:prov-dlq.fifo",
        "maxReceiveCount": 5,
    }


def test_queue_request_of_a_standard_queue_has_no_fifo_attributes() -> None:
    spec = QueueSpec(logical="q", name="plain", arn="arn:aws:sqs:r:a:plain")
    assert queue_request(spec) == {
        "QueueName": "plain",
        "Attributes": {"VisibilityTimeout": "30", "MessageRetentionPeriod": "345600"},
    }


def test_a_queue_mapped_function_gets_min_of_concurrency_and_sender_workers() -> None:
    emulator = Emulator(EmulatorOptions(max_workers=4, sender_workers=6, write_state=False))
    emulator.model = build(jobs_program())
    assert emulator.pool_sizes() == {"sender-1": 6}
    emulator.options.sender_workers = 32
    assert emulator.pool_sizes() == {"sender-1": 8}  # maximumConcurrency
    emulator.model = build(jobs_program(enabled=False))
    assert emulator.pool_sizes() == {"sender-1": 4}


def test_cli_takes_sender_workers() -> None:
    from emulator.__main__ import parser

    assert parser().parse_args(["--sender-workers", "12"]).sender_workers == 12
    assert parser().parse_args([]).sender_workers is None
    with pytest.raises(SystemExit):
        parser().parse_args(["--sender-workers", "0"])


# --- the poller's pure parts -----------------------------------------------------------------


def batch_of(*ids: str) -> list[dict[str, Any]]:
    return [{"messageId": i} for i in ids]


@pytest.mark.parametrize(
    ("result", "report", "failed"),
    [
        (SUCCESS, True, set()),
        (FUNCTION_ERROR, True, {"a", "b", "c"}),
        (FUNCTION_ERROR, False, {"a", "b", "c"}),
        (InvokeResult(ok=True, payload={"batchItemFailures": []}), True, set()),
        (InvokeResult(ok=True, payload={"batchItemFailures": None}), True, set()),
        (
            InvokeResult(ok=True, payload={"batchItemFailures": [{"itemIdentifier": "b"}]}),
            True,
            {"b"},
        ),
        (
            InvokeResult(ok=True, payload={"batchItemFailures": [{"itemIdentifier": "b"}]}),
            False,
            set(),
        ),
        (
            InvokeResult(ok=True, payload={"batchItemFailures": [{"itemIdentifier": "zz"}]}),
            True,
            {"a", "b", "c"},
        ),
        (
            InvokeResult(ok=True, payload={"batchItemFailures": [{"itemIdentifier": ""}]}),
            True,
            {"a", "b", "c"},
        ),
        (InvokeResult(ok=True, payload={"batchItemFailures": [{}]}), True, {"a", "b", "c"}),
        (InvokeResult(ok=True, payload={"batchItemFailures": ["a"]}), True, {"a", "b", "c"}),
        (InvokeResult(ok=True, payload={"batchItemFailures": "a"}), True, {"a", "b", "c"}),
    ],
)
def test_failed_items_follow_lambdas_partial_batch_rules(
    result: InvokeResult, report: bool, failed: set[str]
) -> None:
    assert failed_items(result, batch_of("a", "b", "c"), report) == failed


def test_sqs_record_has_lambdas_shape() -> None:
    message = {
        "MessageId": "m1",
        "ReceiptHandle": "r1",
        "Body": "{}",
        "MD5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
        "Attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "A", "Other": "x"},
        "MessageAttributes": {"kind": {"DataType": "String", "StringValue": "job"}},
        "MD5OfMessageAttributes": "abc",
    }
    record = sqs_record(message, "arn:aws:sqs:us-east-1:1:q.fifo")
    assert record == {
        "messageId": "m1",
        "receiptHandle": "r1",
        "body": "{}",
        "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "A"},
        "messageAttributes": {
            "kind": {
                "stringValue": "job",
                "binaryValue": None,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            }
        },
        "md5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
        "md5OfMessageAttributes": "abc",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:1:q.fifo",
        "awsRegion": REGION,
    }


# --- the poller on moto ----------------------------------------------------------------------

Answer = Callable[[list[dict[str, Any]]], Awaitable[InvokeResult]]


class Recorder:
    """An async ``invoke``: records each batch, counts concurrency, answers with ``answer``."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer = answer
        self.batches: list[list[dict[str, Any]]] = []
        self.running = 0
        self.most_running = 0
        self.active_groups: set[str] = set()
        self.shared_group = False

    async def __call__(self, function: str, event: Any) -> InvokeResult:
        batch = list(event["Records"])
        self.batches.append(batch)
        groups = {r["attributes"]["MessageGroupId"] for r in batch}
        self.shared_group = self.shared_group or bool(groups & self.active_groups)
        self.active_groups |= groups
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            return await self.answer(batch) if self.answer else SUCCESS
        finally:
            self.running -= 1
            self.active_groups -= groups

    def seen(self) -> list[tuple[str, int]]:
        return [pair for batch in self.batches for pair in record_bodies(batch)]


def record_bodies(batch: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(json.loads(r["body"])["group"], json.loads(r["body"])["index"]) for r in batch]


def mapping_for(url: str, **changes: Any) -> QueueMappingModel:
    base = QueueMappingModel(
        logical="sender-jobs",
        function="sender",
        queue=url.rsplit("/", 1)[1],
        batch_size=10,
        report_item_failures=True,
        maximum_concurrency=4,
        enabled=True,
    )
    return dataclasses.replace(base, **changes)


def run_poller(
    aws: LocalAws,
    mapping: QueueMappingModel,
    invoke: Recorder,
    until: Callable[[QueuePoller], bool],
    timeout: float = 8,
    during: Callable[[], Awaitable[None]] | None = None,
) -> tuple[QueuePoller, list[str]]:
    lines: list[str] = []

    async def main() -> QueuePoller:
        poller = QueuePoller(mapping, aws=aws, invoke=invoke, log=lines.append)
        await poller.start()
        try:
            if during is not None:
                await during()
            deadline = time.monotonic() + timeout
            while not until(poller):
                assert time.monotonic() < deadline, f"timed out; log: {lines}"
                await asyncio.sleep(0.02)
        finally:
            await poller.stop()
        return poller

    return asyncio.run(main()), lines


def test_poller_respects_the_batch_size(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws)
    send(aws, url, "A", 10)
    recorder = Recorder()
    poller, _ = run_poller(aws, mapping_for(url, batch_size=3), recorder, lambda p: p.deleted == 10)
    assert [len(b) for b in recorder.batches] == [3, 3, 3, 1]
    assert recorder.seen() == [("A", i) for i in range(10)]
    assert poller.invocations == 4 and poller.received == 10


def test_poller_keeps_each_groups_order_with_concurrent_invocations(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws, visibility=10)
    for group in "ABCDEF":
        send(aws, url, group, 15)

    async def slow(batch: list[dict[str, Any]]) -> InvokeResult:
        await asyncio.sleep(0.01 * len(batch))
        return SUCCESS

    recorder = Recorder(slow)
    mapping = mapping_for(url, batch_size=4, maximum_concurrency=4)
    run_poller(aws, mapping, recorder, lambda p: p.deleted == 90)
    per_group: dict[str, list[int]] = defaultdict(list)
    for group, index in recorder.seen():
        per_group[group].append(index)
    assert per_group == {group: list(range(15)) for group in "ABCDEF"}
    assert not recorder.shared_group  # a group was never in two invocations at once
    assert recorder.most_running > 1


def test_a_blocked_group_does_not_block_another(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws, visibility=10)
    send(aws, url, "A", 2)
    send(aws, url, "B", 3)
    release = asyncio.Event()

    async def answer(batch: list[dict[str, Any]]) -> InvokeResult:
        if record_bodies(batch)[0][0] == "A":
            await release.wait()
        return SUCCESS

    recorder = Recorder(answer)
    done_b: list[bool] = []

    def until(poller: QueuePoller) -> bool:
        b_done = sum(g == "B" for g, _ in recorder.seen()) == 3 and poller.deleted >= 3
        if b_done and not release.is_set():
            done_b.append(True)  # B finished while A's invocation was still blocked
            release.set()
        return poller.deleted == 5

    # batches of 2: A0 A1 in one (blocked), B in others
    run_poller(aws, mapping_for(url, batch_size=2, maximum_concurrency=2), recorder, until)
    assert done_b == [True]
    # the two receivers race: A's batch need not be the first one recorded
    (a_batch,) = [b for b in recorder.batches if record_bodies(b)[0][0] == "A"]
    assert record_bodies(a_batch) == [("A", 0), ("A", 1)]


def test_partial_failure_leaves_the_listed_messages_which_come_back_after_the_timeout(
    aws: LocalAws,
) -> None:
    url, _ = fifo_queue(aws, visibility=1)
    send(aws, url, "A", 4)
    send(aws, url, "B", 1)
    calls: list[float] = []

    async def answer(batch: list[dict[str, Any]]) -> InvokeResult:
        calls.append(time.monotonic())
        if len(calls) > 1:
            return SUCCESS
        later = [r["messageId"] for r in batch if record_bodies([r])[0] in (("A", 2), ("A", 3))]
        return InvokeResult(
            ok=True, payload={"batchItemFailures": [{"itemIdentifier": i} for i in later]}
        )

    recorder = Recorder(answer)
    mapping = mapping_for(url, maximum_concurrency=2)
    poller, _ = run_poller(aws, mapping, recorder, lambda p: p.deleted == 5)
    first, *rest = recorder.batches
    assert record_bodies(first) == [("A", 0), ("A", 1), ("A", 2), ("A", 3), ("B", 0)]
    again = [r for batch in rest for r in batch]
    assert record_bodies(again) == [("A", 2), ("A", 3)]
    assert {r["attributes"]["ApproximateReceiveCount"] for r in again} == {"2"}
    assert calls[-1] - calls[0] >= 0.9  # after the visibility timeout, not at once
    assert poller.failed_items == 2 and poller.failed_batches == 0


@pytest.mark.parametrize(
    "failure",
    [
        InvokeResult(ok=True, payload={"batchItemFailures": [{"itemIdentifier": "nope"}]}),
        InvokeResult(ok=True, payload={"batchItemFailures": [{"itemIdentifier": ""}]}),
        FUNCTION_ERROR,
        InvokeResult(ok=False, error_type="Sandbox.Timedout", error_message="timed out"),
    ],
    ids=["unknown-id", "empty-id", "function-error", "timeout"],
)
def test_an_invalid_answer_or_error_brings_the_whole_batch_back(
    aws: LocalAws, failure: InvokeResult
) -> None:
    url, _ = fifo_queue(aws, visibility=1)
    send(aws, url, "A", 3)

    async def answer(batch: list[dict[str, Any]]) -> InvokeResult:
        return failure if len(recorder.batches) == 1 else SUCCESS

    recorder = Recorder(answer)
    poller, lines = run_poller(aws, mapping_for(url), recorder, lambda p: p.deleted == 3)
    first, second = recorder.batches
    assert record_bodies(second) == record_bodies(first) == [("A", 0), ("A", 1), ("A", 2)]
    assert {r["attributes"]["ApproximateReceiveCount"] for r in second} == {"2"}
    assert poller.failed_batches == 1
    assert len([line for line in lines if "failed" in line]) == 1


def test_without_report_batch_item_failures_the_answer_is_ignored(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws, visibility=1)
    send(aws, url, "A", 2)

    async def answer(batch: list[dict[str, Any]]) -> InvokeResult:
        return InvokeResult(
            ok=True, payload={"batchItemFailures": [{"itemIdentifier": batch[0]["messageId"]}]}
        )

    recorder = Recorder(answer)
    mapping = mapping_for(url, report_item_failures=False)
    poller, _ = run_poller(aws, mapping, recorder, lambda p: p.deleted == 2)
    assert poller.failed_items == 0
    assert len(recorder.batches) == 1 and in_flight(aws, url) == 0


def test_a_message_that_keeps_failing_ends_in_the_dead_letter_queue_intact(
    aws: LocalAws,
) -> None:
    url, dead_letter_url = fifo_queue(aws, visibility=1, max_receives=2)
    assert dead_letter_url is not None
    send(aws, url, "A", 1)
    send(aws, url, "B", 1)

    async def answer(batch: list[dict[str, Any]]) -> InvokeResult:
        failing = [r["messageId"] for r in batch if r["attributes"]["MessageGroupId"] == "A"]
        return InvokeResult(
            ok=True, payload={"batchItemFailures": [{"itemIdentifier": i} for i in failing]}
        )

    recorder = Recorder(answer)
    moved: list[dict[str, Any]] = []

    def until(poller: QueuePoller) -> bool:
        if not moved and poller.failed_items >= 2:
            moved.extend(receive(aws, dead_letter_url))
        return bool(moved)

    run_poller(aws, mapping_for(url), recorder, until)
    (dead,) = moved
    assert json.loads(dead["Body"]) == {"group": "A", "index": 0}
    assert dead["Attributes"]["MessageGroupId"] == "A"
    assert dead["Attributes"]["MessageDeduplicationId"] == "A-0"
    a_receives = [
        r for b in recorder.batches for r in b if r["attributes"]["MessageGroupId"] == "A"
    ]
    assert [r["attributes"]["ApproximateReceiveCount"] for r in a_receives] == ["1", "2"]


def test_poller_runs_at_most_maximum_concurrency_invocations(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws, visibility=10)
    for group in "ABCDEFGH":
        send(aws, url, group, 1)

    async def slow(batch: list[dict[str, Any]]) -> InvokeResult:
        await asyncio.sleep(0.2)
        return SUCCESS

    recorder = Recorder(slow)
    mapping = mapping_for(url, batch_size=1, maximum_concurrency=3)
    run_poller(aws, mapping, recorder, lambda p: p.deleted == 8)
    assert recorder.most_running == 3


def test_poller_concurrency_is_capped_by_the_pool_size(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws)
    poller = QueuePoller(mapping_for(url, maximum_concurrency=50), aws=aws, invoke=Recorder())
    assert QueuePoller(mapping_for(url), aws=aws, invoke=Recorder(), concurrency=2).limit == 2
    assert poller.limit == 50


def test_poller_logs_a_queue_it_cannot_read_once_and_recovers(aws: LocalAws) -> None:
    url, _ = fifo_queue(aws)
    send(aws, url, "A", 1)
    recorder = Recorder()
    lines: list[str] = []

    async def main() -> QueuePoller:
        poller = QueuePoller(
            mapping_for(url, maximum_concurrency=2), aws=aws, invoke=recorder, log=lines.append
        )
        poller.retry_delay = 0.01
        await poller.start()
        good = poller.queue_url
        poller.queue_url = good + "-missing"
        await asyncio.sleep(0.5)
        poller.queue_url = good
        deadline = time.monotonic() + 5
        while poller.deleted < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await poller.stop()
        return poller

    poller = asyncio.run(main())
    assert poller.deleted == 1
    failed = [line for line in lines if "receive failed" in line]
    assert 1 <= len(failed) <= poller.receivers  # one per receiver, not one per attempt
    assert any("recovered" in line for line in lines)


@pytest.mark.parametrize(
    ("rate", "concurrency", "workers", "share"),
    [
        ("500", 18, 4, 2250),  # the dev stack's 9,000/s on four processes
        ("500", 18, 6, 1500),
        ("500", 18, 18, None),  # as many processes as senders: each keeps its own rate
        ("500", 8, 32, None),
        ("3000", 100, 4, 10_000),  # never above what the sender accepts
        ("7", 3, 2, 10),  # rounded down: never above the budget
        (None, 18, 4, None),  # not the sender: left alone
        ("abc", 18, 4, None),
    ],
)
def test_budget_share_gives_fewer_processes_the_same_budget(
    rate: str | None, concurrency: int, workers: int, share: int | None
) -> None:
    environment = {} if rate is None else {"SENDER_RATE": rate}
    assert budget_share(environment, concurrency, workers) == share
