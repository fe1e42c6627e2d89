from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from bench.management_api import FakeManagementApi
from handlers import aws
from tests.helpers import SECRET, FakeContext, create_connections_table

# The broadcaster's sources, set before any test module imports handlers.broadcaster: the
# sample stream events come from the table "events-862417b", whose label is "events".
SOURCE_LABEL, SOURCE_TABLE = "events", "events-862417b"
os.environ["SOURCES"] = json.dumps(
    {
        SOURCE_LABEL: {
            "table": SOURCE_TABLE,
            "keys": [["PK", "S"], ["SK", "S"]],
            "oldImage": True,
            "access": [{"table": True}],
        }
    }
)
os.environ["SUBSCRIPTIONS_TABLE"] = "subscriptions-test"

TABLE = os.environ["CONNECTIONS_TABLE"]
SECRET_PARAMETER = os.environ["TOKEN_SECRET_PARAMETER"]


@pytest.fixture
def mocked_aws() -> Iterator[None]:
    """moto for every botocore client the handlers create; fresh clients per test."""
    aws.reset()
    with mock_aws():
        yield
    aws.reset()


@pytest.fixture
def dynamodb(mocked_aws: None) -> Any:
    return aws.client("dynamodb")


@pytest.fixture
def connections_table(dynamodb: Any) -> str:
    create_connections_table(dynamodb, TABLE)
    return TABLE


@pytest.fixture
def secret_parameter(mocked_aws: None) -> str:
    aws.client("ssm").put_parameter(
        Name=SECRET_PARAMETER, Value=SECRET, Type="SecureString", Overwrite=True
    )
    return SECRET_PARAMETER


@pytest.fixture(scope="session")
def _management_server() -> Iterator[FakeManagementApi]:
    server = FakeManagementApi(stage="dev").start()
    yield server
    server.stop()


@pytest.fixture
def management_api(_management_server: FakeManagementApi) -> FakeManagementApi:
    """A local server answering like the Management API, emptied for each test."""
    state = _management_server.state
    with state.lock:
        state.known.clear()
        state.received.clear()
        state.scripted.clear()
        state.latency = 0.0
        state.requests = state.posts = state.unsigned = state.arrived = 0
    return _management_server


@pytest.fixture
def lambda_context() -> FakeContext:
    return FakeContext()
