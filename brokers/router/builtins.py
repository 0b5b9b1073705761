"""The ``engine::*`` introspection functions (workers-a §5), pure over a Registry.

Each function takes the call's ``data`` and returns the JSON result or raises
``EngineError`` with ``NOT_FOUND`` / ``INVALID_ARGUMENTS`` / ``deserialization_error``.
"""
from __future__ import annotations

from typing import Any

import orjson

from brokers.router.core import Binding, Function, Registry, TriggerType
from brokers.kit.errors import INVALID_ARGUMENTS, NOT_FOUND, EngineError
from brokers.kit.inputs import ARR, BOOL, STR, Field, Input

ENGINE_VERSION = "0.1.0"


def _opt(name: str, kind=STR, **kw: Any) -> Field:
    return Field(name, kind, required=False, **kw)


_SEARCH, _PREFIX, _WORKER, _NS = _opt("search"), _opt("prefix"), _opt("worker"), _opt("namespace")
_INTERNAL = _opt("include_internal", BOOL, default=False)
INPUTS = {
    "engine::functions::list": Input("engine::functions::list", "FunctionsListInput", _SEARCH, _PREFIX,
                                     _WORKER, _opt("workers", ARR, items=STR), _INTERNAL),
    "engine::functions::info": Input("engine::functions::info", "FunctionsInfoInput",
                                     _opt("function_id"), _opt("function_ids", ARR, items=STR), _NS),
    "engine::workers::list": Input("engine::workers::list", "WorkersListInput", _SEARCH,
                                   _opt("runtime"), _opt("status")),
    "engine::workers::info": Input("engine::workers::info", "WorkersInfoInput", _opt("name"), _NS),
    "engine::triggers::list": Input("engine::triggers::list", "TriggersListInput", _SEARCH, _PREFIX,
                                    _WORKER, _INTERNAL),
    "engine::triggers::info": Input("engine::triggers::info", "TriggersInfoInput", _opt("id"), _NS),
    "engine::registered-triggers::list": Input(
        "engine::registered-triggers::list", "RegisteredTriggersListInput", _SEARCH,
        _opt("trigger_type"), _opt("function_id"), _WORKER, _INTERNAL),
    "engine::registered-triggers::info": Input(
        "engine::registered-triggers::info", "RegisteredTriggersInfoInput", _opt("id")),
}
"""The input of each ``engine::*`` introspection function, declared once (workers-a §5)."""


def _args(function_id: str, data: Any) -> dict:
    return INPUTS[function_id].parse(data)


def worker_name(reg: Registry, owner, fallback_id: str) -> str | None:
    worker = reg.workers.get(owner) if owner else None
    if worker is not None and worker.name:
        return worker.name
    return fallback_id.split("::", 1)[0] if "::" in fallback_id else None


def _summary(reg: Registry, f: Function) -> dict:
    row: dict[str, Any] = {"function_id": f.id, "namespace": f.ns, "worker_name": worker_name(reg, f.owner, f.id)}
    for key in ("description", "metadata"):
        if f.message.get(key) is not None:
            row[key] = f.message[key]
    return row


def _internal(f: Function) -> bool:
    meta = f.message.get("metadata")
    hidden_engine = f.id.startswith("engine::") and not f.id.startswith("engine::queue::")
    return hidden_engine or (isinstance(meta, dict) and meta.get("internal") is True)


def functions_list(reg: Registry, data: Any) -> dict:
    args = _args("engine::functions::list", data)
    search = (args.get("search") or "").lower()
    prefix = args.get("prefix") or ""
    workers = set(args.get("workers") or []) | ({args["worker"]} if args.get("worker") else set())
    rows = []
    for f in reg.functions.values():
        row = _summary(reg, f)
        if (not args.get("include_internal") and _internal(f)) or not f.id.startswith(prefix):
            continue
        if workers and row["worker_name"] not in workers:
            continue
        if search:
            desc = str(f.message.get("description") or "").lower()
            fid = f.id.lower()
            if fid.startswith(search) or search in fid.split("::"):
                rank = 0
            elif search in fid:
                rank = 1
            elif search in desc:
                rank = 2
            else:
                continue
            rows.append(((rank, f.id, f.ns), row))
        else:
            rows.append(((0, f.id, f.ns), row))
    return {"functions": [row for _, row in sorted(rows, key=lambda r: r[0])]}


def _detail(reg: Registry, f: Function) -> dict:
    out = _summary(reg, f)
    if f.message.get("request_format") is not None:
        out["request_schema"] = f.message["request_format"]
    if f.message.get("response_format") is not None:
        out["response_schema"] = f.message["response_format"]
    out["registered_triggers"] = [{"id": b.id, "trigger_type": b.trigger_type, "config": b.config}
                                  for b in reg.bindings.values() if b.function_id == f.id and b.target_ns == f.ns]
    return out


def _find_function(reg: Registry, fid: str, ns: str | None) -> Function:
    if ns is not None:
        f = reg.functions.get((ns, fid))
        if f is None:
            raise EngineError(NOT_FOUND, f"Function '{fid}' is not registered.")
        return f
    if ("default", fid) in reg.functions:
        return reg.functions[("default", fid)]
    found = [f for (n, i), f in reg.functions.items() if i == fid]
    if len(found) == 1:
        return found[0]
    if not found:
        raise EngineError(NOT_FOUND, f"Function '{fid}' is not registered.")
    names = ", ".join(sorted(f.ns for f in found))
    raise EngineError(NOT_FOUND, f"Function '{fid}' is ambiguous: it is registered in namespace(s): "
                                 f"{names}. Pass `namespace` to select one.")


def functions_info(reg: Registry, data: Any) -> dict:
    args = _args("engine::functions::info", data)
    single, many = args.get("function_id"), args.get("function_ids")
    if (single is None) == (many is None):
        raise EngineError(INVALID_ARGUMENTS, "Pass exactly one of function_id or function_ids.")
    if single is not None:
        return _detail(reg, _find_function(reg, single, args.get("namespace")))
    if not isinstance(many, list) or not many or len(many) > 32:
        raise EngineError(INVALID_ARGUMENTS, "function_ids must hold 1 to 32 ids.")
    out = []
    for fid in dict.fromkeys(many):
        try:
            out.append(_detail(reg, _find_function(reg, fid, args.get("namespace"))))
        except EngineError:
            out.append({"function_id": fid, "error": "not_found"})
    return {"functions": out}


def _worker_row(reg: Registry, owner, w) -> dict:
    meta = w.meta
    return {"name": w.name, "description": meta.get("description"),
            "version": ENGINE_VERSION if owner[1] is None else meta.get("version"),
            "id": owner[1] or w.name, "namespace": w.ns, "runtime": meta.get("runtime"),
            "os": meta.get("os"), "status": "available" if owner[1] is None else "connected",
            "function_count": sum(1 for f in reg.functions.values() if f.owner == owner),
            "connected_at_ms": w.connected_at_ms, "active_invocations": 0,
            "isolation": "process" if owner[1] is None else meta.get("isolation"), "ip_address": w.ip}


def _listed_workers(reg: Registry):
    for owner, w in reg.workers.items():
        if owner[1] is None or w.meta.get("pid") is not None:
            yield owner, w


def workers_list(reg: Registry, data: Any) -> dict:
    args = _args("engine::workers::list", data)
    rows = [_worker_row(reg, o, w) for o, w in _listed_workers(reg)]
    if args.get("search"):
        rows = [r for r in rows if args["search"].lower() in (r["name"] or "").lower()]
    for key in ("runtime", "status"):
        if args.get(key):
            rows = [r for r in rows if r[key] == args[key]]
    return {"workers": sorted(rows, key=lambda r: (r["name"] or r["id"] or "", r["id"] or ""))}


def workers_info(reg: Registry, data: Any) -> dict:
    args = _args("engine::workers::info", data)
    name, ns = args.get("name"), args.get("namespace")
    found = [(o, w) for o, w in _listed_workers(reg) if w.name == name and (ns is None or w.ns == ns)]
    if not found:
        raise EngineError(NOT_FOUND, f"Worker '{name}' is not connected.")
    if len(found) > 1 and len({w.ns for _, w in found}) > 1:
        names = ", ".join(sorted({w.ns for _, w in found}))
        raise EngineError(NOT_FOUND, f"Worker '{name}' is ambiguous: it is connected in namespace(s): {names}.")
    owner, w = found[0]
    row = _worker_row(reg, owner, w)
    row.update(pid=w.meta.get("pid"), internal=owner[1] is None)
    return {"worker": row,
            "functions": sorted((_summary(reg, f) for f in reg.functions.values() if f.owner == owner),
                                key=lambda r: r["function_id"]),
            "trigger_types": [_tt_row(reg, t) for t in reg.trigger_types.values() if t.provider == owner],
            "registered_triggers": [_binding_row(reg, b) for b in reg.bindings.values() if b.owner == owner]}


def _tt_row(reg: Registry, t: TriggerType) -> dict:
    w = reg.workers.get(t.provider)
    # Built-in types are provided by brokers, which are named; a worker's type without a
    # worker name is shown under its id's first segment.
    name = (w.name if w and w.name else None) or t.id.split("::", 1)[0]
    return {"id": t.id, "namespace": t.ns, "worker_name": name, "description": t.message.get("description", "")}


def triggers_list(reg: Registry, data: Any) -> dict:
    args = _args("engine::triggers::list", data)
    rows = []
    for t in reg.trigger_types.values():
        row = _tt_row(reg, t)
        if not args.get("include_internal") and t.id.startswith("engine::"):
            continue
        if args.get("prefix") and not t.id.startswith(args["prefix"]):
            continue
        if args.get("worker") and row["worker_name"] != args["worker"]:
            continue
        needle = (args.get("search") or "").lower()
        if needle and needle not in t.id.lower() and needle not in row["description"].lower():
            continue
        rows.append(row)
    return {"triggers": sorted(rows, key=lambda r: (r["id"], r["namespace"]))}


def triggers_info(reg: Registry, data: Any) -> dict:
    args = _args("engine::triggers::info", data)
    ns = args.get("namespace") or "default"
    t = reg.trigger_types.get((ns, args.get("id")))
    if t is None:
        raise EngineError(NOT_FOUND, f"Trigger type '{args.get('id')}' is not registered in namespace '{ns}'.")
    row = _tt_row(reg, t)
    for src, dst in (("trigger_request_format", "configuration_schema"), ("call_request_format", "request_schema")):
        if t.message.get(src) is not None:
            row[dst] = t.message[src]
    row["instance_count"] = sum(1 for b in reg.bindings.values() if b.provider == (t.ns, t.id))
    return row


def _binding_row(reg: Registry, b: Binding) -> dict:
    summary = orjson.dumps(b.config).decode()
    if len(summary) > 80:
        summary = summary[:80] + "…"
    f = reg.functions.get((b.target_ns, b.function_id))
    name = worker_name(reg, b.owner, b.function_id) if b.owner else (worker_name(reg, f.owner, f.id) if f else None)
    return {"id": b.id, "trigger_type": b.trigger_type, "function_id": b.function_id,
            "worker_name": name, "config": b.config, "config_summary": summary}


def registered_list(reg: Registry, data: Any) -> dict:
    args = _args("engine::registered-triggers::list", data)
    rows = []
    for b in reg.bindings.values():
        row = _binding_row(reg, b)
        if not args.get("include_internal") and b.function_id.startswith("engine::"):
            continue
        if any(args.get(k) and row[k] != args[k] for k in ("trigger_type", "function_id")):
            continue
        if args.get("worker") and row["worker_name"] != args["worker"]:
            continue
        if args.get("search") and args["search"] not in f"{b.id} {b.trigger_type} {b.function_id}":
            continue
        rows.append(row)
    return {"registered_triggers": sorted(rows, key=lambda r: r["id"])}


def registered_info(reg: Registry, data: Any) -> dict:
    args = _args("engine::registered-triggers::info", data)
    b = reg.bindings.get(args.get("id"))
    if b is None:
        raise EngineError(NOT_FOUND, f"Registered trigger '{args.get('id')}' was not found.")
    row = _binding_row(reg, b)
    row.pop("config_summary")
    if b.metadata is not None:
        row["metadata"] = b.metadata
    t = reg.trigger_types.get(b.provider) if b.provider else None
    row["trigger"] = triggers_info(reg, {"id": t.id, "namespace": t.ns}) if t else None
    f = reg.functions.get((b.target_ns, b.function_id))
    row["function"] = _detail(reg, f) if f else None
    return row


def function_summaries(reg: Registry) -> list[dict]:
    """Payload of ``engine::functions-available``."""
    return functions_list(reg, {"include_internal": True})["functions"]


FUNCTIONS = {
    "engine::functions::list": (functions_list, "List registered functions"),
    "engine::functions::info": (functions_info, "Describe one or more functions"),
    "engine::workers::list": (workers_list, "List connected workers"),
    "engine::workers::info": (workers_info, "Describe one worker"),
    "engine::triggers::list": (triggers_list, "List trigger types"),
    "engine::triggers::info": (triggers_info, "Describe one trigger type"),
    "engine::registered-triggers::list": (registered_list, "List trigger bindings"),
    "engine::registered-triggers::info": (registered_info, "Describe one trigger binding"),
}
