"""Cursors: signed positions bound to an identity and a subscription's scope (pure)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random

import pytest

from handlers import cursors
from handlers.cursors import (
    MAX_CURSOR_LENGTH,
    MAX_SCOPES,
    SCOPE_LENGTH,
    InvalidCursor,
    Position,
    cursor_key,
    make_cursor,
    now_cursor,
    read_cursor,
    scope_digest,
    scope_topic,
)
from handlers.topics import key_topic, table_topic, typed_part
from tests.helpers import SECRET

KEY = cursor_key(SECRET)
ORDERS_42 = key_topic("orders", [typed_part("S", "RESTAURANT#42")])
SCOPE = scope_digest(ORDERS_42, None)
OTHER_SCOPE = scope_digest(key_topic("orders", [typed_part("S", "RESTAURANT#43")]), None)
EVENT_ID = "c81e728d9d4c2f636f067f89cc14862c"
POSITION = Position(1_722_000_000_123, EVENT_ID)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def reason(text: object, sub: str | None = "alice", scope: str = SCOPE) -> str:
    with pytest.raises(InvalidCursor) as refused:
        read_cursor(KEY, text, sub, scope)
    return refused.value.reason


def signed(payload: object, key: bytes = KEY, prefix: str = "c1.") -> str:
    """A cursor with any payload, correctly signed: what only the server could make."""
    text = json.dumps(payload, separators=(",", ":"))
    part = prefix + b64(text.encode())
    return f"{part}.{b64(cursors._signature(key, part))}"


def payload_of(cursor: str) -> dict[str, object]:
    part = cursor.split(".")[1]
    payload: dict[str, object] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return payload


# --- round trip -------------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["alice", None, "ü" * 256, "x" * 256])
@pytest.mark.parametrize(
    "position",
    [POSITION, Position(0, ""), Position(cursors.MAX_RECORDED_AT_MS, "~" * 128)],
)
def test_round_trip(sub: str | None, position: Position) -> None:
    cursor = make_cursor(KEY, position, sub, SCOPE)
    assert cursor.startswith("c1.")
    assert len(cursor) <= MAX_CURSOR_LENGTH
    assert read_cursor(KEY, cursor, sub, SCOPE) == position


def test_now_cursor_sorts_before_every_change_of_its_millisecond() -> None:
    cursor = now_cursor(KEY, 5_000, "alice", SCOPE)
    position = read_cursor(KEY, cursor, "alice", SCOPE)
    assert position == Position(5_000, "")
    assert Position(4_999, "z") < position < Position(5_000, "0")


def test_payload_holds_the_documented_fields_and_no_user_id_in_clear() -> None:
    cursor = make_cursor(KEY, POSITION, "alice@example.com", SCOPE)
    payload = payload_of(cursor)
    assert set(payload) == {"t", "c", "u", "s"}
    assert payload["t"] == POSITION.recorded_at_ms
    assert payload["c"] == EVENT_ID
    assert payload["s"] == SCOPE
    assert payload["u"] == cursors.identity_digest("alice@example.com")
    assert "alice" not in cursor and "alice" not in json.dumps(payload)
    assert payload_of(make_cursor(KEY, POSITION, None, SCOPE))["u"] == ""


def test_signature_is_16_bytes_over_the_prefix_and_payload() -> None:
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    prefix, payload_part, signature = cursor.split(".")
    expected = hmac.new(KEY, f"{prefix}.{payload_part}".encode(), hashlib.sha256).digest()[:16]
    assert signature == b64(expected)


def test_key_is_derived_with_a_domain_separator() -> None:
    derived = hmac.new(SECRET.encode(), b"realtime-channel cursor v1", hashlib.sha256).digest()
    assert derived == KEY
    assert SECRET.encode() != KEY
    assert cursor_key(SECRET.encode()) == KEY
    with pytest.raises(ValueError):
        cursor_key("")


def test_another_key_is_a_bad_signature() -> None:
    cursor = make_cursor(cursor_key("another secret"), POSITION, "alice", SCOPE)
    assert reason(cursor) == "bad signature"


def test_a_token_signature_does_not_sign_a_cursor() -> None:
    """The raw token secret as a key (no domain separation) signs nothing the server reads."""
    cursor = make_cursor(SECRET.encode(), POSITION, "alice", SCOPE)
    assert reason(cursor) == "bad signature"


# --- refusals ---------------------------------------------------------------------------


def test_every_changed_character_is_refused() -> None:
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.="
    rng = random.Random(9)
    for index, original in enumerate(cursor):
        replacements = [c for c in alphabet if c != original]
        for replacement in rng.sample(replacements, 6):
            tampered = cursor[:index] + replacement + cursor[index + 1 :]
            with pytest.raises(InvalidCursor):
                read_cursor(KEY, tampered, "alice", SCOPE)


def test_every_changed_payload_byte_is_refused_even_re_encoded() -> None:
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    prefix, payload_part, signature = cursor.split(".")
    raw = base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4))
    for index in range(len(raw)):
        for flip in (1, 0x20, 0x80):
            changed = bytearray(raw)
            changed[index] ^= flip
            assert reason(f"{prefix}.{b64(bytes(changed))}.{signature}") == "bad signature"


def test_another_spelling_of_the_same_bytes_is_refused() -> None:
    """Unused trailing bits set: same bytes, same signature, yet not the cursor we issued."""
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    prefix, payload_part, signature = cursor.split(".")

    def decoded(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    respelled = 0
    for part, rebuild in (
        (payload_part, lambda p: f"{prefix}.{p}.{signature}"),
        (signature, lambda p: f"{prefix}.{payload_part}.{p}"),
    ):
        for char in alphabet:
            other = part[:-1] + char
            if other != part and decoded(other) == decoded(part):
                respelled += 1
                assert reason(rebuild(other)) in ("malformed: not base64url", "bad signature")
    assert respelled > 0


def test_dropped_or_added_characters_are_refused() -> None:
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    for index in range(len(cursor)):
        with pytest.raises(InvalidCursor):
            read_cursor(KEY, cursor[:index] + cursor[index + 1 :], "alice", SCOPE)
    for extra in ("A", ".", "=", " "):
        with pytest.raises(InvalidCursor):
            read_cursor(KEY, cursor + extra, "alice", SCOPE)


def test_another_identity_is_refused() -> None:
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    assert reason(cursor, sub="bob") == "another identity"
    assert reason(cursor, sub=None) == "another identity"
    assert reason(make_cursor(KEY, POSITION, None, SCOPE), sub="alice") == "another identity"
    assert reason(cursor, sub="alice ") == "another identity"


def test_another_scope_is_refused() -> None:
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    assert reason(cursor, scope=OTHER_SCOPE) == "another scope"
    assert reason(cursor, scope=scope_digest(table_topic("orders"), None)) == "another scope"


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        42,
        b"c1.abc.def",
        "c1.",
        "c1..",
        "c1.abc",
        "c1.abc.def.ghi",
        "c1.e30.",
        "c1.e30=.AAAAAAAAAAAAAAAAAAAAAA",
        "c1.e 30.AAAAAAAAAAAAAAAAAAAAAA",
        "c1.é.AAAAAAAAAAAAAAAAAAAAAA",
        "c1.e30.AAAAAAAAAAAAAAAAAAAAAB",  # non-canonical base64url (trailing bits)
    ],
)
def test_malformed_is_refused(text: object) -> None:
    assert reason(text).startswith(("malformed", "bad signature", "unknown version"))


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "x",
        {},
        {"t": 1, "c": "", "u": ""},
        {"t": 1, "c": "", "u": "", "s": SCOPE, "x": 1},
        {"t": "1", "c": "", "u": "", "s": SCOPE},
        {"t": True, "c": "", "u": "", "s": SCOPE},
        {"t": 1.0, "c": "", "u": "", "s": SCOPE},
        {"t": -1, "c": "", "u": "", "s": SCOPE},
        {"t": 10**13, "c": "", "u": "", "s": SCOPE},
        {"t": 1, "c": None, "u": "", "s": SCOPE},
        {"t": 1, "c": "a b", "u": "", "s": SCOPE},
        {"t": 1, "c": "x" * 129, "u": "", "s": SCOPE},
        {"t": 1, "c": "", "u": None, "s": SCOPE},
        {"t": 1, "c": "", "u": "", "s": 7},
    ],
)
def test_a_signed_but_malformed_payload_is_refused(payload: object) -> None:
    assert reason(signed(payload), sub=None).startswith("malformed")


def test_a_signed_payload_that_is_not_json_is_refused() -> None:
    for raw in (b"{", b"NaN", b'{"t": 1e400}', b"\xff"):
        part = "c1." + b64(raw)
        cursor = f"{part}.{b64(cursors._signature(KEY, part))}"
        assert reason(cursor, sub=None).startswith("malformed")


def test_a_well_formed_signed_payload_reads() -> None:
    """The refusals above are about their one defect: this payload, signed, is accepted."""
    payload = {"t": 7, "c": "e1", "u": "", "s": SCOPE}
    assert read_cursor(KEY, signed(payload), None, SCOPE) == Position(7, "e1")


def test_too_long_is_refused_before_anything_else() -> None:
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    padded = cursor + "A" * (MAX_CURSOR_LENGTH + 1 - len(cursor))
    assert reason(padded) == "too long"
    assert reason("c1." + "A" * 10_000) == "too long"


def test_wrong_version_prefix_is_refused() -> None:
    cursor = make_cursor(KEY, POSITION, "alice", SCOPE)
    body = cursor[len("c1.") :]
    for prefix in ("c2.", "C1.", "c1", "", "c0.", "v1."):
        assert reason(prefix + body) == "unknown version"
    # the version is signed: the same payload signed under another prefix is refused
    assert reason(signed(payload_of(cursor), prefix="c2.")) == "unknown version"


def test_make_cursor_refuses_what_it_could_not_read_back() -> None:
    with pytest.raises(ValueError):
        Position(-1, "")
    with pytest.raises(ValueError):
        Position(1, "x" * 129)
    with pytest.raises(ValueError):
        Position(1, "a\nb")
    with pytest.raises(ValueError):
        make_cursor(KEY, POSITION, "alice", "s" * MAX_CURSOR_LENGTH)


# --- ordering ---------------------------------------------------------------------------


def test_positions_order_by_time_then_change_id() -> None:
    expected = [
        Position(999, "zzz"),
        Position(1_000, ""),
        Position(1_000, "0a"),
        Position(1_000, "a"),
        Position(1_000, "ab"),
        Position(1_000, "b"),
        Position(1_001, "0"),
        Position(10_000, "0"),
    ]
    shuffled = expected[:]
    random.Random(1).shuffle(shuffled)
    assert sorted(shuffled) == expected


def test_sort_text_orders_as_positions_do() -> None:
    rng = random.Random(3)
    positions = [
        Position(
            rng.choice([0, 5, 99, 1_000, 10**12, 10**13 - 1]), rng.choice(["", "a", "a0", "b"])
        )
        for _ in range(200)
    ]
    by_text = sorted(positions, key=lambda p: p.sort_text.encode("utf-8"))
    assert by_text == sorted(positions)
    for position in positions:
        assert Position.from_sort_text(position.sort_text) == position


def test_sort_text_shape_and_parsing() -> None:
    assert POSITION.sort_text == f"1722000000123#{EVENT_ID}"
    assert Position(5, "").sort_text == "0000000000005#"
    for bad in ("", "123#a", "00000000000050a", "000000000000x#a", "\u0660" * 13 + "#a"):
        with pytest.raises(ValueError):
            Position.from_sort_text(bad)


# --- scope ------------------------------------------------------------------------------


def item(table: str, pk: str, sk: str | None = None) -> str:
    parts = [typed_part("S", pk)] + ([typed_part("S", sk)] if sk is not None else [])
    return key_topic(table, parts)


def test_scope_digest_is_stable_and_short() -> None:
    topic = item("orders", "A", "B")
    digest = scope_digest(topic, '[{"status":"paid"}]')
    assert len(digest) == SCOPE_LENGTH == 16
    # pinned: a change to the canonical form would reset every client's cursor
    canonical = json.dumps([topic, '[{"status":"paid"}]'], separators=(",", ":"))
    assert digest == b64(hashlib.sha256(canonical.encode()).digest()[:12])


def test_every_bucket_of_a_table_topic_is_one_scope() -> None:
    assert scope_topic(table_topic("orders", 3)) == table_topic("orders", 0)
    assert scope_digest(table_topic("orders", 3), None) == scope_digest(table_topic("orders"), None)
    assert scope_topic(item("orders", "A")) == item("orders", "A")


def test_scope_digest_is_sensitive_to_each_part() -> None:
    base = (item("orders", "A"), '[{"n":1}]')
    variants = [
        (item("orders2", "A"), '[{"n":1}]'),
        (item("orders", "B"), '[{"n":1}]'),
        (item("orders", "A", "x"), '[{"n":1}]'),
        (table_topic("orders"), '[{"n":1}]'),
        (key_topic("orders", [typed_part("N", "1")]), '[{"n":1}]'),
        (key_topic("orders", [typed_part("S", "1")]), '[{"n":1}]'),
        (item("orders", "A"), '[{"n":2}]'),
        (item("orders", "A"), None),
        (item("orders", "A"), "null"),
    ]
    digests = {scope_digest(*base)} | {scope_digest(*variant) for variant in variants}
    assert len(digests) == len(variants) + 1


def test_scope_digest_has_no_ambiguous_joins() -> None:
    assert scope_digest(item("a", "b|c"), None) != scope_digest(item("a|b", "c"), None)
    assert scope_digest(item("t", "A#B", "C"), None) != scope_digest(item("t", "A", "B#C"), None)


def test_a_cursor_of_several_scopes_resumes_each_of_them_and_no_other() -> None:
    scopes = [scope_digest(item("orders", f"R{n}"), None) for n in range(MAX_SCOPES)]
    cursor = make_cursor(KEY, POSITION, "alice", scopes)
    assert len(cursor) <= MAX_CURSOR_LENGTH
    for scope in scopes:
        assert read_cursor(KEY, cursor, "alice", scope) == POSITION
    assert reason(cursor, scope=scope_digest(item("orders", "other"), None)) == "another scope"
    # a digest straddling two listed ones is not a scope of the cursor
    joined = "".join(scopes)
    assert reason(cursor, scope=joined[8:24]) == "another scope"
    with pytest.raises(ValueError):
        make_cursor(KEY, POSITION, "alice", [*scopes, scope_digest(item("x", "y"), None)])
    with pytest.raises(ValueError):
        make_cursor(KEY, POSITION, "alice", [])
    with pytest.raises(ValueError):
        make_cursor(KEY, POSITION, "alice", "short")


def test_scope_digest_refuses_bad_parts() -> None:
    with pytest.raises(ValueError):
        scope_digest("", None)
    with pytest.raises(ValueError):
        scope_digest(table_topic("orders"), {"n": 1})  # type: ignore[arg-type]
