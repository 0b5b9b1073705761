"""Command line of the harness: `python -m perf run [--quick] [--only NAME...]`.

Exit codes: 0 the run completed (rows may still be n/a, which is reported, not an error),
2 bad arguments.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import core, report, runner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the benchmarks")
    p.add_argument("--quick", action="store_true", help="short windows (within 2 minutes)")
    p.add_argument("--only", nargs="+", metavar="NAME", choices=runner.ALL,
                   help="run only these benchmarks (baselines they need run too)")
    p.add_argument("--no-engine", action="store_true", help="baselines only")
    p.add_argument("--peers", action="store_true",
                   help="also the peers of issue 20: Redis SET/GET, Dramatiq, Celery, gRPC (extra perf-peers)")
    p.add_argument("--seconds", type=float, help="length of one measurement window")
    p.add_argument("--runs", type=int, help="runs per figure (median); default 3")
    p.add_argument("--results-dir", type=Path, default=report.RESULTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    doc, path = runner.run(quick=args.quick, only=args.only, engine=not args.no_engine,
                           seconds=args.seconds, runs=args.runs, results_dir=args.results_dir,
                           peers=args.peers)
    print(core.format_table(doc["rows"]))
    eng = doc["engine"]
    if eng.get("requested") and not eng.get("available", True):
        print(f"\nengine not available: {eng.get('reason')}")
    print(f"\nratios: above 1.00 = better than the baseline (throughput: engine/baseline; "
          f"p50: baseline/engine). {doc['mode']} run, {doc['duration_s']} s.")
    print(f"results: {path}")
    print(report.chart(path, doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
