"""What another local user can see of a running engine (issue 11, item 8), on the real
engine with iii-state, iii-queue and a durable binding: nothing. The data dir, every store
dir and the runtime dir are 0700, every store file and the pid file 0600, and the ipc and
control sockets carry no group/other bits (the engine runs with umask 077).

The data dir is made 0755 here, whatever the test's umask: the engine tightens it.
"""
from __future__ import annotations

import os
import stat

import pytest

from tests.harness import QUEUE_READY, STATE_READY, STATE_WORKER_YAML, Engine, running_engine
from tests.wsclient import RawClient, fid, ok
from tests.wsclient import wait_for_function


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def engine():
    with running_engine(queues={"jobs": {}}, extra_workers_yaml=STATE_WORKER_YAML,
                        wait_for=QUEUE_READY, data_mode=0o755) as eng:
        wait_for_function(eng.url, STATE_READY)
        with RawClient.worker(eng.url) as w:
            ok(w.call("state::set", {"scope": "secrets", "key": "token", "value": "s3cret"}))
            ok(w.call("engine::register_trigger", {"trigger_type": "state", "function_id":
                                                   fid("files::on"), "config": {}}))
        yield eng


def test_the_data_dir_and_every_store_are_private(engine: Engine):
    data = engine.data_dir
    assert mode(data) == 0o700
    for store in ("state", "queue"):
        assert mode(os.path.join(data, store)) == 0o700, store
        for name in ("data.mdb", "lock.mdb"):
            assert mode(os.path.join(data, store, name)) == 0o600, (store, name)
    assert mode(os.path.join(data, "router")) == 0o700
    assert mode(os.path.join(data, "router", "triggers.json")) == 0o600
    others = [(p, oct(mode(p))) for root, dirs, files in os.walk(data)
              for p in (os.path.join(root, n) for n in dirs + files) if mode(p) & 0o077]
    assert others == []
    assert "data dir " + data + " was mode 0755 (other users could read it); now 0700" \
        in engine.log_tail(10**7)


def test_the_runtime_dir_its_sockets_and_the_pid_file_are_private(engine: Engine):
    run = engine.runtime_dir
    assert mode(run) == 0o700
    assert mode(os.path.join(run, "supervisor.pid")) == 0o600
    sockets = [os.path.join(run, n) for n in os.listdir(run)
               if stat.S_ISSOCK(os.stat(os.path.join(run, n)).st_mode)]
    assert len(sockets) >= 5  # control, events, and one per engine process
    assert [(s, oct(mode(s))) for s in sockets if mode(s) & 0o077] == []
