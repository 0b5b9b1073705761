"""The plan as plain values: made once from a validated config, each process's part encoded,
decoded back into the same ``RunContext``; and ``run --plan-fd`` starting on it without the
config file."""
from __future__ import annotations

import os
import textwrap

import orjson
import pytest

from brokers.kit import config
from brokers.kit.schema import ConfigError, Field, validate
from brokers.kit.units import RunContext, Unit
from brokers.supervisor import cli
from brokers.supervisor.plan import ChildSpec, Plan, PlanError
from brokers.supervisor.runner import plan_fd
from brokers.supervisor.states import EXIT_NO_RETRY

SEEN: list[RunContext] = []


def record_main(ctx: RunContext) -> None:
    SEEN.append(ctx)


def _free(raw, path):  # a unit that keeps whatever mapping it is given
    return validate(raw, {"token": Field(str, None), "extra": Field(object, None)}, path)


STORE = Unit("store", ("t-store",), f"{__name__}:record_main", always=True, storage=True,
             parse_config=_free)
EDGE = Unit("edge", ("t-edge",), f"{__name__}:record_main", ingress=True,
            parse_config=lambda raw, path: validate(raw, {"processes": Field(int, 1)}, path),
            instances=lambda cfg: cfg["processes"])
UNITS = {u.name: u for u in (STORE, EDGE)}

CONFIG = """
    workers:
      - name: t-store
        config: {token: "${TOKEN}"}
      - name: t-edge
        config: {processes: 2}
      - name: iii-cron
    registration_namespace_grace_ms: 1234
    engine: {runtime_dir: /tmp/iii-plan-test, data_dir: /tmp/iii-plan-data}
"""


@pytest.fixture(autouse=True)
def _no_hardening(monkeypatch):
    """``run`` here runs in pytest's own process: its umask and limits are not ours to set."""
    monkeypatch.setattr(cli.hygiene, "harden", lambda: None)


def write(tmp_path, text: str = CONFIG) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def make(tmp_path, text: str = CONFIG, **kw) -> tuple[config.EngineConfig, Plan]:
    cfg = config.load(write(tmp_path, text), UNITS, env={"TOKEN": "s3cret"})
    return cfg, Plan.make(cfg, config.plan(cfg, UNITS), now=1700000000.5, **kw)


def test_each_part_decodes_to_the_context_the_config_gives(tmp_path):
    cfg, plan = make(tmp_path)
    assert list(plan.specs) == ["store", "edge-0", "edge-1"]
    assert plan.info() == {"generation": 1, "planned_at": 1700000000.5, "config": cfg.path}
    ctx = ChildSpec.decode(plan.spec("edge-1")).context(UNITS)
    assert (ctx.process, ctx.unit, ctx.config) == ("edge-1", EDGE, {"processes": 2})
    assert ctx.peers == ["store", "edge-0", "edge-1"]
    assert (ctx.runtime_dir, ctx.data_dir) == ("/tmp/iii-plan-test", "/tmp/iii-plan-data")
    assert ctx.engine == cfg.settings()  # workers with their units looked up again
    assert ctx.engine.registration_namespace_grace_ms == 1234
    assert [(w.name, w.unit) for w in ctx.engine.workers] == [
        ("t-store", STORE), ("t-edge", EDGE), ("iii-cron", None)]
    store = ChildSpec.decode(plan.spec("store"))
    assert (store.generation, store.planned_at, store.unit) == (1, 1700000000.5, "store")
    assert store.context(UNITS).config == {"token": "s3cret", "extra": None}


def test_a_part_holds_only_its_own_config_and_reprs_leave_configs_out(tmp_path):
    _, plan = make(tmp_path)
    assert b"s3cret" in plan.spec("store")
    assert b"s3cret" not in plan.spec("edge-0")  # another unit's secret stays out
    spec = ChildSpec.decode(plan.spec("store"))
    for value in (spec, spec.context(UNITS), plan):
        assert "s3cret" not in repr(value)


def test_log_overrides_reach_every_part(tmp_path):
    _, plan = make(tmp_path, log_level="debug", log_format="json")
    engine = ChildSpec.decode(plan.spec("edge-0")).context(UNITS).engine
    assert (engine.log_level, engine.log_format) == ("debug", "json")


@pytest.mark.parametrize("extra, where", [
    ("{1: a}", "workers[0].config.extra: key 1"),
    ("[1, .nan]", "workers[0].config.extra[1]: nan"),
    ("!!set {a: null}", "workers[0].config.extra: a set"),
    ("2024-01-02", "workers[0].config.extra: a date"),
    ("18446744073709551616", "workers[0].config: cannot be handed to the store process"),
])
def test_a_config_a_child_would_not_get_back_as_it_is_fails_at_plan_time(tmp_path, extra, where):
    text = CONFIG.replace('{token: "${TOKEN}"}', "{extra: %s}" % extra)
    with pytest.raises(ConfigError, match="^" + where.replace("[", r"\[").replace("]", r"\]")):
        make(tmp_path, text)


def test_a_unit_whose_parsed_config_holds_a_tuple_is_refused_by_name(tmp_path):
    odd = Unit("store", ("t-store",), "x:main", storage=True, parse_config=lambda raw, p: {"t": (1,)})
    cfg = config.load(write(tmp_path, "workers: [{name: t-store}]\n"), {"store": odd}, env={})
    with pytest.raises(ConfigError, match=r"^workers\[0\]\.config\.t: a tuple cannot be handed"):
        Plan.make(cfg, config.plan(cfg, {"store": odd}), now=0.0)


def test_what_a_child_refuses(tmp_path):
    _, plan = make(tmp_path)
    raw = orjson.loads(plan.spec("store"))
    with pytest.raises(PlanError, match="not readable"):
        ChildSpec.decode(b"{nope")
    with pytest.raises(PlanError, match="not of format 1"):
        ChildSpec.decode(orjson.dumps({**raw, "format": 2}))
    with pytest.raises(PlanError, match="malformed"):
        ChildSpec.decode(orjson.dumps({**raw, "surprise": 1}))
    with pytest.raises(PlanError, match="names unit 'edge', which this process does not have"):
        ChildSpec.decode(plan.spec("edge-0")).context({"store": STORE})


def test_plan_fd_holds_the_spec_from_offset_0_and_is_not_inherited_by_accident():
    fd = plan_fd(b"x" * 200_000)
    try:
        assert not os.get_inheritable(fd)  # only the child it is passed to gets it
        assert os.read(fd, 300_000) == b"x" * 200_000
    finally:
        os.close(fd)


def test_run_on_a_plan_fd_never_opens_the_config_file(tmp_path, monkeypatch):
    _, plan = make(tmp_path)
    os.unlink(write(tmp_path))
    monkeypatch.setattr(config, "load", lambda *a, **k: pytest.fail("run read the config file"))
    monkeypatch.setattr(cli, "available", lambda: UNITS)
    monkeypatch.setattr(cli.logsetup, "setup", lambda *a, **k: None)
    monkeypatch.setattr(cli.rundir, "prepare", lambda path: None)
    SEEN.clear()
    fd = plan_fd(plan.spec("edge-0"))
    assert cli.main(["run", "edge-0", "--plan-fd", str(fd)]) == cli.EXIT_OK
    with pytest.raises(OSError):
        os.fstat(fd)  # read once and closed: nothing the broker starts inherits it
    assert [(c.process, c.config, c.engine.registration_namespace_grace_ms) for c in SEEN] == [
        ("edge-0", {"processes": 2}, 1234)]


def test_run_refuses_a_plan_made_for_another_process(tmp_path, monkeypatch, capsys):
    _, plan = make(tmp_path)
    monkeypatch.setattr(cli, "available", lambda: UNITS)
    fd = plan_fd(plan.spec("store"))
    assert cli.main(["run", "edge-0", "--plan-fd", str(fd)]) == EXIT_NO_RETRY
    assert "process 'store''s" in capsys.readouterr().err


def test_run_by_hand_makes_its_plan_from_the_file(tmp_path, monkeypatch, capsys):
    path = write(tmp_path)
    monkeypatch.setenv("TOKEN", "by-hand")
    monkeypatch.setattr(cli, "available", lambda: UNITS)
    monkeypatch.setattr(cli.logsetup, "setup", lambda *a, **k: None)
    monkeypatch.setattr(cli.rundir, "prepare", lambda path: None)
    SEEN.clear()
    assert cli.main(["run", "store", "--config", path]) == cli.EXIT_OK
    assert SEEN[0].config == {"token": "by-hand", "extra": None} and SEEN[0].peers[0] == "store"
    assert cli.main(["run", "nope", "--config", path]) == cli.EXIT_CONFIG
    assert "unknown process 'nope'" in capsys.readouterr().err
