"""Channels (``iii.channels``): the official Python SDK's names, from ``sdk.channels`` and
``sdk.channel_refs``. Importing this loads the SDK (websockets), still no engine module."""
from __future__ import annotations

from sdk.channel_refs import (
    MAX_FRAME_SIZE, ChannelDirection, ChannelItem, StreamChannelRef, build_channel_url,
)
from sdk.channels import Channel, ChannelReader, ChannelWriter, ReadableStream, WritableStream
from sdk.options import resolve_headers

__all__ = [
    "MAX_FRAME_SIZE", "Channel", "ChannelDirection", "ChannelItem", "ChannelReader", "ChannelWriter",
    "ReadableStream", "StreamChannelRef", "WritableStream", "build_channel_url", "resolve_headers",
]
