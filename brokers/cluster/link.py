"""The cross-host link: the bus's frames over ZeroMQ TCP between engine hosts' cluster processes.

A ``Bus`` without ipc (``brokers.kit.bus``): its ROUTER is bound on this host's address and
receives ``[sender host, header, body]``; each other host is a remote peer (routing id: this
host's id) dialled at the address its directory entry advertises. Frames for a host whose
address is unknown are dropped and logged by the bus.
"""
from __future__ import annotations

from brokers.kit.bus import Bus, FrameHandler


class Link(Bus):
    """This host's end of the cluster's TCP mesh."""

    def __init__(self, host: str, bind: str, on_frame: FrameHandler) -> None:
        super().__init__(host, "", on_frame)
        self._bind = bind
        self.address: str | None = None
        """The endpoint actually bound (``tcp://host:port``), known after ``start``."""

    def start(self) -> None:
        self.address = self.bind_tcp(self._bind)
        super().start()
