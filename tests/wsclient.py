"""A tiny raw client of the worker protocol, for tests that need to see exact frames.

It owns one WebSocket connection (``websockets.sync``) and nothing else: no retries, no
reconnects, no protocol logic beyond JSON. Tests use it to send what the official SDKs never
send (bad JSON, unknown types, binary garbage, ``ping``) and to assert on the frames the engine
answers with.

It also holds the raw-protocol helpers the tests share: the ``engine::workers::register``
frame (``declare_frame``, for asyncio clients too), a declared worker, waiting until a broker's
function answers, and ``ok`` (the result of a frame that must not carry an error).

Invariants: ``recv`` never blocks longer than the timeout it is given; frames read while
waiting for a particular one are kept in ``backlog`` in arrival order and handed out first by
later ``recv`` / ``recv_until`` calls, so no frame is lost between two waits.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

Frame = dict[str, Any]

LARGE_MESSAGES = ("large-messages.v1",)


def declare_frame(name: str = "raw-test", namespace: str | None = None, *,
                  runtime: str = "python", version: str = "raw",
                  features: tuple[str, ...] | list[str] | None = LARGE_MESSAGES) -> Frame:
    """``engine::workers::register`` (void) as the 0.25 Python SDK sends it, first thing.

    Sent first, it fixes the worker's namespace at once instead of leaving its registrations
    buffered for the grace period (protocol.md §4.4). ``features=None`` poses as an older
    Python SDK, to which the engine must not send more than 1 MiB (spec §10.4).
    """
    data: dict[str, Any] = {"runtime": runtime, "version": version, "name": name, "pid": 0,
                            "namespace": namespace}
    if features is not None:
        data["features"] = list(features)
    return {"type": "invokefunction", "function_id": "engine::workers::register",
            "data": data, "action": {"type": "void"}}


def ok(frame: Frame) -> Any:
    """The ``result`` of an ``invocationresult`` that must carry no error."""
    assert frame.get("error") is None, frame
    return frame.get("result")


def wait_for_function(url: str, function_id: str, data: Any = None, *,
                      within: float = 10.0) -> Frame:
    """Until ``function_id`` answers without an error, on a worker connection of its own.

    The gateway accepts workers before the brokers have registered their functions, so a
    test that needs a broker waits for one of its functions first.
    """
    with RawClient.worker(url) as w:
        return w.wait_answered(function_id, data, within=within)


def fid(stem: str) -> str:
    """A function id (or topic) unique to one test: a module's engine outlives its tests."""
    return f"{stem}::{uuid.uuid4().hex[:8]}"


class RawClient:
    """One worker-protocol connection speaking raw JSON."""

    def __init__(self, url: str, *, path: str = "/", max_size: int | None = 128 * 1024 * 1024,
                 open_timeout: float = 5.0) -> None:
        self.url = url.rstrip("/") + path
        # compression=None: the engine may decline permessage-deflate; we need not offer it.
        self.ws: ClientConnection = connect(self.url, max_size=max_size, open_timeout=open_timeout,
                                            compression=None, legacy=True)
        self.backlog: list[Frame] = []
        self.welcome: Frame | None = None

    # -- connection ----------------------------------------------------------------------

    @classmethod
    def worker(cls, url: str, timeout: float = 5.0) -> "RawClient":
        """Connect on ``/`` and wait for ``workerregistered`` (kept in ``.welcome``)."""
        client = cls(url)
        try:
            client.welcome = client.recv_until(lambda f: f.get("type") == "workerregistered",
                                               timeout)
        except BaseException:
            client.close()
            raise
        return client

    @classmethod
    def declared(cls, url: str, name: str = "raw-test", **declare: Any) -> "RawClient":
        """A worker connection that has sent ``engine::workers::register`` (``declare``)."""
        client = cls.worker(url)
        client.declare(name, **declare)
        return client

    @property
    def worker_id(self) -> str:
        assert self.welcome is not None, "not a worker connection"
        return self.welcome["worker_id"]

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # closing twice or after the peer vanished is fine in tests
            pass

    @property
    def is_open(self) -> bool:
        """True while the socket is open: probed with a WebSocket ping."""
        try:
            self.ws.ping().wait(2.0)
            return True
        except (ConnectionClosed, TimeoutError, RuntimeError):
            return False

    # -- sending -------------------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        self.ws.send(json.dumps(frame))

    def send_raw(self, data: str | bytes) -> None:
        """Send text (``str``) or binary (``bytes``) exactly as given."""
        self.ws.send(data)

    def register_function(self, function_id: str, **extra: Any) -> None:
        self.send({"type": "registerfunction", "id": function_id, **extra})

    def declare(self, name: str = "raw-test", namespace: str | None = None, *,
                runtime: str = "python",
                features: tuple[str, ...] | list[str] | None = LARGE_MESSAGES) -> None:
        """Send ``declare_frame(...)``: fixes the namespace; ``features=None`` poses as an older SDK."""
        self.send(declare_frame(name, namespace, runtime=runtime, features=features))

    def call(self, function_id: str, data: Any = None, *, timeout: float = 5.0,
             omit_data: bool = False, **extra: Any) -> Frame:
        """A sync call: send ``invokefunction`` and wait for its ``invocationresult``."""
        inv = str(uuid.uuid4())
        frame: Frame = {"type": "invokefunction", "function_id": function_id,
                        "invocation_id": inv, **extra}
        if not omit_data:
            frame["data"] = data
        self.send(frame)
        return self.recv_until(
            lambda f: f.get("type") == "invocationresult" and f.get("invocation_id") == inv,
            timeout)

    def call_when_found(self, function_id: str, data: Any = None, *, within: float = 10.0,
                        timeout: float = 10.0) -> Frame:
        """``call``, repeated while the answer is ``function_not_found`` (registrations are
        asynchronous, spec §4.2) for up to ``within`` seconds; returns the last answer."""
        deadline = time.monotonic() + within
        while True:
            frame = self.call(function_id, data, timeout=timeout)
            err = frame.get("error") or {}
            if err.get("code") != "function_not_found" or time.monotonic() > deadline:
                return frame
            time.sleep(0.05)

    def wait_answered(self, function_id: str, data: Any = None, *,
                      within: float = 10.0) -> Frame:
        """``call`` until the answer carries no error; AssertionError after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            frame = self.call(function_id, {} if data is None else data)
            if frame.get("error") is None:
                return frame
            if time.monotonic() > deadline:
                raise AssertionError(f"{function_id} never answered without an error in "
                                     f"{within}s (a broker not up?): {frame}")
            time.sleep(0.05)

    def answer(self, invocation: Frame, result: Any) -> None:
        self.send({"type": "invocationresult", "invocation_id": invocation["invocation_id"],
                   "function_id": invocation["function_id"], "result": result})

    # -- receiving -----------------------------------------------------------------------

    def recv(self, timeout: float = 5.0) -> Frame:
        """The next JSON frame (raises TimeoutError after ``timeout`` seconds)."""
        if self.backlog:
            return self.backlog.pop(0)
        return self._read(timeout)

    def _read(self, timeout: float) -> Frame:
        raw = self.ws.recv(timeout=max(timeout, 0.0))
        return json.loads(raw)

    def next_call(self, *function_ids: str, timeout: float = 5.0) -> Frame:
        """The next ``invokefunction`` delivered to this worker for one of ``function_ids``."""
        return self.recv_until(lambda f: f.get("type") == "invokefunction"
                               and f.get("function_id") in function_ids, timeout)

    def recv_until(self, pred: Callable[[Frame], bool], timeout: float = 5.0) -> Frame:
        """The first frame matching ``pred``; others are kept in ``backlog``."""
        for i, frame in enumerate(self.backlog):
            if pred(frame):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching frame within {timeout}s; "
                                   f"seen meanwhile: {self.backlog[-5:]}")
            try:
                frame = self._read(left)
            except TimeoutError:
                raise TimeoutError(f"no matching frame within {timeout}s; "
                                   f"seen meanwhile: {self.backlog[-5:]}") from None
            if pred(frame):
                return frame
            self.backlog.append(frame)

    def frames_within(self, seconds: float) -> list[Frame]:
        """Every frame that arrives within ``seconds`` (backlog included)."""
        out, self.backlog = self.backlog, []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self._read(left))
            except TimeoutError:
                break
        return out

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
