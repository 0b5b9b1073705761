"""An RBAC listener next to the internal one (issue 18), with raw websockets clients."""
from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest
from websockets.sync.client import connect

from tests.harness import free_port
from tests.wsclient import RawClient

RBAC_PORT = free_port()
CONFIG = """
workers:
  - name: iii-worker-manager
    config: {port: {port}}
  - name: iii-worker-manager
    config:
      port: %d
      middleware_function_id: t::mw
      max_held_bytes: 262144
      rbac:
        auth_function_id: t::auth
        hook_timeout_ms: 1000
        on_function_registration_function_id: t::on-fn
        expose_functions:
          - match("pub::*")
          - match("engine::functions::*")
          - metadata: {public: true}
engine: {runtime_dir: "{runtime_dir}", data_dir: "{data_dir}"}
""" % RBAC_PORT


@pytest.fixture(scope="module")
def eng():
    from tests.harness import start_engine
    e = start_engine(config_text=CONFIG)
    yield e
    e.stop()


def serve(c: RawClient, handlers: dict, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            f = c.recv(timeout=0.2)
        except Exception:  # noqa: BLE001 - timeout
            continue
        if f.get("type") == "invokefunction" and f.get("invocation_id"):
            fn = handlers.get(f["function_id"])
            if fn is None:
                continue
            try:
                c.answer(f, fn(f.get("data")))
            except TimeoutError:
                pass  # never answered: a hook that times out
            except Exception as exc:  # noqa: BLE001
                c.send({"type": "invocationresult", "invocation_id": f["invocation_id"],
                        "function_id": f["function_id"], "error": {"code": "E", "message": str(exc)}})


@pytest.fixture(scope="module")
def server(eng):
    def auth(d):
        tok = d["headers"].get("x-token")
        if tok == "ok":
            return {"allowed_functions": ["priv::granted"], "context": {"user": "u1"}}
        if tok == "slow":
            time.sleep(1.5)
            return {"allowed_functions": ["priv::granted"], "context": {"user": "s"}}
        if tok == "prefix":
            return {"function_registration_prefix": "pfx", "context": {"user": "p"}}
        raise Exception("bad token")

    def mw(d):
        d["payload"]["_via_mw"] = d["context"]["user"]
        return {"through": d["function_id"], "payload": d["payload"]}

    def on_fn(d):
        if d["function_id"].startswith("deny::"):
            raise Exception("no")
        if d["function_id"].startswith("slow::"):
            raise TimeoutError
        return {}

    c = RawClient.worker(eng.url)
    handlers = {"t::auth": auth, "t::mw": mw, "t::on-fn": on_fn, "pub::echo": lambda d: d,
                "priv::secret": lambda d: d, "priv::granted": lambda d: d, "meta::pub": lambda d: d}
    for f in handlers:
        c.register_function(f, **({"metadata": {"public": True}} if f == "meta::pub" else {}))
    c.declare("rbac-server")
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(c, handlers, stop), daemon=True)
    t.start()
    time.sleep(0.5)
    yield c
    stop.set()
    t.join(2)
    c.close()


def rbac_client(token: str | None):
    headers = {"x-token": token} if token else {}
    ws = connect(f"ws://127.0.0.1:{RBAC_PORT}/", additional_headers=headers, open_timeout=5)
    return ws


def frames_until(ws, pred, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        f = json.loads(ws.recv(timeout=end - time.time()))
        if pred(f):
            return f
    raise TimeoutError


def call(ws, fid, data=None, void=False):
    inv = str(uuid.uuid4())
    msg = {"type": "invokefunction", "function_id": fid, "data": data if data is not None else {}}
    if void:
        msg["action"] = {"type": "void"}
    else:
        msg["invocation_id"] = inv
    ws.send(json.dumps(msg))
    return frames_until(ws, lambda f: f.get("type") == "invocationresult" and (void or f.get("invocation_id") == inv))


def test_denied_connection(server):
    with rbac_client("nope") as ws:
        f = json.loads(ws.recv(timeout=5))
        assert f["type"] == "error" and f["error"]["code"] == "AUTH_ERROR"
        with pytest.raises(Exception):
            ws.recv(timeout=5)


def test_denied_call_sync_and_void_and_granted(server):
    with rbac_client("ok") as ws:
        r = call(ws, "priv::secret")
        assert r["error"]["code"] == "FORBIDDEN" and "rbac.expose_functions" in r["error"]["message"]
        v = call(ws, "priv::secret", void=True)
        assert v["error"]["code"] == "FORBIDDEN" and v["invocation_id"]
        assert call(ws, "priv::granted", {"a": 1})["result"]["payload"]["a"] == 1


def test_middleware_changes_the_payload(server):
    with rbac_client("ok") as ws:
        r = call(ws, "pub::echo", {"x": 1})
        assert r["result"] == {"through": "pub::echo", "payload": {"x": 1, "_via_mw": "u1"}}
        assert call(ws, "meta::pub", {"y": 2})["result"]["through"] == "meta::pub"  # metadata matcher


def test_listing_hides_unexposed(server):
    with rbac_client("ok") as ws:
        r = call(ws, "engine::functions::list")
        assert "result" in r, r
        ids = {f["function_id"] for f in r["result"]["functions"]}
        assert {"pub::echo", "meta::pub", "priv::granted"} <= ids
        assert not ids & {"priv::secret", "t::auth"}
        r = call(ws, "engine::functions::info", {"function_id": "priv::secret"})
        assert r["error"]["code"] == "NOT_FOUND" and r["error"]["message"] == "Function 'priv::secret' is not registered."
    with RawClient.declared(server.url if hasattr(server, "url") else None) if False else rbac_internal(server) as c:
        ids = {f["function_id"] for f in c.call("engine::functions::list", {})["result"]["functions"]}
        assert "priv::secret" in ids  # the internal port is unchanged


class rbac_internal:
    def __init__(self, server):
        self.url = server._url if hasattr(server, "_url") else None

    def __enter__(self):
        self.c = RawClient.declared(ENG_URL[0], "internal-lister")
        return self.c

    def __exit__(self, *a):
        self.c.close()


ENG_URL: list = []


@pytest.fixture(autouse=True)
def _url(eng):
    ENG_URL[:] = [eng.url]


def registers(ws, fid):
    ws.send(json.dumps({"type": "registerfunction", "id": fid}))
    ws.send(json.dumps({"type": "invokefunction", "function_id": "engine::workers::register",
                        "data": {"runtime": "python", "pid": 1, "name": f"w-{uuid.uuid4().hex[:6]}"},
                        "action": {"type": "void"}}))


def test_registration_hooks_deny_fail_and_timeout(server):
    with rbac_client("ok") as ws:
        for fid in ("deny::a", "slow::b", "pub::allowed-reg"):
            ws.send(json.dumps({"type": "registerfunction", "id": fid}))
        registers(ws, "pub::allowed-reg")
        time.sleep(2.5)
        c = RawClient.declared(ENG_URL[0], "checker")
        try:
            ids = {f["function_id"] for f in c.call("engine::functions::list", {})["result"]["functions"]}
        finally:
            c.close()
        assert "pub::allowed-reg" in ids and "deny::a" not in ids and "slow::b" not in ids


def test_prefix_rewrite(server):
    with rbac_client("prefix") as ws:
        registers(ws, "echo")
        time.sleep(1.0)
        c = RawClient.declared(ENG_URL[0], "prefix-caller")
        box = {}

        def answer():
            f = frames_until(ws, lambda f: f.get("type") == "invokefunction" and f.get("invocation_id"))
            box["fid"] = f["function_id"]
            ws.send(json.dumps({"type": "invocationresult", "invocation_id": f["invocation_id"],
                                "function_id": f["function_id"], "result": {"ok": True}}))
        t = threading.Thread(target=answer)
        t.start()
        try:
            assert c.call("pfx::echo", {})["result"] == {"ok": True}
        finally:
            t.join(5)
            c.close()
        assert box["fid"] == "echo"  # the worker is called by its own name


def test_a_flood_during_the_auth_call_is_closed_and_the_listener_goes_on(server):
    """What a connection sends while its auth call runs is held for it: more than
    max_held_bytes (256 KiB here) closes it with 1008, it is never accepted, and the
    next connection is served."""
    from websockets.exceptions import ConnectionClosed
    pad = json.dumps({"type": "ping", "pad": "x" * 60_000})
    with rbac_client("slow") as ws, pytest.raises(ConnectionClosed) as closed:  # auth answers after 1.5 s
        for _ in range(40):  # 2.4 MB, sent well within the auth call
            ws.send(pad)
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "before the connection was accepted" in closed.value.rcvd.reason
    time.sleep(2)  # the test's auth server answers one call at a time: let the slow one end
    with rbac_client("ok") as ok:
        result = call(ok, "priv::granted", {"n": 1}).get("result")  # through the middleware
        assert result == {"through": "priv::granted", "payload": {"n": 1, "_via_mw": "u1"}}
