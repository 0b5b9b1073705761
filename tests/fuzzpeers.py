"""The parts of the hardening fuzz's rig that talk to the engine (issue 11): its config and
start, the bystander workers whose functions and bindings must survive every batch, and the
fuzzing connections (``FuzzConn``) with what they were answered. ``fuzzrig.Rig`` drives them.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from typing import Any, Callable

from websockets.exceptions import ConnectionClosed

from tests import fuzzframes as ff
from tests.harness import STATE_WORKER_YAML, Engine, make_config, start_engine
from tests.wsclient import RawClient, declare_frame

GRACE_MS = 100
QUEUES = {"fz": {"max_retries": 1, "concurrency": 2, "backoff_ms": 10}}
FUZZ_SECONDS = float(os.environ.get("III_FUZZ_SECONDS", "22"))
SHRINK_SECONDS = float(os.environ.get("III_FUZZ_SHRINK_SECONDS", "12"))
MAX_EXAMPLES = int(os.environ.get("III_FUZZ_EXAMPLES", "100"))
EXPLORE = os.environ.get("III_FUZZ_EXPLORE") == "1"
DUMP = os.environ.get("III_FUZZ_DUMP")
"""With EXPLORE: a file every failing ``(failure, batch)`` is pickled onto, to replay them."""
"""Exploration (by hand, not CI): record every failing batch, go on, print them all at the end."""
ANSWER_WAIT_S = 3.0
MAX_HELD_BYTES = 64 * 1024 * 1024
"""The gateway's default ``max_held_bytes`` (what an undeclared worker may send)."""
DELIVERY_WAIT_S = 5.0
ERROR_LINE = re.compile(r"^\S+ \S+ \S+\[\d+\] (ERROR|CRITICAL) .*$", re.M)
LOG_LINE = re.compile(r"^\S+ \S+ \S+\[\d+\] [A-Z]+ ")
EXIT_LINE = re.compile(r"^.* proc\.(\S+)\.exit .*$", re.M)
"""The supervisor's line for a process that ended (a crash shows here before any status)."""


def config_text() -> str:
    text = make_config(port="{port}", runtime_dir="{runtime_dir}", data_dir="{data_dir}",  # type: ignore[arg-type]
                       queues=QUEUES, extra_workers_yaml=STATE_WORKER_YAML + "- name: iii-pubsub\n")
    return text + f"registration_namespace_grace_ms: {GRACE_MS}\n"


def start() -> Engine:
    eng = start_engine(config_text=config_text(), wait_for="engine::queue::list_topics")
    for fid, data in (("state::list_groups", {}), ("publish", {"topic": "warmup", "data": None})):
        with RawClient.worker(eng.url) as w:
            w.wait_answered(fid, data)
    return eng


def sync_declare(client: RawClient, name: str, namespace: str | None = None) -> None:
    answer = client.call(ff.REGISTER_WORKER_FN, declare_frame(name, namespace)["data"])
    assert answer.get("result") == {"success": True}, answer


# ---- workers of the test ----------------------------------------------------------------------


class Peer:
    """A declared raw worker whose thread answers every call delivered to it (``results``
    maps a function id to ``data -> result``; others get null) and every binding given to
    it as a provider, and records every frame it receives."""

    def __init__(self, url: str, name: str, results: dict[str, Callable[[Any], Any]] | None = None,
                 namespace: str | None = None) -> None:
        self.client = RawClient.worker(url)
        self.name = name
        self.results = results or {}
        self.frames: list[dict] = []
        self.cond = threading.Condition()
        sync_declare(self.client, name, namespace)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"peer-{name}")
        self.thread.start()

    def _run(self) -> None:
        ws = self.client.ws
        while True:
            try:
                raw = ws.recv()
            except Exception:  # closed: by us, or by the engine (the checks notice)
                return
            try:
                frame = json.loads(raw)
            except Exception:  # a payload too deep for the stdlib is still "delivered"
                frame = {"type": "undecodable"}
            if not isinstance(frame, dict):
                continue
            try:
                kind = frame.get("type")
                if kind == "invokefunction" and frame.get("invocation_id"):
                    fn = self.results.get(frame.get("function_id"))
                    self.client.answer(frame, fn(frame.get("data")) if fn else None)
                elif kind == "registertrigger":
                    self.client.send({"type": "triggerregistrationresult", "id": frame.get("id"),
                                      "trigger_type": frame.get("trigger_type"),
                                      "function_id": frame.get("function_id")})
            except ConnectionClosed:
                return
            # kept small: fuzzed calls of a bystander can carry megabytes
            kept = {k: frame.get(k) for k in ("type", "id", "function_id", "invocation_id", "error")}
            small = len(raw) < 4096
            kept["data"], kept["result"] = (frame.get("data"), frame.get("result")) if small else (None, None)
            with self.cond:
                self.frames.append(kept)
                self.cond.notify_all()

    def mark(self) -> int:
        """Where the next frame will be recorded (``wait(since=...)`` looks from there)."""
        with self.cond:
            return len(self.frames)

    def send(self, frame: dict) -> None:
        self.client.send(frame)

    def wait(self, pred: Callable[[dict], bool], timeout: float = DELIVERY_WAIT_S, since: int = 0) -> dict | None:
        """The first frame from index ``since`` on that matches ``pred``, waiting for it."""
        found: list[dict] = []
        cursor = [since]

        def seen() -> bool:
            for frame in self.frames[cursor[0]:]:
                if pred(frame):
                    found.append(frame)
                    return True
            cursor[0] = len(self.frames)
            return False

        with self.cond:
            self.cond.wait_for(seen, timeout)
        return found[0] if found else None

    def close(self) -> None:
        self.client.close()
        self.thread.join(2)


def delivered(function_id: str, key: str, token: str) -> Callable[[dict], bool]:
    return lambda f: (f.get("type") == "invokefunction" and f.get("function_id") == function_id
                      and isinstance(f.get("data"), dict) and f["data"].get(key) == token)


class Bystanders:
    """The workers whose functions and bindings the fuzzing must not disturb (generation
    ``gen``: a repair after a failure builds a fresh set with fresh ids)."""

    def __init__(self, url: str, gen: int) -> None:
        p = f"by{gen}"
        self.ids = {
            ff.BY_ECHO: f"{p}::echo", ff.BY_ON_STATE: f"{p}::on_state", ff.BY_ON_PUB: f"{p}::on_pub",
            ff.BY_ON_DURABLE: f"{p}::on_durable", ff.BY_ON_PARKED: f"{p}::on_parked",
            ff.BY_STATE_BINDING: f"{p}-state-binding", ff.BY_PUB_BINDING: f"{p}-pub-binding",
            ff.BY_PARKED_BINDING: f"{p}-parked-binding", ff.BY_PARKED_TYPE: f"{p}-parked-type",
            ff.BY_SCOPE: f"{p}-scope", ff.BY_TOPIC: f"{p}-topic", ff.BY_DURABLE_TOPIC: f"{p}-durable-topic",
            ff.BY_NAME: f"{p}-serve",
        }
        i = self.ids
        self.url = url
        self.peers: list[Peer] = []
        echo = i[ff.BY_ECHO]
        self.serve = self._peer(i[ff.BY_NAME], {echo: lambda d: {"echo": d.get("probe") if isinstance(d, dict) else None}})
        self.serve.send({"type": "registerfunction", "id": echo})
        self.trig = self._peer(f"{p}-trig")
        for fn in (i[ff.BY_ON_STATE], i[ff.BY_ON_PUB], i[ff.BY_ON_DURABLE]):
            self.trig.send({"type": "registerfunction", "id": fn})
        self.trig.send({"type": "registertrigger", "id": i[ff.BY_STATE_BINDING], "trigger_type": "state",
                        "function_id": i[ff.BY_ON_STATE], "config": {"scope": i[ff.BY_SCOPE]}})
        self.trig.send({"type": "registertrigger", "id": i[ff.BY_PUB_BINDING], "trigger_type": "subscribe",
                        "function_id": i[ff.BY_ON_PUB], "config": {"topic": i[ff.BY_TOPIC]}})
        self.parked = self._peer(f"{p}-parked")
        self.parked.send({"type": "registerfunction", "id": i[ff.BY_ON_PARKED]})
        self.parked.send({"type": "registertrigger", "id": i[ff.BY_PARKED_BINDING],
                          "trigger_type": i[ff.BY_PARKED_TYPE], "function_id": i[ff.BY_ON_PARKED], "config": {}})
        with RawClient.worker(url) as c:
            answer = c.call(ff.REGISTER_TRIGGER_FN, {"trigger_type": "subscribe", "function_id": i[ff.BY_ON_DURABLE],
                                                     "config": {"topic": i[ff.BY_DURABLE_TOPIC]}})
        assert answer.get("error") is None, answer
        i[ff.BY_DURABLE_BINDING] = answer["result"]["id"]
        i[ff.BY_WORKER] = self.serve.client.worker_id
        self.providers = 0

    def _peer(self, name: str, results: dict | None = None) -> Peer:
        peer = Peer(self.url, name, results)
        self.peers.append(peer)
        return peer

    @property
    def binding_ids(self) -> set[str]:
        return {self.ids[k] for k in ff.PROTECTED_BINDINGS}

    def check(self, failures: list[str], settle: float = 0.0) -> None:
        """Every bystander promise, each failure appended to ``failures``; with ``settle``,
        each delivery is retried for that long (bindings still on their way, a restart)."""
        i = self.ids
        self.providers += 1
        with RawClient.worker(self.url) as c:
            self._deliveries(c, failures, settle)
            listed = call(c, "engine::registered-triggers::list", {"include_internal": True})
            if listed.get("error") is not None:
                failures.append(f"engine::registered-triggers::list failed: {listed}")
            else:
                have = {b.get("id") for b in listed["result"]["registered_triggers"]}
                missing = self.binding_ids - have
                if missing:
                    failures.append(f"bystander bindings no longer listed: {sorted(missing)}")
        provider = Peer(self.url, f"{i[ff.BY_NAME]}-provider-{self.providers}")
        try:
            provider.send({"type": "registertriggertype", "id": i[ff.BY_PARKED_TYPE], "description": "provider"})
            if provider.wait(lambda f: f.get("type") == "registertrigger" and f.get("id") == i[ff.BY_PARKED_BINDING],
                             max(settle, DELIVERY_WAIT_S)) is None:
                failures.append(f"parked binding {i[ff.BY_PARKED_BINDING]} not delivered to the provider "
                                f"of {i[ff.BY_PARKED_TYPE]} that registered after the batch")
        finally:
            provider.close()
        with RawClient.worker(self.url) as fresh:
            for fid in ("engine::functions::list", "engine::workers::list"):
                answer = call(fresh, fid, {})
                if answer.get("error") is not None or not isinstance(answer.get("result"), dict):
                    failures.append(f"{fid} failed for a fresh connection: {short(answer)}")
                elif fid == "engine::functions::list" and i[ff.BY_ECHO] not in {
                        f.get("function_id") for f in answer["result"].get("functions", [])}:
                    failures.append(f"engine::functions::list no longer lists {i[ff.BY_ECHO]}")

    def _deliveries(self, c: RawClient, failures: list[str], settle: float) -> None:
        i = self.ids
        deadline = time.monotonic() + settle
        checks = [
            ("function", None),
            ("state", (self.trig, i[ff.BY_ON_STATE], "key",
                       lambda t: ("state::set", {"scope": i[ff.BY_SCOPE], "key": t, "value": 1}))),
            ("subscribe", (self.trig, i[ff.BY_ON_PUB], "probe",
                           lambda t: ("publish", {"topic": i[ff.BY_TOPIC], "data": {"probe": t}}))),
            ("durable", (self.trig, i[ff.BY_ON_DURABLE], "probe",
                         lambda t: ("publish", {"topic": i[ff.BY_DURABLE_TOPIC], "data": {"probe": t}}))),
        ]
        for label, spec in checks:
            while True:
                token = uuid.uuid4().hex
                problem = None
                if spec is None:
                    answer = call(c, i[ff.BY_ECHO], {"probe": token})
                    if answer.get("result") != {"echo": token}:
                        problem = f"bystander function {i[ff.BY_ECHO]} did not answer: {short(answer)}"
                else:
                    peer, fn, key, make = spec
                    fid, data = make(token)
                    since = peer.mark()
                    answer = call(c, fid, data)
                    if answer.get("error") is not None:
                        problem = f"{fid} for the {label} check failed: {short(answer)}"
                    elif peer.wait(delivered(fn, key, token), 0.5 if settle else DELIVERY_WAIT_S, since) is None:
                        what = {"durable": f"durable binding {i[ff.BY_DURABLE_BINDING]}"}.get(
                            label, f"{label} binding")
                        problem = f"bystander {what} no longer delivers to {fn} ({fid} {data})"
                if problem is None:
                    break
                if time.monotonic() >= deadline:
                    failures.append(problem)
                    break
                time.sleep(0.1)

    def close(self) -> None:
        for peer in self.peers:
            peer.close()
        with RawClient.worker(self.url) as c:
            call(c, ff.UNREGISTER_TRIGGER_FN, {"id": self.ids[ff.BY_DURABLE_BINDING]})


def call(client: RawClient, fid: str, data: Any, timeout: float = ANSWER_WAIT_S, **extra: Any) -> dict:
    """``client.call`` that reports a missing answer as a frame instead of raising."""
    try:
        return client.call(fid, data, timeout=timeout, **extra)
    except TimeoutError:
        return {"error": {"code": "TEST_TIMEOUT", "message": f"no answer within {timeout}s"}}
    except ConnectionClosed as exc:
        return {"error": {"code": "TEST_CLOSED", "message": f"connection closed: {exc!r}"}}


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ---- the fuzzing connections --------------------------------------------------------------


class FuzzConn:
    """One fuzzing connection of a batch: sends frames, then reads what came back."""

    def __init__(self, url: str, k: int, batch_no: int) -> None:
        self.k = k
        self.client = RawClient.worker(url)
        self.opened = time.monotonic()
        if k == 0:
            sync_declare(self.client, f"fz0-{batch_no}")
        elif k == 1:
            sync_declare(self.client, f"fz1-{batch_no}", ff.FZ_NS)
        self.closed: ConnectionClosed | None = None
        self.answered: set[str] = set()
        self.results: dict[str, dict] = {}
        self.served: set[str] = set()
        """Function ids of the calls delivered to this connection (and answered by it)."""
        self.rejected_name = False
        self.held_bytes = 0

    @property
    def legitimately_closed(self) -> bool:
        """Closed for a reason of its own: a worker name another live worker holds (§4.3),
        or (undeclared) more than the gateway's 64 MiB held before its namespace was fixed."""
        rcvd = getattr(self.closed, "rcvd", None)
        held = (rcvd is not None and rcvd.code == 1008 and "before the namespace" in rcvd.reason
                and self.held_bytes > MAX_HELD_BYTES)
        return self.rejected_name or held

    @property
    def label(self) -> str:
        return ("conn 0 (declared, default)", "conn 1 (declared, fz-ns)", "conn 2 (undeclared)")[self.k]

    def send(self, data: str | bytes) -> None:
        if self.closed is not None:
            return
        self.held_bytes += len(data) + 1024  # as the gateway counts toward max_held_bytes
        try:
            self.client.send_raw(data)
        except ConnectionClosed as exc:
            self.closed = exc

    def read_until(self, done: Callable[[], bool], deadline: float) -> None:
        """Read frames until ``done()`` or ``deadline``; answer calls delivered to us. A
        closed connection still hands out what it received before the close."""
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                raw = self.client.ws.recv(timeout=left)
            except TimeoutError:
                return
            except ConnectionClosed as exc:
                self.closed = exc
                return
            try:
                frame = json.loads(raw)
            except Exception:
                continue
            if not isinstance(frame, dict):
                continue
            kind = frame.get("type")
            if kind == "invocationresult":
                inv = frame.get("invocation_id")
                self.answered.add(inv)
                self.results[inv] = frame
            elif kind == "registrationrejected" and frame.get("code") == "WORKER_NAMESPACE_CONFLICT":
                self.rejected_name = True
            elif kind == "invokefunction" and frame.get("invocation_id") and self.closed is None:
                try:
                    self.client.answer(frame, None)
                    self.served.add(frame.get("function_id"))
                except ConnectionClosed as exc:
                    self.closed = exc

    def call(self, fid: str, data: Any, timeout: float = ANSWER_WAIT_S) -> dict | None:
        inv = str(uuid.uuid4())
        self.send(json.dumps({"type": "invokefunction", "function_id": fid, "invocation_id": inv, "data": data}))
        self.read_until(lambda: inv in self.answered, time.monotonic() + timeout)
        return self.results.get(inv)

    def close(self) -> None:
        self.client.close()


# ---- the rig: engine, bystanders, batches ---------------------------------------------------
