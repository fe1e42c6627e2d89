"""Infrastructure of realtime-channel: the ``RealtimeChannel`` component and its pure helpers."""

from components.realtime_channel import (
    RealtimeChannel,
    RealtimeChannelArgs,
    RealtimeChannelTransforms,
)
from components.sources import AccessRule, SourceFilter, StreamSource

__all__ = [
    "AccessRule",
    "RealtimeChannel",
    "RealtimeChannelArgs",
    "RealtimeChannelTransforms",
    "SourceFilter",
    "StreamSource",
]
