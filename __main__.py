"""The stack program: config -> source table -> RealtimeChannel -> exports."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components import AccessRule, RealtimeChannel, stack_config

settings = stack_config.load()

# Who may subscribe: sourceAccess when set; else the demo table lets any signed-in user
# subscribe to the whole table or any partition, and an existing table accepts no one.
DEMO_ACCESS = [AccessRule(table=True)]

source_name = settings.get("sourceTableName")
if source_name:
    if settings.access is None:
        pulumi.log.warn(
            f"realtime-channel:sourceAccess is not set, so table {source_name!r} accepts no"
            " subscription (default deny): set it to a JSON list of access rules, e.g."
            """ '[{"key": {"PK": "USER#{sub}"}}]' (see the README)"""
        )
    source = settings.source(source_name, access=settings.access or [])
else:
    events = aws.dynamodb.Table(
        "events",
        billing_mode="PAY_PER_REQUEST",
        hash_key="PK",
        range_key="SK",
        attributes=[
            aws.dynamodb.TableAttributeArgs(name="PK", type="S"),
            aws.dynamodb.TableAttributeArgs(name="SK", type="S"),
        ],
        stream_enabled=True,
        stream_view_type="NEW_AND_OLD_IMAGES",
        server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
        point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(
            enabled=settings.get("pointInTimeRecovery")
        ),
        deletion_protection_enabled=settings.get("deletionProtection"),
        tags={"realtime-channel": "demo"},
    )
    source = settings.source(
        events, name="events", access=DEMO_ACCESS if settings.access is None else settings.access
    )
    source_name = events.name

channel = RealtimeChannel("realtime", settings.channel_args([source]))

pulumi.export("url", channel.url)
pulumi.export("executeApiUrl", channel.execute_api_url)
pulumi.export("customDomainTarget", channel.custom_domain_target)
pulumi.export("managementEndpoint", channel.management_endpoint)
pulumi.export("connectionsTableName", channel.connections_table_name)
pulumi.export("subscriptionsTableName", channel.subscriptions_table_name)
pulumi.export("replayTableName", channel.replay_table_name)
pulumi.export("apiId", channel.api_id)
pulumi.export("stageName", channel.stage_name)
pulumi.export("deadLetterQueueUrl", channel.dead_letter_queue_url)
pulumi.export("fanoutQueueUrl", channel.fanout_queue_url)
pulumi.export("functionNames", channel.function_names)
pulumi.export("sourceTableName", source_name)
if channel.token_secret_parameter is not None:
    # where backends read the token secret to mint tokens (SecureString, see the README)
    pulumi.export("tokenSecretParameter", channel.token_secret_parameter.name)
