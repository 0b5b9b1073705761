"""``systemd-analyze verify`` on the units rendered for the default config (issue 17):
the target, every planned instance with its ordering drop-in, and the single-unit
supervisor. Every warning counts, not only the exit code (an unknown key is only a
warning to systemd). ``systemd-analyze`` is Debian's ``systemd`` package, installed by
``scripts/setup-dev.sh``; without it this test fails, it does not skip."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from brokers.supervisor import systemd

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "conf" / "iii-config.yaml")
CLEAN = {"PATH": "/usr/bin:/bin"}


def analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze not found: install Debian's systemd package "
                    "(scripts/setup-dev.sh does: apt-get install -y systemd)")
    return found


def exe() -> str:
    """The venv's iii-supervisor: verify checks that ExecStart exists."""
    path = os.path.join(os.path.dirname(sys.executable), "iii-supervisor")
    assert os.access(path, os.X_OK), f"{path} missing: run scripts/setup-dev.sh"
    return path


@pytest.fixture
def rendered():
    out = tempfile.mkdtemp(prefix="iii-units-", dir="/tmp")
    result = systemd.render_for(CONFIG, out=out, exe=exe(), user=None, base_env=CLEAN)
    yield out, result["units"], systemd.plan_for(CONFIG, base_env=CLEAN)
    shutil.rmtree(out, ignore_errors=True)


def verify(out: str, names: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([analyze(), "verify", *(os.path.join(out, n) for n in names)],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER=""))


def ours(stderr: str, out: str, names: list[str]) -> list[str]:
    """The lines of ``stderr`` about our files or units (verify may also mention the
    host's own units, which are not ours to judge)."""
    marks = [out, "iii@", "iii.target", "iii-supervisor", *names]
    return [line for line in stderr.splitlines() if any(m in line for m in marks)]


def test_systemd_analyze_verify_passes_on_the_rendered_units(rendered):
    out, units, plan = rendered
    names = ["iii.target", "iii-supervisor.service",
             *(systemd.instance(p.process) for p in plan.processes)]
    result = verify(out, names)
    assert result.returncode == 0 and not ours(result.stderr, out, names), (
        f"systemd-analyze verify failed ({result.returncode}):\n{result.stderr}{result.stdout}")


def test_verify_reads_the_drop_ins_too(rendered):
    """The control: a bad key in one instance's order.conf is reported, so the pass above
    covered the drop-ins."""
    out, units, plan = rendered
    gateway = next(p.process for p in plan.processes if p.unit.ingress)
    with open(os.path.join(out, f"iii@{gateway}.service.d", "order.conf"), "a") as fh:
        fh.write("NoSuchDirective=1\n")
    result = verify(out, [systemd.instance(gateway)])
    assert any("order.conf" in line and "NoSuchDirective" in line
               for line in result.stderr.splitlines()), result.stderr


def test_verify_fails_when_the_exe_is_missing():
    """The control for ExecStart: verify checks that the binary exists."""
    out = tempfile.mkdtemp(prefix="iii-units-", dir="/tmp")
    try:
        systemd.render_for(CONFIG, out=out, exe="/nonexistent/iii-supervisor", user=None,
                           base_env=CLEAN)
        result = verify(out, ["iii@router.service"])
        assert result.returncode != 0 and "/nonexistent/iii-supervisor" in result.stderr
    finally:
        shutil.rmtree(out, ignore_errors=True)
