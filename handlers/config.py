"""The one place handlers read their environment.

Each handler module calls its loader at import time, so a function that is
missing a variable fails on its first cold start with a message that names the
variable, instead of failing later on some request.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from handlers import strict_json
from handlers.access import InvalidRule, Rule, parse_rules
from handlers.lambda_filters import FilterError, check_pattern
from handlers.tokens import DEFAULT_MAX_LIFETIME_SECONDS
from handlers.topics import KEY_TYPES

if TYPE_CHECKING:  # imported where used: only JWT mode pays for them at cold start
    from handlers.jwt_verify import JwtRules

DEFAULT_CONNECTION_TTL_SECONDS = 7200  # API Gateway's 2-hour connection maximum
DEFAULT_SEND_CONCURRENCY = 64
DEFAULT_SEND_MAX_ATTEMPTS = 5
DEFAULT_MAX_INPUT_BYTES = 32 * 1024  # one API Gateway WebSocket frame
DEFAULT_MAX_SUBSCRIPTIONS = 20
DEFAULT_TABLE_TOPIC_BUCKETS = 4
DEFAULT_REPLAY_RETENTION_SECONDS = 3600
DEFAULT_REPLAY_OVERLAP_MS = 60_000  # the broadcaster's default timeout
DEFAULT_REPLAY_MAX_CHANGES = 5000
DEFAULT_REPLAY_MAX_SECONDS = 20
DEFAULT_FANOUT_THRESHOLD = 100
DEFAULT_FANOUT_GROUPS = 32
DEFAULT_FANOUT_SLICE = 500
DEFAULT_SENDER_RATE = 500
MAX_SOURCE_FILTERS = 5  # Lambda's limit on a mapping's filters
MIN_TOKEN_LIFETIME_SECONDS = 60
MAX_TOKEN_LIFETIME_SECONDS = 30 * 24 * 3600
MAX_CLOCK_SKEW_SECONDS = 300


class ConfigError(RuntimeError):
    """A handler's environment is missing or has a bad value."""


def _required(env: Mapping[str, str], name: str, purpose: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"environment variable {name} is not set: it must name {purpose}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise ConfigError(
            f"environment variable {name}={value} is out of range [{minimum}, {maximum}]"
        )
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"environment variable {name}={raw!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class Source:
    """One stream source of the channel, as the component describes it in ``SOURCES``."""

    label: str
    """The source's name in the program: what messages carry in ``table``."""
    table: str
    """The physical table name (what a stream record's ARN names)."""
    keys: tuple[tuple[str, str], ...]
    """(attribute, type S|N|B) of the partition key, then the sort key if any."""
    old_image: bool
    """Whether the stream carries old images (NEW_AND_OLD_IMAGES)."""
    access: tuple[Rule, ...]
    """Access rules; none: no subscription is accepted (default deny)."""
    filters: tuple[Mapping[str, Any], ...] = ()
    """The source's own filters (Lambda filter patterns on ``dynamodb.NewImage``, any may
    match); none: every record. The broadcaster matches each image of a record against them,
    so an item leaving them is ``removed`` for its subscribers. Only with old images."""


_SOURCES_EXAMPLE = (
    '{"events": {"table": "events-862417b", "keys": [["PK", "S"], ["SK", "S"]],'
    ' "oldImage": true, "access": [{"table": true}]}}'
)


def _source(name: str, label: Any, fields: Any) -> Source:
    where = f"environment variable {name}: source {label!r}"
    table = fields.get("table") if isinstance(fields, dict) else None
    if not isinstance(label, str) or not label.strip() or not isinstance(table, str):
        raise ConfigError(
            f'{where} must be an object with a non-empty string "table", such as {_SOURCES_EXAMPLE}'
        )
    if not table.strip():
        raise ConfigError(f'{where} must be an object with a non-empty string "table"')
    raw_keys = fields.get("keys", [])
    if (
        not isinstance(raw_keys, list)
        or len(raw_keys) > 2
        or not all(
            isinstance(k, list)
            and len(k) == 2
            and isinstance(k[0], str)
            and k[0]
            and k[1] in KEY_TYPES
            for k in raw_keys
        )
    ):
        raise ConfigError(
            f'{where}: "keys" must list [attribute, "S"|"N"|"B"] for the partition key'
            " and the optional sort key"
        )
    old_image = fields.get("oldImage", False)
    if not isinstance(old_image, bool):
        raise ConfigError(f'{where}: "oldImage" must be true or false')
    try:
        access = parse_rules(fields.get("access"), [k[0] for k in raw_keys] or None)
    except InvalidRule as bad:
        raise ConfigError(f"{where}: {bad}") from None
    return Source(
        label=label,
        table=table.strip(),
        keys=tuple((k[0], k[1]) for k in raw_keys),
        old_image=old_image,
        access=access,
        filters=_source_filters(where, fields.get("filters", []), old_image),
    )


def _source_filters(where: str, raw: Any, old_image: bool) -> tuple[Mapping[str, Any], ...]:
    """``"filters"``: up to 5 Lambda filter patterns (objects), as the source's mapping has
    them on NewImage; they need old images (to see an item leave them)."""
    if not isinstance(raw, list) or len(raw) > MAX_SOURCE_FILTERS:
        raise ConfigError(
            f'{where}: "filters" must be a list of at most {MAX_SOURCE_FILTERS} Lambda filter'
            ' patterns, such as [{"dynamodb": {"NewImage": {"status": {"S": ["live"]}}}}]'
        )
    if raw and not old_image:
        raise ConfigError(
            f'{where}: "filters" need "oldImage": true (the broadcaster matches the item'
            " before and after each change to tell an item leaving them)"
        )
    patterns: list[Mapping[str, Any]] = []
    for position, pattern in enumerate(raw):
        try:
            patterns.append(check_pattern(pattern))
        except FilterError as bad:
            raise ConfigError(f'{where}: "filters"[{position}]: {bad}') from None
    return tuple(patterns)


def _sources(env: Mapping[str, str], name: str) -> dict[str, Source]:
    """``{"<label>": {"table": ..., "keys": ..., "oldImage": ..., "access": [...],
    "filters": [...]}}``.

    Only ``table`` is required; unknown fields are ignored (room for more settings).
    An empty object is a channel with no source yet.
    """
    raw = _required(env, name, f"the stream sources as JSON, e.g. {_SOURCES_EXAMPLE}")
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ConfigError(
            f"environment variable {name} is not JSON: expected an object such as"
            f" {_SOURCES_EXAMPLE}"
        ) from None
    if not isinstance(parsed, dict):
        raise ConfigError(
            f"environment variable {name} must be a JSON object of label -> source,"
            f" such as {_SOURCES_EXAMPLE}"
        )
    sources: dict[str, Source] = {}
    labels_by_table: dict[str, str] = {}
    for label, fields in parsed.items():
        source = _source(name, label, fields)
        if source.table in labels_by_table:
            raise ConfigError(
                f"environment variable {name}: table {source.table!r} is named by both"
                f" {labels_by_table[source.table]!r} and {label!r}; a record could not say which"
            )
        labels_by_table[source.table] = label
        sources[label] = source
    return sources


AUTH_MODES = ("hmac", "jwt")


@dataclass(frozen=True)
class JwtConfig:
    """JWT mode (``AUTH_MODE=jwt``): tokens from the stack's identity provider."""

    rules: JwtRules
    """Issuer, audiences, algorithms, required claims and scopes, clock skew, lifetime cap."""
    jwks_url: str | None
    """The issuer's JWKS URL; None: found by OpenID Connect discovery."""
    claims: Mapping[str, str]
    """Our claim name -> the token's (e.g. ``{"groups": "cognito:groups"}``)."""
    jwks_max_age: int
    """Longest the keys are cached, in seconds."""
    jwks_refresh: int
    """Shortest time between two fetches of the keys (an unknown ``kid`` refreshes them)."""


@dataclass(frozen=True)
class AuthorizerConfig:
    secret_parameter: str | None
    """SSM SecureString parameter holding the token signing secret (HMAC mode); None in JWT
    mode."""
    token_max_lifetime: int
    """Seconds a presented token may still have to live; further ahead is refused."""
    identity_claims: tuple[str, ...]
    """Token claims (besides ``sub``) passed on to the connection: those access rules read."""
    jwt: JwtConfig | None = None
    """JWT mode's settings; None: HMAC tokens (``handlers.tokens``)."""


@dataclass(frozen=True)
class ConnectConfig:
    connections_table: str
    ttl_seconds: int


@dataclass(frozen=True)
class DisconnectConfig:
    connections_table: str
    subscriptions_table: str


@dataclass(frozen=True)
class ResumeConfig:
    """Cursors and the replay store (``handlers.cursors``, ``handlers.replay``)."""

    cursor_secret_parameter: str | None
    """SSM SecureString the cursor signing key is derived from; None: no cursors, no resume."""
    table: str | None
    """The replay table; None (or a retention of 0): resume is off and ``after`` gets reset."""
    retention_seconds: int
    """How long a recorded change is kept (and a cursor can be resumed)."""
    overlap_ms: int
    """How far before a cursor a replay starts: the longest a delivery attempt takes (the
    broadcaster's timeout), so a change recorded earlier but delivered later is replayed."""
    max_changes: int
    """Changes one resume may replay; past it, ``reset``."""
    max_seconds: float
    """Time one resume (or snapshot) may take; past it, ``reset``."""

    @property
    def enabled(self) -> bool:
        return bool(self.cursor_secret_parameter and self.table and self.retention_seconds > 0)


def _resume(env: Mapping[str, str]) -> ResumeConfig:
    return ResumeConfig(
        cursor_secret_parameter=env.get("CURSOR_SECRET_PARAMETER", "").strip() or None,
        table=env.get("REPLAY_TABLE", "").strip() or None,
        retention_seconds=_int(
            env, "REPLAY_RETENTION_SECONDS", DEFAULT_REPLAY_RETENTION_SECONDS, 0, 7 * 24 * 3600
        ),
        overlap_ms=_int(env, "REPLAY_OVERLAP_MS", DEFAULT_REPLAY_OVERLAP_MS, 0, 900_000),
        max_changes=_int(env, "REPLAY_MAX_CHANGES", DEFAULT_REPLAY_MAX_CHANGES, 1, 100_000),
        max_seconds=float(_int(env, "REPLAY_MAX_SECONDS", DEFAULT_REPLAY_MAX_SECONDS, 1, 900)),
    )


@dataclass(frozen=True)
class TokenConfig:
    """What ``$default`` needs to verify a fresh token (``auth``): as the authorizer does."""

    secret_parameter: str | None
    token_max_lifetime: int
    identity_claims: tuple[str, ...]
    jwt: JwtConfig | None = None


def _tokens(env: Mapping[str, str]) -> TokenConfig | None:
    """None without ``TOKEN_SECRET_PARAMETER`` or ``AUTH_MODE=jwt``: the stack takes no
    tokens (auth off)."""
    jwt_mode = env.get("AUTH_MODE", "").strip() == "jwt"
    if not jwt_mode and not env.get("TOKEN_SECRET_PARAMETER", "").strip():
        return None
    authorizer = authorizer_config(env)
    return TokenConfig(
        authorizer.secret_parameter,
        authorizer.token_max_lifetime,
        authorizer.identity_claims,
        authorizer.jwt,
    )


@dataclass(frozen=True)
class DefaultConfig:
    management_endpoint: str | None
    """Explicit @connections endpoint; None derives it from the request."""
    max_input_bytes: int
    connections_table: str
    subscriptions_table: str
    sources: Mapping[str, Source]
    max_subscriptions: int
    """Subscriptions one connection may hold."""
    table_buckets: int
    """Partitions each table-wide topic is spread over."""
    resume: ResumeConfig = field(default_factory=lambda: _resume({}))
    target_attribute: str | None = None
    """Row-level control: replays and snapshots apply it as live delivery does."""
    include_old_image: bool = False
    tokens: TokenConfig | None = None
    """How ``auth`` verifies a fresh token; None: auth is off (``auth`` is refused)."""


@dataclass(frozen=True)
class FanoutConfig:
    """Queued fan-out (``handlers.jobs``): where the broadcaster hands delivery to senders."""

    queue_url: str
    """The SQS FIFO queue of delivery jobs."""
    channel: str
    """Prefix of the message group ids (``{channel}-{group}``)."""
    threshold: int
    """Recipients of one record at which the channel switches to queued delivery, for good
    (0: queued from the first record)."""
    groups: int
    """Message groups: each connection's messages go through one, in order."""
    slice: int
    """Recipients one job holds at most."""


@dataclass(frozen=True)
class BroadcasterConfig:
    connections_table: str
    management_endpoint: str
    target_attribute: str | None
    include_old_image: bool
    send_concurrency: int
    send_max_attempts: int
    sources: Mapping[str, Source]
    """Source label (the name messages carry in ``table``) -> the source."""
    subscriptions_table: str
    table_buckets: int
    resume: ResumeConfig = field(default_factory=lambda: _resume({}))
    fanout: FanoutConfig | None = None
    """None: the broadcaster posts every message itself (no queue)."""


@dataclass(frozen=True)
class SenderConfig:
    connections_table: str
    subscriptions_table: str
    management_endpoint: str
    send_concurrency: int
    send_max_attempts: int
    rate: int
    """Posts per second one sender makes at most (its share of the delivery budget)."""


@dataclass(frozen=True)
class SweeperConfig:
    connections_table: str
    subscriptions_table: str
    management_endpoint: str
    lookback_minutes: int
    """Minutes of expiries each run reads (an earlier one was swept by an earlier run)."""
    max_closes: int
    """Connections one run closes at most; the rest wait for the next run."""


def _names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of names (empty parts ignored)."""
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _subscriptions_table(env: Mapping[str, str]) -> str:
    return _required(env, "SUBSCRIPTIONS_TABLE", "the subscriptions (topic index) table")


def _table_buckets(env: Mapping[str, str]) -> int:
    return _int(env, "TABLE_TOPIC_BUCKETS", DEFAULT_TABLE_TOPIC_BUCKETS, 1, 64)


def _json(env: Mapping[str, str], name: str, kind: type, example: str) -> Any:
    """A JSON list or object variable (empty: an empty one)."""
    raw = env.get(name, "").strip()
    if not raw:
        return kind()
    try:
        value = strict_json.loads(raw, unique_keys=True)
    except strict_json.InvalidJson:
        value = None
    if not isinstance(value, kind):
        raise ConfigError(f"environment variable {name} must be a JSON {example}")
    return value


def _strings(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    values = _json(env, name, list, 'list of strings, e.g. ["a", "b"]')
    if not all(isinstance(value, str) and value for value in values):
        raise ConfigError(f"environment variable {name} must be a JSON list of non-empty strings")
    return tuple(values)


def jwt_config(env: Mapping[str, str], max_lifetime: int) -> JwtConfig:
    """JWT mode's variables; ``ConfigError`` naming the first bad one."""
    from handlers.jwks import DEFAULT_MAX_AGE_SECONDS, DEFAULT_REFRESH_SECONDS, check_url
    from handlers.jwt_verify import DEFAULT_CLOCK_SKEW_SECONDS, SUPPORTED_ALGORITHMS, JwtRules

    issuer = _required(env, "JWT_ISSUER", "the identity provider's issuer (its iss claim)")
    jwks_url = env.get("JWT_JWKS_URL", "").strip() or None
    try:
        check_url(jwks_url or issuer, "JWKS URL" if jwks_url else "issuer")
    except ValueError as bad:
        name = "JWT_JWKS_URL" if jwks_url else "JWT_ISSUER"
        raise ConfigError(f"environment variable {name}: {bad}") from None
    audiences = _strings(env, "JWT_AUDIENCES")
    if not audiences:
        raise ConfigError(
            "environment variable JWT_AUDIENCES is not set: it must list the accepted audiences"
            " (aud, or client_id) as JSON"
        )
    algorithms = _names(env, "JWT_ALGORITHMS") or SUPPORTED_ALGORITHMS
    claims = _json(env, "JWT_CLAIMS", dict, 'object, e.g. {"groups": "cognito:groups"}')
    if not all(isinstance(value, str) and value for value in claims.values()):
        raise ConfigError("environment variable JWT_CLAIMS must map names to claim names")
    try:
        rules = JwtRules(
            issuer=issuer,
            audiences=audiences,
            algorithms=algorithms,
            required_claims=_json(env, "JWT_REQUIRED_CLAIMS", dict, 'object, e.g. {"a": "b"}'),
            required_scopes=_strings(env, "JWT_REQUIRED_SCOPES"),
            clock_skew=_int(
                env, "JWT_CLOCK_SKEW_SECONDS", DEFAULT_CLOCK_SKEW_SECONDS, 0, MAX_CLOCK_SKEW_SECONDS
            ),
            max_lifetime=max_lifetime,
        )
    except ValueError as bad:
        raise ConfigError(f"environment variable JWT_ALGORITHMS: {bad}") from None
    return JwtConfig(
        rules=rules,
        jwks_url=jwks_url,
        claims=claims,
        jwks_max_age=_int(env, "JWKS_MAX_AGE_SECONDS", DEFAULT_MAX_AGE_SECONDS, 60, 86_400),
        jwks_refresh=_int(env, "JWKS_REFRESH_SECONDS", DEFAULT_REFRESH_SECONDS, 1, 3600),
    )


def authorizer_config(env: Mapping[str, str] = os.environ) -> AuthorizerConfig:
    mode = env.get("AUTH_MODE", "").strip() or "hmac"
    if mode not in AUTH_MODES:
        raise ConfigError(f"environment variable AUTH_MODE={mode!r} is not one of hmac, jwt")
    max_lifetime = _int(
        env,
        "TOKEN_MAX_LIFETIME_SECONDS",
        DEFAULT_MAX_LIFETIME_SECONDS,
        MIN_TOKEN_LIFETIME_SECONDS,
        MAX_TOKEN_LIFETIME_SECONDS,
    )
    if mode == "jwt":
        return AuthorizerConfig(
            secret_parameter=None,
            token_max_lifetime=max_lifetime,
            identity_claims=_names(env, "IDENTITY_CLAIMS"),
            jwt=jwt_config(env, max_lifetime),
        )
    return AuthorizerConfig(
        secret_parameter=_required(
            env, "TOKEN_SECRET_PARAMETER", "the SSM SecureString holding the token secret"
        ),
        token_max_lifetime=max_lifetime,
        identity_claims=_names(env, "IDENTITY_CLAIMS"),
    )


def connect_config(env: Mapping[str, str] = os.environ) -> ConnectConfig:
    return ConnectConfig(
        connections_table=_required(env, "CONNECTIONS_TABLE", "the connections table"),
        ttl_seconds=_int(
            env, "CONNECTION_TTL_SECONDS", DEFAULT_CONNECTION_TTL_SECONDS, 60, 7 * 24 * 3600
        ),
    )


def disconnect_config(env: Mapping[str, str] = os.environ) -> DisconnectConfig:
    return DisconnectConfig(
        connections_table=_required(env, "CONNECTIONS_TABLE", "the connections table"),
        subscriptions_table=_subscriptions_table(env),
    )


def default_config(env: Mapping[str, str] = os.environ) -> DefaultConfig:
    return DefaultConfig(
        management_endpoint=env.get("MANAGEMENT_ENDPOINT", "").strip() or None,
        max_input_bytes=_int(env, "MAX_INPUT_BYTES", DEFAULT_MAX_INPUT_BYTES, 1, 128 * 1024),
        connections_table=_required(env, "CONNECTIONS_TABLE", "the connections table"),
        subscriptions_table=_subscriptions_table(env),
        sources=_sources(env, "SOURCES"),
        max_subscriptions=_int(env, "MAX_SUBSCRIPTIONS", DEFAULT_MAX_SUBSCRIPTIONS, 1, 100),
        table_buckets=_table_buckets(env),
        resume=_resume(env),
        target_attribute=env.get("TARGET_ATTRIBUTE", "").strip() or None,
        include_old_image=_bool(env, "INCLUDE_OLD_IMAGE", False),
        tokens=_tokens(env),
    )


def broadcaster_config(env: Mapping[str, str] = os.environ) -> BroadcasterConfig:
    return BroadcasterConfig(
        connections_table=_required(env, "CONNECTIONS_TABLE", "the connections table"),
        management_endpoint=_required(
            env, "MANAGEMENT_ENDPOINT", "the stage's https:// @connections endpoint"
        ),
        target_attribute=env.get("TARGET_ATTRIBUTE", "").strip() or None,
        include_old_image=_bool(env, "INCLUDE_OLD_IMAGE", False),
        send_concurrency=_int(env, "SEND_CONCURRENCY", DEFAULT_SEND_CONCURRENCY, 1, 256),
        send_max_attempts=_int(env, "SEND_MAX_ATTEMPTS", DEFAULT_SEND_MAX_ATTEMPTS, 1, 10),
        sources=_sources(env, "SOURCES"),
        subscriptions_table=_subscriptions_table(env),
        table_buckets=_table_buckets(env),
        resume=_resume(env),
        fanout=_fanout(env),
    )


def _fanout(env: Mapping[str, str]) -> FanoutConfig | None:
    """None without ``FANOUT_QUEUE_URL``."""
    queue_url = env.get("FANOUT_QUEUE_URL", "").strip()
    if not queue_url:
        return None
    return FanoutConfig(
        queue_url=queue_url,
        channel=_required(env, "FANOUT_CHANNEL", "the channel (prefix of message group ids)"),
        threshold=_int(env, "FANOUT_THRESHOLD", DEFAULT_FANOUT_THRESHOLD, 0, 1_000_000),
        groups=_int(env, "FANOUT_GROUPS", DEFAULT_FANOUT_GROUPS, 1, 1000),
        slice=_int(env, "FANOUT_SLICE", DEFAULT_FANOUT_SLICE, 1, 5000),
    )


def sender_config(env: Mapping[str, str] = os.environ) -> SenderConfig:
    return SenderConfig(
        connections_table=_required(env, "CONNECTIONS_TABLE", "the connections table"),
        subscriptions_table=_subscriptions_table(env),
        management_endpoint=_required(
            env, "MANAGEMENT_ENDPOINT", "the stage's https:// @connections endpoint"
        ),
        send_concurrency=_int(env, "SEND_CONCURRENCY", DEFAULT_SEND_CONCURRENCY, 1, 256),
        send_max_attempts=_int(env, "SEND_MAX_ATTEMPTS", DEFAULT_SEND_MAX_ATTEMPTS, 1, 10),
        rate=_int(env, "SENDER_RATE", DEFAULT_SENDER_RATE, 1, 10_000),
    )


def sweeper_config(env: Mapping[str, str] = os.environ) -> SweeperConfig:
    return SweeperConfig(
        connections_table=_required(env, "CONNECTIONS_TABLE", "the connections table"),
        subscriptions_table=_subscriptions_table(env),
        management_endpoint=_required(
            env, "MANAGEMENT_ENDPOINT", "the stage's https:// @connections endpoint"
        ),
        lookback_minutes=_int(env, "SWEEP_LOOKBACK_MINUTES", 15, 1, 1440),
        max_closes=_int(env, "SWEEP_MAX_CLOSES", 1000, 1, 100_000),
    )
