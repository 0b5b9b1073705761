"""The router's one-owner rule and the cluster node (``REMOTE_NODE``): a remote entry yields
to a local worker's registration and to another remote one; never the other way round."""
from __future__ import annotations

from brokers.router.core import REMOTE_NODE, Registry

W = ("gateway", "w1")
R_B = (REMOTE_NODE, "B/default")
R_C = (REMOTE_NODE, "C/default")


def reg() -> tuple[Registry, list]:
    sent: list = []
    r = Registry("router", ["router", "gateway", REMOTE_NODE], lambda n, h, b=b"": sent.append((n, h, b)),
                 lambda binding, payload: None)
    for owner in (W, R_B, R_C):
        r.connect(owner, None, None, 0)
    return r, sent


def fn(r: Registry, owner, fid: str = "f") -> None:
    r.up(owner, "default", {"type": "registerfunction", "id": fid})


def test_a_local_worker_replaces_a_remote_entry() -> None:
    r, sent = reg()
    fn(r, R_B)
    fn(r, W)
    assert r.functions[("default", "f")].owner == W
    assert not [h for _, h, _ in sent if h["k"] == "down"]  # nobody rejected


def test_a_remote_entry_never_replaces_a_local_worker() -> None:
    r, sent = reg()
    fn(r, W)
    fn(r, R_B)
    assert r.functions[("default", "f")].owner == W
    assert [h for n, h, _ in sent if h["k"] == "down" and n == REMOTE_NODE]  # refused to the cluster


def test_a_remote_entry_moves_to_another_host_and_a_dead_host_takes_only_its_own() -> None:
    r, _ = reg()
    fn(r, R_B)
    fn(r, R_C)
    assert r.functions[("default", "f")].owner == R_C
    r.disconnect(R_B)
    assert r.functions[("default", "f")].owner == R_C
