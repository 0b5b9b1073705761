"""A worker leaving is normal: official-SDK workers that exit cleanly (``shutdown()``) or are
killed with SIGKILL leave no ERROR line and no traceback in the engine log (the gateway's
``/otel`` loop used to log ``ConnectionClosedError`` with a traceback each time), and at
most INFO lines about it.
"""
from __future__ import annotations

import time
import uuid

import pytest

from tests.wsclient import RawClient

pytestmark = pytest.mark.interop


def _problems(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if " ERROR " in line or " WARNING " in line or "Traceback" in line]


@pytest.mark.parametrize("sdk", ["node", "python"])
def test_workers_leaving_cleanly_or_killed_log_no_error(engine, spawn, sdk):
    before = len(engine.log_tail(10**7))
    for how in ("shutdown", "kill -9"):
        fn = f"exit::probe-{uuid.uuid4().hex[:8]}"
        w = spawn(sdk, [{"op": "register", "function_id": fn, "kind": "const", "value": how}])
        assert w.call_when_found(fn, {})["result"] == how  # up, with its telemetry socket too
        if how == "shutdown":
            w.stop()  # the SDK's own shutdown(), then exit
        else:
            w.kill()
        with RawClient.worker(engine.url) as c:  # until the engine has seen it go
            deadline = time.monotonic() + 5
            while c.call(fn, {}).get("error") is None and time.monotonic() < deadline:
                time.sleep(0.05)
    time.sleep(0.3)  # let the gateway log whatever it logs about the closed sockets
    assert _problems(engine.log_tail(10**7)[before:]) == []
