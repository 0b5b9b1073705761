"""What the seed and interop tests check about cron, shared: the page's cron binding is
accepted by iii-cron, the page's every-30-minutes expression has the fire times its comment
promises, the per-second variant of the page's example, and a delivery's §6.4 payload.

"Accepted" is more than "listed": ``engine::registered-triggers::list`` also lists a binding
its provider refused (the router keeps it parked), so a binding counts as accepted when its
``engine::registered-triggers::info`` still names the ``cron`` trigger type after the cron
process has had time to answer, and the worker logged no registration failure.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any, Callable

from brokers.cron.schedule import Schedule
from tests.wsclient import RawClient, ok

PER_SECOND = "* * * * * *"
_EXPRESSION = re.compile(r"""expression['"]?\s*:\s*['"]([^'"]+)['"]""")
SCHEDULED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")
ACTUAL = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?\+00:00$")


def page_expression(block: str) -> str:
    """The one cron expression in a page block (``config: {expression: ...}``)."""
    [expression] = _EXPRESSION.findall(block)
    return expression


def per_second(block: str) -> str:
    """The block with its expression made ``* * * * * *``, everything else as written."""
    expression = page_expression(block)
    assert block.count(expression) == 1, expression
    return block.replace(expression, PER_SECOND)


def check_every_30_minutes(expression: str) -> None:
    """The page says "every 30 minutes": on the hour and the half hour, UTC."""
    s = Schedule.parse(expression)
    t = dt.datetime(2025, 1, 1, 10, 10, tzinfo=dt.timezone.utc).timestamp()
    times = []
    for _ in range(4):
        t = s.next_after(t)
        times.append(dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%H:%M:%S"))
    assert times == ["10:30:00", "11:00:00", "11:30:00", "12:00:00"]


def check_binding_accepted(c: RawClient, function_id: str, expression: str,
                           output: Callable[[], str], within: float = 10.0) -> str:
    """The worker's cron binding of ``function_id`` is listed with ``expression`` and held
    by iii-cron; returns its id. ``output``: the worker's output so far."""
    deadline = time.monotonic() + within
    while True:
        rows = ok(c.call_when_found("engine::registered-triggers::list",
                                    {"trigger_type": "cron", "function_id": function_id}))["registered_triggers"]
        if rows:
            break
        assert time.monotonic() < deadline, f"no cron binding of {function_id}"
        time.sleep(0.1)
    [row] = rows
    assert row["config"] == {"expression": expression}, row
    time.sleep(0.5)  # the cron process answers a binding at once; a refusal would be in by now
    info = ok(c.call("engine::registered-triggers::info", {"id": row["id"]}))
    assert info["trigger"] is not None and info["trigger"]["worker_name"] == "iii-cron", info
    assert "registration failed" not in output().lower(), output()
    return row["id"]


def check_payload(data: Any, job_id: str | None = None) -> float:
    """A delivery's payload has exactly the §6.4 fields and formats; returns its lateness
    (actual minus scheduled time, seconds)."""
    assert list(data) == ["trigger", "job_id", "scheduled_time", "actual_time"], data
    assert data["trigger"] == "cron" and isinstance(data["job_id"], str), data
    if job_id is not None:
        assert data["job_id"] == job_id, data
    assert SCHEDULED.match(data["scheduled_time"]) and ACTUAL.match(data["actual_time"]), data
    late = (dt.datetime.fromisoformat(data["actual_time"])
            - dt.datetime.fromisoformat(data["scheduled_time"])).total_seconds()
    assert 0 <= late < 1.0, data
    return late


def check_ticks(payloads: list[Any]) -> None:
    """Consecutive ticks of one job: a second or more apart, none twice."""
    seconds = [dt.datetime.fromisoformat(p["scheduled_time"]).timestamp() for p in payloads]
    assert all(b - a >= 1 for a, b in zip(seconds, seconds[1:])), payloads
