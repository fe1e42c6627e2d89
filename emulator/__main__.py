"""``python -m emulator``: run the stack locally, write items, mint tokens.

    python -m emulator [serve] [--stack dev] [--port 8080] [--config KEY=VALUE ...]
    python -m emulator put TABLE '{"PK": "EVENT#1", "SK": "METADATA", "title": "hello"}'
    python -m emulator delete TABLE '{"PK": "EVENT#1", "SK": "METADATA"}'
    python -m emulator token USER [--ttl SECONDS]

``put``, ``delete`` and ``token`` talk to the emulator already running for the
stack (they read ``.emulator/<stack>.json``, which it writes on start). TABLE
is the table's name in the program (``events``) or its physical name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from decimal import Decimal
from typing import Any

from emulator.local import STATE_DIR, Emulator, EmulatorOptions


def _config(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--config takes KEY=VALUE, got {pair!r}")
        values[key] = value
    return values


def banner(emulator: Emulator) -> str:
    token = emulator.token("dev-user", 12 * 3600)
    tables = ", ".join(f"{logical} ({name})" for logical, name in emulator.table_names().items())
    source = next(iter(m.table for m in emulator.model.mappings), None) if emulator.model else None
    source_logical = next(
        (logical for logical, name in emulator.table_names().items() if name == source), "events"
    )
    return "\n".join(
        [
            f"realtime-channel emulator: stack {emulator.options.stack!r} is up",
            f"  WebSocket     {emulator.url}?token={token}",
            "                (user 'dev-user', valid 12 h; more: python -m emulator token USER)",
            f"  @connections  {emulator.management_endpoint}/@connections/{{connectionId}}",
            f"  DynamoDB      {emulator.aws.endpoint}   tables: {tables}",
            "",
            "Try it:",
            f"  npx wscat -c '{emulator.url}?token={token}'",
            f"  venv/bin/python -m emulator put {source_logical} "
            '\'{"PK": "EVENT#1", "SK": "METADATA", "title": "hello"}\'',
            "",
            "Ctrl-C stops everything.",
        ]
    )


async def serve(args: argparse.Namespace) -> int:
    options = EmulatorOptions(
        stack=args.stack,
        host=args.host,
        port=args.port,
        secret=args.secret,
        overrides=_config(args.config),
        idle_timeout=args.idle_timeout,
        max_connection=args.max_connection,
    )
    emulator = Emulator(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await emulator.start()
        print(banner(emulator), flush=True)
        await stop.wait()
        print("stopping...", flush=True)
    finally:
        await emulator.stop()
    print("stopped", flush=True)
    return 0


def _state(stack: str) -> dict[str, Any]:
    path = STATE_DIR / f"{stack}.json"
    if not path.exists():
        raise SystemExit(f"no emulator is running for stack {stack!r} (start it with `make dev`)")
    return dict(json.loads(path.read_text()))


def _table(state: dict[str, Any], table: str) -> str:
    tables: dict[str, str] = state["tables"]
    if table in tables:
        return tables[table]
    if table in tables.values():
        return table
    raise SystemExit(f"unknown table {table!r}; known: {', '.join(tables)}")


def _item(text: str) -> dict[str, Any]:
    try:
        item = json.loads(text, parse_float=Decimal)
    except ValueError as bad:
        raise SystemExit(f"not JSON: {bad}") from None
    if not isinstance(item, dict) or not item:
        raise SystemExit("the item must be a non-empty JSON object")
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    try:
        return {key: serializer.serialize(value) for key, value in item.items()}
    except TypeError as bad:
        raise SystemExit(f"cannot store that item: {bad}") from None


def write(args: argparse.Namespace) -> int:
    import boto3

    from emulator.services import FAKE_CREDENTIALS

    state = _state(args.stack)
    client = boto3.client(
        "dynamodb",
        endpoint_url=state["dynamodb"],
        region_name="us-east-1",
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    table = _table(state, args.table)
    item = _item(args.item)
    try:
        if args.command == "put":
            client.put_item(TableName=table, Item=item)
        else:
            client.delete_item(TableName=table, Key=item)
    except client.exceptions.ClientError as bad:
        raise SystemExit(f"{args.command} failed: {bad}") from None
    print(f"{args.command}: {table}", flush=True)
    return 0


def token(args: argparse.Namespace) -> int:
    from handlers.tokens import mint_token

    state = _state(args.stack)
    print(mint_token(args.user, state["secret"], args.ttl))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="dev", help="stack whose config to use (default dev)")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("serve", help="run the stack locally (the default)")
    for target in (parser, run):
        target.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
        target.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
        target.add_argument("--secret", default=None, help="token secret (default: random)")
        target.add_argument(
            "--config", action="append", default=[], metavar="KEY=VALUE",
            help="override a config value, e.g. --config targetAttribute=owner",
        )  # fmt: skip
        target.add_argument("--idle-timeout", type=float, default=600.0, help="seconds (600)")
        target.add_argument("--max-connection", type=float, default=7200.0, help="seconds (7200)")
    for name in ("put", "delete"):
        sub = commands.add_parser(name, help=f"{name} an item (plain JSON) in a table")
        sub.add_argument("table")
        sub.add_argument("item", help="plain JSON; for delete, the key attributes")
    mint = commands.add_parser("token", help="mint a token for a user")
    mint.add_argument("user")
    mint.add_argument("--ttl", type=int, default=3600)
    args = parser.parse_args(argv)
    if args.command in ("put", "delete"):
        return write(args)
    if args.command == "token":
        return token(args)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
