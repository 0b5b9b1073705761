"""Issue 11: mutated frames of every worker message type, fuzzed against one real engine.

One engine (gateway, router, iii-state, iii-queue, iii-pubsub) serves the module. Before
any fuzzing, "bystander" workers set up what the fuzzing must never disturb: a function
that answers (``<by:echo>``), a ``state`` binding and a ``subscribe`` binding delivering to
a second worker, a binding parked on a trigger type nobody provides, and a durable
binding made with ``engine::register_trigger``.

``test_fuzzed_frames_leave_the_engine_and_other_workers_intact`` sends hypothesis batches
(``tests/fuzzframes.py``: valid frames of every type, mutated: fields dropped or of the
wrong type, huge ints, floats, NaN, deep nesting, big payloads, duplicate keys and ids,
other workers' ids, reserved ids, damaged bytes, garbage) from three connections: one
declared in ``default``, one in ``fz-ns``, one undeclared (its registrations buffered for
the namespace grace, shortened here to 100 ms so that every batch also drains a buffer).
After each batch it asserts:

- no ``Traceback`` and no ERROR line in the engine log since the batch began;
- every engine process has the pid it had before (nothing crashed and restarted);
- every sync call the engine had to answer (``fuzzframes.must_answer``) was answered, every
  fuzzing connection is still open (unless the engine had a reason to close it: a worker
  name conflict, a ``reattach`` with its token) and still works: a call on it is
  answered, and a function it registers after the batch is listed and delivered to it;
- the bystanders are intact: their function answers, their state and subscribe bindings
  deliver, the parked binding is delivered to a provider that registers its trigger type
  after the batch, the durable binding is listed and delivers;
- ``engine::functions::list`` (and ``engine::workers::list``) answer a fresh connection.

``test_mutated_bindings_survive_a_process_restart`` leaves bindings with hostile config and
metadata in place (connection bindings and durable ones: one of each kind of hostile value
as the explicit example, plus one generated set), then a "late" bystander binds after them,
then one engine process (state, router, pubsub) is killed; it must come back and every
bystander binding, the late ones included, must deliver again, with a clean log.

Bounds (the whole file runs in under a minute on 2 cores, failing or not): derandomized,
no example database; the fuzz starts no new batch after ``III_FUZZ_SECONDS`` (22 s) and
hypothesis stops shrinking after ``III_FUZZ_SHRINK_SECONDS`` more (12 s; its warning then
says "five minutes", its constant's default). Raise both to hunt with better shrinking;
``III_FUZZ_EXPLORE=1`` records every failing batch and goes on instead of failing (and
``III_FUZZ_DUMP=FILE`` pickles them for replay). A summary line (batches, frames, bytes)
is printed at the end of the module.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as hypothesis_engine
from websockets.exceptions import ConnectionClosed

from tests import fuzzframes as ff
from tests.harness import STATE_WORKER_YAML, Engine, make_config, start_engine
from tests.wsclient import RawClient, declare_frame

pytestmark = [pytest.mark.slow,
              # websockets' threads draw from `random` while hypothesis generates: harmless here
              pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")]

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


class Rig:
    def __init__(self) -> None:
        self.eng = start()
        self.gen = 0
        self.by = Bystanders(self.eng.url, self.gen)
        failures: list[str] = []
        self.by.check(failures, settle=5.0)
        assert not failures, f"bystanders do not work before any fuzzing: {failures}"
        self.pids = self._pids()
        self.dirty = False
        self.started = time.monotonic()
        self.batches = self.frames = self.bytes = self.skipped = self.failed_batches = 0
        self.failed: dict[str, str] = {}
        self.explored: list[str] = []
        self.first_failure_at: float | None = None

    # -- budget ------------------------------------------------------------------------

    def run(self, batch: list) -> None:
        key = hashlib.sha256(repr(batch).encode()).hexdigest()
        elapsed = time.monotonic() - self.started
        over = elapsed > FUZZ_SECONDS + (SHRINK_SECONDS if self.failed else 0.0)
        if over:
            if key in self.failed:
                raise AssertionError(self.failed[key] + "\n(re-raised as first seen: fuzz time budget spent)")
            self.skipped += 1
            return
        try:
            self.batch(batch)
        except Exception as exc:
            self.dirty = True
            self.failed[key] = str(exc) if isinstance(exc, AssertionError) else f"batch raised {exc!r}"
            self.failed_batches += 1
            if EXPLORE:
                self.explored.append(self.failed[key])
                if DUMP:
                    with open(DUMP, "ab") as f:
                        pickle.dump((self.failed[key], batch), f)
                return
            raise

    # -- one batch ---------------------------------------------------------------------

    def batch(self, batch: list) -> None:
        if self.dirty:
            self.repair()
        self.batches += 1
        n = self.batches
        log_from = self.log_size()
        failures: list[str] = []
        # the undeclared one first: its grace timer runs while the others declare
        conns = sorted((FuzzConn(self.eng.url, k, n) for k in reversed(range(ff.FUZZ_CONNS))), key=lambda c: c.k)
        env = dict(self.by.ids)
        for c in conns:
            env[ff.fz_worker(c.k)] = c.client.worker_id
            env[ff.fz_token(c.k)] = c.client.welcome["reattach_token"]
        frames = [f for _, f in batch]
        fuzz_fns = ff.registered_ids(frames, "registerfunction")
        fuzz_types = ff.registered_ids(frames, "registertriggertype")
        required: list[dict[str, Any]] = [{} for _ in conns]
        seen_inv: list[dict[str, int]] = [{} for _ in conns]
        evictable: set[int] = set()
        durable_calls: list[tuple[int, str]] = []
        sent: list[str] = []
        status: dict[str, Any] = {}
        pids: threading.Thread | None = None
        try:
            for k, frame in batch:
                data = ff.render(frame, env)
                conns[k].send(data)
                self.frames += 1
                self.bytes += len(data)
                sent.append(f"  [{k}] {ff.describe_frame(frame, env, 300)}")
                base = frame.frame if isinstance(frame, ff.Mangled) else frame
                if isinstance(base, dict):
                    eff = ff.effective(base)
                    inv = eff.get("invocation_id")
                    if isinstance(inv, str):
                        inv = env.get(inv, inv)  # a placeholder (another worker's id) as sent
                        seen_inv[k][inv] = seen_inv[k].get(inv, 0) + 1
                    if eff.get("type") == "reattach":
                        for j in range(ff.FUZZ_CONNS):
                            if eff.get("previous_worker_id") == ff.fz_worker(j) and eff.get("reattach_token") == ff.fz_token(j):
                                evictable.add(j)
                    if eff.get("function_id") == ff.REGISTER_TRIGGER_FN and isinstance(inv, str):
                        durable_calls.append((k, inv))
                inv = ff.must_answer(frame, fuzz_fns, fuzz_types)
                if inv is not None:
                    required[k][env.get(inv, inv)] = frame
            for k, c in enumerate(conns):  # duplicate invocation ids: the caller's own problem (§5.2)
                for inv in [i for i in required[k] if seen_inv[k].get(i, 0) > 1]:
                    del required[k][inv]
                c.send(json.dumps({"type": "registerfunction", "id": f"fz-canary-{c.k}-{n}"}))
            # `iii-supervisor status` takes a while: it runs while the batch is judged
            pids = threading.Thread(target=lambda: status.update(self._pids()), daemon=True)
            pids.start()
            deadline = time.monotonic() + ANSWER_WAIT_S
            for k, c in enumerate(conns):
                c.read_until(lambda c=c, k=k: set(required[k]) <= c.answered, deadline)
            # (the undeclared connection's buffer drains when its grace timer fires: the
            # canary check waits for that)
            self.check_conns(conns, required, evictable, env, n, failures)
        finally:
            for c in conns:
                c.close()
        self.by.check(failures)
        made = [(conns[k].results.get(inv) or {}).get("result") for k, inv in durable_calls]
        self.cleanup({m["id"] for m in made if isinstance(m, dict) and isinstance(m.get("id"), str)})
        self.check_log(log_from, failures)
        if pids is not None:
            pids.join(15)
        self.check_pids(failures, now=status)
        if failures:
            self.dirty = True
            shown = sent if len(sent) <= 60 else sent[:60] + [f"  ... {len(sent) - 60} more"]
            raise AssertionError(f"batch {n}: {len(failures)} failure(s):\n- " + "\n- ".join(failures)
                                 + "\nframes sent ([connection] frame):\n" + "\n".join(shown))

    def check_conns(self, conns: list[FuzzConn], required: list[dict], evictable: set[int],
                    env: dict, n: int, failures: list[str]) -> None:
        for k, c in enumerate(conns):
            if c.closed is None:
                sentinel = c.call("engine::functions::list", {})
                if sentinel is None and c.closed is None:
                    failures.append(f"{c.label}: a call sent after the batch was never answered")
            if c.closed is not None:
                c.read_until(lambda: False, time.monotonic() + 1.0)  # what came before the close
                if not (c.legitimately_closed or k in evictable):
                    failures.append(f"{c.label} was closed by the engine: {c.closed!r}")
                continue
            for inv, frame in required[k].items():
                if inv not in c.answered:
                    failures.append(f"{c.label}: no invocationresult for a sync call within {ANSWER_WAIT_S}s: "
                                    f"{ff.describe_frame(frame, env)}")
            self.check_canary(c, n, failures)

    def check_canary(self, c: FuzzConn, n: int, failures: list[str]) -> None:
        """A function the connection registered after its batch is listed and delivered."""
        canary = f"fz-canary-{c.k}-{n}"
        with RawClient.worker(self.eng.url) as checker:
            ns = None
            deadline = time.monotonic() + ANSWER_WAIT_S
            while ns is None:
                answer = call(checker, "engine::functions::list", {"prefix": canary})
                rows = (answer.get("result") or {}).get("functions") or []
                ns = next((r.get("namespace") for r in rows if r.get("function_id") == canary), None)
                if ns is None:
                    if time.monotonic() > deadline:
                        failures.append(f"{c.label}: the function it registered after the batch "
                                        f"({canary}) was never registered ({short(answer)})")
                        return
                    time.sleep(0.05)
            inv = str(uuid.uuid4())
            checker.send({"type": "invokefunction", "function_id": canary, "invocation_id": inv,
                          "namespace": ns, "data": {}})
            c.read_until(lambda: canary in c.served, time.monotonic() + ANSWER_WAIT_S)
            if canary not in c.served:
                failures.append(f"{c.label}: a call of {canary} (namespace {ns}) was not delivered to it")
                return
            try:
                answer = checker.recv_until(lambda f: f.get("invocation_id") == inv, ANSWER_WAIT_S)
            except TimeoutError:
                failures.append(f"{c.label}: its answer to {canary} never reached the caller")
                return
            if answer.get("error") is not None:
                failures.append(f"{c.label}: {canary} answered an error: {short(answer)}")

    # -- checks and cleanup ------------------------------------------------------------

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.eng.log_path)
        except OSError:
            return 0

    def check_log(self, start: int, failures: list[str], ignore: Callable[[str], bool] = lambda line: False) -> None:
        time.sleep(0.02)
        data = Path(self.eng.log_path).read_bytes()[start:].decode("utf-8", "replace")
        lines = [line for line in data.splitlines() if not ignore(line)]
        text = "\n".join(lines)
        excerpts: list[str] = []
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if ERROR_LINE.match(line) or "Traceback" in line:
                block = [line]
                while i < len(lines) and not LOG_LINE.match(lines[i]) and len(block) < 60:
                    block.append(lines[i])  # its traceback, down to the exception line
                    i += 1
                excerpts.append("\n".join(block))
        if excerpts:
            shown = excerpts[:4] + ([f"... {len(excerpts) - 4} more"] if len(excerpts) > 4 else [])
            failures.append("engine log has a Traceback or an ERROR line:\n" + "\n".join(shown))
        exits = [m.group(0) for m in EXIT_LINE.finditer(text)]
        if exits:
            failures.append("engine process(es) exited: " + "; ".join(exits[:5]))

    def _pids(self) -> dict[str, int]:
        return {p["name"]: p.get("pid") for p in self.eng.status()}

    def check_pids(self, failures: list[str], expect_new: str | None = None,
                   now: dict[str, int] | None = None) -> None:
        now = now or self._pids()
        changed = {name: (pid, now.get(name)) for name, pid in self.pids.items()
                   if now.get(name) != pid and name != expect_new}
        if changed:
            failures.append(f"engine process(es) restarted (name: (pid before, pid now)): {changed}; "
                            f"status: {self.eng.status()}")
        self.pids = now

    def cleanup(self, known: set[str] = frozenset()) -> None:
        """Remove every binding that is not a bystander's (the fuzzers' durable ones stay
        otherwise), so that one batch's leftovers do not fail the next: those listed, and
        ``known`` (ids ``engine::register_trigger`` answered, for when the list fails)."""
        keep = self.by.binding_ids
        with RawClient.worker(self.eng.url) as c:
            listed = call(c, "engine::registered-triggers::list", {"include_internal": True})
            ids = set(known)
            for b in (listed.get("result") or {}).get("registered_triggers", []):
                if isinstance(b, dict) and isinstance(b.get("id"), str):
                    ids.add(b["id"])
            for bid in ids - keep:
                call(c, ff.UNREGISTER_TRIGGER_FN, {"id": bid})

    def repair(self) -> None:
        """After a failing batch: the same bystanders if they still work, else fresh ones,
        restarting the engine if need be, so that the next batch (a shrinking step, say)
        is judged on its own."""
        self.dirty = False
        failures: list[str] = []
        try:
            self.wait_all_running()
            self.cleanup()
            self.by.check(failures, settle=2.0)
        except Exception as exc:
            failures.append(repr(exc))
        if not failures:
            self.pids = self._pids()
            return
        try:
            self.by.close()
        except Exception:
            pass
        for attempt in range(2):
            try:
                self.wait_all_running()
                self.cleanup()
                self.gen += 1
                self.by = Bystanders(self.eng.url, self.gen)
                failures = []
                self.by.check(failures, settle=5.0)
                if not failures:
                    self.pids = self._pids()
                    return
            except Exception as exc:  # the engine itself is wedged: start another
                failures = [repr(exc)]
            if attempt == 0:
                self.eng.stop()
                self.eng = start()
                self.pids = self._pids()
        raise RuntimeError(f"could not bring the engine back to a working state: {failures}")

    def wait_all_running(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self.eng.status()
            if all(str(p.get("state", "")).upper() == "RUNNING" for p in status) or time.monotonic() > deadline:
                return
            time.sleep(0.1)

    def summary(self) -> str:
        return (f"hardening fuzz: {self.batches} batches, {self.frames} frames "
                f"({self.bytes / 1e6:.1f} MB) sent in {time.monotonic() - self.started:.1f}s; "
                f"{self.failed_batches} failing batch(es), {self.skipped} example(s) past the time budget")

    def stop(self) -> None:
        self.eng.stop()


@pytest.fixture(scope="module")
def rig(request: pytest.FixtureRequest):
    # Hypothesis shrinks for up to 5 minutes by default; each step here is a batch against
    # the engine, so its own deadline is set to the shrink budget (an internal constant:
    # if it moves, the budget check in Rig.run still makes later steps cheap).
    saved = getattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", None)
    if saved is not None:
        hypothesis_engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS
    r = Rig()
    try:
        yield r
    finally:
        summary = r.summary()
        for i, text in enumerate(r.explored):
            print(f"==== explored failure {i + 1} ====\n{text}")
        print(summary)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(summary)
        r.stop()
        if saved is not None:
            hypothesis_engine.MAX_SHRINKING_SECONDS = saved


FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                         phases=(Phase.explicit, Phase.generate, Phase.shrink), print_blob=False,
                         suppress_health_check=list(HealthCheck))


@FUZZ_SETTINGS
@given(batch=ff.batches)
def test_fuzzed_frames_leave_the_engine_and_other_workers_intact(rig: Rig, batch: list) -> None:
    rig.run(batch)


# ---- bindings with hostile values across a restart --------------------------------------------

hostile = st.one_of(ff.wrong_values, ff.json_values)


@st.composite
def hostile_bindings(draw: st.DrawFn) -> dict:
    ttype = draw(st.sampled_from(["state", "subscribe", "durable:subscriber"]))
    config = {"scope": ff.BY_SCOPE} if ttype == "state" else {"topic": ff.BY_TOPIC}
    for _ in range(draw(st.integers(0, 2))):
        config[draw(st.sampled_from(["extra", "key", "scope", "topic", "n"]))] = draw(hostile)
    fields = {"trigger_type": ttype, "function_id": draw(st.sampled_from(["fz::a", ff.BY_ON_STATE, ff.BY_ON_PUB])),
              "config": draw(st.one_of(st.just(config), hostile)), "metadata": draw(hostile)}
    if draw(st.booleans()):
        return {"type": "registertrigger", "id": draw(ff.uuids), **fields}
    return {"type": "invokefunction", "function_id": ff.REGISTER_TRIGGER_FN, "invocation_id": draw(ff.uuids),
            "data": fields}


class LateBystander:
    """A worker whose state and subscribe bindings are made after the hostile ones: a
    provider that learns its bindings again after a restart gets them last, so one hostile
    binding that stops that replay shows here (the first bystanders' were replayed first)."""

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.scope, self.topic = f"late-{tag}-scope", f"late-{tag}-topic"
        self.on_state, self.on_pub = f"late-{tag}::on_state", f"late-{tag}::on_pub"
        self.peer = Peer(url, f"late-{tag}")
        for fn in (self.on_state, self.on_pub):
            self.peer.send({"type": "registerfunction", "id": fn})
        self.peer.send({"type": "registertrigger", "id": f"late-{tag}-state", "trigger_type": "state",
                        "function_id": self.on_state, "config": {"scope": self.scope}})
        self.peer.send({"type": "registertrigger", "id": f"late-{tag}-pub", "trigger_type": "subscribe",
                        "function_id": self.on_pub, "config": {"topic": self.topic}})

    def check(self, failures: list[str], settle: float, when: str) -> None:
        with RawClient.worker(self.url) as c:
            for label, fn, key, make in (
                    ("state", self.on_state, "key", lambda t: ("state::set", {"scope": self.scope, "key": t, "value": 1})),
                    ("subscribe", self.on_pub, "probe", lambda t: ("publish", {"topic": self.topic, "data": {"probe": t}}))):
                deadline = time.monotonic() + settle
                while True:
                    token = uuid.uuid4().hex
                    fid, data = make(token)
                    since = self.peer.mark()
                    call(c, fid, data)
                    if self.peer.wait(delivered(fn, key, token), 0.5, since) is not None:
                        break
                    if time.monotonic() >= deadline:
                        failures.append(f"{when}: the {label} binding made after the hostile ones no longer "
                                        f"delivers to {fn}")
                        break

    def close(self) -> None:
        self.peer.close()


def _hostile_set() -> list[dict]:
    """One binding per kind of hostile value, connection-owned and durable, for every
    engine-provided type: the explicit example (a derandomized first draw is a tame one)."""
    values = ["a\ud800", 10**30, -(2**63) - 1, 2**64, float("nan"), float("inf"), ff.Deep(120), ff.Deep(300),
              ff.Big(300_000), "\x00\x1b\u202e", {"n": 10**30, "s": "\udfff"}]
    out: list[dict] = []
    for i, value in enumerate(values):
        ttype = ("state", "subscribe", "durable:subscriber")[i % 3]
        config = {"scope": ff.BY_SCOPE, "x": value} if ttype == "state" else {"topic": ff.BY_TOPIC, "x": value}
        fields = {"trigger_type": ttype, "function_id": "fz::a", "config": config, "metadata": value}
        out.append({"type": "registertrigger", "id": f"fz-hostile-{i}", **fields})
        out.append({"type": "invokefunction", "function_id": ff.REGISTER_TRIGGER_FN,
                    "invocation_id": f"fz-hostile-{i}", "data": fields})
    return out


@pytest.mark.parametrize("victim", ["state", "router", "pubsub"])
@example(bindings=_hostile_set())
@settings(max_examples=1, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(bindings=st.lists(hostile_bindings(), min_size=4, max_size=12))
def test_mutated_bindings_survive_a_process_restart(rig: Rig, victim: str, bindings: list) -> None:
    if rig.dirty:
        rig.repair()
    log_from = rig.log_size()
    failures: list[str] = []
    tag = f"{victim}-{uuid.uuid4().hex[:6]}"
    fuzzer = Peer(rig.eng.url, f"fz-restart-{tag}")
    late: LateBystander | None = None
    made: set[str] = set()
    env = dict(rig.by.ids)
    try:
        fuzzer.send({"type": "registerfunction", "id": "fz::a"})
        invs = []
        for frame in bindings:
            text = ff.render(frame, env)
            fuzzer.client.send_raw(text)
            rig.frames += 1
            rig.bytes += len(text)
            # a frame with a lone surrogate is undecodable (refused as serde_json refuses it):
            # dropped, never answered
            if frame["type"] == "invokefunction" and not any(ff._has_surrogate(x) for x in ff.strings(frame)):
                invs.append(frame["invocation_id"])
        for inv in invs:
            answer = fuzzer.wait(lambda f, inv=inv: f.get("invocation_id") == inv, ANSWER_WAIT_S)
            if answer is None:
                failures.append(f"engine::register_trigger call {inv} never answered")
            elif isinstance(answer.get("result"), dict) and isinstance(answer["result"].get("id"), str):
                made.add(answer["result"]["id"])
        late = LateBystander(rig.eng.url, tag)
        late.check(failures, 3.0, "before the restart")  # also waits for the bindings to land
        rig.by.check(failures, settle=2.0)
        old = rig.eng.kill(victim)
        rig.eng.wait_running(victim, 15, not_pid=old)
        rig.by.check(failures, settle=10.0)
        late.check(failures, 5.0, f"after restarting {victim}")
    finally:
        fuzzer.close()
        if late is not None:
            late.close()
    rig.cleanup(made)
    rig.check_log(log_from, failures, ignore=lambda line: f" proc.{victim}." in line)  # our kill
    rig.check_pids(failures, expect_new=victim)
    if failures:
        rig.dirty = True
        raise AssertionError(f"after restarting {victim} with these bindings in place:\n"
                             + "\n".join(f"  {ff.describe_frame(f, env)}" for f in bindings)
                             + "\nfailures:\n- " + "\n- ".join(failures))
