"""A stack with a custom domain runs locally as any other (clients use the emulator's own
address), and the banner shows the domain clients would use in AWS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.__main__ import banner
from emulator.local import Emulator, EmulatorOptions
from tests.emulator.conftest import RunningEmulator, start
from tests.infra.harness import run_main

DOMAIN = "realtime.example.com"
ZONE = "Z0123456789ABCDEFGHIJ"


@pytest.fixture(scope="module")
def domain_stack() -> Iterator[RunningEmulator]:
    yield from start(
        overrides={"customDomain": DOMAIN, "hostedZoneId": ZONE, "customDomainPath": "live"}
    )


def test_the_banner_shows_the_custom_domain_beside_the_local_address(
    domain_stack: RunningEmulator,
) -> None:
    lines = banner(domain_stack.emulator).splitlines()
    (shown,) = [line for line in lines if line.strip().startswith("In AWS")]
    assert f"wss://{DOMAIN}/live" in shown
    (local,) = [line for line in lines if line.strip().startswith("WebSocket")]
    assert "ws://127.0.0.1:" in local  # clients here still use the emulator


def test_without_a_custom_domain_there_is_no_such_line() -> None:
    emulator = Emulator(EmulatorOptions(write_state=False))
    assert emulator.custom_domain_url() is None  # nothing declared yet
    emulator.declared = run_main("dev")
    assert emulator.custom_domain_url() is None


def test_the_custom_domain_url_is_read_from_the_declared_domain_and_mapping() -> None:
    emulator = Emulator(EmulatorOptions(write_state=False))
    emulator.declared = run_main("dev", overrides={"customDomain": DOMAIN, "hostedZoneId": ZONE})
    assert emulator.custom_domain_url() == f"wss://{DOMAIN}"
