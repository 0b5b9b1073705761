"""Config loading: env expansion, strict keys named by path, worker entries, plan order."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from brokers.kit import config
from brokers.kit.schema import ConfigError, Field, validate
from brokers.kit.units import Unit


def _port_parse(raw, path):
    return validate(raw, {"port": Field(int, 1), "processes": Field(int, 1)}, path)


GATEWAY = Unit("gateway", ("iii-worker-manager",), "x:main", always=True, ingress=True,
               parse_config=_port_parse, instances=lambda c: c["processes"])
ROUTER = Unit("router", ("iii-engine-functions",), "x:main", always=True)
STATE = Unit("state", ("iii-state", "state"), "x:main", storage=True, parse_config=_port_parse)
CRON = Unit("cron", ("iii-cron", "cron"), "x:main")
UNITS = {u.name: u for u in (GATEWAY, ROUTER, STATE, CRON)}


def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


def load(tmp_path, text: str, env=None, units=UNITS):
    return config.load(write(tmp_path, text), units, env={} if env is None else env)


# -- env expansion (workers-a §1.5) ---------------------------------------------------------
def test_expand_set_unset_default_and_colons_in_default():
    env = {"A": "1", "EMPTY": ""}
    assert config.expand_env("${A} ${A:9}", env) == "1 1"
    assert config.expand_env("${EMPTY:x}", env) == ""  # set wins even if empty
    assert config.expand_env("${B:redis://localhost:6379/0}", env) == "redis://localhost:6379/0"
    assert config.expand_env("${B:}", env) == ""
    assert config.expand_env("${B:__III_ENGINE_VERSION__}", env) == config.ENGINE_VERSION


def test_unset_without_default_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Environment variable 'NOPE' not set and no default"):
        load(tmp_path, "workers: []\n# ${NOPE}\n")  # comments are expanded too


def test_expansion_before_yaml_gives_typed_values(tmp_path):
    cfg = load(tmp_path, """
        workers:
          - name: iii-worker-manager
            config: {port: ${P:3111}}
    """)
    assert cfg.workers[0].config == {"port": 3111, "processes": 1}
    cfg = load(tmp_path, """
        workers:
          - name: iii-worker-manager
            config: {port: ${P:3111}}
    """, env={"P": "4000"})
    assert cfg.workers[0].config["port"] == 4000


# -- strict keys with paths ---------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("bogus: 1\n", "bogus: unknown top-level key"),
    ("workers:\n", "workers: expected list, got null"),
    ("workers: [{name: iii-state, confg: {}}]\n", "workers[0].confg: unknown key"),
    ("workers: [{config: {}}]\n", "workers[0].name: required"),
    ("workers: [{name: iii-cron}, {name: iii-state, config: {port: x}}]\n",
     "workers[1].config.port: expected int, got str"),
    ("workers: []\nmodules: [{name: iii-state, config: {nope: 1}}]\n", "modules[0].config.nope: unknown key"),
    ("workers: [{name: my-thing}]\n", "workers[0].name: unknown worker 'my-thing'"),
    ("workers: [{name: iii-state, image: x/y}]\n", "workers[0].image: Worker 'iii-state' is a built-in"),
    ("registration_namespace_grace_ms: soon\n", "registration_namespace_grace_ms: expected int, got str"),
    ("engine: {log_format: xml}\n", "engine.log_format: must be text or json"),
    ("engine: {runtime: /tmp}\n", "engine.runtime: unknown key"),
    ("engine: {runtime_dir: /tmp/" + "x" * 90 + "}\n", "is too long for ipc socket paths"),
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("workers: [\n", "Failed to parse config file"),
])
def test_errors_name_the_path(tmp_path, text, message):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert message in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="Config file not found: '/nonexistent/c.yaml'"):
        config.load("/nonexistent/c.yaml", UNITS, env={})


def test_deprecated_name_conflict_one_line_per_pair(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "workers: [{name: iii-state}, {name: state}, {name: cron}, {name: iii-cron}]\n")
    lines = str(err.value).splitlines()
    assert lines[0] == "workers: Duplicate worker configurations:"
    assert "- 'iii-cron' is the deprecated name for 'cron', but both are present. " \
           "Remove 'iii-cron' from your configuration." in lines
    assert len(lines) == 3


def test_unprefixed_alias_selects_the_builtin(tmp_path):
    cfg = load(tmp_path, "workers: [{name: state, config: {port: 7}}]\n")
    assert cfg.workers[0].unit is STATE and cfg.workers[0].config["port"] == 7


# -- entries, duplicates, catalogue -------------------------------------------------------
def test_duplicates_are_renamed_and_modules_appended(tmp_path):
    cfg = load(tmp_path, """
        workers: [{name: iii-cron}, {name: iii-cron}]
        modules: [{name: iii-cron}]
    """)
    assert [(w.name, w.path, w.kind) for w in cfg.workers] == [
        ("iii-cron", "workers[0]", "iii-cron"), ("iii-cron#1", "workers[1]", "iii-cron"),
        ("iii-cron#2", "modules[0]", "iii-cron")]


def test_catalogue_names_without_unit_warn_once_each(tmp_path):
    cfg = load(tmp_path, "workers: [{name: iii-http}, {name: iii-exec, config: {exec: [ls]}}, {name: iii-bridge}]\n")
    assert len(cfg.warnings) == 3
    assert "worker 'iii-http' is not available in this engine yet" in cfg.warnings[0]
    assert all(w.unit is None for w in cfg.workers)


# -- engine block and grace ---------------------------------------------------------------
def test_engine_defaults(tmp_path, monkeypatch):
    """One rule for the runtime dir (engine.runtime_dir, $III_RUNTIME_DIR, /tmp/iii-run),
    the same as the bare control commands use; relative paths from the working directory."""
    path = write(tmp_path, "workers: []\n")
    monkeypatch.chdir("/tmp")
    cfg = config.load(path, UNITS, env={})
    assert cfg.data_dir == "/tmp/data"
    assert cfg.runtime_dir == "/tmp/iii-run" == config.runtime_dir_for(None, {})[0]
    assert (cfg.log_level, cfg.log_format, cfg.registration_namespace_grace_ms) == ("info", "text", 5000)
    assert config.load(path, UNITS, env={"III_RUNTIME_DIR": "/tmp/r1"}).runtime_dir == "/tmp/r1"


def test_engine_block_and_grace_env_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, """
        registration_namespace_grace_ms: 100
        engine: {runtime_dir: /tmp/rr, data_dir: ../d, log_level: DEBUG, log_format: json}
    """, env={"III_NAMESPACE_GRACE_MS": "250"})
    assert cfg.registration_namespace_grace_ms == 250
    assert (cfg.runtime_dir, cfg.log_level, cfg.log_format) == ("/tmp/rr", "debug", "json")
    assert cfg.data_dir == os.path.normpath(str(tmp_path / ".." / "d"))


def test_locate_runtime_dir_ignores_variables_it_does_not_need(tmp_path):
    """`status --config` must not fail on a ${VAR} only the starting shell had."""
    path = write(tmp_path, "workers:\n  - name: iii-worker-manager\n    config: {port: ${SECRET_PORT}}\n"
                           "engine: {runtime_dir: /tmp/rt-${WHO:x}}\n")
    assert config.locate_runtime_dir(path, env={}) == "/tmp/rt-x"
    assert config.locate_runtime_dir(path, env={"WHO": "me"}) == "/tmp/rt-me"
    needs = write(tmp_path, "engine: {runtime_dir: /tmp/rt-${ONLY_THERE}}\n")
    with pytest.raises(ConfigError, match=r"needs \$\{ONLY_THERE\}, which is not set here"):
        config.locate_runtime_dir(needs, env={})
    assert config.locate_runtime_dir(write(tmp_path, "workers: []\n"), env={}) == "/tmp/iii-run"


# -- plan -----------------------------------------------------------------------------------
def test_plan_order_always_units_and_instances(tmp_path):
    cfg = load(tmp_path, """
        workers:
          - name: iii-cron
          - name: iii-worker-manager
            config: {processes: 2}
          - name: iii-state
    """)
    names = [p.process for p in config.plan(cfg, UNITS)]
    assert names == ["state", "router", "cron", "gateway-0", "gateway-1"]


def test_plan_with_nothing_listed_runs_the_always_units(tmp_path):
    cfg = load(tmp_path, "workers: []\n")
    planned = config.plan(cfg, UNITS)
    assert [(p.process, p.config) for p in planned] == [
        ("router", None), ("gateway", {"port": 1, "processes": 1})]


def test_plan_second_listener_entry_is_its_own_process(tmp_path):
    # issue 18: each iii-worker-manager entry is a listener of its own; the first keeps its name
    cfg = load(tmp_path, "workers: [{name: iii-worker-manager}, {name: iii-worker-manager, config: {port: 9}}]\n")
    planned = config.plan(cfg, UNITS)
    assert [p.process for p in planned] == ["router", "gateway", "gateway-9"]
    assert planned[1].config["port"] == 1 and planned[2].config["port"] == 9
    assert not any("iii-worker-manager#1" in w for w in cfg.warnings)


def test_settings_carry_the_engine_wide_values_and_no_worker_config(tmp_path):
    cfg = load(tmp_path, """
        workers:
          - name: iii-state
            config: {port: 7}
          - name: iii-http
        registration_namespace_grace_ms: 250
        engine: {runtime_dir: /tmp/rt-s, data_dir: /tmp/d-s, log_level: WARNING}
    """)
    s = cfg.settings()
    assert (s.config_path, s.runtime_dir, s.data_dir, s.registration_namespace_grace_ms,
            s.log_level, s.log_format) == (cfg.path, "/tmp/rt-s", "/tmp/d-s", 250, "warning", "text")
    assert [(w.name, w.path, w.unit, w.kind) for w in s.workers] == [
        ("iii-state", "workers[0]", STATE, "iii-state"), ("iii-http", "workers[1]", None, "iii-http")]
    assert not hasattr(s.workers[0], "config")  # a process gets no other worker's config
    s = cfg.settings(log_level="debug", log_format="json")  # start --log-level / --log-format
    assert (s.log_level, s.log_format) == ("debug", "json")


def test_default_conf_loads_with_the_real_units():
    from brokers.supervisor.units import available
    units = available(env={})
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    cfg = config.load(os.path.join(root, "conf", "iii-config.yaml"), units, env={})
    names = [p.process for p in config.plan(cfg, units)]
    assert set(names[-2:]) == {"gateway", "http"} and "router" in names  # ingress last
    assert cfg.runtime_dir == "/tmp/iii-run"


# -- the CLI's exit codes -------------------------------------------------------------------
def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "brokers.supervisor.cli", *args], capture_output=True,
                          text=True, timeout=30, env=dict(os.environ, **(env or {})))


def test_cli_check_bad_file_exits_2_with_one_clear_line(tmp_path):
    path = write(tmp_path, "workers: [{name: iii-worker-manager, config: {port: nope}}]\n")
    done = _cli("check", path)
    assert done.returncode == 2
    assert done.stderr.strip() == "iii-supervisor: workers[0].config.port: expected int, got str"
    done = _cli("start", path)
    assert done.returncode == 2 and "workers[0].config.port" in done.stderr
    done = _cli("check", str(tmp_path / "missing.yaml"))
    assert done.returncode == 2 and "Config file not found" in done.stderr


def test_cli_check_good_file_exits_0(tmp_path):
    done = _cli("check", write(tmp_path, "workers: [{name: iii-worker-manager}]\n"))
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and "gateway" in done.stdout
