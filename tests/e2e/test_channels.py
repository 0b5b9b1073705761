"""Channels (issue 12, protocol.md §8) on the real engine with two gateway processes, driven
by raw WebSocket clients: the relay 1:1 in order on one process and across two (the test
finds which gateway accepted each socket from the kernel's socket tables), either end
first, 404 before the upgrade, a taken end closed, writer close and reader loss, 10 MB
across processes, back-pressure, and kill -9 of the process holding one end.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Iterator

import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.harness import Engine, running_engine
from tests.wsclient import RawClient, ok

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine(gateway_processes=2) as eng:
        yield eng


def gateway_pids(eng: Engine) -> dict[int, str]:
    return {p["pid"]: p["name"] for p in eng.status() if p["name"].startswith("gateway")}


def create(eng: Engine, buffer_size: object = None) -> dict:
    with RawClient.worker(eng.url) as w:
        return ok(w.call("engine::channels::create", {"buffer_size": buffer_size}))


def url(eng: Engine, ref: dict, direction: str | None = None, key: str | None = None) -> str:
    return (f"{eng.url.rstrip('/')}/ws/channels/{ref['channel_id']}?key={key or ref['access_key']}"
            f"&dir={direction or ref['direction']}")


def owner(sock: ClientConnection, pids: dict[int, str]) -> int:
    """The gateway pid that accepted ``sock`` (its end of our TCP connection)."""
    port = sock.socket.getsockname()[1]
    for _ in range(50):
        for pid in pids:
            if any(c.raddr and c.raddr.port == port for c in psutil.Process(pid).net_connections("tcp")):
                return pid
        time.sleep(0.02)
    raise AssertionError(f"no gateway holds the socket from port {port}")


def pair(eng: Engine, across: bool, buffer_size: object = None,
         reader_first: bool = False) -> tuple[ClientConnection, ClientConnection, int, int]:
    """A channel's (writer, reader) sockets on one gateway or on two, and their pids."""
    pids = gateway_pids(eng)
    for _ in range(40):
        refs = create(eng, buffer_size)
        order = ("reader", "writer") if reader_first else ("writer", "reader")
        socks = {name: connect(url(eng, refs[name]), max_size=None) for name in order}
        wp, rp = owner(socks["writer"], pids), owner(socks["reader"], pids)
        if (wp != rp) == across:
            return socks["writer"], socks["reader"], wp, rp
        socks["writer"].close()
        socks["reader"].close()
    raise AssertionError("the kernel never spread the sockets as wanted")


def read_to_end(sock: ClientConnection, timeout: float = 10.0) -> tuple[list, object]:
    got = []
    try:
        while True:
            got.append(sock.recv(timeout=timeout))
    except ConnectionClosed as exc:
        return got, exc.rcvd


@pytest.mark.parametrize("across", [False, True], ids=["one-process", "two-processes"])
def test_frames_are_relayed_one_to_one_in_order_then_the_reader_is_closed(engine: Engine, across: bool) -> None:
    writer, reader, _, _ = pair(engine, across, buffer_size=4)
    sent = [f"text {i}" if i % 3 == 0 else bytes([i]) * (i * 9173 % 200_000) for i in range(60)]
    for item in sent:
        writer.send(item)
    writer.close()
    got, close = read_to_end(reader)
    assert [type(g) for g in got] == [type(s) for s in sent]  # text stays text, binary binary
    assert got == sent  # never merged, never split
    assert close is not None and close.code == 1000


@pytest.mark.parametrize("across", [False, True], ids=["one-process", "two-processes"])
def test_the_reader_may_attach_first(engine: Engine, across: bool) -> None:
    writer, reader, _, _ = pair(engine, across, reader_first=True)
    writer.send(b"\x00\x01")
    writer.send("{\"type\":\"set_status\",\"status_code\":201}")
    writer.close()
    assert read_to_end(reader)[0] == [b"\x00\x01", "{\"type\":\"set_status\",\"status_code\":201}"]


def test_ten_megabytes_in_64_kib_chunks_across_processes(engine: Engine) -> None:
    writer, reader, wp, rp = pair(engine, across=True)
    assert wp != rp
    chunk = os.urandom(64 * 1024)
    total = 10 * 1024 * 1024
    feeder = threading.Thread(target=lambda: ([writer.send(chunk) for _ in range(total // len(chunk))],
                                              writer.close()))
    feeder.start()
    got, _ = read_to_end(reader, timeout=30)
    feeder.join(10)
    assert sum(len(g) for g in got) == total and all(g == chunk for g in got)


def test_unknown_id_wrong_key_and_wrong_dir_are_404_before_the_upgrade(engine: Engine) -> None:
    refs = create(engine)
    bad = [url(engine, refs["reader"], key="00000000-0000-4000-8000-000000000000"),
           url(engine, refs["reader"], direction="sideways"),
           url(engine, dict(refs["reader"], channel_id="5f0e0b51-7b8c-4f55-9d6e-3f1f0c2a9b11")),
           url(engine, dict(refs["reader"], channel_id="not-a-uuid"))]
    for u in bad:
        with pytest.raises(InvalidStatus) as err:
            connect(u)
        assert err.value.response.status_code == 404, u
        assert b"Channel not found" in err.value.response.body
    with connect(url(engine, refs["writer"])) as writer, connect(url(engine, refs["reader"])) as reader:
        writer.send("still fine")
        assert reader.recv(timeout=5) == "still fine"


@pytest.mark.parametrize("across", [False, True], ids=["one-process", "two-processes"])
def test_a_second_socket_for_a_taken_end_is_upgraded_then_closed(engine: Engine, across: bool) -> None:
    writer, reader, _, _ = pair(engine, across)
    refs_url = reader.request.path
    second = connect(f"{engine.url.rstrip('/')}{refs_url}")  # upgraded: no InvalidStatus
    with pytest.raises(ConnectionClosed):
        second.recv(timeout=5)
    writer.send(b"for the first reader")
    assert reader.recv(timeout=5) == b"for the first reader"
    writer.close()
    reader.close()


@pytest.mark.parametrize("across", [False, True], ids=["one-process", "two-processes"])
def test_a_reader_gone_mid_stream_closes_the_writer(engine: Engine, across: bool) -> None:
    writer, reader, _, _ = pair(engine, across, buffer_size=2)
    writer.send(b"one")
    assert reader.recv(timeout=5) == b"one"
    reader.close()
    with pytest.raises(ConnectionClosed):
        for _ in range(1000):  # the engine closes the writer: sends start failing
            writer.send(b"x" * 1024)
            time.sleep(0.01)
        writer.recv(timeout=5)


def test_a_stalled_reader_stops_the_writer_with_memory_bounded(engine: Engine) -> None:
    writer, reader, wp, rp = pair(engine, across=True, buffer_size=8)
    procs = [psutil.Process(wp), psutil.Process(rp)]
    before = sum(p.memory_info().rss for p in procs)
    writer.socket.settimeout(2.0)
    chunk = b"y" * (64 * 1024)
    sent = 0
    try:
        while sent < 4000:  # 250 MiB if nothing pushed back
            writer.protocol.send_binary(chunk)
            writer.socket.sendall(b"".join(writer.protocol.data_to_send()))
            sent += 1
    except (TimeoutError, OSError):
        pass
    grown = sum(p.memory_info().rss for p in procs) - before
    assert sent < 1000, f"{sent} chunks accepted while the reader read nothing"
    assert grown < 48 * 1024 * 1024, grown
    n = 0
    while n < 3:
        assert reader.recv(timeout=5) == chunk
        n += 1
    reader.close()


def test_kill_9_of_the_process_holding_one_end_closes_the_other(engine: Engine) -> None:
    writer, reader, wp, rp = pair(engine, across=True)
    writer.send(b"before")
    assert reader.recv(timeout=5) == b"before"
    os.kill(rp, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(ConnectionClosed):
        writer.recv(timeout=5)
    assert time.monotonic() - t0 < 1.5
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(gateway_pids(engine)) < 2:
        time.sleep(0.1)
    leftovers = [n for n in os.listdir("/dev/shm") if f"-{rp}-" in n]
    assert leftovers == []


@pytest.mark.parametrize("across", [False, True], ids=["one-process", "two-processes"])
def test_thousands_of_small_messages_never_stall_the_relay(engine: Engine, across: bool) -> None:
    # writer and reader tasks once shared one wake-up event and cleared it for each other:
    # the relay hung after a few hundred 1 KiB messages
    writer, reader, _, _ = pair(engine, across, buffer_size=64)
    feeder = threading.Thread(target=lambda: ([writer.send(b"m" * 1024) for _ in range(5000)], writer.close()))
    feeder.start()
    got, close = read_to_end(reader, timeout=10)
    feeder.join(10)
    assert len(got) == 5000 and close is not None and close.code == 1000


@pytest.mark.parametrize("buffer_size", [0, -3, 5000, "many", 2.5])
def test_an_out_of_range_buffer_size_is_clamped_not_refused(engine: Engine, buffer_size: object) -> None:
    refs = create(engine, buffer_size)
    assert refs["writer"]["direction"] == "write" and refs["reader"]["direction"] == "read"
    with connect(url(engine, refs["writer"])) as writer, connect(url(engine, refs["reader"])) as reader:
        writer.send(b"a")
        writer.send(b"b")
        assert [reader.recv(timeout=5), reader.recv(timeout=5)] == [b"a", b"b"]


def test_a_writer_that_closes_before_the_reader_comes_still_delivers(engine: Engine) -> None:
    refs = create(engine, 8)
    with connect(url(engine, refs["writer"])) as writer:
        for i in range(5):
            writer.send(f"early {i}")
    with connect(url(engine, refs["reader"])) as reader:
        assert read_to_end(reader)[0] == [f"early {i}" for i in range(5)]
