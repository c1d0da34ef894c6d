"""The embedded default: whatever `tandem serve` starts ends with it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from app.embedded import redis_server_binary
from tests.backends import backends
from tests.conftest import BACKEND
from tests.stack import TANDEM, Process, free_port

# The embedded default uses neither the test database nor the test Redis, so one pass of
# `make test` is enough: the first backend's.
_FIRST_BACKEND = backends()[0]
pytestmark = pytest.mark.skipif(
    _FIRST_BACKEND != BACKEND,
    reason=f"independent of the database backend; runs in the {_FIRST_BACKEND} pass only",
)


def _wait_ready(process: Process, base_url: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.alive(), f"serve exited:\n{process.tail()}"
        try:
            if httpx.get(base_url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"serve not ready in {timeout_s}s:\n{process.tail()}")


def _redis_server(serve: Process) -> psutil.Process:
    children = psutil.Process(serve.pid).children(recursive=True)
    found = [child for child in children if child.name() == "redis-server"]
    assert len(found) == 1, f"expected one redis-server child, found {children}"
    return found[0]


def _reaped(process: psutil.Process, timeout_s: float) -> bool:
    """True once the PID is gone (or is another process): exited *and* reaped. A zombie
    is not enough here: `tandem serve` waits for its child before it exits itself."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.is_running():  # also False when the PID was reused since
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_leaves_no_redis_server_behind(tmp_path: Path, sig: signal.Signals) -> None:
    # No TANDEM_DATABASE_URL, no TANDEM_REDIS_URL: SQLite under the data dir and a
    # redis-server that serve starts itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["TANDEM_DATA_DIR"] = str(tmp_path / "data")
    port = free_port()
    serve = Process("serve", [*TANDEM, "serve", "--port", str(port)], env, tmp_path)
    redis_server: psutil.Process | None = None
    try:
        _wait_ready(serve, f"http://127.0.0.1:{port}")
        redis_server = _redis_server(serve)
        os.kill(serve.pid, sig)
        try:
            serve.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve did not exit on {sig.name}:\n{serve.tail()}")
        assert _reaped(redis_server, timeout_s=5), (
            f"redis-server {redis_server.pid} outlived serve "
            f"({redis_server.status()}, parent {redis_server.ppid()})"
        )
    finally:
        serve.kill()
        if redis_server is not None and redis_server.is_running():
            redis_server.kill()


def test_serve_readyz_reports_its_in_process_worker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env["TANDEM_DATA_DIR"] = str(tmp_path / "data")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    serve = Process("serve", [*TANDEM, "serve", "--port", str(port)], env, tmp_path)
    replacement: subprocess.Popen[bytes] | None = None
    try:
        _wait_ready(serve, base_url)
        assert httpx.get(base_url + "/readyz", timeout=5).json()["worker"] == "ok"
        # The embedded Redis dies: the in-process worker cannot poll, and /readyz says so.
        redis_server = _redis_server(serve)
        # Its process title is "redis-server 127.0.0.1:<port>".
        redis_port = " ".join(redis_server.cmdline()).rsplit(":", 1)[1].split()[0]
        redis_server.kill()
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.get(base_url + "/readyz", timeout=5)
            worker = answer.json().get("worker") or ""
            if answer.status_code == 503 and worker.startswith("queue unreachable"):
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)
        assert serve.alive()
        # A Redis comes back on the same port: the same worker takes work again.
        replacement = subprocess.Popen(
            [redis_server_binary(), "--port", redis_port, "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        _wait_ready(serve, base_url)
        assert httpx.get(base_url + "/readyz", timeout=5).json()["worker"] == "ok"
    finally:
        serve.kill()
        if replacement is not None:
            replacement.kill()
            replacement.wait()
