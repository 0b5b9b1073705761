"""The cron core with time passed in: one heap for every job, a due job leaves it until its
run finished, ticks during a run are skipped (no catch-up), the fired mark keeps a stepped-
back clock from firing a tick twice, re-deliveries and router replays; the §6.4 payload's
time format; the kv lock; the fired mark's file; the config block."""
from __future__ import annotations

import datetime as dt
import os

import pytest

from brokers.cron import config, core
from brokers.cron.locks import KvLocks
from brokers.cron.store import FiredMark, decode, encode
from brokers.kit.errors import EngineError
from brokers.kit.schema import ConfigError

T0 = int(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc).timestamp())


def spec(job_id: str = "j1", expr: str = "* * * * * *", **kw) -> core.JobSpec:
    binding = {"id": job_id, "function_id": kw.pop("fn", "jobs::tick"), "config": {"expression": expr, **kw}}
    return core.job_spec(binding)


# ---- the scheduler ------------------------------------------------------------------------

def test_a_due_job_fires_once_and_is_rescheduled_only_when_finished() -> None:
    s = core.Scheduler()
    job = s.add(spec(), T0 + 0.2)
    assert s.next_wake() == T0 + 1 and s.due(T0 + 0.9) == []
    [fire] = s.due(T0 + 1.001)
    assert (fire.job, fire.scheduled) == (job, T0 + 1) and job.running
    assert s.next_wake() is None and s.due(T0 + 5) == []  # running: ticks 2..5 are skipped
    s.finished(job, T0 + 5.5)
    assert s.next_wake() == T0 + 6  # strictly after the end of the run: no catch-up


def test_a_late_wake_fires_each_job_once() -> None:
    s = core.Scheduler()
    s.add(spec("a"), T0)
    s.add(spec("b", "*/10 * * * * *"), T0)
    fires = s.due(T0 + 30.5)  # the loop was blocked for half a minute
    assert sorted((f.job.spec.id, f.scheduled) for f in fires) == [("a", T0 + 1), ("b", T0 + 10)]
    assert s.floor == T0 + 10


def test_ten_thousand_jobs_are_one_heap() -> None:
    s = core.Scheduler()
    for i in range(10_000):
        s.add(spec(f"j{i}"), T0)
    assert s.next_wake() == T0 + 1
    fires = s.due(T0 + 1)
    assert len(fires) == 10_000 and s.next_wake() is None
    for f in fires:
        s.finished(f.job, T0 + 1.2)
    assert s.next_wake() == T0 + 2 and len(s.due(T0 + 2)) == 10_000


def test_the_floor_keeps_a_clock_stepped_back_from_firing_a_tick_twice() -> None:
    s = core.Scheduler()
    job = s.add(spec(), T0)
    [fire] = s.due(T0 + 1)
    s.finished(job, T0 - 60)  # NTP stepped the clock back a minute during the run
    assert s.next_wake() == T0 + 2
    restarted = core.Scheduler(floor=s.floor)  # a restart reads the stored floor
    restarted.add(spec(), T0 - 3600)
    assert restarted.next_wake() == T0 + 2


def test_a_job_without_a_fire_time_left_is_bound_but_never_due() -> None:
    s = core.Scheduler()
    job = s.add(spec(expr="* * * * * * 2024"), T0)
    assert job.next_at is None and s.next_wake() is None and "j1" in s.jobs


def test_removing_a_job_while_it_runs_leaves_nothing_scheduled() -> None:
    s = core.Scheduler()
    job = s.add(spec(), T0)
    s.due(T0 + 1)
    assert s.remove("j1") is job
    s.finished(job, T0 + 2)
    assert s.next_wake() is None and not s.current(job)
    with pytest.raises(EngineError) as info:
        s.remove("j1")
    assert info.value.message == "Cron job 'j1' not found"


def test_the_same_binding_again_keeps_its_job_and_a_different_one_is_refused() -> None:
    s = core.Scheduler()
    job = s.add(spec(), T0)
    [fire] = s.due(T0 + 1)
    assert s.add(spec(), T0 + 1.5) is job and job.running  # delivered again: same run goes on
    with pytest.raises(EngineError) as info:
        s.add(spec(expr="0 * * * * *"), T0 + 1.5)
    assert (info.value.code, info.value.message) == ("trigger_registration_failed",
                                                     "Cron job 'j1' is already registered")
    with pytest.raises(EngineError):
        s.add(spec(fn="jobs::other"), T0 + 1.5)


def test_a_router_replay_confirms_replaces_and_sweeps() -> None:
    s = core.Scheduler()
    kept, changed, _ = s.add(spec("kept"), T0), s.add(spec("changed"), T0), s.add(spec("gone"), T0)
    s.begin_replay()
    assert s.add(spec("kept"), T0 + 0.5) is kept
    replaced = s.add(spec("changed", "0 0 * * * *"), T0 + 0.5)  # the new router's view wins
    assert replaced is not changed
    assert s.sweep() == ["gone"] and set(s.jobs) == {"kept", "changed"}
    assert s.sweep() == []
    with pytest.raises(EngineError):  # confirmed again: a different binding is refused again
        s.add(spec("kept", "0 0 * * * *"), T0 + 1)


def test_a_closed_scheduler_refuses_bindings() -> None:
    s = core.Scheduler()
    s.closed = True
    with pytest.raises(EngineError) as info:
        s.add(spec(), T0)
    assert info.value.message.startswith("cron scheduler is shutting down; ")


def test_the_binding_decodes_namespace_metadata_and_condition() -> None:
    js = core.job_spec({"id": "t", "function_id": "f", "namespace": "billing", "metadata": {"a": 1},
                        "config": {"expression": "@daily", "condition_function_id": "c::ok"}})
    assert (js.namespace, js.metadata, js.condition_function_id, js.expression) == (
        "billing", {"a": 1}, "c::ok", "@daily")
    bare = core.job_spec({"id": "t", "function_id": "f", "config": {"expression": "@daily",
                                                                    "condition_function_id": 7}})
    assert (bare.namespace, bare.condition_function_id) == ("default", None)


def test_only_json_false_skips() -> None:
    assert [core.condition_allows(v) for v in (False, True, None, 0, "", [], {})] == \
        [False, True, True, True, True, True, True]


# ---- the payload --------------------------------------------------------------------------

@pytest.mark.parametrize("ns, text", [
    (0, "1970-01-01T00:00:00+00:00"),
    (T0 * 10**9, "2025-01-01T00:00:00+00:00"),
    (T0 * 10**9 + 1_000_000, "2025-01-01T00:00:00.001+00:00"),
    (T0 * 10**9 + 120_000_000, "2025-01-01T00:00:00.120+00:00"),
    (T0 * 10**9 + 1_234_000, "2025-01-01T00:00:00.001234+00:00"),
    (T0 * 10**9 + 1_234_567, "2025-01-01T00:00:00.001234567+00:00"),
    (T0 * 10**9 + 999_999_999, "2025-01-01T00:00:00.999999999+00:00"),
    (T0 * 10**9 + 500, "2025-01-01T00:00:00.000000500+00:00"),
])
def test_rfc3339_as_chrono_writes_it(ns: int, text: str) -> None:
    assert core.rfc3339(ns) == text


def test_the_payload_of_a_tick() -> None:
    scheduled = T0 + 2 * 3600
    assert core.payload("job-1", scheduled, scheduled * 10**9 + 1_234_567) == {
        "trigger": "cron", "job_id": "job-1", "scheduled_time": "2025-01-01T02:00:00+00:00",
        "actual_time": "2025-01-01T02:00:00.001234567+00:00"}


# ---- the kv lock --------------------------------------------------------------------------

def test_kv_lock_is_held_until_released_or_expired_and_released_only_by_its_owner() -> None:
    locks = KvLocks(ttl_ms=1000, owner="me")
    assert locks.acquire_many(["a", "b"], 0) == [True, True]
    assert locks.acquire_many(["a", "c"], 500) == [False, True]  # held: that tick is skipped
    locks.release("a", owner="someone-else")
    assert locks.held(600) == ["a", "b", "c"]
    locks.release("a")
    assert locks.acquire("a", 700)
    assert locks.acquire("b", 1000)  # expired at 1000 ms: free again
    assert locks.entries["b"].owner == "me" and locks.entries["b"].expires_at_ms == 2000
    other = KvLocks(owner="other")
    other.entries = locks.entries  # one index, two owners
    assert not other.acquire("b", 1500) and other.acquire("b", 2000)


# ---- the fired mark -----------------------------------------------------------------------

def test_the_fired_mark_survives_a_reopen_and_never_goes_back(tmp_path) -> None:
    d = str(tmp_path / "cron")
    mark = FiredMark(d)
    assert mark.value == 0 and os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(mark.path).st_mode & 0o777 == 0o600
    mark.save(T0)
    mark.save(T0 - 10)  # older: ignored
    mark.close()
    again = FiredMark(d)
    assert again.value == T0
    again.close()


def test_a_damaged_mark_is_read_as_none_and_logged(tmp_path, caplog) -> None:
    assert decode(encode(T0)) == T0 and decode(b"") is None
    damaged = bytearray(encode(T0))
    damaged[0] ^= 1
    d = tmp_path / "cron"
    d.mkdir(mode=0o700)
    (d / "fired").write_bytes(bytes(damaged))
    mark = FiredMark(str(d))
    assert mark.value == 0 and "damaged" in caplog.text
    mark.save(T0)
    assert decode((d / "fired").read_bytes()) == T0
    mark.close()


# ---- the config block ---------------------------------------------------------------------

def test_config_defaults_and_kv_keys(tmp_path) -> None:
    assert config.parse(None, "w") == {"lock_ttl_ms": 30000, "lock_index": "cron_locks",
                                       "store": "file", "path": None}
    cfg = config.parse({"adapter": {"name": "kv", "config": {
        "lock_ttl_ms": 5000, "lock_index": "seeded", "store_method": "file_based",
        "file_path": str(tmp_path), "save_interval_ms": 500}}}, "w")
    assert cfg == {"lock_ttl_ms": 5000, "lock_index": "seeded", "store": "file", "path": str(tmp_path)}
    assert config.store_dir(cfg, "/data") == str(tmp_path)
    memory = config.parse({"adapter": {"name": "kv", "config": {"store_method": "in_memory"}}}, "w")
    assert config.store_dir(memory, "/data") is None and config.stores(memory, "/d") == {"cron": "in memory"}
    assert config.stores(config.parse(None, "w"), "/data") == {"cron": "/data/cron"}


@pytest.mark.parametrize("raw, message", [
    ({"adapter": {"name": "redis", "config": {"redis_url": "http://x"}}},
     "w.adapter.config.redis_url: must be a redis://"),
    ({"adapter": {"name": "redis", "config": {"lock_ttl_ms": 0}}}, "w.adapter.config.lock_ttl_ms: must be > 0"),
    ({"adapter": {"name": "memory"}}, "w.adapter.name: adapter 'memory' is not supported (only kv and redis)"),
    ({"adapter": {"name": "kv", "config": {"lock_ttl": 5}}}, "w.adapter.config.lock_ttl: unknown key"),
    ({"adapter": {"name": "kv", "config": {"lock_ttl_ms": 0}}}, "w.adapter.config.lock_ttl_ms: must be > 0"),
    ({"adapter": {"name": "kv", "config": {"store_method": "disk"}}},
     "w.adapter.config.store_method: must be in_memory or file_based"),
    ({"adapter": {"name": "kv", "config": {"lock_index": " "}}}, "w.adapter.config.lock_index: must not be empty"),
    ({"timezone": "Europe/Paris"}, "w.timezone: unknown key"),
])
def test_config_errors_name_the_key(raw, message) -> None:
    with pytest.raises(ConfigError) as info:
        config.parse(raw, "w")
    assert str(info.value).startswith(message)
