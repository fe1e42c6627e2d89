"""Senders (groundwork for the queued fan-out): an SQS FIFO batch of delivery jobs, posted in
order per message group through the local Management API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from bench.management_api import FakeManagementApi
from handlers import aws
from handlers.jobs import plan_jobs
from handlers.management import ManagementApi, Response, frozen_credentials
from handlers.sender import deliver_batch


def api_of(server: FakeManagementApi) -> ManagementApi:
    return ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )


def message(n: int) -> bytes:
    return json.dumps({"type": "event_update", "id": f"evt-{n}", "n": n}).encode()


def records(changes: list[tuple[str, dict[str, bytes]]], groups: int = 4) -> list[dict[str, Any]]:
    """The FIFO batch the planner's jobs would make, in send order."""
    out = []
    for change_id, to in changes:
        for job in plan_jobs(change_id, to, groups, channel="chat"):
            out.append(
                {
                    "messageId": f"m{len(out)}",
                    "body": job.body,
                    "attributes": {"MessageGroupId": job.group_id},
                }
            )
    return out


def run(api: Any, batch: list[dict[str, Any]], **options: Any) -> Any:
    settings: dict[str, Any] = {
        "concurrency": 8,
        "max_attempts": 3,
        "deadline": 1e12,
        "on_stale": lambda cid: True,
        "sleep": lambda _: None,
    }
    settings.update(options)
    return deliver_batch(batch, api, **settings)


def test_every_recipient_gets_each_change_once_in_order(
    mocked_aws: None, management_api: FakeManagementApi
) -> None:
    clients = [f"C{n}=" for n in range(12)]
    management_api.connect(*clients)
    batch = records([(f"evt-{n}", {c: message(n) for c in clients}) for n in range(3)])

    failures, stats = run(api_of(management_api), batch)

    assert failures == [] and stats.delivered == 36
    for client in clients:
        assert [m["n"] for m in management_api.messages(client)] == [0, 1, 2]


def test_a_connection_that_keeps_failing_is_closed_and_holds_no_one_back(
    mocked_aws: None, management_api: FakeManagementApi
) -> None:
    management_api.connect("OK=", "STUCK=")
    management_api.script("STUCK=", 500, 500, 500)  # every try of its first post
    batch = records([(f"evt-{n}", {"OK=": message(n), "STUCK=": message(n)}) for n in range(2)])

    failures, stats = run(api_of(management_api), batch)

    assert failures == []  # the job succeeded: the stuck one resumes with its cursor
    assert stats.closed >= 1 and "STUCK=" not in management_api.state.known
    assert [m["n"] for m in management_api.messages("OK=")] == [0, 1]


@dataclass
class Refusing:
    """A Management API whose posts to some connections fail and whose DELETE fails too."""

    failing: set[str]
    posted: list[tuple[str, int]]

    def post_to_connection(self, cid: str, data: bytes, timeout: float | None = None) -> Response:
        if cid in self.failing:
            return Response(500, "InternalServerErrorException")
        self.posted.append((cid, json.loads(data)["n"]))
        return Response(200, None)

    def delete_connection(self, cid: str) -> Response:
        return Response(500, "InternalServerErrorException")


def test_a_failed_job_stops_its_group_and_only_its_group() -> None:
    # two groups: A= alone in one, B= in another (found by trying ids)
    from handlers.jobs import group_of

    a = "A="
    b = next(f"B{n}=" for n in range(100) if group_of(f"B{n}=", 4) != group_of(a, 4))
    api = Refusing(failing={a}, posted=[])
    batch = records([(f"evt-{n}", {a: message(n), b: message(n)}) for n in range(3)])

    failures, stats = run(api, batch)

    failed = {f["itemIdentifier"] for f in failures}
    by_group: dict[str, list[str]] = {}
    for record in batch:
        by_group.setdefault(record["attributes"]["MessageGroupId"], []).append(record["messageId"])
    a_group = next(g for g, ids in by_group.items() if batch[int(ids[0][1:])]["body"].count(a))
    assert failed == set(by_group[a_group])  # its first job failed, the later ones wait
    assert [n for cid, n in api.posted if cid == b] == [0, 1, 2]  # the other group went on
    assert stats.jobsFailed == 3


def test_a_malformed_job_is_reported_for_redelivery_and_the_dead_letter_queue() -> None:
    api = Refusing(failing=set(), posted=[])
    batch = [{"messageId": "m0", "body": "{not a job", "attributes": {"MessageGroupId": "g"}}]
    failures, stats = run(api, batch)
    assert failures == [{"itemIdentifier": "m0"}] and stats.malformed == 1


def test_past_the_deadline_jobs_are_left_for_redelivery() -> None:
    api = Refusing(failing=set(), posted=[])
    batch = records([("evt-1", {"A=": message(1)})])
    failures, _ = run(api, batch, deadline=0.0)
    assert failures == [{"itemIdentifier": "m0"}] and api.posted == []


@pytest.mark.parametrize("gone", [True, False])
def test_a_gone_connection_is_cleaned_up_not_closed_or_retried(gone: bool) -> None:
    seen: list[str] = []

    class Gone(Refusing):
        def post_to_connection(
            self, cid: str, data: bytes, timeout: float | None = None
        ) -> Response:
            return Response(410, "GoneException") if gone else super().post_to_connection(cid, data)

    failures, stats = run(
        Gone(failing=set(), posted=[]),
        records([("evt-1", {"A=": message(1)})]),
        on_stale=lambda cid: seen.append(cid) or True,
    )
    assert failures == []
    assert (stats.stale, seen) == ((1, ["A="]) if gone else (0, []))
