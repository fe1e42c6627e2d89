"""The infra tests' view of ``emulator.program``: run programs under recording mocks.

The tests run ``__main__.py`` without Pulumi.yaml's defaults, as Pulumi mocks
do, so the program must carry its own.
"""

from __future__ import annotations

from collections.abc import Mapping

from emulator import program
from emulator.program import (
    ACCOUNT,
    PROJECT,
    REGION,
    ROOT,
    Declared,
    RecordingMocks,
    retrieve_failures,
    run,
    stack_config,
    unretrieved_failures,
)

DEV_SECRET = "dev-secret-for-tests-0123456789abcdef"
MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"


def stream_mappings(mocks: RecordingMocks) -> list[Declared]:
    """The broadcaster's stream mappings (one per source), not the senders' queue mapping."""
    return [r for r in mocks.of_type(MAPPING) if "-source-" in r.name]


def stream_mapping(mocks: RecordingMocks) -> Declared:
    (found,) = stream_mappings(mocks)
    return found


__all__ = [
    "ACCOUNT",
    "DEV_SECRET",
    "MAPPING",
    "PROJECT",
    "REGION",
    "ROOT",
    "Declared",
    "RecordingMocks",
    "retrieve_failures",
    "run",
    "run_main",
    "stack_config",
    "stream_mapping",
    "stream_mappings",
    "unretrieved_failures",
]


def run_main(
    stack: str = "dev",
    *,
    preview: bool = False,
    overrides: Mapping[str, str] | None = None,
    mocks: RecordingMocks | None = None,
) -> RecordingMocks:
    """Run the real ``__main__.py`` with ``Pulumi.<stack>.yaml`` and a test secret."""
    return program.run_main(
        stack, secret=DEV_SECRET, preview=preview, overrides=overrides, mocks=mocks
    )
