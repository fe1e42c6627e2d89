"""An identity provider for the JWT tests: keys and tokens made by real libraries
(``cryptography`` and ``PyJWT``, test dependencies only), and a JWKS server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from handlers.jwks import Jwk
from handlers.signatures import key_from_jwk

ISSUER = "https://issuer.example.test/"
AUDIENCE = "realtime-app"


@cache
def rsa_private(name: str = "rsa-1", bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_private(name: str = "ec-1") -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(kid: str, alg: str, **extra: Any) -> dict[str, Any]:
    """The public JWK of the test key named ``kid`` (RS*: RSA, ES256: P-256)."""
    if alg.startswith("RS"):
        text = RSAAlgorithm.to_jwk(rsa_private(kid).public_key())
    else:
        text = ECAlgorithm.to_jwk(ec_private(kid).public_key())
    document: dict[str, Any] = json.loads(text)
    document.update(kid=kid, alg=alg, use="sig", **extra)
    return document


def private_key(kid: str, alg: str) -> Any:
    return rsa_private(kid) if alg.startswith("RS") else ec_private(kid)


def claims(**changes: Any) -> dict[str, Any]:
    """A valid payload for ``ISSUER``/``AUDIENCE`` issued now; ``None`` values are removed."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-42",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    payload.update(changes)
    return {key: value for key, value in payload.items() if value is not None}


def sign(
    payload: dict[str, Any],
    kid: str | None = "rsa-1",
    alg: str = "RS256",
    headers: dict[str, Any] | None = None,
    key_name: str | None = None,
) -> str:
    """A token signed by PyJWT with the test key ``key_name`` (default: ``kid``)."""
    extra = dict(headers or {})
    if kid is not None:
        extra["kid"] = kid
    key = private_key(key_name or kid or "rsa-1", alg)
    return jwt.encode(payload, key, algorithm=alg, headers=extra)


@dataclass
class StaticKeys:
    """A key source holding fixed JWKs (what ``KeySet.candidates`` answers)."""

    jwks: list[dict[str, Any]]
    asked: list[str | None] = field(default_factory=list)

    def candidates(self, kid: str | None) -> list[Jwk]:
        self.asked.append(kid)
        keys = [Jwk(j.get("kid"), key_from_jwk(j), j.get("alg")) for j in self.jwks]
        if kid is None:
            return keys if len(keys) == 1 else []
        return [k for k in keys if k.kid == kid]


@dataclass
class Served:
    """What the local issuer answers; change it between requests."""

    jwks: dict[str, Any]
    issuer: str = ""
    jwks_uri: str = ""
    jwks_path: str = "/jwks.json"
    cache_control: str | None = None
    status: int = 200
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for requested in self.requests if requested == path)


class LocalIssuer:
    """An OpenID provider's discovery document and JWKS over HTTP on 127.0.0.1."""

    def __init__(self, jwks: list[dict[str, Any]]) -> None:
        served = Served({"keys": jwks})
        self.served = served

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with served.lock:
                    served.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    body: Any = {"issuer": served.issuer, "jwks_uri": served.jwks_uri}
                elif self.path == served.jwks_path:
                    body = served.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(served.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if served.cache_control:
                    self.send_header("Cache-Control", served.cache_control)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        served.issuer = self.url
        served.jwks_uri = f"{self.url}{served.jwks_path}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def jwks_url(self) -> str:
        return f"{self.url}{self.served.jwks_path}"

    def __enter__(self) -> LocalIssuer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def running_issuer(jwks: list[dict[str, Any]]) -> Iterator[LocalIssuer]:
    with LocalIssuer(jwks) as issuer:
        yield issuer


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
