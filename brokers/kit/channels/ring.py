"""A single-producer, single-consumer record ring over a shared buffer: its layout and its ends.

One ring carries the channel messages one engine process sends to another (one ring per
direction of a pair of processes, shared by all their channels). This module knows only
bytes in a buffer: no file, no loop, no clock; ``segment.py`` maps the buffer from
``/dev/shm``, a test hands it a ``bytearray``.

Layout (native-endian 64-bit words, each on a cache line of its own, so that the two
processes do not write the same line):

    0     MAGIC                    8     capacity of the data area (a power of two)
    64    head: bytes ever written (the producer's)
    128   tail: bytes ever consumed (the consumer's)
    192   sleeps: times the consumer went idle (the consumer's)
    256   waits: times the producer found the ring full (the producer's)
    4096  the data area

A record is a 24-byte header ``<length u32><kind u8><flags u8><pad 2><channel 16 bytes>``
followed by its bytes, padded to 8. A header never wraps: when fewer than 24 bytes are
left before the end of the data area, both ends skip to its start (each computes it from
the positions). A message's bytes may wrap; a message larger than ``max_record`` travels
as several records, all but the last flagged ``MORE`` (the reader joins them: a relay
never splits or merges what a writer sent).

Invariants: every word has one writer; the producer publishes ``head`` only after the
record is written and the consumer frees space (``tail``) only after copying it out, and
x86's ordering of stores (and of loads) is what makes that visible in that order to the
other process. Idle and full are told with counters, never flags both sides write: the
consumer bumps ``sleeps`` before it waits, the producer bumps ``waits`` when it is full,
and each side wakes the other (a bus notice, ``hub.py``) once per bump it has seen.
Between bumping a counter and re-reading the other side's position each side runs
``fence()``: without a full barrier both could miss the other's store (the store-buffer
race of Dekker's algorithm), and a notice would be lost.
"""
from __future__ import annotations

import struct
import threading

MAGIC = 0x31_474E_4952_4949  # b"IIIRING1", read as a little-endian word
DATA_AT = 4096
_HEAD, _TAIL, _SLEEPS, _WAITS, _CAP, _MAGIC = 8, 16, 24, 32, 1, 0  # word indexes
HEADER = struct.Struct("=IBB2x16s")
HDR = HEADER.size  # 24
MORE = 1
"""Record flag: the message goes on in the next record."""

_fence_lock = threading.Lock()


def fence() -> None:
    """A full memory barrier: a lock's acquire is a locked instruction on x86."""
    _fence_lock.acquire()
    _fence_lock.release()


def segment_size(capacity: int) -> int:
    """Bytes of a segment holding a ring of ``capacity`` (a power of two, at least 4 KiB)."""
    if capacity < 4096 or capacity & (capacity - 1):
        raise ValueError(f"ring capacity must be a power of two >= 4096, not {capacity}")
    return DATA_AT + capacity


def _pad(n: int) -> int:
    return (n + 7) & ~7


class _End:
    def __init__(self, buf) -> None:
        mv = memoryview(buf)
        self.words = mv[:DATA_AT].cast("Q")
        self.data = mv[DATA_AT:]
        self.cap = len(self.data)
        self.mask = self.cap - 1

    def release(self) -> None:
        """Drop the views (an mmap cannot close while they exist)."""
        self.words.release()
        self.data.release()


def init(buf, capacity: int) -> None:
    """Lay out a fresh ring in ``buf`` (zeroed, ``segment_size(capacity)`` long)."""
    words = memoryview(buf)[:DATA_AT].cast("Q")
    words[_CAP] = capacity
    words[_MAGIC] = MAGIC
    words.release()


class RingWriter(_End):
    """The producer's end."""

    def __init__(self, buf) -> None:
        super().__init__(buf)
        self.max_record = max(HDR + 8, self.cap // 4) - HDR
        """The most bytes one record carries: a quarter of the ring, so that records of
        a long message pipeline through it instead of waiting for it to empty."""
        self._woken = self.words[_SLEEPS]
        self._need = 0

    def free(self) -> int:
        return self.cap - (self.words[_HEAD] - self.words[_TAIL])

    def put(self, channel: bytes, kind: int, data, flags: int = 0) -> bool:
        """Write one record of at most ``max_record`` bytes; False when it does not fit."""
        n = len(data)
        w = self.words
        head = w[_HEAD]
        off = head & self.mask
        skip = self.cap - off if self.cap - off < HDR else 0
        need = skip + HDR + _pad(n)
        if need > self.cap - (head - w[_TAIL]):
            self._need = need
            return False
        if skip:
            off = 0
        HEADER.pack_into(self.data, off, n, kind, flags, channel)
        start = off + HDR
        end = start + n
        if end <= self.cap:
            self.data[start:end] = data
        else:  # the bytes wrap around the end of the data area
            first = self.cap - start
            mv = memoryview(data)
            self.data[start:] = mv[:first]
            self.data[:n - first] = mv[first:]
        w[_HEAD] = head + need  # published last: the consumer reads nothing before this
        return True

    def wanted(self) -> bool:
        """Whether the consumer went idle since it was last woken (send it a notice now)."""
        fence()
        sleeps = self.words[_SLEEPS]
        if sleeps == self._woken:
            return False
        self._woken = sleeps
        return True

    def stall(self) -> bool:
        """After a ``put`` that did not fit: ask the consumer for a notice once it has made
        room. False when the room is there already (put again now)."""
        w = self.words
        w[_WAITS] += 1
        fence()
        return self.cap - (w[_HEAD] - w[_TAIL]) < self._need


class RingReader(_End):
    """The consumer's end."""

    def __init__(self, buf) -> None:
        super().__init__(buf)
        if self.words[_MAGIC] != MAGIC or self.words[_CAP] != self.cap:
            raise ValueError("not a ring segment")
        self._answered = self.words[_WAITS]

    def get(self) -> tuple[bytes, int, int, bytes] | None:
        """The next record as ``(channel, kind, flags, data)``, or None when empty."""
        w = self.words
        tail = w[_TAIL]
        if tail == w[_HEAD]:
            return None
        off = tail & self.mask
        skip = self.cap - off if self.cap - off < HDR else 0
        if skip:
            off = 0
        n, kind, flags, channel = HEADER.unpack_from(self.data, off)
        start = off + HDR
        end = start + n
        if end <= self.cap:
            data = bytes(self.data[start:end])
        else:
            data = bytes(self.data[start:]) + bytes(self.data[:end - self.cap])
        w[_TAIL] = tail + skip + HDR + _pad(n)  # after the copy: the producer may reuse it
        return channel, kind, flags, data

    def idle(self) -> bool:
        """Say we are going idle; False when a record arrived meanwhile (read on)."""
        w = self.words
        w[_SLEEPS] += 1
        fence()
        return w[_TAIL] == w[_HEAD]

    def producer_waits(self) -> bool:
        """Whether the producer found the ring full since we last answered (send it a notice)."""
        fence()
        waits = self.words[_WAITS]
        if waits == self._answered:
            return False
        self._answered = waits
        return True
