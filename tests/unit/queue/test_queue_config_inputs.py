"""The iii-queue config block and the input shapes/codes of every queue function."""
from __future__ import annotations

import pytest

from brokers.queue import inputs
from brokers.queue.config import parse, store_path
from brokers.queue.unit import UNIT
from brokers.kit.errors import EngineError
from brokers.kit.schema import ConfigError


def test_defaults_and_default_queue_always_present() -> None:
    cfg = parse(None, "workers[0].config")
    assert cfg["queue_configs"]["default"]["max_retries"] == 3
    assert cfg["queue_configs"]["default"]["concurrency"] == 10
    assert cfg["queue_configs"]["default"]["backoff_ms"] == 1000
    assert cfg["adapter"]["config"]["store_method"] == "file_based"
    kept = parse({"queue_configs": {"default": {"max_retries": 5}}}, "w")
    assert kept["queue_configs"]["default"]["max_retries"] == 5
    assert UNIT.worker_names == ("iii-queue", "queue") and UNIT.storage
    assert UNIT.parse_config is parse


@pytest.mark.parametrize("raw, where", [
    ({"queue_configs": {"p": {"type": "fifo"}}}, "w.queue_configs.p.message_group_field"),
    ({"queue_configs": {"p": {"type": "lifo"}}}, "w.queue_configs.p.type"),
    ({"queue_configs": {"p": {"concurrency": 0}}}, "w.queue_configs.p.concurrency"),
    ({"queue_configs": {"p": {"visibility_timeout": 3}}}, "w.queue_configs.p.visibility_timeout"),
    ({"adapter": {"name": "rabbitmq"}}, "w.adapter.name"),
    ({"adapter": {"name": "builtin", "config": {"store_method": "x"}}}, "w.adapter.config.store_method"),
    ({"nope": 1}, "w.nope"),
])
def test_bad_config_names_the_path(raw, where) -> None:
    with pytest.raises(ConfigError) as err:
        parse(raw, "w")
    assert str(err.value).startswith(where)


def code_of(fn, *args) -> tuple[str, str]:
    with pytest.raises(EngineError) as err:
        fn(*args)
    return err.value.code, err.value.message


def test_enqueue_input() -> None:
    good = {"queue": "q", "function_id": "f", "data": None, "messageReceiptId": "r",
            "traceparent": None, "baggage": None, "_caller_worker_id": "w"}
    r = inputs.enqueue(good)
    assert (r.queue, r.function_id, r.data, r.message_id, r.namespace) == ("q", "f", None, "r", "default")
    assert inputs.enqueue({**good, "namespace": "orders"}).namespace == "orders"
    assert code_of(inputs.enqueue, None)[0] == "deserialization_error"
    assert code_of(inputs.enqueue, {k: v for k, v in good.items() if k != "data"})[1].endswith(
        "missing field `data`")
    assert code_of(inputs.enqueue, {**good, "queue": 3})[0] == "deserialization_error"
    assert code_of(inputs.enqueue, {**good, "queue": ""}) == ("enqueue_error", "queue is required")


def test_publish_input() -> None:
    assert inputs.publish({"topic": "t", "data": None}) == ("t", None)
    assert code_of(inputs.publish, {"topic": "", "data": 1}) == ("topic_not_set", "Topic is not set")
    assert code_of(inputs.publish, {"topic": "t"})[0] == "deserialization_error"
    assert code_of(inputs.publish, [1])[0] == "deserialization_error"


def test_dlq_function_inputs() -> None:
    fid = inputs.REDRIVE
    assert inputs.queue_name(fid, {"topic": "t"}) == "t"
    assert code_of(inputs.queue_name, fid, {"queue": ""}) == ("queue_not_set", "Queue name is required")
    assert code_of(inputs.queue_name, fid, {})[0] == "deserialization_error"
    fid = inputs.DISCARD_MESSAGE
    assert inputs.queue_and_message(fid, {"queue": "q", "message_id": "m"}) == ("q", "m")
    assert code_of(inputs.queue_and_message, fid, {"queue": "q", "message_id": ""}) == (
        "message_id_not_set", "Message ID is required")
    assert inputs.topic_name(inputs.TOPIC_STATS, {"queue": "q"}) == "q"
    assert code_of(inputs.topic_name, inputs.TOPIC_STATS, {"topic": ""}) == (
        "topic_required", "topic is required")
    assert inputs.dlq_page({"topic": "t"}) == ("t", 0, 50)
    assert inputs.dlq_page({"topic": "t", "offset": 2, "limit": 3}) == ("t", 2, 3)
    assert code_of(inputs.dlq_page, {"topic": "t", "limit": "x"})[0] == "deserialization_error"


@pytest.mark.parametrize("adapter, expected", [
    (None, "/srv/data/queue"),
    ({"name": "builtin", "config": {"file_path": "jobs/q"}}, "/work/here/jobs/q"),
    ({"name": "builtin", "config": {"file_path": "./data/queue_store"}}, "/work/here/data/queue_store"),
    ({"name": "builtin", "config": {"file_path": "./x/../q"}}, "/work/here/q"),
    ({"name": "builtin", "config": {"file_path": "/var/lib/q"}}, "/var/lib/q"),
    ({"name": "builtin", "config": {"store_method": "in_memory", "file_path": "q"}}, None),
])
def test_store_path_default_is_under_the_data_dir_a_relative_one_under_the_cwd(
        adapter, expected, monkeypatch) -> None:
    """As in iii: a relative ``file_path`` is relative to the working directory (it was
    joined to the data dir once, which doubled ``./data/`` into ``data/data/``)."""
    monkeypatch.setattr("os.getcwd", lambda: "/work/here")
    raw = {} if adapter is None else {"adapter": adapter}
    assert store_path(parse(raw, "workers[0].config"), "/srv/data") == expected
