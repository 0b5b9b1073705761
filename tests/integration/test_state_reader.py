"""The state store read from another process (brokers/state/reader.py): the writer is a
real second process with the state broker's own ``LmdbStore``, as the state process is.

Shown: before the store exists a read declines (``NotServedHere``) and is tried again
after ``RETRY_S``; a read sees every write the writer committed before it; when the writer
grows the LMDB map past the size the reader mapped, the reader adopts the new size and
reads on; bad input gets the state process's own error; a read of a store that is not on
LMDB here is not offered at all.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from brokers.kit.errors import EngineError, NotServedHere
from brokers.state import reader as reader_mod
from brokers.state.reader import StateReader

WRITER = textwrap.dedent("""
    import sys
    from brokers.state import core, store as store_mod
    from brokers.state.store import LmdbStore
    if len(sys.argv) > 2:
        store_mod.READERS_CHECK_S = float(sys.argv[2])
    store = LmdbStore(sys.argv[1], map_size=1 << 20)
    print("open", flush=True)
    for line in sys.stdin:
        first, count, size = line.split()
        writes = [core.decode_call(core.SET, {"scope": "s", "key": f"k{i}", "value": "x" * int(size)}, 1 << 30)
                  for i in range(int(first), int(first) + int(count))]
        for at in range(0, len(writes), 50):
            store.apply_batch(writes[at:at + 50])
        print(store.lmdbenv.map_size(), flush=True)
""")


class Writer:
    def __init__(self, path: str, *extra: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WRITER, path, *extra], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=os.getcwd())
        assert self.proc.stdout.readline().strip() == "open"

    def write(self, first: int, count: int, size: int) -> int:
        """Commit ``count`` values of ``size`` bytes; returns the writer's map size after."""
        self.proc.stdin.write(f"{first} {count} {size}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def value(reader: StateReader, key: str) -> object:
    """What a ``state::get`` answer carries (the stored bytes, embedded as they are)."""
    return orjson.loads(orjson.dumps(reader.get({"scope": "s", "key": key})))


def test_reads_follow_the_writer_and_its_map_growth(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(reader_mod, "RETRY_S", 0.05)
    path = str(tmp_path / "state")
    reader = StateReader(path)
    with pytest.raises(NotServedHere):
        reader.get({"scope": "s", "key": "k0"})
    writer = Writer(path)
    try:
        first_map = writer.write(0, 10, 100)
        time.sleep(0.06)
        assert value(reader, "k3") == "x" * 100
        assert reader.get({"scope": "s", "key": "absent"}) is None
        grown = writer.write(10, 400, 8000)  # ~3 MiB into a 1 MiB map: the writer doubles it
        assert grown > first_map
        assert value(reader, "k409") == "x" * 8000
        assert reader.store.lmdbenv.map_size() >= grown
        with pytest.raises(EngineError) as bad:
            reader.get({"scope": "s"})
        assert bad.value.code == "deserialization_error"
        assert reader.served == 3
    finally:
        writer.close()
        reader.close()


@pytest.mark.parametrize("shared", [{}, {"state": {"store": "memory", "path": None}},
                                    {"state": {"store": "redis", "path": None}}])
def test_only_an_lmdb_store_is_offered(shared) -> None:
    assert StateReader.for_engine(shared, "/tmp/data") is None


def test_the_store_path_is_the_state_process_own() -> None:
    assert StateReader.for_engine({"state": {"store": "lmdb", "path": None}}, "/d").path == "/d/state"
    assert StateReader.for_engine({"state": {"store": "lmdb", "path": "/x/y"}}, "/d").path == "/x/y"


STUCK_READER = textwrap.dedent("""
    import sys, time
    from brokers.kit.lmdbenv import LmdbEnv
    env = LmdbEnv(sys.argv[1], readonly=True)
    txn = env.env.begin()  # a read transaction it never ends: killed inside it
    print("reading", flush=True)
    time.sleep(60)
""")


def test_the_slot_of_a_reader_killed_while_reading_is_freed_by_the_writer(tmp_path) -> None:
    """LMDB resets its reader table when the first process opens the store, so a stale slot
    is left only while another process keeps the store open: the state process, as here."""
    path = str(tmp_path / "state")
    writer = Writer(path, "0")  # looks for dead readers before every batch
    try:
        writer.write(0, 1, 10)
        stuck = subprocess.Popen([sys.executable, "-c", STUCK_READER, path], stdout=subprocess.PIPE, text=True)
        assert stuck.stdout.readline().strip() == "reading"
        stuck.kill()
        stuck.wait(10)
        writer.write(1, 1, 10)
    finally:
        writer.close()
    assert "freed 1 reader slots of processes that died reading it" in writer.proc.stderr.read()
