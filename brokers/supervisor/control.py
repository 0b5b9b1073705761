"""The supervisor's control plane, after circus: a ZeroMQ ROUTER for commands, a PUB for events.

Endpoints (under the engine's runtime dir):
    ipc://<runtime_dir>/supervisor.ctl   ROUTER; request ``{"command": str, "args": {...}}``
                                         as one JSON frame, reply ``{"ok": true, "result": ...}``
                                         or ``{"ok": false, "error": str}``
    ipc://<runtime_dir>/supervisor.pub   PUB; multipart ``[topic, JSON]`` with topics
                                         ``proc.<name>.spawn|exit|backoff|fatal``

Each command is one ``cmd_<name>`` method of ``Commands``; its docstring is its reference
(``iii-supervisor`` prints them). Invariants: a handler never blocks and never raises to the
socket loop (errors become ``ok: false`` replies); the client side (``call``) always times out.
"""
from __future__ import annotations

import glob
import logging
import os
import time
from typing import Any, Callable

import orjson
import zmq

from brokers.supervisor.arbiter import Action, Arbiter, Event

log = logging.getLogger(__name__)


def ctl_endpoint(runtime_dir: str) -> str:
    return f"ipc://{os.path.join(runtime_dir, 'supervisor.ctl')}"


def pub_endpoint(runtime_dir: str) -> str:
    return f"ipc://{os.path.join(runtime_dir, 'supervisor.pub')}"


class Commands:
    """Command handlers; ``act`` carries out the arbiter's actions, ``clock`` gives monotonic now."""

    def __init__(self, arbiter: Arbiter, act: Callable[[list[Action]], None],
                 clock: Callable[[], float], started: float,
                 paths: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
                 plan: Callable[[], dict[str, Any]] | None = None,
                 reload: Callable[[], dict[str, Any]] | None = None,
                 stop: Callable[[bool], None] | None = None) -> None:
        self.arbiter = arbiter
        self.act = act
        self.clock = clock
        self.started = started
        self.paths = paths or {}
        self.plan = plan
        """The current plan's ``info()``, asked at each ``status`` (a reload swaps plans)."""
        self.reload = reload
        """The runner's reload: re-read the config, diff, act; raises with the reason."""
        self.stop = stop
        """The runner's stop-all (``drain``); None: the arbiter's actions are carried out."""

    def cmd_status(self, args: dict[str, Any]) -> Any:
        """status: every process with its state, pid, uptime (s), restarts and last exit code;
        the supervisor's own pid and uptime; ``paths``: the config, runtime dir, data dir
        and where each store lives (``{"state": "/abs/dir", ...}``); ``plan``: the plan the
        processes run on (``generation``, ``planned_at`` in epoch seconds, the ``config``
        it was read from), or null. Args: none."""
        now = self.clock()
        return {"pid": os.getpid(), "uptime": round(now - self.started, 3),
                "stopping": self.arbiter.stopping,
                "reloading": self.arbiter.reloading is not None,
                "paths": self.paths() if callable(self.paths) else self.paths,
                "plan": self.plan() if self.plan is not None else None,
                "processes": self.arbiter.status(now)}

    def cmd_stop(self, args: dict[str, Any]) -> Any:
        """stop: stop every process (ingress first, storage last) and exit the supervisor;
        each ingress process stops accepting at once and lets its calls in flight finish
        (up to ``engine.stop_timeout_ms``), the others serve until their turn.
        Args: ``drain`` (bool, default true); false kills the children at once."""
        log.info("stop requested over the control socket")
        drain = bool(args.get("drain", True))
        if self.stop is not None:
            self.stop(drain)
        else:
            self.act(self.arbiter.stop_all(self.clock(), drain=drain))
        return {"stopping": True}

    def cmd_reload(self, args: dict[str, Any]) -> Any:
        """reload: read the config file again and move the engine to it: processes added
        to it are started, changed ones restarted, removed ones stopped; the others keep
        running (their pids and connections). A config that does not validate is refused
        (``ok: false`` with its error) and nothing changes. Also what SIGHUP does. Result:
        ``generation`` (the new plan's), ``added``, ``removed``, ``changed``, ``unchanged``
        (process names) and ``reasons`` (why each changed one is). Args: none."""
        if self.reload is None:
            raise ValueError("this supervisor cannot reload")
        log.info("reload requested over the control socket")
        return self.reload()

    def cmd_restart(self, args: dict[str, Any]) -> Any:
        """restart PROC: stop process ``args.name`` (SIGTERM, then SIGKILL after the stop
        timeout) and start it again; also revives a FATAL process."""
        name = args.get("name")
        if name not in self.arbiter.procs:
            raise ValueError(f"unknown process {name!r} (known: {', '.join(self.arbiter.procs)})")
        log.info("restart of %s requested over the control socket", name)
        self.act(self.arbiter.restart(name, self.clock()))
        return {"restarting": name}

    def handle(self, request: bytes) -> bytes:
        """One request frame in, one reply frame out."""
        try:
            msg = orjson.loads(request)
            handler = getattr(self, f"cmd_{msg.get('command')}", None)
            if handler is None:
                raise ValueError(f"unknown command {msg.get('command')!r}")
            reply = {"ok": True, "result": handler(msg.get("args") or {})}
        except Exception as exc:  # a bad request must not take the supervisor down
            reply = {"ok": False, "error": str(exc)}
        return orjson.dumps(reply)


class ControlServer:
    """The two sockets, bound by the runner and polled in its loop."""

    def __init__(self, ctx: zmq.Context, runtime_dir: str, commands: Commands) -> None:
        self.commands = commands
        self.router = ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind(ctl_endpoint(runtime_dir))
        self.pub = ctx.socket(zmq.PUB)
        self.pub.linger = 0
        self.pub.bind(pub_endpoint(runtime_dir))

    def drain(self) -> None:
        """Answer every request waiting on the ROUTER (never blocks)."""
        while True:
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ident, body = frames[0], frames[-1]
            self.router.send_multipart([ident, b"", self.commands.handle(body)])

    def publish(self, event: Event) -> None:
        self.pub.send_multipart([event.topic.encode(), orjson.dumps(event.data)])

    def close(self) -> None:
        self.router.close()
        self.pub.close()


def running_engines(pattern: str = "/tmp/iii-*") -> list[str]:
    """Runtime dirs under ``pattern`` whose control socket exists (a hint for an operator
    who asked the wrong place; not a registry: a runtime dir can be anywhere)."""
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(pattern, "supervisor.ctl")))


def call(runtime_dir: str, command: str, args: dict[str, Any] | None = None,
         timeout: float = 3.0) -> Any:
    """Client side: send one command to the supervisor on ``runtime_dir``; return its result.

    Raises ``ConnectionError`` when no supervisor answers and ``RuntimeError`` for an
    ``ok: false`` reply.
    """
    path = os.path.join(runtime_dir, "supervisor.ctl")
    if not os.path.exists(path):
        raise ConnectionError(f"no supervisor control socket at {path}")
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(ctl_endpoint(runtime_dir))
        sock.send_multipart([b"", orjson.dumps({"command": command, "args": args or {}})])
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000)):
                raise ConnectionError(f"supervisor at {path} did not answer within {timeout} s")
            reply = orjson.loads(sock.recv_multipart()[-1])
            if not reply.get("ok"):
                raise RuntimeError(reply.get("error", "error"))
            return reply["result"]
    finally:
        sock.close()
