"""Keeps the benchmark harness working: runs it in its smallest setting and checks the shape
of what it produces (rows, ratios, the n/a contract, the JSON file). Never asserts on timing.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from perf import core, runner
from perf.harness import Harness, Settings, row

ROOT = Path(__file__).resolve().parents[2]
TINY = {"seconds": 0.05, "runs": 1}


def test_core_statistics_and_ratios() -> None:
    assert core.percentile([1, 2, 3, 4], 50) == 2.0
    assert core.percentile([], 99) == 0.0
    window = core.summarize_window([1000, 2000, 3000], 0.5, errors=1)
    assert window["ops"] == 3 and window["errors"] == 1 and window["throughput"] == 6.0
    assert window["p50_us"] == 2.0
    ratios = core.compare({"throughput": 200.0, "p50_us": 50.0}, {"throughput": 100.0, "p50_us": 100.0})
    assert ratios == {"throughput": 2.0, "p50_us": 2.0}
    assert core.foreign_cores(busy_delta_s=3.0, own_delta_s=1.0, wall_s=2.0) == 1.0
    assert core.foreign_cores(busy_delta_s=1.0, own_delta_s=2.0, wall_s=1.0) == 0.0


def test_core_repeats_noisy_runs_and_prefers_quiet_ones() -> None:
    noisy = {"noisy": True, "foreign_cores": 0.9, "throughput": 1.0}
    quiet = {"noisy": False, "foreign_cores": 0.0, "throughput": 3.0}
    assert core.need_more_runs([quiet, noisy], wanted=3, max_attempts=5)
    assert not core.need_more_runs([quiet, noisy, quiet, noisy, noisy], wanted=3, max_attempts=5)
    assert not core.need_more_runs([quiet] * 3, wanted=3, max_attempts=5)
    chosen = core.choose_runs([noisy, quiet, quiet], wanted=2)
    assert chosen == [quiet, quiet]
    assert core.median_metrics([quiet, noisy, quiet], ["throughput"]) == {"throughput": 3.0}


def test_baselines_run_produces_rows_ratios_and_json(tmp_path: Path) -> None:
    doc, path = runner.run(quick=True, only=["relay"], engine=False, results_dir=tmp_path, **TINY)
    assert json.loads(path.read_text())["rows"] == json.loads(json.dumps(doc["rows"]))
    by_target = {(r["target"], r["variant"]): r for r in doc["rows"]}
    assert set(by_target) == {(t, f"{n} in flight") for t in ("echo", "relay") for n in (1, 16, 64)}
    for r in doc["rows"]:
        assert r["status"] == "ok", r
        assert set(r["metrics"]) == {"throughput", "p50_us", "p99_us"}
        assert r["metrics"]["throughput"] > 0
        assert all("foreign_cores" in run and "noisy" in run for run in r["runs"])
    relay = by_target[("relay", "16 in flight")]
    assert relay["baseline"] == "echo 16 in flight"
    assert set(relay["ratio"]) == {"throughput", "p50_us", "p99_us"}
    table = core.format_table(doc["rows"])
    assert table.splitlines()[0].split()[:2] == ["benchmark", "thrpt/s"]
    assert len(table.split("\n\n")[0].splitlines()) == 2 + len(doc["rows"])  # notes apart
    assert max(len(line) for line in table.splitlines()) <= 120


def test_table_is_narrow_and_keeps_every_note_whole() -> None:
    note = "our SDK, sync trigger -> def handler, 16 in flight, caller and callee apart"
    rows = [{"target": "engine", "bench": "sdk_overhead", "variant": "SDK clients, 16 in flight",
             "status": "ok", "metrics": {"throughput": 16906.0, "p50_us": 921.0, "p99_us": 1537.0},
             "baseline": "relay SDK clients, 16 in flight", "ratio": {"throughput": 0.88,
                                                                      "p50_us": 0.89},
             "note": note},
            {"target": "engine", "bench": "state_set", "variant": "1 in flight", "status": "ok",
             "metrics": {"throughput": 1849.0, "p50_us": 526.0, "p99_us": 698.0},
             "baseline": "echo 16 in flight", "ratio": {"throughput": 0.31, "p50_us": 0.29}}]
    lines = core.format_table(rows).splitlines()
    assert max(len(line) for line in lines) <= 120
    assert lines[2].split()[-3:] == ["relay", "0.88", "0.89"]  # same variant: just the target
    assert "echo 16 in flight" in lines[3]
    assert " ".join(lines[-2:]).split() == f"engine sdk_overhead SDK clients, 16 in flight: {note}".split()


def test_missing_feature_is_reported_as_not_available() -> None:
    h = Harness(Settings(seconds=0.05, warmup=0.01, runs=1, max_attempts=1))
    try:
        _, url = h.start_server("relay")
        spec = {"url": url, "inflight": 1, "probe_timeout": 0.3,
                "call": {"function_id": "state::set", "kind": "state_set"}}
        r = row("engine", "state_set", "16 in flight", h.windows("probe", spec), h.settings)
    finally:
        h.stop_all()
    assert r["status"] == "n/a"
    assert "function_not_found" in r["reason"]
    assert "metrics" not in r
    assert "n/a" in core.format_table([r])


def test_cli_prints_table_and_writes_results(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "perf", "run", "--quick", "--only", "echo", "--no-engine",
         "--seconds", "0.05", "--runs", "1", "--results-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "echo ws_roundtrip 1 in flight" in out.stdout
    assert "chart" in out.stdout  # either the PNG path or the note that it was skipped
    files = list(tmp_path.glob("run-*.json"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    assert doc["mode"] == "quick" and doc["engine"]["requested"] is False
    assert [r["target"] for r in doc["rows"]] == ["echo"] * 3


@pytest.mark.parametrize("bad", [["--only", "nope"], ["--bogus"]])
def test_cli_rejects_bad_arguments(bad: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "perf", "run", *bad], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
