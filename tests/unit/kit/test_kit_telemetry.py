"""The kit's telemetry: engine spans and counters (``Recorder``), sampling, and the sink link
that drops and counts instead of queueing when the observability process is away."""
from __future__ import annotations

import asyncio
import tempfile

from brokers.kit.sampling import Sampler
from brokers.kit.sink import Link, Sink
from brokers.kit.telemetry import (DURATION_BOUNDS, ERROR, MAX_BLOB_BYTES, OK, Recorder, function_kind,
                                   parse_traceparent, with_function_id)

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def test_traceparent_is_parsed_strictly() -> None:
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01") == (TRACE, PARENT, True)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00") == (TRACE, PARENT, False)
    for bad in (None, 5, "", f"00-{TRACE}-{PARENT}", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
                f"00-{'x' * 32}-{PARENT}-01", f"00_{TRACE}-{PARENT}-01"):
        assert parse_traceparent(bad) is None


def test_baggage_gets_the_target_function_id() -> None:
    assert with_function_id(None, "a::b") == "iii.function.id=a::b"
    assert with_function_id("k=v,iii.function.id=old", "a::b") == "k=v,iii.function.id=a::b"
    assert with_function_id("k=v", "a::b") == "k=v,iii.function.id=a::b"


def test_kinds_and_observability_functions_untraced() -> None:
    assert function_kind("state::set") == "internal" and function_kind("engine::functions::list") == "internal"
    assert function_kind("math::add") == "user"
    assert function_kind("engine::log::info") is None and function_kind("engine::traces::list") is None
    rec = Recorder({})
    assert rec.begin("engine::logs::list", "tp", "bg") == (None, "tp", "bg")


def test_a_call_is_a_child_of_its_caller_and_the_parent_of_its_callee() -> None:
    rec = Recorder({})
    span, tp, bg = rec.begin("math::add", f"00-{TRACE}-{PARENT}-01", None)
    assert span[0] == TRACE and span[2] == PARENT and span[9] == "math::add"
    assert tp == f"00-{TRACE}-{span[1]}-01" and span[1] != PARENT
    assert bg == "iii.function.id=math::add"
    rec.finish(span, error=True, description="boom")
    assert span[6] == ERROR and span[8] == "boom" and span[5] >= span[4]
    calls = rec.calls["math::add"]
    assert calls[0] == 1 and calls[1] == 1 and sum(calls[2]) == 1 and len(calls[2]) == len(DURATION_BOUNDS) + 1
    spans, _ = rec.take()
    assert spans == [span] and rec.take() == ([], [])


def test_a_root_call_starts_a_trace_and_a_void_call_has_no_duration() -> None:
    rec = Recorder({})
    span, tp, bg = rec.begin("math::add")
    assert len(span[0]) == 32 and span[2] is None and tp.startswith(f"00-{span[0]}-") and bg is None
    rec.finish(span, void=True)
    assert span[5] == span[4] and span[6] == 0 and rec.calls["math::add"][0] == 1
    assert sum(rec.calls["math::add"][2]) == 0  # no duration for a call nobody waits for


def test_unsampled_calls_are_counted_not_kept() -> None:
    rec = Recorder({"sampling_ratio": 0.0})
    span, tp, _ = rec.begin("math::add")
    assert span[0] is None and tp is None
    rec.finish(span)
    assert rec.calls["math::add"][0] == 1 and rec.take() == ([], [])
    # parent-based: the caller's sampled flag wins over the ratio
    span, tp, _ = rec.begin("math::add", f"00-{TRACE}-{PARENT}-01")
    assert span[0] == TRACE
    rec = Recorder({"sampling_ratio": 1.0})
    span, tp, _ = rec.begin("math::add", f"00-{TRACE}-{PARENT}-00")
    assert span[0] is None and tp == f"00-{TRACE}-{PARENT}-00"  # passed on as it came


def test_off_recorder_passes_context_through() -> None:
    rec = Recorder({"enabled": False})
    assert rec.begin("math::add", "tp", None) == (None, "tp", None)
    rec.blob(b"OTLP{}")
    assert rec.take() == ([], []) and rec.dropped == 0


def test_sampling_rules_first_match_and_rate_limit() -> None:
    s = Sampler(0.5, [{"operation": "call state::*", "rate": 0.0}, {"service": "ii?", "rate": 1.0}])
    assert s.ratio("call state::set") == 0.0 and s.ratio("call math::add") == 1.0
    assert s.ratio("call math::add", service=None) == 0.5  # a service rule never matches no service
    assert s.root("call math::add", 0.99, 0.0) and not s.root("call state::get", 0.0, 0.0)
    limited = Sampler(1.0, max_traces_per_second=2)
    kept = [limited.root("x", 0.0, 10.0) for _ in range(5)]
    assert kept == [True, True, False, False, False]
    assert limited.root("x", 0.0, 10.6)  # a token back after half a second
    assert Sampler.from_settings({"sampling_ratio": 0.2, "sampling": {"default": 0.7}}).default == 0.7


def test_a_call_record_becomes_a_stored_span_with_its_attributes() -> None:
    from brokers.observability.otlp import span_from_record
    rec = Recorder({})
    span, _, _ = rec.begin("math::add", f"00-{TRACE}-{PARENT}-01")
    span[10:] = "worker-b", "worker-a", "inv-1", "sync"
    rec.finish(span)
    stored = span_from_record(span, "iii")
    assert stored["name"] == "call math::add" and stored["parent_span_id"] == PARENT and stored["status"] == "ok"
    assert dict(stored["attributes"]) == {"function_id": "math::add", "iii.function.kind": "user",
                                          "iii.worker.id": "worker-b", "iii.caller.worker_id": "worker-a",
                                          "iii.invocation.id": "inv-1", "iii.call.mode": "sync"}


def test_ids_are_fresh_per_call() -> None:
    rec = Recorder({})
    ids = set()
    for _ in range(1000):  # past one pool of random bytes
        span, _, _ = rec.begin("math::add")
        ids.add(span[1])
        assert len(span[0]) == 32 and len(span[1]) == 16 and int(span[0], 16) and int(span[1], 16) >= 0
    assert len(ids) == 1000


def test_sdk_frames_are_bounded() -> None:
    rec = Recorder({})
    big = b"LOGS" + b"x" * (MAX_BLOB_BYTES // 2)
    rec.blob(big), rec.blob(big), rec.blob(big)
    spans, blobs = rec.take()
    assert len(blobs) == 1 and rec.dropped == 2


async def test_link_delivers_to_the_sink_and_counts_what_it_cannot_send() -> None:
    run = tempfile.mkdtemp(prefix="iii-", dir="/tmp")
    rec = Recorder({})
    link = Link("gateway", "gateway", run, rec, lambda: {"ready": False, "gauges": {"g": [[{}, 3]]}})
    link.start()
    span, _, _ = rec.begin("math::add")
    rec.finish(span)
    link.flush()  # no sink bound: dropped and counted, not queued
    assert rec.dropped == 1 and rec.take() == ([], [])
    got: list[dict] = []
    sink = Sink(run, got.append)
    sink.start()
    try:
        for _ in range(100):
            span, _, _ = rec.begin("math::add")
            rec.finish(span)
            await asyncio.sleep(0.05)
            if any(b["spans"] for b in got) and any(b["stats"] for b in got):
                break
        batch = next(b for b in got if b["spans"])
        assert batch["p"] == "gateway" and batch["spans"][0][9] == "math::add"
        stats = next(b["stats"] for b in got if b["stats"])
        assert stats["gauges"] == {"g": [[{}, 3]]} and stats["ready"] is False and stats["rss"] > 0
        assert stats["calls"]["math::add"][0] >= 2 and stats["dropped"] >= 1
    finally:
        link.close()
        sink.close()
