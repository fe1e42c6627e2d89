"""Local AWS services for the emulator: an embedded moto server on 127.0.0.1.

One server serves DynamoDB (with Streams), SSM and SQS. ``provision`` creates
what the program declared: tables with their keys, indexes and streams, the
SSM parameters, the queues.

moto accepts items DynamoDB refuses: ``refuse_what_dynamodb_refuses`` makes it
answer writes nested deeper than DynamoDB's 32 levels with DynamoDB's own
``ValidationException``, instead of storing an item whose stream record moto
then cannot serve (its GetRecords fails from ~160 levels on, for good).

moto's DynamoDB is not safe for concurrent requests, which the emulator sends
(the gateway's handlers, the broadcaster's query threads, the stream poller):
a transaction deep-copies its tables for rollback, and a query iterates a
table's items, while other threads write them ("dictionary changed size
during iteration", answered as HTTP 500); a cancelled transaction even puts
back its copy, losing what other threads wrote meanwhile. ``serialize_writes``
makes every DynamoDB write (and transaction) run alone and reads run
together, never beside a write.

moto writes each attribute value of an answer through its generic,
model-driven serializer (ten members looked up under several aliases per
value): over half of a 250-item Query's time. ``serialize_attribute_values_fast``
writes the well-formed values directly, to the same JSON, and leaves anything
else to moto.

moto's SQS serves concurrent requests on shared lists with no lock, and its FIFO
queues differ from SQS's (order of a redelivered group, deduplication window and
scope, sequence numbers, retention): ``serialize_sqs`` and ``fifo_queues_like_sqs``
say what SQS does and what moto did, and make moto do the former.
"""

from __future__ import annotations

import base64
import functools
import importlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from emulator.model import Model, QueueSpec, TableSpec
from emulator.program import REGION

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
}
SERVICES = ("DYNAMODB", "DYNAMODB_STREAMS", "SSM", "SQS")
MOTO_SERVICES = ("dynamodb", "dynamodbstreams", "ssm", "sqs")


def stop_tracking_instances() -> None:
    """Stop moto keeping every model object it ever creates for the served services.

    moto appends each new instance of a model class to the class's
    ``instances_tracked`` list, only for its dashboard. A DynamoDB read (scan,
    query, get) builds copies of the items it returns, so each of them stayed in
    memory for good: with 500 connections every broadcast's scan of the
    connections table kept ~1,000 items (~1 MB), and the full garbage
    collections of this process (gateway and moto) grew past 250 ms within a
    minute. A zero-length deque takes the appends and keeps nothing. moto's
    reset puts lists back, so this runs after every reset.
    """
    from moto.core.model_instances import model_data

    for service in MOTO_SERVICES:
        importlib.import_module(f"moto.{service}.models")  # registers its model classes
        for model in model_data.get(service, {}).values():
            model.instances_tracked = deque(maxlen=0)  # type: ignore[attr-defined]


MAX_NESTING_LEVELS = 32
"""DynamoDB's document depth: a top-level attribute is level 1, so 31 maps or lists may
wrap a scalar and 32 may not."""
NESTING_ERROR = (
    "Nesting Levels have exceeded supported limits: "
    "Attributes in the item have nested levels beyond supported limit"
)
"""DynamoDB's message for a write nested past ``MAX_NESTING_LEVELS`` (a ValidationException)."""


def too_deep(values: Iterable[Any], limit: int = MAX_NESTING_LEVELS) -> bool:
    """Whether any of these attribute values (``{"M": ...}``, ``{"L": ...}``, scalars) nests
    deeper than ``limit`` levels. Iterative, so no input depth can exhaust the stack."""
    pending = [(value, 1) for value in values]
    while pending:
        value, level = pending.pop()
        if level > limit:
            return True
        if not isinstance(value, Mapping):
            continue
        children = value.get("M")
        if isinstance(children, Mapping):
            pending.extend((child, level + 1) for child in children.values())
        elements = value.get("L")
        if isinstance(elements, list):
            pending.extend((child, level + 1) for child in elements)
    return False


def _item(body: Any) -> Iterator[Any]:
    item = body.get("Item") if isinstance(body, Mapping) else None
    if isinstance(item, Mapping):
        yield from item.values()


def _update_values(body: Any) -> Iterator[Any]:
    """The values an UpdateItem (or a transaction's Update) may store."""
    if not isinstance(body, Mapping):
        return
    for update in (body.get("AttributeUpdates") or {}).values():
        if isinstance(update, Mapping) and "Value" in update:
            yield update["Value"]
    yield from (body.get("ExpressionAttributeValues") or {}).values()


def _batch_values(body: Any) -> Iterator[Any]:
    for requests in (body.get("RequestItems") or {}).values():
        for request in requests if isinstance(requests, list) else []:
            if isinstance(request, Mapping):
                yield from _item(request.get("PutRequest"))


def _transaction_values(body: Any) -> Iterator[Any]:
    for entry in body.get("TransactItems") or []:
        if isinstance(entry, Mapping):
            yield from _item(entry.get("Put"))
            yield from _update_values(entry.get("Update"))


_WRITES: dict[str, Callable[[Any], Iterator[Any]]] = {
    "put_item": _item,
    "update_item": _update_values,
    "batch_write_item": _batch_values,
    "transact_write_items": _transaction_values,
}


def refuse_what_dynamodb_refuses() -> None:
    """Make moto's PutItem, UpdateItem, BatchWriteItem and TransactWriteItems refuse values
    nested past DynamoDB's limit with DynamoDB's ValidationException (idempotent).

    The check runs on the request before moto touches the table, so a refused write
    stores nothing and writes no stream record; the whole batch or transaction is
    refused, as DynamoDB refuses it up front.
    """
    from moto.dynamodb.exceptions import MockValidationException
    from moto.dynamodb.responses import DynamoHandler

    for name, values_of in _WRITES.items():
        action = getattr(DynamoHandler, name)
        if getattr(action, "_refuses_deep_values", False):
            continue

        def guarded(
            handler: Any,
            action: Callable[[Any], Any] = action,
            values_of: Callable[[Any], Iterator[Any]] = values_of,
        ) -> Any:
            if too_deep(values_of(handler.body)):
                raise MockValidationException(NESTING_ERROR)
            return action(handler)

        functools.update_wrapper(guarded, action)
        guarded._refuses_deep_values = True  # type: ignore[attr-defined]
        setattr(DynamoHandler, name, guarded)


class ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before readers that come after it
    (a steady stream of queries cannot starve the writes)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._changed:
            while self._writing or self._writers_waiting:
                self._changed.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                if not self._readers:
                    self._changed.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._changed:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._changed.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._changed:
                self._writing = False
                self._changed.notify_all()


DYNAMODB_LOCK = ReadWriteLock()
"""Held around every request moto's DynamoDB and DynamoDB Streams handlers serve."""

DYNAMODB_READS = frozenset(
    {
        "BatchGetItem",
        "DescribeContinuousBackups",
        "DescribeEndpoints",
        "DescribeTable",
        "DescribeTimeToLive",
        "GetItem",
        "ListTables",
        "ListTagsOfResource",
        "Query",
        "Scan",
        "TransactGetItems",
    }
)
"""DynamoDB actions that only read moto's tables; any other action (PartiQL included) runs
alone. Every DynamoDB Streams action reads."""


def serialize_writes() -> None:
    """Make moto's DynamoDB serve a write or transaction only when no other request is in
    flight, and reads side by side (idempotent). See the module's docstring."""
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    for handler_class in (DynamoHandler, DynamoDBStreamsHandler):
        call_action = handler_class.call_action
        if getattr(call_action, "_serialized", False):
            continue
        streams = handler_class is DynamoDBStreamsHandler

        def serialized(
            handler: Any, call_action: Callable[[Any], Any] = call_action, streams: bool = streams
        ) -> Any:
            reads = streams or handler._get_action() in DYNAMODB_READS
            with DYNAMODB_LOCK.reading() if reads else DYNAMODB_LOCK.writing():
                return call_action(handler)

        functools.update_wrapper(serialized, call_action)
        serialized._serialized = True  # type: ignore[attr-defined]
        handler_class.call_action = serialized  # type: ignore[method-assign]


def transactions_back_up_items_only() -> None:
    """Make a moto transaction cost what it writes, not the size of its tables (idempotent).

    moto backs up every table a TransactWriteItems touches with ``copy.deepcopy`` before it
    starts, to put them back if it is cancelled: each ``subscribe`` (a transaction on the
    connections and subscriptions tables) copied both whole, so connecting 1,500 clients
    took 211 s, most of it copying, and grew with the square of the clients. Here a table
    without a stream is not copied; the items the transaction names are (before it runs),
    and a cancelled transaction puts exactly those back. A table with a stream keeps moto's
    whole copy, which also takes back the stream records of the cancelled writes.
    """
    import copy as copying

    from moto.dynamodb import models
    from moto.dynamodb.exceptions import (
        MockValidationException,
        MultipleTransactionsException,
        TransactionCanceledException,
    )
    from moto.dynamodb.models.table import Table

    if getattr(getattr(models, "copy"), "_items_only", False):  # noqa: B009
        return

    class _Copy:
        """``copy`` as moto's backend sees it: a stream-less Table is not copied."""

        _items_only = True

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            if isinstance(value, Table) and value.stream_shard is None:
                return value
            return copying.deepcopy(value, memo)

        copy = staticmethod(copying.copy)

    transact = models.DynamoDBBackend.transact_write_items

    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
        backups: list[tuple[str, dict[str, Any], Any]] = []
        for entry in transact_items:
            for op_type, op in entry.items():
                table = backend.tables.get(op.get("TableName"))
                if table is None or table.stream_shard is not None:
                    continue
                try:
                    if op_type == "Put":
                        names = [table.hash_key_attr, table.range_key_attr]
                        key = {n: op["Item"][n] for n in names if n is not None}
                    else:
                        key = dict(op["Key"])
                    current = backend.get_item(op["TableName"], key)
                except Exception:  # noqa: S112 (moto's own validation answers for it below)
                    continue
                backups.append((op["TableName"], key, copying.deepcopy(current)))
        try:
            transact(backend, transact_items)
        except (TransactionCanceledException, MultipleTransactionsException,
                MockValidationException):  # fmt: skip
            for name, key, item in reversed(backups):
                table = backend.tables[name]
                if item is None:
                    if backend.get_item(name, key) is not None:
                        backend.delete_item(name, key)
                else:
                    table.put_item(item.to_json()["Attributes"])
            raise

    functools.update_wrapper(transact_write_items, transact)
    setattr(models, "copy", _Copy)  # noqa: B010
    setattr(models.DynamoDBBackend, "transact_write_items", transact_write_items)  # noqa: B010


class UnusualValue(ValueError):
    """An attribute value ``attribute_value_json`` leaves to moto's own serializer."""


_STRINGS = frozenset({"S", "N"})
_STRING_SETS = frozenset({"SS", "NS"})
_BOOLEANS = frozenset({"NULL", "BOOL"})


def _base64(value: bytes | str) -> str:
    """moto's blob serialization: text is encoded as UTF-8 first."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    return base64.b64encode(raw).decode("utf-8")


def attribute_value_json(value: Any) -> dict[str, Any]:
    """The JSON moto's serializer writes for one DynamoDB ``AttributeValue`` as moto's
    DynamoDB handlers hand it over (``{"S": "x"}``, ``{"B": b"..."}``, ``{"M": {...}}``...).

    Only the shapes moto's own handlers produce are written here: one type key with a
    value of exactly the expected Python type (strings for S, N and set members, bytes
    or text for binaries, bool for NULL and BOOL), maps with non-empty keys, no ``None``
    anywhere. Anything else raises ``UnusualValue`` and goes through moto's serializer,
    whose answers (aliases, ``str()`` of other types, skipped ``None`` members) stay its
    own. Recursion follows the value's depth, which writes keep within 32 levels.
    """
    if type(value) is not dict or len(value) != 1:
        raise UnusualValue(value)
    ((kind, inner),) = value.items()
    if kind in _STRINGS:
        if type(inner) is str:
            return {kind: inner}
    elif kind == "M":
        if type(inner) is dict:
            if "" in inner:
                raise UnusualValue(value)  # moto writes such an entry's members into the map
            return {"M": {name: attribute_value_json(child) for name, child in inner.items()}}
    elif kind == "L":
        if type(inner) is list:
            return {"L": [attribute_value_json(child) for child in inner]}
    elif kind in _BOOLEANS:
        if type(inner) is bool:
            return {kind: inner}
    elif kind == "B":
        if type(inner) in (bytes, str):
            return {"B": _base64(inner)}
    elif kind in _STRING_SETS:
        if type(inner) is list and all(type(member) is str for member in inner):
            return {kind: list(inner)}
    elif (
        kind == "BS"
        and type(inner) is list
        and all(type(member) in (bytes, str) for member in inner)
    ):
        return {"BS": [_base64(member) for member in inner]}
    raise UnusualValue(value)


FAST_SERIALIZED_SERVICES = frozenset({"dynamodb", "dynamodbstreams"})


def serialize_attribute_values_fast() -> None:
    """Make moto's JSON serializer write DynamoDB and DynamoDB Streams attribute values with
    ``attribute_value_json`` (idempotent): same bytes, a fraction of the time."""
    from moto.core.serialize import JSONSerializer

    generic = JSONSerializer._serialize_type_structure
    if getattr(generic, "_fast_attribute_values", False):
        return

    def structure(serializer: Any, serialized: Any, value: Any, shape: Any, key: str) -> None:
        if (
            key
            and shape.name == "AttributeValue"
            and serializer.service_model.service_name in FAST_SERIALIZED_SERVICES
        ):
            try:
                serialized[serializer.get_serialized_name(shape, key)] = attribute_value_json(value)
                return
            except (UnusualValue, RecursionError):
                pass
        generic(serializer, serialized, value, shape, key)

    functools.update_wrapper(structure, generic)
    structure._fast_attribute_values = True  # type: ignore[attr-defined]
    JSONSerializer._serialize_type_structure = structure  # type: ignore[method-assign,assignment]


class LocalAws:
    """The embedded moto server and clients for it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        refuse_what_dynamodb_refuses()
        serialize_writes()
        transactions_back_up_items_only()
        serialize_attribute_values_fast()
        serialize_sqs()
        fifo_queues_like_sqs()
        sqs_bookkeeping_fast()
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self.endpoint = ""
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def start(self) -> LocalAws:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        stop_tracking_instances()
        return self

    def stop(self) -> None:
        self._server.stop()

    def reset(self) -> None:
        """Forget every table, parameter and queue (moto's own reset endpoint)."""
        import urllib.request

        url = f"{self.endpoint}/moto-api/reset"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 (our own http URL)
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (local http)
            answer.read()
        stop_tracking_instances()

    def environment(self) -> dict[str, str]:
        """What a process needs to reach these services with any AWS SDK."""
        env = {f"AWS_ENDPOINT_URL_{service}": self.endpoint for service in SERVICES}
        env.update(FAKE_CREDENTIALS)
        env.update(
            AWS_REGION=REGION,
            AWS_DEFAULT_REGION=REGION,
            AWS_ACCOUNT_ID_ENDPOINT_MODE="disabled",
        )
        return env

    def client(self, service: str) -> Any:
        """A client of the local service, created once (botocore clients are thread-safe)."""
        import boto3

        with self._lock:
            if service not in self._clients:
                self._clients[service] = boto3.session.Session().client(
                    service,
                    endpoint_url=self.endpoint,
                    region_name=REGION,
                    aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                    aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                )
            return self._clients[service]

    def describe_table(self, name: str) -> dict[str, Any] | None:
        """getTable's answer for an existing local table (None if there is none)."""
        client = self.client("dynamodb")
        try:
            table = client.describe_table(TableName=name)["Table"]
        except client.exceptions.ResourceNotFoundException:
            return None
        stream = table.get("StreamSpecification") or {}
        keys = {k["KeyType"]: k["AttributeName"] for k in table.get("KeySchema") or []}
        return {
            "name": name,
            "arn": table["TableArn"],
            "streamEnabled": bool(stream.get("StreamEnabled")),
            "streamViewType": stream.get("StreamViewType"),
            "streamArn": table.get("LatestStreamArn"),
            "hashKey": keys.get("HASH"),
            "rangeKey": keys.get("RANGE"),
            "attributes": [
                {"name": a["AttributeName"], "type": a["AttributeType"]}
                for a in table.get("AttributeDefinitions") or []
            ],
        }


def table_request(table: TableSpec) -> dict[str, Any]:
    """``CreateTable`` arguments for a declared table (pure)."""
    keys = [{"AttributeName": table.hash_key, "KeyType": "HASH"}]
    if table.range_key:
        keys.append({"AttributeName": table.range_key, "KeyType": "RANGE"})
    request: dict[str, Any] = {
        "TableName": table.name,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": keys,
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": kind}
            for name, kind in sorted(table.attributes.items())
        ],
    }
    if table.indexes:
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index["name"],
                "KeySchema": [{"AttributeName": index["hash_key"], "KeyType": "HASH"}]
                + (
                    [{"AttributeName": index["range_key"], "KeyType": "RANGE"}]
                    if index.get("range_key")
                    else []
                ),
                "Projection": {
                    "ProjectionType": index["projection"],
                    **(
                        {"NonKeyAttributes": index["non_key_attributes"]}
                        if index.get("non_key_attributes")
                        else {}
                    ),
                },
            }
            for index in table.indexes
        ]
    if table.local_indexes:
        request["LocalSecondaryIndexes"] = [
            {
                "IndexName": index["name"],
                "KeySchema": [
                    {"AttributeName": table.hash_key, "KeyType": "HASH"},
                    {"AttributeName": index["range_key"], "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": index["projection"]},
            }
            for index in table.local_indexes
        ]
    if table.stream_view_type:
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": table.stream_view_type,
        }
    return request


def queue_request(spec: QueueSpec, dead_letter_arn: str | None = None) -> dict[str, Any]:
    """``CreateQueue`` arguments for a declared queue (pure); ``dead_letter_arn``: the ARN of
    its redrive policy's dead-letter queue (as the local SQS named it), if it has one."""
    attributes = {
        "VisibilityTimeout": str(spec.visibility_timeout),
        "MessageRetentionPeriod": str(spec.retention),
    }
    if spec.fifo:
        attributes["FifoQueue"] = "true"
        attributes["ContentBasedDeduplication"] = str(spec.content_based_deduplication).lower()
        if spec.deduplication_scope:
            attributes["DeduplicationScope"] = spec.deduplication_scope
        if spec.throughput_limit:
            attributes["FifoThroughputLimit"] = spec.throughput_limit
    if spec.dead_letter_queue is not None:
        if dead_letter_arn is None:
            raise ValueError(f"queue {spec.name}: its dead-letter queue's ARN is needed")
        attributes["RedrivePolicy"] = json.dumps(
            {
                "deadLetterTargetArn": dead_letter_arn,
                "maxReceiveCount": spec.max_receive_count,
            }
        )
    return {"QueueName": spec.name, "Attributes": attributes}


def provision(aws: LocalAws, model: Model) -> None:
    """Create the declared tables, parameters and queues (existing tables are kept)."""
    dynamodb = aws.client("dynamodb")
    existing = set(dynamodb.list_tables().get("TableNames", []))
    for table in model.tables.values():
        if table.name in existing:
            continue
        dynamodb.create_table(**table_request(table))
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=table.name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
    ssm = aws.client("ssm")
    for name, (kind, value) in model.parameters.items():
        ssm.put_parameter(Name=name, Type=kind, Value=value, Overwrite=True)
    sqs = aws.client("sqs")
    arns: dict[str, str] = {}
    for spec in model.queue_specs.values():  # dead-letter queues first
        target = arns.get(spec.dead_letter_queue or "")
        url = sqs.create_queue(**queue_request(spec, target))["QueueUrl"]
        arns[spec.name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    for name in model.queues.values():
        if name not in model.queue_specs:
            sqs.create_queue(QueueName=name)


# -- SQS: FIFO queues as SQS runs them --------------------------------------------------------

SQS_LOCK = threading.RLock()
"""Held around every SQS request moto serves (a ReceiveMessage only while it looks at the
queue, not while it waits for messages)."""

DEDUPLICATION_WINDOW_MS = 5 * 60 * 1000
"""SQS drops a FIFO message whose deduplication id it accepted in the last five minutes."""

RECEIVE_WAIT_STEP = 0.05
"""How often a waiting ReceiveMessage looks again (a send wakes it at once; this bounds how
late it sees a message whose visibility timeout ran out)."""


def serialize_sqs() -> None:
    """Make moto's SQS serve one request at a time (idempotent).

    SQS: a message is handed to one receiver at a time, and a FIFO group's in-flight
    message keeps every other receiver out of the group. moto: its threaded server runs
    ReceiveMessage, SendMessage and DeleteMessage side by side on the same lists with no
    lock, so two concurrent receives can both take messages of one group (or the same
    message), and a receive can iterate a list a delete is replacing. Here every SQS
    action holds ``SQS_LOCK``; ReceiveMessage takes it in ``receive_message`` for each
    look at the queue and waits (``WaitTimeSeconds``) without it, so a long poll does not
    hold up the sends it waits for.
    """
    from moto.sqs.responses import SQSResponse

    call_action = SQSResponse.call_action
    if getattr(call_action, "_serialized", False):
        return

    def serialized(handler: Any) -> Any:
        if handler._get_action() == "ReceiveMessage":
            return call_action(handler)
        with SQS_LOCK:
            return call_action(handler)

    functools.update_wrapper(serialized, call_action)
    serialized._serialized = True  # type: ignore[attr-defined]
    SQSResponse.call_action = serialized  # type: ignore[method-assign,assignment]


def _fifo_add_message(queue: Any, message: Any) -> None:
    """A FIFO queue's ``add_message``: deduplication by scope, increasing sequence numbers."""
    from moto.core.utils import unix_time_millis

    if message.approximate_receive_count == 0:  # sent, not moved here from a source queue
        now = unix_time_millis()
        seen: dict[Any, tuple[float, str, str]] = queue.__dict__.setdefault("_dedup_seen", {})
        for key in [k for k, (at, _, _) in seen.items() if now - at >= DEDUPLICATION_WINDOW_MS]:
            del seen[key]
        if message.deduplication_id is not None:
            group = message.group_id if queue.deduplication_scope == "messageGroup" else None
            key = (group, message.deduplication_id)
            if key in seen:  # accepted, not delivered: the answer names the original
                _, message.id, message.sequence_number = seen[key]
                return
        sequence = queue.__dict__.get("_next_sequence", 0) + 1
        queue._next_sequence = sequence
        message.sequence_number = f"{sequence:020d}"
        if message.deduplication_id is not None:
            seen[key] = (now, message.id, message.sequence_number)
    with queue._messages_lock:
        queue._messages.append(message)
        queue._messages_lock.notify_all()


def _fifo_receive(
    queue: Any, count: int, visibility_timeout: int, attribute_names: list[str]
) -> list[Any]:
    """One look at a FIFO queue: SQS's ReceiveMessage (see ``fifo_queues_like_sqs``)."""
    from copy import deepcopy

    from moto.core.utils import unix_time_millis
    from moto.sqs.models import _filter_message_attributes

    now = unix_time_millis()
    retention_ms = int(queue.message_retention_period) * 1000
    kept = []
    for message in queue._messages:
        if message.sent_timestamp + retention_ms <= now:  # past retention: SQS deletes it
            queue.pending_messages.discard(message)
            queue.deleted_messages.update(message.all_receipt_handles)
        else:
            kept.append(message)
    queue._messages = kept
    in_flight = {m.group_id for m in kept if not m.visible}
    groups: dict[str, list[Any]] = {}
    for message in kept:
        if message.group_id not in in_flight:
            groups.setdefault(message.group_id, []).append(message)
    policy = queue.redrive_policy if queue.dead_letter_queue is not None else None
    result: list[Any] = []
    for messages in groups.values():  # the group of the oldest message first
        for message in messages:
            if len(result) >= count:
                return result
            if policy and message.approximate_receive_count >= policy["maxReceiveCount"]:
                queue._messages.remove(message)
                queue.pending_messages.discard(message)
                queue.dead_letter_queue.add_message(message)
                continue
            queue.pending_messages.add(message)
            message.mark_received(visibility_timeout=visibility_timeout)
            copy = deepcopy(message)
            _filter_message_attributes(copy, attribute_names)
            result.append(copy)
    return result


ATTRIBUTES_FRESH_SECONDS = 0.05
"""How long a queue's attributes (their ``Approximate*`` counts) are reused."""


def sqs_bookkeeping_fast() -> None:
    """Make moto's SQS bookkeeping cost what SQS's does: nothing per message (idempotent).

    moto reads the clock through ``datetime`` (about 6 µs a call) for every message's
    ``visible``/``delayed`` check, and builds a queue's whole ``attributes`` (three counts
    over every message) each time it wants one setting, four times per message sent
    (``ContentBasedDeduplication``): with a few hundred messages queued, a SendMessageBatch
    of 10 took 380 ms of CPU and a queued fan-out spiralled. Here the SQS model reads
    ``time.time()`` and a queue's attributes are reused for ``ATTRIBUTES_FRESH_SECONDS``
    (SQS calls the counts approximate too) unless its settings change.
    """
    import time

    from moto.sqs import models

    slow = getattr(models, "unix_time_millis")  # noqa: B009 (not exported: typed Any)
    if getattr(slow, "_fast", False):
        return

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else float(slow(dt))

    unix_time_millis._fast = True  # type: ignore[attr-defined]
    setattr(models, "unix_time_millis", unix_time_millis)  # noqa: B010

    full = models.Queue.attributes.fget  # type: ignore[attr-defined]
    set_attributes = models.Queue._set_attributes

    def attributes(queue: Any) -> dict[str, Any]:
        now = time.monotonic()
        cached = queue.__dict__.get("_attributes_cache")
        if cached is not None and now - cached[0] < ATTRIBUTES_FRESH_SECONDS:
            return dict(cached[1])
        found: dict[str, Any] = full(queue)
        queue._attributes_cache = (now, found)
        return dict(found)

    def set_and_forget(queue: Any, *args: Any, **kwargs: Any) -> Any:
        queue.__dict__.pop("_attributes_cache", None)
        return set_attributes(queue, *args, **kwargs)

    functools.update_wrapper(set_and_forget, set_attributes)
    models.Queue.attributes = property(attributes)  # type: ignore[assignment,method-assign]
    setattr(models.Queue, "_set_attributes", set_and_forget)  # noqa: B010


def fifo_queues_like_sqs() -> None:
    """Make moto's FIFO queues behave as SQS's do where the emulator relies on it
    (idempotent); standard queues are left to moto (under ``serialize_sqs``'s lock).

    * Order within a group. SQS hands out a group's messages in the order they were sent.
      moto, when a group's in-flight messages became visible again, skipped all but the
      last of them (it unlocks the group one message at a time while it iterates), so a
      redelivered group came back out of order.
    * The group lock. SQS returns no message of a group while one of its messages is in
      flight (received, not deleted, visibility not expired), and fills a batch with as
      many messages of one group as it can before taking another group. Here: a group
      with any message in flight is skipped; the others are taken group by group, oldest
      group first, in order.
    * Deduplication. SQS drops a message whose deduplication id it accepted in the last
      five minutes, per message group with ``DeduplicationScope`` ``messageGroup``, and
      whether or not the first is still in the queue; the duplicate's answer carries the
      first message's id. moto compared only with messages still in the queue, and across
      all groups whatever the scope.
    * Sequence numbers. SQS's grow with every message; moto's were 20 random digits. Here:
      a counter per queue, as 20 digits (they sort as numbers and as text).
    * Retention. SQS deletes a message older than ``MessageRetentionPeriod``; moto left it
      in the queue, and every receive stopped at it.
    * Redrive. As moto: the receive after ``maxReceiveCount`` receives moves the message,
      body, attributes, group and deduplication id intact, to the dead-letter queue.
    * ``WaitTimeSeconds``: each look at the queue holds ``SQS_LOCK``; between looks the
      receive waits without it, woken by a send or a delete (which may unlock a group:
      moto woke waiting receives on sends only), or after ``RECEIVE_WAIT_STEP``.
    """
    import time

    from moto.sqs.models import Queue, SQSBackend

    receive = SQSBackend.receive_message
    if getattr(receive, "_like_sqs", False):
        return
    add_message = Queue.add_message
    delete_message = Queue.delete_message

    def queue_delete_message(queue: Any, receipt_handle: str) -> None:
        delete_message(queue, receipt_handle)
        with queue._messages_lock:
            queue._messages_lock.notify_all()

    def queue_add_message(queue: Any, message: Any) -> None:
        if queue.fifo_queue:
            _fifo_add_message(queue, message)
        else:
            add_message(queue, message)

    def receive_message(
        backend: Any,
        queue_name: str,
        count: int,
        wait_seconds_timeout: int,
        visibility_timeout: int,
        message_attribute_names: list[str] | None = None,
    ) -> list[Any]:
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        names = message_attribute_names or []
        while True:
            with SQS_LOCK:
                queue = backend.get_queue(queue_name)
                if queue.fifo_queue:
                    result = _fifo_receive(queue, count, visibility_timeout, names)
                else:
                    result = receive(backend, queue_name, count, 0, visibility_timeout, names)
            remaining = deadline - time.monotonic()
            if result or remaining <= 0:
                return list(result)
            with queue._messages_lock:
                queue._messages_lock.wait(timeout=min(remaining, RECEIVE_WAIT_STEP))

    functools.update_wrapper(queue_add_message, add_message)
    functools.update_wrapper(receive_message, receive)
    receive_message._like_sqs = True  # type: ignore[attr-defined]
    functools.update_wrapper(queue_delete_message, delete_message)
    Queue.add_message = queue_add_message  # type: ignore[method-assign,assignment]
    Queue.delete_message = queue_delete_message  # type: ignore[method-assign,assignment]
    SQSBackend.receive_message = receive_message  # type: ignore[method-assign,assignment]
