"""Free functions over a worker (``iii.helpers``), as in the official Python SDK:
``create_channel(iii, buffer_size=None)`` and ``create_channel_async``, and the ref helpers.
Importing this loads the SDK (websockets), still no engine module."""
from __future__ import annotations

from sdk.channel_refs import ChannelDirection, ChannelItem, extract_channel_refs, is_channel_ref
from sdk.channels import Channel, create_channel, create_channel_async

__all__ = [
    "Channel", "ChannelDirection", "ChannelItem", "create_channel", "create_channel_async",
    "extract_channel_refs", "is_channel_ref",
]
