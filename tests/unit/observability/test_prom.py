"""The Prometheus exposition of stats frames, parsed back with prometheus_client's own
parser: values, labels, cumulative buckets, restart-proof totals, readiness reasons."""
from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from brokers.observability.prom import Totals, exposition, readiness

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
NOW = 1_000_000.0


def frame(process: str, unit: str, pid: int = 100, t: float = NOW, **kw: Any) -> dict:
    out = {"process": process, "unit": unit, "pid": pid, "t": t, "cpu_s": 1.5, "rss": 4096,
           "dropped": 0, "ready": True, "calls": {}, "gauges": {}, "counters": {}}
    out.update(kw)
    return out


def buckets(**at: int) -> list[int]:
    """Non-cumulative bucket counts: ``buckets(b3=2, inf=1)`` (index of BOUNDS, or inf)."""
    out = [0] * (len(BOUNDS) + 1)
    for k, n in at.items():
        out[-1 if k == "inf" else int(k[1:])] += n
    return out


def parse(stats: dict, extra: dict | None = None, now: float = NOW) -> dict[str, Any]:
    text = exposition(stats, now, extra).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def values(fam: Any, sample: str | None = None) -> dict[tuple, float]:
    """``{sorted label items: value}`` of a family's samples named ``sample``."""
    name = sample or fam.name
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples if s.name == name}


def test_calls_errors_and_histogram_are_summed_over_processes_with_cumulative_buckets() -> None:
    stats = {
        "gateway-0": frame("gateway-0", "gateway", calls={
            "math::add": [3, 1, buckets(b0=1, b3=2), 0.012],
            "state::set": [1, 0, buckets(inf=1), 12.0]}),
        "gateway-1": frame("gateway-1", "gateway", pid=101, calls={
            "math::add": [2, 0, buckets(b3=1, b7=1), 0.1]}),
    }
    fams = parse(stats)
    assert fams["iii_function_calls"].type == "counter"
    assert values(fams["iii_function_calls"], "iii_function_calls_total") == {
        (("function_id", "math::add"),): 5.0, (("function_id", "state::set"),): 1.0}
    assert values(fams["iii_function_errors"], "iii_function_errors_total") == {
        (("function_id", "math::add"),): 1.0, (("function_id", "state::set"),): 0.0}
    hist = fams["iii_function_call_duration_seconds"]
    assert hist.type == "histogram"
    add = {s.labels["le"]: s.value for s in hist.samples
           if s.name.endswith("_bucket") and s.labels["function_id"] == "math::add"}
    assert list(add) == [str(float(b)) for b in BOUNDS] + ["+Inf"]
    assert add["0.0005"] == 1 and add["0.001"] == 1 and add["0.0025"] == 1
    assert add["0.005"] == 4 and add["0.05"] == 4 and add["0.1"] == 5 and add["10.0"] == 5
    assert add["+Inf"] == 5
    counts = list(add.values())
    assert counts == sorted(counts)  # cumulative
    add_count = values(hist, "iii_function_call_duration_seconds_count")
    add_sum = values(hist, "iii_function_call_duration_seconds_sum")
    assert add_count[(("function_id", "math::add"),)] == 5
    assert abs(add_sum[(("function_id", "math::add"),)] - 0.112) < 1e-9
    assert add_count[(("function_id", "state::set"),)] == 1
    assert add_sum[(("function_id", "state::set"),)] == 12.0


def test_gauges_and_counters_map_generically_with_a_process_label() -> None:
    stats = {
        "gateway-0": frame("gateway-0", "gateway",
                           gauges={"worker_connections": [[{}, 3]]},
                           counters={"worker_spawns_total": [[{}, 4]],
                                     "worker_deaths_total": [[{}, 1]]}),
        "queue": frame("queue", "queue", pid=200, gauges={
            "queue_depth": [[{"queue": "jobs"}, 7], [{"queue": "mail"}, 0]],
            "queue_dlq_size": [[{"queue": "jobs"}, 2]]}),
        "state": frame("state", "state", pid=300, counters={
            "state_operations_total": [[{"op": "set"}, 10], [{"op": "get"}, 25]]}),
        "stream": frame("stream", "stream", pid=400, counters={
            "stream_operations_total": [[{"op": "set"}, 5]]}),
    }
    fams = parse(stats)
    assert fams["iii_worker_connections"].type == "gauge"
    assert values(fams["iii_worker_connections"]) == {(("process", "gateway-0"),): 3.0}
    assert values(fams["iii_worker_spawns"], "iii_worker_spawns_total") == {
        (("process", "gateway-0"),): 4.0}
    assert values(fams["iii_worker_deaths"], "iii_worker_deaths_total") == {
        (("process", "gateway-0"),): 1.0}
    assert values(fams["iii_queue_depth"]) == {
        (("process", "queue"), ("queue", "jobs")): 7.0,
        (("process", "queue"), ("queue", "mail")): 0.0}
    assert values(fams["iii_queue_dlq_size"]) == {(("process", "queue"), ("queue", "jobs")): 2.0}
    ops = fams["iii_state_operations"]
    assert ops.type == "counter"
    assert values(ops, "iii_state_operations_total") == {
        (("op", "get"), ("process", "state")): 25.0, (("op", "set"), ("process", "state")): 10.0}
    assert values(fams["iii_stream_operations"], "iii_stream_operations_total") == {
        (("op", "set"), ("process", "stream")): 5.0}


def test_process_cpu_rss_dropped_and_up_from_freshness() -> None:
    stats = {"gateway-0": frame("gateway-0", "gateway", cpu_s=2.25, rss=1 << 20, dropped=17),
             "state": frame("state", "state", pid=300, t=NOW - 3.5)}
    fams = parse(stats)
    assert values(fams["iii_process_cpu_seconds"], "iii_process_cpu_seconds_total") == {
        (("process", "gateway-0"),): 2.25, (("process", "state"),): 1.5}
    assert values(fams["iii_process_resident_memory_bytes"])[(("process", "gateway-0"),)] == 1 << 20
    assert values(fams["iii_telemetry_dropped"], "iii_telemetry_dropped_total") == {
        (("process", "gateway-0"),): 17.0, (("process", "state"),): 0.0}
    assert values(fams["iii_process_up"]) == {
        (("process", "gateway-0"),): 1.0, (("process", "state"),): 0.0}


def test_extra_total_names_are_counters_others_gauges() -> None:
    extra = {"telemetry_received_total": 12, "spans_stored": 40, "logs_stored": 3,
             "alerts_fired_total": [[{"alert": "slow"}, 2]]}
    fams = parse({}, extra)
    assert fams["iii_telemetry_received"].type == "counter"
    assert values(fams["iii_telemetry_received"], "iii_telemetry_received_total") == {(): 12.0}
    assert fams["iii_spans_stored"].type == "gauge"
    assert values(fams["iii_spans_stored"]) == {(): 40.0}
    assert values(fams["iii_logs_stored"]) == {(): 3.0}
    assert values(fams["iii_alerts_fired"], "iii_alerts_fired_total") == {(("alert", "slow"),): 2.0}
    # no stats yet: the built-in families are still there, empty
    assert fams["iii_function_calls"].samples == []


def test_malformed_entries_are_skipped_and_names_cleaned() -> None:
    stats = {
        "gateway-0": frame("gateway-0", "gateway", rss="big", calls={
            "ok::fn": [1, 0, buckets(b1=1), 0.001],
            "short::buckets": [2, 0, [1, 1], 0.1],
            "bad::entry": "nope", 42: [1, 0, buckets(b1=1), 0.0]},
            gauges={"queue_depth": [[{"queue": "q"}, "x"], ["no labels"], [{"queue": "r"}, 1]],
                    "bad-name.x": [[{"a-b": 1}, 2]], "process_up": [[{}, 9]]},
            counters={"queue_depth": [[{}, 1]], "weird": "nope"}),
        "broken": "not a frame",
    }
    fams = parse(stats)
    assert values(fams["iii_function_calls"], "iii_function_calls_total") == {
        (("function_id", "ok::fn"),): 1.0, (("function_id", "short::buckets"),): 2.0}
    assert values(fams["iii_queue_depth"]) == {(("process", "gateway-0"), ("queue", "r")): 1.0}
    assert fams["iii_queue_depth"].type == "gauge"  # the counter of the same name is skipped
    assert values(fams["iii_bad_name_x"]) == {(("a_b", "1"), ("process", "gateway-0")): 2.0}
    assert values(fams["iii_process_up"]) == {(("process", "gateway-0"),): 1.0}
    assert (("process", "gateway-0"),) not in values(fams["iii_process_resident_memory_bytes"])


def test_totals_carry_counters_over_a_restart_and_never_go_back() -> None:
    totals = Totals()

    def expose(f: dict) -> dict[str, Any]:
        return parse(totals.apply({"state": f}))

    first = frame("state", "state", pid=300, cpu_s=5.0, dropped=2, rss=900,
                  calls={"state::set": [10, 1, buckets(b2=10), 0.03]},
                  counters={"state_operations_total": [[{"op": "set"}, 10], [{"op": "del"}, 4]]})
    fams = expose(first)
    assert values(fams["iii_state_operations"], "iii_state_operations_total")[
        (("op", "set"), ("process", "state"))] == 10
    assert expose(first) == fams  # the same frame again adds nothing
    again = frame("state", "state", pid=300, cpu_s=6.0, dropped=2, rss=800,
                  calls={"state::set": [12, 1, buckets(b2=12), 0.04]},
                  counters={"state_operations_total": [[{"op": "set"}, 12], [{"op": "del"}, 4]]})
    expose(again)  # same pid: its values as they are
    restarted = frame("state", "state", pid=301, cpu_s=0.5, dropped=1, rss=100,
                      calls={"state::set": [1, 0, buckets(b0=1), 0.0004]},
                      counters={"state_operations_total": [[{"op": "set"}, 1]]})
    fams = expose(restarted)
    key = (("process", "state"),)
    assert values(fams["iii_process_cpu_seconds"], "iii_process_cpu_seconds_total")[key] == 6.5
    assert values(fams["iii_telemetry_dropped"], "iii_telemetry_dropped_total")[key] == 3
    assert values(fams["iii_process_resident_memory_bytes"])[key] == 100  # a gauge: as is
    assert values(fams["iii_state_operations"], "iii_state_operations_total") == {
        (("op", "set"), ("process", "state")): 13.0,
        (("op", "del"), ("process", "state")): 4.0}  # known only from before the restart
    fn = (("function_id", "state::set"),)
    assert values(fams["iii_function_calls"], "iii_function_calls_total")[fn] == 13
    assert values(fams["iii_function_errors"], "iii_function_errors_total")[fn] == 1
    hist = fams["iii_function_call_duration_seconds"]
    cum = {s.labels["le"]: s.value for s in hist.samples if s.name.endswith("_bucket")}
    assert cum["0.0005"] == 1 and cum["0.0025"] == 13 and cum["+Inf"] == 13
    assert abs(values(hist, "iii_function_call_duration_seconds_sum")[fn] - 0.0404) < 1e-9
    # a second restart adds the second incarnation's last values too
    fams = expose(frame("state", "state", pid=302, cpu_s=0.25))
    assert values(fams["iii_process_cpu_seconds"], "iii_process_cpu_seconds_total")[key] == 6.75
    assert values(fams["iii_function_calls"], "iii_function_calls_total")[fn] == 13


def test_readiness_names_the_reason_of_each_process() -> None:
    alive = {100, 200, 300}
    stats = {
        "gateway-0": frame("gateway-0", "gateway", pid=100),
        "router": frame("router", "router", pid=200, t=NOW - 1.0),
        "state": frame("state", "state", pid=300),
        "old-gateway": frame("old-gateway", "gateway", pid=999, ready=False),  # not planned
    }
    planned = ["gateway-0", "router", "state"]
    ok, detail = readiness(planned, stats, NOW, alive.__contains__)
    assert ok and detail == {"ready": True, "processes": dict.fromkeys(planned, "ok")}

    stats["state"] = frame("state", "state", pid=300, t=NOW - 4.2)
    stats["gateway-0"] = frame("gateway-0", "gateway", pid=100, ready=False)
    stats["router"] = frame("router", "router", pid=201)
    ok, detail = readiness(planned + ["queue"], stats, NOW, alive.__contains__)
    assert not ok and detail["ready"] is False
    assert detail["processes"] == {"gateway-0": "gateway not listening yet",
                                   "router": "pid 201 is not alive",
                                   "state": "no stats for 4.2 s", "queue": "no stats yet"}
    _, detail = readiness(["state"], stats, NOW, alive.__contains__, stale_s=5.0)
    assert detail["processes"]["state"] == "ok"
