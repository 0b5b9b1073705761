"""The SDK's WebSocket connection: websockets 17's asyncio client with a direct frame path.

Why not ``async for message in ws`` and ``await ws.send(text)``: the first wakes a reader
task per message (through websockets' assembler queue), the second does one socket write
per frame; at 16 calls in flight those dominated the SDK's CPU (py-spy: ``send_data`` was
27-45 % of the GIL-holding samples). Here complete data messages go to ``on_message``
straight from ``data_received`` (``process_event``), ``on_batch`` runs once after each
read, and ``write_frames`` puts a whole batch of frames into one ``transport.write``.

Invariants: the handshake, pings/pongs, close and fragmented-message reassembly stay
websockets' (control frames and the handshake response go to the base class); messages are
delivered in arrival order and whole (fragments are joined before ``on_message``), and
none before ``attach`` (``workerregistered`` may arrive with the handshake response, before
the shell has started the connection's protocol state: it is kept until then);
``write_frames`` only writes while the protocol is OPEN and the transport is not paused
(flow control), otherwise it reports that the caller must wait (``drain``) and retry.
"""
from __future__ import annotations

from typing import Any, Callable

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import State


class SdkConnection(ClientConnection):
    def __init__(self, *args: Any, on_batch: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._early: list[bytes] = []
        self.on_message: Callable[[bytes], None] = self._early.append
        self.on_batch = on_batch
        self._parts: list[bytes] = []

    def attach(self, on_message: Callable[[bytes], None]) -> None:
        """Start delivering; messages that arrived before (with the handshake) go first."""
        early, self._early = self._early, []
        self.on_message = on_message
        for data in early:
            on_message(data)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.on_batch()  # answers to every message of this read leave in one write

    def process_event(self, event: Any) -> None:
        if self.response is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake response
            return
        op = event.opcode
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if event.fin:
                self.on_message(event.data)
            else:
                self._parts = [event.data]
        elif op is Opcode.CONT:
            self._parts.append(event.data)
            if event.fin:
                data, self._parts = b"".join(self._parts), []
                self.on_message(data)
        else:
            super().process_event(event)  # PING / PONG / CLOSE

    def can_write(self) -> bool:
        return self.protocol.state is State.OPEN and not self.paused

    def write_frames(self, frames: list[str]) -> int:
        """Send ``frames`` as text messages in one write; returns how many were taken.

        Takes none when the connection cannot write now (closing, or paused by flow control).
        """
        if not self.can_write():
            return 0
        protocol = self.protocol
        taken = 0
        try:
            for text in frames:
                protocol.send_text(text.encode())
                taken += 1
        except InvalidState:  # closing meanwhile: the rest is the caller's to keep
            pass
        chunks = protocol.data_to_send()
        data = b"".join(chunks)
        if data:
            self.transport.write(data)
        if b"" in chunks:  # end of stream after a close frame: as ``send_data`` does
            if self.transport.can_write_eof():
                self.transport.write_eof()
            else:
                self.transport.close()
        return taken
