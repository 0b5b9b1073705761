"""sd_notify on a real unix datagram socket as ``$NOTIFY_SOCKET`` (a path, and the
abstract namespace ``@name``): what is sent, the no-ops, never an exception, and the
watchdog (every half ``$WATCHDOG_USEC``, only for the pid ``$WATCHDOG_PID`` names)."""
from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid

import pytest

from brokers.kit import notify


def _receiver(abstract: bool) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"iii-test-notify-{uuid.uuid4().hex[:8]}"
        sock.bind("\0" + name)
        value = "@" + name
    else:
        value = os.path.join(tempfile.mkdtemp(prefix="iii-", dir="/tmp"), "notify.sock")
        sock.bind(value)
    sock.settimeout(2.0)
    return sock, value


@pytest.fixture(params=["path", "abstract"])
def listener(request, monkeypatch):
    sock, value = _receiver(request.param == "abstract")
    for name in notify.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    yield sock
    sock.close()
    if not value.startswith("@"):
        os.unlink(value)
        os.rmdir(os.path.dirname(value))


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock`` (after the first, which it waits for)."""
    out = [sock.recv(4096).decode()]
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
    return out


def test_ready_stopping_watchdog(listener):
    assert notify.ready() is True
    assert notify.stopping() is True
    assert notify.watchdog() is True
    assert notify.ready("serving") is True
    assert received(listener) == ["READY=1", "STOPPING=1", "WATCHDOG=1",
                                  "READY=1\nSTATUS=serving"]


def test_no_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    assert notify.notify("READY=1", {}) is False
    assert notify.watchdog_interval({"WATCHDOG_USEC": "1000000"}) is None


@pytest.mark.parametrize("value", ["/nonexistent/dir/notify.sock", "@iii-nobody-listens-here",
                                   "relative.sock", "vsock:2:1234", "", "@" + "x" * 200,
                                   "/bad\0path"])
def test_a_bad_or_dead_socket_never_raises(value):
    assert notify.notify("READY=1", {"NOTIFY_SOCKET": value}) is False


def test_a_socket_that_is_not_a_datagram_one_never_raises():
    path = os.path.join(tempfile.mkdtemp(prefix="iii-", dir="/tmp"), "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream:
        stream.bind(path)
        stream.listen(1)
        assert notify.notify("READY=1", {"NOTIFY_SOCKET": path}) is False
    os.unlink(path)


def test_watchdog_interval_is_half_of_watchdog_usec():
    base = {"NOTIFY_SOCKET": "@x"}
    assert notify.watchdog_interval({**base, "WATCHDOG_USEC": "10000000"}) == 5.0
    assert notify.watchdog_interval({**base, "WATCHDOG_USEC": "10000000",
                                     "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert notify.watchdog_interval({**base, "WATCHDOG_USEC": "10000000",
                                     "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    for bad in ("", "x", "0", "-5"):
        assert notify.watchdog_interval({**base, "WATCHDOG_USEC": bad}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "10000000"}) is None


async def test_the_watchdog_pings_on_the_loop_every_half_interval(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping every 0.1 s
    dog = notify.Watchdog().start()
    assert dog.enabled and dog.interval == pytest.approx(0.1)
    await asyncio.sleep(0.35)
    dog.stop()
    await asyncio.sleep(0.15)  # none after stop
    pings = received(listener)
    assert set(pings) == {"WATCHDOG=1"}
    assert 3 <= len(pings) <= 5, pings


async def test_no_watchdog_asked_no_ping(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # the watchdog is pid 1's, not ours
    dog = notify.Watchdog().start()
    assert not dog.enabled
    await asyncio.sleep(0.15)
    dog.stop()
    notify.ready()
    assert received(listener) == ["READY=1"]


def test_beat_for_a_poll_loop(listener, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    dog = notify.Watchdog()
    assert dog.beat(100.0) == 101.0
    assert dog.beat(100.5) == 101.0  # not due: no ping
    assert dog.beat(101.0) == 102.0
    assert received(listener) == ["WATCHDOG=1", "WATCHDOG=1"]
    assert notify.Watchdog({}).beat(5.0) is None


def test_child_env_strips_the_notify_variables():
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin"}
    assert notify.child_env(env) == {"PATH": "/bin"}
