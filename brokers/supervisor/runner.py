"""The supervisor's I/O shell: subprocesses, signals, the control sockets, the pid file.

Owns the loop: wait on the control socket and a signal wake-up fd (so SIGCHLD/SIGTERM wake
it at once), reap children, feed the arbiter events and the time, carry out its actions.

Invariants:
- each child runs ``python -m brokers.supervisor.cli run NAME --plan-fd FD`` — forked, as
  our own child, from the pre-imported zygote of ``brokers.supervisor.spawn`` (else, and
  with ``III_SPAWN=exec``, as a fresh interpreter) — in its own
  process group (so a terminal's Ctrl-C reaches only the supervisor, which stops children
  in order) and asks the kernel for SIGTERM when the supervisor dies (PR_SET_PDEATHSIG,
  set by the child itself in ``cli run``), so no child outlives us;
- a child starts on its part of ``self.plan`` (``brokers.supervisor.plan``), never on the
  config file: FD is an anonymous in-memory file holding its encoded spec, made per spawn
  and closed here once the child has it, so the spec (which may carry secrets) never has a
  name on disk and nothing is left behind, even by a supervisor killed with SIGKILL;
- signals go to the child's whole process group, so anything it forked dies with it;
- the runtime dir is ours alone and ``<runtime_dir>/supervisor.pid`` is locked and names
  us while we run (``brokers.supervisor.rundir``): a second supervisor on the same runtime
  dir refuses to start, a stale or planted pid file does not stop one; an existing data
  dir that others could read is tightened to 0700 (the stores tighten their own dirs);
- every listening address of the plan is bound here once, before any child starts, and
  kept open until we exit; children serve it through the inherited descriptor, so a
  restarted gateway finds its port at once and nobody else can share it
  (``brokers.kit.listen``);
- if a process goes FATAL before the engine was ever up, the engine is stopped and
  ``run`` returns ``EXIT_NOT_STARTED``: ``start`` never keeps running half an engine;
- ``reload`` (the control command, or SIGHUP) reads the config file again and moves the
  engine to the next plan generation by diff (``brokers.supervisor.diff``): a config that
  does not validate, or a new address that cannot be bound, is refused before anything
  changes; new listening addresses are bound here before any process that serves them is
  spawned, and the ones no process of the new plan serves are closed (their old process
  keeps its own descriptor until it exits);
- a stop (SIGTERM, SIGINT, ``stop``) first closes our copies of the listening sockets:
  once each ingress process has closed its own (at once, when it is told to stop), new
  connections are refused, while the calls already in flight drain (``engine.stop_timeout_ms``;
  our SIGKILL comes ``STOP_MARGIN`` seconds after that). A second signal kills at once.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import zmq

from brokers.kit import config as configmod
from brokers.kit import listen, notify
from brokers.kit.channels import segment
from brokers.kit.hygiene import tighten
from brokers.kit.schema import ConfigError
from brokers.supervisor import diff as diffmod
from brokers.supervisor import rundir, spawn
from brokers.supervisor.arbiter import Action, Arbiter, Event, Kill, Policy, Proc, Spawn
from brokers.supervisor.control import Commands, ControlServer
from brokers.supervisor.plan import Plan
from brokers.supervisor.units import available

log = logging.getLogger(__name__)

EXIT_NOT_STARTED = 1
"""``run``'s result when a process could not start (it went FATAL before the engine was up)."""
_EVENT_LEVELS = {"fatal": logging.ERROR, "backoff": logging.WARNING}

_POLL_MAX = 0.1  # seconds; an upper bound, the loop also wakes on signals and requests
ZYGOTE_RESTARTS = 3
"""A zygote that died (or stopped answering) is replaced at the next spawn this many times
at most; after that every child is a fresh interpreter."""
STOP_MARGIN = 5.0
"""Seconds past ``engine.stop_timeout_ms`` before a stopping process gets SIGKILL: its own
drain must end first (it then closes its connections and exits on its own)."""


def policy_for(plan: Plan, base: Policy | None = None) -> Policy:
    """``base`` (the defaults) with the stop timeout of ``plan``'s engine settings."""
    return replace(base or Policy(), stop_timeout=plan.engine.stop_timeout_ms / 1000 + STOP_MARGIN)


class ReloadRefused(ValueError):
    """A reload that changed nothing: its config is broken, or it cannot be applied now."""


def plan_fd(spec: bytes) -> int:
    """A readable descriptor holding ``spec`` at offset 0, for one child to inherit:
    an anonymous memory file (Linux), else an already unlinked temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("iii-plan", os.MFD_CLOEXEC)
    else:  # pragma: no cover - the engine runs on Linux
        fd = os.dup(tempfile.TemporaryFile().fileno())
    try:
        view = memoryview(spec)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


class Runner:
    """Runs one engine in the foreground: the processes of ``self.plan``.

    ``self.plan`` is read at every spawn: once ``reload`` swapped it, every spawn (a
    restart by the reload, a crash's respawn) runs on the new generation; a process the
    reload left unchanged runs on as it was spawned (``status`` shows its generation)."""

    def __init__(self, plan: Plan, policy: Policy | None = None, *,
                 log_level: str | None = None, log_format: str | None = None,
                 zygote: spawn.Zygote | None = None) -> None:
        self.plan = plan
        self._own_policy = policy is None
        self.arbiter = Arbiter((Proc(p.process, ingress=p.unit.ingress, storage=p.unit.storage)
                                for p in plan.processes),
                               policy_for(plan) if policy is None else policy)
        self.log_level = log_level
        self.log_format = log_format
        """``start --log-level/--log-format``: a reload keeps them over the file's."""
        self.reloads = 0
        """SIGHUPs received (each asks for a reload)."""
        self.control: ControlServer | None = None
        self.children: dict[str, subprocess.Popen[bytes] | spawn.Forked] = {}
        self.zygote: spawn.Zygote | None = zygote
        """Forks the children (``brokers.supervisor.spawn``): the one ``start`` forked
        before reading the config, else one ``run`` starts; None: fresh interpreters."""
        self._zygote_losses = 0
        self.signals: list[int] = []
        self.runtime_dir = plan.engine.runtime_dir
        self.pidlock = rundir.PidLock(self.runtime_dir)
        self.shm_tag = segment.engine_tag(self.runtime_dir)
        self.sockets: dict[str, socket.socket] = {}
        """Listening sockets by ``host:port``, bound in ``run`` and inherited by children."""

    def paths(self) -> dict:
        """Where this engine keeps things, for ``status`` and the start-up log."""
        stores: dict[str, str] = {}
        engine = self.plan.engine
        for p in self.plan.processes:
            stores.update(p.unit.stores(p.config, engine.data_dir))
        return {"config": engine.config_path, "runtime_dir": engine.runtime_dir,
                "data_dir": engine.data_dir, "stores": stores}

    # -- actions ----------------------------------------------------------------------
    def act(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(action.name)
            elif isinstance(action, Kill):
                self._kill(action.name, action.signal)
            elif isinstance(action, Event):
                log.log(_EVENT_LEVELS.get(action.what, logging.INFO), "%s %s", action.topic,
                        action.data)
                if self.control is not None:
                    self.control.publish(action)

    def _spawn(self, name: str) -> None:
        env = notify.child_env(dict(os.environ, III_SUPERVISOR_PID=str(os.getpid())))
        if name not in self.plan.specs:  # removed by a reload meanwhile
            return
        planned = self.plan.process(name)
        generation = self.plan.generation
        mine = {listen.key(h, p): self.sockets[listen.key(h, p)]
                for h, p in planned.unit.listens(planned.config)}
        env[listen.ENV] = listen.env_value(mine)
        try:
            fd = plan_fd(self.plan.spec(name))
        except OSError as exc:
            self.act(self.arbiter.spawn_failed(name, str(exc), time.monotonic()))
            return
        child: subprocess.Popen[bytes] | spawn.Forked | None = None
        try:
            if self.zygote is None and 0 < self._zygote_losses < ZYGOTE_RESTARTS:
                self._start_zygote()  # the last one died: a new one, a few times at most
            if self.zygote is not None:
                try:
                    child = self.zygote.spawn(["run", name, "--plan-fd", "{plan}"], env,
                                              {"plan": fd}, {k: s.fileno() for k, s in mine.items()})
                except spawn.ZygoteError as exc:
                    log.warning("zygote: %s; starting %s as a fresh interpreter", exc, name)
                    self._stop_zygote()
                    self._zygote_losses += 1
            if child is None:
                argv = [sys.executable, "-m", "brokers.supervisor.cli", "run", name,
                        "--plan-fd", str(fd)]
                child = subprocess.Popen(argv, env=env, process_group=0, stdin=subprocess.DEVNULL,
                                         pass_fds=[fd, *(s.fileno() for s in mine.values())])
        except OSError as exc:
            self.act(self.arbiter.spawn_failed(name, str(exc), time.monotonic()))
            return
        finally:
            os.close(fd)  # the child has its own copy; it closes it once read
        self.children[name] = child
        self.act(self.arbiter.spawned(name, child.pid, time.monotonic(), generation))

    def _kill(self, name: str, sig: str) -> None:
        child = self.children.get(name)
        if child is None or child.returncode is not None:
            return
        signum = signal.SIGKILL if sig == "KILL" else signal.SIGTERM
        log.info("%s %s (pid %d)", "killing" if sig == "KILL" else "stopping", name, child.pid)
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            pass
        except PermissionError:
            child.send_signal(signum)

    def _reap(self) -> None:
        for name, child in list(self.children.items()):
            code = child.poll()
            if code is not None:
                del self.children[name]
                segment.sweep(self.shm_tag, child.pid)  # its channel rings, after a crash too
                self.act(self.arbiter.exited(name, code, time.monotonic()))
        self._reap_adopted()

    def _reap_adopted(self) -> None:
        """As a subreaper (spawn.py) we also adopt orphans of our children's descendants:
        reap those, never one of our children (``poll`` above reads their status)."""
        ours = {child.pid for child in self.children.values()}
        if self.zygote is not None:
            ours.add(self.zygote.proc.pid)
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in ours:
                return
            try:
                os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                return

    def _start_zygote(self) -> None:
        """Start the zygote children are forked from; without one (``III_SPAWN=exec``, not
        Linux, or it failed: logged) every child is a fresh interpreter."""
        if self.zygote is not None or os.environ.get(spawn.SPAWN_ENV) == "exec" or not spawn.supported():
            return
        env = notify.child_env(dict(os.environ, III_SUPERVISOR_PID=str(os.getpid())))
        try:
            self.zygote = spawn.Zygote.start(env)
        except spawn.ZygoteError as exc:
            log.warning("zygote: %s; children start as fresh interpreters", exc)
            self._zygote_losses += 1

    def _stop_zygote(self) -> None:
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    # -- the loop ---------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.signals.append(signum)
        elif signum == signal.SIGHUP:
            self.reloads += 1

    # -- stop and reload ----------------------------------------------------------------
    def stop_all(self, drain: bool = True) -> None:
        """Stop the engine (ingress first, storage last). Our listening sockets close
        first: once each ingress process has closed its own, new connections are refused."""
        for sock in self.sockets.values():
            sock.close()
        self.act(self.arbiter.stop_all(time.monotonic(), drain=drain))

    def next_plan(self) -> Plan:
        """The next generation, made from the config file as it is now; ``ConfigError``
        if it does not validate."""
        units = available()
        cfg = configmod.load(self.plan.engine.config_path, units)
        plan = Plan.make(cfg, configmod.plan(cfg, units), now=time.time(),
                         generation=self.plan.generation + 1, log_level=self.log_level,
                         log_format=self.log_format)
        if plan.engine.runtime_dir != self.plan.engine.runtime_dir:
            raise ConfigError(f"engine.runtime_dir: cannot change on reload (running on "
                              f"{self.plan.engine.runtime_dir}, the file says "
                              f"{plan.engine.runtime_dir}); stop and start the engine")
        for warning in cfg.warnings:
            log.warning("%s", warning)
        return plan

    def reload(self) -> dict:
        """Move the engine to the config file as it is now (see the module docstring);
        returns the diff and the new generation. ``ReloadRefused`` (logged) when nothing
        changed because it could not be done."""
        try:
            if self.arbiter.stopping:
                raise ReloadRefused("the engine is stopping")
            if self.arbiter.reloading is not None:
                raise ReloadRefused("a reload is already under way; try again once it is done")
            try:
                new = self.next_plan()
            except ConfigError as exc:
                raise ReloadRefused(str(exc)) from None
            change = diffmod.plans(self.plan, new, available())
            wanted = {listen.key(h, p): (h, p) for q in new.processes for h, p in q.unit.listens(q.config)}
            try:
                bound = listen.bind_all(a for k, a in wanted.items() if k not in self.sockets)
            except OSError as exc:
                raise ReloadRefused(exc.args[-1] if exc.args else str(exc)) from None
        except ReloadRefused as exc:
            log.error("reload refused, the engine is unchanged: %s", exc)
            raise
        old = self.plan
        self.plan = new
        self.sockets.update(bound)
        for k in [k for k in self.sockets if k not in wanted]:
            self.sockets.pop(k).close()
        if self._own_policy:
            self.arbiter.policy = policy_for(new, self.arbiter.policy)
        procs = [Proc(p.process, ingress=p.unit.ingress, storage=p.unit.storage) for p in new.processes]
        log.info("reload: plan generation %d -> %d (config %s): added %s; removed %s; changed %s; "
                 "unchanged %s", old.generation, new.generation, new.engine.config_path,
                 ", ".join(change.added) or "none", ", ".join(change.removed) or "none",
                 ", ".join(f"{n} ({change.reasons[n]})" for n in change.changed) or "none",
                 ", ".join(change.unchanged) or "none")
        self.act(self.arbiter.reload(procs, change.changed, change.removed, time.monotonic()))
        return {"generation": new.generation, **change.info()}

    def run(self) -> int:
        """Start everything, supervise until stopped; returns the exit code.

        Raises ``rundir.UnsafeRuntimeDir``, ``rundir.AlreadyRunning`` or ``listen.PortInUse`` /
        ``listen.ListenError`` before anything was started."""
        rundir.prepare(self.runtime_dir)
        self.pidlock.acquire()
        try:
            segment.sweep(self.shm_tag)  # what a killed engine of this runtime dir left
            tighten(self.plan.engine.data_dir, "data dir")  # made by the stores if missing
            self.sockets = listen.bind_all(a for p in self.plan.processes
                                           for a in p.unit.listens(p.config))
            self._start_zygote()  # a fresh interpreter: it holds none of our descriptors
            try:
                return self._run()
            finally:
                self._stop_zygote()
                for sock in self.sockets.values():
                    sock.close()
        finally:
            self.pidlock.release()

    def _run(self) -> int:
        exit_code = 0
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        old = {s: signal.signal(s, self._on_signal)
               for s in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)}
        ctx = zmq.Context()
        start = time.monotonic()
        self.control = None
        try:
            paths = self.paths()
            self.control = ControlServer(ctx, self.runtime_dir, Commands(
                self.arbiter, self.act, time.monotonic, start, self.paths,
                plan=lambda: self.plan.info(), reload=self.reload, stop=self.stop_all))
            log.info("supervisor %d starting %s (config %s, plan generation %d, runtime dir %s, "
                     "data dir %s)", os.getpid(), ", ".join(self.plan.specs),
                     self.plan.engine.config_path, self.plan.generation, self.runtime_dir,
                     self.plan.engine.data_dir)
            for name, where in paths["stores"].items():
                log.info("store %s: %s", name, where)
            self.act(self.arbiter.start(start))
            poller = zmq.Poller()
            poller.register(self.control.router, zmq.POLLIN)
            poller.register(wake_r.fileno(), zmq.POLLIN)
            handled = reloads = 0
            watchdog = notify.Watchdog()  # single-unit mode (iii-supervisor.service)
            told_ready = told_stopping = False
            while not self.arbiter.done:
                now = time.monotonic()
                deadline = self.arbiter.next_deadline()
                timeout = _POLL_MAX if deadline is None else max(0.0, min(_POLL_MAX, deadline - now))
                poller.poll(int(timeout * 1000) + 1)
                try:
                    while wake_r.recv(512):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
                while handled < len(self.signals):
                    handled += 1
                    drain = handled == 1  # a second signal skips the drain
                    log.info("signal %d: stopping all (%s)", self.signals[handled - 1],
                             "drain" if drain else "kill now")
                    self.stop_all(drain=drain)
                while reloads < self.reloads:
                    reloads += 1
                    log.info("SIGHUP: reloading the config")
                    try:
                        self.reload()
                    except ReloadRefused:
                        pass  # logged; the engine runs on as it was
                    except Exception:  # a bug must not take the engine down with it
                        log.exception("reload failed")
                self._reap()
                self.control.drain()
                self.act(self.arbiter.tick(time.monotonic()))
                if self.arbiter.ready and not told_ready:
                    told_ready = notify.ready() or True
                if self.arbiter.stopping and not told_stopping:
                    told_stopping = notify.stopping() or True
                watchdog.beat()
                if not self.arbiter.ready and not self.arbiter.stopping and self.arbiter.fatal:
                    log.error("engine not started: %s could not start (its log lines above "
                              "say why); stopping", ", ".join(self.arbiter.fatal))
                    exit_code = EXIT_NOT_STARTED
                    self.stop_all()
            log.info("supervisor %d: all processes stopped", os.getpid())
            return exit_code
        finally:
            for child in self.children.values():  # only on an unexpected error in the loop
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except OSError:
                    pass
            if self.control is not None:
                self.control.close()
            ctx.term()
            for s, handler in old.items():
                signal.signal(s, handler)
            signal.set_wakeup_fd(old_fd)
            wake_r.close()
            wake_w.close()
            for leftover in (os.path.join(self.runtime_dir, "supervisor.ctl"),
                             os.path.join(self.runtime_dir, "supervisor.pub")):
                try:
                    os.unlink(leftover)
                except FileNotFoundError:
                    pass
