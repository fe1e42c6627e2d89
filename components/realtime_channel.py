"""``RealtimeChannel``: a WebSocket API that broadcasts the changes of stream-enabled tables.

Read the constructor top to bottom: it is the recipe. Every child is named
from the component's name and parented to it, so two channels in one stack
never collide.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components import policies
from components.packaging import handler_archive
from components.sources import (
    AUTONAME_SUFFIX,
    ESTIMATED_KEYS,
    LAMBDA_ENVIRONMENT_LIMIT,
    OTHER_BROADCASTER_VARIABLES,
    SourceError,
    StreamSource,
    broadcaster_filters,
    check_access,
    check_old_image,
    check_source,
    check_stream,
    environment_size,
    key_schema,
    label_of,
    lambda_patterns,
    source_entry,
    sources_variable,
    where_of,
)
from handlers.access import claims_named, parse_rules
from handlers.jobs import check_channel, mapping_concurrency
from handlers.jwks import check_url

TYPE_TOKEN = "realtime:index:RealtimeChannel"  # noqa: S105 (a type token, not a password)
RUNTIME = "python3.14"  # the newest Python runtime pulumi-aws offers
ARCHITECTURE = "arm64"
USER_INDEX = "byUser"
DEFAULT_TIMEOUT_SECONDS = 29
"""``$default``'s timeout: API Gateway's integration timeout, room for a resume's replay."""
REPLAY_MAX_SECONDS = 20
"""How long one resume or snapshot may take in ``$default``, with room left to post."""
FUNCTION_KINDS = (
    "authorizer",
    "connect",
    "disconnect",
    "default",
    "broadcaster",
    "sweeper",
    "sender",
)
FANOUT_MAX_RECEIVE_COUNT = 5
"""Deliveries of one job before it goes to the fan-out dead-letter queue."""
FANOUT_RETENTION_SECONDS = 24 * 3600
FANOUT_BATCH_SIZE = 10
"""Jobs per sender invocation (SQS FIFO's most)."""
EXPIRY_INDEX = "byExpiry"
SWEEP_SCHEDULE = "rate(1 minute)"
"""How often the sweeper closes idle connections whose token has expired (with auth)."""
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip
# Only variables API Gateway documents for WebSocket access logs ("Configure logging for
# WebSocket APIs"); $context.integrationErrorMessage, for one, exists for HTTP APIs only.
# $context.error.messageString is the message already JSON-quoted, so a quote in it cannot
# break the line.
ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","connectionId":"$context.connectionId",'
    '"routeKey":"$context.routeKey","eventType":"$context.eventType",'
    '"status":"$context.status","requestTime":"$context.requestTime",'
    '"sourceIp":"$context.identity.sourceIp","error":$context.error.messageString,'
    '"integrationError":"$context.integration.error",'
    '"integrationStatus":"$context.integration.status"}'
)
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_MAPPING_KEY = re.compile(r"^[A-Za-z0-9$\-_.+!*'()]{1,300}$")
_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:([a-z0-9-]+):\d{12}:certificate/[A-Za-z0-9-]{1,64}$")
_HOSTED_ZONE_ID = re.compile(r"^Z[A-Z0-9]{1,32}$")
_SNS_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$")
_ATTRIBUTE = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_:.\-]{1,128}$")
"""A claim name the access rules can write as ``claims.NAME`` (``handlers.access``)."""
AUTH_MODES = ("hmac", "jwt")
JWT_ALGORITHMS = ("RS256", "ES256")

A = TypeVar("A")
SORT_KEY_UNKNOWN = object()
"""A table's range_key as a preview may show it before it is known (an Unknown value makes
every Output it reaches unknown, so it is replaced by this marker)."""


@dataclass
class RealtimeChannelTransforms:
    """Adjust a child's args before it is created: each callable gets the args object and
    returns it (or a replacement, or None after changing it in place)."""

    api: Callable[[aws.apigatewayv2.ApiArgs], Any] | None = None
    stage: Callable[[aws.apigatewayv2.StageArgs], Any] | None = None
    connections_table: Callable[[aws.dynamodb.TableArgs], Any] | None = None
    subscriptions_table: Callable[[aws.dynamodb.TableArgs], Any] | None = None
    replay_table: Callable[[aws.dynamodb.TableArgs], Any] | None = None
    dead_letter_queue: Callable[[aws.sqs.QueueArgs], Any] | None = None
    fanout_queue: Callable[[aws.sqs.QueueArgs], Any] | None = None
    """The SQS FIFO queue of delivery jobs (queued fan-out)."""
    fanout_dead_letter_queue: Callable[[aws.sqs.QueueArgs], Any] | None = None
    """Where a job goes after ``FANOUT_MAX_RECEIVE_COUNT`` failed deliveries."""
    fanout_mapping: Callable[[aws.lambda_.EventSourceMappingArgs], Any] | None = None
    """The senders' SQS event source mapping."""
    function: Callable[[str, aws.lambda_.FunctionArgs], Any] | None = None
    """Called for each function with its kind (authorizer, connect, disconnect, default,
    broadcaster, sweeper, sender)."""
    event_source_mapping: Callable[[str, aws.lambda_.EventSourceMappingArgs], Any] | None = None
    """Called for each source with its label."""
    domain_name: Callable[[aws.apigatewayv2.DomainNameArgs], Any] | None = None
    """The custom domain (``custom_domain``)."""
    api_mapping: Callable[[aws.apigatewayv2.ApiMappingArgs], Any] | None = None
    """The custom domain's mapping of the stage."""
    certificate: Callable[[aws.acm.CertificateArgs], Any] | None = None
    """The certificate the component requests (``hosted_zone_id`` without
    ``certificate_arn``)."""
    dns_record: Callable[[str, aws.route53.RecordArgs], Any] | None = None
    """Called for each Route 53 record with its kind: ``alias`` (the domain to API Gateway's
    regional target) or ``validation`` (the certificate's DNS validation)."""


@dataclass
class RealtimeChannelArgs:
    sources: Sequence[StreamSource] = ()
    """Tables whose changes are broadcast. Default: none (add them later with ``attach``)."""
    stage_name: str = "dev"
    """Name of the API stage, the last part of the URL. Default ``dev``."""
    auth_enabled: bool = True
    """Require a signed token on ``$connect`` (REQUEST authorizer). Default on."""
    token_secret: pulumi.Input[str] | None = None
    """Token signing secret, at least 16 characters (keep it a Pulumi secret); stored as an
    SSM SecureString (``token_secret_parameter``), where backends read it to mint tokens.
    Default none: with ``auth_enabled`` a random 64-character one is generated
    (``random.RandomPassword``, encrypted in the stack's state) and kept across updates."""
    token_max_lifetime_seconds: int = 86_400
    """Longest a token may still have to live when presented, 60 to 2,592,000 s; the
    authorizer refuses tokens that expire further ahead (in both modes: a JWT's ``exp``
    too). Default 86,400 (one day)."""
    auth_mode: str = "hmac"
    """How ``$connect`` verifies tokens: ``hmac``, the stack's own tokens signed with
    ``token_secret``; or ``jwt``, tokens of your identity provider (Cognito, Auth0, any
    OpenID Connect issuer), verified against its published keys (then no token secret is
    created). Default ``hmac``."""
    jwt_issuer: str | None = None
    """JWT mode: the issuer, exactly as its tokens' ``iss`` (``https://``; ``http://`` only
    to 127.0.0.1/localhost/::1). Its keys are found by OpenID Connect discovery unless
    ``jwt_jwks_url`` is set. Required in JWT mode."""
    jwt_jwks_url: str | None = None
    """JWT mode: the issuer's JWKS URL, instead of discovery. Default none (discovery)."""
    jwt_audiences: Sequence[str] = ()
    """JWT mode: accepted audiences: a token's ``aud`` (a string or a list) must name one,
    or, when it has no ``aud``, its ``client_id`` (Cognito access tokens). Required (at least
    one) in JWT mode."""
    jwt_algorithms: Sequence[str] = ("RS256", "ES256")
    """JWT mode: accepted signature algorithms, some of RS256 and ES256. Default both."""
    jwt_required_claims: Mapping[str, Any] = field(default_factory=dict)
    """JWT mode: claims a token must carry with these values (a list claim must contain a
    scalar value), e.g. ``{"token_use": "access"}``. Default none."""
    jwt_required_scopes: Sequence[str] = ()
    """JWT mode: scopes a token must carry (in ``scope`` or ``scp``). Default none."""
    jwt_claims: Mapping[str, str] = field(default_factory=dict)
    """JWT mode: our claim name -> the token's, for the access rules' ``{claims.X}`` and
    ``when``, e.g. ``{"groups": "cognito:groups"}``. Default none (names as in the token)."""
    jwt_clock_skew_seconds: int = 60
    """JWT mode: allowance for clocks apart on ``exp``, ``nbf`` and ``iat``, 0 to 300 s.
    Default 60."""
    jwt_jwks_max_age_seconds: int = 3600
    """JWT mode: longest the issuer's keys are cached per container, 60 to 86,400 s (a
    shorter ``Cache-Control: max-age`` wins). Default 3,600."""
    jwt_jwks_refresh_seconds: int = 60
    """JWT mode: shortest time between two fetches of the keys per container (a token with
    an unknown ``kid`` triggers one), 1 to 3,600 s. Default 60."""
    connection_ttl_seconds: int = 7200
    """Lifetime of a connection record (the table's TTL). Default 7,200 (API Gateway's maximum)."""
    max_subscriptions: int = 20
    """Subscriptions one connection may hold, 1 to 100. Default 20."""
    table_topic_buckets: int = 4
    """Partitions each source's table-wide topic is spread over (table-wide subscriptions
    are split among them by connection, so a hot topic is not one DynamoDB partition),
    1 to 64; the broadcaster queries each. Default 4."""
    replay_retention_seconds: int = 3600
    """How long each change is kept in the replay store, so a client that was away resumes
    without a gap (``subscribe`` with ``after``), 0 to 604,800 s; 0 turns resume off (no
    replay table; ``after`` gets ``reset``). Default 3,600 (one hour)."""
    replay_max_changes: int = 5000
    """Changes one resume may replay, 1 to 100,000; a longer gap gets ``reset``. Default
    5,000."""
    target_attribute: str | None = None
    """Item attribute naming the user an item belongs to: row-level control on every
    subscription (a change reaches only its owner's subscriptions; an item naming no user
    reaches no one; a change of owner tells the previous owner ``removed``). Needs
    ``NEW_AND_OLD_IMAGES`` on every source. Default none: access rules alone decide."""
    include_old_image: bool = False
    """Add the old image to messages as ``old``. Default off."""
    log_retention_days: int = 14
    """Retention of every log group (a CloudWatch-supported value). Default 14."""
    access_logs: bool = True
    """JSON access logs of the stage into their own log group. Default on."""
    manage_api_gateway_account: bool = True
    """With access logs on, create the role API Gateway writes logs with
    (``AmazonAPIGatewayPushToCloudWatchLogs``) and set it as the account's API Gateway
    CloudWatch role (``aws.apigateway.Account``), which a stage with access logs needs. That
    setting is one per account and region: turn this off where it is already set (by hand or
    by another stack), so two owners do not overwrite each other. Destroy leaves role and
    setting in place (other APIs may log through them). Default on."""
    throttling_burst_limit: int = 500
    """Stage default-route burst limit. Default 500."""
    throttling_rate_limit: float = 1000.0
    """Stage default-route steady rate, requests per second. Default 1,000."""
    point_in_time_recovery: bool = False
    """Point-in-time recovery on the connections and subscriptions tables. Default off."""
    deletion_protection: bool = False
    """Deletion protection on the connections and subscriptions tables. Default off."""
    memory_size: int = 256
    """Memory of every function but the broadcaster, MB. Default 256."""
    broadcaster_memory_size: int = 1769
    """Memory of the broadcaster, MB, 128 to 10,240. Default 1,769: Lambda gives CPU in
    proportion to memory and 1,769 MB is one full vCPU; fan-out (signing and sending a post
    per connection) is CPU-bound, so less memory means slower delivery."""
    broadcaster_timeout_seconds: int = 60
    """Broadcaster timeout, 3 to 900 s. Default 60."""
    send_concurrency: int = 64
    """Concurrent posts per broadcaster or sender invocation, 1 to 256. Default 64."""
    queued_fanout: bool = True
    """Hand large audiences to sender functions through an SQS FIFO queue (and keep
    per-connection order): a queue, its dead-letter queue, the sender function and its
    mapping. Off: the broadcaster posts every message itself. Default on."""
    fanout_threshold: int = 100
    """Recipients of one record at which the channel switches to queued delivery, for good
    (then every record is queued, so none overtakes another), 0 to 1,000,000; 0 queues from
    the first record. Default 100."""
    fanout_groups: int = 32
    """FIFO message groups, 1 to 1,000: each connection's messages go through one, in
    order; groups are delivered in parallel, so this caps the senders one record keeps
    busy. Default 32."""
    fanout_slice: int = 500
    """Recipients one delivery job holds at most, 1 to 5,000. Default 500."""
    delivery_budget: int = 9000
    """Ceiling on the senders' posts per second together, 2 to 10,000: API Gateway allows
    10,000 @connections calls per second per account and region, shared with every other
    channel, pongs, replays and snapshots. Default 9,000."""
    sender_rate: int = 500
    """Posts per second one sender makes at most, 1 to 10,000; the mapping's maximum
    concurrency is floor(delivery_budget / sender_rate) (2 to 1,000). Default 500."""
    sender_memory_size: int = 1024
    """Memory of the sender, MB, 128 to 10,240. Default 1,024."""
    sender_timeout_seconds: int = 30
    """Sender timeout, 3 to 900 s; the queue's visibility timeout is six times it (as AWS
    advises for SQS event sources). Default 30."""
    fanout_age_alarm_seconds: int = 30
    """Age of the oldest queued job (s) above which the queue-age alarm fires. Default 30."""
    alarms: bool = False
    """Create alarms: broadcaster iterator age and errors, dead-letter queue depth; they need
    ``alarm_topic_arn`` or ``alarm_email``. Default off."""
    alarm_topic_arn: pulumi.Input[str] | None = None
    """SNS topic for alarm actions (wins over ``alarm_email``). Default none."""
    alarm_email: str | None = None
    """E-mail address subscribed to a topic the component creates (when no topic is given).
    Default none."""
    iterator_age_alarm_ms: int = 60_000
    """IteratorAge (ms) above which the alarm fires. Default 60,000."""
    custom_domain: str | None = None
    """A domain clients connect to instead of the ``execute-api`` host, e.g.
    ``realtime.example.com``: a regional API Gateway domain name (TLS 1.2; the only kind
    WebSocket APIs take) with this stage mapped, and ``url`` becomes
    ``wss://{custom_domain}`` (``/{custom_domain_path}`` when set). Needs
    ``certificate_arn`` or ``hosted_zone_id``. The functions keep posting to the
    ``execute-api`` management endpoint, as AWS requires. Default none."""
    custom_domain_path: str | None = None
    """The API mapping key: the stage answers at ``wss://{custom_domain}/{path}`` (letters,
    digits and ``$-_.+!*'()``, up to 300). Default none: the domain's root."""
    certificate_arn: pulumi.Input[str] | None = None
    """An ACM certificate covering ``custom_domain``, in the stack's region (a regional
    domain takes no certificate from another region). Default: with ``hosted_zone_id``, the
    component requests one and validates it through DNS records in that zone."""
    hosted_zone_id: pulumi.Input[str] | None = None
    """The Route 53 hosted zone of ``custom_domain``: the component creates the alias record
    to the domain's regional target (and the certificate's validation records when it
    requests the certificate). Without it, point a CNAME at ``custom_domain_target``
    yourself. Default none."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags on every taggable child. Default none."""
    transforms: RealtimeChannelTransforms = field(default_factory=RealtimeChannelTransforms)
    """Per-child args adjustments. Default none."""


def management_endpoint_from_invoke_url(invoke_url: str) -> str:
    """The @connections endpoint: ``wss://x/dev`` -> ``https://x/dev``, ``ws://`` -> ``http://``."""
    for websocket, http in (("wss://", "https://"), ("ws://", "http://")):
        if invoke_url.startswith(websocket):
            return http + invoke_url[len(websocket) :].rstrip("/")
    raise ValueError(f"not a WebSocket invoke URL: {invoke_url!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def normalize_args(name: str, args: RealtimeChannelArgs) -> RealtimeChannelArgs:
    """Validate every argument; errors name the component and the argument."""

    def fail(arg: str, why: str) -> None:
        raise ValueError(f"RealtimeChannel {name!r}: {arg} {why}")

    def bounded(arg: str, value: Any, low: float, high: float, integer: bool = True) -> None:
        ok_type = _is_int(value) if integer else _is_int(value) or isinstance(value, float)
        if not ok_type or not low <= value <= high:
            fail(arg, f"must be {'an integer' if integer else 'a number'} from {low:g} to {high:g}")

    if not isinstance(args.stage_name, str) or not _STAGE_NAME.match(args.stage_name):
        fail("stage_name", "must be 1-128 letters, digits, '-' or '_'")
    bounded("connection_ttl_seconds", args.connection_ttl_seconds, 60, 7 * 24 * 3600)
    bounded("max_subscriptions", args.max_subscriptions, 1, 100)
    bounded("table_topic_buckets", args.table_topic_buckets, 1, 64)
    bounded("replay_retention_seconds", args.replay_retention_seconds, 0, 7 * 24 * 3600)
    bounded("replay_max_changes", args.replay_max_changes, 1, 100_000)
    retention = args.replay_retention_seconds
    if _is_int(retention) and 0 < retention <= args.broadcaster_timeout_seconds:
        fail(
            "replay_retention_seconds",
            f"must be 0 (resume off) or more than broadcaster_timeout_seconds"
            f" ({args.broadcaster_timeout_seconds}): a resume replays from that long before"
            " its cursor, so a shorter retention could never resume",
        )
    bounded("token_max_lifetime_seconds", args.token_max_lifetime_seconds, 60, 30 * 24 * 3600)
    _check_jwt(args, fail, bounded)
    if args.log_retention_days not in LOG_RETENTION_DAYS or not _is_int(args.log_retention_days):
        fail("log_retention_days", f"must be one of {', '.join(map(str, LOG_RETENTION_DAYS))}")
    bounded("throttling_burst_limit", args.throttling_burst_limit, 0, 5000)
    bounded("throttling_rate_limit", args.throttling_rate_limit, 0, 10_000, integer=False)
    bounded("memory_size", args.memory_size, 128, 10_240)
    bounded("broadcaster_memory_size", args.broadcaster_memory_size, 128, 10_240)
    bounded("broadcaster_timeout_seconds", args.broadcaster_timeout_seconds, 3, 900)
    bounded("send_concurrency", args.send_concurrency, 1, 256)
    bounded("fanout_threshold", args.fanout_threshold, 0, 1_000_000)
    bounded("fanout_groups", args.fanout_groups, 1, 1000)
    bounded("fanout_slice", args.fanout_slice, 1, 5000)
    bounded("delivery_budget", args.delivery_budget, 2, 10_000)
    bounded("sender_rate", args.sender_rate, 1, 10_000)
    bounded("sender_memory_size", args.sender_memory_size, 128, 10_240)
    bounded("sender_timeout_seconds", args.sender_timeout_seconds, 3, 900)
    bounded("fanout_age_alarm_seconds", args.fanout_age_alarm_seconds, 1, 86_400)
    if args.queued_fanout:
        try:
            mapping_concurrency(args.delivery_budget, args.sender_rate)
        except ValueError as small:
            fail("delivery_budget", f"is too small for sender_rate: {small}")
        try:
            check_channel(name, args.fanout_groups)
        except ValueError as bad:
            fail("queued_fanout", f"needs a name SQS takes in message group ids: {bad}")
    bounded("iterator_age_alarm_ms", args.iterator_age_alarm_ms, 1000, 86_400_000)
    _check_custom_domain(args, fail)
    if args.target_attribute is not None and not _ATTRIBUTE.match(str(args.target_attribute)):
        fail("target_attribute", "must be an attribute name (letters, digits, '_', '-', '.')")
    if args.alarm_email is not None and not _EMAIL.match(args.alarm_email):
        fail("alarm_email", f"is not an e-mail address: {args.alarm_email!r}")
    topic = args.alarm_topic_arn
    if isinstance(topic, str) and not _SNS_TOPIC_ARN.match(topic):
        fail("alarm_topic_arn", f"is not an SNS topic ARN: {topic!r}")
    if args.alarms and topic is None and args.alarm_email is None:
        fail(
            "alarm_topic_arn",
            "or alarm_email is required when alarms is true: alarms with no action notify nobody",
        )
    return args


def _check_jwt(
    args: RealtimeChannelArgs,
    fail: Callable[[str, str], None],
    bounded: Callable[[str, Any, float, float], None],
) -> None:
    """The auth mode and, in JWT mode, every jwt_* argument."""
    if args.auth_mode not in AUTH_MODES:
        fail("auth_mode", f"must be one of {', '.join(AUTH_MODES)}, not {args.auth_mode!r}")
    if args.auth_mode != "jwt":
        return
    if not args.auth_enabled:
        fail("auth_mode", "is 'jwt' but auth_enabled is false: turn auth on to verify JWTs")
    if not args.jwt_issuer:
        fail("jwt_issuer", "is required when auth_mode is 'jwt' (your provider's iss claim)")
    try:
        check_url(args.jwt_issuer, "issuer")
    except ValueError as bad:
        fail("jwt_issuer", f"is not usable: {bad}")
    if args.jwt_jwks_url is not None:
        try:
            check_url(args.jwt_jwks_url, "JWKS URL")
        except ValueError as bad:
            fail("jwt_jwks_url", f"is not usable: {bad}")
    audiences = list(args.jwt_audiences)
    if not audiences or not all(isinstance(a, str) and a.strip() for a in audiences):
        fail(
            "jwt_audiences",
            "must list at least one audience (an aud or client_id value) when auth_mode is"
            " 'jwt': without one, any token of the issuer for any application would pass",
        )
    algorithms = list(args.jwt_algorithms)
    if (
        isinstance(args.jwt_algorithms, str)
        or not algorithms
        or any(a not in JWT_ALGORITHMS for a in algorithms)
        or len(set(algorithms)) != len(algorithms)
    ):
        fail(
            "jwt_algorithms",
            f"must be a non-empty list of distinct values among {', '.join(JWT_ALGORITHMS)}"
            f" (never none or HS*), not {args.jwt_algorithms!r}",
        )
    if not isinstance(args.jwt_required_claims, Mapping) or not all(
        isinstance(k, str) and k for k in args.jwt_required_claims
    ):
        fail("jwt_required_claims", "must map claim names to the values tokens must carry")
    try:
        json.dumps(dict(args.jwt_required_claims), allow_nan=False)
    except (TypeError, ValueError):
        fail("jwt_required_claims", "must hold JSON values only")
    scopes = args.jwt_required_scopes
    if isinstance(scopes, str) or not all(
        isinstance(x, str) and x and not any(c.isspace() for c in x) for x in scopes
    ):
        fail("jwt_required_scopes", "must be a list of scope names (no spaces)")
    mapping = args.jwt_claims
    if not isinstance(mapping, Mapping) or not all(
        isinstance(ours, str)
        and _CLAIM_NAME.match(ours)
        and ours not in ("sub", "exp")
        and isinstance(theirs, str)
        and theirs
        for ours, theirs in mapping.items()
    ):
        fail(
            "jwt_claims",
            "must map claim names (letters, digits, '_', ':', '.', '-'; not sub or exp) to the"
            ' token\'s claim names, e.g. {"groups": "cognito:groups"}',
        )
    bounded("jwt_clock_skew_seconds", args.jwt_clock_skew_seconds, 0, 300)
    bounded("jwt_jwks_max_age_seconds", args.jwt_jwks_max_age_seconds, 60, 86_400)
    bounded("jwt_jwks_refresh_seconds", args.jwt_jwks_refresh_seconds, 1, 3600)


def jwt_environment(args: RealtimeChannelArgs) -> dict[str, str]:
    """The variables JWT mode gives the authorizer and ``$default`` (pure)."""
    env = {
        "AUTH_MODE": "jwt",
        "JWT_ISSUER": str(args.jwt_issuer),
        "JWT_AUDIENCES": json.dumps(list(args.jwt_audiences), separators=(",", ":")),
        "JWT_ALGORITHMS": ",".join(args.jwt_algorithms),
        "JWT_CLOCK_SKEW_SECONDS": str(args.jwt_clock_skew_seconds),
        "JWKS_MAX_AGE_SECONDS": str(args.jwt_jwks_max_age_seconds),
        "JWKS_REFRESH_SECONDS": str(args.jwt_jwks_refresh_seconds),
    }
    if args.jwt_jwks_url:
        env["JWT_JWKS_URL"] = args.jwt_jwks_url
    if args.jwt_required_claims:
        env["JWT_REQUIRED_CLAIMS"] = json.dumps(
            dict(args.jwt_required_claims), separators=(",", ":"), sort_keys=True
        )
    if args.jwt_required_scopes:
        env["JWT_REQUIRED_SCOPES"] = json.dumps(list(args.jwt_required_scopes))
    if args.jwt_claims:
        env["JWT_CLAIMS"] = json.dumps(dict(args.jwt_claims), separators=(",", ":"), sort_keys=True)
    return env


def _check_custom_domain(args: RealtimeChannelArgs, fail: Callable[[str, str], None]) -> None:
    """``custom_domain`` and its companions, checked at preview."""
    domain = args.custom_domain
    if domain is None:
        for companion in ("custom_domain_path", "certificate_arn", "hosted_zone_id"):
            if getattr(args, companion) is not None:
                fail(companion, "needs custom_domain (the domain it belongs to)")
        return
    if not isinstance(domain, str) or not is_domain_name(domain):
        fail(
            "custom_domain",
            f"must be a fully qualified domain name in lower case, e.g. realtime.example.com,"
            f" without a scheme, path, port, trailing dot or wildcard: got {domain!r}",
        )
    path = args.custom_domain_path
    if path is not None and (not isinstance(path, str) or not _MAPPING_KEY.match(path)):
        fail(
            "custom_domain_path",
            f"must be 1-300 letters, digits or $-_.+!*'() (one level, no '/'): got {path!r}",
        )
    certificate = args.certificate_arn
    if certificate is None and args.hosted_zone_id is None:
        fail(
            "custom_domain",
            "needs certificate_arn (an ACM certificate for it in the stack's region) or"
            " hosted_zone_id (a Route 53 zone where the component validates a new one)",
        )
    if isinstance(certificate, str):
        match = _ACM_ARN.match(certificate)
        if match is None:
            fail("certificate_arn", f"is not an ACM certificate ARN: {certificate!r}")
        else:
            region = pulumi.Config("aws").get("region")
            if region and match.group(1) != region:
                fail(
                    "certificate_arn",
                    f"is in {match.group(1)}, but a regional custom domain needs a certificate"
                    f" in the stack's region ({region})",
                )
    zone = args.hosted_zone_id
    if isinstance(zone, str) and not _HOSTED_ZONE_ID.match(zone):
        fail("hosted_zone_id", f"is not a Route 53 hosted zone id (Z...): {zone!r}")


def is_domain_name(name: str) -> bool:
    """A fully qualified lower-case domain name (two labels at least, no wildcard)."""
    labels = name.split(".")
    return (
        len(name) <= 253
        and len(labels) >= 2
        and all(_DOMAIN_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )


class RealtimeChannel(pulumi.ComponentResource):
    """An API Gateway WebSocket API, its stage, a connections table and the functions that
    turn stream records of any attached table into messages to connected clients."""

    url: pulumi.Output[str]
    """``wss://`` URL clients connect to: the custom domain's when one is set."""
    execute_api_url: pulumi.Output[str]
    """The stage's own ``wss://{api}.execute-api.{region}.amazonaws.com/{stage}`` URL (equal
    to ``url`` without a custom domain)."""
    custom_domain_target: pulumi.Output[str]
    """The regional host name a CNAME (or alias) of ``custom_domain`` must point at; ``""``
    without a custom domain."""
    domain_name: aws.apigatewayv2.DomainName | None
    api_mapping: aws.apigatewayv2.ApiMapping | None
    certificate: aws.acm.Certificate | None
    """The certificate the component requested (``hosted_zone_id`` without
    ``certificate_arn``), else None."""
    dns_records: dict[str, aws.route53.Record]
    management_endpoint: pulumi.Output[str]
    """``https://`` endpoint of the @connections API."""
    connections_table_name: pulumi.Output[str]
    subscriptions_table_name: pulumi.Output[str]
    """The subscriptions table (the topic index)."""
    replay_table_name: pulumi.Output[str]
    """The replay store; ``""`` when resume is off (``replay_retention_seconds`` 0)."""
    api_id: pulumi.Output[str]
    stage_name: pulumi.Output[str]
    dead_letter_queue_url: pulumi.Output[str]
    function_names: pulumi.Output[dict[str, str]]

    api: aws.apigatewayv2.Api
    stage: aws.apigatewayv2.Stage
    connections_table: aws.dynamodb.Table
    subscriptions_table: aws.dynamodb.Table
    replay_table: aws.dynamodb.Table | None
    cursor_secret_parameter: aws.ssm.Parameter
    cursor_secret_password: random.RandomPassword
    dead_letter_queue: aws.sqs.Queue
    fanout_queue: aws.sqs.Queue | None
    """The SQS FIFO queue of delivery jobs; None with ``queued_fanout`` off."""
    fanout_dead_letter_queue: aws.sqs.Queue | None
    fanout_mapping: aws.lambda_.EventSourceMapping | None
    fanout_queue_url: pulumi.Output[str]
    """``""`` with ``queued_fanout`` off."""
    functions: dict[str, aws.lambda_.Function]
    event_source_mappings: dict[str, aws.lambda_.EventSourceMapping]
    token_secret_parameter: aws.ssm.Parameter | None
    token_secret_password: random.RandomPassword | None
    api_gateway_account: aws.apigateway.Account | None

    def __init__(
        self,
        name: str,
        args: RealtimeChannelArgs | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self._channel = name
        self._args = normalize_args(name, args or RealtimeChannelArgs())
        self._code = handler_archive()
        self.functions = {}
        self.event_source_mappings = {}
        self._roles: dict[str, aws.iam.Role] = {}
        self._role_policies: dict[str, aws.iam.RolePolicy] = {}
        self._source_keys: set[tuple[str, str]] = set()
        self._source_entries: dict[str, pulumi.Output[dict[str, Any]]] = {}
        """label -> the source as SOURCES describes it (table, keys, oldImage, access)."""
        self._source_rules: dict[str, list[dict[str, Any]]] = {}
        """label -> its access rules as JSON (known while the program runs)."""
        self._source_hints: dict[str, dict[str, Any]] = {}
        """label -> its SOURCES entry as far as known before deploy (autonamed tables at
        their likely length, keys estimated), for the size check at preview."""
        self._sources_sealed = False
        self._sealed_sources: pulumi.Output[dict[str, Any]] | None = None

        self._create_connections_table()
        self._create_subscriptions_table()
        self._create_replay_table()
        self._create_dead_letter_queue()
        self._create_fanout_queues()
        self._create_api()
        self._create_stage()
        self._create_token_secret()
        self._create_cursor_secret()
        self._create_functions()
        self._create_senders()
        self._create_routes()
        self._create_alarms()
        self._create_custom_domain()
        for source in self._args.sources:
            self.attach(source)
        self._export_outputs()
        self.register_outputs(
            {
                "url": self.url,
                "execute_api_url": self.execute_api_url,
                "custom_domain_target": self.custom_domain_target,
                "management_endpoint": self.management_endpoint,
                "connections_table_name": self.connections_table_name,
                "subscriptions_table_name": self.subscriptions_table_name,
                "replay_table_name": self.replay_table_name,
                "api_id": self.api_id,
                "stage_name": self.stage_name,
                "dead_letter_queue_url": self.dead_letter_queue_url,
                "fanout_queue_url": self.fanout_queue_url,
                "function_names": self.function_names,
            }
        )

    # -- helpers ---------------------------------------------------------------------------

    def _child(self, **options: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, **options)

    def _n(self, suffix: str) -> str:
        return f"{self._channel}-{suffix}"

    def _transform(self, hook: Callable[..., Any] | None, args: A, *leading: str) -> A:
        if hook is None:
            return args
        changed = hook(*leading, args)
        return args if changed is None else changed

    def _tags(self, **extra: str) -> dict[str, str]:
        return {"realtime-channel": self._channel, **self._args.tags, **extra}

    # -- recipe steps ----------------------------------------------------------------------

    def _create_connections_table(self) -> None:
        args = aws.dynamodb.TableArgs(
            billing_mode="PAY_PER_REQUEST",
            hash_key="connectionId",
            attributes=[
                aws.dynamodb.TableAttributeArgs(name="connectionId", type="S"),
                aws.dynamodb.TableAttributeArgs(name="userId", type="S"),
                aws.dynamodb.TableAttributeArgs(name="expiryMinute", type="N"),
            ],
            global_secondary_indexes=[
                aws.dynamodb.TableGlobalSecondaryIndexArgs(
                    name=USER_INDEX,
                    key_schemas=[
                        aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                            attribute_name="userId", key_type="HASH"
                        )
                    ],
                    projection_type="KEYS_ONLY",
                ),
                # sparse: only connections with a token; the sweeper reads a minute at a time
                aws.dynamodb.TableGlobalSecondaryIndexArgs(
                    name=EXPIRY_INDEX,
                    key_schemas=[
                        aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                            attribute_name="expiryMinute", key_type="HASH"
                        ),
                        aws.dynamodb.TableGlobalSecondaryIndexKeySchemaArgs(
                            attribute_name="connectionId", key_type="RANGE"
                        ),
                    ],
                    projection_type="INCLUDE",
                    non_key_attributes=["expiresAt"],
                ),
            ],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name="ttl", enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(
                enabled=self._args.point_in_time_recovery
            ),
            deletion_protection_enabled=self._args.deletion_protection,
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.connections_table, args)
        self.connections_table = aws.dynamodb.Table(self._n("connections"), args, self._child())

    def _create_subscriptions_table(self) -> None:
        """The topic index: one item per subscription under the topic it listens on, so a
        change finds its subscribers with a Query per topic (a table, not a GSI: reads are
        strongly consistent). Items expire with their connection (TTL, the backstop)."""
        args = aws.dynamodb.TableArgs(
            billing_mode="PAY_PER_REQUEST",
            hash_key="topic",
            range_key="sk",
            attributes=[
                aws.dynamodb.TableAttributeArgs(name="topic", type="S"),
                aws.dynamodb.TableAttributeArgs(name="sk", type="S"),
            ],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name="ttl", enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(
                enabled=self._args.point_in_time_recovery
            ),
            deletion_protection_enabled=self._args.deletion_protection,
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.subscriptions_table, args)
        self.subscriptions_table = aws.dynamodb.Table(self._n("subscriptions"), args, self._child())

    def _create_replay_table(self) -> None:
        """The replay store (``handlers.replay``): each change once per topic it touches,
        keyed (topic, change) so a retried batch rewrites the same items, with the local
        index ``byTime`` (topic, at) that answers "after cursor C on topic T" in one strongly
        consistent Query, and TTL = the retention. It holds copies of source items (deleted
        ones too) until their TTL: encrypted at rest like every table here."""
        self.replay_table = None
        if self._args.replay_retention_seconds == 0:
            return
        args = aws.dynamodb.TableArgs(
            billing_mode="PAY_PER_REQUEST",
            hash_key="topic",
            range_key="change",
            attributes=[
                aws.dynamodb.TableAttributeArgs(name="topic", type="S"),
                aws.dynamodb.TableAttributeArgs(name="change", type="S"),
                aws.dynamodb.TableAttributeArgs(name="at", type="S"),
            ],
            local_secondary_indexes=[
                aws.dynamodb.TableLocalSecondaryIndexArgs(
                    name="byTime", range_key="at", projection_type="ALL"
                )
            ],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name="ttl", enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            deletion_protection_enabled=self._args.deletion_protection,
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.replay_table, args)
        self.replay_table = aws.dynamodb.Table(self._n("replay"), args, self._child())

    def _create_cursor_secret(self) -> None:
        """The key cursors are signed with (``handlers.cursors``): generated once and kept
        (``random.RandomPassword``, encrypted in state), as an SSM SecureString the
        broadcaster and ``$default`` read once per container. Separate from the token
        secret, so either can be rotated alone (rotating it resets every cursor)."""
        self.cursor_secret_password = random.RandomPassword(
            self._n("cursor-secret-value"), length=64, special=False, opts=self._child()
        )
        self.cursor_secret_parameter = aws.ssm.Parameter(
            self._n("cursor-secret"),
            type="SecureString",
            value=self.cursor_secret_password.result,
            description=f"realtime-channel {self._channel}: cursor signing secret",
            tags=self._tags(),
            opts=self._child(additional_secret_outputs=["value"]),
        )

    def _resume_environment(self, kind: str) -> dict[str, pulumi.Input[str]]:
        """What the broadcaster (records, signs) and ``$default`` (replays) know of resume."""
        env: dict[str, pulumi.Input[str]] = {
            "CURSOR_SECRET_PARAMETER": self.cursor_secret_parameter.name,
            "REPLAY_RETENTION_SECONDS": str(self._args.replay_retention_seconds),
        }
        if self.replay_table is not None:
            env["REPLAY_TABLE"] = self.replay_table.name
        if kind == "default":
            env["REPLAY_OVERLAP_MS"] = str(self._args.broadcaster_timeout_seconds * 1000)
            env["REPLAY_MAX_CHANGES"] = str(self._args.replay_max_changes)
            env["REPLAY_MAX_SECONDS"] = str(REPLAY_MAX_SECONDS)
        return env

    def _create_dead_letter_queue(self) -> None:
        args = aws.sqs.QueueArgs(
            sqs_managed_sse_enabled=True,
            message_retention_seconds=14 * 24 * 3600,
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.dead_letter_queue, args)
        self.dead_letter_queue = aws.sqs.Queue(self._n("dlq"), args, self._child())

    def _create_fanout_queues(self) -> None:
        """The queued fan-out's SQS FIFO queue (``handlers.jobs``) and its dead-letter queue.

        High-throughput FIFO (deduplication and throughput per message group): groups are
        independent. The visibility timeout is six times the sender's timeout, as AWS
        advises for an SQS event source; a job that fails ``FANOUT_MAX_RECEIVE_COUNT``
        times goes to the dead-letter queue whole (its body redelivers it)."""
        self.fanout_queue = self.fanout_dead_letter_queue = None
        self.fanout_mapping = None
        if not self._args.queued_fanout:
            return
        fifo: dict[str, Any] = {
            "fifo_queue": True,
            "content_based_deduplication": False,
            "deduplication_scope": "messageGroup",
            "fifo_throughput_limit": "perMessageGroupId",
            "sqs_managed_sse_enabled": True,
            "tags": self._tags(),
        }
        dlq_args = aws.sqs.QueueArgs(
            name=f"{self._n('fanout-dlq')}.fifo",
            message_retention_seconds=14 * 24 * 3600,
            **fifo,
        )
        dlq_args = self._transform(self._args.transforms.fanout_dead_letter_queue, dlq_args)
        self.fanout_dead_letter_queue = aws.sqs.Queue(
            self._n("fanout-dlq"), dlq_args, self._child()
        )
        args = aws.sqs.QueueArgs(
            name=f"{self._n('fanout')}.fifo",
            visibility_timeout_seconds=6 * self._args.sender_timeout_seconds,
            message_retention_seconds=FANOUT_RETENTION_SECONDS,
            redrive_policy=self.fanout_dead_letter_queue.arn.apply(
                lambda arn: json.dumps(
                    {"deadLetterTargetArn": arn, "maxReceiveCount": FANOUT_MAX_RECEIVE_COUNT}
                )
            ),
            **fifo,
        )
        args = self._transform(self._args.transforms.fanout_queue, args)
        self.fanout_queue = aws.sqs.Queue(self._n("fanout"), args, self._child())

    def _fanout_environment(self) -> dict[str, pulumi.Input[str]]:
        """What the broadcaster knows of the queued fan-out (nothing with it off)."""
        if self.fanout_queue is None:
            return {}
        return {
            "FANOUT_QUEUE_URL": self.fanout_queue.url,
            "FANOUT_CHANNEL": self._channel,
            "FANOUT_THRESHOLD": str(self._args.fanout_threshold),
            "FANOUT_GROUPS": str(self._args.fanout_groups),
            "FANOUT_SLICE": str(self._args.fanout_slice),
        }

    def _create_senders(self) -> None:
        """The sender function and its SQS event source mapping: at most
        floor(delivery_budget / sender_rate) senders at once, each at most sender_rate
        posts/s (``handlers.jobs.mapping_concurrency``)."""
        queue = self.fanout_queue
        if queue is None:
            return
        table_arn = self.connections_table.arn
        subscriptions_arn = self.subscriptions_table.arn
        stage_arn = self.stage.execution_arn
        function = self._create_function(
            "sender",
            lambda logs: pulumi.Output.all(
                table_arn, subscriptions_arn, stage_arn, queue.arn
            ).apply(lambda a: policies.sender_policy(logs, a[0], a[1], a[2], a[3])),
            {
                "CONNECTIONS_TABLE": self.connections_table.name,
                "SUBSCRIPTIONS_TABLE": self.subscriptions_table.name,
                "MANAGEMENT_ENDPOINT": self.management_endpoint,
                "SEND_CONCURRENCY": str(self._args.send_concurrency),
                "SENDER_RATE": str(self._args.sender_rate),
            },
            timeout=self._args.sender_timeout_seconds,
            memory_size=self._args.sender_memory_size,
        )
        args = aws.lambda_.EventSourceMappingArgs(
            event_source_arn=queue.arn,
            function_name=function.arn,
            batch_size=FANOUT_BATCH_SIZE,
            function_response_types=["ReportBatchItemFailures"],
            scaling_config=aws.lambda_.EventSourceMappingScalingConfigArgs(
                maximum_concurrency=mapping_concurrency(
                    self._args.delivery_budget, self._args.sender_rate
                )
            ),
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.fanout_mapping, args)
        self.fanout_mapping = aws.lambda_.EventSourceMapping(
            self._n("fanout-senders"),
            args,
            self._child(depends_on=[self._role_policies["sender"]]),
        )

    def _create_api(self) -> None:
        args = aws.apigatewayv2.ApiArgs(
            protocol_type="WEBSOCKET",
            route_selection_expression="$request.body.action",
            description=f"realtime-channel {self._channel}",
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.api, args)
        self.api = aws.apigatewayv2.Api(self._n("api"), args, self._child())

    def _create_api_gateway_account(self) -> aws.apigateway.Account | None:
        """The account+region-wide CloudWatch role of API Gateway, which access logs need.

        Kept on destroy (``retain_on_delete``): the setting is shared by every API in the
        account and region, so removing it (or the role it names) with this stack would break
        the logging of others.
        """
        self.api_gateway_account = None
        if not (self._args.access_logs and self._args.manage_api_gateway_account):
            return None
        role = aws.iam.Role(
            self._n("apigateway-logs-role"),
            assume_role_policy=policies.apigateway_assume_role_policy(),
            description="API Gateway writes CloudWatch logs (account-wide setting)",
            tags=self._tags(),
            opts=self._child(retain_on_delete=True),
        )
        attachment = aws.iam.RolePolicyAttachment(
            self._n("apigateway-logs-policy"),
            role=role.name,
            policy_arn=aws.iam.ManagedPolicy.AMAZON_API_GATEWAY_PUSH_TO_CLOUD_WATCH_LOGS,
            opts=self._child(retain_on_delete=True),
        )
        self.api_gateway_account = aws.apigateway.Account(
            self._n("apigateway-account"),
            cloudwatch_role_arn=role.arn,
            opts=self._child(depends_on=[attachment], retain_on_delete=True),
        )
        return self.api_gateway_account

    def _create_stage(self) -> None:
        access_logs = None
        account = self._create_api_gateway_account()
        if self._args.access_logs:
            self.access_log_group = aws.cloudwatch.LogGroup(
                self._n("access-logs"),
                retention_in_days=self._args.log_retention_days,
                tags=self._tags(),
                opts=self._child(),
            )
            access_logs = aws.apigatewayv2.StageAccessLogSettingsArgs(
                destination_arn=self.access_log_group.arn, format=ACCESS_LOG_FORMAT
            )
        args = aws.apigatewayv2.StageArgs(
            api_id=self.api.id,
            name=self._args.stage_name,
            auto_deploy=True,
            default_route_settings=aws.apigatewayv2.StageDefaultRouteSettingsArgs(
                throttling_burst_limit=self._args.throttling_burst_limit,
                throttling_rate_limit=self._args.throttling_rate_limit,
            ),
            access_log_settings=access_logs,
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.stage, args)
        self.stage = aws.apigatewayv2.Stage(
            self._n("stage"), args, self._child(depends_on=[account] if account else None)
        )
        self.management_endpoint = self.stage.invoke_url.apply(management_endpoint_from_invoke_url)

    def _require_secret(self, value: Any) -> str:
        if not isinstance(value, str) or len(value) < 16:
            raise ValueError(
                f"RealtimeChannel {self._channel!r}: token_secret must be at least 16 characters"
                ' (`pulumi config set --secret tokenSecret "$(openssl rand -hex 32)"`)'
            )
        return value

    def _create_token_secret(self) -> None:
        self.token_secret_parameter = None
        self.token_secret_password = None
        if not self._args.auth_enabled or self._args.auth_mode == "jwt":
            return  # JWT mode: the identity provider signs; there is no secret of ours
        secret = self._args.token_secret
        if secret is None or secret == "":
            # Generated once, then kept: RandomPassword's result lives (encrypted) in state
            # and changes only if this resource is replaced.
            self.token_secret_password = random.RandomPassword(
                self._n("token-secret-value"), length=64, special=False, opts=self._child()
            )
            secret = self.token_secret_password.result
        self.token_secret_parameter = aws.ssm.Parameter(
            self._n("token-secret"),
            type="SecureString",
            value=pulumi.Output.secret(secret).apply(self._require_secret),
            description=f"realtime-channel {self._channel}: connection token signing secret",
            tags=self._tags(),
            opts=self._child(additional_secret_outputs=["value"]),
        )

    def _create_function(
        self,
        kind: str,
        policy: Callable[[str], pulumi.Input[str]],
        environment: Mapping[str, pulumi.Input[str]],
        timeout: int,
        memory_size: int | None = None,
    ) -> aws.lambda_.Function:
        log_group = aws.cloudwatch.LogGroup(
            self._n(f"{kind}-logs"),
            retention_in_days=self._args.log_retention_days,
            tags=self._tags(),
            opts=self._child(),
        )
        role = aws.iam.Role(
            self._n(f"{kind}-role"),
            assume_role_policy=policies.lambda_assume_role_policy(),
            tags=self._tags(),
            opts=self._child(),
        )
        role_policy = aws.iam.RolePolicy(
            self._n(f"{kind}-policy"),
            role=role.id,
            policy=log_group.arn.apply(policy),
            opts=self._child(),
        )
        args = aws.lambda_.FunctionArgs(
            role=role.arn,
            runtime=RUNTIME,
            architectures=[ARCHITECTURE],
            handler=f"handlers.{kind}.handler",
            code=self._code.archive,
            timeout=timeout,
            memory_size=memory_size or self._args.memory_size,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=dict(environment)),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(
                log_format="JSON",
                log_group=log_group.name,
                application_log_level="INFO",
                system_log_level="WARN",
            ),
            description=f"realtime-channel {self._channel}: {kind}",
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.function, args, kind)
        function = aws.lambda_.Function(
            self._n(kind), args, self._child(depends_on=[role_policy, log_group])
        )
        self._roles[kind] = role
        self._role_policies[kind] = role_policy
        self.functions[kind] = function
        return function

    def _create_functions(self) -> None:
        table_arn = self.connections_table.arn
        table_name = self.connections_table.name
        subscriptions_arn = self.subscriptions_table.arn
        subscriptions_name = self.subscriptions_table.name
        stage_arn = self.stage.execution_arn
        buckets = str(self._args.table_topic_buckets)
        if self._args.auth_enabled:
            self._create_function(
                "authorizer",
                self._authorizer_policy(),
                {**self._token_environment(), "IDENTITY_CLAIMS": self._identity_claims()},
                timeout=10,
            )
        self._create_function(
            "connect",
            lambda logs: table_arn.apply(lambda t: policies.connect_policy(logs, t)),
            {
                "CONNECTIONS_TABLE": table_name,
                "CONNECTION_TTL_SECONDS": str(self._args.connection_ttl_seconds),
            },
            timeout=10,
        )
        self._create_function(
            "disconnect",
            lambda logs: pulumi.Output.all(table_arn, subscriptions_arn).apply(
                lambda a: policies.disconnect_policy(logs, a[0], a[1])
            ),
            {"CONNECTIONS_TABLE": table_name, "SUBSCRIPTIONS_TABLE": subscriptions_name},
            timeout=10,
        )
        default_env: dict[str, pulumi.Input[str]] = {
            "MANAGEMENT_ENDPOINT": self.management_endpoint,
            "CONNECTIONS_TABLE": table_name,
            "SUBSCRIPTIONS_TABLE": subscriptions_name,
            "MAX_SUBSCRIPTIONS": str(self._args.max_subscriptions),
            "TABLE_TOPIC_BUCKETS": buckets,
        }
        if self._args.target_attribute:
            default_env["TARGET_ATTRIBUTE"] = self._args.target_attribute
        if self._args.include_old_image:
            default_env["INCLUDE_OLD_IMAGE"] = "true"
        default_env.update(self._resume_environment("default"))
        token_arn: pulumi.Input[str] = ""
        if self._args.auth_enabled:  # $default verifies fresh tokens (auth) as the authorizer
            default_env.update(self._token_environment())
            default_env["IDENTITY_CLAIMS"] = self._identity_claims()
        if self.token_secret_parameter is not None:
            token_arn = self.token_secret_parameter.arn
        default_env["SOURCES"] = self._sources_variable("default", dict(default_env))
        cursor_arn = self.cursor_secret_parameter.arn
        replay_arn: pulumi.Input[str] = (
            self.replay_table.arn if self.replay_table is not None else ""
        )
        self._create_function(
            "default",
            lambda logs: pulumi.Output.all(
                stage_arn, table_arn, subscriptions_arn, cursor_arn, replay_arn, token_arn
            ).apply(
                lambda a: policies.default_policy(
                    logs,
                    a[0],
                    a[1],
                    a[2],
                    cursor_parameter_arn=a[3],
                    replay_table_arn=a[4],
                    token_parameter_arn=a[5],
                )
            ),
            default_env,
            timeout=DEFAULT_TIMEOUT_SECONDS,
        )
        broadcaster_env: dict[str, pulumi.Input[str]] = {
            "CONNECTIONS_TABLE": table_name,
            "SUBSCRIPTIONS_TABLE": subscriptions_name,
            "TABLE_TOPIC_BUCKETS": buckets,
            "MANAGEMENT_ENDPOINT": self.management_endpoint,
            "INCLUDE_OLD_IMAGE": "true" if self._args.include_old_image else "false",
            "SEND_CONCURRENCY": str(self._args.send_concurrency),
        }
        if self._args.target_attribute:
            broadcaster_env["TARGET_ATTRIBUTE"] = self._args.target_attribute
        broadcaster_env.update(self._resume_environment("broadcaster"))
        broadcaster_env.update(self._fanout_environment())
        broadcaster_env["SOURCES"] = self._sources_variable("broadcaster", dict(broadcaster_env))
        queue_arn = self.dead_letter_queue.arn
        fanout_arn: pulumi.Input[str] = (
            self.fanout_queue.arn if self.fanout_queue is not None else ""
        )
        self._create_function(
            "broadcaster",
            lambda logs: pulumi.Output.all(
                table_arn,
                subscriptions_arn,
                stage_arn,
                queue_arn,
                cursor_arn,
                replay_arn,
                fanout_arn,
            ).apply(
                lambda a: policies.broadcaster_policy(
                    logs,
                    a[0],
                    a[1],
                    a[2],
                    a[3],
                    cursor_parameter_arn=a[4],
                    replay_table_arn=a[5],
                    fanout_queue_arn=a[6] or None,
                )
            ),
            broadcaster_env,
            timeout=self._args.broadcaster_timeout_seconds,
            memory_size=self._args.broadcaster_memory_size,
        )
        self._create_sweep(table_arn, table_name)

    def _token_environment(self) -> dict[str, pulumi.Input[str]]:
        """How the authorizer (and ``$default``'s ``auth``) verify tokens in this mode."""
        env: dict[str, pulumi.Input[str]] = {
            "TOKEN_MAX_LIFETIME_SECONDS": str(self._args.token_max_lifetime_seconds)
        }
        if self._args.auth_mode == "jwt":
            env.update(jwt_environment(self._args))
        elif self.token_secret_parameter is not None:
            env["TOKEN_SECRET_PARAMETER"] = self.token_secret_parameter.name
        return env

    def _authorizer_policy(self) -> Callable[[str], pulumi.Input[str]]:
        """HMAC mode reads the token secret; JWT mode reads nothing in AWS (the issuer's
        keys come over HTTPS), so it writes its logs only."""
        parameter = self.token_secret_parameter
        if parameter is None:
            return policies.authorizer_policy
        return lambda logs: parameter.arn.apply(lambda p: policies.authorizer_policy(logs, p))

    def _create_sweep(self, table_arn: pulumi.Input[str], table_name: pulumi.Input[str]) -> None:
        """With auth: the sweeper and its schedule (``handlers.sweeper``), which close
        connections whose token has expired and that nothing else touches."""
        self.sweep_rule: aws.cloudwatch.EventRule | None = None
        if not self._args.auth_enabled:
            return
        subscriptions_arn = self.subscriptions_table.arn
        stage_arn = self.stage.execution_arn
        function = self._create_function(
            "sweeper",
            lambda logs: pulumi.Output.all(table_arn, subscriptions_arn, stage_arn).apply(
                lambda a: policies.sweeper_policy(logs, a[0], a[1], a[2])
            ),
            {
                "CONNECTIONS_TABLE": table_name,
                "SUBSCRIPTIONS_TABLE": self.subscriptions_table.name,
                "MANAGEMENT_ENDPOINT": self.management_endpoint,
            },
            timeout=60,
        )
        self.sweep_rule = aws.cloudwatch.EventRule(
            self._n("sweep"),
            schedule_expression=SWEEP_SCHEDULE,
            description=f"realtime-channel {self._channel}: close expired idle connections",
            tags=self._tags(),
            opts=self._child(),
        )
        aws.cloudwatch.EventTarget(
            self._n("sweep-target"),
            rule=self.sweep_rule.name,
            arn=function.arn,
            opts=self._child(),
        )
        aws.lambda_.Permission(
            self._n("sweeper-invoke"),
            action="lambda:InvokeFunction",
            function=function.name,
            principal="events.amazonaws.com",
            source_arn=self.sweep_rule.arn,
            opts=self._child(),
        )

    def _allow_invoke(self, kind: str, source_arn: pulumi.Input[str]) -> aws.lambda_.Permission:
        return aws.lambda_.Permission(
            self._n(f"{kind}-invoke"),
            action="lambda:InvokeFunction",
            function=self.functions[kind].name,
            principal="apigateway.amazonaws.com",
            source_arn=source_arn,
            opts=self._child(),
        )

    def _create_routes(self) -> None:
        self.authorizer: aws.apigatewayv2.Authorizer | None = None
        if "authorizer" in self.functions:
            # No identity source: API Gateway invokes a WebSocket REQUEST authorizer only when
            # every declared source is present, and the token may come in the query string
            # or in Sec-WebSocket-Protocol (handlers.signin reads both). No result TTL either:
            # WebSocket authorizers cache nothing, and API Gateway refuses the setting
            # ("AuthorizerResultTtlInSeconds cannot be set for WEBSOCKET protocol Apis").
            self.authorizer = aws.apigatewayv2.Authorizer(
                self._n("token-authorizer"),
                api_id=self.api.id,
                authorizer_type="REQUEST",
                authorizer_uri=self.functions["authorizer"].invoke_arn,
                opts=self._child(),
            )
            authorizer_id = self.authorizer.id
            self._allow_invoke(
                "authorizer",
                pulumi.Output.concat(self.api.execution_arn, "/authorizers/", authorizer_id),
            )
        self.routes: dict[str, aws.apigatewayv2.Route] = {}
        for route_key, kind in (
            ("$connect", "connect"),
            ("$disconnect", "disconnect"),
            ("$default", "default"),
        ):
            integration = aws.apigatewayv2.Integration(
                self._n(f"{kind}-integration"),
                api_id=self.api.id,
                integration_type="AWS_PROXY",
                integration_method="POST",
                integration_uri=self.functions[kind].invoke_arn,
                opts=self._child(),
            )
            protected = route_key == "$connect" and self.authorizer is not None
            self.routes[route_key] = aws.apigatewayv2.Route(
                self._n(f"{kind}-route"),
                api_id=self.api.id,
                route_key=route_key,
                target=integration.id.apply(lambda i: f"integrations/{i}"),
                authorization_type="CUSTOM" if protected else "NONE",
                authorizer_id=self.authorizer.id if protected and self.authorizer else None,
                opts=self._child(),
            )
            self._allow_invoke(
                kind,
                # the stage's real name: a transforms.stage rename must keep this invocable
                pulumi.Output.concat(self.api.execution_arn, "/", self.stage.name, "/", route_key),
            )

    def _create_alarms(self) -> None:
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        if not self._args.alarms:
            return
        actions: list[pulumi.Input[str]] = []
        if self._args.alarm_topic_arn is not None:
            actions.append(self._args.alarm_topic_arn)
        elif self._args.alarm_email:
            # Unencrypted on purpose: CloudWatch cannot publish to a topic encrypted with
            # alias/aws/sns (its key policy cannot grant cloudwatch.amazonaws.com), so alarms
            # would never arrive. Notifications carry alarm names, states and metric values,
            # no item data or secret; a customer managed key would cost a key and a policy per
            # stack to guard that. Need one? Pass alarm_topic_arn of a topic you encrypt.
            topic = aws.sns.Topic(
                self._n("alarms"),
                tags=self._tags(),
                opts=self._child(),
            )
            aws.sns.TopicSubscription(
                self._n("alarms-email"),
                topic=topic.arn,
                protocol="email",
                endpoint=self._args.alarm_email,
                opts=self._child(),
            )
            actions.append(topic.arn)
        broadcaster = self.functions["broadcaster"].name
        common: dict[str, Any] = {
            "alarm_actions": actions,
            "ok_actions": actions,
            "treat_missing_data": "notBreaching",
            "comparison_operator": "GreaterThanThreshold",
            "tags": self._tags(),
            "opts": self._child(),
        }
        self.alarms["iterator_age"] = aws.cloudwatch.MetricAlarm(
            self._n("iterator-age-alarm"),
            alarm_description="Broadcaster falls behind its streams (IteratorAge)",
            namespace="AWS/Lambda",
            metric_name="IteratorAge",
            dimensions={"FunctionName": broadcaster},
            statistic="Maximum",
            period=60,
            evaluation_periods=5,
            threshold=self._args.iterator_age_alarm_ms,
            **common,
        )
        self.alarms["errors"] = aws.cloudwatch.MetricAlarm(
            self._n("broadcaster-errors-alarm"),
            alarm_description="Broadcaster invocations fail",
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": broadcaster},
            statistic="Sum",
            period=300,
            evaluation_periods=1,
            threshold=0,
            **common,
        )
        if self.fanout_queue is not None and self.fanout_dead_letter_queue is not None:
            self._create_fanout_alarms(common)
        self.alarms["dead_letters"] = aws.cloudwatch.MetricAlarm(
            self._n("dlq-depth-alarm"),
            alarm_description="Stream batches reached the dead-letter queue",
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": self.dead_letter_queue.name},
            statistic="Maximum",
            period=300,
            evaluation_periods=1,
            threshold=0,
            **common,
        )

    def _create_fanout_alarms(self, common: dict[str, Any]) -> None:
        """Queued fan-out: jobs waiting too long, senders failing, jobs dead-lettered."""
        assert self.fanout_queue is not None and self.fanout_dead_letter_queue is not None
        self.alarms["fanout_age"] = aws.cloudwatch.MetricAlarm(
            self._n("fanout-age-alarm"),
            alarm_description="Delivery jobs wait too long for a sender (queue age)",
            namespace="AWS/SQS",
            metric_name="ApproximateAgeOfOldestMessage",
            dimensions={"QueueName": self.fanout_queue.name},
            statistic="Maximum",
            period=60,
            evaluation_periods=3,
            threshold=self._args.fanout_age_alarm_seconds,
            **common,
        )
        self.alarms["sender_errors"] = aws.cloudwatch.MetricAlarm(
            self._n("sender-errors-alarm"),
            alarm_description="Sender invocations fail",
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": self.functions["sender"].name},
            statistic="Sum",
            period=300,
            evaluation_periods=1,
            threshold=0,
            **common,
        )
        self.alarms["fanout_dead_letters"] = aws.cloudwatch.MetricAlarm(
            self._n("fanout-dlq-depth-alarm"),
            alarm_description="Delivery jobs reached the fan-out dead-letter queue",
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": self.fanout_dead_letter_queue.name},
            statistic="Maximum",
            period=300,
            evaluation_periods=1,
            threshold=0,
            **common,
        )

    def _create_custom_domain(self) -> None:
        """The regional domain name, the stage's mapping, the certificate when asked for, and
        the Route 53 records when a zone is given (``custom_domain``)."""
        self.domain_name = self.api_mapping = self.certificate = None
        self.dns_records = {}
        domain = self._args.custom_domain
        if domain is None:
            return
        zone = self._args.hosted_zone_id
        certificate_arn = self._args.certificate_arn
        if certificate_arn is None:
            assert zone is not None  # normalize_args: one of the two
            certificate_arn = self._request_certificate(domain, zone)
        args = aws.apigatewayv2.DomainNameArgs(
            domain_name=domain,
            domain_name_configuration=aws.apigatewayv2.DomainNameDomainNameConfigurationArgs(
                certificate_arn=certificate_arn,
                endpoint_type="REGIONAL",
                security_policy="TLS_1_2",
            ),
            tags=self._tags(),
        )
        args = self._transform(self._args.transforms.domain_name, args)
        self.domain_name = aws.apigatewayv2.DomainName(self._n("domain"), args, self._child())
        mapping = aws.apigatewayv2.ApiMappingArgs(
            api_id=self.api.id,
            domain_name=self.domain_name.domain_name,
            stage=self.stage.name,
            api_mapping_key=self._args.custom_domain_path,
        )
        mapping = self._transform(self._args.transforms.api_mapping, mapping)
        self.api_mapping = aws.apigatewayv2.ApiMapping(
            self._n("domain-mapping"), mapping, self._child()
        )
        if zone is not None:
            target = self.domain_name.domain_name_configuration
            record = aws.route53.RecordArgs(
                zone_id=zone,
                name=domain,
                type="A",
                aliases=[
                    aws.route53.RecordAliasArgs(
                        name=target.target_domain_name,
                        zone_id=target.hosted_zone_id,
                        evaluate_target_health=False,
                    )
                ],
            )
            record = self._transform(self._args.transforms.dns_record, record, "alias")
            self.dns_records["alias"] = aws.route53.Record(
                self._n("domain-alias"), record, self._child()
            )

    def _request_certificate(self, domain: str, zone: pulumi.Input[str]) -> pulumi.Output[str]:
        """An ACM certificate for ``domain`` validated through ``zone``; its ARN once valid."""
        args = aws.acm.CertificateArgs(
            domain_name=domain, validation_method="DNS", tags=self._tags()
        )
        args = self._transform(self._args.transforms.certificate, args)
        self.certificate = aws.acm.Certificate(self._n("certificate"), args, self._child())
        option = self.certificate.domain_validation_options.apply(lambda options: options[0])
        record = aws.route53.RecordArgs(
            zone_id=zone,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=300,
            allow_overwrite=True,
        )
        record = self._transform(self._args.transforms.dns_record, record, "validation")
        self.dns_records["validation"] = aws.route53.Record(
            self._n("certificate-validation"), record, self._child()
        )
        validation = aws.acm.CertificateValidation(
            self._n("certificate-valid"),
            certificate_arn=self.certificate.arn,
            validation_record_fqdns=[self.dns_records["validation"].fqdn],
            opts=self._child(),
        )
        return validation.certificate_arn

    def _export_outputs(self) -> None:
        self.execute_api_url = self.stage.invoke_url
        self.url = self.execute_api_url
        self.custom_domain_target = pulumi.Output.from_input("")
        if self.domain_name is not None:
            path = self._args.custom_domain_path
            self.url = self.domain_name.domain_name.apply(
                lambda name: f"wss://{name}" + (f"/{path}" if path else "")
            )
            self.custom_domain_target = (
                self.domain_name.domain_name_configuration.target_domain_name.apply(
                    lambda target: target or ""
                )
            )
        self.connections_table_name = self.connections_table.name
        self.subscriptions_table_name = self.subscriptions_table.name
        self.replay_table_name = (
            self.replay_table.name
            if self.replay_table is not None
            else pulumi.Output.from_input("")
        )
        self.api_id = self.api.id
        self.stage_name = self.stage.name
        self.dead_letter_queue_url = self.dead_letter_queue.url
        self.fanout_queue_url = (
            self.fanout_queue.url if self.fanout_queue is not None else pulumi.Output.from_input("")
        )
        self.function_names = pulumi.Output.all(
            **{kind: function.name for kind, function in self.functions.items()}
        )

    # -- sources ---------------------------------------------------------------------------

    def _seal(self) -> None:
        self._sources_sealed = True

    def _sources(self) -> pulumi.Output[dict[str, Any]]:
        """label -> SOURCES entry of every source, built once the program body has run, so
        ``attach`` after the constructor counts. An apply callback runs only when the event
        loop gets control, which is after the synchronous program body; from then on
        ``attach`` refuses (see there)."""
        if self._sealed_sources is None:

            def seal(_: Any) -> pulumi.Output[dict[str, Any]]:
                self._seal()
                # Output.all() of no keywords is a list: a channel without sources has {}
                if not self._source_entries:
                    return pulumi.Output.from_input({})
                return pulumi.Output.all(**self._source_entries)

            self._sealed_sources = pulumi.Output.from_input(None).apply(seal)
        return self._sealed_sources

    def _sources_variable(
        self, kind: str, others: dict[str, pulumi.Input[str]]
    ) -> pulumi.Output[str]:
        """A function's SOURCES, checked with its other variables against Lambda's 4 KB."""
        return pulumi.Output.all(self._sources(), pulumi.Output.all(**others)).apply(
            lambda a: self._checked_sources(kind, a[0], a[1])
        )

    def _identity_claims(self) -> pulumi.Output[str]:
        """The authorizer's IDENTITY_CLAIMS: every claim any source's rules read, sorted,
        built late like SOURCES (rules are plain data, so it is known at preview)."""

        def claims(_: Any) -> str:
            self._seal()
            names: set[str] = set()
            for rules in self._source_rules.values():
                names |= claims_named(parse_rules(rules))
            return ",".join(sorted(names))

        return pulumi.Output.from_input(None).apply(claims)

    def _checked_sources(
        self, kind: str, entries: dict[str, dict[str, Any]], others: dict[str, str]
    ) -> str:
        value = sources_variable(entries)
        size = environment_size({**others, "SOURCES": value})
        if size > LAMBDA_ENVIRONMENT_LIMIT:
            raise SourceError(
                f"RealtimeChannel {self._channel!r}: the {kind} function's environment would be"
                f" {size} bytes with SOURCES for {len(entries)} sources, over Lambda's"
                f" {LAMBDA_ENVIRONMENT_LIMIT}: use shorter source names or table names, fewer"
                " or shorter access rules or source filters, or split the sources across two"
                " channels"
            )
        return value

    def _check_sources_size(self, label: str) -> None:
        """Before deploy (preview too): SOURCES, with autonamed tables at their likely length
        and the access rules and source filters as written, must leave room for the
        functions' other variables."""
        estimate = environment_size({"SOURCES": sources_variable(self._source_hints)})
        room = LAMBDA_ENVIRONMENT_LIMIT - OTHER_BROADCASTER_VARIABLES
        if estimate > room:
            raise SourceError(
                f"RealtimeChannel {self._channel!r}, source {label!r}: the functions' SOURCES"
                f" variable would take about {estimate} bytes, over the {room} their 4 KB"
                " environment leaves for it: use shorter source names or table names, fewer"
                " or shorter access rules or source filters, or split the sources across two"
                " channels"
            )

    def _described(
        self,
        source: StreamSource,
        table_name: str,
        rules: list[dict[str, Any]],
        description: tuple[Any, Any, Any, Any, Any],
    ) -> tuple[list[list[str]], bool]:
        """Check a source's table as described (stream, view type, key schema) against what
        the channel needs of it; return (key schema, whether it streams old images)."""
        stream_enabled, view_type, hash_key, range_key, attributes = description
        where = where_of(self._channel, source)
        sort_key_unknown = range_key is SORT_KEY_UNKNOWN
        if sort_key_unknown:
            range_key = None
        check_stream(table_name, stream_enabled, view_type)
        try:
            lambda_patterns(source.filters, old_image=view_type == "NEW_AND_OLD_IMAGES")
        except SourceError as bad:
            raise SourceError(f"{where}: {bad}") from None
        if self._args.target_attribute:
            check_old_image(
                where,
                table_name,
                view_type,
                f"target_attribute {self._args.target_attribute!r} (row-level control: a"
                " change of owner tells the previous owner removed)",
            )
        keys = key_schema(where, table_name, hash_key, range_key, attributes)
        key_names = [name for name, _ in keys]
        if sort_key_unknown:
            # A preview that does not know yet whether the table has a sort key: check that
            # rules name the partition key; any other key attribute may be the sort key
            # (the deploy checks exactly).
            key_names += sorted(
                {name for rule in rules for name in rule.get("key") or {}} - {key_names[0]}
            )
        check_access(
            self._channel, source, auth_enabled=self._args.auth_enabled, key_names=key_names
        )
        return keys, view_type == "NEW_AND_OLD_IMAGES"

    def _checked_stream(
        self, source: StreamSource, rules: list[dict[str, Any]]
    ) -> tuple[Any, Any, pulumi.Output[dict[str, Any]]]:
        """(table ARN, stream ARN, SOURCES entry) of a source, failing (at preview too) if it
        lacks a stream with new images, or its rules do not fit its key schema."""
        table = source.table
        if isinstance(table, str):
            found = aws.dynamodb.get_table_output(
                name=table, opts=pulumi.InvokeOutputOptions(parent=self)
            )

            def check_found(result: Any) -> Any:
                keys, old_image = self._described(
                    source,
                    table,
                    rules,
                    (
                        result.stream_enabled,
                        result.stream_view_type,
                        result.hash_key,
                        result.range_key,
                        result.attributes,
                    ),
                )
                filters = broadcaster_filters(source.filters, old_image=old_image)
                return result, source_entry(table, keys, old_image, rules, filters)

            checked = found.apply(check_found)
            return (
                checked.apply(lambda c: c[0].arn),
                checked.apply(lambda c: c[0].stream_arn),
                checked.apply(lambda c: c[1]),
            )
        logical = table._name
        # A table without a sort key has a null range_key, which a preview (of mocks, or of
        # a sort key computed from another resource) may show as unknown: check the rest.
        range_key = table.range_key.apply(
            lambda r: SORT_KEY_UNKNOWN if isinstance(r, pulumi.output.Unknown) else r,
            run_with_unknowns=True,
        )
        described = pulumi.Output.all(
            table.stream_enabled,
            table.stream_view_type,
            table.hash_key,
            range_key,
            table.attributes,
        ).apply(lambda a: self._described(source, logical, rules, (a[0], a[1], a[2], a[3], a[4])))
        stream_arn = pulumi.Output.all(described, table.stream_arn).apply(lambda a: a[1])
        entry = pulumi.Output.all(described, table.name).apply(
            lambda a: source_entry(
                a[1],
                a[0][0],
                a[0][1],
                rules,
                broadcaster_filters(source.filters, old_image=a[0][1]),
            )
        )
        return table.arn, stream_arn, entry

    def attach(self, source: StreamSource) -> aws.lambda_.EventSourceMapping:
        """Broadcast the changes of another table through this channel.

        Call it while the program body runs (after the constructor is fine), not inside an
        ``apply``: by then the functions' SOURCES variable is built.
        """
        check_source(self._channel, source, auth_enabled=self._args.auth_enabled)
        label = label_of(source)
        if self._sources_sealed:
            raise SourceError(
                f"RealtimeChannel {self._channel!r}, source {label!r}: attach() must be called"
                " while the program runs, not inside an apply (the functions' SOURCES is"
                " already built)"
            )
        key = (
            ("name", source.table)
            if isinstance(source.table, str)
            else ("resource", source.table._name)
        )
        if label in self.event_source_mappings or key in self._source_keys:
            raise SourceError(
                f"RealtimeChannel {self._channel!r}: source {label!r} is attached twice"
            )
        rules = check_access(self._channel, source, auth_enabled=self._args.auth_enabled)
        hint = (
            source.table if isinstance(source.table, str) else source.table._name + AUTONAME_SUFFIX
        )
        self._source_hints[label] = source_entry(
            hint, ESTIMATED_KEYS, True, rules, broadcaster_filters(source.filters, old_image=True)
        )
        try:
            self._check_sources_size(label)
        except SourceError:
            del self._source_hints[label]
            raise
        self._source_keys.add(key)
        self._source_rules[label] = rules
        table_arn, stream_arn, entry = self._checked_stream(source, rules)
        self._source_entries[label] = entry
        read = aws.iam.RolePolicy(
            self._n(f"source-{label}-read"),
            role=self._roles["broadcaster"].id,
            policy=pulumi.Output.all(table_arn, stream_arn, source.kms_key_arn).apply(
                lambda a: policies.stream_read_policy(a[0], a[1], a[2])
            ),
            opts=self._child(),
        )
        aws.iam.RolePolicy(
            self._n(f"source-{label}-snapshots"),
            role=self._roles["default"].id,
            policy=pulumi.Output.all(table_arn, source.kms_key_arn).apply(
                lambda a: policies.snapshot_read_policy(a[0], a[1])
            ),
            opts=self._child(),
        )
        filters = None
        if source.filters:
            # on a NEW_AND_OLD_IMAGES stream a new_image filter is matched on both images
            # (checked against Lambda's 5 with the stream, in _described)
            filters = aws.lambda_.EventSourceMappingFilterCriteriaArgs(
                filters=entry.apply(
                    lambda e: [
                        aws.lambda_.EventSourceMappingFilterCriteriaFilterArgs(pattern=pattern)
                        for pattern in lambda_patterns(source.filters, old_image=e["oldImage"])
                    ]
                )
            )
        args = aws.lambda_.EventSourceMappingArgs(
            event_source_arn=stream_arn,
            function_name=self.functions["broadcaster"].arn,
            starting_position="LATEST",
            batch_size=source.batch_size,
            maximum_batching_window_in_seconds=source.batching_window_seconds,
            bisect_batch_on_function_error=source.bisect_on_error,
            maximum_retry_attempts=source.maximum_retry_attempts,
            maximum_record_age_in_seconds=source.maximum_record_age_seconds,
            parallelization_factor=source.parallelization_factor,
            function_response_types=["ReportBatchItemFailures"],
            destination_config=aws.lambda_.EventSourceMappingDestinationConfigArgs(
                on_failure=aws.lambda_.EventSourceMappingDestinationConfigOnFailureArgs(
                    destination_arn=self.dead_letter_queue.arn
                )
            ),
            filter_criteria=filters,
            enabled=source.enabled,
            tags=self._tags(source=label),
        )
        args = self._transform(self._args.transforms.event_source_mapping, args, label)
        mapping = aws.lambda_.EventSourceMapping(
            self._n(f"source-{label}"),
            args,
            self._child(depends_on=[read, self._role_policies["broadcaster"]]),
        )
        self.event_source_mappings[label] = mapping
        return mapping
