"""Local AWS services for the emulator: an embedded moto server on 127.0.0.1.

One server serves DynamoDB (with Streams), SSM and SQS. ``provision`` creates
what the program declared: tables with their keys, indexes and streams, the
SSM parameters, the queues.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import deque
from typing import Any

from emulator.model import Model, TableSpec
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


class LocalAws:
    """The embedded moto server and clients for it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
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
        return {
            "name": name,
            "arn": table["TableArn"],
            "streamEnabled": bool(stream.get("StreamEnabled")),
            "streamViewType": stream.get("StreamViewType"),
            "streamArn": table.get("LatestStreamArn"),
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
                "Projection": {"ProjectionType": index["projection"]},
            }
            for index in table.indexes
        ]
    if table.stream_view_type:
        request["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": table.stream_view_type,
        }
    return request


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
    for name in model.queues.values():
        sqs.create_queue(QueueName=name)
