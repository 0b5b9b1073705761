"""The supervisor's decisions, as pure logic: events and the time in, actions out.

Owns: each process's state (``states.ProcState``), restart counting, backoff, the ordered
shutdown (ingress first, storage last, each group with a stop timeout then SIGKILL).
No sockets, no subprocesses, no clock: every method takes ``now`` (monotonic seconds) and
returns a list of actions that ``runner.py`` carries out.

Restart policy (after supervisor(8)):
- a process that exits after running at least ``startsecs`` is restarted after
  ``crash_delay`` (0.1 s): ``kill -9`` of a healthy child costs well under a second;
- a process that exits during ``startsecs`` backs off ``backoff_base * 2**(n-1)`` seconds
  (capped at ``backoff_max``) and goes FATAL after ``startretries`` such failures in a row;
- ``restarts`` counts automatic respawns (not operator restarts).
- a process that exits with ``EXIT_NO_RETRY`` (it cannot start, and trying again would
  not help: its port is taken, its store path is unusable) goes FATAL at once.
Reload (``reload``): the processes of the next plan generation in, as a diff
(``brokers.supervisor.diff``): removed and changed processes are stopped group by group
(ingress first, storage last, as a shutdown), then changed and added ones are spawned in
plan order (storage first, ingress last); unchanged ones are not touched. A removed
process leaves ``procs`` when it has exited. One reload at a time; none while stopping.

Invariants: only processes in ``alive`` states have a pid; during shutdown nothing is spawned;
a group is signalled only once every process of the groups before it has exited; during a
reload's stop phase nothing it stops is respawned.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from brokers.supervisor.states import EXIT_NO_RETRY, ProcState


@dataclass(frozen=True)
class Policy:
    startsecs: float = 1.0
    startretries: int = 3
    crash_delay: float = 0.1
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    stop_timeout: float = 5.0
    autorestart: bool = True


@dataclass(frozen=True)
class Spawn:
    name: str


@dataclass(frozen=True)
class Kill:
    name: str
    signal: str
    """``TERM`` or ``KILL``."""


@dataclass(frozen=True)
class Event:
    """A lifecycle event for the PUB socket: topic ``proc.<name>.<what>``."""

    name: str
    what: str
    """spawn | exit | backoff | fatal"""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        return f"proc.{self.name}.{self.what}"


Action = Spawn | Kill | Event


@dataclass
class Proc:
    name: str
    ingress: bool = False
    storage: bool = False
    state: ProcState = ProcState.STOPPED
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    failures: int = 0
    """Consecutive exits during startsecs."""
    next_start: float | None = None
    stop_deadline: float | None = None
    killed: bool = False
    last_exit: int | None = None
    restart_requested: bool = False
    generation: int | None = None
    """The plan generation its current (or last) OS process was spawned on."""

    def info(self, now: float) -> dict[str, Any]:
        """What ``status`` shows for this process."""
        uptime = now - self.started_at if self.state.alive and self.started_at is not None else 0.0
        return {"name": self.name, "state": self.state.value, "pid": self.pid,
                "uptime": round(uptime, 3), "restarts": self.restarts, "last_exit": self.last_exit,
                "generation": self.generation}


@dataclass
class Reload:
    """A reload under way: what it still has to stop, then what it starts."""

    stop: set[str]
    """Removed and changed processes not yet exited."""
    start: list[str]
    """Changed and added processes, in plan order, spawned once ``stop`` is empty."""
    removed: set[str]


def _ran(p: Proc, now: float) -> float:
    """How long ``p`` has been up (0 if it never started)."""
    return 0.0 if p.started_at is None else now - p.started_at


class Arbiter:
    """Decides for a fixed, ordered set of processes (the config's plan)."""

    def __init__(self, procs: Iterable[Proc], policy: Policy | None = None) -> None:
        self.procs: dict[str, Proc] = {p.name: p for p in procs}
        self.policy = policy or Policy()
        self.stopping = False
        self.ready = False
        """Every process has been RUNNING at once (the engine came up)."""
        self.reloading: Reload | None = None
        """The reload under way, if any."""

    # -- commands ---------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Spawn every process, in plan order (storage first, ingress last)."""
        return [Spawn(p.name) for p in self.procs.values() if not p.state.alive]

    def stop_all(self, now: float, drain: bool = True) -> list[Action]:
        """Stop everything: ingress first, storage last; ``drain=False`` kills at once."""
        first = not self.stopping
        self.stopping = True
        self.reloading = None  # nothing of a reload under way is started any more
        actions: list[Action] = []
        for p in self.procs.values():
            if not p.state.alive and p.state is not ProcState.STOPPED:
                p.state, p.next_start = ProcState.STOPPED, None
        if not drain:
            for p in self.procs.values():
                if p.state.alive and not p.killed:
                    p.killed, p.state = True, ProcState.STOPPING
                    actions.append(Kill(p.name, "KILL"))
            return actions
        if first:
            actions += self._next_stop_group(now)
        return actions

    def restart(self, name: str, now: float) -> list[Action]:
        """Operator restart: TERM a live process and respawn it on exit; revive FATAL/BACKOFF."""
        p = self.procs[name]
        if self.stopping:
            return []
        p.failures = 0
        if p.state.alive:
            p.restart_requested = True
            return self._term(p, now)
        p.state, p.next_start = ProcState.STOPPED, None
        return [Spawn(name)]

    def reload(self, procs: Iterable[Proc], changed: Iterable[str], removed: Iterable[str],
               now: float) -> list[Action]:
        """Move to the next plan: ``procs`` are its processes in start order (new ones
        STOPPED; existing ones are kept as they are, only their ``ingress``/``storage``
        taken from ``procs``); ``changed`` are restarted, ``removed`` stopped and dropped,
        the others of ``procs`` that are not yet known started. Raises ``RuntimeError``
        while stopping or while another reload is under way."""
        if self.stopping:
            raise RuntimeError("the engine is stopping")
        if self.reloading is not None:
            raise RuntimeError("a reload is already under way")
        procs = list(procs)
        changed, removed = set(changed), set(removed)
        names = {p.name for p in procs}
        unknown = (changed - set(self.procs)) | (removed - set(self.procs)) | (removed & names)
        if unknown:
            raise ValueError(f"reload names processes it cannot act on: {', '.join(sorted(unknown))}")
        added = [p.name for p in procs if p.name not in self.procs]
        # the new order: the plan's, then what is being removed (it leaves once exited)
        old = self.procs
        self.procs = {}
        for p in procs:
            if p.name in old:
                kept = old[p.name]
                kept.ingress, kept.storage = p.ingress, p.storage
                self.procs[p.name] = kept
            else:
                self.procs[p.name] = p
        for name in old:
            if name in removed:
                self.procs[name] = old[name]
        stop: set[str] = set()
        for name in changed | removed:
            p = self.procs[name]
            p.failures, p.restart_requested = 0, False
            if p.state.alive:
                stop.add(name)
            else:
                p.state, p.next_start = ProcState.STOPPED, None
                if name in removed:
                    del self.procs[name]
        start = [name for name in self.procs if name in changed or name in added]
        self.reloading = Reload(stop, start, removed)
        return self._reload_step(now)

    # -- events -----------------------------------------------------------------------
    def spawned(self, name: str, pid: int, now: float, generation: int | None = None
                ) -> list[Action]:
        p = self.procs[name]
        p.state, p.pid, p.started_at = ProcState.STARTING, pid, now
        p.next_start = p.stop_deadline = None
        p.killed = False
        p.generation = generation
        return [Event(name, "spawn", {"pid": pid} if generation is None
                      else {"pid": pid, "generation": generation})]

    def spawn_failed(self, name: str, error: str, now: float) -> list[Action]:
        """The OS refused to start it: count it as a failure during startsecs."""
        p = self.procs[name]
        p.started_at = now
        return self._crashed(p, now, ran=0.0) + [Event(name, "exit", {"error": error})]

    def exited(self, name: str, code: int, now: float) -> list[Action]:
        """Process ``name`` exited with ``code`` (negative: killed by that signal)."""
        p = self.procs[name]
        ran = _ran(p, now)
        p.pid, p.last_exit, p.stop_deadline = None, code, None
        actions: list[Action] = [Event(name, "exit", {"code": code, "ran": round(ran, 3)})]
        if self.stopping:
            p.state = ProcState.STOPPED
            return actions + self._next_stop_group(now)
        if self.reloading is not None and name in self.reloading.stop:
            p.state, p.restart_requested = ProcState.STOPPED, False
            self.reloading.stop.discard(name)
            if name in self.reloading.removed:
                del self.procs[name]
            return actions + self._reload_step(now)
        if p.restart_requested or p.state is ProcState.STOPPING:
            p.restart_requested = False
            p.state = ProcState.STOPPED
            return actions + [Spawn(name)]
        if not self.policy.autorestart:
            p.state = ProcState.EXITED if code == 0 else ProcState.FATAL
            return actions
        if code == EXIT_NO_RETRY:
            p.state, p.next_start = ProcState.FATAL, None
            return actions + [Event(name, "fatal", {"code": code})]
        return actions + self._crashed(p, now, ran)

    def tick(self, now: float) -> list[Action]:
        """Advance timers: STARTING -> RUNNING, BACKOFF -> respawn, stop timeout -> KILL."""
        actions: list[Action] = []
        for p in self.procs.values():
            if p.state is ProcState.STARTING and _ran(p, now) >= self.policy.startsecs:
                p.state, p.failures = ProcState.RUNNING, 0
            elif (p.state is ProcState.BACKOFF and not self.stopping
                  and p.next_start is not None and now >= p.next_start):
                p.restarts += 1
                p.next_start = None
                actions.append(Spawn(p.name))
            elif (p.state is ProcState.STOPPING and not p.killed
                  and p.stop_deadline is not None and now >= p.stop_deadline):
                p.killed = True
                actions.append(Kill(p.name, "KILL"))
        if not self.ready and all(p.state is ProcState.RUNNING for p in self.procs.values()):
            self.ready = True
        return actions

    # -- queries ----------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once a shutdown has begun and every process has exited."""
        return self.stopping and not any(p.state.alive for p in self.procs.values())

    @property
    def fatal(self) -> list[str]:
        """The processes in FATAL (an operator's ``restart`` is needed)."""
        return [p.name for p in self.procs.values() if p.state is ProcState.FATAL]

    def next_deadline(self) -> float | None:
        """The earliest time ``tick`` has something to do (for the runner's poll timeout)."""
        times = []
        for p in self.procs.values():
            if p.state is ProcState.STARTING and p.started_at is not None:
                times.append(p.started_at + self.policy.startsecs)
            elif p.state is ProcState.BACKOFF and p.next_start is not None:
                times.append(p.next_start)
            elif p.state is ProcState.STOPPING and p.stop_deadline is not None and not p.killed:
                times.append(p.stop_deadline)
        return min(times) if times else None

    def status(self, now: float) -> list[dict[str, Any]]:
        return [p.info(now) for p in self.procs.values()]

    # -- internals --------------------------------------------------------------------
    def _crashed(self, p: Proc, now: float, ran: float) -> list[Action]:
        if ran >= self.policy.startsecs:
            p.failures = 0
            delay = self.policy.crash_delay
        else:
            p.failures += 1
            if p.failures > self.policy.startretries:
                p.state, p.next_start = ProcState.FATAL, None
                return [Event(p.name, "fatal", {"failures": p.failures})]
            delay = min(self.policy.backoff_base * 2 ** (p.failures - 1), self.policy.backoff_max)
        p.state, p.next_start = ProcState.BACKOFF, now + delay
        return [Event(p.name, "backoff", {"delay": delay})]

    def _reload_step(self, now: float) -> list[Action]:
        """TERM the next group of what the reload stops; once all of it has exited,
        spawn what it starts (plan order) and finish."""
        r = self.reloading
        if r is None:
            return []
        actions = self._term_next_group([p for p in self.procs.values() if p.name in r.stop], now)
        if actions is not None:
            return actions
        self.reloading = None
        return [Spawn(name) for name in r.start
                if name in self.procs and not self.procs[name].state.alive]

    def _term(self, p: Proc, now: float) -> list[Action]:
        p.state, p.stop_deadline = ProcState.STOPPING, now + self.policy.stop_timeout
        return [Kill(p.name, "TERM")]

    def _next_stop_group(self, now: float) -> list[Action]:
        """TERM the next group (ingress, others, storage) once the previous one is gone."""
        return self._term_next_group(list(self.procs.values()), now) or []

    def _term_next_group(self, procs: list[Proc], now: float) -> list[Action] | None:
        """Of ``procs``, TERM the next group (ingress, others, storage) once the previous
        one is gone: the actions ([] while a group drains), None once all have exited."""
        groups = ([p for p in procs if p.ingress and not p.storage],
                  [p for p in procs if not p.ingress and not p.storage],
                  [p for p in procs if p.storage])
        for group in groups:
            live = [p for p in group if p.state.alive]
            if not live:
                continue
            if any(p.state is ProcState.STOPPING for p in live):
                return []  # this group is still draining
            actions: list[Action] = []
            for p in live:
                actions += self._term(p, now)
            return actions
        return None
