"""An issuer's signing keys (JWKS), fetched with urllib and cached per container.

Where the keys come from: a configured JWKS URL, or OpenID Connect discovery
(``{issuer}/.well-known/openid-configuration``, whose ``issuer`` must equal
the configured one exactly and whose ``jwks_uri`` names the keys). Every URL,
redirects included, must be ``https://``; plain ``http://`` only to this
machine (127.0.0.1, ``localhost``, ::1: the emulator and tests). Responses
are read with a short timeout and at most ``max_bytes``.

How long keys are kept: the response's ``Cache-Control: max-age``, at least
``refresh_interval`` and at most ``max_age`` (default one hour) seconds;
without the header, ``max_age``. A token naming a ``kid`` the cached set
lacks (the issuer rotated its keys) refreshes the set, but never sooner than
``refresh_interval`` seconds (default 60) after the last fetch, so a flood of
forged ``kid`` values costs the issuer one request a minute per container.
A failed refresh keeps the keys already held (and is retried after
``refresh_interval``); only a container that never got keys refuses every
token (and retries after at most ``FIRST_RETRY_SECONDS``).

A ``kid`` is only ever compared with the ``kid`` values of the fetched set:
never used in a URL or a path. A header's ``jku``/``x5u`` never reaches here.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from handlers import logs, strict_json
from handlers.signatures import InvalidKey, Key, key_from_jwk

log = logs.logger(__name__)

DEFAULT_MAX_AGE_SECONDS = 3600
DEFAULT_REFRESH_SECONDS = 60
DEFAULT_TIMEOUT_SECONDS = 3.0
DEFAULT_MAX_BYTES = 256 * 1024
FIRST_RETRY_SECONDS = 5
"""How soon a container that holds no keys yet may try again after a failed fetch."""
MAX_KEYS = 100
"""Keys read from one set, at most (more are ignored)."""
MAX_KID_LENGTH = 256
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DISCOVERY_PATH = "/.well-known/openid-configuration"
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})\"?", re.IGNORECASE)


class JwksError(RuntimeError):
    """The keys could not be fetched or read (the message says why, for logs)."""


def check_url(url: Any, what: str = "URL") -> str:
    """``url`` when it is https://, or http:// to this machine; else ``ValueError``."""
    if not isinstance(url, str) or not url:
        raise ValueError(f"the {what} must be a non-empty string")
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https" and bool(host)
    local = parts.scheme == "http" and host in LOOPBACK_HOSTS
    if not (secure or local):
        raise ValueError(
            f"the {what} must be https:// (http:// only to 127.0.0.1, localhost or ::1): {url!r}"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"the {what} must not carry a user name or password: {url!r}")
    return url


def discovery_url(issuer: str) -> str:
    """OpenID Connect Discovery 1.0 section 4: the issuer, less a trailing ``/``, then the
    well-known path."""
    return issuer.rstrip("/") + DISCOVERY_PATH


_opener: Any = None


def _open(request: Any, timeout: float) -> Any:
    """urllib's opener whose redirects must pass ``check_url`` (never https -> http); built
    on first use, so importing this module costs no ``urllib.request`` (nor ``ssl``)."""
    global _opener
    import urllib.error
    import urllib.request

    if _opener is None:

        class CheckedRedirects(urllib.request.HTTPRedirectHandler):
            def redirect_request(
                self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str
            ) -> Any:
                try:
                    check_url(newurl, "redirect target")
                except ValueError as refused:
                    raise urllib.error.HTTPError(newurl, code, str(refused), headers, fp) from None
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        _opener = urllib.request.build_opener(CheckedRedirects())
    return _opener.open(request, timeout=timeout)


def max_age_of(cache_control: str | None) -> int | None:
    """``max-age`` of a Cache-Control header in seconds; 0 for ``no-store``/``no-cache``;
    None without either."""
    if not cache_control:
        return None
    lowered = cache_control.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return 0
    found = _MAX_AGE.search(cache_control)
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class Fetched:
    document: Any
    max_age: int | None
    """The response's Cache-Control max-age, if any."""


def fetch_json(url: str, timeout: float, max_bytes: int) -> Fetched:
    """GET ``url`` (checked), at most ``max_bytes`` of strict JSON; ``JwksError`` otherwise."""
    import urllib.error
    import urllib.request

    check_url(url)
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        url, headers={"Accept": "application/json", "User-Agent": "realtime-channel"}
    )
    try:
        with _open(request, timeout) as response:
            status = response.status
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise JwksError(f"{url}: {declared} bytes, over the {max_bytes}-byte limit")
            body = response.read(max_bytes + 1)
            cache_control = response.headers.get("Cache-Control")
    except JwksError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as failed:
        raise JwksError(f"{url}: {failed}") from None
    if status != 200:
        raise JwksError(f"{url}: HTTP {status}")
    if len(body) > max_bytes:
        raise JwksError(f"{url}: over the {max_bytes}-byte limit")
    try:
        document = strict_json.loads(body, unique_keys=True)
    except strict_json.InvalidJson as bad:
        raise JwksError(f"{url}: not JSON: {bad}") from None
    return Fetched(document, max_age_of(cache_control))


@dataclass(frozen=True)
class Jwk:
    """One usable key of a set."""

    kid: str | None
    key: Key
    alg: str | None
    """The key's ``alg`` member, if any: then a token must use exactly that algorithm."""


def parse_jwks(document: Any) -> list[Jwk]:
    """The signature keys of a JWK Set (RFC 7517 section 5) this verifier can use; keys of
    other types or uses are skipped. ``JwksError`` when the document is not a set, or holds
    no usable key."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JwksError('not a JWK Set: no "keys" list')
    found: list[Jwk] = []
    for jwk in document["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict):
            continue
        kid, alg, use, ops = jwk.get("kid"), jwk.get("alg"), jwk.get("use"), jwk.get("key_ops")
        if use is not None and use != "sig":
            continue
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_LENGTH):
            continue
        if alg is not None and not isinstance(alg, str):
            continue
        try:
            key = key_from_jwk(jwk)
        except InvalidKey as skipped:
            log.info("JWKS key skipped", extra={"kid": kid, "reason": str(skipped)})
            continue
        found.append(Jwk(kid, key, alg))
    if not found:
        raise JwksError("the JWK Set holds no usable signature key (RSA or P-256)")
    return found


class KeySet:
    """One issuer's keys, cached for the container's life (see the module's text)."""

    def __init__(
        self,
        issuer: str,
        jwks_url: str | None = None,
        *,
        max_age: int = DEFAULT_MAX_AGE_SECONDS,
        refresh_interval: int = DEFAULT_REFRESH_SECONDS,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fetch: Callable[[str, float, int], Fetched] = fetch_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.jwks_url = check_url(jwks_url, "JWKS URL") if jwks_url else None
        if self.jwks_url is None:
            check_url(issuer, "issuer")
        self.max_age = max_age
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[Jwk] | None = None
        self._expires_at = 0.0
        self._last_fetch: float | None = None
        self._discovered: str | None = None
        self.fetches = 0
        """Key set fetches attempted (discovery not counted): for tests and logs."""

    # -- the keys a token may name ---------------------------------------------------------

    def candidates(self, kid: str | None) -> list[Jwk]:
        """The keys a token with this ``kid`` may be signed with (none: refuse it).

        Without a ``kid``, the set's only key, if it holds exactly one. ``JwksError`` when
        no keys were ever fetched.
        """
        with self._lock:
            now = self._clock()
            if self._keys is None or now >= self._expires_at:
                self._refresh(now)
            found = self._match(kid)
            if not found and kid is not None and self._may_fetch(now):
                log.info("unknown kid: refreshing the issuer's keys", extra={"kid": kid[:64]})
                self._refresh(now)
                found = self._match(kid)
            return found

    def _match(self, kid: str | None) -> list[Jwk]:
        keys = self._keys or []
        if kid is None:
            return list(keys) if len(keys) == 1 else []
        return [jwk for jwk in keys if jwk.kid == kid]

    def _may_fetch(self, now: float) -> bool:
        if self._last_fetch is None:
            return True
        gap = self.refresh_interval if self._keys is not None else FIRST_RETRY_SECONDS
        return now - self._last_fetch >= min(gap, self.refresh_interval)

    def _refresh(self, now: float) -> None:
        """Fetch the set if allowed now; on failure keep what is held (or raise if nothing)."""
        if not self._may_fetch(now):
            if self._keys is None:
                raise JwksError("no keys yet, and the last fetch failed moments ago")
            return
        self._last_fetch = now
        self.fetches += 1
        try:
            fetched = self._fetch(self._keys_url(), self.timeout, self.max_bytes)
            keys = parse_jwks(fetched.document)
        except (JwksError, ValueError) as failed:
            self._discovered = None  # discover again next time: the issuer may have moved
            self._expires_at = now + self.refresh_interval
            if self._keys is None:
                log.error("could not fetch the issuer's keys", extra={"reason": str(failed)})
                raise JwksError(str(failed)) from None
            log.warning(
                "could not refresh the issuer's keys; keeping the ones held",
                extra={"reason": str(failed), "keys": len(self._keys)},
            )
            return
        age = self.max_age if fetched.max_age is None else fetched.max_age
        self._keys = keys
        self._expires_at = now + max(self.refresh_interval, min(age, self.max_age))
        log.info(
            "fetched the issuer's keys",
            extra={"keys": len(keys), "kids": [k.kid for k in keys][:10]},
        )

    def _keys_url(self) -> str:
        if self.jwks_url is not None:
            return self.jwks_url
        if self._discovered is None:
            url = discovery_url(self.issuer)
            fetched = self._fetch(url, self.timeout, self.max_bytes)
            document = fetched.document
            if not isinstance(document, dict):
                raise JwksError(f"{url}: not a JSON object")
            if document.get("issuer") != self.issuer:
                raise JwksError(
                    f"{url}: names issuer {str(document.get('issuer'))[:200]!r}, not"
                    f" {self.issuer!r} (OpenID Connect Discovery requires them to be equal)"
                )
            try:
                self._discovered = check_url(document.get("jwks_uri"), "jwks_uri")
            except ValueError as bad:
                raise JwksError(f"{url}: {bad}") from None
        return self._discovered

    def held(self) -> int:
        """How many keys are cached (0 before the first fetch)."""
        with self._lock:
            return len(self._keys or [])
