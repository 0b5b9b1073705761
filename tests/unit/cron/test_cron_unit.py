"""The cron unit as the supervisor and the router see it: discovered by package, enabled by
``iii-cron`` (or ``cron``) in the config, its store shown by ``status``, and a parked ``cron``
binding in a config without it names the line to add (the router's notices read the
discovered units, so nothing there names cron by hand)."""
from __future__ import annotations

from types import SimpleNamespace

from brokers.cron.unit import UNIT
from brokers.router.core import Binding
from brokers.router.notices import why_waiting, worker_sets
from brokers.supervisor.units import discover


def test_the_supervisor_discovers_the_cron_unit() -> None:
    unit = discover()["cron"]
    assert unit is UNIT and unit.worker_names == ("iii-cron", "cron")
    assert unit.main == "brokers.cron.service:main" and not unit.always
    assert unit.stores(unit.parse_config(None, "w"), "/data") == {"cron": "/data/cron"}


def test_a_parked_cron_binding_says_the_worker_is_there_but_not_enabled() -> None:
    have, enabled = worker_sets(discover().values(), [])
    binding = Binding("t", "cron", "jobs::tick", {}, None, "default", None, "default", None)
    assert why_waiting(binding, [], have, enabled) == (
        "no worker provides trigger type 'cron'; it is provided by the iii-cron worker, which is "
        "not enabled in this config (add '- name: iii-cron' under workers:)")
    have, enabled = worker_sets(discover().values(), [SimpleNamespace(unit=UNIT)])
    assert "enabled but has not registered it yet" in why_waiting(binding, [], have, enabled)
