"""Real processes for the tests: the API server and arq workers, as `tandem` runs them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.embedded import die_with

ROOT = Path(__file__).resolve().parent.parent
TANDEM = [sys.executable, "-m", "app.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115
        # A test run that is killed takes its servers with it: no orphans load the machine.
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with(os.getpid()),
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.pid, sig)
        try:
            self.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Stack:
    """One API server and a pool of workers sharing a database and a Redis."""

    def __init__(self, env: dict[str, str], log_dir: Path, workers: int = 2) -> None:
        self.env = {**os.environ, **env}
        self.log_dir = log_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api: Process | None = None
        self.workers: list[Process] = []
        self._worker_count = workers
        self._serial = 0

    def start(self) -> None:
        self.api = Process(
            "api",
            [*TANDEM, "serve", "--no-worker", "--no-migrate", "--port", str(self.port)],
            self.env,
            self.log_dir,
        )
        for _ in range(self._worker_count):
            self.start_worker()
        self.wait_ready()

    def start_worker(self, **env: str) -> Process:
        """A worker process; `env` overrides settings for it alone."""
        self._serial += 1
        worker = Process(
            f"worker-{self._serial}", [*TANDEM, "worker"], {**self.env, **env}, self.log_dir
        )
        self.workers.append(worker)
        return worker

    def live_workers(self) -> list[Process]:
        return [w for w in self.workers if w.alive()]

    def worker_by_pid(self, pid: int) -> Process:
        return next(w for w in self.workers if w.pid == pid)

    def ensure_workers(self) -> None:
        while len(self.live_workers()) < self._worker_count:
            self.start_worker()

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            assert self.api is not None
            if not self.api.alive():
                raise RuntimeError(f"API exited:\n{self.api.tail()}")
            try:
                response = httpx.get(self.base_url + "/readyz", timeout=2)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.1)
        raise RuntimeError(f"API not ready: {last}\n{self.api.tail() if self.api else ''}")

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill(signal.SIGTERM)
        if self.api is not None:
            self.api.kill(signal.SIGTERM)
