"""Queued fan-out: the broadcaster hands delivery jobs to the SQS FIFO queue (moto) above its
threshold, for good; senders post them in order per connection."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from bench.management_api import FakeManagementApi
from handlers import aws
from handlers import sender as sender_module
from handlers.broadcaster import FANOUT_STATE_KEY, Broadcaster
from handlers.config import FanoutConfig, sender_config
from handlers.cursors import cursor_key
from handlers.fastpost import FastManagementApi
from handlers.jobs import group_of, read_job, read_recipients
from handlers.management import ManagementApi, frozen_credentials
from handlers.sender import Sender
from tests.handlers.test_broadcaster import (
    SUBSCRIPTIONS,
    add_connection,
    client_on,
    settings,
    stream,
    subscribe,
)
from tests.helpers import SECRET, create_subscriptions_table

KEY = cursor_key(SECRET)
GROUPS = 4


@pytest.fixture
def tables(dynamodb: Any, connections_table: str) -> Any:
    create_subscriptions_table(dynamodb, SUBSCRIPTIONS)
    return dynamodb


@pytest.fixture
def queue(mocked_aws: None) -> str:
    sqs = aws.client("sqs")
    url: str = sqs.create_queue(
        QueueName="orders-fanout.fifo",
        Attributes={"FifoQueue": "true", "VisibilityTimeout": "30"},
    )["QueueUrl"]
    return url


def api_of(server: FakeManagementApi) -> ManagementApi:
    return ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )


def queued_broadcaster(
    server: FakeManagementApi,
    client: Any,
    queue_url: str,
    *,
    threshold: int = 3,
    slice: int = 500,
    sqs: Any = None,
) -> Broadcaster:
    fanout = FanoutConfig(
        queue_url=queue_url, channel="orders", threshold=threshold, groups=GROUPS, slice=slice
    )
    return Broadcaster(
        settings(server.endpoint, fanout=fanout),
        dynamodb=client,
        api=api_of(server),
        sleep=lambda _: None,
        cursor_key=KEY,
        sqs=sqs or aws.client("sqs"),
    )


def inline_broadcaster(server: FakeManagementApi, client: Any) -> Broadcaster:
    return Broadcaster(
        settings(server.endpoint),
        dynamodb=client,
        api=api_of(server),
        sleep=lambda _: None,
        cursor_key=KEY,
    )


def receive_all(queue_url: str) -> list[dict[str, Any]]:
    """Every job on the queue as Lambda hands them to a sender, in FIFO order per group."""
    sqs = aws.client("sqs")
    out: list[dict[str, Any]] = []
    for _ in range(200):
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", [])
        if not got:
            return out
        for message in got:
            out.append(
                {
                    "messageId": message["MessageId"],
                    "body": message["Body"],
                    "attributes": message["Attributes"],
                }
            )
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError("the queue never emptied")


def a_sender(server: FakeManagementApi, client: Any, **changes: Any) -> Sender:
    """A sender as the handler builds it: posting through ``handlers.fastpost``."""
    env = {
        "CONNECTIONS_TABLE": "connections-test",
        "SUBSCRIPTIONS_TABLE": SUBSCRIPTIONS,
        "MANAGEMENT_ENDPOINT": server.endpoint,
    }
    cfg = dataclasses.replace(sender_config(env), **changes)
    api = FastManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )
    return Sender(cfg, dynamodb=client, api=api, sleep=lambda _: None)


def clients(server: FakeManagementApi, client: Any, count: int) -> list[str]:
    ids = [f"Q{n:03d}x=" for n in range(count)]
    for n, cid in enumerate(ids):
        client_on(server, client, cid, f"user-{n}")
    return ids


def insert(n: int, sequence: str | None = None) -> dict[str, Any]:
    return stream("INSERT", sequence or f"2222{n:020d}", new={"n": n}, key=(f"EVENT#{n}", "M"))


def state_item(client: Any) -> dict[str, Any] | None:
    found = client.get_item(
        TableName="connections-test", Key={"connectionId": {"S": FANOUT_STATE_KEY}}
    )
    item: dict[str, Any] | None = found.get("Item")
    return item


def test_below_the_threshold_the_broadcaster_posts_itself(
    management_api: FakeManagementApi, tables: Any, queue: str
) -> None:
    ids = clients(management_api, tables, 2)
    failures, stats = queued_broadcaster(management_api, tables, queue).run(
        [insert(1)], deadline=1e12
    )
    assert failures == [] and stats.delivered == 2 and stats.jobsQueued == 0
    assert receive_all(queue) == []
    assert state_item(tables) is None
    assert all(len(management_api.messages(cid)) == 1 for cid in ids)


WALL = 1_795_000_000.0


def test_at_the_threshold_jobs_are_queued_and_senders_post_exactly_what_inline_would(
    management_api: FakeManagementApi, tables: Any, queue: str
) -> None:
    ids = clients(management_api, tables, 12)
    record = insert(7)
    queued = queued_broadcaster(management_api, tables, queue)
    queued.wall = lambda: WALL
    failures, stats = queued.run([record], deadline=1e12)
    assert failures == []
    assert (stats.delivered, stats.queuedRecords, stats.queuedRecipients) == (0, 1, 12)
    assert all(management_api.messages(cid) == [] for cid in ids)  # nothing posted yet
    assert state_item(tables) is not None
    jobs = receive_all(queue)
    assert stats.jobsQueued == len(jobs) == len({group_of(c, GROUPS) for c in ids})
    for job in jobs:
        group = int(job["attributes"]["MessageGroupId"].rsplit("-", 1)[1])
        assert job["attributes"]["MessageGroupId"] == f"orders-{group}"
        assert {c for c, _ in read_job(job["body"])} == {
            c for c in ids if group_of(c, GROUPS) == group
        }
    failed, sent = a_sender(management_api, tables).run(jobs, deadline=1e12)
    assert failed == [] and sent.delivered == 12
    by_sender = {cid: list(management_api.state.received[cid]) for cid in ids}
    management_api.state.received.clear()
    inline = inline_broadcaster(management_api, tables)
    inline.wall = lambda: WALL  # the same position, so the same cursors
    assert inline.run([record], deadline=1e12)[0] == []
    assert by_sender == {cid: list(management_api.state.received[cid]) for cid in ids}
    message = json.loads(by_sender[ids[3]][0])
    assert message["data"] == {"PK": "EVENT#7", "SK": "M", "n": 7}
    assert message["cursor"].startswith("c1.")


def test_once_queued_every_later_record_is_queued_in_every_container(
    management_api: FakeManagementApi, tables: Any, queue: str
) -> None:
    ids = clients(management_api, tables, 3)
    first = queued_broadcaster(management_api, tables, queue)
    assert first.run([insert(1)], deadline=1e12)[1].queuedRecords == 1
    receive_all(queue)
    tables.delete_item(
        TableName="connections-test", Key={"connectionId": {"S": ids[0]}}
    )  # (the record only: its subscription still finds it)
    # one recipient, far below the threshold: still queued, here and in a new container
    for n, broadcaster in enumerate(
        (first, queued_broadcaster(management_api, tables, queue, threshold=50)), start=2
    ):
        _, stats = broadcaster.run([insert(n)], deadline=1e12)
        assert (stats.queuedRecords, stats.delivered) == (1, 0)
        assert len(receive_all(queue)) >= 1


def test_a_new_container_reads_the_mode_once_per_batch(
    management_api: FakeManagementApi, tables: Any, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients(management_api, tables, 1)
    fresh = queued_broadcaster(management_api, tables, queue, threshold=50)
    reads: list[Any] = []
    real = tables.get_item

    def counting(**kwargs: Any) -> Any:
        reads.append(kwargs["Key"])
        return real(**kwargs)

    monkeypatch.setattr(tables, "get_item", counting)
    _, stats = fresh.run([insert(n, f"3333{n:020d}") for n in range(5)], deadline=1e12)
    assert stats.delivered == 5 and stats.queuedRecords == 0
    assert reads == [{"connectionId": {"S": FANOUT_STATE_KEY}}]


def test_each_connection_gets_a_batchs_records_in_stream_order_through_the_queue(
    management_api: FakeManagementApi, tables: Any, queue: str
) -> None:
    ids = clients(management_api, tables, 9)
    records = [insert(n, f"4444{n:020d}") for n in range(6)]
    _, stats = queued_broadcaster(management_api, tables, queue, threshold=0, slice=2).run(
        records, deadline=1e12
    )
    assert stats.queuedRecords == 6
    jobs = receive_all(queue)
    failed, _ = a_sender(management_api, tables).run(jobs, deadline=1e12)
    assert failed == []
    for cid in ids:
        assert [m["data"]["n"] for m in management_api.messages(cid)] == list(range(6))


class FlakySqs:
    """SendMessageBatch that fails chosen entries (by attempt), recording every call."""

    def __init__(self, real: Any, failing: list[set[int]], sender_fault: bool = False) -> None:
        self.real = real
        self.failing = failing
        self.sender_fault = sender_fault
        self.calls: list[list[dict[str, Any]]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        self.calls.append(Entries)
        bad = self.failing.pop(0) if self.failing else set()
        good = [e for n, e in enumerate(Entries) if n not in bad]
        answer = self.real.send_message_batch(QueueUrl=QueueUrl, Entries=good) if good else {}
        failed = [
            {"Id": e["Id"], "Code": "InternalError", "Message": "try again",
             "SenderFault": self.sender_fault}
            for n, e in enumerate(Entries)
            if n in bad
        ]  # fmt: skip
        return {"Successful": answer.get("Successful", []), "Failed": failed}


def test_failed_entries_are_retried_and_a_call_never_holds_two_jobs_of_a_group(
    management_api: FakeManagementApi, tables: Any, queue: str
) -> None:
    ids = clients(management_api, tables, 16)
    flaky = FlakySqs(aws.client("sqs"), [{0, 2}])
    b = queued_broadcaster(management_api, tables, queue, threshold=0, slice=1, sqs=flaky)
    failures, stats = b.run([insert(1)], deadline=1e12)
    assert failures == [] and stats.jobsQueued == 16
    for call in flaky.calls:
        groups = [e["MessageGroupId"] for e in call]
        assert len(groups) == len(set(groups))
    assert [e["Id"] for e in flaky.calls[1]] == ["j0", "j2"]  # only the failed ones again
    jobs = receive_all(queue)
    assert sorted(c for job in jobs for c, _ in read_job(job["body"])) == sorted(ids)
    # parts of one group arrive in part order
    parts: dict[str, list[int]] = {}
    for job in jobs:
        parts.setdefault(job["attributes"]["MessageGroupId"], []).append(
            json.loads(job["body"])["part"]
        )
    assert all(p == sorted(p) for p in parts.values())


def test_a_job_the_queue_refuses_fails_the_record_and_stops_the_batch(
    management_api: FakeManagementApi, tables: Any, queue: str
) -> None:
    clients(management_api, tables, 4)
    flaky = FlakySqs(aws.client("sqs"), [set(), {0}], sender_fault=True)
    b = queued_broadcaster(management_api, tables, queue, threshold=0, sqs=flaky)
    records = [insert(n, f"5555{n:020d}") for n in range(3)]
    failures, stats = b.run(records, deadline=1e12)
    assert failures == [{"itemIdentifier": records[1]["dynamodb"]["SequenceNumber"]}]
    assert stats.queuedRecords == 1 and stats.recordsFailed == 1
    # the retry of the stream batch from record 1 sends record 1's jobs again, same ids
    first_ids = [e["MessageDeduplicationId"] for e in flaky.calls[1]]
    failures, _ = b.run(records[1:], deadline=1e12)
    assert failures == []
    assert [e["MessageDeduplicationId"] for e in flaky.calls[2]] == first_ids


def test_the_sender_removes_connections_that_are_gone_and_paces_to_its_rate(
    management_api: FakeManagementApi, tables: Any, queue: str
) -> None:
    ids = clients(management_api, tables, 8)
    management_api.state.known.discard(ids[0])  # its socket is gone: 410
    queued_broadcaster(management_api, tables, queue, threshold=0).run([insert(1)], 1e12)
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    s = a_sender(management_api, tables, rate=4)
    s.sleep = sleep
    s.clock = lambda: clock[0]
    s.budget = sender_module.TokenBucket(4, 4, s.clock)
    failed, stats = s.run(receive_all(queue), deadline=1e12)
    assert failed == [] and stats.delivered == 7 and stats.stale == 1
    assert (
        tables.get_item(TableName="connections-test", Key={"connectionId": {"S": ids[0]}}).get(
            "Item"
        )
        is None
    )
    assert clock[0] == pytest.approx((8 - 4) / 4)  # 4 at once, then 4 more at 4/s


def test_the_sender_handler_answers_lambdas_partial_batch_response(
    management_api: FakeManagementApi, tables: Any, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients(management_api, tables, 2)
    queued_broadcaster(management_api, tables, queue, threshold=0).run([insert(1)], 1e12)
    jobs = receive_all(queue)
    bad = {"messageId": "broken", "body": "{not a job", "attributes": {"MessageGroupId": "x"}}
    monkeypatch.setattr(sender_module, "_sender", a_sender(management_api, tables))
    answer = sender_module.handler({"Records": [*jobs, bad]}, None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "broken"}]}


def test_a_job_that_keeps_failing_reaches_the_dead_letter_queue_whole_and_redelivers_from_it(
    management_api: FakeManagementApi, tables: Any, mocked_aws: None
) -> None:
    sqs = aws.client("sqs")
    dlq = sqs.create_queue(QueueName="jobs-dlq.fifo", Attributes={"FifoQueue": "true"})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq["QueueUrl"], AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    url = sqs.create_queue(
        QueueName="jobs.fifo",
        Attributes={
            "FifoQueue": "true",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
        },
    )["QueueUrl"]
    ids = clients(management_api, tables, 3)
    queued_broadcaster(management_api, tables, url, threshold=0).run([insert(5)], 1e12)
    # a sender that runs out of time every time: the job goes back, twice, then to the DLQ
    for _ in range(2):
        got = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["All"]
        )["Messages"]
        records = [{"messageId": m["MessageId"], "body": m["Body"],
                    "attributes": m["Attributes"]} for m in got]  # fmt: skip
        failed, _ = a_sender(management_api, tables).run(records, deadline=0)
        assert len(failed) == len(records) > 0
    assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages") is None
    assert all(management_api.messages(cid) == [] for cid in ids)
    dead = receive_all(dlq["QueueUrl"])
    assert sorted(c for job in dead for c, _ in read_job(job["body"])) == sorted(ids)
    # enough to redeliver: the body, under its group
    for job in dead:
        sqs.send_message(
            QueueUrl=url,
            MessageBody=job["body"],
            MessageGroupId=job["attributes"]["MessageGroupId"],
            MessageDeduplicationId="redrive-" + job["messageId"],
        )
    failed, stats = a_sender(management_api, tables).run(receive_all(url), deadline=1e12)
    assert failed == [] and stats.delivered == 3
    assert all([m["data"]["n"] for m in management_api.messages(cid)] == [5] for cid in ids)


def test_a_recipient_whose_token_expires_while_its_job_waits_gets_nothing_and_is_closed(
    management_api: FakeManagementApi, tables: Any, queue: str
) -> None:
    now = 1_795_000_000
    ids = [f"E{n}x=" for n in range(3)]
    for n, cid in enumerate(ids):
        add_connection(tables, cid, f"user-{n}")
        if n == 0:  # its token expires 5 s from now
            tables.update_item(
                TableName="connections-test",
                Key={"connectionId": {"S": cid}},
                UpdateExpression="SET expiresAt = :e",
                ExpressionAttributeValues={":e": {"N": str(now + 5)}},
            )
        subscribe(tables, cid, "s1")
        management_api.connect(cid)
    b = queued_broadcaster(management_api, tables, queue, threshold=0)
    b.wall = lambda: float(now)
    assert b.run([insert(1)], 1e12)[1].queuedRecipients == 3  # not expired yet: planned
    jobs = receive_all(queue)
    assert [r.expires_at for job in jobs for r in read_recipients(job["body"])
            if r.connection_id == ids[0]] == [now + 5]  # fmt: skip
    failed, stats = sender_module.deliver_batch(
        jobs,
        FastManagementApi(
            management_api.endpoint,
            region="us-east-1",
            credentials=frozen_credentials(aws.session()),
        ),
        concurrency=8,
        max_attempts=2,
        deadline=1e12,
        on_stale=lambda _: True,
        post=sender_module.fastpost.fan_out,
        wall=lambda: float(now + 60),  # the job waited a minute in the queue
    )
    assert failed == [] and (stats.delivered, stats.expiredClosed) == (2, 1)
    assert management_api.messages(ids[0]) == []
    assert ids[0] not in management_api.state.known  # closed (DELETE)
    assert all(len(management_api.messages(cid)) == 1 for cid in ids[1:])
