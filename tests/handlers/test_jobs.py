"""Delivery jobs: slicing by message group, sizes, dedupe ids, reading back, the budget."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import pytest

from handlers import jobs
from handlers.cursors import MAX_CURSOR_LENGTH
from handlers.jobs import (
    BudgetTooSmall,
    Job,
    MalformedJob,
    MessageTooLarge,
    Recipient,
    TokenBucket,
    group_of,
    mapping_concurrency,
    plan_jobs,
    read_job,
    read_recipients,
)
from handlers.recipients import CURSOR_ROOM, MAX_MESSAGE_BYTES, encode, with_cursor

CHANNEL = "orders-live"
CHANGE = "4f1c2a9e8b7d6c5e4f3a2b1c0d9e8f7a"


def connection(n: int) -> str:
    """An id shaped like API Gateway's (16 characters, base64-ish)."""
    return f"Cn{n:012d}A=".replace("0", "x", 2)


def message(n: int, *, extra: str = "") -> bytes:
    body = {"type": "event_update", "id": CHANGE, "matches": {f"s{n}": "added"}, "x": extra}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def audience(count: int, *, distinct: bool = True) -> dict[str, bytes]:
    return {connection(n): message(n if distinct else 0) for n in range(count)}


def decoded(job: Job) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(job.body)
    return value


def read_all(planned: list[Job]) -> list[tuple[str, bytes]]:
    return [delivery for job in planned for delivery in read_job(job.body)]


# --- groups -----------------------------------------------------------------------------


def test_group_is_sha256_of_the_connection_mod_groups_and_stable() -> None:
    for n in range(50):
        digest = hashlib.sha256(connection(n).encode("utf-8")).digest()
        expected = int.from_bytes(digest[:4], "big") % 16
        assert group_of(connection(n), 16) == expected == group_of(connection(n), 16)
    assert group_of("anything", 1) == 0


def test_groups_spread_evenly() -> None:
    counts = Counter(group_of(f"conn-{n}", 16) for n in range(10_000))
    mean = 10_000 / 16
    assert set(counts) == set(range(16))
    assert max(counts.values()) <= 1.5 * mean
    assert min(counts.values()) >= 0.5 * mean


@pytest.mark.parametrize("groups", [0, -1, True, 2.0])
def test_groups_must_be_a_positive_integer(groups: Any) -> None:
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        group_of("c", groups)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        plan_jobs(CHANGE, audience(3), groups, channel=CHANNEL)


# --- slicing ----------------------------------------------------------------------------


def test_every_recipient_is_in_exactly_one_job_of_its_own_group() -> None:
    recipients = audience(2_000)
    planned = plan_jobs(CHANGE, recipients, 16, channel=CHANNEL)
    seen = Counter(connection_id for connection_id, _ in read_all(planned))
    assert set(seen) == set(recipients)
    assert set(seen.values()) == {1}
    for job in planned:
        group = decoded(job)["group"]
        assert job.group_id == f"{CHANNEL}-{group}"
        assert {group_of(c, 16) for c, _ in read_job(job.body)} == {group}
    # one job per group here (small messages): a slice is exactly one group
    assert len(planned) == len({job.group_id for job in planned}) == 16


def test_jobs_come_in_group_then_part_order() -> None:
    planned = plan_jobs(CHANGE, audience(500), 8, channel=CHANNEL, max_job_bytes=4_000)
    order = [(decoded(job)["group"], decoded(job)["part"]) for job in planned]
    assert order == sorted(order)
    assert len(planned) > 8
    for group in range(8):
        parts = [part for g, part in order if g == group]
        assert parts == list(range(len(parts)))


def test_group_ids_use_the_channel() -> None:
    planned = plan_jobs(CHANGE, audience(100), 4, channel="scores.v2")
    assert sorted({job.group_id for job in planned}) == [f"scores.v2-{g}" for g in range(4)]


@pytest.mark.parametrize("channel", ["", "has space", "tab\t", "é", "x" * 126])
def test_channels_that_make_bad_group_ids_are_refused(channel: str) -> None:
    with pytest.raises(ValueError, match="channel"):
        plan_jobs(CHANGE, audience(3), 16, channel=channel)


def test_no_recipients_no_jobs() -> None:
    assert plan_jobs(CHANGE, {}, 16, channel=CHANNEL) == []


# --- payloads and sizes -----------------------------------------------------------------


def test_identical_payloads_are_stored_once() -> None:
    shared, other = message(1, extra="y" * 2_000), message(2, extra="z" * 2_000)
    recipients = {connection(n): shared if n % 3 else other for n in range(300)}
    (job,) = plan_jobs(CHANGE, recipients, 1, channel=CHANNEL)
    body = decoded(job)
    assert len(body["payloads"]) == 2
    assert job.body.count("y" * 2_000) == 1 and job.body.count("z" * 2_000) == 1
    assert len(job.body) < 2 * 2_100 + 300 * 30
    assert read_job(job.body) == list(recipients.items())


def test_messages_are_spliced_as_json_not_escaped() -> None:
    recipients = {connection(1): message(1, extra='say "hi" \\ ünï')}
    (job,) = plan_jobs(CHANGE, recipients, 1, channel=CHANNEL)
    assert recipients[connection(1)].decode("utf-8") in job.body
    assert decoded(job)["payloads"][0]["x"] == 'say "hi" \\ ünï'


def test_a_slice_over_the_limit_is_split_in_recipient_order() -> None:
    recipients = audience(400)
    planned = plan_jobs(CHANGE, recipients, 1, channel=CHANNEL, max_job_bytes=10_000)
    assert len(planned) >= 4
    assert all(len(job.body.encode("utf-8")) <= 10_000 for job in planned)
    assert read_all(planned) == list(recipients.items())
    assert {job.group_id for job in planned} == {f"{CHANNEL}-0"}
    assert [decoded(job)["part"] for job in planned] == list(range(len(planned)))
    # parts are full: each but the last would pass the limit with its next recipient
    for job in planned[:-1]:
        assert len(job.body) > 10_000 - 120


def test_the_size_is_counted_to_the_byte() -> None:
    recipients = {connection(n): message(n % 5, extra="é" * 300) for n in range(40)}
    (whole,) = plan_jobs(CHANGE, recipients, 1, channel=CHANNEL, max_job_bytes=200_000)
    size = len(whole.body.encode("utf-8"))
    assert size > len(whole.body)  # multi-byte characters are counted in bytes
    (exact,) = plan_jobs(CHANGE, recipients, 1, channel=CHANNEL, max_job_bytes=size)
    assert exact == whole
    split = plan_jobs(CHANGE, recipients, 1, channel=CHANNEL, max_job_bytes=size - 1)
    assert len(split) == 2
    assert all(len(job.body.encode("utf-8")) <= size - 1 for job in split)
    assert read_all(split) == list(recipients.items())


def test_a_payload_is_repeated_in_each_part_that_needs_it() -> None:
    shared = message(1, extra="s" * 500)
    recipients = {connection(n): shared for n in range(200)}
    planned = plan_jobs(CHANGE, recipients, 1, channel=CHANNEL, max_job_bytes=2_000)
    assert len(planned) > 1
    assert all(decoded(job)["payloads"] == [json.loads(shared)] for job in planned)
    assert read_all(planned) == list(recipients.items())


def test_one_recipient_over_the_limit_is_refused() -> None:
    with pytest.raises(MessageTooLarge, match="max_job_bytes 1000") as refused:
        plan_jobs(
            CHANGE, {connection(1): message(1, extra="x" * 2_000)}, 1, channel=CHANNEL,
            max_job_bytes=1_000,
        )  # fmt: skip
    assert connection(1) in str(refused.value)


def worst_message() -> bytes:
    """A message at API Gateway's 128 KB (with a cursor of the longest length) made of what
    JSON escaping doubles: quotes and backslashes."""
    base = {"type": "event_update", "id": CHANGE, "matches": {"s": "added"}, "data": {"v": ""}}
    room = MAX_MESSAGE_BYTES - CURSOR_ROOM - len(encode(base)[0])
    data, cut = encode(
        {**base, "data": {"v": '"\\' * (room // 4)}}, MAX_MESSAGE_BYTES - CURSOR_ROOM
    )
    assert not cut
    return with_cursor(data, "c" * MAX_CURSOR_LENGTH)


def test_a_message_of_128_kb_always_fits_one_job_with_the_default_limit() -> None:
    worst = worst_message()
    assert MAX_MESSAGE_BYTES - 8 <= len(worst) <= MAX_MESSAGE_BYTES
    long_id = "C" * 128
    (job,) = plan_jobs(CHANGE, {long_id: worst}, 16, channel="c" * 100)
    assert len(job.body.encode("utf-8")) <= jobs.DEFAULT_MAX_JOB_BYTES
    assert read_job(job.body) == [(long_id, worst)]
    # what splicing saves: as a JSON string it would not have fitted
    assert len(json.dumps(worst.decode("utf-8"))) > jobs.DEFAULT_MAX_JOB_BYTES


# --- reading back -----------------------------------------------------------------------


def test_round_trip_gives_exactly_the_inputs_in_order() -> None:
    odd = [
        message(1, extra="ünïcødé ✓ 😀"),
        message(2, extra="\u2028 \x00 \x1f"),
        b'{"spaced": [1, 2.50, 1e3]}',
        b'{"a":1} ',  # trailing space: not spliced, still exact
        b'"just a string"',
        b"[1,2]",
        b"",
        b"not json at all",
        '{"refused":"\ufffe\uffff"}'.encode(),
        b'{"broken":',
    ]
    recipients = {connection(n): odd[n % len(odd)] for n in range(300)}
    recipients.update(audience(50))
    planned = plan_jobs(CHANGE, recipients, 4, channel=CHANNEL, max_job_bytes=3_000)
    for group in range(4):
        in_group = [job for job in planned if job.group_id == f"{CHANNEL}-{group}"]
        expected = [(c, m) for c, m in recipients.items() if group_of(c, 4) == group]
        assert read_all(in_group) == expected
    assert dict(read_all(planned)) == recipients


def test_bodies_hold_only_what_sqs_accepts() -> None:
    recipients = {
        connection(1): '{"v":"\ufffe\uffff\x01\x7f"}'.encode(),
        connection(2): b'"\x02"',
        "c\u00e9\ud7ff": b"{}",
    }
    for job in plan_jobs(CHANGE, recipients, 2, channel=CHANNEL):
        assert all(
            char in "\t\n\r" or 0x20 <= ord(char) <= 0xD7FF or 0xE000 <= ord(char) <= 0xFFFD
            or ord(char) >= 0x10000
            for char in job.body
        )  # fmt: skip
        assert all(ord(char) < 0x80 for char in job.body.split('"payloads":')[0])
    assert dict(read_all(plan_jobs(CHANGE, recipients, 2, channel=CHANNEL))) == recipients


def test_messages_must_be_utf8() -> None:
    with pytest.raises(ValueError, match="not UTF-8"):
        plan_jobs(CHANGE, {connection(1): b"\xff{}"}, 1, channel=CHANNEL)


def good_body() -> str:
    return plan_jobs(CHANGE, audience(3), 1, channel=CHANNEL)[0].body


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("", "expected"),
        ("{}", "expected"),
        ("not json", "expected"),
        (good_body().replace('"v":1', '"v":2'), "expected"),
        (good_body().replace('{"v":1,', '{ "v":1,'), "expected"),
        (good_body()[:-1], "after the payloads"),
        (good_body()[:-40], "not JSON"),
        (good_body() + " ", "after the payloads"),
        (good_body().replace('"part":0', '"part":-1'), "part"),
        (good_body().replace('"group":0', '"group":"0"'), "group"),
        (good_body().replace(f'"change":"{CHANGE}"', '"change":""'), "change"),
        (good_body().replace(',2]],"payloads"', ',3]],"payloads"'), "recipient 2"),
        (good_body().replace(',2]],"payloads"', ',true]],"payloads"'), "recipient 2"),
        (good_body().replace(',2]],"payloads"', ']],"payloads"'), "recipient 2"),
        (good_body().replace('"to":[[', '"to":[["",0],['), "recipient 0"),
        ('{"v":1,"change":"c","group":0,"part":0,"to":[],"payloads":[]}', "non-empty"),
        ('{"v":1,"change":"c","group":0,"part":0,"to":[["a",0]],"payloads":[7]}', "payload 0"),
        ('{"v":1,"change":"c","group":0,"part":0,"to":[["a",0]],"payloads":[{}{}]}', "','"),
    ],
)
def test_malformed_bodies_are_refused(body: str, says: str) -> None:
    with pytest.raises(MalformedJob, match=says) as refused:
        read_job(body)
    assert isinstance(refused.value, ValueError)


def test_a_body_must_be_text() -> None:
    with pytest.raises(MalformedJob, match="text"):
        read_job(good_body().encode())  # type: ignore[arg-type]


# --- dedupe ids -------------------------------------------------------------------------


def ids(planned: list[Job]) -> list[str]:
    return [job.deduplication_id for job in planned]


def test_dedupe_ids_are_stable_across_calls() -> None:
    recipients = audience(300)
    first = plan_jobs(CHANGE, recipients, 4, channel=CHANNEL, max_job_bytes=3_000)
    again = plan_jobs(CHANGE, dict(recipients), 4, channel=CHANNEL, max_job_bytes=3_000)
    assert len(first) > 4
    assert ids(again) == ids(first)


def test_same_recipients_new_cursors_keep_every_id() -> None:
    """A retry records the change at a later clock: new cursors, same recipients, same ids."""
    recipients = {connection(n): message(n, extra="cursor-1") for n in range(200)}
    first = plan_jobs(CHANGE, recipients, 4, channel=CHANNEL, max_job_bytes=2_500)
    later = {c: m.replace(b"cursor-1", b"cursor-2") for c, m in recipients.items()}
    retried = plan_jobs(CHANGE, later, 4, channel=CHANNEL, max_job_bytes=2_500)
    assert len(first) > 4
    assert [read_job(j.body) for j in retried] != [read_job(j.body) for j in first]
    assert [[c for c, _ in read_job(j.body)] for j in retried] == [
        [c for c, _ in read_job(j.body)] for j in first
    ]
    assert ids(retried) == ids(first)


def test_dedupe_ids_differ_by_change_group_part_channel_and_recipients() -> None:
    recipients = audience(600)
    planned = plan_jobs(CHANGE, recipients, 8, channel=CHANNEL, max_job_bytes=5_000)
    assert len(planned) > 8  # several groups, several parts each
    assert len(set(ids(planned))) == len(planned)
    other_change = plan_jobs(CHANGE + "0", recipients, 8, channel=CHANNEL, max_job_bytes=5_000)
    other_channel = plan_jobs(CHANGE, recipients, 8, channel="other", max_job_bytes=5_000)
    assert not set(ids(planned)) & set(ids(other_change))
    assert not set(ids(planned)) & set(ids(other_channel))
    # a part whose recipients changed (someone subscribed in between) is sent again
    joined = {**recipients, "newcomer-00000A=": message(9)}
    rejoined = plan_jobs(CHANGE, joined, 8, channel=CHANNEL, max_job_bytes=5_000)
    assert set(ids(rejoined)) != set(ids(planned))
    assert set(ids(rejoined)) & set(ids(planned))  # the untouched groups are still deduped
    assert all(len(i) <= 128 and i.isalnum() for i in ids(planned))


def test_dedupe_id_fields_cannot_run_into_each_other() -> None:
    assert jobs.deduplication_id("a", "b:1", 2, 3, ["c"]) != jobs.deduplication_id(
        "a:b", "1", 2, 3, ["c"]
    )
    assert jobs.deduplication_id("a", "b", 1, 23, ["c"]) != jobs.deduplication_id(
        "a", "b", 12, 3, ["c"]
    )
    assert jobs.deduplication_id("a", "b", 1, 2, ["cd", "e"]) != jobs.deduplication_id(
        "a", "b", 1, 2, ["c", "de"]
    )


# --- the budget -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ceiling", "per_sender", "senders"),
    [
        (9_000, 500, 18),
        (9_000, 450, 20),
        (9_000, 501, 17),
        (1_000, 500, 2),
        (0.3, 0.1, 3),  # exact: not floor(2.9999999999999996)
        (10_000_000, 1, 1_000),  # SQS's largest maximum concurrency
    ],
)
def test_mapping_concurrency_keeps_senders_under_the_ceiling(
    ceiling: float, per_sender: float, senders: int
) -> None:
    assert mapping_concurrency(ceiling, per_sender) == senders
    assert senders * per_sender <= ceiling + 1e-9


def test_a_ceiling_below_two_senders_is_refused() -> None:
    with pytest.raises(BudgetTooSmall, match=r"below 2 senders at 500 posts/s.*at most 499\.5"):
        mapping_concurrency(999, 500)
    assert mapping_concurrency(1_000, 500) == 2


@pytest.mark.parametrize(
    "rates", [(0, 500), (9_000, 0), (-1, 5), (float("inf"), 5), (float("nan"), 5), (True, 1)]
)
def test_mapping_concurrency_needs_positive_rates(rates: tuple[Any, Any]) -> None:
    with pytest.raises(ValueError, match="posts_per_second"):
        mapping_concurrency(*rates)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0, 0, 0]
    assert bucket.take() == pytest.approx(0.1)
    assert bucket.take() == pytest.approx(0.2)  # takers queue behind the debt
    clock.now += 0.2
    assert bucket.take() == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.take() == pytest.approx(0.1)


def test_token_bucket_refills_up_to_its_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=100, burst=5, clock=clock)
    assert bucket.take(5) == 0
    clock.now += 1_000
    assert bucket.take(5) == 0
    assert bucket.take(2) == pytest.approx(0.02)


def test_token_bucket_average_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=500, burst=10, clock=clock)
    start = clock.now
    for _ in range(5_000):
        clock.now += bucket.take()  # the caller sleeps what it is told
    assert 5_000 / (clock.now - start) == pytest.approx(500, rel=0.01)


def test_token_bucket_ignores_a_clock_going_back() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.take() == 0
    clock.now -= 50
    assert bucket.take() == pytest.approx(1)


@pytest.mark.parametrize("n", [0, -1, 4, True])
def test_token_bucket_refuses_what_it_can_never_give(n: Any) -> None:
    bucket = TokenBucket(rate=1, burst=3, clock=FakeClock())
    with pytest.raises(ValueError, match="take between 0 and burst"):
        bucket.take(n)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (1, 0.5), (float("inf"), 1), (1, True)])
def test_token_bucket_needs_a_rate_and_a_burst(rate: Any, burst: Any) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        TokenBucket(rate=rate, burst=burst, clock=FakeClock())


# --- the change once, each recipient's cursor ---------------------------------------------


def cursor_of(n: int) -> str:
    """Shaped like ``handlers.cursors.make_cursor``'s: a prefix and base64url parts."""
    return f"c1.eyJjIjoi{n:06d}LCJzIjoi.Sig-{n:04d}_x"


def test_a_shared_message_travels_once_and_each_recipient_gets_its_own_cursor() -> None:
    shared = message(0)
    recipients = {connection(n): shared for n in range(300)}
    cursors = {c: cursor_of(n) for n, c in enumerate(recipients)}
    planned = plan_jobs(CHANGE, recipients, 4, channel=CHANNEL, cursors=cursors)
    for job in planned:
        assert len(decoded(job)["payloads"]) == 1  # the change once per job
        assert job.body.count('"type":"event_update"') == 1
    got = dict(read_all(planned))
    assert got == {c: with_cursor(shared, cursors[c]) for c in recipients}


def test_cursors_do_not_change_the_dedupe_ids() -> None:
    recipients = audience(200, distinct=False)
    first = {c: cursor_of(n) for n, c in enumerate(recipients)}
    later = {c: cursor_of(n + 1000) for n, c in enumerate(recipients)}
    a = plan_jobs(CHANGE, recipients, 4, channel=CHANNEL, cursors=first)
    b = plan_jobs(CHANGE, recipients, 4, channel=CHANNEL, cursors=later)
    assert read_all(a) != read_all(b)
    assert ids(a) == ids(b)


def test_sizes_count_the_cursors() -> None:
    recipients = audience(400, distinct=False)
    cursors = {c: cursor_of(n) + "A" * 200 for n, c in enumerate(recipients)}
    planned = plan_jobs(
        CHANGE, recipients, 1, channel=CHANNEL, cursors=cursors, max_job_bytes=9_000
    )
    assert len(planned) > 10
    assert all(len(job.body.encode("utf-8")) <= 9_000 for job in planned)
    assert max(len(job.body.encode("utf-8")) for job in planned) > 8_500  # parts are filled
    assert [c for c, _ in read_all(planned)] == list(recipients)


@pytest.mark.parametrize(
    "bad", [None, "", "has space", 'quote"', "é", "c" * (MAX_CURSOR_LENGTH + 1)]
)
def test_a_bad_or_missing_cursor_is_refused_when_planning(bad: Any) -> None:
    recipients = audience(3)
    cursors = {c: cursor_of(n) for n, c in enumerate(recipients)}
    victim = connection(1)
    if bad is None:
        del cursors[victim]
    else:
        cursors[victim] = bad
    with pytest.raises(ValueError, match="cursor"):
        plan_jobs(CHANGE, recipients, 4, channel=CHANNEL, cursors=cursors)


@pytest.mark.parametrize(
    "entry",
    [
        '["C1=",0,5]',
        '["C1=",0,"bad cursor"]',
        '["C1=",0,""]',
        '["C1=",0,"ok",1,2]',
        '["C1=",0,null]',
        '["C1=",0,"c1.a",-1]',
        '["C1=",0,"c1.a","soon"]',
        '["C1=",0,"c1.a",true]',
        '["C1=",0,"c1.a",1.5]',
    ],
)
def test_a_bad_cursor_in_a_body_is_malformed(entry: str) -> None:
    body = f'{{"v":1,"change":"x","group":0,"part":0,"to":[{entry}],"payloads":[{{"a":1}}]}}'
    with pytest.raises(MalformedJob):
        read_job(body)


def test_a_cursor_on_a_message_that_is_not_an_object_is_malformed() -> None:
    body = '{"v":1,"change":"x","group":0,"part":0,"to":[["C1=",0,"c1.a.b"]],"payloads":["text"]}'
    with pytest.raises(MalformedJob, match="non-object"):
        read_job(body)


def test_slices_hold_at_most_max_recipients_in_order() -> None:
    recipients = audience(1000, distinct=False)
    planned = plan_jobs(CHANGE, recipients, 2, channel=CHANNEL, max_recipients=100)
    sizes = [len(decoded(job)["to"]) for job in planned]
    assert max(sizes) == 100
    by_group: dict[str, list[int]] = {}
    for job in planned:
        by_group.setdefault(job.group_id, []).append(decoded(job)["part"])
    assert all(parts == list(range(len(parts))) for parts in by_group.values())
    assert sorted(c for c, _ in read_all(planned)) == sorted(recipients)
    assert len(planned) == sum(
        -(-n // 100)
        for n in Counter(job.group_id for job in planned for _ in decoded(job)["to"]).values()
    )


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_max_recipients_must_be_a_positive_integer(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_recipients"):
        plan_jobs(CHANGE, audience(2), 2, channel=CHANNEL, max_recipients=bad)


def test_each_recipients_token_expiry_travels_with_it() -> None:
    recipients = audience(6, distinct=False)
    cursors = {c: cursor_of(n) for n, c in enumerate(recipients)}
    expires = {c: 1_800_000_000 + n for n, c in enumerate(recipients) if n % 2 == 0}
    with_expiry = plan_jobs(
        CHANGE, recipients, 2, channel=CHANNEL, cursors=cursors, expires=expires
    )
    got = [r for job in with_expiry for r in read_recipients(job.body)]
    assert sorted(got, key=lambda r: r.connection_id) == sorted(
        (Recipient(c, with_cursor(m, cursors[c]), expires.get(c)) for c, m in recipients.items()),
        key=lambda r: r.connection_id,
    )
    without = plan_jobs(CHANGE, recipients, 2, channel=CHANNEL, cursors=cursors)
    assert ids(with_expiry) == ids(without)  # the expiry is no part of the dedupe id
    # no cursor, an expiry: the cursor is null
    (job,) = plan_jobs(CHANGE, {"C1=": message(1)}, 1, channel=CHANNEL, expires={"C1=": 7})
    assert decoded(job)["to"] == [["C1=", 0, None, 7]]
    assert read_recipients(job.body) == [Recipient("C1=", message(1), 7)]


@pytest.mark.parametrize("bad", [-1, True, 1.5, "1800000000"])
def test_a_bad_expiry_is_refused_when_planning(bad: Any) -> None:
    with pytest.raises(ValueError, match="expiry"):
        plan_jobs(CHANGE, {"C1=": message(1)}, 1, channel=CHANNEL, expires={"C1=": bad})
