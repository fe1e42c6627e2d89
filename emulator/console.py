"""The console page ``make dev`` serves at the emulator's address (``/``).

The page (``emulator/console/``: HTML, one ES module, CSS) uses the JavaScript client
(``clients/js``, served unbundled under ``/client/``) to show the connection's state, a
subscribe form, the live feed of changes with their ``matches``, each subscription's
items (the client's view), and a form that writes an item through the emulator.

It is guarded like any local admin page, so that another web page open in the same browser
can neither read its token endpoint nor write through it:

- every console request (the page, its files, its API) must carry a ``Host`` header that
  is this emulator's own address (``127.0.0.1``, ``localhost`` or ``[::1]`` with its port):
  a DNS-rebinding page, whose requests name its own host, is refused;
- every API request (``/console/config``, ``/console/token``, ``/console/put``,
  ``/console/delete``) must carry this run's console token (printed in the banner's console
  URL, ``?console=TOKEN``) in ``X-Console-Token``, compared in constant time;
- every state-changing request (the POSTs) must also carry an ``Origin`` equal to this
  emulator's own origin (``http://`` + the checked ``Host``) and ``Content-Type:
  application/json`` (which a cross-site form cannot send, and a cross-site ``fetch`` can
  send only after a CORS preflight this server never answers).

Anything else is answered 403 with a JSON ``{"error": "forbidden", "message": ...}`` before
the request's body is read: nothing is written and no token is minted. The page is also
served with a Content-Security-Policy that forbids framing (no clickjacking of its forms),
and with no referrer (its URL carries the console token).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from emulator.program import ROOT
from emulator.writes import WriteCommand, WriteError, physical_table, typed_item, write_item

if TYPE_CHECKING:
    from emulator.local import Emulator

PAGE_DIR = Path(__file__).parent / "console"
"""The page's own files: index.html, console.js, console.css."""
CLIENT_DIR = ROOT / "clients" / "js"
"""The JavaScript client, served read-only under /client/ (index.js and src/*.js only)."""
STATIC_FILES = {
    "console.js": "text/javascript",
    "console.css": "text/css",
}
CLIENT_FILE = re.compile(r"index\.js|src/[a-z][a-z0-9_-]*\.js")
"""The client files the page may load: the entry point and its modules, nothing else."""
TOKEN_HEADER = "X-Console-Token"  # noqa: S105 (a header name, not a secret)
USER = "dev-user"
"""Whose token the page connects with (the banner's user)."""
TOKEN_SECONDS = 3600
"""How long each token the page gets lives (the client refreshes it before expiry)."""
MAX_BODY_BYTES = 512 * 1024
"""Largest write request (DynamoDB's items stop at 400 KB)."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class ConsoleState:
    emulator: Emulator
    token: str
    """This run's console token (what ``?console=`` carries)."""


CONSOLE: web.AppKey[ConsoleState] = web.AppKey("console", ConsoleState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def url_host(host: str) -> str:
    """``host`` as it stands in a URL (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def console_url(host: str, port: int, token: str) -> str:
    return f"http://{url_host(host)}:{port}/?console={token}"


def own_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` headers this emulator answers console requests for."""
    return frozenset(f"{name}:{port}" for name in (*LOOPBACK_NAMES, url_host(host).lower()))


def refusal(
    headers: Any,
    *,
    hosts: frozenset[str],
    token: str,
    api: bool,
    state_changing: bool,
    content_type: str,
) -> str | None:
    """Why a console request is refused, or None to serve it (the rules in the module's
    docstring); ``headers`` is the request's (case-insensitive) header mapping."""
    host = str(headers.get("Host", "")).lower()
    if host not in hosts:
        shown = f"{host[:100]!r}" if host else "none"
        return (
            f"Host header {shown} is not this emulator's address ({', '.join(sorted(hosts))});"
            " open the console URL make dev printed"
        )
    if api:
        given = str(headers.get(TOKEN_HEADER, ""))
        if not given or not secrets.compare_digest(given.encode(), token.encode()):
            return (
                f"missing or wrong console token ({TOKEN_HEADER}); open the console URL"
                " make dev printed (http://127.0.0.1:PORT/?console=TOKEN), it changes every run"
            )
    if state_changing:
        origin = str(headers.get("Origin", ""))
        if origin != f"http://{host}":
            shown = f"{origin[:100]!r}" if origin else "none"
            return f"Origin {shown} is not this console's (http://{host})"
        if content_type != "application/json":
            return f"Content-Type must be application/json, not {content_type[:100]!r}"
    return None


def _forbidden(why: str) -> web.Response:
    return web.json_response({"error": "forbidden", "message": why}, status=403)


def _bad(why: str, status: int = 400) -> web.Response:
    return web.json_response({"error": "bad_request", "message": why}, status=status)


def _protect(response: web.StreamResponse, host: str) -> web.StreamResponse:
    """Headers every console response carries: no framing, no sniffing, no caching, no
    referrer, and for the page a policy that lets it load only its own files and open
    WebSockets only to this emulator."""
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        f" connect-src 'self' ws://{host}; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def guarded(*, api: bool, state_changing: bool = False) -> Callable[[Handler], Handler]:
    """Serve a console route only to requests that pass ``refusal``'s checks."""

    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            state = request.app[CONSOLE]
            emulator = state.emulator
            why = refusal(
                request.headers,
                hosts=own_hosts(emulator.options.host, emulator.port),
                token=state.token,
                api=api,
                state_changing=state_changing,
                content_type=request.content_type if "Content-Type" in request.headers else "",
            )
            host = request.headers.get("Host", "").lower()
            if why is not None:
                emulator.options.log(f"console: refused {request.method} {request.path}: {why}")
                return _protect(_forbidden(why), host)
            return _protect(await handler(request), host)

        return checked

    return wrap


# -- the page and the client's files ----------------------------------------------------------


def _file(path: Path, content_type: str) -> web.Response:
    return web.Response(body=path.read_bytes(), content_type=content_type, charset="utf-8")


@guarded(api=False)
async def page(request: web.Request) -> web.StreamResponse:
    return _file(PAGE_DIR / "index.html", "text/html")


@guarded(api=False)
async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return _file(PAGE_DIR / name, STATIC_FILES[name])


def client_file(name: str, root: Path = CLIENT_DIR) -> Path | None:
    """The client file ``name`` (``index.js`` or ``src/<module>.js``) under ``root``, or
    None for anything else: no other file, no directory, no way out of ``root``."""
    if not CLIENT_FILE.fullmatch(name):
        return None
    base = root.resolve()
    path = (base / name).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


@guarded(api=False)
async def client(request: web.Request) -> web.StreamResponse:
    path = client_file(request.match_info["path"])
    if path is None:
        raise web.HTTPNotFound()
    return _file(path, "text/javascript")


# -- the API -----------------------------------------------------------------------------------


def sources(emulator: Emulator) -> list[dict[str, Any]]:
    """The stack's sources, in the program's order: label (what ``subscribe`` names),
    physical table and key attribute names (from the functions' ``SOURCES``)."""
    assert emulator.model is not None
    for function in emulator.model.functions.values():
        raw = function.environment.get("SOURCES")
        if raw is None:
            continue
        declared = json.loads(raw)
        return [
            {
                "label": label,
                "table": fields.get("table"),
                "keys": [key[0] for key in fields.get("keys", [])],
            }
            for label, fields in declared.items()
        ]
    return []


@guarded(api=True)
async def config(request: web.Request) -> web.StreamResponse:
    emulator = request.app[CONSOLE].emulator
    host = request.headers["Host"].lower()  # checked: this emulator's own address
    return web.json_response(
        {
            "stack": emulator.options.stack,
            "url": f"ws://{host}/{emulator.stage}",
            "user": USER,
            "sources": sources(emulator),
            "tables": emulator.table_names(),
        }
    )


@guarded(api=True, state_changing=True)
async def token(request: web.Request) -> web.StreamResponse:
    emulator = request.app[CONSOLE].emulator
    lifetime = min(TOKEN_SECONDS, emulator.token_max_lifetime())
    try:
        minted = emulator.token(USER, lifetime)
    except LookupError as elsewhere:  # JWT mode with another issuer: its tokens come from it
        return web.json_response({"message": str(elsewhere)}, status=409)
    emulator.options.log(f"console: a token for {USER} (valid {lifetime} s)")
    return web.json_response({"token": minted, "user": USER, "expiresIn": lifetime})


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return _bad(f"the request is larger than {MAX_BODY_BYTES} bytes", 413)
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return _bad(f"the request is larger than {MAX_BODY_BYTES} bytes", 413)
    try:
        body = json.loads(raw, parse_float=Decimal)  # numbers exact, as the CLI reads them
    except (ValueError, RecursionError) as bad:
        return _bad(f"not JSON: {bad}")
    if not isinstance(body, dict) or not isinstance(body.get("table"), str):
        return _bad('send {"table": "<name>", "item": {...}} (delete: "key" instead of "item")')
    return body


async def _write(request: web.Request, command: WriteCommand) -> web.StreamResponse:
    emulator = request.app[CONSOLE].emulator
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    field = "item" if command == "put" else "key"
    try:
        table = physical_table(emulator.table_names(), body["table"])
        item = typed_item(body.get(field))
        await asyncio.to_thread(write_item, emulator.aws.endpoint, command, table, item)
    except WriteError as refused:
        return _bad(str(refused))
    emulator.options.log(f"console: {command}: {table}")
    return web.json_response({"ok": True, "command": command, "table": table})


@guarded(api=True, state_changing=True)
async def put(request: web.Request) -> web.StreamResponse:
    return await _write(request, "put")


@guarded(api=True, state_changing=True)
async def delete(request: web.Request) -> web.StreamResponse:
    return await _write(request, "delete")


def register(app: web.Application, emulator: Emulator, console_token: str) -> None:
    """Add the console's routes to the gateway's ``app`` (before it starts)."""
    app[CONSOLE] = ConsoleState(emulator=emulator, token=console_token)
    app.router.add_get("/", page)
    app.router.add_get("/console/static/{name}", static)
    app.router.add_get("/client/{path:.+}", client)
    app.router.add_get("/console/config", config)
    app.router.add_post("/console/token", token)
    app.router.add_post("/console/put", put)
    app.router.add_post("/console/delete", delete)
