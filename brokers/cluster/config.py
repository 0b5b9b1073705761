"""The cluster's config: where the directory lives (Redis) and the address this host serves.

No block of its own in a reference-style config: the cluster runs when any worker entry
uses the ``redis`` adapter (its ``redis_url`` is the directory's), or when the config has
an ``engine.cluster`` block (``enabled: false`` turns it off):

    engine:
      cluster:
        redis_url: redis://10.0.0.5:6379/0   # default: the first redis adapter's URL
        advertise: 10.0.0.7:7400             # what other hosts dial; env III_CLUSTER_ADVERTISE
        bind: 0.0.0.0:7400                   # default: the advertised address
        heartbeat_ms: 1000                   # a host is dead after ttl_ms without one
        ttl_ms: 3000
        gateway_ports: 7401-7410             # default: any free port

``advertise`` (config, else ``$III_CLUSTER_ADVERTISE``, else ``127.0.0.1`` and a free
port) is resolved by the process itself. Each gateway process of a cluster host also
listens on a TCP port of the ``bind`` interface (the first free one of ``gateway_ports``,
else any free one) and advertises it on the ``advertise`` host (``gateway_endpoints``): the
other hosts' gateways call its workers there directly. Between
hosts, the cluster's port and those must be reachable (the links carry no
authentication: a private network). Invariant: ``implied(cfg)`` reads only the config
it is given.
"""
from __future__ import annotations

import os
from typing import Any

from brokers.kit.redisconn import DEFAULT_URL, REDIS_FIELDS, is_redis
from brokers.kit.schema import ConfigError, Field, validate

ADVERTISE_ENV = "III_CLUSTER_ADVERTISE"


def _addr(value: Any) -> str | None:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        return f"must be host:port, got {value!r}"
    return None


def _ports(value: Any) -> str | None:
    lo, sep, hi = str(value).partition("-")
    if not (sep and lo.isdigit() and hi.isdigit() and 0 < int(lo) <= int(hi) < 65536):
        return f"must be a port range lo-hi (1-65535), got {value!r}"
    return None


FIELDS = {
    **REDIS_FIELDS,
    "enabled": Field(bool, True),
    "advertise": Field(str, None, check=_addr),
    "bind": Field(str, None, check=_addr),
    "heartbeat_ms": Field(int, 1000, check=lambda v: None if v >= 50 else "must be >= 50"),
    "ttl_ms": Field(int, 3000, check=lambda v: None if v >= 100 else "must be >= 100"),
    "prefix": Field(str, "iii:cluster"),
    "gateway_ports": Field(str, None, check=_ports),
}


def endpoints(cfg: dict[str, Any] | None) -> tuple[str, str]:
    """``(advertised host:port, bind endpoint)`` of this host's cluster process."""
    advertise = (cfg or {}).get("advertise") or os.environ.get(ADVERTISE_ENV) or "127.0.0.1:0"
    host, _, port = ((cfg or {}).get("bind") or advertise).rpartition(":")
    return advertise, f"tcp://{host}:{'*' if port == '0' else port}"


def gateway_endpoints(cfg: dict[str, Any] | None) -> tuple[str, list[str]]:
    """``(advertised host, bind endpoints to try in order)`` of a gateway of this host:
    each port of ``gateway_ports``, else any free one."""
    advertise, bind = endpoints(cfg)
    host = bind.rsplit(":", 1)[0]
    ports = (cfg or {}).get("gateway_ports")
    if ports:
        lo, hi = (int(p) for p in ports.split("-"))
        return advertise.rpartition(":")[0], [f"{host}:{p}" for p in range(lo, hi + 1)]
    return advertise.rpartition(":")[0], [f"{host}:*"]


def shares(cfg: dict[str, Any]) -> dict[str, Any]:
    """What every process of a cluster host learns of the cluster's config (the gateways
    bind and advertise their own endpoints on its interfaces)."""
    return {"advertise": cfg["advertise"], "bind": cfg["bind"], "gateway_ports": cfg["gateway_ports"]}


def parse(raw: Any, path: str) -> dict[str, Any]:
    cfg = validate(raw, FIELDS, path)
    if cfg["ttl_ms"] <= cfg["heartbeat_ms"]:
        raise ConfigError(f"{path}.ttl_ms: must be more than heartbeat_ms ({cfg['heartbeat_ms']})")
    return cfg


def first_redis_url(workers: Any) -> str | None:
    """The ``redis_url`` of the first worker entry with a redis adapter, else None."""
    for entry in workers:
        raw = getattr(entry, "raw_config", None)
        adapter = raw.get("adapter") if isinstance(raw, dict) else None
        if is_redis(adapter):
            conf = adapter.get("config")
            url = conf.get("redis_url") if isinstance(conf, dict) else None
            return url if isinstance(url, str) else DEFAULT_URL
    return None


def implied(cfg: Any) -> dict[str, Any] | None:
    """The cluster unit's raw config when this engine config makes it a cluster host, else
    None (then no cluster process is planned)."""
    block = getattr(cfg, "cluster", None)
    if isinstance(block, dict) and block.get("enabled") is False:
        return None
    url = block.get("redis_url") if isinstance(block, dict) else None
    url = url or first_redis_url(cfg.workers)
    if url is None and not isinstance(block, dict):
        return None
    return {**(block or {}), "redis_url": url or DEFAULT_URL}
