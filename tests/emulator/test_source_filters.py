"""A stack's own source filter end to end: the emulator runs a program whose source has a
``SourceFilter`` on a ``NEW_AND_OLD_IMAGES`` table (the stack config has no key for source
filters, so the test brings its own program: Pulumi.yaml and Pulumi.dev.yaml of the repository
beside a small ``__main__.py``). The stream poller applies the mapping's two Lambda filters
(the rule on NewImage and on OldImage) with the functions' matcher, and the broadcaster hides
the images the filter leaves out, so a subscriber sees an item enter the filter as ``added``
and leave it as ``removed`` (keys only).

Proof that something was *not* sent leans on stream order, as in test_subscriptions.py.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.program import ROOT
from tests.emulator.conftest import RunningEmulator, receive_json, start, subscribe

PROGRAM = """
import dataclasses

import pulumi_aws as aws

from components import AccessRule, RealtimeChannel, SourceFilter, stack_config

settings = stack_config.load()
events = aws.dynamodb.Table(
    "events",
    billing_mode="PAY_PER_REQUEST",
    hash_key="PK",
    range_key="SK",
    attributes=[
        aws.dynamodb.TableAttributeArgs(name="PK", type="S"),
        aws.dynamodb.TableAttributeArgs(name="SK", type="S"),
    ],
    stream_enabled=True,
    stream_view_type="NEW_AND_OLD_IMAGES",
)
source = dataclasses.replace(
    settings.source(events, name="events", access=[AccessRule(table=True)]),
    filters=[SourceFilter(new_image={"status": ["paid"]})],
)
RealtimeChannel("realtime", settings.channel_args([source]))
"""


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningEmulator]:
    root = tmp_path_factory.mktemp("source-filter-stack")
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml"):
        shutil.copy(ROOT / name, root / name)
    (root / "__main__.py").write_text(PROGRAM)
    yield from start(root=Path(root), overrides={"includeOldImage": "true"})


def put(local: RunningEmulator, pk: str, **attributes: str) -> None:
    item: dict[str, Any] = {"PK": {"S": pk}, "SK": {"S": "METADATA"}}
    item.update({name: {"S": value} for name, value in attributes.items()})
    local.dynamodb().put_item(TableName=local.table(), Item=item)


def delete(local: RunningEmulator, pk: str) -> None:
    local.dynamodb().delete_item(
        TableName=local.table(), Key={"PK": {"S": pk}, "SK": {"S": "METADATA"}}
    )


def test_the_mapping_matches_both_images_and_the_broadcaster_knows_the_filter(
    filtered: RunningEmulator,
) -> None:
    assert filtered.emulator.model is not None
    (mapping,) = filtered.emulator.model.mappings
    rule = {"status": {"S": ["paid"]}}
    assert [json.loads(p) for p in mapping.filters] == [
        {"dynamodb": {"NewImage": rule}},
        {"dynamodb": {"OldImage": rule}},
    ]
    environments = [f.environment for f in filtered.emulator.model.functions.values()]
    (sources,) = {e["SOURCES"] for e in environments if "SOURCES" in e}  # default, broadcaster
    assert json.loads(sources)["events"]["filters"] == [{"dynamodb": {"NewImage": rule}}]


def test_an_item_entering_and_leaving_the_source_filter_is_added_then_removed(
    filtered: RunningEmulator,
) -> None:
    with filtered.connect("alice") as client:
        subscribe(client, "all")

        put(filtered, "ORDER#1", status="new", note="outside")  # never reaches the broadcaster
        put(filtered, "ORDER#1", status="paid", note="in")  # enters: added
        put(filtered, "ORDER#1", status="paid", note="still in")  # modified
        put(filtered, "ORDER#1", status="shipped", note="out")  # leaves: removed, keys only
        put(filtered, "ORDER#1", status="done", note="outside")  # outside before and after
        put(filtered, "ORDER#2", status="paid")  # added
        delete(filtered, "ORDER#2")  # deleted while in the filter: removed
        put(filtered, "ORDER#3", status="new")
        delete(filtered, "ORDER#3")  # deleted outside the filter: nothing
        put(filtered, "ORDER#4", status="paid", note="last")  # the marker

        seen = []
        while not seen or seen[-1]["keys"]["PK"] != "ORDER#4":
            seen.append(receive_json(client))
        assert [(m["keys"]["PK"], m["action"], m["matches"]["all"]) for m in seen] == [
            ("ORDER#1", "updated", "added"),
            ("ORDER#1", "updated", "modified"),
            ("ORDER#1", "updated", "removed"),
            ("ORDER#2", "created", "added"),
            ("ORDER#2", "deleted", "removed"),
            ("ORDER#4", "created", "added"),
        ]
        entered, modified, left, _, deleted, _ = seen
        assert entered["data"]["note"] == "in" and "old" not in entered  # outside before
        assert modified["old"]["note"] == "in"
        assert left["keys"] == {"PK": "ORDER#1", "SK": "METADATA"}
        assert "data" not in left and "old" not in left  # keys only
        assert deleted["old"]["status"] == "paid"
