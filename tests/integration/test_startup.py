"""A gateway that accepts workers is ready for them: it listens only once it has the
router's route table, so the very first worker finds the ``engine::*`` functions. It used
to listen at once, and a call in the gap got ``function_not_found`` (seen in CI under load,
where the router's route table came late)."""
from __future__ import annotations

import os
import signal
import threading

from tests.wsclient import RawClient, ok


def engine_functions(url: str) -> set[str]:
    with RawClient.declared(url, "early") as w:
        listed = ok(w.call("engine::functions::list", {"include_internal": True}))["functions"]
    return {f["function_id"] for f in listed}


def test_the_first_accepted_worker_finds_the_engine_functions(engine_factory) -> None:
    eng = engine_factory()  # returns as soon as a worker connection is accepted
    assert "engine::register_trigger" in engine_functions(eng.url)


def test_a_restarted_gateway_listens_only_once_the_router_has_answered(engine_factory) -> None:
    """The router is held (SIGSTOP) while the gateway restarts, so the new gateway gets no
    route table until the router is let go 0.5 s later; nobody is accepted before that."""
    eng = engine_factory()
    router = eng.pid("router")
    os.kill(router, signal.SIGSTOP)
    resume = threading.Timer(0.5, os.kill, (router, signal.SIGCONT))
    try:
        eng.wait_running("gateway", not_pid=eng.kill("gateway"))
        resume.start()
        eng.wait_accepting()
        assert "engine::register_trigger" in engine_functions(eng.url)
    finally:
        resume.cancel()
        os.kill(router, signal.SIGCONT)
