"""systemd units for an engine's plan: one unit per process, or the supervisor as one unit.

``render_units(plan, ...)`` turns a ``Plan`` into unit files (name -> text); pure, no
files, no clock. ``write_units`` writes them; ``plan_for`` makes the plan the units will
actually run on (the config read with the environment systemd gives the processes).
``iii-supervisor units CONFIG --out DIR`` is the command; ``conf/systemd/`` holds its
output for ``conf/iii-config.yaml``.

What is rendered:
- ``iii.target``: the engine. It ``Wants=`` and is ``After=`` every planned instance, so
  ``systemctl start iii.target`` returns once every process has sent ``READY=1``.
- ``iii@.service``: the template; instance ``iii@<process>.service`` runs
  ``iii-supervisor run <process> --config CONFIG`` (``%i``, the raw instance name, so
  ``gateway-0`` stays ``gateway-0``), ``Type=notify`` (``brokers.kit.notify``),
  ``Restart=on-failure`` except for ``EXIT_NO_RETRY`` (a port in use: trying again would
  not help), ``PartOf=iii.target``, and the hardening below.
- ``iii@<process>.service.d/order.conf``: the start order, one drop-in per non-storage
  instance. A drop-in rather than a unit per process: the template stays the single
  place where how a process runs is said, and a drop-in says only what differs per
  instance. Storage processes have none; every other process ``Wants=`` and is
  ``After=`` every storage process; ingress processes (gateway, http) also every other
  non-ingress one. ``After=`` on a ``Type=notify`` unit waits for its ``READY=1``, so the
  gateway opens its port only once state, queue, router, ... serve; systemd stops in the
  reverse order, so ingress stops first and storage last, as the supervisor's drain does.
  ``Wants=`` (not ``Requires=``): a restart of ``iii@state`` does not restart the
  processes after it; they recover from it as under the supervisor.
- ``iii-supervisor.service``: single-unit mode, ``iii-supervisor start CONFIG`` as one
  ``Type=notify`` unit (the supervisor sends ``READY=1`` once every process is RUNNING),
  ``KillMode=mixed`` (SIGTERM to the supervisor alone, which drains its children in
  order; SIGKILL to whatever is left at the timeout), ``ExecReload`` = SIGHUP (reload by
  diff). It ``Conflicts=iii.target``: the two modes share the runtime dir and the ports.

Paths: the ipc sockets are in ``/run/iii`` (``RuntimeDirectory=iii``, one directory for
every instance, so ``RuntimeDirectoryPreserve=yes``: the first instance to stop must not
remove the sockets of the others), the data in ``/var/lib/iii`` (``StateDirectory=iii``).
The units set ``III_RUNTIME_DIR=/run/iii`` and ``III_DATA_DIR=/var/lib/iii``, which the
default config's ``engine.runtime_dir: ${III_RUNTIME_DIR:...}`` and
``data_dir: ${III_DATA_DIR:...}`` pick up. The runtime dir must be under ``/run``:
``PrivateTmp=yes`` gives every unit a ``/tmp`` of its own, so sockets under ``/tmp``
would be invisible to the other processes. ``render_units`` refuses a plan whose runtime
dir is elsewhere (``UnitsError``), and ``plan_for`` reads the config with the environment
the units give (and the ``EnvironmentFile``, which overrides ``Environment=`` in systemd),
so what it checks is what will run.

Hardening: ``NoNewPrivileges=yes``, ``ProtectSystem=strict`` (all read-only but /dev,
/proc, /sys: the channel rings in /dev/shm still work), ``ReadWritePaths=`` the data and
runtime dirs only, ``PrivateTmp=yes``, ``ProtectHome=read-only``, ``UMask=0077``; secrets
come from ``EnvironmentFile=-<env_file>`` (``-``: optional).

Install and start (as root; the four commands of the README)::

    iii-supervisor units /etc/iii/iii-config.yaml --out /etc/systemd/system
    systemctl daemon-reload
    systemctl enable --now iii.target
    systemctl status 'iii@*'

Invariants: one instance per planned process, named as the plan names it; the rendered
text depends only on the arguments (the same plan gives the same bytes, so the committed
``conf/systemd/`` can be checked against a fresh render); nothing here reads the config's
secrets into a unit (only process names, paths and the stop timeout are used).
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from typing import Any, Mapping

from brokers.kit import config as configmod
from brokers.supervisor.plan import Plan
from brokers.supervisor.states import EXIT_NO_RETRY

RUNTIME_DIR = "/run/iii"
DATA_DIR = "/var/lib/iii"
ENV_FILE = "/etc/iii/iii.env"
UNIT_ENV = {"III_RUNTIME_DIR": RUNTIME_DIR, "III_DATA_DIR": DATA_DIR}
"""What every unit sets with ``Environment=`` (the default config reads both)."""
TARGET = "iii.target"
TEMPLATE = "iii@.service"
SUPERVISOR = "iii-supervisor.service"
STOP_MARGIN_S = 5
"""Seconds systemd waits beyond the engine's own stop timeout before SIGKILL: the drain
ends on the engine's clock first."""
STOP_GROUPS = 3
"""The supervisor drains ingress, the others, then storage, each up to the stop timeout."""


class UnitsError(ValueError):
    """The plan cannot run under these units (its runtime dir is not under /run)."""


def instance(process: str) -> str:
    return f"iii@{process}.service"


def _one_process_per_port(plan: Plan) -> None:
    """``UnitsError`` if two planned processes serve one address (``processes: 2``).

    Under the supervisor they share the socket it bound (``brokers.kit.listen``); a process
    run alone binds by itself, without ``SO_REUSEPORT`` (on purpose), so the second one
    would fail with its port in use. Sharing under per-process units needs systemd socket
    activation (a ``.socket`` unit holding the port, ``$LISTEN_FDS`` read by ``listen``),
    which the engine does not read yet."""
    seen: dict[str, str] = {}
    for p in plan.processes:
        for host, port in p.unit.listens(p.config):
            where = f"{host}:{port}"
            if port == 0:  # an ephemeral port: each process gets its own
                continue
            if where in seen:
                raise UnitsError(
                    f"{seen[where]} and {p.process} both serve {where}: per-process units "
                    f"run one process per port (set the {p.unit.name} config's processes "
                    f"to 1), or run the engine as {SUPERVISOR}, whose supervisor shares the "
                    f"port between them")
            seen[where] = p.process


def _stop_timeout(plan: Plan, given: float | None) -> float | None:
    """The engine's stop timeout in seconds: ``given``, else the config's, if it has one
    (``engine.stop_timeout`` in seconds or ``stop_timeout_ms``, whichever the settings
    carry), else None (systemd's default then applies)."""
    if given is not None:
        return given
    seconds = getattr(plan.engine, "stop_timeout", None)
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        return float(seconds)
    millis = getattr(plan.engine, "stop_timeout_ms", None)
    if isinstance(millis, (int, float)) and not isinstance(millis, bool):
        return millis / 1000
    return None


def _systemd_dir(path: str, base: str) -> str | None:
    """``path`` relative to ``base`` (``/run``, ``/var/lib``), or None if not under it."""
    path = os.path.normpath(path)
    if path.startswith(base + "/") and path != base:
        return path[len(base) + 1:]
    return None


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _header(command: str, what: str) -> str:
    return (f"# Generated by `{command}`\n"
            f"# (brokers/supervisor/systemd.py); do not edit: render again after changing "
            f"the config.\n# {what}\n")


def units_command(config_path: str) -> str:
    """The command a header names when the caller does not say which one it ran."""
    return f"iii-supervisor units {config_path} --out /etc/systemd/system"


def render_units(plan: Plan, config_path: str, *, user: str | None, exe: str,
                 env_file: str = ENV_FILE, stop_timeout: float | None = None,
                 watchdog_sec: float | None = None,
                 command: str | None = None) -> dict[str, str]:
    """The unit files of ``plan`` (file name -> text), for ``exe`` (an absolute
    ``iii-supervisor``) running ``config_path`` as ``user`` (None: root).

    File names are relative to the unit directory: ``iii.target``, ``iii@.service``,
    ``iii-supervisor.service`` and ``iii@<process>.service.d/order.conf``.
    ``stop_timeout``: seconds (default: the config's, if any); ``watchdog_sec``: sets
    ``WatchdogSec=`` on every unit (the processes ping at half of it); ``command``: the
    command line the files' headers say made them (default: ``units_command``)."""
    runtime_rel = _systemd_dir(plan.engine.runtime_dir, "/run")
    if runtime_rel is None:
        raise UnitsError(
            f"engine.runtime_dir is {plan.engine.runtime_dir}; under systemd it must be under "
            f"/run (PrivateTmp=yes hides /tmp between units): set engine.runtime_dir to "
            f"{RUNTIME_DIR}, or to ${{III_RUNTIME_DIR:...}}, which the units set to "
            f"{RUNTIME_DIR} (and do not set III_RUNTIME_DIR in {env_file})")
    if not os.path.isabs(exe) or not os.path.isabs(config_path):
        raise UnitsError(f"exe and config must be absolute paths (got {exe!r}, "
                         f"{config_path!r})")
    for label, value in (("exe", exe), ("config", config_path), ("env file", env_file)):
        if any(c.isspace() or c in "%\"'\\$;" for c in value):
            raise UnitsError(f"{label} path {value!r}: no spaces, quotes, %, $, ; or \\ "
                             f"(they would need escaping in a unit file)")
    _one_process_per_port(plan)
    data_dir = os.path.normpath(plan.engine.data_dir)
    state_rel = _systemd_dir(data_dir, "/var/lib")
    timeout = _stop_timeout(plan, stop_timeout)

    paths = [f"RuntimeDirectory={runtime_rel}", "RuntimeDirectoryMode=0700",
             "RuntimeDirectoryPreserve=yes"]
    if state_rel is not None:
        paths += [f"StateDirectory={state_rel}", "StateDirectoryMode=0700"]
    # A data dir outside /var/lib is the operator's to make: "-" so that a missing one
    # fails in the store (one clear log line), not in systemd's mount setup.
    rw_data = data_dir if state_rel is not None else f"-{data_dir}"
    paths += [f"WorkingDirectory={data_dir}" if state_rel is not None else "WorkingDirectory=/",
              f"ReadWritePaths={rw_data} {plan.engine.runtime_dir}"]
    env = [f"Environment={k}={v}" for k, v in UNIT_ENV.items()]
    env.append(f"EnvironmentFile=-{env_file}")
    account = [f"User={user}", f"Group={user}"] if user else []
    hardening = ["UMask=0077", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=read-only", "PrivateTmp=yes"]
    watchdog = [f"WatchdogSec={_seconds(watchdog_sec)}"] if watchdog_sec else []

    def stop_lines(groups: int) -> list[str]:
        if timeout is None:
            return []
        return [f"TimeoutStopSec={math.ceil(timeout * groups) + STOP_MARGIN_S}"]

    names = [instance(p.process) for p in plan.processes]
    made_by = command or units_command(config_path)
    out: dict[str, str] = {}
    out[TARGET] = _header(made_by, "The engine, one unit per process.") + "\n".join([
        "[Unit]",
        "Description=iii engine (one unit per process: iii@<process>.service)",
        f"Wants={' '.join(names)}",
        f"After={' '.join(names)}",
        f"Conflicts={SUPERVISOR}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        ""])
    out[TEMPLATE] = _header(made_by, "\n# ".join([
        "The template of the engine's processes, one instance per planned process:",
        *(f"  {n}" for n in names),
        "iii.target starts them all; iii@<process>.service.d/order.conf orders them",
        "(storage first, ingress last); iii-supervisor.service is the single-unit",
        "alternative. Install and start, as root:",
        "  iii-supervisor units CONFIG --out /etc/systemd/system",
        "  systemctl daemon-reload",
        "  systemctl enable --now iii.target",
        "  systemctl status 'iii@*'",
        f"The processes find each other in {plan.engine.runtime_dir} and keep their data in "
        f"{data_dir};",
        f"secrets go in {env_file} (KEY=VALUE lines; it must not set III_RUNTIME_DIR).",
    ])) + "\n".join([
        "[Unit]",
        "Description=iii engine process %i",
        "PartOf=iii.target",
        "After=network.target",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exe} run %i --config {config_path}",
        "Restart=on-failure",
        "RestartSec=100ms",
        f"RestartPreventExitStatus={EXIT_NO_RETRY}",
        *stop_lines(1),
        *watchdog,
        *account,
        *env,
        *paths,
        *hardening,
        "SyslogIdentifier=iii-%i",
        "",
        "[Install]",
        "WantedBy=iii.target",
        ""])

    storage = [instance(p.process) for p in plan.processes if p.unit.storage]
    middle = [instance(p.process) for p in plan.processes
              if not p.unit.storage and not p.unit.ingress]
    for p in plan.processes:
        if p.unit.storage:
            continue
        before = storage + (middle if p.unit.ingress else [])
        if not before:
            continue
        role = "ingress: after storage and every other process" if p.unit.ingress \
            else "after every storage process"
        out[f"{instance(p.process)}.d/order.conf"] = (
            _header(made_by, f"Start order of {p.process} ({role}).") + "\n".join([
                "[Unit]",
                f"Wants={' '.join(before)}",
                f"After={' '.join(before)}",
                ""]))

    out[SUPERVISOR] = _header(made_by, "Single-unit mode: the supervisor runs every "
                                       "process (instead of iii.target).") + \
        "\n".join([
            "[Unit]",
            "Description=iii engine (supervisor and all its processes in one unit)",
            "After=network.target",
            f"Conflicts={TARGET}",
            "",
            "[Service]",
            "Type=notify",
            "NotifyAccess=main",
            f"ExecStart={exe} start {config_path}",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "KillMode=mixed",
            "Restart=on-failure",
            f"RestartPreventExitStatus={EXIT_NO_RETRY}",
            *stop_lines(STOP_GROUPS),
            *watchdog,
            *account,
            *env,
            *paths,
            *hardening,
            "SyslogIdentifier=iii-supervisor",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            ""])
    return out


def write_units(units: Mapping[str, str], out_dir: str) -> list[str]:
    """Write ``units`` under ``out_dir`` (drop-in dirs made as needed); the paths written.
    Files are 0644 whatever the umask: systemd and operators read them, they hold no secret."""
    written = []
    for name in sorted(units):
        path = os.path.join(out_dir, name)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(units[name])
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        written.append(path)
    return written


def read_env_file(path: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a systemd ``EnvironmentFile`` (comments, blanks and
    ``export`` skipped, one level of quotes removed); {} if it cannot be read."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return out
    for line in lines:
        line = line.strip()
        if not line or line[0] in "#;" or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key] = value
    return out


def unit_env(env_file: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the processes get under these units, as far as the config sees
    it: ``base`` (default: ours), then ``Environment=``, then the ``EnvironmentFile``
    (which wins in systemd)."""
    env = dict(os.environ if base is None else base)
    env.update(UNIT_ENV)
    env.update(read_env_file(env_file))
    return env


def plan_for(config_path: str, env_file: str = ENV_FILE,
             base_env: Mapping[str, str] | None = None) -> Plan:
    """The plan the units will run on: ``config_path`` read with ``unit_env``.
    ``ConfigError`` as for ``check``."""
    from brokers.supervisor.units import available  # the brokers' units: imports them all

    env = unit_env(env_file, base_env)
    units = available(env)
    cfg = configmod.load(config_path, units, env)
    return Plan.make(cfg, configmod.plan(cfg, units), now=0.0)


def default_exe() -> str:
    """This ``iii-supervisor``, absolute: the one next to the running interpreter, else
    the one on ``$PATH``, else ``argv[0]``."""
    here = os.path.join(os.path.dirname(sys.executable), "iii-supervisor")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("iii-supervisor")
    return os.path.abspath(found or sys.argv[0])


def render_for(config: str, *, out: str | None, installed_config: str | None = None,
               exe: str | None = None, user: str | None = None, env_file: str = ENV_FILE,
               stop_timeout: float | None = None, watchdog_sec: float | None = None,
               base_env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What ``iii-supervisor units CONFIG --out DIR`` does: plan ``config`` as the units
    will, render for ``installed_config`` (the path ``ExecStart`` names; default
    ``config``, absolute), write under ``out`` if given. Returns ``{"units": ...,
    "written": [...]}``; ``UnitsError`` / ``ConfigError`` on a plan they cannot run."""
    plan = plan_for(config, env_file, base_env)
    argv = ["iii-supervisor", "units", config, "--out", out or "DIR"]
    for flag, value in (("--installed-config", installed_config), ("--exe", exe),
                        ("--user", user), ("--stop-timeout", stop_timeout),
                        ("--watchdog-sec", watchdog_sec)):
        if value is not None:
            argv += [flag, str(value)]
    if env_file != ENV_FILE:
        argv += ["--env-file", env_file]
    units = render_units(plan, installed_config or os.path.abspath(config), user=user,
                         exe=exe or default_exe(), env_file=env_file,
                         stop_timeout=stop_timeout, watchdog_sec=watchdog_sec,
                         command=" ".join(argv))
    written = write_units(units, out) if out else []
    return {"units": units, "written": written}
