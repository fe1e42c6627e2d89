"""The console page's server side (``emulator/console.py``) against a running emulator: its
files, and the guard on its API (console token, own Host, own Origin, JSON), over raw HTTP
so every header is the test's choice."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from emulator.console import CLIENT_DIR, PAGE_DIR, TOKEN_HEADER, client_file
from tests.emulator.conftest import RunningEmulator, receive_json, start


@pytest.fixture(scope="module")
def console() -> Iterator[RunningEmulator]:
    """The dev stack as `make dev` runs it."""
    yield from start()


class _Http10(http.client.HTTPConnection):
    _http_vsn = 10
    _http_vsn_str = "HTTP/1.0"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    emulator: RunningEmulator,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | str | None = None,
) -> Answer:
    """One HTTP request to the emulator with exactly these headers (``Host`` too: none is
    added). Without a Host header the request is HTTP/1.0's, which may have none (aiohttp's
    parser answers an HTTP/1.1 request without one 400 before any handler runs)."""
    kind = http.client.HTTPConnection if "Host" in (headers or {}) else _Http10
    connection = kind("127.0.0.1", emulator.emulator.port, timeout=20)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        data = body.encode() if isinstance(body, str) else body
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def own(emulator: RunningEmulator, host: str = "127.0.0.1") -> str:
    return f"{host}:{emulator.emulator.port}"


def good_headers(emulator: RunningEmulator, host: str = "127.0.0.1") -> dict[str, str]:
    """What the page sends: its own Host and Origin, the console token, JSON."""
    return {
        "Host": own(emulator, host),
        "Origin": f"http://{own(emulator, host)}",
        "Content-Type": "application/json",
        TOKEN_HEADER: emulator.emulator.console_token,
    }


def fresh_item() -> dict[str, Any]:
    return {"PK": f"CONSOLE#{uuid.uuid4().hex}", "SK": "METADATA", "title": "from the console"}


def stored(emulator: RunningEmulator, item: dict[str, Any]) -> dict[str, Any] | None:
    found = emulator.dynamodb().get_item(
        TableName=emulator.table("events"),
        Key={"PK": {"S": item["PK"]}, "SK": {"S": item["SK"]}},
        ConsistentRead=True,
    )
    return found.get("Item")


def put(emulator: RunningEmulator, headers: dict[str, str], item: dict[str, Any]) -> Answer:
    return request(
        emulator, "POST", "/console/put", headers, json.dumps({"table": "events", "item": item})
    )


# -- the page and its files -------------------------------------------------------------------


def test_the_console_url_names_this_emulator_and_its_console_token(
    console: RunningEmulator,
) -> None:
    emulator = console.emulator
    assert emulator.console_url == (
        f"http://127.0.0.1:{emulator.port}/?console={emulator.console_token}"
    )
    assert len(emulator.console_token) >= 32  # 24 random bytes, URL-safe


def test_the_page_is_served_with_a_policy_that_forbids_framing(console: RunningEmulator) -> None:
    answer = request(console, "GET", f"/?console={console.emulator.console_token}", {
        "Host": own(console)
    })  # fmt: skip
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert answer.body == (PAGE_DIR / "index.html").read_bytes()
    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Referrer-Policy"] == "no-referrer"  # the URL carries the token


@pytest.mark.parametrize(
    ("path", "file"),
    [
        ("/console/static/console.js", PAGE_DIR / "console.js"),
        ("/client/index.js", CLIENT_DIR / "index.js"),
        ("/client/src/client.js", CLIENT_DIR / "src" / "client.js"),
        ("/client/src/view.js", CLIENT_DIR / "src" / "view.js"),
    ],
)
def test_modules_are_served_as_javascript(console: RunningEmulator, path: str, file: Path) -> None:
    answer = request(console, "GET", path, {"Host": own(console)})
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.body == file.read_bytes()


def test_every_module_the_client_imports_is_served(console: RunningEmulator) -> None:
    """The page loads the client unbundled: each src/*.js must be reachable."""
    modules = sorted(path.name for path in (CLIENT_DIR / "src").glob("*.js"))
    assert "client.js" in modules
    for name in modules:
        assert request(console, "GET", f"/client/src/{name}", {"Host": own(console)}).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/client/../README.md",
        "/client/../../README.md",
        "/client/src/../../../emulator/local.py",
        "/client/%2e%2e/%2e%2e/README.md",
        "/client/src/..%2f..%2f..%2fREADME.md",
        "/client/src/%2e%2e%2fpackage.json",
        "/client/package.json",
        "/client/.npmrc",
        "/client/index.d.ts",
        "/client/test/support/fakes.js",
        "/client/src/",
        "/client/src",
        "/client//etc/passwd",
        "/client/src/client.js%00.txt",
        "/client/SRC/client.js",
        "/console/static/../console.py",
        "/console/static/%2e%2e%2fconsole.py",
        "/console/static/index.html",
    ],
)
def test_static_paths_cannot_escape_the_served_files(console: RunningEmulator, path: str) -> None:
    answer = request(console, "GET", path, {"Host": own(console)})
    assert answer.status in (400, 403, 404), (path, answer.status)
    for secret in (b"realtime-channel", b"import ", b"root:", b"STATE_DIR", b"registry"):
        assert secret not in answer.body, path


def test_client_file_refuses_a_link_out_of_the_client(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "index.js").write_text("export {};\n")
    (tmp_path / "src" / "ok.js").write_text("export {};\n")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.js"
    outside.write_text("secret\n")
    (tmp_path / "src" / "escape.js").symlink_to(outside)
    assert client_file("index.js", tmp_path) == (tmp_path / "index.js").resolve()
    assert client_file("src/ok.js", tmp_path) == (tmp_path / "src" / "ok.js").resolve()
    assert client_file("src/escape.js", tmp_path) is None
    assert client_file("src/missing.js", tmp_path) is None
    assert client_file("../x.js", tmp_path) is None


def test_a_foreign_host_cannot_read_the_page(console: RunningEmulator) -> None:
    """DNS rebinding: a page on evil.example whose name now points at 127.0.0.1 sends its
    own name in Host."""
    for host in (f"evil.example:{console.emulator.port}", "127.0.0.1", "127.0.0.1:1", ""):
        answer = request(console, "GET", "/", {"Host": host} if host else {})
        assert answer.status == 403, host
        assert answer.json()["error"] == "forbidden"
        assert "Host header" in answer.json()["message"]


# -- the guard on writes ----------------------------------------------------------------------


Headers = dict[str, str]


def _without(headers: Headers, name: str) -> Headers:
    return {key: value for key, value in headers.items() if key != name}


def _wrong(token: str) -> str:
    return ("A" if token[0] != "A" else "B") + token[1:]


# name -> (the page's good headers, the port, the console token -> the headers sent), and
# what the refusal's message names
REFUSALS: dict[str, tuple[Callable[[Headers, int, str], Headers], str]] = {
    "no console token": (lambda good, port, token: _without(good, TOKEN_HEADER), "console token"),
    "a wrong console token": (
        lambda good, port, token: {**good, TOKEN_HEADER: _wrong(token)},
        "console token",
    ),
    "an empty console token": (
        lambda good, port, token: {**good, TOKEN_HEADER: ""},
        "console token",
    ),
    "a foreign Origin": (
        lambda good, port, token: {**good, "Origin": "http://evil.example"},
        "Origin",
    ),
    "Origin null": (lambda good, port, token: {**good, "Origin": "null"}, "Origin"),
    "no Origin": (lambda good, port, token: _without(good, "Origin"), "Origin"),
    "another port's Origin": (
        lambda good, port, token: {**good, "Origin": "http://127.0.0.1:1"},
        "Origin",
    ),
    "an https Origin": (
        lambda good, port, token: {**good, "Origin": f"https://127.0.0.1:{port}"},
        "Origin",
    ),
    "a rebinding Host and its Origin": (
        lambda good, port, token: {
            **good,
            "Host": f"evil.example:{port}",
            "Origin": f"http://evil.example:{port}",
        },
        "Host header",
    ),
    "no Host": (lambda good, port, token: _without(good, "Host"), "Host header"),
    "a text/plain body": (
        lambda good, port, token: {**good, "Content-Type": "text/plain"},
        "Content-Type",
    ),
    "a form's body": (
        lambda good, port, token: {**good, "Content-Type": "application/x-www-form-urlencoded"},
        "Content-Type",
    ),
    "no Content-Type": (lambda good, port, token: _without(good, "Content-Type"), "Content-Type"),
}


def refused_headers(emulator: RunningEmulator, case: str) -> Headers:
    build, _ = REFUSALS[case]
    return build(good_headers(emulator), emulator.emulator.port, emulator.emulator.console_token)


@pytest.mark.parametrize("case", list(REFUSALS))
def test_a_write_that_fails_the_guard_is_refused_and_writes_nothing(
    console: RunningEmulator, case: str
) -> None:
    item = fresh_item()
    answer = put(console, refused_headers(console, case), item)
    assert answer.status == 403, answer.body
    assert answer.json()["error"] == "forbidden"
    assert REFUSALS[case][1] in answer.json()["message"]
    assert stored(console, item) is None
    assert any("console: refused POST /console/put" in line for line in console.lines)


def test_the_pages_own_request_writes_the_item_exactly(console: RunningEmulator) -> None:
    item = fresh_item()
    # numbers a float cannot hold: stored exactly, as the CLI parses them
    text = json.dumps(item)[:-1] + ', "price": 0.1, "big": 12345678901234567890.5}'
    body = '{"table": "events", "item": ' + text + "}"
    answer = request(console, "POST", "/console/put", good_headers(console), body)
    assert answer.status == 200, answer.body
    assert answer.json() == {"ok": True, "command": "put", "table": console.table("events")}
    found = stored(console, item)
    assert found is not None
    assert found["title"] == {"S": "from the console"}
    assert found["price"] == {"N": "0.1"}
    assert found["big"] == {"N": "12345678901234567890.5"}


def test_localhost_and_its_origin_are_the_emulators_own_too(console: RunningEmulator) -> None:
    item = fresh_item()
    answer = put(console, good_headers(console, host="localhost"), item)
    assert answer.status == 200, answer.body
    assert stored(console, item) is not None


def test_a_page_opened_on_localhost_cannot_write_with_127s_origin(
    console: RunningEmulator,
) -> None:
    """The Origin must be the origin of the Host the request names, not any loopback one."""
    item = fresh_item()
    headers = {**good_headers(console, host="localhost"), "Origin": f"http://{own(console)}"}
    assert put(console, headers, item).status == 403
    assert stored(console, item) is None


def test_delete_removes_the_item_through_the_same_guard(console: RunningEmulator) -> None:
    item = fresh_item()
    assert put(console, good_headers(console), item).status == 200
    key = json.dumps({"table": "events", "key": {"PK": item["PK"], "SK": item["SK"]}})
    foreign = {**good_headers(console), "Origin": "http://evil.example"}
    assert request(console, "POST", "/console/delete", foreign, key).status == 403
    assert stored(console, item) is not None
    answer = request(console, "POST", "/console/delete", good_headers(console), key)
    assert answer.status == 200, answer.body
    assert stored(console, item) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"table": "nosuchtable", "item": {"PK": "A", "SK": "B"}}', "unknown table"),
        ('{"table": "events", "item": [1, 2]}', "non-empty JSON object"),
        ('{"table": "events", "item": {}}', "non-empty JSON object"),
        ('{"table": "events"}', "non-empty JSON object"),
        ('{"table": "events", "item": {"title": "no key"}}', "put failed"),
        ("not json", "not JSON"),
        ('["events"]', '"table"'),
    ],
)
def test_a_bad_write_is_answered_400_with_the_clis_message(
    console: RunningEmulator, body: str, message: str
) -> None:
    answer = request(console, "POST", "/console/put", good_headers(console), body)
    assert answer.status == 400, answer.body
    assert answer.json()["error"] == "bad_request"
    assert message in answer.json()["message"]


# -- the token and the config -----------------------------------------------------------------


def test_the_token_endpoint_is_guarded_like_a_write(console: RunningEmulator) -> None:
    for name in REFUSALS:
        answer = request(console, "POST", "/console/token", refused_headers(console, name), "{}")
        assert answer.status == 403, name
        assert "token" not in answer.json(), name
    assert request(console, "GET", "/console/token", {"Host": own(console)}).status == 405


def test_the_token_endpoint_mints_a_token_the_gateway_accepts(console: RunningEmulator) -> None:
    answer = request(console, "POST", "/console/token", good_headers(console), "{}")
    assert answer.status == 200, answer.body
    minted = answer.json()
    assert minted["user"] == "dev-user"
    assert minted["expiresIn"] == 3600
    with connect(f"{console.emulator.url}?token={minted['token']}", open_timeout=20) as client:
        client.send(json.dumps({"action": "hello"}))
        assert receive_json(client)["type"] == "hello"


def test_the_config_needs_the_console_token_and_names_the_first_source(
    console: RunningEmulator,
) -> None:
    host = {"Host": own(console)}
    assert request(console, "GET", "/console/config", host).status == 403
    wrong = {**host, TOKEN_HEADER: "x" * 32}
    assert request(console, "GET", "/console/config", wrong).status == 403
    answer = request(
        console, "GET", "/console/config", {**host, TOKEN_HEADER: console.emulator.console_token}
    )
    assert answer.status == 200
    config = answer.json()
    assert config["url"] == f"ws://{own(console)}/dev"
    assert config["sources"][0] == {
        "label": "events",
        "table": console.table("events"),
        "keys": ["PK", "SK"],
    }


def test_a_cross_origin_preflight_is_not_answered(console: RunningEmulator) -> None:
    """A foreign page's fetch with the console's headers needs a CORS preflight first."""
    answer = request(
        console,
        "OPTIONS",
        "/console/put",
        {
            "Host": own(console),
            "Origin": "http://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": f"content-type,{TOKEN_HEADER.lower()}",
        },
    )
    assert answer.status in (403, 405)
    assert "Access-Control-Allow-Origin" not in answer.headers
