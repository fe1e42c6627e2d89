"""Run a Pulumi program under mocks, without the CLI, and record what it declares.

``RecordingMocks`` answers like AWS would: physical names with a suffix, ARNs,
stream ARNs, the stage's invoke URL and execution ARN, function invoke ARNs;
with ``preview=True`` it returns only the inputs, so every computed output is
unknown, as in a real ``pulumi preview`` of a new stack. Given a
``gateway`` address it answers like the local emulator instead: the stage's
invoke URL is ``ws://HOST:PORT/STAGE``, so everything the program derives from
it (the management endpoint handed to the functions) points at the emulator.

The infra tests and the emulator both use this module: the emulator brings up
exactly what the tests check.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import runpy
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "realtime-channel"
ACCOUNT = "123456789012"
REGION = "us-east-1"
GET_TABLE = "aws:dynamodb/getTable:getTable"


@dataclass
class Declared:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    id: str | None = None


_NAME_ARNS = {
    "aws:iam/role:Role": "arn:aws:iam::{account}:role/",
    "aws:cloudwatch/logGroup:LogGroup": "arn:aws:logs:{region}:{account}:log-group:",
    "aws:ssm/parameter:Parameter": "arn:aws:ssm:{region}:{account}:parameter/",
    "aws:cloudwatch/metricAlarm:MetricAlarm": "arn:aws:cloudwatch:{region}:{account}:alarm:",
    "aws:cloudwatch/eventRule:EventRule": "arn:aws:events:{region}:{account}:rule/",
}


def _suffix(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:7]


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(
        self,
        preview: bool = False,
        tables: Mapping[str, dict[str, Any]] | None = None,
        gateway: tuple[str, int] | None = None,
        lookup_table: Callable[[str], dict[str, Any] | None] | None = None,
    ):
        self.preview = preview
        self.gateway = gateway
        """(host, port) of the local gateway, or None for AWS-like URLs."""
        self.lookup_table = lookup_table
        """Answers getTable for names not in ``tables`` (the emulator asks its local DynamoDB)."""
        self.resources: list[Declared] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.tables = dict(tables or {})
        """Existing tables the program may look up: name -> getTable result fields
        (camelCase: streamEnabled, streamViewType, hashKey, rangeKey, attributes, ...)."""

    # -- queries used by the tests -------------------------------------------------------
    def of_type(self, type_: str) -> list[Declared]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Declared:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        names = [r.name for r in found]
        assert len(found) == 1, f"expected one {type_} {name or ''}, found {names}"
        return found[0]

    def named(self, name: str) -> Declared:
        (found,) = [r for r in self.resources if r.name == name]
        return found

    # -- pulumi.runtime.Mocks -------------------------------------------------------------
    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = dict(args.inputs)
        outputs = dict(inputs)
        named = inputs.get("name")  # unknown in a preview when it comes from another resource
        physical = (
            named if isinstance(named, str) and named else f"{args.name}-{_suffix(args.name)}"
        )
        resource_id = physical
        if not self.preview:
            resource_id = self._computed(args.typ, args.name, physical, inputs, outputs)
        self.resources.append(Declared(args.typ, args.name, inputs, outputs, resource_id))
        return resource_id, outputs

    def _computed(
        self, typ: str, logical: str, physical: str, inputs: dict[str, Any], out: dict[str, Any]
    ) -> str:
        region, account = REGION, ACCOUNT
        if typ == "aws:dynamodb/table:Table":
            out["name"] = physical
            out["arn"] = f"arn:aws:dynamodb:{region}:{account}:table/{physical}"
            if inputs.get("streamEnabled"):
                out["streamLabel"] = "2026-11-26T00:00:00.000"
                out["streamArn"] = f"{out['arn']}/stream/{out['streamLabel']}"
            return physical
        if typ == "aws:sqs/queue:Queue":
            if inputs.get("fifoQueue") and not physical.endswith(".fifo"):
                physical += ".fifo"  # as the provider auto-names a FIFO queue
            out["name"] = physical
            out["arn"] = f"arn:aws:sqs:{region}:{account}:{physical}"
            out["url"] = f"https://sqs.{region}.amazonaws.com/{account}/{physical}"
            return str(out["url"])
        if typ == "aws:apigatewayv2/api:Api":
            api_id = _suffix(logical) + "abc"
            out["apiEndpoint"] = f"wss://{api_id}.execute-api.{region}.amazonaws.com"
            if self.gateway is not None:
                out["apiEndpoint"] = f"ws://{self.gateway[0]}:{self.gateway[1]}"
            out["executionArn"] = f"arn:aws:execute-api:{region}:{account}:{api_id}"
            out["arn"] = f"arn:aws:apigateway:{region}::/apis/{api_id}"
            return api_id
        if typ == "aws:apigatewayv2/stage:Stage":
            api_id, stage = inputs["apiId"], inputs["name"]
            out["invokeUrl"] = f"wss://{api_id}.execute-api.{region}.amazonaws.com/{stage}"
            if self.gateway is not None:
                out["invokeUrl"] = f"ws://{self.gateway[0]}:{self.gateway[1]}/{stage}"
            out["executionArn"] = f"arn:aws:execute-api:{region}:{account}:{api_id}/{stage}"
            out["arn"] = f"arn:aws:apigateway:{region}::/apis/{api_id}/stages/{stage}"
            return str(stage)
        if typ == "aws:lambda/function:Function":
            out["name"] = physical
            out["arn"] = f"arn:aws:lambda:{region}:{account}:function:{physical}"
            out["invokeArn"] = (
                f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/"
                f"{out['arn']}/invocations"
            )
            return physical
        if typ in _NAME_ARNS:  # resources whose ARN is their physical name under a prefix
            out["name"] = physical
            out["arn"] = _NAME_ARNS[typ].format(region=region, account=account) + physical
            return physical
        if typ == "aws:apigatewayv2/domainName:DomainName":
            configuration = dict(inputs.get("domainNameConfiguration") or {})
            configuration["targetDomainName"] = (
                f"d-{_suffix(logical)}.execute-api.{region}.amazonaws.com"
            )
            configuration["hostedZoneId"] = "Z1UJRXOUMOOFQ8"  # API Gateway's, us-east-1
            out["domainNameConfiguration"] = configuration
            out["arn"] = f"arn:aws:apigateway:{region}::/domainnames/{inputs['domainName']}"
            return str(inputs["domainName"])
        if typ == "aws:acm/certificate:Certificate":
            domain = inputs["domainName"]
            out["arn"] = f"arn:aws:acm:{region}:{account}:certificate/{_suffix(logical)}-cert"
            out["domainValidationOptions"] = [
                {
                    "domainName": domain,
                    "resourceRecordName": f"_{_suffix(logical)}.{domain}.",
                    "resourceRecordType": "CNAME",
                    "resourceRecordValue": f"_{_suffix(domain)}.acm-validations.aws.",
                }
            ]
            return str(out["arn"])
        if typ == "aws:acm/certificateValidation:CertificateValidation":
            return str(inputs["certificateArn"])
        if typ == "aws:route53/record:Record":
            out["fqdn"] = str(inputs["name"]).rstrip(".")
            return f"{inputs['zoneId']}_{out['fqdn']}_{inputs['type']}"
        if typ == "aws:sns/topic:Topic":
            out["name"] = physical
            out["arn"] = f"arn:aws:sns:{region}:{account}:{physical}"
            return str(out["arn"])
        if typ == "random:index/randomPassword:RandomPassword":
            # a fresh secret of the requested length, as the provider would make
            alphabet = string.ascii_letters + string.digits
            out["result"] = "".join(
                secrets.choice(alphabet) for _ in range(int(inputs.get("length") or 16))
            )
            return f"{logical}-id"
        if typ == "aws:lambda/eventSourceMapping:EventSourceMapping":
            out["uuid"] = f"{_suffix(logical)}-uuid"
            out["arn"] = f"arn:aws:lambda:{region}:{account}:event-source-mapping:{out['uuid']}"
            return str(out["uuid"])
        return f"{logical}-id"

    def call(self, args: MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        # the SDK accepts a plain dict (no check failures) as well as a tuple
        self.calls.append((args.token, dict(args.args)))
        if args.token == GET_TABLE:
            name = args.args["name"]
            if name not in self.tables and self.lookup_table is not None:
                found = self.lookup_table(name)
                if found is not None:
                    self.tables[name] = found
            if name not in self.tables:
                raise Exception(f"ResourceNotFoundException: table {name} not found")
            arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
            # every table has a key schema; one not given here has partition key "id" (S)
            table = {
                "name": name,
                "arn": arn,
                "id": name,
                "streamEnabled": False,
                "hashKey": "id",
                "attributes": [{"name": "id", "type": "S"}],
            }
            table.update(self.tables[name])
            if table.get("streamEnabled") and "streamArn" not in table:
                table["streamArn"] = f"{arn}/stream/2026-01-01T00:00:00.000"
            return table
        return {}


def _config_text(value: Any) -> str:
    """A config value as the CLI hands it to a program: strings as they are, booleans and
    numbers as YAML writes them, lists and objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value).lower()


def project_defaults(root: Path = ROOT) -> dict[str, str]:
    """The defaults of ``Pulumi.yaml``'s config block, as the CLI would apply them."""
    document = yaml.safe_load((root / "Pulumi.yaml").read_text())
    values: dict[str, str] = {}
    for key, spec in (document.get("config") or {}).items():
        if isinstance(spec, dict) and "default" in spec:
            default = spec["default"]
            full = key if ":" in key else f"{PROJECT}:{key}"
            values[full] = _config_text(default)
    return values


def stack_config(
    stack: str | None,
    overrides: Mapping[str, str] | None = None,
    *,
    with_defaults: bool = False,
    root: Path = ROOT,
) -> dict[str, str]:
    """``Pulumi.<stack>.yaml``'s config, over Pulumi.yaml's defaults when ``with_defaults``.

    Mocks never apply Pulumi.yaml's defaults; the tests leave them out on purpose
    (the program must not rely on them), the emulator puts them in (as the CLI does).
    """
    values: dict[str, str] = project_defaults(root) if with_defaults else {}
    if stack is not None:
        document = yaml.safe_load((root / f"Pulumi.{stack}.yaml").read_text())
        for key, value in (document.get("config") or {}).items():
            if isinstance(value, dict):  # {secure: ...}: encrypted; the caller supplies it
                continue
            values[key] = _config_text(value)
    for key, value in (overrides or {}).items():
        values[key if ":" in key else f"{PROJECT}:{key}"] = value
    return values


def run(
    program: Callable[[], Any],
    *,
    config: Mapping[str, str] | None = None,
    preview: bool = False,
    stack: str = "dev",
    mocks: RecordingMocks | None = None,
) -> RecordingMocks:
    """Run ``program`` to completion under mocks; re-raise whatever made it fail."""
    mocks = mocks or RecordingMocks(preview=preview)
    _ensure_event_loop()  # type: ignore[no-untyped-call]  # a new thread has no loop yet
    secret_keys = [key for key in (config or {}) if key.endswith(":tokenSecret")]
    pulumi.runtime.set_all_config(dict(config or {}), secret_keys)
    pulumi.runtime.settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview)
    pulumi.runtime.settings.SETTINGS.rpc_manager.clear()
    pulumi.runtime.settings.SETTINGS.outputs.clear()
    try:
        _sync_await(run_pulumi_func(program))
    except BaseException:
        retrieve_failures()
        raise
    return mocks


def unretrieved_failures() -> list[asyncio.Future[Any]]:
    """Finished futures whose exception nobody has looked at (asyncio logs those when freed)."""
    return [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, asyncio.Future)
        and obj.done()
        and not obj.cancelled()
        and getattr(obj, "_log_traceback", False)  # what asyncio checks before logging
    ]


def retrieve_failures() -> None:
    """Mark a failed run's leftover futures as seen.

    A failed run leaves dozens of futures holding the error. Freed later by the
    garbage collector, asyncio would log each traceback from a finalizer, and on
    CPython 3.11 that formatting (``ast.parse``) can collide with pytest's own
    assertion rewriting and crash the session ("AST constructor recursion depth
    mismatch", python/cpython#106905).
    """
    for future in unretrieved_failures():
        future.exception()


def run_main(
    stack: str = "dev",
    *,
    secret: str,
    preview: bool = False,
    overrides: Mapping[str, str] | None = None,
    mocks: RecordingMocks | None = None,
    with_defaults: bool = False,
    root: Path = ROOT,
) -> RecordingMocks:
    """Run the real ``__main__.py`` with ``Pulumi.<stack>.yaml`` and a locally given secret."""
    values = stack_config(
        stack, {"tokenSecret": secret, **(overrides or {})}, with_defaults=with_defaults, root=root
    )
    return run(
        lambda: runpy.run_path(str(root / "__main__.py"), run_name="__main__"),
        config=values,
        preview=preview,
        stack=stack,
        mocks=mocks,
    )
