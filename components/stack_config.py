"""The stack program's configuration, read in one place with explicit defaults.

Pulumi mocks (tests, the emulator) do not apply the defaults written in
``Pulumi.yaml``, so every default is repeated here, and a test checks that the
two agree. Errors name the configuration key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

import pulumi

from components.realtime_channel import RealtimeChannelArgs, normalize_args
from components.sources import SourceError, StreamSource, check_access, check_source, where_of

PROJECT = "realtime-channel"
_ARGUMENT = re.compile(r"': (\w+) ")

# key -> (type, default, RealtimeChannelArgs / StreamSource field or None)
KEYS: dict[str, tuple[type, Any, str | None]] = {
    "stageName": (str, "dev", "stage_name"),
    "authEnabled": (bool, True, "auth_enabled"),
    "tokenSecret": (str, "", "token_secret"),
    "tokenMaxLifetimeSeconds": (int, 86400, "token_max_lifetime_seconds"),
    "authMode": (str, "hmac", "auth_mode"),
    "jwtIssuer": (str, "", "jwt_issuer"),
    "jwtJwksUrl": (str, "", "jwt_jwks_url"),
    "jwtAudiences": (list, [], "jwt_audiences"),
    "jwtAlgorithms": (list, ["RS256", "ES256"], "jwt_algorithms"),
    "jwtRequiredClaims": (str, "", "jwt_required_claims"),
    "jwtRequiredScopes": (list, [], "jwt_required_scopes"),
    "jwtClaims": (str, "", "jwt_claims"),
    "jwtClockSkewSeconds": (int, 60, "jwt_clock_skew_seconds"),
    "jwtJwksMaxAgeSeconds": (int, 3600, "jwt_jwks_max_age_seconds"),
    "jwtJwksRefreshSeconds": (int, 60, "jwt_jwks_refresh_seconds"),
    "connectionTtlSeconds": (int, 7200, "connection_ttl_seconds"),
    "maxSubscriptions": (int, 20, "max_subscriptions"),
    "tableTopicBuckets": (int, 4, "table_topic_buckets"),
    "replayRetentionSeconds": (int, 3600, "replay_retention_seconds"),
    "replayMaxChanges": (int, 5000, "replay_max_changes"),
    "sourceTableName": (str, "", None),
    "sourceAccess": (str, "", None),
    "targetAttribute": (str, "", "target_attribute"),
    "includeOldImage": (bool, False, "include_old_image"),
    "logRetentionDays": (int, 14, "log_retention_days"),
    "accessLogs": (bool, True, "access_logs"),
    "manageApiGatewayAccount": (bool, True, "manage_api_gateway_account"),
    "throttlingBurstLimit": (int, 500, "throttling_burst_limit"),
    "throttlingRateLimit": (int, 1000, "throttling_rate_limit"),
    "pointInTimeRecovery": (bool, False, "point_in_time_recovery"),
    "deletionProtection": (bool, False, "deletion_protection"),
    "memorySize": (int, 256, "memory_size"),
    "broadcasterMemorySize": (int, 1769, "broadcaster_memory_size"),
    "broadcasterTimeoutSeconds": (int, 60, "broadcaster_timeout_seconds"),
    "sendConcurrency": (int, 64, "send_concurrency"),
    "queuedFanout": (bool, True, "queued_fanout"),
    "fanoutThreshold": (int, 100, "fanout_threshold"),
    "fanoutGroups": (int, 32, "fanout_groups"),
    "fanoutSlice": (int, 500, "fanout_slice"),
    "deliveryBudget": (int, 9000, "delivery_budget"),
    "senderRate": (int, 500, "sender_rate"),
    "senderMemorySize": (int, 1024, "sender_memory_size"),
    "senderTimeoutSeconds": (int, 30, "sender_timeout_seconds"),
    "fanoutAgeAlarmSeconds": (int, 30, "fanout_age_alarm_seconds"),
    "batchSize": (int, 100, "batch_size"),
    "batchingWindowSeconds": (int, 0, "batching_window_seconds"),
    "maxRetryAttempts": (int, 3, "maximum_retry_attempts"),
    "maxRecordAgeSeconds": (int, 3600, "maximum_record_age_seconds"),
    "alarms": (bool, False, "alarms"),
    "alarmTopicArn": (str, "", "alarm_topic_arn"),
    "alarmEmail": (str, "", "alarm_email"),
    "iteratorAgeAlarmMs": (int, 60000, "iterator_age_alarm_ms"),
    "customDomain": (str, "", "custom_domain"),
    "customDomainPath": (str, "", "custom_domain_path"),
    "certificateArn": (str, "", "certificate_arn"),
    "hostedZoneId": (str, "", "hosted_zone_id"),
}
OPTIONAL_TEXT = (
    "target_attribute",
    "alarm_email",
    "alarm_topic_arn",
    "custom_domain",
    "custom_domain_path",
    "certificate_arn",
    "hosted_zone_id",
)
"""Text arguments whose config value ``""`` means unset (None)."""
SOURCE_FIELDS = (
    "batch_size",
    "batching_window_seconds",
    "maximum_retry_attempts",
    "maximum_record_age_seconds",
)


class ConfigError(ValueError):
    """A configuration value the program cannot use; the message names the key."""


ACCESS_EXAMPLE = (
    '[{"key": {"PK": "USER#{sub}"}}, {"table": true, "when": {"claims.role": "admin"}}]'
)


@dataclass(frozen=True)
class StackSettings:
    values: dict[str, Any]
    token_secret: pulumi.Output[str] | None
    access: list[Any] | None = None
    """``sourceAccess`` parsed: the source's access rules as JSON objects; None when unset."""

    def get(self, key: str) -> Any:
        return self.values[key]

    def channel_args(self, sources: list[StreamSource]) -> RealtimeChannelArgs:
        fields = {
            field: self.values[key]
            for key, (_, _, field) in KEYS.items()
            if field and field not in SOURCE_FIELDS and key != "tokenSecret"
        }
        for optional in OPTIONAL_TEXT:
            fields[optional] = fields[optional] or None
        fields["throttling_rate_limit"] = float(fields["throttling_rate_limit"])
        fields["jwt_issuer"] = fields["jwt_issuer"] or None
        fields["jwt_jwks_url"] = fields["jwt_jwks_url"] or None
        fields["jwt_audiences"] = tuple(fields["jwt_audiences"])
        fields["jwt_algorithms"] = tuple(fields["jwt_algorithms"])
        fields["jwt_required_scopes"] = tuple(fields["jwt_required_scopes"])
        fields["jwt_required_claims"] = _json_object(
            "jwtRequiredClaims", REQUIRED_CLAIMS_EXAMPLE, fields["jwt_required_claims"]
        )
        fields["jwt_claims"] = _json_object("jwtClaims", CLAIMS_EXAMPLE, fields["jwt_claims"])
        return RealtimeChannelArgs(sources=sources, token_secret=self.token_secret, **fields)

    def source(self, table: Any, name: str | None = None, access: Any = ()) -> StreamSource:
        return StreamSource(
            table=table,
            name=name,
            access=access,
            **{
                field: self.values[key]
                for key, (_, _, field) in KEYS.items()
                if field in SOURCE_FIELDS
            },
        )


REQUIRED_CLAIMS_EXAMPLE = '{"token_use": "access"}'
CLAIMS_EXAMPLE = '{"groups": "cognito:groups"}'


def _json_object(key: str, example: str, raw: str) -> dict[str, Any]:
    """A key holding a JSON object as text (Pulumi.yaml cannot type an object); empty: {}."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ConfigError(f"{PROJECT}:{key}: must be a JSON object, such as {example}")
    return parsed


def _strings(key: str, raw: str) -> list[str]:
    """A list key: a JSON list of strings, or (as ``--config`` in the emulator gives it)
    comma-separated text."""
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = [part.strip() for part in raw.split(",") if part.strip()]
    if not isinstance(parsed, list) or not all(isinstance(v, str) and v for v in parsed):
        raise ConfigError(
            f"{PROJECT}:{key}: must be a list of non-empty strings, e.g."
            f' pulumi config set --path "{key}[0]" VALUE'
        )
    return parsed


def _read(config: pulumi.Config, key: str, kind: type, default: Any) -> Any:
    value: Any
    try:
        if kind is list:
            raw = config.get(key)
            return list(default) if raw is None else _strings(key, raw)
        if kind is bool:
            value = config.get_bool(key)
        elif kind is int:
            value = config.get_int(key)
        else:
            value = config.get(key)
    except pulumi.ConfigTypeError as bad:
        raise ConfigError(f"{PROJECT}:{key}: {bad}") from None
    return default if value is None else value


def _access(raw: str) -> list[Any] | None:
    """``sourceAccess``: a JSON list of rule objects (a string: Pulumi.yaml cannot type a list
    of objects); empty means unset."""
    if not raw.strip():
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, list):
        raise ConfigError(
            f"{PROJECT}:sourceAccess: must be a JSON list of access rules, such as {ACCESS_EXAMPLE}"
        )
    return parsed


def load(config: pulumi.Config | None = None) -> StackSettings:
    """Read and validate every key; raise ``ConfigError`` naming the first bad one."""
    config = config or pulumi.Config(PROJECT)
    values = {
        key: _read(config, key, kind, default)
        for key, (kind, default, _) in KEYS.items()
        if key != "tokenSecret"
    }
    if values["alarms"] and not values["alarmTopicArn"] and not values["alarmEmail"]:
        raise ConfigError(
            f"{PROJECT}:alarms is true but the alarms have nowhere to go: set"
            f" {PROJECT}:alarmTopicArn (an SNS topic ARN) or {PROJECT}:alarmEmail"
        )
    token = config.get_secret("tokenSecret")
    access = _access(values["sourceAccess"])
    settings = StackSettings(values, token, access)
    source = settings.source(values["sourceTableName"] or "events", access=access or ())
    try:
        check_access("config", source, auth_enabled=values["authEnabled"])
    except SourceError as bad:
        why = str(bad).removeprefix(where_of("config", source) + ": ")
        raise ConfigError(f"{PROJECT}:sourceAccess: {why}") from None
    by_field = {field: key for key, (_, _, field) in KEYS.items() if field}
    placeholder = "secret-checked-at-deploy" if token is not None else None
    try:
        normalize_args("config", replace(settings.channel_args([]), token_secret=placeholder))
        check_source("config", settings.source(values["sourceTableName"] or "events"))
    except (ValueError, SourceError) as bad:
        message = str(bad)
        found = _ARGUMENT.search(message)
        key = by_field.get(found.group(1)) if found else None
        if key is None:
            raise ConfigError(message) from None
        raise ConfigError(f"{PROJECT}:{key}: {message}") from None
    return settings
