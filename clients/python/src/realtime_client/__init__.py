"""realtime_client: the Python (asyncio) client of realtime-channel.

    async with connect("ws://127.0.0.1:8080/dev", token=get_token) as client:
        async for change in client.subscribe("events"):
            print(change.kind, change.keys, change.data)

Reconnects with full-jitter backoff, resumes every subscription from its cursor,
de-duplicates by change id, keeps the socket alive (ping), reconnects before the server's
2-hour cut without a gap, and refreshes the token before it expires (``auth``).
"""

from realtime_client.backoff import full_jitter
from realtime_client.client import (
    Client,
    ConnectFactory,
    Options,
    Runtime,
    Subscription,
    TokenSource,
    Transport,
    connect,
    with_token,
)
from realtime_client.dedup import SeenWindow
from realtime_client.events import (
    AUTH_TIMEOUT,
    CALLBACK_FAILED,
    CLOSED,
    CONNECT_FAILED,
    GAVE_UP,
    HEARTBEAT_TIMEOUT,
    INVALID_MESSAGE,
    RESET,
    TOKEN_FAILED,
    TOKEN_NOT_EXTENDED,
    Change,
    Kind,
    Origin,
    RealtimeError,
    Reset,
    State,
)
from realtime_client.tokens import token_expiry
from realtime_client.view import View

__version__ = "0.1.0"

__all__ = [
    "AUTH_TIMEOUT",
    "CALLBACK_FAILED",
    "CLOSED",
    "CONNECT_FAILED",
    "GAVE_UP",
    "HEARTBEAT_TIMEOUT",
    "INVALID_MESSAGE",
    "RESET",
    "TOKEN_FAILED",
    "TOKEN_NOT_EXTENDED",
    "Change",
    "Client",
    "ConnectFactory",
    "Kind",
    "Options",
    "Origin",
    "RealtimeError",
    "Reset",
    "Runtime",
    "SeenWindow",
    "State",
    "Subscription",
    "TokenSource",
    "Transport",
    "View",
    "connect",
    "full_jitter",
    "token_expiry",
    "with_token",
]
