"""The cluster's pure core: the function directory of the other hosts, merged into this
host's registry, and the cross-host calls in flight.

Style: returned effects (architecture.md §6). ``Directory`` takes the local route table
(ROUTES ops, as every process gets them) and the other hosts' directory entries (read from
Redis by the shell) and answers with the registrations to send the local router, as
``Effect`` tuples:

    ("open", conn)                     CONN open of a pseudo-connection of the cluster node
    ("close", conn)                    CONN close: the router drops all its functions at once
    ("register", conn, ns, fn)         an UP registerfunction of ``conn``
    ("unregister", conn, ns, fn)       an UP unregisterfunction of ``conn``

A remote function is registered as owned by ``(cluster node, "<host>/<node>/<conn>")``,
the connection that serves it on its host (the ``"o"`` of its directory details): one
pseudo-connection per remote owner, so a gateway that can reach ``<host>/<node>`` (a
PEERS frame) calls it there directly, anyone else's INV names host and owner without a
lookup, and a dead host's functions go away with a CONN close per owner. The router lets
an entry of the cluster node yield to any other owner (``brokers.router.core.REMOTE_NODE``).

Invariants:
- local preferred: a key with a local owner (any node but the cluster's) is never
  registered as remote; when a local owner appears the router has already replaced ours,
  and the directory just forgets it; when the local owner goes, the remote one comes back;
- a key served by several other hosts is registered under one of them, the one it is
  already under if it still serves it, else the smallest host id (stable, no flapping);
- what this host exports is its worker functions (an owner with a connection, not the
  cluster node's own entries, no ``engine::`` ids), so a remote entry is never re-exported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

Key = tuple[str, str]
"""``(namespace, function_id)``."""
Owner = tuple[str, "str | None"]
Effect = tuple


def pseudo_conn(host: str, details: dict) -> str | None:
    """The pseudo-connection under which a function of ``host`` whose directory details
    are ``details`` is registered: its owner's, None when they name none."""
    owner = details.get("o")
    if not (isinstance(owner, list) and len(owner) == 2 and all(isinstance(x, str) and x for x in owner)
            and "/" not in owner[0] and "/" not in owner[1]):
        return None
    return f"{host}/{owner[0]}/{owner[1]}"


def owner_of(conn: str) -> tuple[str, str]:
    """``(node, connection)`` on its host of a pseudo-connection's owner."""
    _, node, owner = conn.rsplit("/", 2)
    return node, owner


def details(owner: tuple[str, str | None]) -> dict:
    """What this host publishes of a function it exports: who serves it here."""
    return {"o": [owner[0], owner[1]]}


@dataclass
class Host:
    """Another engine host as its directory entry says."""

    id: str
    addr: str
    epoch: str
    functions: dict[Key, dict] = field(default_factory=dict)
    """Key -> its directory details (``details``: its owner there)."""
    nodes: dict[str, list] = field(default_factory=dict)
    """Its gateways that take calls from other hosts: node -> [TCP endpoint, epoch]."""


class Directory:
    """This host's view of the cluster; every method returns the effects to apply."""

    def __init__(self, me: str, node: str) -> None:
        self.me = me
        """This host's id."""
        self.node = node
        """The cluster process's node name on this host's bus."""
        self.local: dict[Key, Owner] = {}
        """The local route table (every owner, ours included)."""
        self.hosts: dict[str, Host] = {}
        self.registered: dict[Key, str] = {}
        """Key -> the pseudo-connection we registered it under."""
        self.conns: dict[str, str] = {}
        """Open pseudo-connection -> its host."""

    # ---- inputs -------------------------------------------------------------------------

    def apply_routes(self, ops: Iterable[list]) -> list[Effect]:
        local = self.local
        for op in ops:
            kind = op[0]
            if kind == "=":
                local.clear()
            elif kind == "+":
                local[(op[1], op[2])] = (op[3], op[4])
            elif kind == "-":
                key = (op[1], op[2])
                if local.get(key) == (op[3], op[4]):
                    del local[key]
        return self.reconcile()

    def set_host(self, host: Host) -> list[Effect]:
        """A host's entry (new, or changed functions); another epoch replaces the old life."""
        if host.id == self.me:
            return []
        self.hosts[host.id] = host
        return self.reconcile()

    def drop_host(self, host_id: str) -> list[Effect]:
        """A host is gone (heartbeat expired or it said so): its routes go."""
        if self.hosts.pop(host_id, None) is None:
            return []
        return self.reconcile()

    # ---- outputs ------------------------------------------------------------------------

    def exported(self) -> dict[Key, Owner]:
        """What this host serves to the others: its workers' functions."""
        return {key: owner for key, owner in self.local.items()
                if owner[0] != self.node and owner[1] is not None and not key[1].startswith("engine::")}

    def is_local(self, key: Key) -> bool:
        owner = self.local.get(key)
        return owner is not None and owner[0] != self.node

    def desired(self) -> dict[Key, tuple[str, str]]:
        """Key -> (pseudo-connection, host) for every remote function routable here."""
        offers: dict[Key, dict[str, str]] = {}
        for host_id, host in self.hosts.items():
            for key, info in host.functions.items():
                conn = pseudo_conn(host_id, info)
                if conn is not None and not self.is_local(key):
                    offers.setdefault(key, {})[host_id] = conn
        out: dict[Key, tuple[str, str]] = {}
        for key, by_host in offers.items():
            where = self.conns.get(self.registered.get(key, ""))
            host_id = where if where in by_host else min(by_host)  # it stays where it is
            out[key] = (by_host[host_id], host_id)
        return out

    def reconcile(self) -> list[Effect]:
        want = self.desired()
        effects: list[Effect] = []
        for key, conn in list(self.registered.items()):
            if key in want and want[key][0] == conn:
                continue
            del self.registered[key]
            if key not in want and not self.is_local(key) and conn in self.conns:
                effects.append(("unregister", conn, key[0], key[1]))
        for key, (conn, host_id) in want.items():
            if self.registered.get(key) == conn:
                continue
            if conn not in self.conns:
                self.conns[conn] = host_id
                effects.append(("open", conn))
            self.registered[key] = conn
            effects.append(("register", conn, key[0], key[1]))
        used = set(self.registered.values())
        closed = [c for c in self.conns if c not in used]
        for conn in closed:
            del self.conns[conn]
        if closed:  # a CONN close drops every function of it: no unregister one by one
            gone = set(closed)
            effects = [e for e in effects if not (e[0] == "unregister" and e[1] in gone)]
            effects += [("close", conn) for conn in closed]
        return effects

    def replay(self) -> list[Effect]:
        """Everything registered, again (the router restarted)."""
        effects: list[Effect] = [("open", conn) for conn in self.conns]
        for key, conn in self.registered.items():
            effects.append(("register", conn, key[0], key[1]))
        return effects

    def target(self, conn: str | None) -> tuple[str, str, str] | None:
        """``(host, node, connection)`` of an INV addressed to pseudo-connection ``conn``."""
        host = self.conns.get(conn) if conn is not None else None
        return None if host is None else (host, *owner_of(conn))

    def peers(self) -> dict[str, tuple[str, str]]:
        """``"<host>/<node>"`` -> (endpoint, epoch) of every other host's gateway."""
        return {f"{hid}/{node}": (ep[0], ep[1]) for hid, host in self.hosts.items()
                for node, ep in host.nodes.items()
                if isinstance(ep, list) and len(ep) == 2 and all(isinstance(x, str) for x in ep) and "/" not in node}


class Lives:
    """The other hosts' gateways that this host's gateways may have calls on: name
    (``<host>/<node>``) -> the epoch of its life. A life ends, and the local gateways get a
    RESET of its name, when the name comes back with another epoch (that gateway restarted)
    or its host is dead (heartbeat expired); not when its host's cluster process restarts or
    its host's entry lacks it for a while: that gateway lives on and answers what it holds."""

    def __init__(self) -> None:
        self.epochs: dict[str, str] = {}

    def seen(self, peers: dict[str, tuple[str, str]]) -> list[str]:
        """The current table (``Directory.peers``); the names whose life ended."""
        ended = [name for name, (_, epoch) in peers.items() if self.epochs.get(name, epoch) != epoch]
        self.epochs.update({name: epoch for name, (_, epoch) in peers.items()})
        return ended

    def of(self, host: str) -> bool:
        """Whether a gateway of ``host`` is alive as far as we know."""
        return any(name.rpartition("/")[0] == host for name in self.epochs)

    def dead(self, host: str) -> list[str]:
        """``host`` is dead: every life of it ended."""
        ended = [name for name in self.epochs if name.rpartition("/")[0] == host]
        for name in ended:
            del self.epochs[name]
        return ended

    def prune(self, hosts: Iterable[str]) -> None:
        """Forget (no RESET) the lives of hosts not in ``hosts``: they left cleanly."""
        keep = set(hosts)
        self.epochs = {n: e for n, e in self.epochs.items() if n.rpartition("/")[0] in keep}


def export_diff(published: dict[Key, dict], current: dict[Key, dict]) -> tuple[dict[Key, dict], list[Key]]:
    """What to write to this host's directory entry: ``(set, delete)``."""
    to_set = {k: v for k, v in current.items() if published.get(k) != v}
    to_del = [k for k in published if k not in current]
    return to_set, to_del


# ---- cross-host calls in flight ----------------------------------------------------------

@dataclass(slots=True)
class Outbound:
    """A call of a local caller sent to another host."""

    rn: str
    rc: str | None
    id: str
    fn: str
    host: str


@dataclass(slots=True)
class Inbound:
    """A call from another host delivered to a local node."""

    host: str
    seq: Any
    id: str
    fn: str
    node: str


class Calls:
    """Calls waiting for a result across hosts, each side's half.

    Outbound calls are numbered here (``seq``): invocation ids are unique only per caller,
    so the number, not the id, names a call on the wire. Inbound calls are keyed
    ``"<host>|<seq>"``, handed to the local node as the reply connection and given back in
    its RES. Invariant: an entry leaves exactly once, by its result or by a stop."""

    def __init__(self) -> None:
        self._seq = 0
        self.out: dict[int, Outbound] = {}
        self.inb: dict[str, Inbound] = {}

    def send(self, rn: str, rc: str | None, inv_id: str, fn: str, host: str) -> int:
        self._seq += 1
        self.out[self._seq] = Outbound(rn, rc, inv_id, fn, host)
        return self._seq

    def answered(self, seq: Any) -> Outbound | None:
        return self.out.pop(seq, None) if isinstance(seq, int) else None

    def host_gone(self, host: str) -> list[Outbound]:
        gone = [seq for seq, c in self.out.items() if c.host == host]
        return [self.out.pop(seq) for seq in gone]

    def deliver(self, host: str, seq: Any, inv_id: str, fn: str, node: str) -> str:
        key = f"{host}|{seq}"
        self.inb[key] = Inbound(host, seq, inv_id, fn, node)
        return key

    def returned(self, key: Any) -> Inbound | None:
        return self.inb.pop(key, None) if isinstance(key, str) else None

    def node_gone(self, node: str) -> list[Inbound]:
        gone = [k for k, c in self.inb.items() if c.node == node]
        return [self.inb.pop(k) for k in gone]

    def origin_gone(self, host: str) -> None:
        """The calling host died: its answers have nowhere to go."""
        for k in [k for k, c in self.inb.items() if c.host == host]:
            del self.inb[k]
