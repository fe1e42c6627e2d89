from __future__ import annotations

import pytest

from bench.management_api import FakeManagementApi
from handlers import aws
from handlers.delivery import BACKOFF_CAP_SECONDS, backoff_delay, close_connection, fan_out
from handlers.management import ManagementApi, Response, frozen_credentials


class Clock:
    """A fake monotonic clock that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def send(server: FakeManagementApi, ids: list[str], clock: Clock, **overrides: object):
    api = ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )
    stale: list[str] = []
    options: dict[str, object] = {
        "concurrency": 8,
        "max_attempts": 4,
        "deadline": 1_000.0,
        "on_stale": stale.append,
        "sleep": clock.sleep,
        "clock": clock,
    }
    options.update(overrides)
    report = fan_out(api, [(i, b'{"n":1}') for i in ids], **options)  # type: ignore[arg-type]
    return report, stale


def test_every_connection_receives_the_message(management_api: FakeManagementApi) -> None:
    ids = [f"c{i}=" for i in range(50)]
    management_api.connect(*ids)
    report, stale = send(management_api, ids, Clock())
    assert report.delivered == 50 and not report.failed and not stale
    assert all(management_api.messages(i) == [{"n": 1}] for i in ids)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_each_connection_receives_its_own_payload(
    management_api: FakeManagementApi, concurrency: int
) -> None:
    ids = [f"c{i}=" for i in range(20)]
    management_api.connect(*ids)
    api = ManagementApi(
        management_api.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )
    deliveries = ((i, f'{{"for":"{i}"}}'.encode()) for i in ids)  # lazy: consumed as it goes
    clock = Clock()
    report = fan_out(
        api,
        deliveries,
        concurrency=concurrency,
        max_attempts=2,
        deadline=1_000.0,
        on_stale=lambda _: True,
        sleep=clock.sleep,
        clock=clock,
    )
    assert report.delivered == 20 and not report.failed
    assert all(management_api.messages(i) == [{"for": i}] for i in ids)


def test_gone_connection_is_reported_stale_not_failed(management_api: FakeManagementApi) -> None:
    management_api.connect("alive")
    report, stale = send(management_api, ["alive", "ghost"], Clock())
    assert stale == ["ghost"] and report.stale == ["ghost"]
    assert report.delivered == 1 and report.failed == {}


def test_stale_removed_counts_only_what_on_stale_removed(management_api: FakeManagementApi) -> None:
    """A 410 is not a removal: ``on_stale`` may keep the record (a client still in $connect)."""
    management_api.connect("alive")
    kept = {"young-ghost"}
    report, _ = send(
        management_api,
        ["alive", "old-ghost", "young-ghost"],
        Clock(),
        on_stale=lambda connection_id: connection_id not in kept,
    )
    assert sorted(report.stale) == ["old-ghost", "young-ghost"]
    assert report.stale_removed == 1 and report.delivered == 1


def test_throttling_and_server_errors_are_retried_with_backoff(
    management_api: FakeManagementApi,
) -> None:
    management_api.connect("c1")
    management_api.script("c1", 429, 500, 503)
    clock = Clock()
    report, _ = send(management_api, ["c1"], clock)
    assert report.delivered == 1 and report.retried == 3 and report.failed == {}
    assert len(clock.sleeps) == 3
    assert management_api.messages("c1") == [{"n": 1}]


def test_retries_are_bounded_then_the_connection_fails(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.script("c1", *[500] * 10)
    report, _ = send(management_api, ["c1"], Clock(), max_attempts=3)
    assert report.failed == {"c1": "InternalServerErrorException"}
    assert management_api.state.requests == 3
    assert report.delivered == 0


def test_non_retryable_error_fails_at_once(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.script("c1", 403)
    report, _ = send(management_api, ["c1"], Clock())
    assert report.failed == {"c1": "ForbiddenException"} and report.retried == 0
    assert management_api.state.requests == 1


def test_no_retry_sleeps_past_the_deadline(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.script("c1", 429, 429, 429)
    report, _ = send(management_api, ["c1"], Clock(), deadline=1e-9)
    assert report.failed == {"c1": "LimitExceededException (deadline)"}
    assert management_api.state.requests == 1


def test_nothing_is_sent_once_the_deadline_has_passed(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    report, _ = send(management_api, ["c1"], Clock(), deadline=0.0)
    assert report.failed == {"c1": "DeadlineExceeded"}
    assert management_api.state.requests == 0


def test_one_failing_connection_does_not_stop_the_others(management_api: FakeManagementApi) -> None:
    ids = [f"c{i}" for i in range(20)]
    management_api.connect(*ids)
    management_api.script("c7", 403)
    report, _ = send(management_api, ids, Clock())
    assert report.delivered == 19 and list(report.failed) == ["c7"]


class _Raising:
    def post_to_connection(
        self, connection_id: str, data: bytes, timeout: float | None = None
    ) -> Response:
        raise RuntimeError("boom")


def test_unexpected_errors_propagate_to_the_caller() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        fan_out(
            _Raising(),
            [("a", b"{}"), ("b", b"{}")],
            concurrency=4,
            max_attempts=2,
            deadline=1e9,
            on_stale=lambda _: None,
        )


def test_backoff_grows_exponentially_and_is_capped() -> None:
    ceilings = [backoff_delay(attempt, rng=lambda low, high: high) for attempt in range(1, 10)]
    assert ceilings[:4] == [0.05, 0.1, 0.2, 0.4]
    assert max(ceilings) == BACKOFF_CAP_SECONDS
    assert all(backoff_delay(3) <= 0.2 for _ in range(100))  # full jitter stays under the ceiling


class _Deleting:
    def __init__(self, answer: object) -> None:
        self.answer = answer

    def delete_connection(self, connection_id: str) -> object:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


@pytest.mark.parametrize(
    ("api", "closed"),
    [
        (_Deleting(Response(204, None)), True),
        (_Deleting(Response(410, "GoneException")), True),  # already gone: nothing to close
        (_Deleting(Response(500, "InternalServerErrorException")), False),
        (_Deleting(ConnectionError("reset")), False),
        (object(), False),  # no DELETE at all
    ],
)
def test_close_connection_says_whether_the_connection_is_closed_and_logs_failures(
    api: object, closed: bool, caplog: pytest.LogCaptureFixture
) -> None:
    assert close_connection(api, "C=", "a test") is closed
    warned = [r for r in caplog.records if r.getMessage() == "could not close a connection: a test"]
    assert len(warned) == (0 if closed else 1)


def test_an_invocations_deadline_keeps_its_margin_and_at_least_half_a_second() -> None:
    from handlers.delivery import DEADLINE_MARGIN_SECONDS, invocation_deadline

    class Context:
        def __init__(self, ms: int) -> None:
            self.ms = ms

        def get_remaining_time_in_millis(self) -> int:
            return self.ms

    def clock() -> float:
        return 100.0

    assert invocation_deadline(Context(30_000), clock, 60) == 100.0 + 30 - DEADLINE_MARGIN_SECONDS
    assert invocation_deadline(None, clock, 60) == 100.0 + 60 - DEADLINE_MARGIN_SECONDS
    assert invocation_deadline(Context(1_000), clock, 60) == 100.5
