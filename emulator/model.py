"""What a program declared, as the emulator needs it: tables, functions, routes, mappings,
queues.

Built from the resources ``emulator.program`` recorded (inputs arrive camelCase,
numbers as floats, secrets wrapped), and nothing else: if the program does not
declare it, the emulator does not run it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
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
class QueueMappingModel:
    """An event source mapping from an SQS queue (Lambda's SQS poller)."""

    logical: str
    function: str
    queue: str
    """Physical name of the source queue."""
    batch_size: int
    report_item_failures: bool
    maximum_concurrency: int
    """``scalingConfig.maximumConcurrency``: at most this many invocations at once."""
    enabled: bool


@dataclass(frozen=True)
class QueueSpec:
    """A declared SQS queue, with the attributes the emulator creates it with."""

    logical: str
    name: str
    arn: str
    fifo: bool = False
    visibility_timeout: int = 30
    retention: int = 345600
    """``messageRetentionSeconds`` (SQS's default: four days)."""
    content_based_deduplication: bool = False
    deduplication_scope: str | None = None
    """``messageGroup`` or ``queue`` (FIFO only; None: SQS's default, ``queue``)."""
    throughput_limit: str | None = None
    """``perMessageGroupId`` or ``perQueue`` (FIFO only)."""
    dead_letter_queue: str | None = None
    """Physical name of the redrive policy's dead-letter queue."""
    max_receive_count: int | None = None


QUEUE_MAPPING_DEFAULT_BATCH_SIZE = 10
QUEUE_MAPPING_DEFAULT_CONCURRENCY = 1000
"""Without ``scalingConfig.maximumConcurrency`` Lambda scales up to 1,000 concurrent batches
(the emulator's pool caps what actually runs at once)."""


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
    """Event source mappings from DynamoDB streams."""
    queue_mappings: list[QueueMappingModel] = field(default_factory=list)
    """Event source mappings from SQS queues."""
    parameters: dict[str, tuple[str, str]] = field(default_factory=dict)
    """name -> (type, value)."""
    queues: dict[str, str] = field(default_factory=dict)
    """ARN -> name."""
    queue_specs: dict[str, QueueSpec] = field(default_factory=dict)
    """name -> the queue's attributes; a dead-letter queue comes before the queues using it."""
    schedules: list[ScheduleModel] = field(default_factory=list)


def _table_of_arn(arn: str) -> str:
    # arn:aws:dynamodb:REGION:ACCOUNT:table/NAME[/stream/LABEL]
    try:
        return arn.split(":", 5)[5].split("/")[1]
    except IndexError:
        raise ModelError(f"not a DynamoDB table or stream ARN: {arn!r}") from None


def _source_service(arn: Any) -> str:
    """``dynamodb`` or ``sqs``: the service of a mapping's ``eventSourceArn``, or ModelError."""
    parts = arn.split(":") if isinstance(arn, str) else []
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] in ("dynamodb", "sqs") and parts[5]:
        return parts[2]
    raise ModelError(
        f"event source {arn!r} is neither a DynamoDB stream nor an SQS queue ARN;"
        " the emulator polls only those"
    )


def _flag(value: Any, default: bool = False) -> bool:
    """A boolean input (Pulumi may hand over ``"true"``)."""
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _queue(resource: Declared, name_of_arn: dict[str, str]) -> QueueSpec:
    inputs, outputs = resource.inputs, resource.outputs
    name = str(outputs["name"])
    fifo = _flag(inputs.get("fifoQueue"))
    if fifo and not name.endswith(".fifo"):
        raise ModelError(f"queue {resource.name}: a FIFO queue's name must end in .fifo: {name!r}")
    dead_letter, max_receives = None, None
    policy = plain(inputs.get("redrivePolicy"))
    if policy:
        try:
            document = json.loads(policy) if isinstance(policy, str) else policy
            target = str(document["deadLetterTargetArn"])
            max_receives = int(document["maxReceiveCount"])
        except (ValueError, TypeError, KeyError):
            raise ModelError(
                f"queue {resource.name}: redrivePolicy is not JSON with deadLetterTargetArn"
                f" and maxReceiveCount: {policy!r}"
            ) from None
        if target not in name_of_arn:
            raise ModelError(
                f"queue {resource.name}: dead-letter target {target!r} is no declared queue"
            )
        if max_receives < 1:
            raise ModelError(f"queue {resource.name}: maxReceiveCount must be at least 1")
        dead_letter = name_of_arn[target]
    return QueueSpec(
        logical=resource.name,
        name=name,
        arn=str(outputs["arn"]),
        fifo=fifo,
        visibility_timeout=int(inputs.get("visibilityTimeoutSeconds") or 30),
        retention=int(inputs.get("messageRetentionSeconds") or 345600),
        content_based_deduplication=_flag(inputs.get("contentBasedDeduplication")),
        deduplication_scope=inputs.get("deduplicationScope") if fifo else None,
        throughput_limit=inputs.get("fifoThroughputLimit") if fifo else None,
        dead_letter_queue=dead_letter,
        max_receive_count=max_receives,
    )


def _dead_letters_first(specs: list[QueueSpec]) -> list[QueueSpec]:
    """The queues ordered so that a dead-letter queue comes before every queue using it."""
    by_name = {spec.name: spec for spec in specs}
    ordered: dict[str, QueueSpec] = {}

    def visit(spec: QueueSpec, path: tuple[str, ...]) -> None:
        if spec.name in ordered:
            return
        if spec.name in path:
            raise ModelError(f"queues redrive to each other: {' -> '.join((*path, spec.name))}")
        target = by_name.get(spec.dead_letter_queue or "")
        if target is not None:
            visit(target, (*path, spec.name))
        ordered[spec.name] = spec

    for spec in specs:
        visit(spec, ())
    return list(ordered.values())


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
    queues = sorted(by_type.get("aws:sqs/queue:Queue", []), key=lambda r: r.name)
    for resource in queues:
        model.queues[str(resource.outputs["arn"])] = str(resource.outputs["name"])
    specs = [_queue(resource, model.queues) for resource in queues]
    model.queue_specs = {spec.name: spec for spec in _dead_letters_first(specs)}

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
        if _source_service(inputs.get("eventSourceArn")) == "sqs":
            model.queue_mappings.append(_queue_mapping(resource, model, function_of))
            continue
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


def _queue_mapping(
    resource: Declared, model: Model, function_of: Callable[[str, str], str]
) -> QueueMappingModel:
    inputs = resource.inputs
    source = str(inputs["eventSourceArn"])
    if source not in model.queues:
        raise ModelError(f"mapping {resource.name}: source {source!r} is no declared queue")
    queue = model.queue_specs[model.queues[source]]
    batch_size = int(inputs.get("batchSize") or QUEUE_MAPPING_DEFAULT_BATCH_SIZE)
    if queue.fifo and not 1 <= batch_size <= 10:
        raise ModelError(
            f"mapping {resource.name}: a FIFO queue's batch size is 1 to 10, not {batch_size}"
        )
    scaling = inputs.get("scalingConfig") or {}
    concurrency = int(scaling.get("maximumConcurrency") or QUEUE_MAPPING_DEFAULT_CONCURRENCY)
    if not 2 <= concurrency <= 1000:
        raise ModelError(
            f"mapping {resource.name}: maximumConcurrency is 2 to 1000, not {concurrency}"
        )
    return QueueMappingModel(
        logical=resource.name,
        function=function_of(inputs["functionName"], f"mapping {resource.name}"),
        queue=queue.name,
        batch_size=batch_size,
        report_item_failures="ReportBatchItemFailures"
        in (inputs.get("functionResponseTypes") or []),
        maximum_concurrency=concurrency,
        enabled=_flag(inputs.get("enabled"), default=True),
    )


def archive_digest(archive: dict[str, str]) -> str:
    """A short content hash of an archive (functions sharing one archive share a directory)."""
    digest = hashlib.sha256()
    for inside, source in sorted(archive.items()):
        digest.update(inside.encode() + b"\0")
        with open(source, "rb") as handle:
            digest.update(hashlib.sha256(handle.read()).digest())
    return digest.hexdigest()[:16]
