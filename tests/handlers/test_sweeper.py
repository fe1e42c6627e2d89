"""The sweep with moto: idle connections whose token has expired are closed; the others stay."""

from __future__ import annotations

import time
from typing import Any

import pytest

from bench.management_api import FakeManagementApi
from handlers import aws
from handlers.config import sweeper_config
from handlers.connections import connection_item
from handlers.management import ManagementApi, frozen_credentials
from handlers.subscriptions import read_connection
from handlers.sweeper import expired_connections, sweep
from tests.handlers.test_broadcaster import subscribe
from tests.helpers import create_subscriptions_table, subscription_items, topic_version

CONNECTIONS = "connections-test"


@pytest.fixture
def tables(dynamodb: Any, connections_table: str) -> Any:
    create_subscriptions_table(dynamodb, "subscriptions-test")
    return dynamodb


def settings(endpoint: str, **env: str) -> Any:
    return sweeper_config(
        {
            "CONNECTIONS_TABLE": CONNECTIONS,
            "SUBSCRIPTIONS_TABLE": "subscriptions-test",
            "MANAGEMENT_ENDPOINT": endpoint,
            **env,
        }
    )


def add(client: Any, cid: str, expires_at: int | None, age: float = 3600) -> None:
    item = connection_item(
        cid,
        user_id="u-" + cid,
        now=time.time() - age,
        ttl_seconds=7200,
        source_ip=None,
        expires_at=expires_at,
    )
    client.put_item(TableName=CONNECTIONS, Item=item)


def api_of(server: FakeManagementApi) -> ManagementApi:
    return ManagementApi(
        server.endpoint, region="us-east-1", credentials=frozen_credentials(aws.session())
    )


def test_expired_connections_are_read_by_minute_from_the_index(tables: Any) -> None:
    now = 1_795_000_000.0
    add(tables, "EXPIRED=", int(now) - 90)
    add(tables, "JUST=", int(now))
    add(tables, "LATER=", int(now) + 30)  # same minute or the next, not yet expired
    add(tables, "ANCIENT=", int(now) - 3600)  # past the lookback: an earlier run's
    add(tables, "FOREVER=", None)  # no token: never in the index
    found = sorted(expired_connections(tables, CONNECTIONS, now, lookback=15))
    assert found == ["EXPIRED=", "JUST="]


def test_the_sweep_closes_idle_expired_connections_and_leaves_the_others(
    tables: Any, management_api: FakeManagementApi
) -> None:
    now = time.time()
    for cid, expires in (("OLD=", int(now) - 5), ("NEW=", int(now) + 600), ("ANON=", None)):
        add(tables, cid, expires)
        management_api.connect(cid)

    stats = sweep(tables, api_of(management_api), settings(management_api.endpoint), now)

    assert (stats.found, stats.closed, stats.gone, stats.failed) == (1, 1, 0, 0)
    assert management_api.state.known == {"NEW=", "ANON="}  # OLD= was deleted


def test_a_connection_api_gateway_no_longer_knows_loses_its_record_and_subscriptions(
    tables: Any, management_api: FakeManagementApi
) -> None:
    now = time.time()
    add(tables, "GHOST=", int(now) - 5)
    topic = subscribe(tables, "GHOST=", "s1")
    add(tables, "YOUNG=", int(now) - 5, age=1)  # still in $connect: its record stays

    stats = sweep(tables, api_of(management_api), settings(management_api.endpoint), now)

    assert (stats.found, stats.gone) == (2, 2)
    with pytest.raises(LookupError):
        read_connection(tables, CONNECTIONS, "GHOST=")
    assert subscription_items(tables, "subscriptions-test") == []
    assert topic_version(tables, "subscriptions-test", topic) == 2  # subscribed, then removed
    assert read_connection(tables, CONNECTIONS, "YOUNG=").expires_at == int(now) - 5


def test_a_run_closes_at_most_its_bound_and_the_rest_wait(
    tables: Any, management_api: FakeManagementApi
) -> None:
    now = time.time()
    for n in range(5):
        add(tables, f"C{n}=", int(now) - 5)
        management_api.connect(f"C{n}=")
    bounded = settings(management_api.endpoint, SWEEP_MAX_CLOSES="3")

    first = sweep(tables, api_of(management_api), bounded, now)

    assert (first.closed, first.left) == (3, 2)
    assert len(management_api.state.known & {f"C{n}=" for n in range(5)}) == 2
