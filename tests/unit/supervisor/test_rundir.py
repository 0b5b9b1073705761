"""The runtime dir's checks as plain values, and the pid file's lock in this process and a
child: ``read_pid`` names a pid only while a live process holds the lock."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from brokers.supervisor import rundir
from brokers.supervisor.rundir import AlreadyRunning, PidLock, UnsafeRuntimeDir, check, read_pid

ME = 1000


def st(mode: int, uid: int = ME, kind: int = stat.S_IFDIR) -> os.stat_result:
    return os.stat_result((kind | mode, 0, 0, 0, uid, 0, 0, 0, 0, 0))


def test_check_accepts_a_private_dir_and_one_others_may_only_read():
    check("/r", st(0o700), st(0o700), ME)
    check("/r", st(0o755), st(0o755), ME)  # tightened by prepare, not refused


@pytest.mark.parametrize("link,target,words", [
    (st(0o700, uid=0), st(0o700, uid=0), "runtime dir /r belongs to uid 0, not to us (uid 1000)"),
    (st(0o777, kind=stat.S_IFLNK, uid=7), st(0o700), "symlink /r belongs to uid 7"),
    (st(0o777), st(0o777), "writable by other users (mode 0777)"),
    (st(0o770), st(0o770), "writable by other users (mode 0770)"),
    (st(0o1777), st(0o1777), "writable by other users (mode 1777)"),
    (st(0o600, kind=stat.S_IFREG), st(0o600, kind=stat.S_IFREG), "is not a directory"),
])
def test_check_refuses_a_dir_not_ours_alone(link, target, words):
    with pytest.raises(UnsafeRuntimeDir, match=words.replace("(", r"\(").replace(")", r"\)")):
        check("/r", link, target, ME)


def test_prepare_makes_missing_dirs_0700_and_tightens_a_readable_one(tmp_path):
    run = tmp_path / "a" / "run"
    rundir.prepare(str(run))
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    run.chmod(0o755)
    rundir.prepare(str(run))
    assert stat.S_IMODE(run.stat().st_mode) == 0o700


def test_lock_names_us_until_released_and_a_second_is_refused(tmp_path):
    lock = PidLock(str(tmp_path))
    assert read_pid(str(tmp_path)) is None
    lock.acquire()
    try:
        assert read_pid(str(tmp_path)) == os.getpid()
        assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o600
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            PidLock(str(tmp_path)).acquire()
    finally:
        lock.release()
    assert not os.path.exists(lock.path) and read_pid(str(tmp_path)) is None


def test_a_pid_file_nobody_holds_names_no_pid(tmp_path):
    (tmp_path / "supervisor.pid").write_text("1\n")
    assert read_pid(str(tmp_path)) is None
    lock = PidLock(str(tmp_path))
    lock.acquire()  # a planted file is taken over
    try:
        assert (tmp_path / "supervisor.pid").read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_the_lock_goes_with_the_process_that_held_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from brokers.supervisor.rundir import PidLock
        PidLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert read_pid(str(tmp_path)) == holder.pid
        holder.kill()  # SIGKILL: no release, the file stays
        holder.wait()
        assert (tmp_path / "supervisor.pid").exists()
        assert read_pid(str(tmp_path)) is None
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
