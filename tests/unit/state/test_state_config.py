"""The ``iii-state`` config block: iii's adapter shape, defaults, and path-naming errors."""
from __future__ import annotations

import os

import pytest

from brokers.state.config import parse, store_path
from brokers.state.unit import UNIT
from brokers.kit.schema import ConfigError

P = "workers[0].config"


def test_defaults_are_lmdb_under_data_dir():
    cfg = parse(None, P)
    assert cfg == {"triggers_enabled": True, "max_value_bytes": None, "save_interval_ms": None,
                   "store": "lmdb", "path": None}
    assert store_path(cfg, "/var/iii") == "/var/iii/state"


def test_iii_adapter_shape(monkeypatch):
    cfg = parse({"adapter": {"name": "kv", "config": {"store_method": "file_based",
                                                     "file_path": "./data/state_store.db",
                                                     "save_interval_ms": 5000}},
                 "max_value_bytes": 256, "triggers_enabled": False}, P)
    assert cfg["store"] == "lmdb" and cfg["max_value_bytes"] == 256 and cfg["triggers_enabled"] is False
    # relative to the working directory, as in iii (not the doubled /d/data/data/...)
    assert store_path(cfg, "/d") == os.path.join(os.getcwd(), "data", "state_store.db")
    assert store_path(parse({"adapter": {"name": "kv", "config": {"file_path": "/abs/x"}}}, P), "/d") == "/abs/x"
    memory = parse({"adapter": {"name": "kv", "config": {"store_method": "in_memory"}}}, P)
    assert memory["store"] == "memory" and store_path(memory, "/d") is None


@pytest.mark.parametrize("raw, message", [
    ({"max_value_bytes": 0}, f"{P}.max_value_bytes: must be > 0"),
    ({"save_interval_ms": 10}, f"{P}.save_interval_ms: must be 100..3600000"),
    ({"nope": 1}, f"{P}.nope: unknown key"),
    ({"adapter": {"name": "bridge"}}, f"{P}.adapter.name: adapter 'bridge' is not supported"),
    ({"adapter": {"name": "redis", "config": {"redis_url": "http://x"}}}, f"{P}.adapter.config.redis_url: must be"),
    ({"adapter": {"name": "kv", "config": {"store_method": "disk"}}}, f"{P}.adapter.config.store_method: must be"),
    ({"adapter": {"name": "kv", "config": {"typo": 1}}}, f"{P}.adapter.config.typo: unknown key"),
    ({"triggers_enabled": "yes"}, f"{P}.triggers_enabled: expected bool"),
])
def test_rejects_with_path(raw, message):
    with pytest.raises(ConfigError) as info:
        parse(raw, P)
    assert str(info.value).startswith(message)


def test_unit():
    assert UNIT.name == "state" and UNIT.storage and "iii-state" in UNIT.worker_names
    assert UNIT.parse_config({}, P)["store"] == "lmdb"
