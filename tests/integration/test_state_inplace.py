"""The state store served in place from another process (brokers/state/inplace.py): the
other writer is a real second process with the state broker's own ``LmdbStore``, as the
state process is.

Shown: a read sees every write the other process committed before it; when the other
process grows the LMDB map past the size this one mapped, reads and writes here adopt the
new size and go on; writes here are committed (a new process reads them), in batches, and
each batch's events go to the state process in one frame, in commit order; bad input gets
the state process's own error; only an LMDB store is served in place; the slot of a reader
killed inside a read is freed by the writer.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import orjson
import pytest

from brokers.kit.errors import EngineError, NotServedHere
from brokers.state import inplace
from brokers.state.inplace import EVENTS, InPlace

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


def call(handler, data, trace=(None, None)) -> "asyncio.Future":
    """Run one in-place handler; a future of ``(result, error)``."""
    fut = asyncio.get_running_loop().create_future()
    handler(data, trace, lambda result, exc: fut.set_result((result, exc)))
    return fut


def test_in_place_follows_the_other_writer_and_its_map_growth(tmp_path) -> None:
    path = str(tmp_path / "state")
    writer = Writer(path)
    sent: list[tuple] = []
    here = InPlace(path, 1 << 20, lambda node, header, body: sent.append((node, header, orjson.loads(body))))
    handlers = here.handlers()

    async def scenario() -> None:
        first_map = writer.write(0, 10, 100)
        result, exc = await call(handlers["state::get"], {"scope": "s", "key": "k3"})
        assert exc is None and orjson.loads(orjson.dumps(result)) == "x" * 100
        grown = writer.write(10, 400, 8000)  # ~3 MiB into a 1 MiB map: the other process doubles it
        assert grown > first_map
        result, exc = await call(handlers["state::get"], {"scope": "s", "key": "k409"})
        assert exc is None and orjson.loads(orjson.dumps(result)) == "x" * 8000
        assert here.store.lmdbenv.map_size() >= grown
        answers = await asyncio.gather(*(call(handlers["state::set"], {"scope": "s", "key": f"h{i}", "value": i},
                                              ("00-tp", f"b={i}")) for i in range(20)))
        assert [a for a, _ in answers] == [{"old_value": None, "new_value": i} for i in range(20)]
        result, exc = await call(handlers["state::set"], {"scope": "s", "key": "k0", "value": 1})
        assert exc is None and result["old_value"] == "x" * 100  # the other process's value
        with pytest.raises(EngineError) as bad:  # raised at once: the core answers it
            call(handlers["state::get"], {"scope": "s"})
        assert bad.value.code == "deserialization_error"
        with pytest.raises(EngineError) as big:  # the state process's own max_value_bytes
            call(handlers["state::set"], {"scope": "s", "key": "big", "value": "x" * (2 << 20)})
        assert big.value.code == "VALUE_TOO_LARGE" and "max_value_bytes limit of 1048576" in big.value.message
        await here.flush()

    try:
        asyncio.run(scenario())
    finally:
        here.close()
        writer.close()
    events = [e for node, header, body in sent for e in body]
    assert all(node == "state" and header == {"k": EVENTS, "scopes": ["s"]} for node, header, _ in sent)
    assert len(sent) < 21  # batched: fewer frames than writes
    assert [(e[1], e[2]["event_type"], e[2]["new_value"]) for e in events[:20]] == [
        (f"h{i}", "state:created", i) for i in range(20)]
    assert events[0][3:5] == ["00-tp", "b=0"] and isinstance(events[0][5], float)
    assert events[20][2]["old_value"] == "x" * 100
    # A new process reads what was written here: committed, on disk.
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        from brokers.state.store import LmdbStore
        s = LmdbStore(sys.argv[1])
        print(s.get("s", "h7"), s.get("s", "k0"))
    """), path], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["7", "1"]


@pytest.mark.parametrize("shared", [{}, {"state": {"store": "memory", "path": None}},
                                    {"state": {"store": "redis", "path": None}}])
def test_only_an_lmdb_store_is_served_in_place(shared) -> None:
    assert InPlace.for_engine(shared, "/tmp/data", print) is None


def test_the_store_and_its_limit_are_the_state_process_own() -> None:
    lmdb_state = {"store": "lmdb", "path": None, "max_value_bytes": 10}
    assert InPlace.for_engine({"state": lmdb_state}, "/d", print).path == "/d/state"
    here = InPlace.for_engine({"state": {**lmdb_state, "path": "/x/y"}}, "/d", print)
    assert (here.path, here.max_value_bytes) == ("/x/y", 10)


STUCK_READER = textwrap.dedent("""
    import sys, time
    from brokers.kit.lmdbenv import LmdbEnv
    env = LmdbEnv(sys.argv[1])
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


def test_a_store_that_cannot_be_opened_sends_calls_on_and_says_so_once(tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setattr(inplace, "RETRY_S", 0.0)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    here = InPlace(str(blocker / "state"), None, print)  # its parent is a file: no store there
    for _ in range(3):
        with pytest.raises(NotServedHere):
            here.get({"scope": "s", "key": "k"}, (None, None), print)
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "cannot be opened here" in r.message]
    assert len(warned) == 1 and "state calls go to the state process" in warned[0].message
