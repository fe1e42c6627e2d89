"""What a program declared, as the emulator needs it: tables, functions, routes, mappings.

Built from the resources ``emulator.program`` recorded (inputs arrive camelCase,
numbers as floats, secrets wrapped), and nothing else: if the program does not
declare it, the emulator does not run it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pulumi.runtime import rpc

from emulator.program import Declared

SIG_KEY: str = rpc._special_sig_key  # how the engine marks a secret value
SECRET_SIG: str = rpc._special_secret_sig


class ModelError(ValueError):
    """The program declares something the emulator cannot run; the message says what."""


def plain(value: Any) -> Any:
    """Unwrap Pulumi secrets (``{sig: secret, value: ...}``) anywhere in a value."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG and "value" in value:
            return plain(value["value"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class TableSpec:
    logical: str
    name: str
    hash_key: str
    range_key: str | None
    attributes: dict[str, str]
    indexes: list[dict[str, Any]]
    stream_view_type: str | None
    ttl_attribute: str | None
    local_indexes: list[dict[str, Any]] = field(default_factory=list)
    """Local secondary indexes: name, range_key (the table's hash key is theirs), projection."""


@dataclass(frozen=True)
class FunctionModel:
    logical: str
    name: str
    arn: str
    handler: str
    environment: dict[str, str]
    timeout: float
    memory_mb: int
    archive: dict[str, str]
    """path inside the archive -> file on disk."""


@dataclass(frozen=True)
class AuthorizerModel:
    function: str
    identity_sources: list[str]


@dataclass(frozen=True)
class RouteModel:
    route_key: str
    function: str
    authorization_type: str
    authorizer: AuthorizerModel | None
    has_route_response: bool


@dataclass(frozen=True)
class MappingModel:
    logical: str
    function: str
    table: str
    """Physical name of the source table."""
    batch_size: int
    batching_window: float
    bisect_on_error: bool
    maximum_retry_attempts: int
    maximum_record_age: int
    starting_position: str
    filters: list[str]
    report_item_failures: bool
    on_failure_queue: str | None
    enabled: bool


@dataclass(frozen=True)
class ScheduleModel:
    """An EventBridge rule with a ``rate(...)`` schedule invoking a function."""

    logical: str
    function: str
    seconds: float
    """The declared rate (the emulator may run it more often: ``--schedule-every``)."""


_RATE = re.compile(r"^rate\((\d+) (second|seconds|minute|minutes|hour|hours|day|days)\)$")
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float:
    """``rate(1 minute)`` -> 60.0; other schedules (``cron(...)``) are a ``ModelError``."""
    match = _RATE.match(expression.strip())
    if not match:
        raise ModelError(f"the emulator runs rate(...) schedules only, not {expression!r}")
    return float(int(match.group(1)) * _UNIT_SECONDS[match.group(2).rstrip("s")])


@dataclass
class Model:
    api_id: str = "local"
    route_selection_expression: str = "$request.body.action"
    stage: str = "dev"
    tables: dict[str, TableSpec] = field(default_factory=dict)
    functions: dict[str, FunctionModel] = field(default_factory=dict)
    routes: dict[str, RouteModel] = field(default_factory=dict)
    mappings: list[MappingModel] = field(default_factory=list)
    parameters: dict[str, tuple[str, str]] = field(default_factory=dict)
    """name -> (type, value)."""
    queues: dict[str, str] = field(default_factory=dict)
    """ARN -> name."""
    schedules: list[ScheduleModel] = field(default_factory=list)


def _table_of_arn(arn: str) -> str:
    # arn:aws:dynamodb:REGION:ACCOUNT:table/NAME[/stream/LABEL]
    try:
        return arn.split(":", 5)[5].split("/")[1]
    except IndexError:
        raise ModelError(f"not a DynamoDB table or stream ARN: {arn!r}") from None


def _archive(code: Any) -> dict[str, str]:
    assets = getattr(code, "assets", None)
    if not isinstance(assets, dict):
        raise ModelError("a function's code must be a pulumi.AssetArchive of files")
    files: dict[str, str] = {}
    for name, asset in assets.items():
        path = getattr(asset, "path", None)
        if not isinstance(path, str):
            raise ModelError(f"archive entry {name!r} is not a FileAsset")
        files[name] = path
    return files


def _table(resource: Declared) -> TableSpec:
    inputs, outputs = resource.inputs, resource.outputs
    indexes = []
    for index in inputs.get("globalSecondaryIndexes") or []:
        keys = {k["keyType"]: k["attributeName"] for k in index.get("keySchemas") or []}
        indexes.append(
            {
                "name": index["name"],
                "hash_key": keys.get("HASH") or index.get("hashKey"),
                "range_key": keys.get("RANGE") or index.get("rangeKey"),
                "projection": index.get("projectionType", "ALL"),
                "non_key_attributes": list(index.get("nonKeyAttributes") or []),
            }
        )
    local_indexes = [
        {
            "name": index["name"],
            "range_key": index["rangeKey"],
            "projection": index.get("projectionType", "ALL"),
        }
        for index in inputs.get("localSecondaryIndexes") or []
    ]
    ttl = inputs.get("ttl") or {}
    return TableSpec(
        logical=resource.name,
        name=str(outputs.get("name") or resource.name),
        hash_key=inputs["hashKey"],
        range_key=inputs.get("rangeKey"),
        attributes={a["name"]: a["type"] for a in inputs.get("attributes") or []},
        indexes=indexes,
        stream_view_type=inputs.get("streamViewType") if inputs.get("streamEnabled") else None,
        ttl_attribute=ttl.get("attributeName") if ttl.get("enabled") else None,
        local_indexes=local_indexes,
    )


def build(resources: Iterable[Declared]) -> Model:
    """The runnable model of a program's declared resources."""
    model = Model()
    by_type: dict[str, list[Declared]] = {}
    for resource in resources:
        by_type.setdefault(resource.type, []).append(resource)

    apis = by_type.get("aws:apigatewayv2/api:Api", [])
    if len(apis) != 1:
        raise ModelError(
            f"the emulator runs exactly one WebSocket API; the program declares {len(apis)}"
        )
    api = apis[0]
    if api.inputs.get("protocolType") != "WEBSOCKET":
        raise ModelError("the declared API is not a WebSocket API")
    model.api_id = str(api.id or api.name)
    model.route_selection_expression = api.inputs.get(
        "routeSelectionExpression", model.route_selection_expression
    )
    stages = by_type.get("aws:apigatewayv2/stage:Stage", [])
    if len(stages) != 1:
        raise ModelError(
            f"the emulator serves exactly one stage; the program declares {len(stages)}"
        )
    model.stage = stages[0].inputs["name"]

    # by logical name: resources register in no fixed order, and what prints them should not
    for resource in sorted(by_type.get("aws:dynamodb/table:Table", []), key=lambda r: r.name):
        table = _table(resource)
        model.tables[table.name] = table

    function_by_arn: dict[str, str] = {}
    for resource in by_type.get("aws:lambda/function:Function", []):
        inputs, outputs = resource.inputs, resource.outputs
        variables = plain((inputs.get("environment") or {}).get("variables") or {})
        function = FunctionModel(
            logical=resource.name,
            name=str(outputs["name"]),
            arn=str(outputs["arn"]),
            handler=inputs["handler"],
            environment={k: str(v) for k, v in variables.items()},
            timeout=float(inputs.get("timeout") or 3),
            memory_mb=int(inputs.get("memorySize") or 128),
            archive=_archive(inputs.get("code")),
        )
        model.functions[function.name] = function
        for key in ("arn", "invokeArn", "name"):
            function_by_arn[str(outputs[key])] = function.name

    def function_of(reference: str, what: str) -> str:
        if reference not in function_by_arn:
            raise ModelError(f"{what} points at {reference!r}, which is no declared function")
        return function_by_arn[reference]

    integrations = {
        str(r.id): function_of(r.inputs["integrationUri"], f"integration {r.name}")
        for r in by_type.get("aws:apigatewayv2/integration:Integration", [])
        if r.inputs.get("integrationType") == "AWS_PROXY"
    }
    authorizers = {
        str(r.id): AuthorizerModel(
            function=function_of(r.inputs["authorizerUri"], f"authorizer {r.name}"),
            identity_sources=list(r.inputs.get("identitySources") or []),
        )
        for r in by_type.get("aws:apigatewayv2/authorizer:Authorizer", [])
    }
    responses = {
        r.inputs.get("routeId")
        for r in by_type.get("aws:apigatewayv2/routeResponse:RouteResponse", [])
    }
    for resource in by_type.get("aws:apigatewayv2/route:Route", []):
        inputs = resource.inputs
        target = str(inputs.get("target") or "")
        integration = target.removeprefix("integrations/")
        if integration not in integrations:
            raise ModelError(
                f"route {inputs['routeKey']!r} targets {target!r}, no Lambda proxy integration"
            )
        kind = inputs.get("authorizationType", "NONE")
        model.routes[inputs["routeKey"]] = RouteModel(
            route_key=inputs["routeKey"],
            function=integrations[integration],
            authorization_type=kind,
            authorizer=authorizers.get(str(inputs.get("authorizerId")))
            if kind == "CUSTOM"
            else None,
            has_route_response=resource.id in responses,
        )

    for resource in by_type.get("aws:ssm/parameter:Parameter", []):
        model.parameters[str(resource.outputs["name"])] = (
            resource.inputs.get("type", "String"),
            str(plain(resource.inputs.get("value"))),
        )
    for resource in by_type.get("aws:sqs/queue:Queue", []):
        model.queues[str(resource.outputs["arn"])] = str(resource.outputs["name"])

    rules = {
        str(r.outputs.get("name") or r.name): r
        for r in by_type.get("aws:cloudwatch/eventRule:EventRule", [])
        if r.inputs.get("scheduleExpression")
    }
    for resource in by_type.get("aws:cloudwatch/eventTarget:EventTarget", []):
        rule = rules.get(str(resource.inputs.get("rule")))
        if rule is None:
            continue  # a target of an event pattern rule: nothing to schedule
        model.schedules.append(
            ScheduleModel(
                logical=rule.name,
                function=function_of(resource.inputs["arn"], f"target {resource.name}"),
                seconds=rate_seconds(rule.inputs["scheduleExpression"]),
            )
        )

    for resource in by_type.get("aws:lambda/eventSourceMapping:EventSourceMapping", []):
        inputs = resource.inputs
        on_failure = ((inputs.get("destinationConfig") or {}).get("onFailure") or {}).get(
            "destinationArn"
        )
        if on_failure and on_failure not in model.queues:
            raise ModelError(
                f"mapping {resource.name}: on-failure destination {on_failure!r}"
                " is no declared queue"
            )
        model.mappings.append(
            MappingModel(
                logical=resource.name,
                function=function_of(inputs["functionName"], f"mapping {resource.name}"),
                table=_table_of_arn(inputs["eventSourceArn"]),
                batch_size=int(inputs.get("batchSize") or 100),
                batching_window=float(inputs.get("maximumBatchingWindowInSeconds") or 0),
                bisect_on_error=bool(inputs.get("bisectBatchOnFunctionError", False)),
                maximum_retry_attempts=int(inputs.get("maximumRetryAttempts", -1)),
                maximum_record_age=int(inputs.get("maximumRecordAgeInSeconds", -1)),
                starting_position=inputs.get("startingPosition", "LATEST"),
                filters=[
                    f["pattern"] for f in (inputs.get("filterCriteria") or {}).get("filters") or []
                ],
                report_item_failures="ReportBatchItemFailures"
                in (inputs.get("functionResponseTypes") or []),
                on_failure_queue=model.queues.get(on_failure) if on_failure else None,
                enabled=bool(inputs.get("enabled", True)),
            )
        )
    return model


def archive_digest(archive: dict[str, str]) -> str:
    """A short content hash of an archive (functions sharing one archive share a directory)."""
    digest = hashlib.sha256()
    for inside, source in sorted(archive.items()):
        digest.update(inside.encode() + b"\0")
        with open(source, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:16]
