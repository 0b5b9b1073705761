"""Outputs of a run: the progress line, the JSON file per run, the chart against the last run.

Invariants: a run's JSON is written even when the engine could not be started (its rows are
then n/a with the reason); the chart is optional (matplotlib is the `perf` extra) and its
absence is said, never silently skipped.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


class Progress:
    """One self-overwriting status line on stderr (only when it is a terminal)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.width = 0

    def __call__(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {text}"
        if self.tty:
            pad = max(0, self.width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def write_json(doc: dict[str, Any], results_dir: Path = RESULTS) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}.json"
    n = 1
    while path.exists():
        n += 1
        path = results_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{n}.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=False, default=str))
    return path


def previous_run(current: Path, mode: str, results_dir: Path = RESULTS) -> dict[str, Any] | None:
    """The latest earlier run of the same mode (quick runs are compared with quick runs)."""
    older = sorted(p for p in results_dir.glob("run-*.json") if p != current and p.name < current.name)
    for path in reversed(older):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if doc.get("mode") == mode:
            return doc
    return None


def _key(r: dict[str, Any]) -> str:
    return f"{r['target']} {r['bench']} {r.get('variant', '')}".strip()


def chart(current_path: Path, doc: dict[str, Any]) -> str:
    """PNG of each row's headline figure, this run against the previous one."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install -e '.[perf]')"
    prev = previous_run(current_path, doc.get("mode", ""), current_path.parent)
    prev_rows = {_key(r): r for r in (prev or {}).get("rows", []) if r.get("status") == "ok"}
    rows = [r for r in doc["rows"] if r.get("status") == "ok" and "throughput" in r.get("metrics", {})]
    if not rows:
        return "chart skipped: no throughput rows"
    labels = [_key(r) for r in rows]
    now = [r["metrics"]["throughput"] for r in rows]
    before = [prev_rows.get(k, {}).get("metrics", {}).get("throughput", 0) for k in labels]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], now, height=0.4, label=f"this run ({doc['started']})")
    ax.barh([y - 0.2 for y in ys], before, height=0.4,
            label=f"previous ({prev['started']})" if prev else "previous (none)")
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("operations per second (log)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = current_path.with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return f"chart: {out}"
