"""The observability worker end to end (issue 16): a real engine with ``iii-observability``
(Prometheus on a free port, two alert rules) and ``iii-state``; raw protocol workers.

What it shows: the ``log`` trigger with a level filter and ``engine::logs::list`` (newest
first, data as attributes, trace id filled from the caller's ``traceparent``); the engine's
span ``call <fid>`` between caller and callee (traceparent and ``iii.function.id`` baggage
rewritten, tree, status, invocation counters); the coalesced ``trace`` trigger; alerts
firing a function and a webhook once per cooldown; ``/metrics`` parsed by
``prometheus_client`` with counters moving, ``/healthz``, and ``/readyz`` following a
``kill -9`` of the state process and its restart. Kill of the observability process itself
and a webhook refused by the default URL guard: ``test_observability_chaos.py``.

One engine for the module. Its alert rules fire on the first counted call, and then at
most once per 60 s cooldown, so the alert test runs first and the alert-sink worker is
connected before any call is made (a fire before the test would still be the one fire).
"""
from __future__ import annotations

import json
import signal
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import pytest

from tests.harness import Engine, free_port, running_engine
from tests.obscheck import attrs, connect_pair, flatten, http_get, poll, routed_call, sample, scrape, trace_ids
from tests.receiver import Receiver
from tests.wsclient import RawClient, fid, ok

ALERT_FN = "obs-e2e::alert-sink"
HOOK_PATH = "/hook"


def obs_yaml(prom_port: int, hook_url: str) -> str:
    return f"""\
- name: iii-state
  config: {{}}
- name: iii-observability
  config:
    prometheus_host: 127.0.0.1
    prometheus_port: {prom_port}
    webhook_security:
      block_private_ips: false
    alerts:
      - name: calls-to-function
        metric: iii.invocations.total
        operator: ">"
        threshold: 0
        cooldown_seconds: 60
        action: {{type: function, path: "{ALERT_FN}"}}
      - name: calls-to-webhook
        metric: iii.invocations.total
        operator: ">"
        threshold: 0
        cooldown_seconds: 60
        action: {{type: webhook, url: "{hook_url}"}}
"""


@dataclass
class Obs:
    engine: Engine
    prom: str
    receiver: Receiver
    alert_sink: RawClient


@pytest.fixture(scope="module")
def obs() -> Iterator[Obs]:
    receiver = Receiver()
    port = free_port()
    try:
        with running_engine(extra_workers_yaml=obs_yaml(port, receiver.url(HOOK_PATH)),
                            wait_for="engine::health::check") as eng:
            sink = RawClient.declared(eng.url, "obs-alert-sink")
            sink.register_function(ALERT_FN)
            try:
                yield Obs(eng, f"http://127.0.0.1:{port}", receiver, sink)
            finally:
                sink.close()
    finally:
        receiver.close()


# ---- 4. alerts (first: the rules fire on the module's first counted call) ---------------

def test_alerts_fire_a_function_and_a_webhook_once_per_cooldown(obs: Obs) -> None:
    fn = fid("obs::alerted")
    caller, callee = connect_pair(obs.engine, fn)  # the probe is a counted call
    with caller, callee:
        routed_call(caller, callee, fn, {"n": 1})
        poll(lambda: ok(caller.call("engine::metrics::list", {}))["engine_metrics"]["invocations"]["total"] >= 1,
             10, "a counted invocation in engine::metrics::list")
        first = ok(caller.call("engine::alerts::evaluate", {}))
        second = ok(caller.call("engine::alerts::evaluate", {}))
        assert first["evaluated"] is True and second["evaluated"] is True
        # the periodic evaluation (every 10 s) may have fired the rules before: then neither
        # call does, but in no case both
        names = [e["name"] for r in (first, second) for e in r["triggered_alerts"]]
        assert len(names) == len(set(names)), (first, second)
        assert second["triggered_alerts"] == [], second

        payload = obs.alert_sink.next_call(ALERT_FN, timeout=10)
        data = payload["data"]
        assert data["alert"] == "calls-to-function" and data["metric"] == "iii.invocations.total", data
        assert data["value"] >= 1 and data["threshold"] == 0 and data["operator"] == "GreaterThan", data
        assert data["firing"] is True, data
        post = obs.receiver.next(timeout=10)
        assert post["method"] == "POST" and post["path"] == HOOK_PATH, post
        body = json.loads(post["body"])
        assert body["alert"] == "calls-to-webhook" and body["metric"] == "iii.invocations.total", body
        assert body["value"] >= 1 and body["operator"] == "GreaterThan", body

        # once per cooldown: two more evaluations and a quiet while bring nothing more
        ok(caller.call("engine::alerts::evaluate", {}))
        ok(caller.call("engine::alerts::evaluate", {}))
        more = [f for f in obs.alert_sink.frames_within(2.0)
                if f.get("type") == "invokefunction" and f.get("function_id") == ALERT_FN]
        assert more == [], more
        assert obs.receiver.requests.empty(), obs.receiver.requests.get_nowait()

        listed = ok(caller.call("engine::alerts::list", {}))
        states = {s["name"]: s for s in listed["alerts"]}
        assert set(states) == {"calls-to-function", "calls-to-webhook"}, listed
        for state in states.values():
            assert state["firing"] is True and state["last_triggered"] is not None, state
            assert state["current_value"] >= 1 and state["operator"] == "GreaterThan", state
        assert listed["firing_count"] == 2, listed
        assert {r["name"] for r in listed["rules"]} == set(states), listed


# ---- 1. logs and the log trigger ----------------------------------------------------------

def test_log_trigger_filters_by_level_and_logs_list_is_newest_first(obs: Obs) -> None:
    sink_fn = fid("obs::on-error-log")
    tag = uuid.uuid4().hex[:8]
    with RawClient.declared(obs.engine.url, "obs-log-sink") as w:
        w.register_function(sink_fn)
        w.send({"type": "registertrigger", "id": f"log-{tag}", "trigger_type": "log",
                "function_id": sink_fn, "config": {"level": "error"}})
        # the binding is asynchronous: log errors until one reaches the sink
        deadline = time.monotonic() + 10
        while True:
            ok(w.call("engine::log::error", {"message": f"warmup-{tag}"}))
            try:
                w.next_call(sink_fn, timeout=0.5)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "log trigger never fired"
        w.frames_within(0.5)  # the other warm-up deliveries

        info = {"message": f"info-{tag}", "data": {"user": "ann", "n": 1}, "service_name": "obs-e2e"}
        error = {"message": f"error-{tag}", "data": {"code": "E42", "nested": {"a": [1, 2]}},
                 "service_name": "obs-e2e"}
        assert ok(w.call("engine::log::info", info)) is None
        assert ok(w.call("engine::log::error", error)) is None

        # the info entry, were it delivered, would come first (same order as stored)
        got = w.recv_until(lambda f: f.get("function_id") == sink_fn
                           and f["data"]["body"] in (info["message"], error["message"]), timeout=10)
        entry = got["data"]
        assert entry["body"] == error["message"], entry
        for key in ("timestamp_unix_nano", "observed_timestamp_unix_nano", "severity_number",
                    "severity_text", "body", "attributes", "trace_id", "span_id", "resource",
                    "service_name", "instrumentation_scope_name", "instrumentation_scope_version"):
            assert key in entry, (key, entry)
        assert entry["severity_number"] == 17 and entry["severity_text"] == "ERROR", entry
        assert entry["attributes"] == error["data"] and entry["service_name"] == "obs-e2e", entry
        assert entry["resource"]["service.name"] == "iii", entry
        later = [f for f in w.frames_within(1.0) if f.get("function_id") == sink_fn]
        assert all(f["data"]["severity_text"] == "ERROR" for f in later), later
        assert info["message"] not in {f["data"]["body"] for f in later}, later

        listed = ok(w.call("engine::logs::list", {}))
        ours = [e for e in listed["logs"] if e["body"] in (info["message"], error["message"])]
        assert [e["body"] for e in ours] == [error["message"], info["message"]], ours  # newest first
        assert ours[0]["attributes"] == error["data"] and ours[1]["attributes"] == info["data"], ours
        assert ours[1]["severity_text"] == "INFO" and ours[1]["severity_number"] == 9, ours
        assert listed["total"] >= 2 and "query" in listed, listed
        stamps = [e["timestamp_unix_nano"] for e in listed["logs"]]
        assert stamps == sorted(stamps, reverse=True), stamps
        errors_only = ok(w.call("engine::logs::list", {"severity_min": 17}))["logs"]
        assert info["message"] not in {e["body"] for e in errors_only}, errors_only


def test_a_log_from_inside_a_handler_gets_the_calls_trace_id(obs: Obs) -> None:
    fn = fid("obs::logs-inside")
    trace, span = trace_ids()
    message = f"inside-{uuid.uuid4().hex[:8]}"
    caller, callee = connect_pair(obs.engine, fn)
    with caller, callee:
        def log_inside(invocation: dict) -> None:
            # what an SDK does: the handler's log call carries the handler's traceparent
            ok(callee.call("engine::log::info", {"message": message, "data": {"where": "handler"}},
                           traceparent=invocation["traceparent"]))

        got, result = routed_call(caller, callee, fn, {"x": 1}, traceparent=f"00-{trace}-{span}-01",
                                  on_invoke=log_inside)
        ok(result)
        engine_span = got["traceparent"].split("-")[2]
        logs = ok(caller.call("engine::logs::list", {"trace_id": trace}))["logs"]
        assert [e["body"] for e in logs] == [message], logs
        assert logs[0]["trace_id"] == trace and logs[0]["span_id"] == engine_span, logs
        assert logs[0]["attributes"] == {"where": "handler"}, logs
        # an explicit trace id in the input wins over the call's context
        other = uuid.uuid4().hex
        ok(callee.call("engine::log::warn", {"message": message + "-explicit", "trace_id": other},
                       traceparent=got["traceparent"]))
        explicit = ok(caller.call("engine::logs::list", {"trace_id": other}))["logs"]
        assert [e["body"] for e in explicit] == [message + "-explicit"], explicit


# ---- 2. engine spans ----------------------------------------------------------------------

def test_engine_span_sits_between_caller_and_callee(obs: Obs) -> None:
    fn = fid("obs::traced")
    trace, span = trace_ids()
    err_trace, err_span = trace_ids()
    caller, callee = connect_pair(obs.engine, fn)
    with caller, callee:
        before = ok(caller.call("engine::metrics::list", {}))["engine_metrics"]["invocations"]
        got, result = routed_call(caller, callee, fn, {"x": 1}, traceparent=f"00-{trace}-{span}-01",
                                  baggage="user=ann,iii.function.id=somewhere::else")
        ok(result)
        parts = got["traceparent"].split("-")
        assert parts[0] == "00" and parts[1] == trace and parts[3] == "01", got
        engine_span = parts[2]
        assert len(engine_span) == 16 and engine_span != span, got
        baggage = dict(p.split("=", 1) for p in got["baggage"].split(","))
        assert baggage == {"user": "ann", "iii.function.id": fn}, got

        listed = poll(lambda: ok(caller.call("engine::traces::list", {"trace_id": trace}))["spans"],
                      10, "the engine span in engine::traces::list")
        assert len(listed) == 1, listed
        s = listed[0]
        assert s["name"] == f"call {fn}" and s["span_id"] == engine_span, s
        assert s["parent_span_id"] == span and s["trace_id"] == trace and s["status"] == "ok", s
        a = attrs(s)
        assert a["function_id"] == fn and a["iii.function.kind"] == "user", a
        assert a["iii.worker.id"] == callee.worker_id and a["iii.caller.worker_id"] == caller.worker_id, a
        assert a["iii.call.mode"] == "sync", a
        assert s["end_time_unix_nano"] >= s["start_time_unix_nano"] > 0, s

        tree = ok(caller.call("engine::traces::tree", {"trace_id": trace}))
        nodes = flatten(tree["roots"])
        assert [n["span_id"] for n in tree["roots"]] == [engine_span], tree
        assert nodes[0]["parent_span_id"] == span and nodes[0]["status"] == "ok", nodes

        _, failed = routed_call(caller, callee, fn, {"x": 2}, traceparent=f"00-{err_trace}-{err_span}-01",
                                error={"code": "boom", "message": "it broke"})
        assert (failed.get("error") or {}).get("code") == "boom", failed
        bad = poll(lambda: ok(caller.call("engine::traces::list", {"trace_id": err_trace}))["spans"],
                   10, "the failed call's span")
        assert bad[0]["status"] == "error" and bad[0]["parent_span_id"] == err_span, bad
        errors = ok(caller.call("engine::traces::list", {"status": "error", "name": fn}))["spans"]
        assert [x["trace_id"] for x in errors] == [err_trace], errors

        def counted() -> dict | None:
            inv = ok(caller.call("engine::metrics::list", {}))["engine_metrics"]["invocations"]
            return inv if inv["by_function"].get(fn, 0) >= 3 else None  # probe + 2 calls
        inv = poll(counted, 10, f"engine_metrics counting {fn}")
        assert inv["by_function"][fn] == 3, inv
        assert inv["total"] >= before["total"] + 2 and inv["error"] >= before["error"] + 1, (before, inv)
        assert inv["success"] == inv["total"] - inv["error"], inv


# ---- 3. the trace trigger -----------------------------------------------------------------

def test_trace_trigger_gets_coalesced_error_trace_ids(obs: Obs) -> None:
    fn = fid("obs::maybe-fails")
    sink_fn = fid("obs::on-error-trace")
    ok_trace, ok_span = trace_ids()
    bad_trace, bad_span = trace_ids()
    caller, callee = connect_pair(obs.engine, fn)
    with caller, callee, RawClient.declared(obs.engine.url, "obs-trace-sink") as sink:
        sink.register_function(sink_fn)
        sink.send({"type": "registertrigger", "id": f"trace-{uuid.uuid4().hex[:8]}", "trigger_type": "trace",
                   "function_id": sink_fn, "config": {"status": "error"}})
        # the binding is asynchronous: retry the pair of calls until a delivery names one
        deadline = time.monotonic() + 10
        deliveries: list[list[str]] = []
        while True:
            routed_call(caller, callee, fn, {}, traceparent=f"00-{ok_trace}-{ok_span}-01")
            routed_call(caller, callee, fn, {}, traceparent=f"00-{bad_trace}-{bad_span}-01",
                        error={"code": "nope", "message": "failed on purpose"})
            end = time.monotonic() + 2.0
            while time.monotonic() < end and not any(bad_trace in d for d in deliveries):
                try:
                    deliveries.append(sink.next_call(sink_fn, timeout=0.3)["data"]["trace_ids"])
                except TimeoutError:
                    pass
            if any(bad_trace in d for d in deliveries):
                break
            assert time.monotonic() < deadline, f"no trace trigger delivery with {bad_trace}: {deliveries}"
        deliveries += [f["data"]["trace_ids"] for f in sink.frames_within(1.0)
                       if f.get("function_id") == sink_fn]
        for ids in deliveries:
            assert ok_trace not in ids, deliveries
            assert ids == sorted(set(ids)), deliveries


# ---- 5. /metrics, /healthz, /readyz -------------------------------------------------------

def test_metrics_counters_move_after_calls(obs: Obs) -> None:
    fn = fid("obs::counted")
    n = 5
    caller, callee = connect_pair(obs.engine, fn)  # one probe call
    with caller, callee:
        poll(lambda: sample(scrape(obs.prom), "iii_function_calls_total", function_id=fn) == 1,
             10, f"iii_function_calls_total{{function_id={fn}}} == 1 after the probe")
        hist_before = sample(scrape(obs.prom), "iii_function_call_duration_seconds_count", function_id=fn)
        assert hist_before == 1, hist_before
        for i in range(n):
            ok(routed_call(caller, callee, fn, {"i": i})[1])
        poll(lambda: sample(scrape(obs.prom), "iii_function_calls_total", function_id=fn) == 1 + n,
             10, f"iii_function_calls_total{{function_id={fn}}} == {1 + n}")
        # and it stays there: the next stats seconds bring no phantom calls
        time.sleep(1.2)
        samples = scrape(obs.prom)
        assert sample(samples, "iii_function_calls_total", function_id=fn) == 1 + n
        assert sample(samples, "iii_function_errors_total", function_id=fn) == 0
        assert sample(samples, "iii_function_call_duration_seconds_count", function_id=fn) == 1 + n
        assert sample(samples, "iii_function_call_duration_seconds_bucket", function_id=fn, le="+Inf") == 1 + n
        assert sample(samples, "iii_function_call_duration_seconds_sum", function_id=fn) > 0
        names = {name for name, _ in samples}
        assert "iii_worker_connections" in names, sorted(names)
        conns = sum(v for (name, _), v in samples.items() if name == "iii_worker_connections")
        assert conns >= 3, conns  # the alert sink, the caller and the callee at least
        processes = {entry["name"] for entry in obs.engine.status()}
        assert {"gateway", "router", "state", "observability"} <= processes, processes
        for process in processes:
            rss = sample(samples, "iii_process_resident_memory_bytes", process=process)
            assert rss is not None and rss > 1e6, (process, rss)
            assert sample(samples, "iii_process_up", process=process) == 1, process
            assert sample(samples, "iii_process_cpu_seconds_total", process=process) is not None, process


def test_healthz_and_readyz_follow_a_killed_process(obs: Obs) -> None:
    status, body = http_get(obs.prom + "/healthz")
    assert status == 200, body
    status, body = poll(lambda: (lambda r: r if r[0] == 200 else None)(http_get(obs.prom + "/readyz")),
                        10, "/readyz 200 with every process up")
    assert json.loads(body)["ready"] is True, body

    pid = obs.engine.kill("state", signal.SIGKILL)
    t0 = time.monotonic()
    status, body = poll(lambda: (lambda r: r if r[0] == 503 else None)(http_get(obs.prom + "/readyz")),
                        6, "/readyz 503 after kill -9 of state")
    unready_after = time.monotonic() - t0
    detail = json.loads(body)
    assert detail["ready"] is False and detail["processes"]["state"] != "ok", detail
    assert all(reason == "ok" for name, reason in detail["processes"].items() if name != "state"), detail
    print(f"/readyz unready {unready_after:.2f}s after kill -9 of state: {detail}")

    obs.engine.wait_running("state", 20, not_pid=pid)
    status, body = poll(lambda: (lambda r: r if r[0] == 200 else None)(http_get(obs.prom + "/readyz")),
                        10, "/readyz 200 again after state's restart")
    assert json.loads(body)["ready"] is True, body
    assert http_get(obs.prom + "/healthz")[0] == 200
    with RawClient.declared(obs.engine.url, "obs-after-restart") as w:
        w.wait_answered("state::list_groups", {}, within=10)
