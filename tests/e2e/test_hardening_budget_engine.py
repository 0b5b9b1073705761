"""Issue 11, item 1, on the real engine: what one worker can make the gateway hold.

- a callee that never reads gets calls refused with ``callee_overloaded`` once its send
  budget is full, while other workers' calls go on;
- a peer that completes the handshake and then never reads nor answers pings is closed
  within the ping deadline (ping interval + ping timeout + close timeout);
- a worker whose budget stays full is closed with 1008 after ``send_stall_close_ms``;
- a caller that never reads its answers is no longer read (TCP back-pressure) instead of
  growing the gateway;
- a worker that sends more than ``max_held_bytes`` before its namespace is fixed is closed;
- the slow consumer of the issue: 50,000 void calls of 16 KiB at a non-reading callee keep
  the gateway's RSS growth under 3 x the budget + 48 MiB, and a bystander's p99 under 10x
  its idle p99 (``test_slow_consumer``; perf's ``slow_consumer`` row measures the same).

Non-reading peers are raw TCP sockets driven by websockets' sans-I/O client (handshake,
masked frames), with a small SO_RCVBUF so that the kernel absorbs little of what is sent.
"""
from __future__ import annotations

import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from typing import Any

import orjson
import psutil
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.uri import parse_uri

from tests.harness import running_engine
from tests.wsclient import RawClient, declare_frame, fid

MiB = 1024 * 1024
CONFIG = """\
engine:
  runtime_dir: {runtime_dir}
  data_dir: {data_dir}
workers:
  - name: iii-worker-manager
    config:
      host: 127.0.0.1
      port: {port}
"""


def config(**gateway: Any) -> str:
    return CONFIG + "".join(f"      {k}: {v}\n" for k, v in gateway.items())


class StuckPeer:
    """Handshake, send what it is told, never read again (so it never answers a ping)."""

    def __init__(self, url: str, rcvbuf: int = 4096) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # no autotuning
        uri = parse_uri(url)
        self.sock.connect((uri.host, uri.port))
        self.proto = ClientProtocol(uri, max_size=None)
        self.proto.send_request(self.proto.connect())
        self._flush()
        while self.proto.state is State.CONNECTING:
            self.proto.receive_data(self.sock.recv(4096))
        assert self.proto.state is State.OPEN, self.proto.handshake_exc

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, frame: dict[str, Any]) -> None:
        self.proto.send_text(orjson.dumps(frame))
        self._flush()

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.proto.data_to_send()))

    def close(self) -> None:
        self.sock.close()


def held_by(gateway_pid: int, client_port: int) -> bool:
    """Whether the gateway still has the TCP connection of a client's local port."""
    return any(c.raddr and c.raddr.port == client_port
               for c in psutil.Process(gateway_pid).net_connections(kind="tcp"))


def wait_until(pred, within: float, step: float = 0.05) -> float | None:
    """Seconds until ``pred()`` held, or None after ``within``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def routed(caller: RawClient, function_id: str, within: float = 8.0) -> None:
    """Until a call to ``function_id`` is not ``function_not_found`` (its callee may never
    answer: a call that gets no answer within 0.3 s was delivered)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        inv = str(uuid.uuid4())
        caller.send({"type": "invokefunction", "function_id": function_id, "invocation_id": inv, "data": {}})
        try:
            res = caller.recv_until(lambda f: f.get("invocation_id") == inv, 0.3)
        except TimeoutError:
            return
        if (res.get("error") or {}).get("code") != "function_not_found":
            return
        time.sleep(0.05)
    raise AssertionError(f"{function_id} never routed")


def stuck_callee(url: str, function_id: str) -> StuckPeer:
    peer = StuckPeer(url)
    peer.send(declare_frame("stuck-callee"))
    peer.send({"type": "registerfunction", "id": function_id})
    return peer


def echo_worker(url: str, function_id: str) -> tuple[RawClient, threading.Thread]:
    """A worker answering every call to ``function_id`` with its data, on a thread."""
    w = RawClient.declared(url, "echo")
    w.register_function(function_id)

    def serve() -> None:
        try:
            while True:
                inv = w.ws.recv()
                frame = orjson.loads(inv)
                if frame.get("type") == "invokefunction" and frame.get("invocation_id"):
                    w.answer(frame, frame.get("data"))
        except (ConnectionClosed, OSError):
            pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return w, t


def overloaded(caller: RawClient, function_id: str) -> dict:
    res = caller.call(function_id, {}, timeout=5)
    return res.get("error") or {}


def test_a_callee_that_does_not_read_gets_calls_refused_others_unaffected() -> None:
    with running_engine(config_text=config(send_budget_bytes=MiB)) as eng:
        slow, ok = fid("slow::f"), fid("ok::f")
        with RawClient.declared(eng.url, "caller") as caller:
            peer = stuck_callee(eng.url, slow)
            echo, _ = echo_worker(eng.url, ok)
            routed(caller, slow)
            blob = "x" * (64 * 1024)
            for _ in range(300):  # 19 MiB: kernel buffers (~4 MiB), then the 1 MiB budget
                caller.send({"type": "invokefunction", "function_id": slow, "data": {"b": blob},
                             "action": {"type": "void"}})
            seen = wait_until(lambda: overloaded(caller, slow).get("code") == "callee_overloaded", 10, 0.1)
            assert seen is not None, "calls to a non-reading callee were never refused"
            err = overloaded(caller, slow)
            assert err["code"] == "callee_overloaded" and "budget" in err["message"], err
            assert caller.call(ok, {"n": 1}, timeout=5)["result"] == {"n": 1, "_caller_worker_id": caller.worker_id}
            with RawClient.declared(eng.url, "other") as other:
                assert other.call(ok, {"n": 2}, timeout=5).get("error") is None
            assert held_by(eng.pid("gateway"), peer.port)  # refused, not closed (yet)
            peer.close()
            echo.close()
        assert "is not keeping up" in eng.log_tail()


def test_a_dead_peer_is_closed_within_the_ping_deadline() -> None:
    with running_engine(config_text=config(ping_interval_ms=500, ping_timeout_ms=500,
                                           close_timeout_ms=500)) as eng:
        gw = eng.pid("gateway")
        with RawClient.declared(eng.url, "alive") as alive:  # websockets answers pings itself
            peer = StuckPeer(eng.url)
            assert held_by(gw, peer.port)
            took = wait_until(lambda: not held_by(gw, peer.port), 6)
            assert took is not None, "a peer that answers no ping was kept"
            assert took < 0.5 + 0.5 + 0.5 + 1.0, took  # interval + timeout + close timeout + slack
            assert alive.is_open
            assert alive.call("engine::functions::list", {}, timeout=5).get("error") is None
            peer.close()


def test_a_worker_whose_budget_stays_full_is_closed_with_1008() -> None:
    with running_engine(config_text=config(send_budget_bytes=MiB, send_stall_close_ms=1000,
                                           close_timeout_ms=500)) as eng:
        slow = fid("slow::f")
        with RawClient.declared(eng.url, "caller") as caller:
            peer = stuck_callee(eng.url, slow)
            routed(caller, slow)
            for _ in range(300):
                caller.send({"type": "invokefunction", "function_id": slow, "data": {"b": "x" * 65536},
                             "action": {"type": "void"}})
            gw = eng.pid("gateway")
            assert wait_until(lambda: not held_by(gw, peer.port), 10) is not None, "a stalled worker was kept"
            assert "(1008)" in eng.log_tail() and "for 1 s" in eng.log_tail()
            res = caller.call(slow, {}, timeout=5)  # its functions went with it
            assert res["error"]["code"] == "function_not_found", res
            peer.close()


def test_a_caller_that_does_not_read_its_answers_is_not_read() -> None:
    budget = MiB
    with running_engine(config_text=config(send_budget_bytes=budget)) as eng:
        ok = fid("ok::f")
        echo, _ = echo_worker(eng.url, ok)
        with RawClient.declared(eng.url, "probe") as probe:
            routed(probe, ok)
        gw = psutil.Process(eng.pid("gateway"))
        rss0 = gw.memory_info().rss
        peer = StuckPeer(eng.url)
        peer.send(declare_frame("deaf-caller"))
        call = {"type": "invokefunction", "function_id": ok, "data": {"b": "x" * 65536}}
        sent = {"n": 0}

        def flood() -> None:  # blocks in sendall once the gateway stops reading it
            try:
                for n in range(3000):  # 190 MiB of calls, each answered with as much
                    peer.send({**call, "invocation_id": str(n)})
                    sent["n"] = n + 1
            except OSError:
                pass

        threading.Thread(target=flood, daemon=True).start()
        time.sleep(3)
        assert sent["n"] < 3000, "the gateway kept reading a caller that reads none of its answers"
        grown = (gw.memory_info().rss - rss0) / MiB
        assert grown < 3 * budget / MiB + 48, f"gateway grew {grown:.0f} MiB"
        with RawClient.declared(eng.url, "other") as other:  # everyone else goes on
            # the echo worker may still be draining calls the flood sent before the caller was
            # paused: that is callee_overloaded for a moment (by design), then the call goes through
            deadline = time.monotonic() + 15
            while (err := other.call(ok, {"n": 1}, timeout=5).get("error")) is not None:
                assert err["code"] == "callee_overloaded" and time.monotonic() < deadline, err
                time.sleep(0.2)
        peer.close()
        echo.close()


def test_too_much_before_the_namespace_is_fixed_closes_the_worker() -> None:
    # A long grace: under load the 5 s default could fix the namespace before all is sent.
    text = "registration_namespace_grace_ms: 60000\n" + config(max_held_bytes=256 * 1024)
    with running_engine(config_text=text) as eng:
        w = RawClient.worker(eng.url)  # never declares: its registrations are held (§4.4)
        try:
            with pytest.raises(ConnectionClosed) as closed:
                for n in range(100):  # 800 KiB
                    w.send({"type": "registerfunction", "id": f"held::f{n}", "description": "d" * 8192})
                while True:
                    w.ws.recv(timeout=20)  # generous: the close is what counts
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        finally:
            w.close()
        assert "max_held_bytes" in eng.log_tail()


FLOOD = textwrap.dedent("""
    import socket, sys, orjson
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri
    url, fn, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    uri = parse_uri(url)
    sock = socket.create_connection((uri.host, uri.port))
    proto = ClientProtocol(uri, max_size=None)
    proto.send_request(proto.connect())
    sock.sendall(b"".join(proto.data_to_send()))
    while proto.state is State.CONNECTING:
        proto.receive_data(sock.recv(65536))
    proto.send_text(orjson.dumps({"type": "invokefunction", "function_id": "engine::workers::register",
                                  "action": {"type": "void"}, "data": {"runtime": "python", "name": "flood"}}))
    sock.sendall(b"".join(proto.data_to_send()))
    # One masked frame sent over and over: the flood costs this process next to nothing, so
    # the bystander measures the gateway, not a load generator on the same two cores.
    proto.send_text(orjson.dumps({"type": "invokefunction", "function_id": fn, "data": {"b": "x" * size},
                                  "action": {"type": "void"}}))
    batch = b"".join(proto.data_to_send()) * 64
    for _ in range(count // 64):
        sock.sendall(batch)
    sock.sendall(batch[: len(batch) // 64 * (count % 64)])
    print("sent", count, flush=True)
    sys.stdin.read()  # stay connected until told
""")


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99)]


def bystander_latencies(client: RawClient, function_id: str, seconds: float) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        res = client.call(function_id, {"n": len(out)}, timeout=10)
        out.append(time.perf_counter() - t0)
        assert res.get("error") is None, res
    return out


def test_slow_consumer() -> None:
    """50,000 x 16 KiB void calls at a callee that never reads (the issue's figures: the
    gateway grew from 196 to 925 MB in 2.7 s). Bound: 3 x the 8 MiB default budget + 48 MiB
    (the flooding caller's queue of 64 messages, allocator slack); the bystander (a third
    worker calling an echo function of a fourth, one call at a time) is served all along,
    every call answered (p99 under 1 s; its ratio to idle is perf's slow_consumer row)."""
    with running_engine() as eng:
        slow, ok = fid("slow::f"), fid("ok::f")
        gw = psutil.Process(eng.pid("gateway"))
        peer = stuck_callee(eng.url, slow)
        echo, _ = echo_worker(eng.url, ok)
        with RawClient.declared(eng.url, "bystander") as by:
            routed(by, slow)
            routed(by, ok)
            idle = bystander_latencies(by, ok, 2.0)
            rss0 = peak = gw.memory_info().rss
            flood = subprocess.Popen([sys.executable, "-c", FLOOD, eng.url, slow, "50000", "16384"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                busy: list[float] = []
                t0 = time.monotonic()
                while not select.select([flood.stdout], [], [], 0)[0] and time.monotonic() - t0 < 40:
                    busy += bystander_latencies(by, ok, 0.25)
                    peak = max(peak, gw.memory_info().rss)
                sent_s = time.monotonic() - t0
                busy += bystander_latencies(by, ok, 0.5)  # what the gateway still had to read
                peak = max(peak, gw.memory_info().rss)
                refused = [overloaded(by, slow).get("code") for _ in range(20)]
            finally:
                flood.stdin.close()
                flood.wait(10)
        grown = (peak - rss0) / MiB
        print(f"slow consumer: sent in {sent_s:.1f} s; gateway RSS +{grown:.1f} MiB; bystander p99 idle "
              f"{p99(idle) * 1e6:.0f} us, under the flood {p99(busy) * 1e6:.0f} us ({len(busy)} calls)")
        assert sent_s < 40, "the flood did not get through in 40 s"
        assert grown < 3 * 8 + 48, f"gateway grew {grown:.0f} MiB"
        # the bystander is served all along; how fast, against idle, is the perf row
        # slow_consumer's figure (a ratio of timings does not belong in a pass/fail test)
        assert p99(busy) < 1.0, (p99(busy), p99(idle))
        assert refused == ["callee_overloaded"] * 20
        peer.close()
        echo.close()
