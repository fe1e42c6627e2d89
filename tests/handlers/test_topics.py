"""Topics: unambiguous, typed, canonical; subscription keys validated against the schema."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.topics import (
    InvalidKey,
    bucket_of,
    canonical_number,
    key_topic,
    record_topics,
    subscription_key,
    table_topic,
    typed_part,
)

PK_SK = (("PK", "S"), ("SK", "S"))
PK_ONLY = (("id", "N"),)


def test_a_change_touches_its_item_partition_and_every_table_bucket() -> None:
    keys = {"PK": {"S": "EVENT#1"}, "SK": {"S": "META"}}
    assert record_topics("events", PK_SK, keys, buckets=2) == [
        "I|6:events|S7:EVENT#1|S4:META",
        "P|6:events|S7:EVENT#1",
        "T|6:events|0",
        "T|6:events|1",
    ]


def test_a_hash_key_only_table_has_no_separate_item_topic() -> None:
    assert record_topics("users", PK_ONLY, {"id": {"N": "7"}}, buckets=1) == [
        "P|5:users|N1:7",
        "T|5:users|0",
    ]


def test_topics_never_collide_across_how_a_key_is_split() -> None:
    one = record_topics("t", PK_SK, {"PK": {"S": "A#B"}, "SK": {"S": "C"}}, 1)
    two = record_topics("t", PK_SK, {"PK": {"S": "A"}, "SK": {"S": "B#C"}}, 1)
    assert one[0] != two[0] and one[1] != two[1]


def test_labels_and_types_are_part_of_the_topic() -> None:
    assert key_topic("a|b", [typed_part("S", "c")]) != key_topic("a", [typed_part("S", "b|c")])
    assert typed_part("N", "1") != typed_part("S", "1")


@given(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8))
def test_distinct_string_keys_give_distinct_topics(a: str, b: str) -> None:
    if a != b:
        assert key_topic("t", [typed_part("S", a)]) != key_topic("t", [typed_part("S", b)])


def test_numbers_are_canonical() -> None:
    assert canonical_number("1.0") == canonical_number("1") == canonical_number("1E0") == "1"
    assert canonical_number("-0.0") == "0"
    assert canonical_number("12345678901234567890") == "1.234567890123456789E+19"
    with pytest.raises(InvalidKey):
        canonical_number("NaN")
    with pytest.raises(InvalidKey):
        canonical_number("x")


def test_buckets_are_stable_and_in_range() -> None:
    assert bucket_of("abc=", 1) == 0
    spread = {bucket_of(f"conn-{i}", 4) for i in range(200)}
    assert spread == {0, 1, 2, 3}
    assert bucket_of("conn-7", 4) == bucket_of("conn-7", 4)
    assert table_topic("e", 3) == "T|1:e|3"


def test_subscription_key_gives_rule_texts_and_the_topic_parts() -> None:
    texts, parts = subscription_key(PK_SK, {"PK": "EVENT#1"})
    assert texts == {"PK": "EVENT#1"}
    assert key_topic("events", parts) == "P|6:events|S7:EVENT#1"
    texts, parts = subscription_key(PK_SK, {"PK": "EVENT#1", "SK": "META"})
    assert (
        key_topic("events", parts)
        == record_topics("events", PK_SK, {"PK": {"S": "EVENT#1"}, "SK": {"S": "META"}}, 1)[0]
    )
    texts, parts = subscription_key(PK_ONLY, {"id": 7.0})
    assert texts == {"id": "7"} and key_topic("users", parts) == "P|5:users|N1:7"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (None, "must be an object"),
        ({}, "must be an object"),
        ({"SK": "x"}, "partition key 'PK'"),
        ({"PK": "x", "owner": "y"}, "key names 'owner'"),
        ({"PK": 5}, "non-empty string"),
        ({"PK": ""}, "non-empty string"),
        ({"PK": "x" * 2049}, "longer than DynamoDB allows"),
    ],
)
def test_bad_subscription_keys_are_refused(raw: Any, fragment: str) -> None:
    with pytest.raises(InvalidKey) as refused:
        subscription_key(PK_SK, raw)
    assert fragment in str(refused.value)


@pytest.mark.parametrize("value", [True, "seven", None, [7]])
def test_number_keys_take_numbers(value: Any) -> None:
    with pytest.raises(InvalidKey):
        subscription_key(PK_ONLY, {"id": value})


def test_record_without_its_key_is_refused() -> None:
    with pytest.raises(InvalidKey, match="no S value for 'SK'"):
        record_topics("t", PK_SK, {"PK": {"S": "a"}}, 1)
