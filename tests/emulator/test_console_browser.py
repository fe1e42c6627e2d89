"""The console page in headless Chromium, as a person uses it: ``python -m emulator`` (what
``make dev`` runs) prints the console URL; the page opens, connects through the JavaScript
client and subscribes to the first source table-wide; items written with the CLI, and with
the page's own write form, show in its feed (with their ``matches``) and in the
subscriptions' items; a refused subscription shows its code. A screenshot is saved to
``build/console.png``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``sudo apt-get install chromium
chromium-driver``) and the ``selenium`` package (requirements-dev.txt): without them the
test is skipped on a developer's machine and fails in CI (``CI`` set), which must run it.
Selenium is pointed at the installed chromedriver, so Selenium Manager never downloads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

from emulator.local import free_port
from emulator.program import ROOT
from tests.emulator.test_cli import BANNER_END, Cli, _read_until, spawn_dev

INSTALL = "sudo apt-get install chromium chromium-driver"
SCREENSHOT = ROOT / "build" / "console.png"
WAIT = 30.0
"""Seconds any one thing may take to show in the page."""
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1150",
)


def browser_tools() -> tuple[str, str]:
    """Chromium's and chromedriver's paths; skip (fail in CI) when something is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    missing = [
        name
        for name, path in (("chromium", chromium), ("chromedriver", chromedriver))
        if path is None
    ]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (make install)")
    if chromium is None or chromedriver is None or missing:
        message = (
            f"the console's browser test needs {' and '.join(missing)}:"
            f" {INSTALL} (and make install for selenium)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run it (.ci/run installs them)", pytrace=False)
        pytest.skip(message)
    return chromium, chromedriver


class Log(threading.Thread):
    """The emulator's output after its banner, line by line (the last 5,000 lines)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: deque[str] = deque(maxlen=5000)

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line.rstrip("\n"))

    def count(self, needle: str) -> int:
        return sum(needle in line for line in list(self.lines))


class Dev(Cli):
    """The running emulator (as ``test_cli``'s ``Cli``) and what it logs."""

    def __init__(
        self, process: subprocess.Popen[str], banner: list[str], env: dict[str, str], log: Log
    ) -> None:
        super().__init__(process, banner, env)
        self.log = log


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """``python -m emulator`` on a free port, as ``make dev`` runs it, with its banner."""
    browser_tools()  # skip before starting anything
    process, env = spawn_dev(tmp_path_factory.mktemp("state"), free_port())
    try:
        assert process.stdout is not None
        banner = _read_until(process.stdout, BANNER_END, timeout=90)
        # read what it logs from now on, so it never blocks on a full pipe
        log = Log(process.stdout)
        log.start()
        yield Dev(process, banner, env, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, chromedriver = browser_tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: Selenium Manager is never run, nothing is downloaded
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_url(dev: Dev) -> str:
    match = re.search(r"(http://127\.0\.0\.1:\d+/\?console=\S+)", dev.line("Console"))
    assert match, dev.banner
    return match.group(1)


def wait_until(driver: Any, what: str, condition: Callable[[Any], Any]) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition)
    except TimeoutException:
        failed = SCREENSHOT.with_name("console-failed.png")
        failed.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(failed))
        raise AssertionError(
            f"the page did not show {what} within {WAIT:g} s (screenshot: {failed})"
        ) from None


def text(driver: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return "\n".join(element.text for element in driver.find_elements(By.CSS_SELECTOR, selector))


def card(subscription: str) -> str:
    return f'.subscription[data-id="{subscription}"]'


def feed_entry(driver: Any, needle: str, action: str) -> Any:
    """The feed's entry of the change whose text holds ``needle``, once it is there."""
    from selenium.webdriver.common.by import By

    for entry in driver.find_elements(By.CSS_SELECTOR, f'#feed li[data-action="{action}"]'):
        if needle in entry.text:
            return entry
    return None


def matches_of(entry: Any) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    return {
        chip.get_attribute("data-subscription"): chip.get_attribute("data-type")
        for chip in entry.find_elements(By.CSS_SELECTOR, ".match")
    }


def fill(driver: Any, form: str, field: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.CSS_SELECTOR, f'#{form} [name="{field}"]')
    element.clear()
    element.send_keys(value)


def submit(driver: Any, form: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'#{form} button[type="submit"]').click()


@pytest.mark.slow
def test_the_console_shows_writes_live_in_headless_chromium(dev: Dev, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    started = time.monotonic()
    room = f"ROOM#{uuid.uuid4().hex[:8]}"
    browser.get(console_url(dev))

    # connected, and subscribed to the first source table-wide
    wait_until(browser, "the state open", lambda d: text(d, "#state") == "open")
    wait_until(
        browser,
        "s1 (events, whole table) live",
        lambda d: d.find_elements(By.CSS_SELECTOR, f'{card("s1")}[data-status="live"]'),
    )
    assert "events · whole table" in text(browser, card("s1"))
    assert "dev-user" in text(browser, "#stack")

    # a write with the CLI, as a user types it: in the feed (matches) and in s1's items
    first = {"PK": room, "SK": "MSG#1", "text": "hello from the CLI"}
    written = dev.run("put", "events", json.dumps(first))
    assert written.returncode == 0, written.stderr
    entry = wait_until(
        browser,
        "the CLI's item in the feed",
        lambda d: feed_entry(d, "hello from the CLI", "created"),
    )
    assert matches_of(entry) == {"s1": "added"}
    wait_until(
        browser,
        "the CLI's item in s1's items",
        lambda d: "hello from the CLI" in text(d, f"{card('s1')} tr.item"),
    )

    # a refused subscription is shown with its code, not swallowed
    fill(browser, "subscribe-form", "table", "nosuchtable")
    submit(browser, "subscribe-form")
    wait_until(
        browser,
        "s2 refused",
        lambda d: d.find_elements(By.CSS_SELECTOR, f'{card("s2")}[data-status="refused"]'),
    )
    assert "refused: unknown_table" in text(browser, card("s2"))
    assert "unknown_table" in text(browser, "#errors")

    # a keyed subscription with a snapshot: its items start with what the room holds
    fill(browser, "subscribe-form", "table", "events")
    fill(browser, "subscribe-form", "key", json.dumps({"PK": room}))
    browser.find_element(By.CSS_SELECTOR, '#subscribe-form [name="snapshot"]').click()
    submit(browser, "subscribe-form")
    wait_until(
        browser,
        "s3's snapshot",
        lambda d: "hello from the CLI" in text(d, f'{card("s3")}[data-status="live"] tr.item'),
    )

    # the page's own write form (the guarded endpoint, with Chromium's own Origin)
    second = {"PK": room, "SK": "MSG#2", "text": "written in the page", "seats": 42}
    fill(browser, "write-form", "item", json.dumps(second))
    submit(browser, "write-form")
    wait_until(browser, "the write's answer", lambda d: text(d, "#write-result").startswith("put:"))
    entry = wait_until(
        browser,
        "the page's item in the feed",
        lambda d: feed_entry(d, "written in the page", "created"),
    )
    assert matches_of(entry) == {"s1": "added", "s3": "added"}
    wait_until(
        browser,
        "both items in s3's items",
        lambda d: len(d.find_elements(By.CSS_SELECTOR, f"{card('s3')} tr.item")) == 2,
    )

    # a delete with the CLI: removed from the feed's subscriptions and from their items
    deleted = dev.run("delete", "events", json.dumps({"PK": room, "SK": "MSG#1"}))
    assert deleted.returncode == 0, deleted.stderr
    entry = wait_until(browser, "the delete in the feed", lambda d: feed_entry(d, room, "deleted"))
    assert matches_of(entry) == {"s1": "removed", "s3": "removed"}
    wait_until(
        browser,
        "the deleted item gone from s3",
        lambda d: "hello from the CLI" not in text(d, f"{card('s3')} tr.item"),
    )
    assert "hello from the CLI" not in text(browser, f"{card('s1')} tr.item")
    assert "written in the page" in text(browser, f"{card('s1')} tr.item")
    assert text(browser, "#state") == "open"

    # dropped by the server (@connections DELETE): the client reconnects with a fresh token
    # from the console and resumes; a write made after the drop shows as before
    log = dev.log
    tokens = log.count("console: a token for dev-user")
    assert tokens >= 1
    dropped = dev.run("drop", "dev-user")
    assert dropped.returncode == 0, dropped.stderr
    wait_until(
        browser,
        "a reconnect with a fresh token",
        lambda d: (
            log.count("console: a token for dev-user") > tokens and text(d, "#state") == "open"
        ),
    )
    third = {"PK": room, "SK": "MSG#3", "text": "after the drop"}
    written = dev.run("put", "events", json.dumps(third))
    assert written.returncode == 0, written.stderr
    entry = wait_until(
        browser, "the item after the drop", lambda d: feed_entry(d, "after the drop", "created")
    )
    assert matches_of(entry) == {"s1": "added", "s3": "added"}
    assert log.count("console: refused") == 0

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    problems = [
        entry
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "unknown_table" not in entry["message"]
    ]
    assert not problems, problems  # the page's modules loaded and ran without an error
    print(f"browser test: {time.monotonic() - started:.1f} s in the page; {SCREENSHOT}")


@pytest.mark.slow
def test_a_snapshot_view_stays_right_across_a_resume(dev: Dev, browser: Any) -> None:
    """An item in a keyed subscription's snapshot, deleted live, then a drop and resume: the
    view must not hold the deleted item again."""
    from selenium.webdriver.common.by import By

    room = f"ROOM#{uuid.uuid4().hex[:8]}"
    browser.get(console_url(dev))
    wait_until(browser, "the state open", lambda d: text(d, "#state") == "open")
    written = dev.run("put", "events", json.dumps({"PK": room, "SK": "A", "text": "in snapshot"}))
    assert written.returncode == 0, written.stderr
    fill(browser, "subscribe-form", "key", json.dumps({"PK": room}))
    browser.find_element(By.CSS_SELECTOR, '#subscribe-form [name="snapshot"]').click()
    fill(browser, "subscribe-form", "id", "room")
    submit(browser, "subscribe-form")
    wait_until(
        browser,
        "the snapshot",
        lambda d: "in snapshot" in text(d, f'{card("room")}[data-status="live"] tr.item'),
    )
    deleted = dev.run("delete", "events", json.dumps({"PK": room, "SK": "A"}))
    assert deleted.returncode == 0, deleted.stderr
    wait_until(
        browser, "the delete", lambda d: "in snapshot" not in text(d, f"{card('room')} tr.item")
    )
    tokens = dev.log.count("console: a token for dev-user")
    dropped = dev.run("drop", "dev-user")
    assert dropped.returncode == 0, dropped.stderr
    wait_until(
        browser,
        "a reconnect",
        lambda d: (
            dev.log.count("console: a token for dev-user") > tokens and text(d, "#state") == "open"
        ),
    )
    marker = {"PK": room, "SK": "B", "text": "after the resume"}
    assert dev.run("put", "events", json.dumps(marker)).returncode == 0
    wait_until(
        browser, "the resume", lambda d: "after the resume" in text(d, f"{card('room')} tr.item")
    )
    assert "in snapshot" not in text(browser, f"{card('room')} tr.item")


@pytest.mark.slow
def test_without_the_console_token_the_page_says_how_to_open_it(dev: Dev, browser: Any) -> None:
    url = console_url(dev)
    browser.get(url.split("?", 1)[0])
    wait_until(browser, "the problem", lambda d: "console token" in text(d, "#problem"))
    assert text(browser, "#state") == "closed"
    browser.get(url.replace("?console=", "?console=wrong"))
    wait_until(browser, "the refusal", lambda d: "refused the console" in text(d, "#problem"))
    assert "forbidden" in text(browser, "#problem")


def test_the_browser_test_is_skipped_outside_ci_and_fails_in_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        browser_tools()
    assert INSTALL in str(skipped.value)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        browser_tools()
    assert INSTALL in str(failed.value)
