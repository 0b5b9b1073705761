"""Pure arithmetic of the benchmark harness: statistics, run selection, ratios, the table.

No sockets, no processes, no clock: every number comes in as an argument. Invariants:
- a reported figure is the median over the chosen runs (3 by default), never a single run;
- runs taken while foreign processes used more than ``FOREIGN_LIMIT_CORES`` are "noisy" and
  are only used when not enough quiet runs could be taken (the row is then flagged);
- a benchmark whose engine feature is missing carries status ``n/a`` and no numbers, so a
  missing feature can never be mistaken for a slow one.
"""
from __future__ import annotations

import statistics
import textwrap
from typing import Any, Iterable, Sequence

# On a 2-core machine a quarter core of somebody else's work already moves our figures by
# several percent; above that a run is repeated.
FOREIGN_LIMIT_CORES = 0.25
RUNS = 3


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values; 0.0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(1, int(round(q / 100.0 * len(sorted_values) + 0.5)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize_window(latencies_ns: Sequence[int], elapsed_s: float, errors: int) -> dict[str, Any]:
    """One measurement window -> throughput (ops/s) and latency percentiles in microseconds."""
    ordered = sorted(latencies_ns)
    done = len(ordered)
    return {
        "ops": done,
        "errors": errors,
        "elapsed_s": round(elapsed_s, 4),
        "throughput": round(done / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        "p50_us": round(percentile(ordered, 50) / 1000.0, 1),
        "p99_us": round(percentile(ordered, 99) / 1000.0, 1),
    }


def foreign_cores(busy_delta_s: float, own_delta_s: float, wall_s: float) -> float:
    """CPU (in cores) used during a window by processes that are not part of the benchmark."""
    if wall_s <= 0:
        return 0.0
    return max(0.0, (busy_delta_s - own_delta_s) / wall_s)


def is_noisy(foreign: float, limit: float = FOREIGN_LIMIT_CORES) -> bool:
    return foreign > limit


def need_more_runs(runs: Sequence[dict[str, Any]], wanted: int, max_attempts: int) -> bool:
    """Keep measuring until ``wanted`` quiet runs exist or the attempt budget is spent."""
    quiet = sum(1 for r in runs if not r.get("noisy"))
    return quiet < wanted and len(runs) < max_attempts


def choose_runs(runs: Sequence[dict[str, Any]], wanted: int) -> list[dict[str, Any]]:
    """The quiet runs first, then the least noisy ones, ``wanted`` of them."""
    ranked = sorted(runs, key=lambda r: (bool(r.get("noisy")), r.get("foreign_cores", 0.0)))
    return list(ranked[:wanted])


def median_metrics(runs: Sequence[dict[str, Any]], keys: Iterable[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in keys:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        if values:
            out[key] = round(statistics.median(values), 2)
    return out


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return round(value / base, 3)


def compare(metrics: dict[str, float], base: dict[str, float]) -> dict[str, float | None]:
    """Ratios to a baseline: throughput as value/base (higher is better), latency as
    base/value too, so that for every ratio above 1.0 means "better than the baseline"."""
    out: dict[str, float | None] = {}
    if "throughput" in metrics:
        out["throughput"] = ratio(metrics.get("throughput"), base.get("throughput"))
    for key in ("p50_us", "p99_us"):
        if key in metrics:
            out[key] = ratio(base.get(key), metrics.get(key))
    for key in ("value",):
        if key in metrics:
            # lower-is-better scalars (startup seconds, memory MB): baseline / value as well
            out[key] = ratio(base.get(key), metrics.get(key))
    return out


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


TABLE_COLUMNS = ["benchmark", "thrpt/s", "p50 us", "p99 us", "value", "vs", "x thrpt", "x p50"]


def _vs(row: dict[str, Any]) -> str:
    """The baseline, short: just its target when it ran the row's own variant."""
    baseline = row.get("baseline") or ""
    target, _, variant = baseline.partition(" ")
    return target if variant == row.get("variant", "") else baseline


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A terminal table about 110 columns wide: one line per (target, bench, variant), the
    ratio to its same-run baseline (``vs``), and every note in full beneath the table."""
    lines = [TABLE_COLUMNS]
    notes: list[str] = []
    for row in rows:
        m = row.get("metrics", {})
        r = row.get("ratio", {}) or {}
        name = " ".join(filter(None, (row["target"], row["bench"], row.get("variant", ""))))
        if row.get("status") != "ok":
            lines.append([name, row.get("status", "n/a"), "", "", "", _vs(row), "", ""])
            notes.append(f"{name}: {row.get('reason', '')}")
            continue
        value = m.get("value")
        note = (("NOISY " if row.get("noisy") else "") + (row.get("note") or "")).strip()
        if note:
            notes.append(f"{name}: {note}")
        lines.append([
            name, _fmt(m.get("throughput")), _fmt(m.get("p50_us")), _fmt(m.get("p99_us")),
            (_fmt(value, 2) + " " + row.get("unit", "")).strip() if value is not None else "",
            _vs(row), _fmt(r.get("throughput") if "throughput" in r else r.get("value"), 2),
            _fmt(r.get("p50_us"), 2),
        ])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(TABLE_COLUMNS))]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(str(c).ljust(widths[i]) for i, c in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    if notes:
        out += ["", "notes:"]
        out += [line for note in notes
                for line in textwrap.wrap(note, 110, initial_indent="  ", subsequent_indent="    ")]
    return "\n".join(out)
