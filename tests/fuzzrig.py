"""The rig of the hardening fuzz (tests/e2e/test_hardening_fuzz.py, issue 11): one engine for
the module, a batch of fuzzed frames sent on three connections, and the checks run after
every batch (answers, connections, bystanders, log, pids). The engine-facing parts are
``fuzzpeers.py``; the properties live in the test module.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from tests import fuzzframes as ff
from tests.fuzzpeers import (ANSWER_WAIT_S, DUMP, ERROR_LINE, EXIT_LINE, EXPLORE, FUZZ_SECONDS, LOG_LINE,
                             SHRINK_SECONDS, Bystanders, FuzzConn, call, short, start)
from tests.wsclient import RawClient


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
