"""The authorizer in JWT mode (RS256, ES256) against HMAC mode: cold start and warm verification.

Cold start: a fresh interpreter (``bench.coldstart``'s child) imports
``handlers.authorizer`` with the variables the component declares for each
mode and serves one ``$connect`` request, timed from its first line to the
handler's return. HMAC mode reads its secret from SSM (a moto server on
127.0.0.1, as ``bench.coldstart``); JWT mode fetches the issuer's discovery
document and JWKS from an HTTP server on 127.0.0.1 (two requests, then
cached). The baseline is HMAC mode's cold start, measured in the same run.

Warm: one container (a child process per mode) answering
``--verifications`` requests with the keys (or the secret) already cached:
the CPU time per verification (CPU, not wall time, so other work on a shared
machine does not count), against HMAC mode's. Every answer must be Allow with the
user's identity; a forged token must be Denied.

Targets: a JWT cold start within ``--max-cold-ratio`` (default 1.5) times
HMAC mode's; a warm JWT verification below ``--max-warm-ms`` (default 5 ms:
a connection is verified once, when it opens, so this is a cost per
connection, not per message).

    python -m bench.jwt_auth [--runs 5] [--verifications 300]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.coldstart import ROOT, authorizer_event, fake_credentials, run_child

AUDIENCE = "bench-app"
SECRET_PARAMETER = "/bench/token-secret"  # noqa: S105 (a parameter name)
MODES = ("hmac", "jwt-rs256", "jwt-es256")


@contextmanager
def issuer_server(jwks: dict[str, Any]) -> Iterator[str]:
    """An OpenID provider on 127.0.0.1: discovery and JWKS; yields its issuer URL."""
    box: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body: Any = {"issuer": box["url"], "jwks_uri": box["url"] + "/jwks.json"}
            elif self.path == "/jwks.json":
                body = jwks
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    box["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield box["url"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def rsa_signer() -> tuple[dict[str, Any], Any]:
    """An RSA-2048 key (``cryptography``, a development dependency): its JWK and a signer."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from handlers.b64url import encode

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": "bench-rsa",
        "alg": "RS256",
        "use": "sig",
        "n": encode(numbers.n.to_bytes(256, "big")),
        "e": encode(numbers.e.to_bytes(3, "big")),
    }

    def sign(message: bytes) -> bytes:
        return private.sign(message, padding.PKCS1v15(), hashes.SHA256())

    return jwk, sign


def jwt_token(issuer: str, kid: str, alg: str, sign: Any, user: str) -> str:
    from handlers.b64url import encode

    now = int(time.time())
    header = {"alg": alg, "typ": "JWT", "kid": kid}
    payload = {"iss": issuer, "aud": AUDIENCE, "sub": user, "iat": now, "exp": now + 600}
    signing_input = ".".join(
        encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
    )
    return f"{signing_input}.{encode(sign(signing_input.encode()))}"


def allowed(answer: Any, user: str) -> bool:
    statement = (answer.get("policyDocument") or {}).get("Statement", [{}])[0]
    return bool(statement.get("Effect") == "Allow" and answer.get("principalId") == user)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts per mode (median)")
    parser.add_argument("--verifications", type=int, default=300, help="warm requests per mode")
    parser.add_argument("--max-cold-ratio", type=float, default=1.5)
    parser.add_argument("--max-warm-ms", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.verifications < 1:
        parser.error("--runs and --verifications must be >= 1")

    os.environ.update(fake_credentials())
    from emulator.issuer import LocalIssuer
    from emulator.services import LocalAws
    from handlers.tokens import mint_token

    secret = secrets.token_urlsafe(32)
    rsa_jwk, rsa_sign = rsa_signer()
    aws = LocalAws("127.0.0.1").start()
    failures: list[str] = []
    cold: dict[str, list[float]] = {mode: [] for mode in MODES}
    warm: dict[str, float] = {}
    try:
        aws.client("ssm").put_parameter(
            Name=SECRET_PARAMETER, Value=secret, Type="SecureString", Overwrite=True
        )
        jwks: dict[str, Any] = {"keys": []}
        with issuer_server(jwks) as url:
            local = LocalIssuer.generate(url, AUDIENCE)
            jwks["keys"] = [rsa_jwk, local.public_jwk()]
            base = {"PYTHONPATH": str(ROOT), **fake_credentials(), "IDENTITY_CLAIMS": ""}
            envs = {
                "hmac": {
                    **base,
                    "TOKEN_SECRET_PARAMETER": SECRET_PARAMETER,
                    "AWS_ENDPOINT_URL_SSM": aws.endpoint,
                },
                "jwt": {
                    **base,
                    "AUTH_MODE": "jwt",
                    "JWT_ISSUER": url,
                    "JWT_AUDIENCES": json.dumps([AUDIENCE]),
                },
            }

            def token(mode: str, user: str) -> str:
                if mode == "hmac":
                    return mint_token(user, secret, 600)
                if mode == "jwt-rs256":
                    return jwt_token(url, "bench-rsa", "RS256", rsa_sign, user)
                return local.mint(user, 600)

            for run in range(args.runs):
                for mode in MODES:
                    user = f"user-{mode}-{run}"
                    event = authorizer_event(token(mode, user), f"conn-{mode}-{run}")
                    env = envs["hmac" if mode == "hmac" else "jwt"]
                    try:
                        sample, result, _ = run_child("authorizer", event, env)
                    except (RuntimeError, subprocess.TimeoutExpired) as failed:
                        failures.append(f"{mode} cold start: {failed}")
                        continue
                    cold[mode].append(sample.total_ms)
                    if not allowed(result, user):
                        failures.append(f"{mode} cold start: not allowed: {result}")

            warm.update(warm_runs(args.verifications, envs, token, failures))
    finally:
        aws.stop()

    print(
        f"authorizer, JWT mode against HMAC mode: cold starts (fresh interpreter, median of"
        f" {args.runs}) and warm verifications (mean of {args.verifications}, keys cached);"
        " AWS = moto on 127.0.0.1 (HMAC: the secret from SSM), issuer = HTTP on 127.0.0.1"
        " (JWT: discovery + JWKS)"
    )
    print()
    header = f"{'mode':<11}{'cold ms':>9}{'ratio':>8}{'warm CPU µs':>12}{'ratio':>9}  cold runs"
    print(header)
    print("-" * len(header))
    base_cold = statistics.median(cold["hmac"]) if cold["hmac"] else None
    base_warm = warm.get("hmac")
    for mode in MODES:
        if not cold[mode]:
            print(f"{mode:<11}{'no run completed':>17}")
            continue
        median = statistics.median(cold[mode])
        ratio = median / base_cold if base_cold else float("nan")
        micro = warm.get(mode, float("nan")) * 1e6
        warm_ratio = warm[mode] / base_warm if base_warm and mode in warm else float("nan")
        runs = " ".join(f"{value:.0f}" for value in cold[mode])
        print(f"{mode:<11}{median:>9.0f}{ratio:>7.2f}x{micro:>12.0f}{warm_ratio:>8.1f}x  {runs}")
        if mode != "hmac" and ratio > args.max_cold_ratio:
            failures.append(
                f"{mode}: cold start {median:.0f} ms is {ratio:.2f}x HMAC mode's"
                f" > target {args.max_cold_ratio:g}x"
            )
        if mode != "hmac" and mode in warm and warm[mode] * 1000 > args.max_warm_ms:
            failures.append(
                f"{mode}: warm verification {warm[mode] * 1000:.2f} ms > {args.max_warm_ms:g} ms"
            )
    print()
    print(
        "baseline: HMAC mode in the same run; cold: child's first line -> handler returned"
        " (imports, SSM read or discovery + JWKS fetch, verification); warm: CPU time of one"
        " more request to the same handler in a warm container"
    )
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        return 1
    worst = max(statistics.median(cold[m]) for m in MODES[1:]) / (base_cold or 1)
    print(
        f"OK: JWT cold start within {args.max_cold_ratio:g}x HMAC mode's (worst {worst:.2f}x),"
        f" warm JWT verification under {args.max_warm_ms:g} ms"
        f" (RS256 {warm['jwt-rs256'] * 1000:.2f} ms, ES256 {warm['jwt-es256'] * 1000:.2f} ms)"
    )
    return 0


def warm_runs(
    count: int, envs: dict[str, dict[str, str]], token: Any, failures: list[str]
) -> dict[str, float]:
    """Seconds per request of each mode in one warm container: a child process per mode
    (the handler module reads its environment once), timing ``count`` requests after one
    warm-up."""
    script = """
import json, sys, time
import handlers.authorizer as authorizer
events, forged = json.loads(sys.stdin.read())
authorizer.handler(events[0], None)
started = time.process_time()
answers = [authorizer.handler(event, None) for event in events[1:]]
elapsed = (time.process_time() - started) / (len(events) - 1)
denied = authorizer.handler(forged, None)
print(json.dumps({"seconds": elapsed, "answers": answers, "denied": denied}))
"""
    found: dict[str, float] = {}
    for mode in MODES:
        users = [f"warm-{mode}-{index}" for index in range(count + 1)]
        events = [authorizer_event(token(mode, user), f"w-{index}") for index, user in
                  enumerate(users)]  # fmt: skip
        good = token(mode, "forger")
        forged = authorizer_event(good[:-6] + ("AAAAAA" if good[-6:] != "AAAAAA" else "BBBBBB"),
                                  "w-forged")  # fmt: skip
        env = envs["hmac" if mode == "hmac" else "jwt"]
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps([events, forged]),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            failures.append(f"{mode} warm: exited {done.returncode}: {done.stderr[-1000:]}")
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        wrong = [u for u, a in zip(users[1:], result["answers"], strict=True) if not allowed(a, u)]
        if wrong:
            failures.append(f"{mode} warm: {len(wrong)} answers were not Allow for their user")
        if result["denied"]["policyDocument"]["Statement"][0]["Effect"] != "Deny":
            failures.append(f"{mode} warm: a forged token was not denied")
        found[mode] = float(result["seconds"])
    return found


if __name__ == "__main__":
    sys.exit(main())
