"""A full disk under a real engine (issue 11, item 9): the data dir is a small tmpfs that the
test fills through ``state::set``. Every write that cannot be stored answers its function's
code with ``no space left on device`` (state: ``SET_ERROR``/``UPDATE_ERROR``, workers-a §2;
queue: ``enqueue_error``, workers-b §1.1; durable publish: our ``publish_failed``), never
``invocation_failed`` with a server traceback nor LMDB's ``Input/output error``; the log has
one ERROR line per store, not one per write; once the disk has room again, writes succeed.

Needs root (to mount a tmpfs), as this sandbox runs tests; skipped elsewhere.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time

import pytest

from tests.harness import QUEUE_READY, STATE_READY, running_engine
from tests.wsclient import RawClient, fid, wait_for_function

BIG = "x" * (512 * 1024)
CONFIG = """\
engine:
  runtime_dir: {runtime_dir}
  data_dir: %s
workers:
  - name: iii-worker-manager
    config: {host: 127.0.0.1, port: {port}}
  - name: iii-state
    config: {}
  - name: iii-queue
    config:
      queue_configs: {jobs: {}}
"""


@pytest.fixture
def full_disk():
    where = tempfile.mkdtemp(prefix="iii-full-", dir="/tmp")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", where],
                      capture_output=True).returncode != 0:
        os.rmdir(where)
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", "-l", where], check=False)
    os.rmdir(where)


def error_of(frame: dict) -> dict:
    err = frame.get("error")
    assert err is not None, frame
    assert "stacktrace" not in err, err
    return err


def test_a_full_disk_is_one_clear_error_per_write_and_one_log_line(full_disk):
    with running_engine(config_text=CONFIG % full_disk, wait_for=QUEUE_READY) as eng:
        wait_for_function(eng.url, STATE_READY)
        with RawClient.worker(eng.url) as w:
            job_fn = fid("disk::job")
            w.register_function(job_fn)
            w.send({"type": "registertrigger", "id": "full-sub", "trigger_type": "durable:subscriber",
                    "function_id": fid("disk::sub"), "config": {"topic": "full"}})
            deadline = time.monotonic() + 20  # a publish with no subscriber stores nothing
            while not any(t["name"] == "full" and t["subscriber_count"] == 1
                          for t in w.call("engine::queue::list_topics", {})["result"]):
                assert time.monotonic() < deadline, "the subscription never arrived"
                time.sleep(0.05)
            for i in range(40):  # 6 MiB of tmpfs: full after about ten of these
                answer = w.call("state::set", {"scope": "fill", "key": str(i), "value": BIG})
                if answer.get("error"):
                    break
            else:
                pytest.fail("the disk never filled")
            assert error_of(answer) == {"code": "SET_ERROR",
                                        "message": "Failed to set value: no space left on device"}
            for _ in range(3):  # every write of the full disk, not only the first
                assert error_of(w.call("state::set", {"scope": "fill", "key": "more", "value": BIG})
                                )["code"] == "SET_ERROR"
            upd = w.call("state::update", {"scope": "fill", "key": "u", "ops": [
                {"type": "set", "path": "", "value": BIG}]})
            assert error_of(upd) == {"code": "UPDATE_ERROR",
                                     "message": "Failed to update value: no space left on device"}

            enq = w.call(job_fn, {"blob": BIG, "n": 1}, action={"type": "enqueue", "queue": "jobs"})
            assert error_of(enq) == {"code": "enqueue_error",
                                     "message": "Failed to enqueue job: no space left on device"}
            pub = w.call("iii::durable::publish", {"topic": "full", "data": {"blob": BIG}})
            assert error_of(pub) == {"code": "publish_failed",
                                     "message": "Failed to publish: no space left on device"}

            log = eng.log_tail(10**7)
            assert "Traceback" not in log and "Input/output error" not in log
            state_lines = [line for line in log.splitlines() if "state commit failed" in line]
            assert len(state_lines) == 1, state_lines  # 5 failed batches, said once
            assert " ERROR " in state_lines[0] and state_lines[0].endswith(
                f"no space left on device (the filesystem holding {full_disk}/state is full)")
            assert sum("queue commit failed" in line for line in log.splitlines()) == 1

            # Room again: the same writes go through, and the engine says so.
            subprocess.run(["mount", "-o", "remount,size=64m", full_disk], check=True)
            assert w.call("state::set", {"scope": "fill", "key": "more", "value": BIG}).get("error") is None
            assert w.call(job_fn, {"n": 2}, action={"type": "enqueue", "queue": "jobs"}).get("error") is None
            # Only the job that was stored runs: the one whose enqueue failed never does
            # (it stayed in the scheduler's memory and ran once a later commit went through).
            job = w.next_call(job_fn, timeout=5)
            assert job["data"]["n"] == 2
            w.answer(job, None)
            assert [f for f in w.frames_within(1.0) if f.get("function_id") == job_fn] == []
            deadline = time.monotonic() + 5
            while "state commits succeed again" not in eng.log_tail(10**7):
                assert time.monotonic() < deadline, eng.log_tail()
                time.sleep(0.05)


def test_each_kind_of_state_write_of_a_failed_batch_gets_its_own_code():
    from brokers.kit.lmdbenv import StorageFull
    from brokers.state.core import Write
    from brokers.state.store import BatchFailed, batch_failure

    full = BatchFailed(StorageFull("/srv/data/state"))
    assert str(full).endswith("(the filesystem holding /srv/data/state is full)")  # the log's
    got = {kind: batch_failure(Write(kind, "s", "k", value=1), full).body()
           for kind in ("set", "update", "delete")}
    assert got == {
        "set": {"code": "SET_ERROR", "message": "Failed to set value: no space left on device"},
        "update": {"code": "UPDATE_ERROR", "message": "Failed to update value: no space left on device"},
        "delete": {"code": "DELETE_ERROR", "message": "Failed to delete value: no space left on device"},
    }
