"""Keeps the peer benchmarks (perf/peers.py, issue 20) working: each peer starts, yields a
positive figure in a very short window, and everything it started is gone afterwards; the
pairing puts the engine/peer ratios and goals on engine rows. Never asserts on timing.

Skipped only when the optional ``perf-peers`` extra (dramatiq, celery, grpcio) is not
installed; a missing redis-server fails, as in tests/redisserver.py.
"""
from __future__ import annotations

import os

import psutil
import pytest

pytest.importorskip("dramatiq", reason="optional extra perf-peers not installed")
pytest.importorskip("celery", reason="optional extra perf-peers not installed")
pytest.importorskip("grpc", reason="optional extra perf-peers not installed")

from perf import core, peers  # noqa: E402
from perf.harness import Harness, Settings  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def _tree() -> set[int]:
    """Our descendants, without multiprocessing's resource tracker (it lives on by design)."""
    out = set()
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.Error:
            continue
    return out


def _redis_dirs() -> set[str]:
    """The private Redis data dirs of peer runs in /tmp."""
    return {d for d in os.listdir("/tmp") if d.startswith("iii-peer-redis-")
            and os.stat(os.path.join("/tmp", d)).st_uid == os.getuid()
            and os.path.exists(os.path.join("/tmp", d, "appendonlydir"))}


def test_every_peer_yields_a_positive_figure_and_stops_what_it_started() -> None:
    if not os.path.exists(peers.REDIS_SERVER):
        pytest.fail("redis-server is not installed: run scripts/setup-dev.sh", pytrace=False)
    before = _tree()
    dirs_before = _redis_dirs()
    h = Harness(Settings(seconds=0.15, warmup=0.05, runs=1, max_attempts=1, quick=True))
    rows: list[dict] = []
    try:
        peers.peer_rows(h, rows.append)
    finally:
        h.stop_all()
    by_key = {(r["target"], r["bench"], r["variant"]): r for r in rows}
    expected = {(t, b, v) for _, _, t, b, v, _ in peers.PAIRINGS}
    assert set(by_key) == expected
    for r in rows:
        assert r["status"] == "ok", r
        m = r["metrics"]
        assert m["throughput"] > 0 and m["p50_us"] > 0, r
        assert all("foreign_cores" in run and "noisy" in run for run in r["runs"])  # the guard ran
    for kind in ("dramatiq", "celery"):
        assert by_key[(kind, f"{kind}_end_to_end", peers.QUEUE_VARIANT)]["metrics"]["lost"] == 0
    assert not (_tree() - before), "a peer process outlived peer_rows"
    assert not _redis_dirs() - dirs_before, "redis data dir left"  # (another run's are not ours)
    assert len(core.format_table(rows).splitlines()) > len(rows)


def test_attach_peers_puts_ratios_and_goals_on_engine_rows() -> None:
    ok = {"status": "ok"}
    rows = [
        {"target": "engine", "bench": "state_set", "variant": "16 in flight", **ok,
         "metrics": {"throughput": 13000.0, "p50_us": 1200.0}},
        {"target": "redis", "bench": "redis_set", "variant": "16 in flight", **ok,
         "metrics": {"throughput": 26000.0, "p50_us": 600.0}},
        {"target": "engine", "bench": "queue_end_to_end", "variant": "1 producer x16 in flight", **ok,
         "note": "lost 0", "metrics": {"throughput": 8000.0, "lost": 0}},
        {"target": "dramatiq", "bench": "dramatiq_end_to_end", "variant": peers.QUEUE_VARIANT, **ok,
         "metrics": {"throughput": 2000.0, "p50_us": 9000.0}},
        {"target": "celery", "bench": "celery_end_to_end", "variant": peers.QUEUE_VARIANT,
         "status": "n/a", "reason": "not available: x"},
    ]
    peers.attach_peers(rows)
    state_set, queue = rows[0], rows[2]
    assert state_set["peers"] == [{"peer": "redis redis_set 16 in flight",
                                   "ratio": {"throughput": 0.5, "p50_us": 0.5},
                                   "goal": {"key": "throughput", "least": 1.0, "met": False}}]
    assert "NOT met" in state_set["note"]
    assert [p["peer"] for p in queue["peers"]] == ["dramatiq dramatiq_end_to_end 16 in flight",
                                                    "celery celery_end_to_end 16 in flight"]
    assert queue["peers"][0]["ratio"] == {"throughput": 4.0} and queue["peers"][0]["goal"]["met"]
    assert "ratio" not in queue["peers"][1]
    assert queue["note"].startswith("lost 0; vs Dramatiq 16 in flight: x thrpt 4.00 (goal x thrpt >= 3.00: met)")
