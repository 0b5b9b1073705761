"""Operations logging end to end (issue 17): ``--log-format json`` with secrets redacted and
payloads elided, ``start --daemon`` (pid file, log file), SIGUSR1 stack dumps and SIGUSR2
log reopening, on a real engine.

The JSON test starts ``iii-supervisor start CONFIG --log-format json`` with the config's
``log_level: ${III_LOG_LEVEL}`` and ``III_LOG_LEVEL=debug``; the environment holds a bearer
token and an HMAC secret, an HTTP-invoked function is registered with each auth and called,
and a worker's log (echoed into the engine's log by iii-observability) carries the secrets
and a payload on purpose. The whole engine log is read afterwards: every line is one JSON
object, no secret and no payload appears in it. The daemon test runs ``start --daemon``
and checks the files and signals, then ``stop``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from iii import HttpInvocationConfig
from iii.iii_types import HttpAuthBearer, HttpAuthHmac
from tests.harness import REPO, Engine, free_port, supervisor_cmd
from tests.receiver import LOCAL_SECURITY, Receiver
from tests.sdkclient import our_worker
from tests.wsclient import wait_for_function

BEARER = f"bearer-{uuid.uuid4().hex}"
HMAC_KEY = f"hmac-{uuid.uuid4().hex}"
SECRETS = {"OPS_UPSTREAM_TOKEN": BEARER, "OPS_HOOK_SECRET": HMAC_KEY}
PAYLOAD_MARK = f"payload-{uuid.uuid4().hex}"
DATA_MARK = f"logdata-{uuid.uuid4().hex}"


def config_text(port: int, runtime_dir: str, data_dir: str, extra: str = "") -> str:
    text = textwrap.dedent(f"""\
        engine:
          runtime_dir: {runtime_dir}
          data_dir: {data_dir}
          log_level: ${{III_LOG_LEVEL:info}}
        workers:
          - name: iii-worker-manager
            config:
              host: 127.0.0.1
              port: {port}
        """)
    if extra:
        text += textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ") + "\n"
    return text


def temp_engine_dirs() -> tuple[str, str]:
    runtime_dir = tempfile.mkdtemp(prefix="iii-", dir="/tmp")
    data_dir = os.path.join(runtime_dir, "data")
    os.mkdir(data_dir, 0o700)
    return runtime_dir, data_dir


class JsonEngine(Engine):
    """The harness's engine, started with extra ``start`` arguments and environment."""

    def __init__(self, *, args: list[str], env: dict[str, str], **kw: Any) -> None:
        super().__init__(**kw)
        self.args, self.env = args, env

    def start(self, timeout: float = 20.0) -> "JsonEngine":
        from tests import harness
        logf = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                supervisor_cmd() + ["start", self.config_path, *self.args], cwd=REPO,
                env=self.env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            logf.close()
        harness.LIVE.append(self)
        try:
            self.wait_accepting(timeout)
        except BaseException:
            self.stop()
            raise
        return self


def wait_until(what: str, check: Callable[[], Any], within: float = 10.0) -> Any:
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.05)


# ---- --log-format json at debug level: secrets redacted, payloads elided --------------------

def test_json_log_at_debug_has_no_secret_and_no_payload() -> None:
    receiver = Receiver()
    runtime_dir, data_dir = temp_engine_dirs()
    port = free_port()
    env = {**os.environ, **SECRETS, "III_LOG_LEVEL": "debug"}
    eng = JsonEngine(args=["--log-format", "json"], env=env,
                     config_text=config_text(port, runtime_dir, data_dir, LOCAL_SECURITY),
                     port=port, runtime_dir=runtime_dir, data_dir=data_dir)
    eng.start()
    try:
        wait_for_function(eng.url, "engine::log::info", {"message": "warm-up"})
        with our_worker(eng.url, f"ops-{uuid.uuid4().hex[:6]}") as iii:
            fids = []
            for auth in (HttpAuthBearer(token_key="OPS_UPSTREAM_TOKEN"),
                         HttpAuthHmac(secret_key="OPS_HOOK_SECRET")):
                fid = f"ops::{uuid.uuid4().hex[:8]}"
                iii.register_function(fid, HttpInvocationConfig(url=receiver.url("/ops"), auth=auth))
                fids.append(fid)
            for fid in fids:
                out = wait_until(f"{fid} answers", lambda: _try(iii, fid, {"marker": PAYLOAD_MARK}))
                assert out["echo"]["marker"] == PAYLOAD_MARK  # the call did carry the payload
            headers = [receiver.next()["headers"] for _ in fids]
            assert headers[0]["authorization"] == f"Bearer {BEARER}"  # the secrets were used
            assert headers[1]["x-iii-signature"].startswith("sha256=")
            # a worker that logs the secrets and a payload: echoed into the engine's log
            tag = uuid.uuid4().hex
            iii.trigger({"function_id": "engine::log::info", "payload": {
                "message": f"echo-{tag} token {BEARER} header Authorization: Bearer {BEARER} "
                           f"hmac {HMAC_KEY} sig {headers[1]['x-iii-signature']}",
                "data": {"where": DATA_MARK}}})
            wait_until("the echoed log line", lambda: f"echo-{tag}" in eng.log_tail(10**7))
    finally:
        eng._remember_descendants()
        log_text = Path(eng.log_path).read_text(errors="replace")
        eng.stop()
        receiver.close()
    lines = [line for line in log_text.splitlines() if line.strip()]
    assert lines, "empty engine log"
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all(isinstance(r, dict) and {"ts", "level", "logger", "process", "msg"} <= set(r)
               for r in records)
    assert any(r["level"] == "debug" for r in records), "the engine did not log at debug"
    assert {"supervisor", "router", "iii-http-functions"} <= {r["process"] for r in records} or \
        len({r["process"] for r in records}) >= 3
    for secret in (BEARER, HMAC_KEY, PAYLOAD_MARK, DATA_MARK):
        assert secret not in log_text, f"{secret[:8]}... in the engine log"
    echo = [r for r in records if f"echo-{tag}" in r["msg"]]
    assert echo and "[REDACTED]" in echo[0]["msg"]
    assert headers[1]["x-iii-signature"].split("=", 1)[1] not in log_text


def _try(iii: Any, fid: str, payload: Any) -> Any:
    from iii import InvocationError
    try:
        return iii.trigger({"function_id": fid, "payload": payload})
    except InvocationError as exc:
        if exc.code in ("function_not_found", "function_not_invokable"):
            return None
        raise


# ---- start --daemon, SIGUSR1, SIGUSR2, stop -------------------------------------------------

def cli(*args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(supervisor_cmd() + list(args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def daemon_dirs() -> Iterator[tuple[str, str]]:
    runtime_dir, data_dir = temp_engine_dirs()
    yield runtime_dir, data_dir
    pidfile = os.path.join(runtime_dir, "supervisor.pid")
    try:
        pid = int(Path(pidfile).read_text().strip())
        proc = psutil.Process(pid)
        for p in proc.children(recursive=True) + [proc]:
            p.kill()
    except (OSError, ValueError, psutil.Error):
        pass
    shutil.rmtree(runtime_dir, ignore_errors=True)


def status(config: str) -> dict[str, Any]:
    out = cli("status", "--config", config, "--json", timeout=10)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_start_daemon_pid_file_log_file_signals_and_stop(daemon_dirs: tuple[str, str]) -> None:
    runtime_dir, data_dir = daemon_dirs
    port = free_port()
    config = os.path.join(runtime_dir, "iii-config.yaml")
    Path(config).write_text(config_text(port, runtime_dir, data_dir))
    log_file = os.path.join(runtime_dir, "engine.log")
    pid_file = os.path.join(runtime_dir, "iii.pid")
    started = time.monotonic()
    out = cli("start", config, "--daemon", "--log-file", log_file, "--pid-file", pid_file,
              "--log-format", "json")
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}\n{_read(log_file)}"
    assert time.monotonic() - started < 30
    # returned once ready: every process RUNNING right now, the daemon detached
    st = status(config)
    assert st["processes"] and all(p["state"] == "RUNNING" for p in st["processes"]), st
    pid = st["pid"]
    assert Path(pid_file).read_text().strip() == str(pid)
    assert Path(runtime_dir, "supervisor.pid").read_text().strip() == str(pid)
    daemon = psutil.Process(pid)
    assert daemon.ppid() != os.getpid() and os.getsid(pid) != os.getsid(0)
    assert f"pid {pid}" in out.stdout and log_file in out.stdout
    assert os.stat(log_file).st_mode & 0o077 == 0
    wait_for_function(f"ws://127.0.0.1:{port}", "engine::functions::list", {})
    first = _lines(log_file)
    assert any(r["process"] == "supervisor" for r in first)
    assert any(r["process"] != "supervisor" for r in first)  # the children write there too

    # SIGUSR1 to one process: its stacks in the log
    router = next(p for p in st["processes"] if p["name"] == "router")
    os.kill(router["pid"], signal.SIGUSR1)
    dump = wait_until("the router's stack dump", lambda: [
        r for r in _lines(log_file) if r["process"] == "router" and r["msg"].startswith("SIGUSR1: stack dump")])
    assert "Thread " in dump[0]["msg"] and "(main)" in dump[0]["msg"] and "asyncio task(s)" in dump[0]["msg"]
    assert psutil.Process(router["pid"]).is_running()  # the signal did not kill it

    # logrotate: move the file away, SIGUSR2 to the supervisor: a new file, every process in it
    rotated = log_file + ".1"
    os.rename(log_file, rotated)
    os.kill(pid, signal.SIGUSR2)
    names = {p["name"] for p in st["processes"]}
    wait_until("every process reopened the log", lambda: os.path.exists(log_file) and names | {"supervisor"} <= {
        r["process"] for r in _lines(log_file) if r["msg"].startswith("SIGUSR2:")}, within=10)
    before = len(_lines(rotated))
    assert cli("restart", "router", "--config", config, timeout=10).returncode == 0
    wait_until("new lines in the new file", lambda: any(
        "router" in r["msg"] and r["process"] == "supervisor" and "SIGUSR2" not in r["msg"]
        for r in _lines(log_file)))
    time.sleep(0.3)
    assert len(_lines(rotated)) == before  # nothing more goes to the rotated file

    # stop stops the daemon, its pid files go
    out = cli("stop", "--config", config, timeout=40)
    assert out.returncode == 0, out.stderr
    wait_until("the daemon exited", lambda: not daemon.is_running() or daemon.status() == psutil.STATUS_ZOMBIE)
    assert not os.path.exists(pid_file) and not os.path.exists(os.path.join(runtime_dir, "supervisor.pid"))
    assert any("all processes stopped" in r["msg"] for r in _lines(log_file))


def test_start_daemon_that_cannot_start_fails_in_the_foreground(daemon_dirs: tuple[str, str]) -> None:
    runtime_dir, data_dir = daemon_dirs
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = os.path.join(runtime_dir, "iii-config.yaml")
        Path(config).write_text(config_text(port, runtime_dir, data_dir))
        out = cli("start", config, "--daemon", timeout=60)
    assert out.returncode != 0
    assert str(port) in out.stderr and "did not start" in out.stderr
    assert not os.path.exists(os.path.join(runtime_dir, "supervisor.pid"))


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _lines(path: str) -> list[dict[str, Any]]:
    out = []
    for line in _read(path).splitlines():
        if line.strip():
            out.append(json.loads(line))  # every line of a json log is one object
    return out
