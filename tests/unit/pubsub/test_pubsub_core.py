"""PubSubCore: fan-out, unsubscribe of one of two, publish input, config."""
from __future__ import annotations

import pytest

from brokers.pubsub.config import parse
from brokers.pubsub.core import PubSubCore, parse_publish
from brokers.pubsub.unit import UNIT
from brokers.kit.errors import EngineError
from brokers.kit.schema import ConfigError


def test_fanout_to_every_subscriber_of_the_topic() -> None:
    core = PubSubCore()
    assert core.subscribe("t1", {"topic": "news"}, "a::on", "default")
    assert core.subscribe("t2", {"topic": "news"}, "b::on", "orders")
    core.subscribe("t3", {"topic": "other"}, "c::on")
    got = core.publish("news", {"x": 1})
    assert sorted((d.function_id, d.namespace, d.data["x"]) for d in got) == [
        ("a::on", "default", 1), ("b::on", "orders", 1)]
    assert core.publish("nobody", 1) == []


def test_unsubscribe_one_of_two_leaves_the_other() -> None:
    core = PubSubCore()
    core.subscribe("t1", {"topic": "news"}, "a::on")
    core.subscribe("t2", {"topic": "news"}, "b::on")
    assert core.unsubscribe("t1")
    assert [d.function_id for d in core.publish("news", None)] == ["b::on"]
    assert not core.unsubscribe("t1")
    assert core.unsubscribe("t2")
    assert core.publish("news", None) == []


def test_resubscribe_same_trigger_moves_it() -> None:
    core = PubSubCore()
    core.subscribe("t1", {"topic": "a"}, "f")
    core.subscribe("t1", {"topic": "b"}, "f")
    assert core.publish("a", 1) == [] and len(core.publish("b", 1)) == 1


def test_missing_topic_is_accepted_but_subscribes_nothing() -> None:
    core = PubSubCore()
    assert not core.subscribe("t1", {}, "f")
    assert not core.subscribe("t2", {"topic": ""}, "f")
    assert not core.subscribe("t3", None, "f")


def test_publish_input() -> None:
    assert parse_publish({"topic": "t", "data": None, "_caller_worker_id": "w"}) == ("t", None)
    for bad in (None, [], {"topic": "t"}, {"data": 1}, {"topic": 3, "data": 1}):
        with pytest.raises(EngineError) as err:
            parse_publish(bad)
        assert err.value.code == "deserialization_error"
        assert err.value.message.startswith("Failed to deserialize input for publish: ")
    with pytest.raises(EngineError) as err:
        parse_publish({"topic": "", "data": 1})
    assert (err.value.code, err.value.message) == ("topic_not_set", "Topic is not set")


def test_config() -> None:
    assert parse(None, "w")["adapter"]["name"] == "local"
    assert parse({"adapter": {"name": "redis"}}, "w")["adapter"] == {"name": "redis",
                                                                  "redis_url": "redis://localhost:6379"}
    with pytest.raises(ConfigError, match=r"^w\.adapter\.name"):
        parse({"adapter": {"name": "nats"}}, "w")
    with pytest.raises(ConfigError, match=r"^w\.adapter\.config\.redis_url"):
        parse({"adapter": {"name": "redis", "config": {"redis_url": "http://x"}}}, "w")
    with pytest.raises(ConfigError, match=r"^w\.extra"):
        parse({"extra": 1}, "w")
    assert UNIT.worker_names == ("iii-pubsub", "pubsub") and UNIT.name == "pubsub"
