"""The gateway core's state: its worker connections, its route copy, its registration fence.

``GatewayCore`` (core.py) is this state plus two halves that share it: the call relay
(``calls.CallRelay``) and the registrations with their ordering fence
(``registrations.Registrations``). ``Outbox`` is every effect the core can have; the
shell implements it, unit tests record it.

The send budget (issue 11): ``Conn.queued`` is what waits to be sent to a worker, known
without a call into the shell: the relay adds each call it delivers, and the shell sets it
to its transport's buffer size whenever it writes to the socket and when the buffer drains.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from brokers.kit.pending import Pending
from brokers.kit.routes import RouteTable
from brokers.kit.telemetry import Recorder

ENQUEUE_FN = "engine::queue::enqueue"
REGISTER_FN = "engine::workers::register"
SMALL_PEER_LIMIT = 1024 * 1024
SEND_BUDGET = 8 * 1024 * 1024
"""Default ``send_budget_bytes`` (config.py)."""


class Outbox(Protocol):
    def ws(self, conn: str, data: bytes) -> None: ...
    def send(self, node: str, header: dict, body: bytes = b"") -> None: ...
    def close(self, conn: str) -> None: ...
    def arm_grace(self, conn: str) -> None: ...


class Conn:
    """One worker connection and what it registered (kept for router resync)."""

    __slots__ = ("id", "token", "ip", "ns", "buffer", "held", "meta", "delivered", "outgoing", "small_only",
                 "queued", "refused", "dropped", "spans", "rbac")

    def __init__(self, conn_id: str, token: str, ip: str | None) -> None:
        self.id = conn_id
        self.token = token
        self.ip = ip
        self.ns: str | None = None
        self.buffer: list[tuple[dict, bytes]] = []
        self.held: dict[tuple[str, str], bytes] = {}
        self.meta: bytes | None = None
        self.delivered: dict[str, tuple[str | None, str | None, str, str | None]] = {}
        """Calls in flight on this worker, by the id it was given: (reply node, reply
        connection, function id, the caller's own id when it differs); a reply node of None
        once the caller's node restarted. The id is unique on this worker: a second call
        with an id already in flight gets a fresh one (calls.py). A void call leaves no
        entry: nobody waits for its answer, and its id is a fresh uuid4 of the engine."""
        self.outgoing: Pending[str] = Pending()
        """Calls this worker made that wait on another node: inv_id -> (node, function id)."""
        self.small_only = False
        """A Python SDK older than 0.25 closes its socket on messages over 1 MiB (§10.4)."""
        self.queued = 0
        """Bytes waiting to be sent to this worker (see the module docstring)."""
        self.refused = 0
        self.dropped = 0
        """Sync calls refused and void calls dropped since it was last under its budget (the
        shell logs them and resets both once it drains)."""
        self.spans: dict[str, list] = {}
        """The engine's open span records of this worker's sync calls, by invocation id
        (``brokers.kit.telemetry``); closed when the answer is relayed to it."""
        self.rbac: Any = None
        """Its ``rbac.Session`` on a listener with ``rbac`` or a middleware, else None."""


class GatewayState:
    """What the two halves of the core share (set up by ``GatewayCore.__init__``)."""

    node: str
    epoch: str
    out: Outbox
    routes: RouteTable
    conns: dict[str, Conn]
    up_sent: int
    """Sequence number of the last UP sent to the router."""
    up_acked: int
    """The highest UP sequence number the router has applied (ACK)."""
    claims: dict[tuple[str, str], tuple[int, tuple[str, str]]]
    """Local claims whose UP the router has not acknowledged: (ns, function id) ->
    (sequence number of that UP, route). A full snapshot from the router cannot hold
    them yet, so they are applied again after one (``Registrations.reclaim``)."""
    local_functions: dict[str, Callable[[Any], Any]]
    """Built-in functions this process answers itself, ``data -> result`` (the shell's:
    ``engine::channels::create`` makes the channel here, its home)."""
    in_place: dict[str, tuple[str, Callable[..., None]]]
    """Functions of another process this one serves itself while their route names that
    process: function id -> (that node, ``handler(data, trace, done)``). The handler
    answers ``done(result, None)`` or ``done(None, EngineError)``, now or later, or raises
    ``NotServedHere`` to send the call on (or an ``EngineError``). The shell's: ``state::*``
    on the state store (brokers/state/inplace.py)."""
    http_functions_node: str | None = None
    """The process serving HTTP-invoked functions, if the engine has one (the shell's)."""
    telemetry: Recorder
    """This process's engine spans and call counters (the shell's ``Process.telemetry``)."""
    rules: Any = None
    """The listener's compiled ``rbac`` block (``rbac.Rules``), or None."""
    middleware: str | None = None
    """The listener's ``middleware_function_id``."""
    hook_timeout_s: float = 30.0
    engine_calls: Pending
    """The gateway's own calls (auth, hooks, listings): inv_id -> (node, future)."""
    meta_cache: dict
    """(ns, function id) -> (route, metadata), for ``expose_functions`` metadata matchers."""
    remote_peers: dict[str, str]
    """Other hosts' gateways this one calls directly (``"<host>/<node>"`` -> endpoint; the
    cluster's PEERS frame), empty on a host alone."""
    remote_as: str | None = None
    """This gateway's name toward them (``<host>/<node>``), from the same frame."""
    remote_addr: str | None = None
    """Where it receives their frames (the shell's TCP endpoint), sent along as ``ra``."""
    send_budget: int = SEND_BUDGET
    """Calls to a connection whose ``queued`` is over this are refused (the shell sets it
    from the config)."""
