"""``handlers.fastpost``: the asyncio poster keeps ``delivery.fan_out``'s contract."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from bench.management_api import FakeManagementApi
from handlers import aws, delivery, fastpost
from handlers.delivery import FanoutReport, close_connection
from handlers.fastpost import FastManagementApi
from handlers.management import CONNECTION_ERROR, ManagementApi, frozen_credentials

from .test_delivery import Clock


def fast_api(server: FakeManagementApi | str, **options: Any) -> FastManagementApi:
    endpoint = server if isinstance(server, str) else server.endpoint
    return FastManagementApi(
        endpoint, region="us-east-1", credentials=frozen_credentials(aws.session()), **options
    )


def lean_api(server: FakeManagementApi) -> ManagementApi:
    return ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )


def send(
    server: FakeManagementApi,
    ids: list[str],
    clock: Clock,
    api: FastManagementApi | None = None,
    **overrides: Any,
) -> tuple[FanoutReport, list[str]]:
    stale: list[str] = []
    options: dict[str, Any] = {
        "concurrency": 8,
        "max_attempts": 4,
        "deadline": 1_000.0,
        "on_stale": stale.append,
        "sleep": clock.sleep,
        "clock": clock,
    }
    options.update(overrides)
    report = fastpost.fan_out(api or fast_api(server), [(i, b'{"n":1}') for i in ids], **options)
    return report, stale


def test_every_connection_receives_the_message(management_api: FakeManagementApi) -> None:
    ids = [f"c{i}=" for i in range(200)]
    management_api.connect(*ids)
    report, stale = send(management_api, ids, Clock(), concurrency=16)
    assert report.delivered == 200 and not report.failed and not stale
    assert all(management_api.messages(i) == [{"n": 1}] for i in ids)
    assert management_api.state.unsigned == 0


@pytest.mark.parametrize("concurrency", [1, 8])
def test_each_connection_receives_its_own_payload_byte_for_byte(
    management_api: FakeManagementApi, concurrency: int
) -> None:
    ids = [f"c{i}+/=" for i in range(40)]
    management_api.connect(*ids)
    payloads = {i: f'{{"for":"{i}","text":"Zoë ✓ 日本 {i}"}}'.encode() for i in ids}
    deliveries = ((i, payloads[i]) for i in ids)  # lazy: consumed as it goes
    clock = Clock()
    report = fastpost.fan_out(
        fast_api(management_api),
        deliveries,
        concurrency=concurrency,
        max_attempts=2,
        deadline=1_000.0,
        on_stale=lambda _: True,
        sleep=clock.sleep,
        clock=clock,
    )
    assert report.delivered == 40 and not report.failed
    with management_api.state.lock:
        assert all(management_api.state.received[i] == [payloads[i]] for i in ids)


def test_gone_connections_go_to_on_stale_off_the_loop(management_api: FakeManagementApi) -> None:
    management_api.connect("alive")
    threads: list[str] = []
    kept = {"young-ghost"}

    def on_stale(connection_id: str) -> bool:
        threads.append(threading.current_thread().name)
        return connection_id not in kept

    report, _ = send(
        management_api, ["alive", "old-ghost", "young-ghost"], Clock(), on_stale=on_stale
    )
    assert sorted(report.stale) == ["old-ghost", "young-ghost"]
    assert report.stale_removed == 1 and report.delivered == 1 and not report.failed
    assert threads and all(name.startswith("fastpost-blocking") for name in threads)


def test_throttling_and_server_errors_are_retried_with_backoff(
    management_api: FakeManagementApi,
) -> None:
    management_api.connect("c1")
    management_api.script("c1", 429, 500, 503)
    clock = Clock()
    report, _ = send(management_api, ["c1"], clock)
    assert report.delivered == 1 and report.retried == 3 and report.failed == {}
    assert len(clock.sleeps) == 3 and all(0 <= s <= 0.2 for s in clock.sleeps)
    assert management_api.messages("c1") == [{"n": 1}]


def test_real_sleeps_are_asyncio_sleeps(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.script("c1", 429, 503)
    report = fastpost.fan_out(
        fast_api(management_api),
        [("c1", b"{}")],
        concurrency=4,
        max_attempts=3,
        deadline=time.monotonic() + 30,
        on_stale=lambda _: True,
    )
    assert (report.delivered, report.retried) == (1, 2)


def test_retries_are_bounded_then_the_connection_fails(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.script("c1", *[500] * 10)
    report, _ = send(management_api, ["c1"], Clock(), max_attempts=3)
    assert report.failed == {"c1": "InternalServerErrorException"}
    assert management_api.state.requests == 3 and report.delivered == 0


def test_non_retryable_error_fails_at_once(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.script("c1", 403)
    report, _ = send(management_api, ["c1"], Clock())
    assert report.failed == {"c1": "ForbiddenException"} and report.retried == 0
    assert management_api.state.requests == 1


def test_no_retry_sleeps_past_the_deadline(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.script("c1", 429, 429, 429)
    report, _ = send(management_api, ["c1"], Clock(), deadline=1e-9)
    assert report.failed == {"c1": "LimitExceededException (deadline)"}
    assert management_api.state.requests == 1


def test_nothing_is_sent_once_the_deadline_has_passed(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    report, _ = send(management_api, ["c1"], Clock(), deadline=0.0)
    assert report.failed == {"c1": "DeadlineExceeded"}
    assert management_api.state.requests == 0


def test_the_deadline_caps_a_slow_post(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.state.latency = 0.5
    started = time.monotonic()
    report = fastpost.fan_out(
        fast_api(management_api),
        [("c1", b"{}")],
        concurrency=2,
        max_attempts=3,
        deadline=time.monotonic() + 0.1,
        on_stale=lambda _: True,
    )
    assert time.monotonic() - started < 0.45
    assert report.failed["c1"] in ("ConnectionError (deadline)", "DeadlineExceeded")


def test_unexpected_errors_propagate_to_the_caller(management_api: FakeManagementApi) -> None:
    management_api.connect("a")

    def on_stale(connection_id: str) -> bool:
        raise RuntimeError(f"boom {connection_id}")

    with pytest.raises(RuntimeError, match="boom ghost1"):
        send(management_api, ["a", "ghost1", "ghost2"], Clock(), on_stale=on_stale)


def test_at_most_concurrency_requests_are_in_flight(management_api: FakeManagementApi) -> None:
    ids = [f"c{i}" for i in range(60)]
    management_api.connect(*ids)
    management_api.state.latency = 0.01
    api = fast_api(management_api)
    report, _ = send(management_api, ids, Clock(), api=api, concurrency=5)
    assert report.delivered == 60
    assert api.opened == 5  # five sockets, each kept alive for the next post
    report, _ = send(management_api, ids, Clock(), api=api, concurrency=5)
    assert report.delivered == 60 and api.opened == 5  # reused across calls


def test_kept_alive_connections_the_server_closed_are_replaced(
    management_api: FakeManagementApi,
) -> None:
    management_api.connect("c1")
    api = fast_api(management_api)
    assert api.post_to_connection("c1", b"1").ok
    management_api.drop_connections()  # the server closes the idle kept-alive connection
    time.sleep(0.2)
    assert api.post_to_connection("c1", b"2").ok
    assert len(management_api.messages("c1")) == 2 and api.opened == 2


def test_get_delete_and_close_connection(management_api: FakeManagementApi) -> None:
    management_api.connect("c1", "c2")
    api = fast_api(management_api)
    assert api.get_connection("c1").ok
    assert api.delete_connection("c1").status == 204
    assert api.get_connection("c1").gone
    assert close_connection(api, "c2", "a test") is True  # a delivery.Poster-like client
    assert api.get_connection("c2").gone
    api.close()
    assert api.post_to_connection("nobody", b"{}").error_code == "GoneException"


def test_timeout_caps_a_slow_request_and_is_not_resent(management_api: FakeManagementApi) -> None:
    management_api.connect("c1")
    management_api.state.latency = 0.5
    started = time.monotonic()
    response = fast_api(management_api).post_to_connection("c1", b"{}", timeout=0.1)
    assert (response.status, response.error_code) == (0, CONNECTION_ERROR)
    assert time.monotonic() - started < 0.45
    time.sleep(0.2)
    assert management_api.state.arrived == 1


def test_unreachable_endpoint_is_a_retryable_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = FastManagementApi(f"http://127.0.0.1:{port}/dev", region="us-east-1", credentials=None)
    response = api.post_to_connection("c1", b"{}")
    assert (response.status, response.error_code, response.retryable) == (0, CONNECTION_ERROR, True)


@pytest.mark.parametrize("endpoint", ["ftp://host/dev", "not a url", "https://"])
def test_bad_endpoint_is_rejected(endpoint: str) -> None:
    with pytest.raises(ValueError, match="must be an http"):
        FastManagementApi(endpoint, region="us-east-1", credentials=None)


def test_blocking_calls_from_the_loop_itself_are_refused(management_api: FakeManagementApi) -> None:
    api = fast_api(management_api)

    async def inside() -> str:
        try:
            api.post_to_connection("c1", b"{}")
        except RuntimeError as error:
            return str(error)
        return "no error"

    message = asyncio.run_coroutine_threadsafe(inside(), api.loop).result(timeout=5)
    assert "wait forever" in message


def test_the_request_is_the_one_the_lean_client_sends_and_its_signature_checks_out(
    management_api: FakeManagementApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection_id = "L0SM9cOFvHcCIhw="
    management_api.connect(connection_id)
    body = '{"text":"Zoë ✓"}'.encode()
    lean_api(management_api).post_to_connection(connection_id, body)
    lean_target, lean_headers = management_api.state.last_target, management_api.state.last_headers
    fast_api(management_api).post_to_connection(connection_id, body)
    target, headers = management_api.state.last_target, management_api.state.last_headers
    assert target == lean_target == "/dev/@connections/L0SM9cOFvHcCIhw%3D"
    assert set(headers) >= set(lean_headers) - {"accept-encoding"}
    assert headers["content-length"] == str(len(body))
    # what a SigV4-checking server does: sign the request it received with the same
    # credentials at the time it carries, and compare
    stamp = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *_, **__: stamp)
    check = AWSRequest(
        method="POST",
        url=f"http://{headers['host']}{target}",
        data=body,
        headers={"Host": headers["host"], "Content-Type": headers["content-type"]},
    )
    credentials = frozen_credentials(aws.session())()
    SigV4Auth(credentials, "execute-api", "us-east-1").add_auth(check)
    assert headers["authorization"] == check.headers["Authorization"]
    assert headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
    assert headers["x-amz-security-token"] == "testing"


# The same scenario through delivery.fan_out (the lean client) and fastpost.fan_out.

Runner = Callable[..., FanoutReport]


def run_lean(server: FakeManagementApi, deliveries: list[tuple[str, bytes]], **kw: Any) -> Any:
    return delivery.fan_out(lean_api(server), deliveries, **kw)


def run_fast(server: FakeManagementApi, deliveries: list[tuple[str, bytes]], **kw: Any) -> Any:
    return fastpost.fan_out(fast_api(server), deliveries, **kw)


def scenario(server: FakeManagementApi, run: Runner, deadline: float) -> tuple[Any, ...]:
    ids = [f"c{i}=" for i in range(12)]
    server.connect(*ids)
    server.script("c3=", 429, 500)  # then delivered
    server.script("c5=", 403)  # failed at once
    server.script("c7=", *[503] * 5)  # retries exhausted
    server.script("c9=", 502)  # then delivered
    clock = Clock()
    removed: list[str] = []
    report = run(
        server,
        [(i, b'{"n":1}') for i in [*ids, "ghost-a", "ghost-b"]],
        concurrency=4,
        max_attempts=3,
        deadline=deadline,
        on_stale=lambda c: removed.append(c) or c == "ghost-a",
        sleep=clock.sleep,
        clock=clock,
    )
    return (
        report.delivered,
        sorted(report.stale),
        report.stale_removed,
        report.retried,
        report.failed,
        sorted(removed),
        server.state.requests,
    )


@pytest.fixture
def fresh(management_api: FakeManagementApi) -> Iterator[Callable[[], FakeManagementApi]]:
    def reset() -> FakeManagementApi:
        state = management_api.state
        with state.lock:
            state.known.clear()
            state.received.clear()
            state.scripted.clear()
            state.requests = state.posts = state.unsigned = state.arrived = 0
        return management_api

    yield reset


@pytest.mark.parametrize("deadline", [1_000.0, 1e-9, 0.0])
def test_the_report_matches_delivery_fan_out(
    fresh: Callable[[], FakeManagementApi], deadline: float
) -> None:
    lean = scenario(fresh(), run_lean, deadline)
    fast = scenario(fresh(), run_fast, deadline)
    assert fast == lean
    if deadline == 1_000.0:
        assert fast[:4] == (10, ["ghost-a", "ghost-b"], 1, 5)
        assert fast[4] == {"c5=": "ForbiddenException", "c7=": "ServiceUnavailableException"}


# Responses the fake server does not give: chunked, Connection: close, read-to-close, 100.


class RawServer:
    """A tiny HTTP/1.1 server answering each request with the next scripted bytes.

    An answer of ``None`` closes the connection after reading the request, unanswered;
    ``close`` closes it after answering. 127.0.0.1 only; daemon threads; 5 s socket waits.
    """

    def __init__(
        self, answers: list[tuple[bytes | None, bool]], tls: ssl.SSLContext | None = None
    ) -> None:
        self.answers = list(answers)
        self.tls = tls
        self.bodies: list[bytes] = []
        self.connections = 0
        self.open: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/dev"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            if self.tls is not None:
                conn.settimeout(5)
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except OSError:
                    conn.close()
                    continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self.lock:
            self.open.append(conn)
        with conn, contextlib.suppress(OSError):  # timed out, or closed by stop()
            conn.settimeout(5)
            self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        buffer = b""
        while True:
            while b"\r\n\r\n" not in buffer:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(buffer) < length:
                buffer += conn.recv(65536)
            with self.lock:
                self.bodies.append(buffer[:length])
                answer, close = self.answers.pop(0)
            buffer = buffer[length:]
            if answer is None:
                return
            conn.sendall(answer)
            if close:
                return

    def stop(self) -> None:
        self.listener.close()
        with self.lock:
            for conn in self.open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(
        answers: list[tuple[bytes | None, bool]], tls: ssl.SSLContext | None = None
    ) -> RawServer:
        servers.append(RawServer(answers, tls))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_a_chunked_response_is_read_whole_and_the_connection_reused(raw: Any) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        b'5;ext=1\r\n{"a":\r\nA\r\n"chunked!"\r\n1\r\n}\r\n0\r\nX-Trailer: yes\r\n\r\n'
    )
    server = raw([(chunked, False), (OK, False)])
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    first = api.get_connection("c1")
    assert (first.status, first.body) == (200, b'{"a":"chunked!"}')
    assert api.post_to_connection("c1", b"{}").ok
    assert server.connections == 1 == api.opened


def test_a_chunked_error_maps_to_its_code(raw: Any) -> None:
    error = (
        b"HTTP/1.1 429 Too Many Requests\r\nx-amzn-ErrorType: LimitExceededException:x\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    )
    server = raw([(error, False)])
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    response = api.post_to_connection("c1", b"{}")
    assert (response.status, response.error_code, response.retryable) == (
        429,
        "LimitExceededException",
        True,
    )


def test_connection_close_is_honoured(raw: Any) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
    server = raw([(closing, True), (OK, False)])
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    assert api.post_to_connection("c1", b"1").body == b"{}"
    assert api.post_to_connection("c1", b"2").ok
    assert server.connections == 2 and server.bodies == [b"1", b"2"]


def test_a_body_without_length_is_read_until_the_close(raw: Any) -> None:
    server = raw([(b'HTTP/1.1 410 Gone\r\n\r\n{"__type":"GoneException"}', True), (OK, False)])
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    response = api.post_to_connection("c1", b"{}")
    assert (response.status, response.error_code, response.gone) == (410, "GoneException", True)
    assert api.post_to_connection("c1", b"{}").ok


def test_interim_100_continue_is_skipped(raw: Any) -> None:
    server = raw([(b"HTTP/1.1 100 Continue\r\n\r\n" + OK, False)])
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    assert api.post_to_connection("c1", b"{}").status == 200


def test_a_reused_connection_closed_before_the_answer_gets_one_more_try(raw: Any) -> None:
    server = raw([(OK, False), (None, False), (OK, False)])
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    assert api.post_to_connection("c1", b"1").ok
    assert api.post_to_connection("c1", b"2").ok  # closed unanswered, then sent again
    assert server.connections == 2 and server.bodies == [b"1", b"2", b"2"]


def test_a_fresh_connection_closed_before_the_answer_is_not_resent(raw: Any) -> None:
    server = raw([(None, False), (OK, False)])
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    response = api.post_to_connection("c1", b"1")
    assert (response.status, response.error_code) == (0, CONNECTION_ERROR)
    assert server.bodies == [b"1"]


def test_a_garbled_answer_is_a_connection_error(raw: Any) -> None:
    server = raw([(b"SMTP ready\r\n\r\n", False), (OK, False)])
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    assert api.post_to_connection("c1", b"1").error_code == CONNECTION_ERROR
    assert api.post_to_connection("c1", b"2").ok  # on a new connection
    assert server.connections == 2


def self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for 127.0.0.1, and a client one trusting it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_https_posts_over_one_kept_alive_tls_connection(raw: Any, tmp_path: Path) -> None:
    server_tls, client_tls = self_signed(tmp_path)
    server = raw([(OK, False), (OK, False), (OK, False)], tls=server_tls)
    api = FastManagementApi(
        server.endpoint,
        region="us-east-1",
        credentials=frozen_credentials(aws.session()),
        ssl_context=client_tls,
    )
    report = fastpost.fan_out(
        api,
        [("a=", b"1"), ("b=", '"é"'.encode())],
        concurrency=1,
        max_attempts=1,
        deadline=time.monotonic() + 10,
        on_stale=lambda _: True,
    )
    assert report.delivered == 2 and not report.failed
    assert api.get_connection("a=").ok
    assert server.bodies == [b"1", '"é"'.encode(), b""] and server.connections == 1


def test_an_untrusted_certificate_is_a_connection_error(raw: Any, tmp_path: Path) -> None:
    server_tls, _ = self_signed(tmp_path)
    server = raw([(OK, False)], tls=server_tls)
    api = FastManagementApi(server.endpoint, region="us-east-1", credentials=None)
    response = api.post_to_connection("c1", b"{}")
    assert (response.status, response.error_code) == (0, CONNECTION_ERROR)
