"""Issue 11: mutated frames of every worker message type, fuzzed against one real engine.

One engine (gateway, router, iii-state, iii-queue, iii-pubsub) serves the module. Before
any fuzzing, "bystander" workers set up what the fuzzing must never disturb: a function
that answers (``<by:echo>``), a ``state`` binding and a ``subscribe`` binding delivering to
a second worker, a binding parked on a trigger type nobody provides, and a durable
binding made with ``engine::register_trigger``.

``test_fuzzed_frames_leave_the_engine_and_other_workers_intact`` sends hypothesis batches
(``tests/fuzzframes.py``; the rig — engine, bystanders, connections, checks — is
``tests/fuzzpeers.py`` and ``tests/fuzzrig.py``: valid frames of every type, mutated: fields dropped or of the
wrong type, huge ints, floats, NaN, deep nesting, big payloads, duplicate keys and ids,
other workers' ids, reserved ids, damaged bytes, garbage) from three connections: one
declared in ``default``, one in ``fz-ns``, one undeclared (its registrations buffered for
the namespace grace, shortened here to 100 ms so that every batch also drains a buffer).
After each batch it asserts:

- no ``Traceback`` and no ERROR line in the engine log since the batch began;
- every engine process has the pid it had before (nothing crashed and restarted);
- every sync call the engine had to answer (``fuzzframes.must_answer``) was answered, every
  fuzzing connection is still open (unless the engine had a reason to close it: a worker
  name conflict, a ``reattach`` with its token) and still works: a call on it is
  answered, and a function it registers after the batch is listed and delivered to it;
- the bystanders are intact: their function answers, their state and subscribe bindings
  deliver, the parked binding is delivered to a provider that registers its trigger type
  after the batch, the durable binding is listed and delivers;
- ``engine::functions::list`` (and ``engine::workers::list``) answer a fresh connection.

``test_mutated_bindings_survive_a_process_restart`` leaves bindings with hostile config and
metadata in place (connection bindings and durable ones: one of each kind of hostile value
as the explicit example, plus one generated set), then a "late" bystander binds after them,
then one engine process (state, router, pubsub) is killed; it must come back and every
bystander binding, the late ones included, must deliver again, with a clean log.

Bounds (the whole file runs in under a minute on 2 cores, failing or not): derandomized,
no example database; the fuzz starts no new batch after ``III_FUZZ_SECONDS`` (22 s) and
hypothesis stops shrinking after ``III_FUZZ_SHRINK_SECONDS`` more (12 s; its warning then
says "five minutes", its constant's default). Raise both to hunt with better shrinking;
``III_FUZZ_EXPLORE=1`` records every failing batch and goes on instead of failing (and
``III_FUZZ_DUMP=FILE`` pickles them for replay). A summary line (batches, frames, bytes)
is printed at the end of the module.
"""
from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import engine as hypothesis_engine

from tests import fuzzframes as ff
from tests import fuzzstrategies as fs
from tests.fuzzpeers import ANSWER_WAIT_S, MAX_EXAMPLES, SHRINK_SECONDS, Peer, call, delivered
from tests.fuzzrig import Rig
from tests.wsclient import RawClient

pytestmark = [pytest.mark.slow,
              # websockets' threads draw from `random` while hypothesis generates: harmless here
              pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")]


@pytest.fixture(scope="module")
def rig(request: pytest.FixtureRequest):
    # Hypothesis shrinks for up to 5 minutes by default; each step here is a batch against
    # the engine, so its own deadline is set to the shrink budget (an internal constant:
    # if it moves, the budget check in Rig.run still makes later steps cheap).
    saved = getattr(hypothesis_engine, "MAX_SHRINKING_SECONDS", None)
    if saved is not None:
        hypothesis_engine.MAX_SHRINKING_SECONDS = SHRINK_SECONDS
    r = Rig()
    try:
        yield r
    finally:
        summary = r.summary()
        for i, text in enumerate(r.explored):
            print(f"==== explored failure {i + 1} ====\n{text}")
        print(summary)
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(summary)
        r.stop()
        if saved is not None:
            hypothesis_engine.MAX_SHRINKING_SECONDS = saved


FUZZ_SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                         phases=(Phase.explicit, Phase.generate, Phase.shrink), print_blob=False,
                         suppress_health_check=list(HealthCheck))


@FUZZ_SETTINGS
@given(batch=fs.batches)
def test_fuzzed_frames_leave_the_engine_and_other_workers_intact(rig: Rig, batch: list) -> None:
    rig.run(batch)


# ---- bindings with hostile values across a restart --------------------------------------------

hostile = st.one_of(fs.wrong_values, fs.json_values)


@st.composite
def hostile_bindings(draw: st.DrawFn) -> dict:
    ttype = draw(st.sampled_from(["state", "subscribe", "durable:subscriber"]))
    config = {"scope": ff.BY_SCOPE} if ttype == "state" else {"topic": ff.BY_TOPIC}
    for _ in range(draw(st.integers(0, 2))):
        config[draw(st.sampled_from(["extra", "key", "scope", "topic", "n"]))] = draw(hostile)
    fields = {"trigger_type": ttype, "function_id": draw(st.sampled_from(["fz::a", ff.BY_ON_STATE, ff.BY_ON_PUB])),
              "config": draw(st.one_of(st.just(config), hostile)), "metadata": draw(hostile)}
    if draw(st.booleans()):
        return {"type": "registertrigger", "id": draw(fs.uuids), **fields}
    return {"type": "invokefunction", "function_id": ff.REGISTER_TRIGGER_FN, "invocation_id": draw(fs.uuids),
            "data": fields}


class LateBystander:
    """A worker whose state and subscribe bindings are made after the hostile ones: a
    provider that learns its bindings again after a restart gets them last, so one hostile
    binding that stops that replay shows here (the first bystanders' were replayed first)."""

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.scope, self.topic = f"late-{tag}-scope", f"late-{tag}-topic"
        self.on_state, self.on_pub = f"late-{tag}::on_state", f"late-{tag}::on_pub"
        self.peer = Peer(url, f"late-{tag}")
        for fn in (self.on_state, self.on_pub):
            self.peer.send({"type": "registerfunction", "id": fn})
        self.peer.send({"type": "registertrigger", "id": f"late-{tag}-state", "trigger_type": "state",
                        "function_id": self.on_state, "config": {"scope": self.scope}})
        self.peer.send({"type": "registertrigger", "id": f"late-{tag}-pub", "trigger_type": "subscribe",
                        "function_id": self.on_pub, "config": {"topic": self.topic}})

    def check(self, failures: list[str], settle: float, when: str) -> None:
        with RawClient.worker(self.url) as c:
            for label, fn, key, make in (
                    ("state", self.on_state, "key", lambda t: ("state::set", {"scope": self.scope, "key": t, "value": 1})),
                    ("subscribe", self.on_pub, "probe", lambda t: ("publish", {"topic": self.topic, "data": {"probe": t}}))):
                deadline = time.monotonic() + settle
                while True:
                    token = uuid.uuid4().hex
                    fid, data = make(token)
                    since = self.peer.mark()
                    call(c, fid, data)
                    if self.peer.wait(delivered(fn, key, token), 0.5, since) is not None:
                        break
                    if time.monotonic() >= deadline:
                        failures.append(f"{when}: the {label} binding made after the hostile ones no longer "
                                        f"delivers to {fn}")
                        break

    def close(self) -> None:
        self.peer.close()


def _hostile_set() -> list[dict]:
    """One binding per kind of hostile value, connection-owned and durable, for every
    engine-provided type: the explicit example (a derandomized first draw is a tame one)."""
    values = ["a\ud800", 10**30, -(2**63) - 1, 2**64, float("nan"), float("inf"), ff.Deep(120), ff.Deep(300),
              ff.Big(300_000), "\x00\x1b\u202e", {"n": 10**30, "s": "\udfff"}]
    out: list[dict] = []
    for i, value in enumerate(values):
        ttype = ("state", "subscribe", "durable:subscriber")[i % 3]
        config = {"scope": ff.BY_SCOPE, "x": value} if ttype == "state" else {"topic": ff.BY_TOPIC, "x": value}
        fields = {"trigger_type": ttype, "function_id": "fz::a", "config": config, "metadata": value}
        out.append({"type": "registertrigger", "id": f"fz-hostile-{i}", **fields})
        out.append({"type": "invokefunction", "function_id": ff.REGISTER_TRIGGER_FN,
                    "invocation_id": f"fz-hostile-{i}", "data": fields})
    return out


@pytest.mark.parametrize("victim", ["state", "router", "pubsub"])
@example(bindings=_hostile_set())
@settings(max_examples=1, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
@given(bindings=st.lists(hostile_bindings(), min_size=4, max_size=12))
def test_mutated_bindings_survive_a_process_restart(rig: Rig, victim: str, bindings: list) -> None:
    if rig.dirty:
        rig.repair()
    log_from = rig.log_size()
    failures: list[str] = []
    tag = f"{victim}-{uuid.uuid4().hex[:6]}"
    fuzzer = Peer(rig.eng.url, f"fz-restart-{tag}")
    late: LateBystander | None = None
    made: set[str] = set()
    env = dict(rig.by.ids)
    try:
        fuzzer.send({"type": "registerfunction", "id": "fz::a"})
        invs = []
        for frame in bindings:
            text = ff.render(frame, env)
            fuzzer.client.send_raw(text)
            rig.frames += 1
            rig.bytes += len(text)
            # an undecodable frame (a lone surrogate, a number beyond a double) is dropped,
            # never answered, as serde_json refuses it
            if frame["type"] == "invokefunction" and not ff.undecodable(frame):
                invs.append(frame["invocation_id"])
        for inv in invs:
            answer = fuzzer.wait(lambda f, inv=inv: f.get("invocation_id") == inv, ANSWER_WAIT_S)
            if answer is None:
                failures.append(f"engine::register_trigger call {inv} never answered")
            elif isinstance(answer.get("result"), dict) and isinstance(answer["result"].get("id"), str):
                made.add(answer["result"]["id"])
        late = LateBystander(rig.eng.url, tag)
        late.check(failures, 3.0, "before the restart")  # also waits for the bindings to land
        rig.by.check(failures, settle=2.0)
        old = rig.eng.kill(victim)
        rig.eng.wait_running(victim, 15, not_pid=old)
        rig.by.check(failures, settle=10.0)
        late.check(failures, 5.0, f"after restarting {victim}")
    finally:
        fuzzer.close()
        if late is not None:
            late.close()
    rig.cleanup(made)
    rig.check_log(log_from, failures, ignore=lambda line: f" proc.{victim}." in line)  # our kill
    rig.check_pids(failures, expect_new=victim)
    if failures:
        rig.dirty = True
        raise AssertionError(f"after restarting {victim} with these bindings in place:\n"
                             + "\n".join(f"  {ff.describe_frame(f, env)}" for f in bindings)
                             + "\nfailures:\n- " + "\n- ".join(failures))
