"""When the cluster process is planned: any redis adapter (reference-style configs, as
written), or an ``engine.cluster`` block; never otherwise."""
from __future__ import annotations

import textwrap

import pytest

from brokers.kit import config as configmod
from brokers.kit.schema import ConfigError
from brokers.supervisor.units import discover


def planned(tmp_path, text: str) -> dict:
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    units = discover()
    cfg = configmod.load(str(path), units, env={})
    return {p.process: p.config for p in configmod.plan(cfg, units)}


def test_no_redis_no_cluster(tmp_path) -> None:
    assert "cluster" not in planned(tmp_path, "workers:\n  - name: iii-state\n    config: {}\n")


def test_a_redis_adapter_plans_the_cluster_on_its_url(tmp_path) -> None:
    out = planned(tmp_path, """\
        workers:
          - name: iii-state
            config:
              adapter: {name: redis, config: {redis_url: "redis://10.0.0.5:6379/2"}}
        """)
    assert out["cluster"]["redis_url"] == "redis://10.0.0.5:6379/2"
    assert out["cluster"]["heartbeat_ms"] == 1000 and out["cluster"]["advertise"] is None


def test_an_engine_cluster_block_sets_it_or_turns_it_off(tmp_path) -> None:
    out = planned(tmp_path, """\
        engine:
          cluster: {advertise: "10.0.0.7:7400", heartbeat_ms: 200, ttl_ms: 600}
        workers: []
        """)
    assert out["cluster"]["advertise"] == "10.0.0.7:7400" and out["cluster"]["ttl_ms"] == 600
    off = planned(tmp_path, """\
        engine:
          cluster: {enabled: false}
        workers:
          - name: iii-state
            config:
              adapter: {name: redis, config: {redis_url: "redis://x:1"}}
        """)
    assert "cluster" not in off


def test_a_bad_cluster_block_names_its_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"engine.cluster.advertise"):
        planned(tmp_path, "engine:\n  cluster: {advertise: nope}\nworkers: []\n")


def test_gateway_ports_are_a_range_tried_in_order(tmp_path) -> None:
    from brokers.cluster.config import gateway_endpoints
    assert gateway_endpoints({"advertise": "10.0.0.7:7400", "bind": "0.0.0.0:7400", "gateway_ports": "7401-7403"}) == (
        "10.0.0.7", ["tcp://0.0.0.0:7401", "tcp://0.0.0.0:7402", "tcp://0.0.0.0:7403"])
    assert gateway_endpoints({"advertise": "10.0.0.7:7400", "bind": None, "gateway_ports": None}) == (
        "10.0.0.7", ["tcp://10.0.0.7:*"])
    for bad in ("7401", "7403-7401", "0-10", "a-b", "1-70000"):
        with pytest.raises(ConfigError, match="gateway_ports"):
            planned(tmp_path, f"engine:\n  cluster: {{gateway_ports: '{bad}'}}\nworkers: []\n")
