"""``iii-supervisor``: the engine's command line.

    start CONFIG [--log-format text|json] [--log-level L]   run the engine in the foreground
    run NAME --config CONFIG [--log-format ...]             run one planned process (children)
    status [--config C | --runtime-dir D] [--json]          ask the running supervisor
    stop [--config C | --runtime-dir D] [--no-drain]        stop it and wait for it to exit
    restart PROC [--config C | --runtime-dir D]             restart one process
    check CONFIG                                            validate; exit 0 or 2
    units CONFIG                                            print the process plan

Exit codes are named below. Without ``--config``, the control commands find the runtime dir
in ``--runtime-dir``, else ``$III_RUNTIME_DIR``, else ``/tmp/iii-run`` (the default
config's). Invariant: a config problem is one clear line on stderr and exit code 2, never
a traceback.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import time
from typing import Any

from iii.core import config as configmod
from iii.core import log as logsetup
from iii.core.schema import ConfigError
from iii.core.units import RunContext, load_main
from iii.supervisor import control
from iii.supervisor.runner import AlreadyRunning, Runner, read_pid
from iii.supervisor.units import available

EXIT_OK = 0
EXIT_ERROR = 1
"""Runtime failure: no supervisor answered, another one already runs, ..."""
EXIT_CONFIG = 2
"""Bad config file or bad command line."""

log = logging.getLogger("iii.supervisor")

DEFAULT_RUNTIME_DIR = "/tmp/iii-run"


def _load(path: str) -> tuple[configmod.EngineConfig, list[configmod.Planned]]:
    units = available()
    cfg = configmod.load(path, units)
    return cfg, configmod.plan(cfg, units)


def _runtime_dir(args: argparse.Namespace) -> str:
    if getattr(args, "runtime_dir", None):
        return args.runtime_dir
    if getattr(args, "config", None):
        return configmod.load(args.config, available()).runtime_dir
    return os.environ.get("III_RUNTIME_DIR") or DEFAULT_RUNTIME_DIR


def cmd_start(args: argparse.Namespace) -> int:
    cfg, planned = _load(args.config)
    fmt = args.log_format or cfg.log_format
    logsetup.setup(args.log_level or cfg.log_level, fmt, "supervisor")
    for warning in cfg.warnings:
        log.warning("%s", warning)
    try:
        return Runner(cfg, planned, fmt).run()
    except AlreadyRunning as exc:
        print(f"iii-supervisor: {exc}", file=sys.stderr)
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


def cmd_run(args: argparse.Namespace) -> int:
    _die_with_parent()
    cfg, planned = _load(args.config)
    mine = [p for p in planned if p.process == args.name]
    if not mine:
        print(f"iii-supervisor: unknown process {args.name!r} "
              f"(planned: {', '.join(p.process for p in planned)})", file=sys.stderr)
        return EXIT_CONFIG
    proc = mine[0]
    logsetup.setup(cfg.log_level, args.log_format or cfg.log_format, proc.process)
    os.makedirs(cfg.runtime_dir, mode=0o700, exist_ok=True)
    ctx = RunContext(process=proc.process, unit=proc.unit, config=proc.config, engine=cfg,
                     runtime_dir=cfg.runtime_dir, data_dir=cfg.data_dir,
                     peers=[p.process for p in planned])
    load_main(proc.unit)(ctx)
    return EXIT_OK


def _fmt_uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def cmd_status(args: argparse.Namespace) -> int:
    try:
        result: Any = control.call(_runtime_dir(args), "status")
    except ConnectionError as exc:
        print(f"iii-supervisor: not running ({exc})", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        import orjson
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    print(f"supervisor pid {result['pid']} uptime {_fmt_uptime(result['uptime'])}"
          + (" (stopping)" if result["stopping"] else ""))
    print(f"{'PROCESS':<16} {'STATE':<9} {'PID':>7} {'UPTIME':>9} {'RESTARTS':>8}")
    for p in result["processes"]:
        pid = "-" if p["pid"] is None else str(p["pid"])
        print(f"{p['name']:<16} {p['state']:<9} {pid:>7} {_fmt_uptime(p['uptime']):>9} "
              f"{p['restarts']:>8}")
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    runtime_dir = _runtime_dir(args)
    pid = read_pid(runtime_dir)
    try:
        control.call(runtime_dir, "stop", {"drain": not args.no_drain})
    except ConnectionError as exc:
        if pid is None:
            print(f"iii-supervisor: not running ({exc})", file=sys.stderr)
            return EXIT_ERROR
        os.kill(pid, signal.SIGTERM)  # the socket is gone but the process is not
    # Done when the pid file is gone (removed on the way out) or names no live process.
    deadline = time.monotonic() + args.timeout
    while pid is not None and time.monotonic() < deadline:
        if read_pid(runtime_dir) is None:
            return EXIT_OK
        time.sleep(0.05)
    if pid is not None:
        print(f"iii-supervisor: pid {pid} still running after {args.timeout} s", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    try:
        control.call(_runtime_dir(args), "restart", {"name": args.name})
    except (ConnectionError, RuntimeError) as exc:
        print(f"iii-supervisor: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    cfg, planned = _load(args.config)
    for warning in cfg.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.config}: ok ({len(planned)} processes: {', '.join(p.process for p in planned)})")
    return EXIT_OK


def cmd_units(args: argparse.Namespace) -> int:
    cfg, planned = _load(args.config)
    for p in planned:
        role = "storage" if p.unit.storage else "ingress" if p.unit.ingress else "-"
        print(f"{p.process:<16} {p.unit.name:<12} {role:<8} {p.unit.main}")
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="iii-supervisor", description="Run the iii engine.")
    sub = ap.add_subparsers(dest="command", required=True)

    def where(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="find the runtime dir from this config")
        p.add_argument("--runtime-dir", help="the engine's runtime dir")

    p = sub.add_parser("start", help="run the engine in the foreground")
    p.add_argument("config")
    p.add_argument("--log-format", choices=("text", "json"))
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("run", help="run one planned process")
    p.add_argument("name")
    p.add_argument("--config", required=True)
    p.add_argument("--log-format", choices=("text", "json"))
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("status", help="show the running engine's processes")
    where(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("stop", help="stop the running engine")
    where(p)
    p.add_argument("--no-drain", action="store_true", help="kill the children at once")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_stop)
    p = sub.add_parser("restart", help="restart one process")
    p.add_argument("name")
    where(p)
    p.set_defaults(func=cmd_restart)
    p = sub.add_parser("check", help="validate a config file")
    p.add_argument("config")
    p.set_defaults(func=cmd_check)
    p = sub.add_parser("units", help="print the process plan of a config")
    p.add_argument("config")
    p.set_defaults(func=cmd_units)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"iii-supervisor: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
