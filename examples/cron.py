"""Cron: the engine calls a function on a schedule (the ``iii-cron`` worker).

Shows ``register_trigger({"type": "cron", ...})``: ``reports::every-second`` is bound with
the expression ``* * * * * *``. Expressions have 6 or 7 fields, seconds first, in UTC:
``second minute hour day-of-month month day-of-week [year]``, day of week 1-7 with
1 = Sunday (``0 */30 * * * *`` is every 30 minutes, ``0 0 9 * * MON-FRI`` 09:00 on
weekdays, ``@daily`` midnight). Each call receives ``{trigger, job_id, scheduled_time,
actual_time}``; the engine waits for the answer before the job's next tick, so a slow
handler skips ticks rather than piling them up. After two ticks the trigger is removed.

Run it (two shells, from the repository's top):

    .venv/bin/iii-supervisor start conf/iii-config.yaml
    .venv/bin/python examples/cron.py

Exits with 0 after two ticks, 1 if they did not come within 10 seconds.
"""
from __future__ import annotations

import os
import sys
import threading

from iii import register_worker

URL = os.environ.get("III_URL", "ws://127.0.0.1:49134")
TICKS = 2


def main() -> int:
    iii = register_worker(URL)
    ticks: list[dict] = []
    done = threading.Event()

    def every_second(payload: dict) -> None:
        ticks.append(payload)
        print(f"tick {len(ticks)}: {payload['trigger']} job scheduled at {payload['scheduled_time']}, "
              f"ran at {payload['actual_time']}", flush=True)
        if len(ticks) == TICKS:
            done.set()

    try:
        if not iii.wait_connected(5):
            print(f"could not reach the engine at {URL}", file=sys.stderr)
            return 1
        iii.register_function("reports::every-second", every_second)
        trigger = iii.register_trigger({"type": "cron", "function_id": "reports::every-second",
                                        "config": {"expression": "* * * * * *"}})
        print("bound reports::every-second to cron '* * * * * *'", flush=True)
        if not done.wait(10):
            print(f"only {len(ticks)} tick(s) in 10 s: is iii-cron in the engine's config?", file=sys.stderr)
            return 1
        trigger.unregister()
        same_job = {t["job_id"] for t in ticks} == {trigger.id}
        print(f"unregistered the trigger after {TICKS} ticks; job_id was the trigger's id: {same_job}")
        return 0 if same_job else 1
    finally:
        iii.shutdown()


if __name__ == "__main__":
    sys.exit(main())
