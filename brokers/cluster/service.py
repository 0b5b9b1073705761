"""The cluster process: this host's entry in the cluster's function directory, the other
hosts' functions made routable here, and the calls between hosts.

Directory in Redis (``prefix`` = ``iii:cluster``):

    <prefix>:hosts            set of host ids that joined
    <prefix>:host:<id>        {"addr", "epoch", "nodes": {gateway: [addr, epoch]}} JSON, PX
                              ttl_ms, refreshed every heartbeat_ms
    <prefix>:fns:<id>         hash: field JSON [namespace, function_id] -> JSON details
                              ({"o": [node, conn]}: who serves it on that host)
    <prefix>:events:<db>      pub/sub: {"host", "epoch", "ev": "fns" | "down"} on every change
                              (pub/sub is server-wide: the database number keeps clusters
                              on other databases of one server apart)

Each host writes only its own entry; every host reads the others' (on an event, and in
full every few heartbeats, so a lost message heals). A host whose heartbeat key expired is
dead: its routes go (one CONN close per pseudo-connection at the local router) and the
calls waiting on it get ``invocation_stopped``; the first host to see it also deletes its
leftovers.

Calls: a gateway calls another host's worker directly, gateway to gateway over TCP: each
gateway tells this process where it listens (EP), its endpoint goes into this host's entry,
and every local gateway gets the other hosts' gateways (PEERS). The route of a remote
function names its owner there (``core.pseudo_conn``), so the gateway sends the INV to
``<host>/<node>``; when that gateway's life ends (a new epoch, or its host's heartbeat
expired: ``core.Lives``), the local gateways get a RESET of its name and stop what waited
on it. Any other process's INV for a remote
function comes here instead and goes over the TCP link to that host's cluster process as
``{k: inv, id, fn, node, to, rc: seq}`` with the body untouched, which delivers it to the
owner with itself as the reply node; the RES comes back the same way. Bodies are never
parsed on the way.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from brokers.cluster import core
from brokers.cluster.config import endpoints
from brokers.cluster.link import Link
from brokers.kit import errors, frames, wire
from brokers.kit.broker import Broker, BusFactory, run
from brokers.kit.frames import ROUTER
from brokers.kit.redisconn import connect, host_id
from brokers.kit.routes import not_found_message
from brokers.kit.units import RunContext

log = logging.getLogger(__name__)

FULL_READ_EVERY = 5
"""Heartbeats between two full reads of the other hosts' entries."""


def _key(field: bytes) -> core.Key:
    ns, fn = json.loads(field)
    return ns, fn


class Cluster(Broker):
    worker_name = "iii-cluster"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        cfg = ctx.config
        self.cfg = cfg
        self.host = host_id()
        self.dir = core.Directory(self.host, self.name)
        self.calls = core.Calls()
        self._advertise, bind = endpoints(cfg)
        self.wan = Link(self.host, bind, self._on_wan)
        self.gateways: dict[str, list] = {}
        """This host's gateways that take calls from other hosts: node -> [endpoint, epoch]."""
        self.peers: dict[str, tuple[str, str]] = {}
        """The other hosts' gateways as the local ones were last told (``core.Directory.peers``)."""
        self.lives = core.Lives()
        self.redis: Any = None
        self.prefix = cfg["prefix"]
        self.published: dict[core.Key, dict] = {}
        self._publish_task: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self._kinds.update({frames.INV: self._on_local_inv, frames.RES: self._on_local_res,
                            frames.RESET: self._on_local_reset, frames.ROUTES: self._on_routes,
                            frames.EP: self._on_endpoint})
        self.stats = {"out": 0, "in": 0}

    # ---- keys -------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def addr(self) -> str:
        """What the other hosts dial: the advertised host with the port actually bound."""
        host, _, port = self._advertise.rpartition(":")
        if port == "0" and self.wan.address:
            port = self.wan.address.rsplit(":", 1)[1]
        return f"tcp://{host}:{port}"

    # ---- life -------------------------------------------------------------------------

    async def setup(self) -> None:
        self.redis = connect(self.cfg["redis_url"])
        # Pub/sub ignores the database number: clusters on other databases of the same
        # server must not hear ours.
        db = self.redis.connection_pool.connection_kwargs.get("db", 0)
        self._events = f"{self._k('events')}:{db}"
        self.wan.start()
        try:
            # A previous life of this host id left its functions: they are not ours any more.
            await self.redis.delete(self._k("fns", self.host))
            await self._beat()
        except Exception as exc:  # Redis not up yet: the heartbeats keep trying
            log.warning("cluster: directory unreachable at start: %s", exc)
        log.info("cluster: host %s serves %s, directory %s", self.host, self.addr, self.prefix)

    async def started(self) -> None:
        await super().started()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._heartbeats()), loop.create_task(self._listen())]

    async def stopping(self) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(self._k("host", self.host), self._k("fns", self.host))
            pipe.srem(self._k("hosts"), self.host)
            pipe.publish(self._events, json.dumps({"host": self.host, "ev": "down", "epoch": self.epoch}))
            await asyncio.wait_for(pipe.execute(), 2.0)
        except Exception as exc:  # Redis down: the others see our heartbeat expire
            log.warning("cluster: could not leave the directory: %s", exc)
        for out in self.calls.out.values():
            self._stop_out(out)
        self.wan.close()

    async def teardown(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()

    # ---- the directory ----------------------------------------------------------------

    async def _beat(self) -> None:
        record = json.dumps({"addr": self.addr, "epoch": self.epoch, "nodes": self.gateways})
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(self._k("host", self.host), record, px=self.cfg["ttl_ms"])
        pipe.sadd(self._k("hosts"), self.host)
        await pipe.execute()

    async def _heartbeats(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.cfg["heartbeat_ms"] / 1000)
            try:
                await self._beat()
                await self._scan(full=n % FULL_READ_EVERY == 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster: directory unreachable: %s", exc)
            n += 1

    async def _scan(self, full: bool) -> None:
        """Who is alive; a host that is new, restarted or (``full``) any is read again."""
        ids = sorted(h.decode() for h in await self.redis.smembers(self._k("hosts")) if h.decode() != self.host)
        records = await self.redis.mget([self._k("host", h) for h in ids]) if ids else []
        for hid, raw in zip(ids, records):
            known = self.dir.hosts.get(hid)
            if raw is None:
                if known is not None or self.lives.of(hid):
                    log.warning("cluster: host %s missed its heartbeats: its functions are withdrawn", hid)
                    self._host_gone(hid, dead=True)
                pipe = self.redis.pipeline(transaction=False)
                pipe.delete(self._k("fns", hid))
                pipe.srem(self._k("hosts"), hid)
                await pipe.execute()
                continue
            rec = json.loads(raw)
            if known is None or known.epoch != rec["epoch"] or full:
                await self._read_host(hid, rec)
        for hid in [h for h in self.dir.hosts if h not in ids]:
            self._host_gone(hid, dead=True)  # removed from the set by whoever saw it expire
        self.lives.prune([*ids, *self.dir.hosts])

    async def _read_host(self, hid: str, rec: dict | None = None) -> None:
        if rec is None:
            raw = await self.redis.get(self._k("host", hid))
            if raw is None:
                self._host_gone(hid, dead=True)
                return
            rec = json.loads(raw)
        fields = await self.redis.hgetall(self._k("fns", hid))
        known = self.dir.hosts.get(hid)
        if known is not None and known.epoch != rec["epoch"]:
            self._host_gone(hid)  # its cluster restarted: what waited on that process's life is stopped
        self.wan.dial(hid, rec["addr"])
        fns = {_key(f): json.loads(v) for f, v in fields.items()}
        if known is None or known.epoch != rec["epoch"]:
            log.info("cluster: host %s joined at %s with %d functions", hid, rec["addr"], len(fns))
        nodes = rec.get("nodes")
        self._tell_peers(core.Host(hid, rec["addr"], rec["epoch"], fns, nodes if isinstance(nodes, dict) else {}))

    def _tell_peers(self, host: core.Host | None = None, gone: str | None = None, dead: bool = False) -> None:
        """A host's entry read (or ``gone``, ``dead``: its heartbeat expired): the local
        gateways learn the other hosts' gateways before the routes to them, and get a RESET
        of each gateway whose life ended (``core.Lives``), stopping what waited on it."""
        effects = self.dir.set_host(host) if host is not None else self.dir.drop_host(gone)
        now = self.dir.peers()
        ended = self.lives.seen(now) + (self.lives.dead(gone) if dead and gone is not None else [])
        if now != self.peers or ended:
            self.peers = now
            for gw in self.gateways:
                self._tell_gateway(gw)
                for name in ended:
                    self.send(gw, frames.reset(name))
        self._apply(effects)

    def _tell_gateway(self, gw: str) -> None:
        """PEERS to local gateway ``gw``: the other hosts' gateways and its name toward them."""
        self.send(gw, frames.peers({name: ep[0] for name, ep in self.peers.items()}, f"{self.host}/{gw}"))

    def _on_endpoint(self, sender: str, header: dict, body: bytes) -> None:
        """A local gateway takes calls from other hosts at ``addr``: into our entry."""
        ep = [header.get("addr"), header.get("epoch")]
        if not all(isinstance(x, str) for x in ep):
            return
        self._tell_gateway(sender)
        if self.gateways.get(sender) != ep:
            self.gateways[sender] = ep
            asyncio.get_running_loop().create_task(self._announce())

    async def _announce(self) -> None:
        """Our entry changed: written now and announced (not at the next heartbeat)."""
        try:
            await self._beat()
            await self.redis.publish(self._events, json.dumps({"host": self.host, "ev": "fns", "epoch": self.epoch}))
        except Exception as exc:  # the heartbeats write it again
            log.warning("cluster: cannot announce this host's gateways: %s", exc)

    def _host_gone(self, hid: str, dead: bool = False) -> None:
        self._tell_peers(gone=hid, dead=dead)
        for out in self.calls.host_gone(hid):
            self._stop_out(out)
        self.calls.origin_gone(hid)
        self.wan.forget(hid)

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self._events)
                await self._scan(full=True)  # what changed before we listened
                async for msg in pubsub.listen():
                    if msg.get("type") != "message":
                        continue
                    ev = json.loads(msg["data"])
                    hid = ev.get("host")
                    if hid == self.host or not isinstance(hid, str):
                        continue
                    if ev.get("ev") == "down":
                        known = self.dir.hosts.get(hid)
                        if known is not None and known.epoch == ev.get("epoch"):
                            log.info("cluster: host %s left", hid)
                            self._host_gone(hid)
                    else:
                        await self._read_host(hid)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster: directory events lost (%s); listening again", exc)
                await asyncio.sleep(self.cfg["heartbeat_ms"] / 1000)
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass

    def _on_routes(self, sender: str, header: dict, body: bytes) -> None:
        super()._on_routes(sender, header, body)
        self._apply(self.dir.apply_routes(header["ops"]))
        if self._publish_task is None or self._publish_task.done():
            self._publish_task = asyncio.get_running_loop().create_task(self._publish())

    async def _publish(self) -> None:
        """Write this host's exported functions (what changed) and announce it."""
        await asyncio.sleep(0.01)  # a burst of registrations, one write
        while True:
            current = {key: core.details(owner) for key, owner in self.dir.exported().items()}
            to_set, to_del = core.export_diff(self.published, current)
            if not to_set and not to_del:
                return
            pipe = self.redis.pipeline(transaction=False)
            name = self._k("fns", self.host)
            if to_set:
                pipe.hset(name, mapping={json.dumps(list(k)): json.dumps(v) for k, v in to_set.items()})
            if to_del:
                pipe.hdel(name, *(json.dumps(list(k)) for k in to_del))
            pipe.publish(self._events, json.dumps({"host": self.host, "ev": "fns", "epoch": self.epoch}))
            try:
                await pipe.execute()
            except Exception as exc:
                log.warning("cluster: cannot publish this host's functions: %s", exc)
                await asyncio.sleep(self.cfg["heartbeat_ms"] / 1000)
                continue
            self.published = current

    # ---- registrations at the local router --------------------------------------------

    def _apply(self, effects: list[core.Effect]) -> None:
        for eff in effects:
            kind, conn = eff[0], eff[1]
            if kind == "open":
                self.send(ROUTER, frames.conn_open(conn, None, None))
            elif kind == "close":
                self.send(ROUTER, frames.conn_close(conn))
            elif kind == "register":
                self.send(ROUTER, frames.up(conn, eff[2]), wire.dumps({"type": "registerfunction", "id": eff[3]}))
            elif kind == "unregister":
                self.send(ROUTER, frames.up(conn, eff[2]), wire.dumps({"type": "unregisterfunction", "id": eff[3]}))

    def on_router_restart(self) -> None:
        self._apply(self.dir.replay())

    # ---- calls: this host's callers ---------------------------------------------------

    def _on_local_inv(self, sender: str, header: dict, body: bytes) -> None:
        target = self.dir.target(header.get("to"))
        if target is None:
            self._on_inv(sender, header, body)
            return
        host, node, conn = target
        rn = header.get("rn")
        if not self.wan.knows(host) or host not in self.dir.hosts:
            if rn is not None:
                self.send(rn, frames.res(header["id"], header.get("rc"), errors.INVOCATION_STOPPED),
                          wire.stopped(header["id"], header["fn"]))
            return
        seq = None if rn is None else self.calls.send(rn, header.get("rc"), header["id"], header["fn"], host)
        self.stats["out"] += 1
        self.wan.send(host, {"k": frames.INV, "id": header["id"], "fn": header["fn"], "node": node, "to": conn,
                             "rc": seq}, body)

    def _stop_out(self, out: core.Outbound) -> None:
        self.send(out.rn, frames.res(out.id, out.rc, errors.INVOCATION_STOPPED), wire.stopped(out.id, out.fn))

    # ---- calls: the other hosts' callers ----------------------------------------------

    def _on_wan(self, host: str, header: dict, body: bytes) -> None:
        kind = header["k"]
        if kind == frames.INV:
            self._remote_inv(host, header, body)
        elif kind == frames.RES:
            out = self.calls.answered(header.get("to"))
            if out is not None:
                self.send(out.rn, frames.res(out.id, out.rc, header.get("e")), body)

    def _remote_inv(self, host: str, header: dict, body: bytes) -> None:
        inv_id, fn, node, conn, seq = header["id"], header["fn"], header.get("node"), header.get("to"), header.get("rc")
        if node == self.name or node not in self.ctx.peers:  # not ours: never a second hop
            if seq is not None:
                self.wan.send(host, {"k": frames.RES, "id": inv_id, "to": seq, "e": errors.FUNCTION_NOT_FOUND},
                              wire.error(inv_id, fn, errors.FUNCTION_NOT_FOUND, not_found_message(fn, "default", [])))
            return
        self.stats["in"] += 1
        if seq is None:
            self.send(node, frames.inv(inv_id, fn, conn, None, None), body)
            return
        key = self.calls.deliver(host, seq, inv_id, fn, node)
        self.send(node, frames.inv(inv_id, fn, conn, self.name, key), body)

    def _on_local_res(self, sender: str, header: dict, body: bytes) -> None:
        inb = self.calls.returned(header.get("to"))
        if inb is None:
            self._on_res(sender, header, body)  # one of our own calls
            return
        res = {"k": frames.RES, "id": inb.id, "to": inb.seq}
        if header.get("e") is not None:
            res["e"] = header["e"]
        self.wan.send(inb.host, res, body)

    def _on_local_reset(self, sender: str, header: dict, body: bytes) -> None:
        self._on_reset(sender, header, body)
        for inb in self.calls.node_gone(header["node"]):
            self.wan.send(inb.host, {"k": frames.RES, "id": inb.id, "to": inb.seq, "e": errors.INVOCATION_STOPPED},
                          wire.stopped(inb.id, inb.fn))

    def telemetry_figures(self) -> dict[str, Any]:
        return {"counters": {"cluster_calls_total": [[{"dir": d}, n] for d, n in self.stats.items()]},
                "gauges": {"cluster_hosts": [[{}, len(self.dir.hosts)]],
                           "cluster_remote_functions": [[{}, len(self.dir.registered)]]}}


def main(ctx: RunContext) -> None:
    """Entry point of the cluster process."""
    run(Cluster, ctx)
