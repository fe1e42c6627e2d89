from __future__ import annotations

import json
import socket
import time
from typing import Any

import boto3
import pytest

from bench.management_api import FakeManagementApi
from handlers import aws
from handlers.management import (
    CONNECTION_ERROR,
    ManagementApi,
    endpoint_from_request,
    error_code,
    frozen_credentials,
)


def lean_api(server: FakeManagementApi) -> ManagementApi:
    return ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )


def test_post_delivers_the_exact_bytes_signed_with_sigv4(management_api: FakeManagementApi) -> None:
    management_api.connect("abc=")
    response = lean_api(management_api).post_to_connection("abc=", b'{"hello":"world"}')
    assert response.ok
    assert management_api.messages("abc=") == [{"hello": "world"}]
    authorization = management_api.state.last_headers["authorization"]
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert "/us-east-1/execute-api/aws4_request" in authorization
    assert "x-amz-security-token" in management_api.state.last_headers


def test_request_path_is_the_one_boto3_sends(management_api: FakeManagementApi) -> None:
    connection_id = "L0SM9cOFvHcCIhw="
    management_api.connect(connection_id)
    boto3.client(
        "apigatewaymanagementapi", endpoint_url=management_api.endpoint, region_name="us-east-1"
    ).post_to_connection(ConnectionId=connection_id, Data=b"{}")
    boto3_path = management_api.state.last_target
    lean_api(management_api).post_to_connection(connection_id, b"{}")
    assert management_api.state.last_target == boto3_path == "/dev/@connections/L0SM9cOFvHcCIhw%3D"


def test_unknown_connection_maps_to_gone_exception(management_api: FakeManagementApi) -> None:
    response = lean_api(management_api).post_to_connection("nobody", b"{}")
    assert (response.status, response.error_code, response.gone) == (410, "GoneException", True)
    assert not response.retryable


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (429, "LimitExceededException", True),
        (500, "InternalServerErrorException", True),
        (503, "ServiceUnavailableException", True),
        (403, "ForbiddenException", False),
        (413, "PayloadTooLargeException", False),
    ],
)
def test_error_responses_map_to_boto3_codes(
    management_api: FakeManagementApi, status: int, code: str, retryable: bool
) -> None:
    management_api.connect("c1")
    management_api.script("c1", status)
    response = lean_api(management_api).post_to_connection("c1", b"{}")
    assert (response.status, response.error_code, response.retryable) == (status, code, retryable)


def test_error_code_without_header_falls_back_to_body_then_status() -> None:
    assert error_code(400, {}, json.dumps({"__type": "ns#BadRequestException"}).encode()) == (
        "BadRequestException"
    )
    assert error_code(410, {}, b"") == "GoneException"
    assert error_code(429, {}, b"not json") == "LimitExceededException"
    assert error_code(502, {}, b"") == "InternalServerError"
    assert error_code(418, {}, b"") == "HTTP418"
    assert error_code(200, {}, b"") is None


def test_get_and_delete_connection(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    api = lean_api(management_api)
    info = api.get_connection("c1")
    assert info.ok and "connectedAt" in json.loads(info.body)
    assert api.delete_connection("c1").status == 204
    assert api.get_connection("c1").gone


def test_unreachable_endpoint_is_a_retryable_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = ManagementApi(f"http://127.0.0.1:{port}/dev", region="us-east-1", credentials=None)
    response = api.post_to_connection("c1", b"{}")
    assert (response.status, response.error_code, response.retryable) == (
        0,
        CONNECTION_ERROR,
        True,
    )


def test_connection_is_reopened_after_the_server_drops_it(
    management_api: FakeManagementApi,
) -> None:
    management_api.connect("c1")
    api = lean_api(management_api)
    assert api.post_to_connection("c1", b"1").ok
    management_api.drop_connections()  # the server closes the idle kept-alive connection
    time.sleep(0.2)
    assert api.post_to_connection("c1", b"2").ok
    assert len(management_api.messages("c1")) == 2


@pytest.mark.parametrize("endpoint", ["ftp://host/dev", "not a url", "https://"])
def test_bad_endpoint_is_rejected(endpoint: str) -> None:
    with pytest.raises(ValueError, match="must be an http"):
        ManagementApi(endpoint, region="us-east-1", credentials=None)


def test_endpoint_from_request_uses_api_id_region_and_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    context: dict[str, Any] = {"domainName": "realtime.example.com", "apiId": "x", "stage": "prod"}
    assert endpoint_from_request(context) == "https://x.execute-api.eu-west-1.amazonaws.com/prod"
    monkeypatch.setenv("AWS_ENDPOINT_URL_APIGATEWAYMANAGEMENTAPI", "http://127.0.0.1:4510/prod")
    assert endpoint_from_request(context) == "http://127.0.0.1:4510/prod"


def test_endpoint_from_request_without_api_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="apiId"):
        endpoint_from_request(
            {"domainName": "x.execute-api.us-east-1.amazonaws.com", "stage": "dev"}
        )


def test_endpoint_from_request_without_a_region_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ValueError, match="AWS_REGION"):
        endpoint_from_request({"apiId": "x", "stage": "dev"})


def test_timeout_caps_a_slow_request_and_is_not_resent(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.state.latency = 0.5
    api = lean_api(management_api)
    started = time.monotonic()
    response = api.post_to_connection("c1", b"{}", timeout=0.1)
    elapsed = time.monotonic() - started
    assert (response.status, response.error_code) == (0, CONNECTION_ERROR)
    assert elapsed < 0.45  # gave up at the timeout, did not wait for the server nor retry
    time.sleep(0.2)
    assert management_api.state.arrived == 1
