"""Fixtures for Registry tests: a recording registry (``regfake.Reg``) with connections
A, B, C, P and Q already open and their effects taken."""
from __future__ import annotations

import pytest

from regfake import A, B, C, P, Q, Reg


@pytest.fixture
def reg() -> Reg:
    r = Reg()
    for owner in (A, B, C, P, Q):
        r.conn(owner, token=f"tok-{owner[1]}")
    r.take()
    return r
