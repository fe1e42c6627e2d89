"""The emulator as an OpenID Connect issuer, for JWT mode on a laptop.

With ``authMode=jwt`` and no ``jwtIssuer``, the emulator stands in for the
identity provider: a P-256 key made for this run signs ES256 tokens (the
``token`` command, the banner's URL), and the gateway serves the discovery
document and the key set at its own address::

    http://127.0.0.1:8080/.well-known/openid-configuration
    http://127.0.0.1:8080/.well-known/jwks.json

so the authorizer finds the keys exactly as it finds Cognito's or Auth0's.
Signing is pure Python (``handlers.signatures.multiply_base``), so the
emulator needs no crypto library. Never a production issuer: the key lives
in memory and in the emulator's state file (mode 0600), for the CLI.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from handlers.b64url import decode, encode
from handlers.signatures import N, multiply_base

DEFAULT_AUDIENCE = "realtime-channel-local"
ALGORITHM = "ES256"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"


def _int_b64(value: int) -> str:
    return encode(value.to_bytes(32, "big"))


@dataclass(frozen=True)
class LocalIssuer:
    url: str
    """The issuer (``iss``): the emulator's base URL, no trailing slash."""
    audience: str
    private: int
    """The P-256 private scalar d."""
    kid: str

    @classmethod
    def generate(cls, url: str, audience: str = DEFAULT_AUDIENCE) -> LocalIssuer:
        private = secrets.randbelow(N - 1) + 1
        return cls(url, audience, private, f"local-{secrets.token_hex(4)}")

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LocalIssuer:
        """From what ``state()`` wrote (the CLI reads it from the state file)."""
        jwk = state["privateJwk"]
        return cls(state["url"], state["audience"], int.from_bytes(decode(jwk["d"]), "big"),
                   jwk["kid"])  # fmt: skip

    def public_jwk(self) -> dict[str, str]:
        x, y = multiply_base(self.private)
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _int_b64(x),
            "y": _int_b64(y),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    def state(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "audience": self.audience,
            "privateJwk": {**self.public_jwk(), "d": _int_b64(self.private)},
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def openid_configuration(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": self.url + JWKS_PATH,
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        }

    def sign(self, message: bytes) -> bytes:
        """ECDSA P-256 SHA-256, ``r || s`` (random k, retried in the negligible bad cases)."""
        e = int.from_bytes(hashlib.sha256(message).digest(), "big")
        while True:
            k = secrets.randbelow(N - 1) + 1
            r = multiply_base(k)[0] % N
            s = pow(k, -1, N) * (e + r * self.private) % N
            if r and s:
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def mint(
        self,
        user_id: str,
        ttl_seconds: int = 3600,
        *,
        claims: Mapping[str, Any] | None = None,
        now: float | None = None,
    ) -> str:
        """A JWT for ``user_id`` as an identity provider would issue it (``iss``, ``aud``,
        ``sub``, ``iat``, ``nbf``, ``exp``; ``claims`` added, not overriding those)."""
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = dict(claims or {})
        payload.update(
            iss=self.url,
            aud=self.audience,
            sub=user_id,
            iat=issued,
            nbf=issued,
            exp=issued + ttl_seconds,
        )
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self.kid}
        signing_input = ".".join(
            encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
        )
        return f"{signing_input}.{encode(self.sign(signing_input.encode('ascii')))}"
