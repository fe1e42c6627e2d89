"""``python -m emulator``: run the stack locally, write items, mint tokens.

    python -m emulator [serve] [--stack dev] [--port 8080] [--config KEY=VALUE ...]
    python -m emulator put [--stack dev] TABLE '{"PK": "EVENT#1", "SK": "METADATA", "title": "hi"}'
    python -m emulator delete [--stack dev] TABLE '{"PK": "EVENT#1", "SK": "METADATA"}'
    python -m emulator token [--stack dev] USER [--ttl SECONDS]   (a JWT in JWT mode)
    python -m emulator drop [--stack dev] USER
    python -m emulator watch [--stack dev] TABLE [--key JSON] [--filter JSON] [--snapshot]

``put``, ``delete``, ``token``, ``drop`` and ``watch`` talk to the emulator already running for the
stack (they read ``.emulator/<stack>.json``, which it writes on start). TABLE
is the table's name in the program (``events``) or its physical name.

Every error is one line on stderr: exit status 2 for a bad argument (argparse's
``usage`` and ``error:``), 1 for anything else (port taken, no emulator running,
a config value the stack refuses, a write DynamoDB rejects).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable
from typing import Any

import yaml

from emulator.local import (
    STATE_DIR,
    AlreadyRunning,
    Emulator,
    EmulatorOptions,
    PortTaken,
    StackRefused,
    default_sender_workers,
    running_state,
)
from emulator.program import PROJECT, ROOT
from emulator.writes import WriteError, aws_client, parse_item, physical_table, write_item

PROG = "python -m emulator"
DEFAULT_STACK = "dev"
BANNER_TOKEN_SECONDS = 12 * 3600
"""How long the banner's token lives, unless the stack's tokenMaxLifetimeSeconds is shorter."""


class CliError(Exception):
    """A failure the user can act on: printed as one line, exit status 1."""


# -- argument types: each refuses bad input with a one-line argparse error ------------------------


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 ... 65535; 0 picks a free one)")
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return seconds


def _whole(unit: str) -> Callable[[str], int]:
    """An argparse type: a positive whole number (of ``unit``, e.g. " of seconds")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number{unit}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number{unit}, got {value}")
        return value

    return parse


_ttl = _whole(" of seconds")
_count = _whole("")


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1 ... 1000, got {count}")
    return count


def _user(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the user id must not be empty")
    return text


def _stack(text: str) -> str:
    stacks = sorted(
        path.name[len("Pulumi.") : -len(".yaml")] for path in ROOT.glob("Pulumi.*.yaml")
    )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", text) or text not in stacks:
        raise argparse.ArgumentTypeError(
            f"no stack {text!r} here (no Pulumi.{text}.yaml); stacks: {', '.join(stacks)}"
        )
    return text


def _config_keys() -> list[str]:
    document = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    return sorted(document.get("config") or {})


def _config_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, got {text!r}")
    name = key.removeprefix(f"{PROJECT}:")
    known = _config_keys()
    if ":" not in name and name not in known:  # other namespaces (aws:region) pass through
        raise argparse.ArgumentTypeError(f"unknown config key {key!r}; known: {', '.join(known)}")
    return key, value


# -- the banner -----------------------------------------------------------------------------------


def interpreter() -> str:
    """The Python running this, as a user would type it here (``venv/bin/python`` in the repo)."""
    if not sys.executable:
        return "python3"
    executable = os.path.abspath(sys.executable)
    inside = os.path.relpath(executable, os.getcwd())
    return shlex.quote(executable if inside.startswith("..") else inside)


def command(stack: str, subcommand: str) -> str:
    """A ``python -m emulator`` command line that reaches the emulator running for ``stack``."""
    where = "" if stack == DEFAULT_STACK else f" --stack {shlex.quote(stack)}"
    return f"{interpreter()} -m emulator {subcommand}{where}"


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def banner(emulator: Emulator) -> str:
    stack = emulator.options.stack
    lifetime = min(BANNER_TOKEN_SECONDS, emulator.token_max_lifetime())
    try:
        token = emulator.token("dev-user", lifetime)
    except LookupError:  # JWT mode with another issuer: its tokens come from it
        token = f"<a JWT from {emulator.jwt_issuer()}>"
    tables = ", ".join(f"{logical} ({name})" for logical, name in emulator.table_names().items())
    source = next(iter(m.table for m in emulator.model.mappings), None) if emulator.model else None
    source_logical = next(
        (logical for logical, name in emulator.table_names().items() if name == source), "events"
    )
    return "\n".join(
        [
            f"realtime-channel emulator: stack {stack!r} is up",
            f"  Console       {emulator.console_url}",
            f"                (open it in a browser: the live feed of {source_logical},"
            " subscribe, write items)",
            f"  WebSocket     {emulator.url}?token={token}",
            f"                (user 'dev-user', valid {_duration(lifetime)};"
            f" more: {command(stack, 'token')} USER)",
            *(
                [f"  In AWS        {domain}   (the custom domain clients use there)"]
                if (domain := emulator.custom_domain_url())
                else []
            ),
            *(
                [f"  JWT issuer    {emulator.issuer.url} (local; keys at /.well-known/jwks.json)"]
                if emulator.issuer is not None
                else []
            ),
            f"  @connections  {emulator.management_endpoint}/@connections/{{connectionId}}",
            f"  DynamoDB      {emulator.aws.endpoint}   tables: {tables}",
            "",
            "Try it: connect, subscribe (type the > line into wscat), then write from another"
            " terminal:",
            f"  npx wscat -c '{emulator.url}?token={token}'",
            f'  > {{"action": "subscribe", "id": "s1", "table": "{source_logical}"}}',
            f"  {command(stack, 'put')} {source_logical} "
            '\'{"PK": "EVENT#1", "SK": "METADATA", "title": "hello"}\'',
            "",
            "Ctrl-C stops everything.",
        ]
    )


# -- commands -------------------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> int:
    options = EmulatorOptions(
        stack=args.stack,
        host=args.host,
        port=args.port,
        secret=args.secret,
        overrides=dict(args.config),
        idle_timeout=args.idle_timeout,
        max_connection=args.max_connection,
        schedule_every=args.schedule_every,
    )
    if args.sender_workers is not None:
        options.sender_workers = args.sender_workers
    emulator = Emulator(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        try:
            await emulator.start()
        except (PortTaken, AlreadyRunning, StackRefused) as refused:
            raise CliError(str(refused)) from None
        print(banner(emulator), flush=True)
        await stop.wait()
        print("stopping...", flush=True)
    finally:
        await emulator.stop()
    print("stopped", flush=True)
    return 0


def _state(stack: str) -> dict[str, Any]:
    state = running_state(stack)
    if state is None:
        hint = "make dev" if stack == DEFAULT_STACK else f"make dev STACK={stack}"
        leftover = STATE_DIR / f"{stack}.json"
        stale = f"; {leftover} is left from one that has exited" if leftover.exists() else ""
        raise CliError(
            f"no emulator is running for stack {stack!r} (start it with `{hint}`){stale}"
        )
    return state


def _client(service: str, endpoint: str) -> Any:
    return aws_client(service, endpoint)


def write(args: argparse.Namespace) -> int:
    """``put`` or ``delete``: the same path as the console page's write form
    (``emulator.writes``)."""
    state = _state(args.stack)
    try:
        table = physical_table(state["tables"], args.table)
        write_item(state["dynamodb"], args.command, table, parse_item(args.item))
    except WriteError as refused:
        raise CliError(str(refused)) from None
    print(f"{args.command}: {table}", flush=True)
    return 0


def drop(args: argparse.Namespace) -> int:
    """Close every connection of a user from the server's side, as the ``@connections``
    DELETE does (what a network drop looks like to the client: then resume)."""
    from botocore.exceptions import BotoCoreError, ClientError

    state = _state(args.stack)
    dynamodb = _client("dynamodb", state["dynamodb"])
    management = _client("apigatewaymanagementapi", state["managementEndpoint"])
    try:
        pages = dynamodb.get_paginator("scan").paginate(
            TableName=state["connectionsTable"],
            FilterExpression="userId = :user",
            ExpressionAttributeValues={":user": {"S": args.user}},
            ProjectionExpression="connectionId",
        )
        found = [item["connectionId"]["S"] for page in pages for item in page["Items"]]
        for connection_id in found:
            management.delete_connection(ConnectionId=connection_id)
    except (ClientError, BotoCoreError) as bad:
        raise CliError(f"drop failed: {bad}") from None
    if not found:
        raise CliError(f"user {args.user!r} has no connection")
    for connection_id in found:
        print(f"drop: closed {connection_id} ({args.user})", flush=True)
    return 0


def _json_option(text: str | None, name: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as bad:
        raise CliError(f"{name} is not JSON: {bad}") from None


def _label(state: dict[str, Any], table: str) -> str:
    """The label clients subscribe with (``events``), for a label or a physical name."""
    tables: dict[str, str] = state["tables"]
    for label, physical in tables.items():
        if table in (label, physical):
            return label
    raise CliError(f"unknown table {table!r}; known: {', '.join(tables)}")


def watch(args: argparse.Namespace) -> int:
    """Subscribe with the Python client (clients/python) and print each change as one JSON
    line; it reconnects and resumes by itself (try `drop` on its user meanwhile)."""
    from handlers.tokens import DEFAULT_MAX_LIFETIME_SECONDS

    state = _state(args.stack)
    label = _label(state, args.table)
    key = _json_option(args.key, "--key")
    filter_groups = _json_option(args.filter, "--filter")
    if args.snapshot and key is None:
        raise CliError("--snapshot needs --key")
    longest = int(state.get("tokenMaxLifetimeSeconds") or DEFAULT_MAX_LIFETIME_SECONDS)

    _mint(state, args.stack, args.user, 60)  # JWT mode with another issuer: fail here

    def fresh_token() -> str:  # called for every socket and before expiry
        return _mint(state, args.stack, args.user, min(3600, longest))

    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(
            _watch(state["url"], fresh_token, label, key, filter_groups, args.snapshot, args.count)
        )
    return 0


async def _watch(
    url: str,
    token: Any,
    table: str,
    key: Any,
    filter_groups: Any,
    snapshot: bool,
    count: int | None,
) -> int:
    from realtime_client import Change, RealtimeError, connect

    enough = asyncio.Event()
    shown = 0

    def show(change: Change) -> None:
        nonlocal shown
        line: dict[str, Any] = {"kind": change.kind, "keys": change.keys, "data": change.data}
        line.update(origin=change.origin, id=change.id)
        print(json.dumps(line, default=str), flush=True)
        shown += 1
        if count is not None and shown >= count:
            enough.set()

    def state(name: str) -> None:
        print(f"watch: {name}", file=sys.stderr, flush=True)

    def problem(error: RealtimeError) -> None:
        print(f"watch: {error}", file=sys.stderr, flush=True)

    async with connect(url, token, on_state=state, on_error=problem) as client:
        sub = client.subscribe(
            table, key, filter_groups, snapshot, on_change=show, on_error=problem
        )
        try:
            await sub.ready(timeout=60)
        except RealtimeError as refused:
            raise CliError(f"subscribe refused: {refused}") from None
        except TimeoutError:
            raise CliError("no answer to subscribe within 60 s") from None
        print(f"watch: subscribed to {table} (Ctrl-C stops)", file=sys.stderr, flush=True)
        await enough.wait()
    return 0


def token(args: argparse.Namespace) -> int:
    from handlers.tokens import DEFAULT_MAX_LIFETIME_SECONDS

    state = _state(args.stack)
    longest = int(state.get("tokenMaxLifetimeSeconds") or DEFAULT_MAX_LIFETIME_SECONDS)
    if args.ttl > longest:
        raise CliError(
            f"--ttl {args.ttl} is more than stack {args.stack!r} accepts"
            f" (tokenMaxLifetimeSeconds {longest}): its authorizer would refuse the token"
        )
    try:
        print(_mint(state, args.stack, args.user, args.ttl))
    except ValueError as bad:
        raise CliError(str(bad)) from None
    return 0


def _mint(state: dict[str, Any], stack: str, user: str, ttl: int) -> str:
    """A token the running stack accepts: a JWT of the emulator's own issuer in JWT mode,
    else an HMAC token; ``CliError`` in JWT mode with another issuer."""
    from handlers.tokens import DEFAULT_MAX_LIFETIME_SECONDS, mint_token

    if state.get("issuer"):  # JWT mode, the emulator as the issuer: a JWT it signs
        from emulator.issuer import LocalIssuer

        return LocalIssuer.from_state(state["issuer"]).mint(user, ttl)
    if state.get("authMode") == "jwt":
        raise CliError(
            f"stack {stack!r} verifies JWTs of {state.get('jwtIssuer')}: get a token"
            " from that issuer (the emulator mints tokens only as its own issuer)"
        )
    longest = int(state.get("tokenMaxLifetimeSeconds") or DEFAULT_MAX_LIFETIME_SECONDS)
    return mint_token(user, state["secret"], ttl, max_lifetime=longest)


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.splitlines()[0].replace("``", ""),
        epilog='Durations are in seconds. `make dev ARGS="..."` passes options through make.',
    )
    stack_help = "stack: which Pulumi.<stack>.yaml (default dev)"
    main_parser.add_argument("--stack", type=_stack, default=DEFAULT_STACK, help=stack_help)
    commands = main_parser.add_subparsers(
        dest="command", metavar="{serve,put,delete,token,drop,watch}"
    )
    run = commands.add_parser("serve", help="run the stack locally (the default)")
    put = commands.add_parser("put", help="put an item (plain JSON) in a table")
    delete = commands.add_parser("delete", help="delete an item (its key, plain JSON)")
    mint = commands.add_parser("token", help="mint a token for a user")
    close = commands.add_parser(
        "drop", help="close every connection of a user from the server's side (@connections DELETE)"
    )
    follow = commands.add_parser(
        "watch", help="print the changes of a table as they happen (the Python client)"
    )
    for sub in (
        run,
        put,
        delete,
        mint,
        close,
        follow,
    ):  # --stack also after the command; SUPPRESS: no override
        sub.add_argument("--stack", type=_stack, default=argparse.SUPPRESS, help=stack_help)
    # `serve` is the default command: its options work before or after it; the defaults live
    # on the main parser only, so `--port 9000 serve` keeps 9000
    main_parser.set_defaults(
        host="127.0.0.1", port=8080, secret=None, config=[], idle_timeout=600.0,
        max_connection=7200.0, schedule_every=5.0, sender_workers=None,
    )  # fmt: skip
    for target in (main_parser, run):
        add = functools.partial(target.add_argument, default=argparse.SUPPRESS)
        add("--host", help=argparse.SUPPRESS)
        add("--port", type=_port, help="gateway port (default 8080; 0: any free one)")
        add("--secret", help="token secret (default: a random one per run)")
        add(
            "--config", type=_config_pair, action="append", metavar="KEY=VALUE",
            help="override a stack config value (a key of Pulumi.yaml), e.g. targetAttribute=owner",
        )  # fmt: skip
        add(
            "--idle-timeout", type=_seconds, metavar="SECONDS",
            help="close a connection idle this long, in seconds (default 600, API Gateway's)",
        )  # fmt: skip
        add(
            "--max-connection", type=_seconds, metavar="SECONDS",
            help="close any connection after this long, in seconds (default 7200, API Gateway's)",
        )  # fmt: skip
        add(
            "--schedule-every", type=_seconds, metavar="SECONDS",
            help="run scheduled functions (the sweeper, every minute on AWS) this often,"
            " in seconds (default 5)",
        )  # fmt: skip
        add(
            "--sender-workers", type=_workers, metavar="N",
            help="worker processes, at most, of a function an SQS queue invokes (the sender;"
            f" also capped by its maximumConcurrency; default {default_sender_workers()}:"
            " 2 per CPU, at least 4)",
        )  # fmt: skip
    for sub in (put, delete):
        sub.add_argument("table", help="the table's name in the program (events) or physical name")
        sub.add_argument("item", help="plain JSON; for delete, the key attributes")
    mint.add_argument("user", type=_user, help="user id (the token's sub)")
    close.add_argument("user", type=_user, help="user id (the token's sub)")
    follow.add_argument("table", help="the table's name in the program (events) or physical name")
    follow.add_argument("--key", help='a partition or item, JSON: \'{"PK": "ROOM#1"}\'')
    follow.add_argument("--filter", help='a filter, JSON: \'[{"status": "paid"}]\'')
    follow.add_argument(
        "--snapshot", action="store_true", help="first the key's current items (needs --key)"
    )
    follow.add_argument(
        "--user", type=_user, default="watch", help="user id of its token (default watch)"
    )
    follow.add_argument(
        "--count", type=_count, metavar="N", help="exit after N changes (default: never)"
    )
    mint.add_argument(
        "--ttl", type=_ttl, default=3600, metavar="SECONDS",
        help="how long the token is valid, in seconds (default 3600; at most the stack's"
        " tokenMaxLifetimeSeconds, 86400 unless set)",
    )  # fmt: skip
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command in ("put", "delete"):
            return write(args)
        if args.command == "token":
            return token(args)
        if args.command == "drop":
            return drop(args)
        if args.command == "watch":
            return watch(args)
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(serve(args))
    except CliError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
