"""Runs the official-SDK worker scripts as subprocesses and reads their JSON-line events.

What it owns: one subprocess per ``SdkWorker`` (Node ``tests/interop/node/worker.mjs`` under
``node``, or ``tests/interop/official_py/worker.py`` under ``.venv-official/bin/python``), a
reader thread per stdout, and the list of events seen so far.

Invariants: events are kept in arrival order and never dropped; ``expect`` hands out each
event at most once (two waits for the same kind of event see two different events); a worker's stderr
goes to a file whose tail is shown when an expectation fails; ``stop``/``kill`` always reap.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
NODE_DIR = HERE / "node"
OFFICIAL_PY = REPO / ".venv-official" / "bin" / "python"

Event = dict[str, Any]


def check_installed() -> None:
    """Fail (not skip) with the fix when the official SDKs are missing."""
    missing = []
    if not (NODE_DIR / "node_modules" / "iii-sdk" / "package.json").exists():
        missing.append("npm iii-sdk in tests/interop/node/node_modules")
    if not OFFICIAL_PY.exists():
        missing.append("PyPI iii-sdk in .venv-official")
    if missing:
        raise RuntimeError(f"official SDKs not installed ({', '.join(missing)}): "
                           "run scripts/setup-interop.sh")


class SdkWorker:
    """One official-SDK worker process."""

    def __init__(self, sdk: str, url: str, *, register: list[dict[str, Any]] | None = None,
                 name: str | None = None, env: dict[str, str] | None = None) -> None:
        self.sdk = sdk
        if sdk == "node":
            cmd, cwd = ["node", str(NODE_DIR / "worker.mjs")], NODE_DIR
        elif sdk == "python":
            cmd, cwd = [str(OFFICIAL_PY), str(HERE / "official_py" / "worker.py")], HERE
        else:
            raise ValueError(sdk)
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("III_")}
        full_env.pop("PYTHONPATH", None)  # never let our `iii` shadow the official one
        full_env.update({"III_URL": url, "REGISTER": json.dumps(register or []),
                         "OTEL_ENABLED": full_env.get("OTEL_ENABLED", "true"),
                         "PYTHONUNBUFFERED": "1"})
        if name:
            full_env["III_WORKER_NAME"] = name
        full_env.update(env or {})
        self._stderr = tempfile.NamedTemporaryFile(prefix=f"iii-{sdk}-", suffix=".log",
                                                   delete=False)
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                     bufsize=1)
        self.events: list[Event] = []
        self.noise: list[str] = []
        self._q: queue.Queue[Event | None] = queue.Queue()
        self._used: set[int] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def __repr__(self) -> str:
        return f"SdkWorker({self.sdk}, pid={self.proc.pid})"

    # -- I/O -----------------------------------------------------------------------------

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                self.noise.append(line.rstrip())
                continue
            if isinstance(obj, dict):
                self._q.put(obj)
        self._q.put(None)

    def _drain(self, timeout: float) -> bool:
        """Move queued events into ``events``; False once stdout has closed."""
        try:
            item = self._q.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            self.events.append(item)
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return True

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            return Path(self._stderr.name).read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def expect(self, pred: Callable[[Event], bool], timeout: float = 10.0, what: str = "") -> Event:
        """The first event not handed out before that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        alive = True
        while True:
            for i in range(len(self.events)):
                if i not in self._used and pred(self.events[i]):
                    self._used.add(i)
                    return self.events[i]
            left = deadline - time.monotonic()
            if left <= 0 or not alive:
                raise AssertionError(
                    f"{self!r}: no event {what or pred} within {timeout}s "
                    f"(exited={self.proc.poll()}).\nevents: {self.events[-10:]}\n"
                    f"stderr tail:\n{self.stderr_tail()}")
            alive = self._drain(min(left, 0.2))

    def seen(self, pred: Callable[[Event], bool], within: float = 0.0) -> list[Event]:
        """All events so far (waiting ``within`` seconds first) satisfying ``pred``."""
        end = time.monotonic() + within
        while time.monotonic() < end and self._drain(min(0.1, end - time.monotonic())):
            pass
        self._drain(0)
        return [e for e in self.events if pred(e)]

    # -- helpers the tests read like prose ----------------------------------------------

    def ready(self, timeout: float = 20.0) -> Event:
        return self.expect(lambda e: e.get("ready") is True, timeout, "ready")

    def trigger(self, function_id: str, payload: Any = None, *, void: bool = False,
                timeout_ms: int | None = None, timeout: float = 15.0) -> Event:
        """Call through the SDK's ``trigger`` and wait for its outcome event."""
        tag = self.trigger_async(function_id, payload, void=void, timeout_ms=timeout_ms)
        return self.result(tag, timeout)

    def trigger_async(self, function_id: str, payload: Any = None, *, void: bool = False,
                      timeout_ms: int | None = None) -> str:
        tag = str(uuid.uuid4())
        self.send({"op": "trigger", "tag": tag, "function_id": function_id, "payload": payload,
                   "void": void, "timeout_ms": timeout_ms})
        return tag

    def result(self, tag: str, timeout: float = 15.0) -> Event:
        return self.expect(lambda e: e.get("event") == "result" and e.get("tag") == tag,
                           timeout, f"result {tag}")

    def call_when_found(self, function_id: str, payload: Any, *, within: float = 8.0) -> Event:
        """Trigger until the target is known: registrations are asynchronous (spec §4.2)."""
        deadline = time.monotonic() + within
        while True:
            ev = self.trigger(function_id, payload, timeout_ms=5000)
            retry = (not ev["ok"] and ev.get("code") in ("function_not_found", "TIMEOUT",
                                                          "invocation_stopped"))
            if not retry or time.monotonic() > deadline:
                return ev
            time.sleep(0.2)

    # -- lifecycle -----------------------------------------------------------------------

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "exit"})
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                pass
        if self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        self._stderr.close()
        if os.path.exists(self._stderr.name):  # stop() may run twice (test, then teardown)
            os.unlink(self._stderr.name)
