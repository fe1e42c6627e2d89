"""Access rules: parsing, placeholders, matching, grants and field trimming."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.access import (
    Grant,
    InvalidRule,
    Rule,
    allows,
    claims_named,
    fill,
    grant,
    parse_rule,
    parse_rules,
    placeholders,
    trim,
    union,
)

SCHEMA = ("PK", "SK")
ALICE = {"sub": "alice", "claims": {"tenant": "acme", "role": "admin", "groups": ["ops", "dev"]}}
BOB = {"sub": "bob", "claims": {"tenant": "initech", "role": "user"}}


def rule(raw: dict[str, Any]) -> Rule:
    return parse_rule(raw, SCHEMA)


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ("own", "must be an object"),
        ({}, "either a key or table=True"),
        ({"key": {"PK": "x"}, "table": True}, "either a key or table=True"),
        ({"table": "yes"}, "true or false"),
        ({"table": True, "sort": 1}, "unknown rule field 'sort'"),
        ({"key": {}}, "must map key attributes"),
        ({"key": {"PK": 5}}, "must be a string template"),
        ({"key": {"SK": "x"}}, "partition key 'PK'"),
        ({"key": {"PK": "x", "owner": "y"}}, "'owner', which is not a key attribute"),
        ({"key": {"PK": "USER#{user}"}}, "use {sub} or {claims.NAME}"),
        ({"key": {"PK": "USER#{sub"}}, "unmatched brace"),
        ({"key": {"PK": "USER#}"}}, "unmatched brace"),
        ({"table": True, "when": {"role": "admin"}}, "use sub or claims.NAME"),
        ({"table": True, "when": {"claims.role": ""}}, "non-empty string or list"),
        ({"table": True, "when": {"claims.role": []}}, "non-empty string or list"),
        ({"table": True, "when": ["claims.role"]}, "map identity paths"),
        ({"table": True, "fields": []}, "list of 1 to 100"),
        ({"table": True, "fields": ["a.b"]}, "top-level attribute names"),
        ({"table": True, "fields": "status"}, "top-level attribute names"),
    ],
)
def test_bad_rules_are_refused_saying_why(raw: Any, fragment: str) -> None:
    with pytest.raises(InvalidRule) as refused:
        parse_rule(raw, SCHEMA)
    assert fragment in str(refused.value)


def test_parse_rules_names_the_position_of_the_bad_rule() -> None:
    with pytest.raises(InvalidRule, match=r"access\[1\]: .*partition key"):
        parse_rules([{"table": True}, {"key": {"SK": "x"}}], SCHEMA)
    with pytest.raises(InvalidRule, match="at most 20 rules"):
        parse_rules([{"table": True}] * 21, SCHEMA)
    assert parse_rules(None) == ()


def test_rules_round_trip_through_json() -> None:
    raw = {"key": {"PK": "T#{claims.tenant}"}, "when": {"claims.role": ["a", "b"]}, "fields": ["x"]}
    assert rule(raw).to_json() == raw
    assert rule({"table": True}).to_json() == {"table": True}


def test_placeholders_and_the_claims_rules_read() -> None:
    assert placeholders("T#{claims.tenant}#U#{sub}") == ["claims.tenant", "sub"]
    rules = parse_rules(
        [
            {"key": {"PK": "T#{claims.tenant}"}},
            {"table": True, "when": {"claims.cognito:groups": "admins", "sub": "root"}},
        ],
        SCHEMA,
    )
    assert claims_named(rules) == {"tenant", "cognito:groups"}


# -- placeholders ----------------------------------------------------------------------------


def test_fill_replaces_every_placeholder() -> None:
    assert fill("T#{claims.tenant}#U#{sub}", ALICE) == "T#acme#U#alice"
    assert fill("STATIC", {}) == "STATIC"


@pytest.mark.parametrize(
    "identity",
    [
        {},
        {"sub": ""},
        {"sub": 7},
        {"sub": "alice", "claims": {"tenant": ""}},
        {"sub": "alice", "claims": {"tenant": ["acme"]}},
        {"sub": "alice", "claims": "tenant"},
    ],
)
def test_a_missing_empty_or_non_string_claim_fills_nothing(identity: Any) -> None:
    assert fill("T#{claims.tenant}#U#{sub}", identity) is None


# -- matching ---------------------------------------------------------------------------------

OWN = rule({"key": {"PK": "USER#{sub}"}})
OWN_ITEM = rule({"key": {"PK": "USER#{sub}", "SK": "PROFILE"}})
ADMIN_TABLE = rule({"table": True, "when": {"claims.role": "admin"}})
OPS = rule({"table": True, "when": {"claims.groups": ["ops"]}})


def test_a_partition_rule_allows_the_partition_and_its_items_for_its_owner_only() -> None:
    assert allows(OWN, ALICE, {"PK": "USER#alice"})
    assert allows(OWN, ALICE, {"PK": "USER#alice", "SK": "ORDER#1"})
    assert not allows(OWN, BOB, {"PK": "USER#alice"})
    assert not allows(OWN, ALICE, None)


def test_an_item_rule_does_not_allow_the_whole_partition() -> None:
    assert allows(OWN_ITEM, ALICE, {"PK": "USER#alice", "SK": "PROFILE"})
    assert not allows(OWN_ITEM, ALICE, {"PK": "USER#alice"})
    assert not allows(OWN_ITEM, ALICE, {"PK": "USER#alice", "SK": "OTHER"})


def test_a_missing_sub_never_becomes_an_empty_placeholder() -> None:
    assert not allows(OWN, {"claims": {}}, {"PK": "USER#"})


def test_table_rules_allow_table_wide_and_any_key_when_their_condition_holds() -> None:
    assert allows(ADMIN_TABLE, ALICE, None)
    assert allows(ADMIN_TABLE, ALICE, {"PK": "USER#bob"})
    assert not allows(ADMIN_TABLE, BOB, None)
    assert not allows(ADMIN_TABLE, {"sub": "x"}, None)


def test_a_list_claim_needs_one_of_the_allowed_values() -> None:
    assert allows(OPS, ALICE, None)
    assert not allows(OPS, BOB, None)
    assert not allows(OPS, {"sub": "x", "claims": {"groups": [1, None]}}, None)


def test_default_deny() -> None:
    assert grant((), ALICE, None) is None
    assert grant((), ALICE, {"PK": "USER#alice"}) is None


def test_grant_is_the_union_of_the_fields_of_every_allowing_rule() -> None:
    rules = parse_rules(
        [
            {"key": {"PK": "USER#{sub}"}, "fields": ["status"]},
            {"key": {"PK": "USER#{sub}"}, "fields": ["total", "status"]},
            {"key": {"PK": "USER#bob"}, "fields": ["secret"]},
        ],
        SCHEMA,
    )
    assert grant(rules, ALICE, {"PK": "USER#alice"}) == Grant(frozenset({"status", "total"}))
    everything = (*rules, rule({"key": {"PK": "USER#{sub}"}}))
    assert grant(everything, ALICE, {"PK": "USER#alice"}) == Grant(None)


def test_union_of_grants_for_one_message() -> None:
    assert union([Grant(frozenset({"a"})), Grant(frozenset({"b"}))]) == Grant(frozenset("ab"))
    assert union([Grant(frozenset({"a"})), Grant(None)]) == Grant(None)


def test_trim_keeps_granted_fields_and_the_key_attributes() -> None:
    image = {"PK": 1, "SK": 2, "status": 3, "secret": 4}
    assert trim(image, frozenset({"status"}), ("PK", "SK")) == {"PK": 1, "SK": 2, "status": 3}
    assert trim(image, None, ("PK",)) == image
    assert trim(None, frozenset(), ("PK",)) is None
