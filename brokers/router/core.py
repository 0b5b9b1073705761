"""The registry: functions, trigger types, trigger bindings, workers, name leases.

Pure: every effect goes out through the ``send(node, header, body)`` and
``fire(binding, payload)`` callables given to the constructor; time comes in as
``now_ms``. An owner is ``(node, conn)``: a WebSocket connection on a gateway, or
``(node, None)`` for a broker process itself.

Invariants: one live owner per ``(namespace, function_id)`` (protocol.md §5.4); a binding
is either delivered to exactly one provider or parked (``provider is None``), and a binding
that ``register_trigger`` parks is handed to ``on_parked`` once per registration; everything a
connection registered goes away with it (§4.6), except durable bindings (owner ``None``,
made through ``engine::register_trigger``), which stay until unregistered; every route
change is broadcast to every peer in the order it happened.
"""
from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable

from brokers.kit import errors, frames, wire
from brokers.kit import reserved as reserved_ids

log = logging.getLogger(__name__)

Owner = tuple[str, "str | None"]
Key = tuple[str, str]

REMOTE_NODE = frames.CLUSTER
"""The node that registers other engine hosts' functions (``brokers.cluster``): an entry it
owns yields to any other owner's registration (a local worker is preferred, and the
cluster moves a function from a dead host to another one)."""

_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def sanitize_name(value: Any) -> str | None:
    """Worker names and descriptions: control (Unicode Cc, as Rust's ``is_control``) and
    bidi-override characters removed, trimmed, at most 280 characters."""
    if not isinstance(value, str):
        return None
    cleaned = "".join(ch for ch in value if ch not in _BIDI and unicodedata.category(ch) != "Cc")
    return cleaned.strip()[:280] or None


def blank(value: Any) -> bool:
    """A namespace that is present but whitespace-only (always refused, §10.1)."""
    return isinstance(value, str) and not value.strip()


@dataclass
class Worker:
    node: str
    conn: str | None
    token: str | None = None
    ip: str | None = None
    connected_at_ms: int = 0
    ns: str = "default"
    meta: dict = field(default_factory=dict)
    name: str | None = None


@dataclass
class Function:
    ns: str
    id: str
    owner: Owner
    message: dict
    route: Owner | None = None
    """Where its calls go when not to its owner: an HTTP-invoked function's are served by
    the http_functions process, as ``(that node, owner's connection)``."""

    @property
    def target(self) -> Owner:
        return self.route or self.owner


@dataclass
class TriggerType:
    ns: str
    id: str
    provider: Owner
    message: dict
    replicas: list[Owner] = field(default_factory=list)
    """Other processes of the same broker serving this type too (``processes: N`` of the
    HTTP worker): every binding goes to each, and a replica takes over a provider that
    goes away."""

    def owners(self) -> list[Owner]:
        return [self.provider, *self.replicas]


@dataclass
class Binding:
    id: str
    trigger_type: str
    function_id: str
    config: Any
    metadata: Any
    target_ns: str
    trigger_ns: str | None
    home_ns: str
    owner: Owner | None
    provider: Key | None = None


class Registry:
    """The engine's registry; methods are the router's reactions to frames."""

    def __init__(self, me: str, peers: list[str], send: Callable[[str, dict, bytes], None],
                 fire: Callable[[Binding, Any], None], http_node: str | None = None) -> None:
        self.me = me
        self.peers = [p for p in peers if p != me]
        self.http_node = http_node
        """The process serving HTTP-invoked functions; None when the engine has none."""
        self.send = send
        self.fire = fire
        self.workers: dict[Owner, Worker] = {}
        self.epochs: dict[str, str] = {}
        self.functions: dict[Key, Function] = {}
        self.trigger_types: dict[Key, TriggerType] = {}
        self.bindings: dict[str, Binding] = {}
        self.leases: dict[Key, Owner] = {}
        self.functions_changed = False
        self.on_route_ops: Callable[[list], None] = lambda ops: None
        self.on_parked: Callable[[Binding], None] = lambda binding: None
        """Called when ``register_trigger`` parks a binding (its type has no provider), so
        the shell can tell the user why; a binding parked later because its provider went
        away is not reported (that provider is usually restarting)."""

    # ---- output helpers -----------------------------------------------------------------

    def broadcast_routes(self, ops: list) -> None:
        self.on_route_ops(ops)
        for peer in self.peers:
            self.send(peer, frames.routes(ops))

    def snapshot(self) -> list:
        ops: list = [["="]]
        ops.extend(["+", f.ns, f.id, *f.target] for f in self.functions.values())
        return ops

    def to_conn(self, owner: Owner, message: dict) -> None:
        if owner[0] == self.me:
            return
        self.send(owner[0], frames.down(owner[1]), wire.dumps(message))

    def alive(self, owner: Owner | None) -> bool:
        return owner is not None and owner in self.workers

    # ---- nodes and connections ----------------------------------------------------------

    def hello(self, node: str, epoch: str, worker_name: str | None, now_ms: int,
              snapshot: bool = True) -> None:
        """A process (re)started: forget what its previous life owned, send it the routes
        (unless the router itself is still collecting replays: a partial snapshot would
        blank routes the peer still needs; the full one follows)."""
        old = self.epochs.get(node)
        if old is not None and old != epoch:
            self.drop_node(node)
            for peer in self.peers:
                self.send(peer, frames.reset(node))
        self.epochs[node] = epoch
        if node == self.http_node:  # (re)started, or answering our HELLO: it gets them all
            for f in self.functions.values():
                if f.route is not None:
                    self._to_http(f, f.message)
        if worker_name is not None:  # a broker: it owns things as (node, None)
            self.workers.setdefault((node, None), Worker(node, None, connected_at_ms=now_ms,
                                                         name=worker_name, meta={"runtime": "engine"}))
        if snapshot:
            self.send(node, frames.routes(self.snapshot()))

    def drop_node(self, node: str) -> None:
        for owner in [o for o in self.workers if o[0] == node]:
            self.disconnect(owner)

    def connect(self, owner: Owner, token: str | None, ip: str | None, now_ms: int) -> None:
        if owner not in self.workers:
            self.workers[owner] = Worker(owner[0], owner[1], token, ip, now_ms)
            self.fire_engine("engine::workers-available", {"event": "worker_connected", "worker_id": owner[1]})

    def disconnect(self, owner: Owner) -> None:
        """Connection cleanup, protocol.md §4.6 steps 2, 4, 5, 7, 8."""
        worker = self.workers.get(owner)
        if worker is None:
            return
        gone = [f for f in self.functions.values() if f.owner == owner]
        for f in gone:
            del self.functions[(f.ns, f.id)]
            self._drop_function(f)
        if gone:
            self.broadcast_routes([["-", f.ns, f.id, *f.target] for f in gone])
            self.functions_changed = True
        for binding in [b for b in self.bindings.values() if b.owner == owner]:
            self._unbind(binding)
        for key in [k for k, t in self.trigger_types.items() if owner in t.owners()]:
            self._provider_gone(key, owner)
        for lease, holder in list(self.leases.items()):
            if holder == owner:
                del self.leases[lease]
        del self.workers[owner]
        if owner[1] is not None:
            self.fire_engine("engine::workers-available", {"event": "worker_disconnected", "worker_id": owner[1]})

    def reattach(self, owner: Owner, ns: str, message: dict) -> None:
        """§4.7: a reconnected worker retires its previous connection, wherever it was."""
        prev_id, token = message.get("previous_worker_id"), message.get("reattach_token")
        if not isinstance(prev_id, str) or not token or prev_id == owner[1]:
            return
        prev = next((o for o in self.workers if o[1] == prev_id), None)
        if prev is None or self.workers[prev].token != token:
            return
        self.disconnect(prev)
        self.send(prev[0], frames.close(prev[1]))

    def register_worker(self, owner: Owner, data: Any, fixed_ns: str | None) -> tuple[bool, str]:
        """``engine::workers::register`` (§4.3): store metadata, take the name lease."""
        worker = self.workers.get(owner)
        if worker is None:
            return False, "default"
        data = data if isinstance(data, dict) else {}
        ns = fixed_ns or data.get("namespace") or "default"
        name = sanitize_name(data.get("name"))
        if name is not None:
            holder = self.leases.get((ns, name))
            if holder is not None and holder != owner and self.alive(holder):
                self.to_conn(owner, {"type": "registrationrejected", "code": errors.WORKER_NAMESPACE_CONFLICT,
                                     "namespace": ns, "worker_name": name,
                                     "owner_worker_id": holder[1] or ""})
                return False, ns
        for lease in [k for k, v in self.leases.items() if v == owner and k != (ns, name)]:
            del self.leases[lease]  # one name per connection: a rename frees the old one
        if name is not None:
            self.leases[(ns, name)] = owner
        meta = {k: v for k, v in data.items() if k != wire.CALLER_KEY}
        meta["runtime"] = meta.get("runtime") or "unknown"
        meta["description"] = sanitize_name(meta.get("description"))
        worker.meta, worker.name, worker.ns = meta, name, ns
        self.fire_engine("engine::workers-available", {"event": "worker_metadata_updated", "worker_id": owner[1]})
        return True, ns

    # ---- registrations (UP frames) ------------------------------------------------------

    def up(self, owner: Owner, ns: str, msg: dict) -> None:
        name = _UP_HANDLERS.get(msg.get("type"))
        if name is not None and owner in self.workers:
            getattr(self, name)(owner, ns, msg)

    def register_function(self, owner: Owner, ns: str, msg: dict) -> None:
        fid = msg.get("id")
        if not isinstance(fid, str) or not fid.strip():
            return
        current = self.functions.get((ns, fid))
        # Engine ids are refused to every connection; brokers (conn None) register their own.
        reserved = owner[1] is not None and reserved_ids.function(fid) \
            or fid.startswith("engine::") and ns != "default"
        taken = current is not None and current.owner != owner and self.alive(current.owner) \
            and current.owner[0] != REMOTE_NODE
        if reserved or taken:
            self.to_conn(owner, {"type": "registrationrejected", "code": errors.FUNCTION_NAMESPACE_CONFLICT,
                                 "namespace": ns, "function_id": fid,
                                 "owner_worker_id": "" if reserved else (current.owner[1] or "")})
            return
        route = None
        if msg.get("invocation") is not None:
            if self.http_node is None:
                self._no_http_module(owner, ns, fid)
                return
            route = (self.http_node, owner[1])
        if current is not None:
            self._drop_function(current)
        f = self.functions[(ns, fid)] = Function(ns, fid, owner, msg, route)
        if route is not None:
            self._to_http(f, msg)
        if current is None or current.target != f.target:
            self.broadcast_routes([["+", ns, fid, *f.target]])
        self.functions_changed = True

    def unregister_function(self, owner: Owner, ns: str, msg: dict) -> None:
        key = (ns, msg.get("id"))
        current = self.functions.get(key)
        if current is not None and current.owner == owner:
            del self.functions[key]
            self._drop_function(current)
            self.broadcast_routes([["-", key[0], key[1], *current.target]])
            self.functions_changed = True

    # ---- HTTP-invoked functions (protocol.md §7) ----------------------------------------

    def _to_http(self, f: Function, msg: dict) -> None:
        """Hand an HTTP-invoked registration to the process that serves it (which checks
        its URL and secrets, and answers its worker if it refuses them)."""
        body = {**msg, "type": "registerfunction", "namespace": f.ns, "owner_node": f.owner[0]}
        self.send(f.route[0], frames.down(f.route[1]), wire.dumps(body))

    def _drop_function(self, f: Function) -> None:
        """``f`` is going away or being replaced: its HTTP server forgets it."""
        if f.route is not None:
            self.send(f.route[0], frames.down(f.route[1]),
                      wire.dumps({"type": "unregisterfunction", "id": f.id}))

    def _no_http_module(self, owner: Owner, ns: str, fid: str) -> None:
        log.warning("HTTP-invoked function %s (namespace %s) not registered: HTTP functions module "
                  "not loaded (add iii-http-functions to the config's workers)", fid, ns)
        self.to_conn(owner, {"type": "error", "function_id": fid, "namespace": ns, "error": {
            "code": errors.MODULE_UNAVAILABLE,
            "message": "HTTP functions module not loaded: the engine's config does not enable "
                       "iii-http-functions"}})

    def register_trigger(self, owner: Owner | None, ns: str, msg: dict) -> Binding | None:
        bid, ttype, fid = msg.get("id"), msg.get("trigger_type"), msg.get("function_id")
        if blank(msg.get("namespace")) or blank(msg.get("trigger_namespace")):
            self._binding_error(owner, msg, errors.INVALID_NAMESPACE, "namespace must not be blank")
            return None
        if not all(isinstance(v, str) and v for v in (bid, ttype, fid)):
            return None
        old = self.bindings.get(bid)
        if old is not None and old.owner != owner and (old.owner is None or self.alive(old.owner)):
            # A binding belongs to the connection that made it (or to the engine): nobody
            # else may replace it, or the next event would go to them.
            self._binding_error(owner, msg, errors.TRIGGER_REGISTRATION_FAILED,
                                f"trigger id {bid} belongs to another worker")
            return None
        if old is not None:
            self._unbind(old)
        binding = Binding(bid, ttype, fid, msg.get("config"), msg.get("metadata"),
                          msg.get("namespace") or "default", msg.get("trigger_namespace"), ns, owner)
        self.bindings[bid] = binding
        self._place(binding)
        if binding.provider is None:
            self.on_parked(binding)
        return binding

    def unregister_trigger(self, owner: Owner | None, ns: str, msg: dict) -> bool:
        """Remove a binding of ``owner``'s: a connection's own, or (owner None, through
        ``engine::unregister_trigger``) a durable one; never another worker's."""
        binding = self.bindings.get(msg.get("id"))
        if binding is None or binding.owner != owner:
            return False
        self._unbind(binding)
        return True

    def register_trigger_type(self, owner: Owner, ns: str, msg: dict) -> None:
        tid = msg.get("id")
        tns = msg.get("namespace") or ns
        if not isinstance(tid, str) or not tid or blank(msg.get("namespace")):
            return
        if owner[1] is not None and reserved_ids.trigger_type(tid):
            log.warning("refused trigger type %r from worker %s: built-in trigger types belong "
                        "to the engine", tid, owner[1])
            return
        key = (tns, tid)
        current = self.trigger_types.get(key)
        if current is not None and self._replica_of(current.provider, owner):
            if owner != current.provider and owner not in current.replicas:
                current.replicas.append(owner)
            for binding in self.bindings.values():
                if binding.provider == key:
                    self._deliver(binding, [owner])  # a new or restarted replica learns them all
            return
        self.trigger_types[key] = TriggerType(tns, tid, owner, msg)
        for binding in list(self.bindings.values()):
            if binding.owner is not None and not self.alive(binding.owner):
                del self.bindings[binding.id]
            elif binding.provider == key:
                self._deliver(binding)  # a restarted provider learns its bindings again
            elif binding.provider is None or (binding.provider == ("default", tid) and key[0] != "default"):
                if self._resolve(binding) == key:
                    self._withdraw(binding)
                    self._place(binding)

    def unregister_trigger_type(self, owner: Owner, ns: str, msg: dict) -> None:
        key = (msg.get("namespace") or ns, msg.get("id"))
        current = self.trigger_types.get(key)
        if current is not None and owner in current.owners():
            self._provider_gone(key, owner)

    def _replica_of(self, provider: Owner, owner: Owner) -> bool:
        """Whether ``owner`` is another process of ``provider``'s broker (both brokers of one
        worker name), so that both serve the type instead of one replacing the other."""
        if provider[1] is not None or owner[1] is not None:
            return False
        a, b = self.workers.get(provider), self.workers.get(owner)
        return a is not None and b is not None and a.name == b.name

    def _provider_gone(self, key: Key, owner: Owner) -> None:
        """``owner`` no longer serves ``key``: a replica takes over, or its bindings park."""
        current = self.trigger_types[key]
        if owner in current.replicas:
            current.replicas.remove(owner)
        elif current.replicas:
            current.provider = current.replicas.pop(0)
        else:
            del self.trigger_types[key]
            self._rehome_from(key)

    def trigger_result(self, owner: Owner, ns: str, msg: dict) -> dict | None:
        """A provider's answer; failures park the binding and reach the binder (§6.1.6)."""
        binding = self.bindings.get(msg.get("id"))
        if binding is None or binding.provider is None:
            return None
        provider = self.trigger_types.get(binding.provider)
        if provider is None or owner not in provider.owners() or not msg.get("error"):
            return None
        binding.provider = None
        if binding.owner is not None:
            self.to_conn(binding.owner, {"type": "triggerregistrationresult", "id": binding.id,
                                         "trigger_type": binding.trigger_type,
                                         "function_id": binding.function_id, "error": msg["error"]})
        return msg["error"]

    # ---- binding placement --------------------------------------------------------------

    def _resolve(self, binding: Binding) -> Key | None:
        if binding.trigger_ns is not None:
            key = (binding.trigger_ns, binding.trigger_type)
            return key if key in self.trigger_types else None
        for key in ((binding.home_ns, binding.trigger_type), ("default", binding.trigger_type)):
            if key in self.trigger_types:
                return key
        return None

    def _place(self, binding: Binding) -> None:
        binding.provider = self._resolve(binding)
        if binding.provider is not None:
            self._deliver(binding)

    def _deliver(self, binding: Binding, to: list[Owner] | None = None) -> None:
        provider = self.trigger_types[binding.provider]
        msg: dict[str, Any] = {"type": "registertrigger", "id": binding.id, "trigger_type": binding.trigger_type,
                               "function_id": binding.function_id, "config": binding.config}
        if binding.metadata is not None:
            msg["metadata"] = binding.metadata
        if binding.target_ns != "default":
            msg["namespace"] = binding.target_ns
        if binding.provider[0] != "default":
            msg["trigger_namespace"] = binding.provider[0]
        for owner in to or provider.owners():
            self.to_conn(owner, msg)

    def _withdraw(self, binding: Binding) -> None:
        if binding.provider is not None and binding.provider in self.trigger_types:
            provider = self.trigger_types[binding.provider]
            for owner in provider.owners():
                self.to_conn(owner, {"type": "unregistertrigger", "id": binding.id,
                                     "trigger_type": binding.trigger_type})
        binding.provider = None

    def _unbind(self, binding: Binding) -> None:
        self._withdraw(binding)
        self.bindings.pop(binding.id, None)

    def _rehome_from(self, key: Key) -> None:
        for binding in self.bindings.values():
            if binding.provider == key:
                self._place(binding)

    def _binding_error(self, owner: Owner | None, msg: dict, code: str, message: str) -> None:
        if owner is not None:
            self.to_conn(owner, {"type": "triggerregistrationresult", "id": msg.get("id"),
                                 "trigger_type": msg.get("trigger_type"), "function_id": msg.get("function_id"),
                                 "error": {"code": code, "message": message}})

    # ---- engine trigger types -----------------------------------------------------------

    def fire_engine(self, type_id: str, payload: Any) -> None:
        """Fire a router-provided trigger type to every binding placed on it."""
        key = ("default", type_id)
        for binding in list(self.bindings.values()):
            if binding.provider == key:
                self.fire(binding, payload)


_UP_HANDLERS = {
    "registerfunction": "register_function",
    "unregisterfunction": "unregister_function",
    "registertrigger": "register_trigger",
    "unregistertrigger": "unregister_trigger",
    "registertriggertype": "register_trigger_type",
    "unregistertriggertype": "unregister_trigger_type",
    "triggerregistrationresult": "trigger_result",
    "reattach": "reattach",
}
"""UP message type -> Registry method taking ``(owner, namespace, message)``."""
