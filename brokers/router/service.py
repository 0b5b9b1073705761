"""The router process: the registry's I/O shell and the ``engine::*`` functions.

It reads UP/CONN/META/HELLO frames from gateways and brokers, applies them to the
``Registry`` and publishes route changes. It is not on the call path: calls go straight
from a gateway to the owner. On start it says HELLO to every peer, and each answers by
replaying what it holds, so a restarted router rebuilds the registry from the live
processes; after a short settling delay it sends every peer a full route snapshot.

A binding the user makes for a trigger type nobody provides is parked; this shell logs
``notices.ParkedNotices``' WARNING saying why (and stays quiet for the replays above).
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from brokers.router import builtins, durable, notices
from brokers.router.core import Binding, Registry
from brokers.kit import frames, wire
from brokers.kit.broker import Broker, BusFactory, Call, run
from brokers.kit.errors import INVALID_ARGUMENTS, TRIGGER_REGISTRATION_FAILED, UNREGISTER_FAILED, EngineError
from brokers.kit.inputs import ANY, STR, Field, Input
from brokers.kit.units import RunContext
from brokers.supervisor.units import discover, node_serving

log = logging.getLogger(__name__)

SETTLE_S = 0.3
FUNCTIONS_AVAILABLE_DEBOUNCE_S = 0.1
PROVIDER_ACK_WAIT_S = 10.0

ENGINE_TRIGGER_TYPES = {
    "engine::functions-available": "Triggered when functions are registered/unregistered",
    "engine::workers-available": "Triggered when workers connect/disconnect",
}


REGISTER_TRIGGER = Input("engine::register_trigger", "RegisterTriggerInput",
                         Field("trigger_type", STR), Field("function_id", STR),
                         Field("config", ANY, required=False), Field("metadata", ANY, required=False),
                         Field("trigger_namespace", STR, required=False))
UNREGISTER_TRIGGER = Input("engine::unregister_trigger", "UnregisterTriggerInput", Field("id", STR))


def now_ms() -> int:
    return int(time.time() * 1000)


class Router(Broker):
    worker_name = "iii-engine-functions"

    def __init__(self, ctx: RunContext, *, bus: BusFactory | None = None) -> None:
        super().__init__(ctx, bus=bus)
        self.registry = Registry(self.name, ctx.peers, self.send, self._fire,
                                 http_node=node_serving("iii-http-functions", ctx.peers))
        self.registry.on_route_ops = self.routes.apply
        self._acks: dict[str, asyncio.Future] = {}
        self._functions_timer: asyncio.TimerHandle | None = None
        self.settled = False
        self.durable = durable.DurableBindings(durable.store_path(ctx.data_dir))
        have, enabled = notices.worker_sets(discover().values(), ctx.engine.workers)
        self.notices = notices.ParkedNotices(have, enabled)
        self._notices_timer: asyncio.TimerHandle | None = None
        self._kinds.update({frames.UP: self._on_up, frames.CONN: self._on_conn, frames.META: self._on_meta,
                            frames.INV: self._on_inv_or_pass})

    async def setup(self) -> None:
        # Before announce(): the stored bindings are parked until their trigger types are
        # registered again (ours in announce(), the others' in their HELLO replays).
        for rec in self.durable.load():
            if self.registry.register_trigger(None, "default", dict(rec)) is None:
                log.warning("durable trigger binding %s was not accepted by the registry", rec["id"])
        # Only now: a stored binding waits for its provider's replay and was reported when
        # it was made; from here on a parked binding is a user's new one.
        self.registry.on_parked = self._on_parked
        for fid, (fn, desc) in builtins.FUNCTIONS.items():
            self.function(fid, lambda call, fn=fn: fn(self.registry, call.data), description=desc,
                          input=builtins.INPUTS[fid])
        self.function(REGISTER_TRIGGER.owner, self._register_trigger, input=REGISTER_TRIGGER,
                      description="Bind a durable trigger")
        self.function(UNREGISTER_TRIGGER.owner, self._unregister_trigger, input=UNREGISTER_TRIGGER,
                      description="Remove a trigger")
        self.function("engine::workers::register", self._workers_register, description="Worker metadata")

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(SETTLE_S, self._send_snapshots)
        await super().serve()

    def announce(self) -> None:
        """The router registers its own functions in-process and greets every peer."""
        me = (self.name, None)
        self.registry.hello(self.name, self.epoch, self.worker_name, now_ms(), snapshot=False)
        for spec in self.functions.values():
            self.registry.register_function(me, "default", spec.message)
        for tid, desc in ENGINE_TRIGGER_TYPES.items():
            self.registry.register_trigger_type(me, "default", {"id": tid, "description": desc})
        for peer in self.registry.peers:
            self.send(peer, frames.hello(self.epoch))
        self._touch_functions()

    def _send_snapshots(self) -> None:
        self.settled = True
        snapshot = self.registry.snapshot()
        for peer in self.registry.peers:
            self.send(peer, frames.routes(snapshot))

    # ---- frames from other processes ---------------------------------------------------

    def _on_hello(self, sender: str, header: dict, body: bytes) -> None:
        # A process that has just started holds no routes a partial snapshot could blank,
        # so it gets one at once, even while a restarted router still collects replays.
        self.registry.hello(sender, header.get("epoch", ""), header.get("worker"), now_ms(),
                            self.settled or bool(header.get("fresh")))
        if not header.get("fresh"):  # an answer to our HELLO: its replay follows
            self.notices.replaying(sender, asyncio.get_running_loop().time())

    def _on_conn(self, sender: str, header: dict, body: bytes) -> None:
        owner = (sender, header["c"])
        if header.get("ev") == "open":
            self.registry.connect(owner, header.get("token"), header.get("ip"), now_ms())
        else:
            self.registry.disconnect(owner)
        self._touch_functions()

    def _on_meta(self, sender: str, header: dict, body: bytes) -> None:
        owner = (sender, header["c"])
        try:
            data = wire.loads(body)
        except ValueError:
            data = None
        ok, ns = self.registry.register_worker(owner, data, header.get("fixed"))
        self.send(sender, frames.metaok(header["c"], ok, ns, header.get("id")))

    def _on_inv_or_pass(self, sender: str, header: dict, body: bytes) -> None:
        """A gateway's call that must not overtake its registrations (frames.ACK): the
        route changes they caused are already queued to ``via``, so this call follows."""
        via = header.pop("via", None)
        if via is None:
            self._on_inv(sender, header, body)
        else:
            self.send(via, header, body)

    def _on_up(self, sender: str, header: dict, body: bytes) -> None:
        try:
            self._apply_up(sender, header, body)
        finally:
            if "s" in header:
                self.send(sender, frames.ack(header["s"]))

    def _apply_up(self, sender: str, header: dict, body: bytes) -> None:
        if not body and header.get("c") is None:  # a gateway's ACK request ends its replay
            self.notices.replayed(sender)
            return
        try:
            msg = wire.loads(body)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        owner = (sender, header.get("c"))
        error = None
        if msg.get("type") == "triggerregistrationresult":
            error = self.registry.trigger_result(owner, header.get("ns") or "default", msg)
            ack = self._acks.pop(str(msg.get("id")), None)
            if ack is not None and not ack.done():
                ack.set_result(error if error is not None else msg.get("error"))
        else:
            self.registry.up(owner, header.get("ns") or "default", msg)
        self._touch_functions()

    # ---- parked bindings ---------------------------------------------------------------

    def _on_parked(self, binding: Binding) -> None:
        source = binding.owner[0] if binding.owner is not None else None
        for line in self.notices.parked(binding, source, self.registry, asyncio.get_running_loop().time()):
            log.warning("%s", line)
        self._arm_notices()

    def _arm_notices(self) -> None:
        at = self.notices.next_due()
        if at is None or (self._notices_timer is not None and self._notices_timer.when() <= at):
            return
        if self._notices_timer is not None:
            self._notices_timer.cancel()
        # The notices run on the loop's clock, so that call_at and when() agree.
        self._notices_timer = asyncio.get_running_loop().call_at(at, self._notices_due)

    def _notices_due(self) -> None:
        self._notices_timer = None
        for line in self.notices.due(asyncio.get_running_loop().time(), self.registry):
            log.warning("%s", line)
        self._arm_notices()

    # ---- engine trigger types ----------------------------------------------------------

    def _fire(self, binding: Binding, payload: Any) -> None:
        try:
            self.call_void(binding.function_id, payload, namespace=binding.target_ns, metadata=binding.metadata)
        except EngineError as exc:
            log.debug("engine trigger %s -> %s: %s", binding.trigger_type, binding.function_id, exc.message)

    def _touch_functions(self) -> None:
        if self.registry.functions_changed and self._functions_timer is None:
            loop = asyncio.get_running_loop()
            self._functions_timer = loop.call_later(FUNCTIONS_AVAILABLE_DEBOUNCE_S, self._functions_available)

    def _functions_available(self) -> None:
        self._functions_timer = None
        self.registry.functions_changed = False
        self.registry.fire_engine("engine::functions-available",
                                  {"event": "functions_changed", "functions": builtins.function_summaries(self.registry)})

    # ---- durable bindings (§6.4) -------------------------------------------------------

    async def _register_trigger(self, call: Call) -> dict:
        data = REGISTER_TRIGGER.parse(call.data)
        bid = str(uuid.uuid4())
        msg = {"id": bid, **data}
        fut = asyncio.get_running_loop().create_future()
        self._acks[bid] = fut
        binding = self.registry.register_trigger(None, "default", msg)
        if binding is None:
            self._acks.pop(bid, None)
            raise EngineError(INVALID_ARGUMENTS, "invalid trigger registration")
        provider = self.registry.trigger_types.get(binding.provider) if binding.provider else None
        if provider is not None and provider.provider != (self.name, None):
            try:
                error = await asyncio.wait_for(fut, PROVIDER_ACK_WAIT_S)
            except asyncio.TimeoutError:
                error = None  # no answer in time counts as accepted (§6.4)
            if error:
                self.registry.unregister_trigger(None, "default", {"id": bid})
                message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
                raise EngineError(TRIGGER_REGISTRATION_FAILED, message)
        self._acks.pop(bid, None)
        # On disk before the answer; unless an unregister already took it while we waited.
        if self.registry.bindings.get(bid) is binding:
            try:
                self.durable.add(durable.record(bid, msg))
            except OSError as exc:
                log.error("cannot store durable trigger binding %s in %s: %s", bid, self.durable.path, exc)
                self.registry.unregister_trigger(None, "default", {"id": bid})
                raise EngineError(TRIGGER_REGISTRATION_FAILED, f"binding could not be stored: {exc}") from None
        return {"id": bid}

    def _unregister_trigger(self, call: Call) -> dict:
        data = UNREGISTER_TRIGGER.parse(call.data)
        try:
            self.durable.remove(data["id"])  # off disk first: an unregister must not come back
        except OSError as exc:
            log.error("cannot remove durable trigger binding %s from %s: %s", data["id"], self.durable.path, exc)
            raise EngineError(UNREGISTER_FAILED, f"binding could not be removed: {exc}") from None
        return {"removed": self.registry.unregister_trigger(None, "default", {"id": data["id"]})}

    def _workers_register(self, call: Call) -> dict:
        # Gateways answer this for their own connections; reaching the router means the
        # caller is not a WebSocket worker, which has no metadata to register.
        return {"success": False}


def main(ctx: RunContext) -> None:
    """Entry point of the router process."""
    run(Router, ctx)
