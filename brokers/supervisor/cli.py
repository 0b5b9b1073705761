"""``iii-supervisor``: the engine's command line.

    start CONFIG [--log-format text|json] [--log-level L]   run the engine in the foreground
          [--daemon] [--log-file F] [--pid-file F]          ... or detached, once it is ready
    run NAME --config CONFIG [--log-format ...]             run one planned process alone
    run NAME --plan-fd FD                                   (how the supervisor starts each)
    status [--config C | --runtime-dir D] [--json]          ask the running supervisor
    stop [--config C | --runtime-dir D] [--no-drain]        stop it and wait for it to exit
    restart PROC [--config C | --runtime-dir D]             restart one process
    reload [--config C | --runtime-dir D]                   re-read the config, apply the diff
    check CONFIG                                            validate; exit 0 or 2
    units CONFIG [--out DIR ...]                            print the process plan, or write
                                                            its systemd units (systemd.py)

Where an engine's runtime dir is, for every command (``brokers.kit.config.runtime_dir_for``):
``--runtime-dir``, else ``engine.runtime_dir`` of ``--config``, else ``$III_RUNTIME_DIR``,
else ``/tmp/iii-run``; ``start`` follows the same rule with its config. Exit codes are
named below. Invariants: a config problem is one clear line on stderr and exit code 2, a
port in use, a runtime dir that is not ours alone (``brokers.supervisor.rundir``) or an
engine that cannot start one clear line and exit code 1, never a traceback; the config
file is read once, by ``start`` (``brokers.supervisor.plan``): a child the supervisor
spawns gets its part on ``--plan-fd`` and never opens the file, so a respawn runs on the
config the engine runs, whatever the file says now; ``start`` and ``run`` call
``kit.hygiene.harden`` (umask 077, the descriptor limit at its hard limit) before they
make anything.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import os
import signal
import sys
import time
from typing import Any

from brokers.kit import config as configmod
from brokers.kit import listen
from brokers.kit import log as logsetup
from brokers.kit import hygiene
from brokers.kit.schema import ConfigError
from brokers.kit.units import load_main
from brokers.supervisor import control, daemon, rundir, spawn, systemd
from brokers.supervisor.plan import ChildSpec, Plan, PlanError
from brokers.supervisor.rundir import read_pid
from brokers.supervisor.runner import Runner
from brokers.supervisor.states import EXIT_NO_RETRY
from brokers.supervisor.units import available

EXIT_OK = 0
EXIT_ERROR = 1
"""Runtime failure: no supervisor answered, another one already runs, a port is in use,
a process could not start, ``status`` saw a FATAL process, ..."""
EXIT_CONFIG = 2
"""Bad config file or bad command line."""

log = logging.getLogger("brokers.supervisor")


def _load(path: str, log_level: str | None = None,
          log_format: str | None = None) -> tuple[configmod.EngineConfig, Plan]:
    """Read and validate the file once, and make the plan every process will run on."""
    units = available()
    cfg = configmod.load(path, units)
    plan = Plan.make(cfg, configmod.plan(cfg, units), now=time.time(), log_level=log_level,
                     log_format=log_format)
    return cfg, plan


def _runtime_dir(args: argparse.Namespace) -> tuple[str, str]:
    """The runtime dir a control command talks to, and what chose it (for messages)."""
    if getattr(args, "runtime_dir", None):
        return os.path.abspath(args.runtime_dir), "--runtime-dir"
    if getattr(args, "config", None):
        return configmod.locate_runtime_dir(args.config), f"--config {args.config}"
    return configmod.runtime_dir_for(None, os.environ)


def _not_running(runtime_dir: str, source: str, why: str) -> int:
    """Say where we looked, why nothing answered, and how to look elsewhere."""
    print(f"iii-supervisor: engine not running at {runtime_dir} (from {source}): {why}",
          file=sys.stderr)
    others = [d for d in control.running_engines() if d != runtime_dir and read_pid(d)]
    if others:
        print("  engines running elsewhere: " + ", ".join(others), file=sys.stderr)
    print("  point elsewhere with --config CONFIG, --runtime-dir DIR or $III_RUNTIME_DIR",
          file=sys.stderr)
    return EXIT_ERROR


def _early_zygote(args: argparse.Namespace) -> spawn.Zygote | None:
    """The zygote children are forked from (``brokers.supervisor.spawn``), forked from us
    now, before the config is read: it shares our imports' pages and holds none of the
    config's secrets. Not with ``--daemon`` (the process that detaches is not the one that
    supervises) nor ``III_SPAWN=exec``: then ``Runner`` starts one, or none."""
    if args.daemon or os.environ.get(spawn.SPAWN_ENV) == "exec" or not spawn.supported():
        return None
    # the units' config modules, which ``_load`` needs, imported before the fork: their
    # pages are then shared with the zygote and every child instead of being ours alone
    available()
    try:
        return spawn.Zygote.fork()
    except spawn.ZygoteError:
        return None  # Runner starts a fresh one


def cmd_start(args: argparse.Namespace) -> int:
    zygote = _early_zygote(args)
    try:
        cfg, plan = _load(args.config, args.log_level, args.log_format)
        logsetup.setup(plan.engine.log_level, plan.engine.log_format, "supervisor")
        hygiene.harden()  # before anything is made: the children inherit both settings
        if args.daemon or args.log_file:
            return daemon.start(lambda: _serve(cfg, plan, args, zygote), plan.engine.runtime_dir,
                                detach=args.daemon, log_file=args.log_file, pid_file=args.pid_file)
        return _serve(cfg, plan, args, zygote)
    finally:
        if zygote is not None:
            zygote.close()  # (the runner's stop closed it already, if it ran)


def _serve(cfg: configmod.EngineConfig, plan: Plan, args: argparse.Namespace,
           zygote: spawn.Zygote | None = None) -> int:
    for warning in cfg.warnings:
        log.warning("%s", warning)
    try:
        return Runner(plan, log_level=args.log_level, log_format=args.log_format,
                      zygote=zygote).run()
    except (rundir.AlreadyRunning, rundir.UnsafeRuntimeDir, listen.PortInUse,
            listen.ListenError) as exc:
        print(f"iii-supervisor: {exc.args[-1] if isinstance(exc, OSError) else exc}",
              file=sys.stderr)
        return EXIT_ERROR


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the supervisor that spawned us dies (Linux only)."""
    parent = os.environ.get("III_SUPERVISOR_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before we got here
        sys.exit(EXIT_ERROR)


def _read_plan_fd(fd: int) -> ChildSpec:
    """The spec the supervisor wrote on ``fd``; the descriptor is closed once read, so
    nothing this process starts inherits it."""
    try:
        with os.fdopen(fd, "rb") as fh:
            fh.seek(0)
            data = fh.read()
    except OSError as exc:
        raise PlanError(f"cannot read the plan on descriptor {fd}: {exc.strerror}") from None
    return ChildSpec.decode(data)


def cmd_run(args: argparse.Namespace) -> int:
    _die_with_parent()
    try:
        if args.plan_fd is not None:  # spawned by the supervisor: its plan, not the file
            spec = _read_plan_fd(args.plan_fd)
        else:  # started by hand or by systemd: no supervisor's plan, make one from the file
            _, plan = _load(args.config)
            if args.name not in plan.specs:
                print(f"iii-supervisor: unknown process {args.name!r} "
                      f"(planned: {', '.join(plan.specs)})", file=sys.stderr)
                return EXIT_CONFIG
            spec = ChildSpec.decode(plan.spec(args.name))  # the same bytes a child would get
        if spec.process != args.name:
            raise PlanError(f"the plan handed over is process {spec.process!r}'s")
        ctx = spec.context(available())
    except PlanError as exc:  # the same plan would be handed again: retrying would not help
        print(f"iii-supervisor run {args.name}: {exc}", file=sys.stderr)
        return EXIT_NO_RETRY
    logsetup.setup(ctx.engine.log_level, args.log_format or ctx.engine.log_format, ctx.process)
    hygiene.harden()  # again: a process run by hand or by systemd has no supervisor's
    log.debug("%s runs on plan generation %d", ctx.process, spec.generation)
    try:
        rundir.prepare(ctx.runtime_dir)
    except rundir.UnsafeRuntimeDir as exc:
        print(f"iii-supervisor run {args.name}: {exc}", file=sys.stderr)
        return EXIT_NO_RETRY
    try:
        load_main(ctx.unit)(ctx)
    except (listen.PortInUse, listen.ListenError) as exc:  # retrying would not help
        log.error("%s cannot start: %s", ctx.process, exc.args[-1])
        return EXIT_NO_RETRY
    return EXIT_OK


def _fmt_uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def cmd_status(args: argparse.Namespace) -> int:
    runtime_dir, source = _runtime_dir(args)
    try:
        result: Any = control.call(runtime_dir, "status")
    except ConnectionError as exc:
        return _not_running(runtime_dir, source, str(exc))
    fatal = [p["name"] for p in result["processes"] if p["state"] == "FATAL"]
    if args.json:
        import orjson
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(f"supervisor pid {result['pid']} uptime {_fmt_uptime(result['uptime'])}"
              + (" (stopping)" if result["stopping"] else ""))
        paths = result.get("paths", {})
        for label in ("config", "runtime_dir", "data_dir"):
            if label in paths:
                print(f"{label + ':':<14}{paths[label]}")
        for name, where in paths.get("stores", {}).items():
            print(f"{'store ' + name + ':':<14}{where}")
        plan = result.get("plan")
        if plan:
            made = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(plan["planned_at"]))
            print(f"{'plan:':<14}generation {plan['generation']}, read from the config at {made}")
        print(f"{'PROCESS':<16} {'STATE':<9} {'PID':>7} {'UPTIME':>9} {'RESTARTS':>8} {'GEN':>4}")
        for p in result["processes"]:
            pid = "-" if p["pid"] is None else str(p["pid"])
            print(f"{p['name']:<16} {p['state']:<9} {pid:>7} {_fmt_uptime(p['uptime']):>9} "
                  f"{p['restarts']:>8} {p.get('generation') or '-':>4}")
    if fatal:
        print(f"iii-supervisor: {', '.join(fatal)} FATAL (see the engine log; "
              f"`iii-supervisor restart NAME` tries again)", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    runtime_dir, source = _runtime_dir(args)
    pid = read_pid(runtime_dir)
    try:
        control.call(runtime_dir, "stop", {"drain": not args.no_drain})
    except ConnectionError as exc:
        if pid is None:
            return _not_running(runtime_dir, source, str(exc))
        os.kill(pid, signal.SIGTERM)  # the socket is gone but the process is not
    # Done when the pid file is gone (removed on the way out) or names no live process.
    deadline = time.monotonic() + args.timeout
    while pid is not None and time.monotonic() < deadline:
        if read_pid(runtime_dir) is None:
            break
        time.sleep(0.05)
    else:
        if pid is not None:
            print(f"iii-supervisor: pid {pid} still running after {args.timeout:g} s",
                  file=sys.stderr)
            return EXIT_ERROR
    print(f"iii-supervisor: engine at {runtime_dir} stopped" + (f" (pid {pid})" if pid else ""))
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    try:
        control.call(_runtime_dir(args)[0], "restart", {"name": args.name})
    except (ConnectionError, RuntimeError) as exc:
        print(f"iii-supervisor: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_reload(args: argparse.Namespace) -> int:
    runtime_dir, source = _runtime_dir(args)
    try:
        result: Any = control.call(runtime_dir, "reload", timeout=args.timeout)
    except ConnectionError as exc:
        return _not_running(runtime_dir, source, str(exc))
    except RuntimeError as exc:  # refused (the config does not validate): nothing changed
        print(f"iii-supervisor: reload refused, the engine is unchanged: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"iii-supervisor: now on plan generation {result['generation']}: "
          + "; ".join(f"{what} {', '.join(result[what]) or 'none'}"
                      for what in ("added", "removed", "changed", "unchanged")))
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    cfg, plan = _load(args.config)  # the plan too: what start would hand each process
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config}: ok ({len(plan.processes)} processes: {', '.join(plan.specs)})")
    return EXIT_OK


def cmd_units(args: argparse.Namespace) -> int:
    if args.out:
        try:
            result = systemd.render_for(args.config, out=args.out, installed_config=args.installed_config,
                                        exe=args.exe, user=args.user, env_file=args.env_file,
                                        stop_timeout=args.stop_timeout, watchdog_sec=args.watchdog_sec)
        except systemd.UnitsError as exc:
            print(f"iii-supervisor units: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        print("\n".join(result["written"]))
        return EXIT_OK
    _, plan = _load(args.config)
    for p in plan.processes:
        role = "storage" if p.unit.storage else "ingress" if p.unit.ingress else "-"
        print(f"{p.process:<16} {p.unit.name:<12} {role:<8} {p.unit.main}")
    return EXIT_OK


CONFIG_HELP = "the engine's config file (iii's config.yaml format, e.g. conf/iii-config.yaml)"
WHERE_EPILOG = ("The engine is found at --runtime-dir, else at engine.runtime_dir of --config, "
                "else at $III_RUNTIME_DIR, else at /tmp/iii-run.")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="iii-supervisor", description="Run the iii engine: a supervisor and one OS "
        "process per part (gateway, router, state, queue, ...).", epilog=WHERE_EPILOG)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="CONFIG",
                       help="the config the engine was started with (finds its runtime dir)")
        p.add_argument("--runtime-dir", metavar="DIR", help="the engine's runtime dir")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, epilog=WHERE_EPILOG)

    p = command("start", "run the engine in the foreground until SIGTERM or Ctrl-C "
                         "(or `iii-supervisor stop` from another shell)")
    p.add_argument("config", metavar="CONFIG", help=CONFIG_HELP)
    p.add_argument("--log-format", choices=("text", "json"), help="default: engine.log_format")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                   help="default: engine.log_level")
    p.add_argument("--daemon", action="store_true",
                   help="detach; return once the engine is ready (exit 0) or failed")
    p.add_argument("--log-file", metavar="FILE",
                   help="write the engine's log to FILE (SIGUSR2 reopens it); with --daemon "
                        "default: <runtime_dir>/iii.log")
    p.add_argument("--pid-file", metavar="FILE",
                   help="with --daemon: also write the supervisor's pid to FILE once ready "
                        "(<runtime_dir>/supervisor.pid is always written)")
    p.set_defaults(func=cmd_start)
    p = command("run", "run one planned process alone (what the supervisor, or a systemd "
                       "unit, starts for each process)")
    p.add_argument("name", metavar="NAME", help="a process of the plan, e.g. gateway, router, "
                                               "state (see `iii-supervisor units CONFIG`)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", metavar="CONFIG", help=CONFIG_HELP)
    source.add_argument("--plan-fd", type=int, metavar="FD",
                        help="(used by the supervisor) read this process's part of the "
                             "supervisor's plan from inherited descriptor FD instead of a config")
    p.add_argument("--log-format", choices=("text", "json"), help="default: the config's")
    p.set_defaults(func=cmd_run)
    p = command("status", "show the running engine's processes, paths and stores; "
                          "exit 1 if it is not running or a process is FATAL")
    where(p)
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_status)
    p = command("stop", "stop the running engine (ingress first, storage last) and wait "
                        "for it to exit")
    where(p)
    p.add_argument("--no-drain", action="store_true", help="kill the processes at once")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the engine to exit (default: 30 seconds)")
    p.set_defaults(func=cmd_stop)
    p = command("restart", "restart one process of the running engine (also revives a "
                           "FATAL one)")
    p.add_argument("name", metavar="NAME", help="the process, as `status` names it")
    where(p)
    p.set_defaults(func=cmd_restart)
    p = command("reload", "re-read the running engine's config (also SIGHUP): start added "
                          "processes, restart changed ones, stop removed ones; the others keep "
                          "running. A config that does not validate is refused (exit 2)")
    where(p)
    p.add_argument("--timeout", type=float, default=15.0, metavar="SECONDS",
                   help="how long to wait for the supervisor's answer (default: 15 seconds)")
    p.set_defaults(func=cmd_reload)
    p = command("check", "validate a config file: exit 0, or 2 with the offending key")
    p.add_argument("config", metavar="CONFIG", help=CONFIG_HELP)
    p.set_defaults(func=cmd_check)
    p = command("units", "print the process plan of a config; with --out, write its systemd units")
    p.add_argument("config", metavar="CONFIG", help=CONFIG_HELP)
    p.add_argument("--out", metavar="DIR", help="write the systemd units there (e.g. /etc/systemd/system)")
    p.add_argument("--exe", metavar="PATH", help="the iii-supervisor the units run (default: this one)")
    p.add_argument("--installed-config", metavar="PATH", help="the config path the units name (default: CONFIG)")
    p.add_argument("--user", metavar="USER", help="run the processes as USER (default: root)")
    p.add_argument("--env-file", metavar="PATH", default=systemd.ENV_FILE,
                   help=f"the units' EnvironmentFile (default: {systemd.ENV_FILE})")
    p.add_argument("--stop-timeout", type=float, metavar="SECONDS", help="TimeoutStopSec (default: from the config)")
    p.add_argument("--watchdog-sec", type=float, metavar="SECONDS", help="WatchdogSec (default: none)")
    p.set_defaults(func=cmd_units)
    return ap


@functools.cache
def shared_parser() -> argparse.ArgumentParser:
    """``parser()``, built once per interpreter: the zygote builds it (``warm_up``) and its
    children parse with that one, as building another costs each of them ~0.8 MB of
    private pages."""
    return parser()


def main(argv: list[str] | None = None) -> int:
    args = shared_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"iii-supervisor: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
