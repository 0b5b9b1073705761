"""The kit's LMDB environment on a real LMDB in a temp dir: a durable open, growth from a
full map with the body run again, the cap, and a resize that waits for live readers but
readers that never wait for a writer; private modes; a real full disk (a small tmpfs)."""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile
import threading
import time

import lmdb
import pytest

from brokers.kit.lmdbenv import LmdbEnv, MapLimitError, StorageFull, caller_reason, disk_full

BLOB = b"x" * 4000


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "nested" / "env")


def put_many(prefix: str, n: int):
    def body(txn):
        body.runs += 1
        for i in range(n):
            txn.put(f"{prefix}-{i}".encode(), BLOB)
        return n
    body.runs = 0
    return body


def test_open_creates_the_directory_and_is_durable(path):
    env = LmdbEnv(path)
    assert os.path.isdir(path)
    flags = env.env.flags()
    assert flags["sync"] and flags["metasync"]
    env.close()


def test_full_map_grows_and_the_batch_is_rerun_whole(path):
    env = LmdbEnv(path, map_size=64 * 1024)
    body = put_many("a", 100)                 # ~400 KB: several doublings
    assert env.write(body) == 100
    assert body.runs > 1
    assert env.map_size() >= 512 * 1024
    with env.read() as txn:
        assert txn.stat()["entries"] == 100
    env.close()


def test_the_cap_refuses_growth_and_keeps_earlier_data(path):
    env = LmdbEnv(path, map_size=64 * 1024, max_map_size=256 * 1024)
    env.write(put_many("small", 5))
    with pytest.raises(MapLimitError, match="exceed 262144 bytes"):
        env.write(put_many("big", 200))       # ~800 KB cannot fit in 256 KiB
    assert env.map_size() == 256 * 1024
    with env.read() as txn:
        assert txn.stat()["entries"] == 5     # nothing of the refused transaction
        assert txn.get(b"small-4") == BLOB
    env.close()


def test_a_failing_body_stores_nothing(path):
    env = LmdbEnv(path)

    def body(txn):
        txn.put(b"k", b"v")
        raise ValueError("no")

    with pytest.raises(ValueError):
        env.write(body)
    assert env.get(b"k") is None
    env.close()


def test_resize_waits_for_a_live_reader(path):
    env = LmdbEnv(path, map_size=64 * 1024)
    grown = threading.Event()

    def grow():
        env.grow()
        grown.set()

    with env.read() as txn:
        grower = threading.Thread(target=grow)
        grower.start()
        time.sleep(0.2)
        assert not grown.is_set()             # set_mapsize never runs under our reader
        assert txn.get(b"nothing") is None
    grower.join(5)
    assert grown.is_set() and env.map_size() == 128 * 1024
    env.close()


def test_readers_do_not_wait_for_a_writer(path):
    env = LmdbEnv(path)
    env.write(lambda txn: txn.put(b"k", b"before"))
    inside, release = threading.Event(), threading.Event()

    def slow(txn):
        txn.put(b"k", b"after")
        inside.set()
        release.wait(5)

    writer = threading.Thread(target=env.write, args=(slow,))
    writer.start()
    assert inside.wait(5)
    assert env.get(b"k") == b"before"         # served while the write transaction is open
    release.set()
    writer.join(5)
    assert env.get(b"k") == b"after"
    env.close()


def test_named_databases(path):
    env = LmdbEnv(path, max_dbs=2)
    db = env.open_db(b"jobs")
    env.write(lambda txn: txn.put(b"j", b"1"), db)
    assert env.get(b"j", db) == b"1"
    assert env.get(b"j") is None              # not in the unnamed database
    with env.read(db) as txn:
        assert list(txn.cursor()) == [(b"j", b"1")]
    env.close()


def mode(p) -> int:
    return os.stat(p).st_mode & 0o7777


def test_a_new_store_is_private_whatever_the_umask(path):
    old = os.umask(0o022)
    try:
        env = LmdbEnv(path)
    finally:
        os.umask(old)
    assert mode(path) == 0o700 and mode(os.path.dirname(path)) == 0o700  # its parent made too
    assert mode(os.path.join(path, "data.mdb")) == 0o600
    assert mode(os.path.join(path, "lock.mdb")) == 0o600
    env.close()


def test_an_existing_store_open_to_others_is_tightened_and_said_once(path, caplog):
    LmdbEnv(path).close()
    for name, loose in (("", 0o755), ("data.mdb", 0o644), ("lock.mdb", 0o666)):
        os.chmod(os.path.join(path, name), loose)
    with caplog.at_level("WARNING"):
        LmdbEnv(path).close()
        LmdbEnv(path).close()  # nothing left to say
    assert mode(path) == 0o700
    assert mode(os.path.join(path, "data.mdb")) == mode(os.path.join(path, "lock.mdb")) == 0o600
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said
    assert said[0] == f"store {path} was mode 0755 (other users could read it); now 0700"
    assert "store file" in said[1] and "was mode 0644" in said[1] and "now 0600" in said[1]


@pytest.fixture
def small_disk():
    """A 1 MiB tmpfs (root only: this sandbox's tests run as root)."""
    where = tempfile.mkdtemp(prefix="iii-full-", dir="/tmp")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", where],
                      capture_output=True).returncode != 0:
        os.rmdir(where)
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield where
    subprocess.run(["umount", where], check=False)
    os.rmdir(where)


def test_a_commit_on_a_full_disk_is_storage_full_and_stores_nothing(small_disk):
    env = LmdbEnv(os.path.join(small_disk, "env"))
    with pytest.raises(StorageFull) as err:  # LMDB itself says "Input/output error"
        for i in range(1000):
            env.write(put_many(f"b{i}", 10))
    assert str(err.value) == (f"no space left on device (the filesystem holding "
                              f"{small_disk}/env is full)")
    assert caller_reason(err.value) == "no space left on device"
    with env.read() as txn:
        assert txn.stat()["entries"] == 10 * i  # every batch before it, none of it
    env.close()


def test_only_enospc_or_eio_on_a_nearly_full_filesystem_reads_as_full(tmp_path):
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"), str(tmp_path))
    assert disk_full(lmdb.Error("mdb_txn_commit: No space left on device"), str(tmp_path))
    # this disk has room: an I/O error here is a real one
    assert not disk_full(lmdb.Error("mdb_txn_commit: Input/output error"), str(tmp_path))
    assert not disk_full(lmdb.Error("mdb_get: MDB_CORRUPTED"), str(tmp_path))
