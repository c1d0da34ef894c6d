"""A real Airflow for the tests: `airflow standalone` (apache-airflow 3.3.2) from a virtualenv
of its own, `.airflow-venv/` at the repository root (`.ci/run` creates it; its pins never
touch Tandem's lock), on SQLite in a temporary AIRFLOW_HOME, on a free loopback port, with a
DAG folder the tests write into.

`airflow` (session fixture) starts it once per test session, in the first backend's pass
only (it does not depend on Tandem's database), and waits until `/api/v2/monitor/health`
reports every component healthy. It skips when the virtualenv is missing, or fails when
TANDEM_TEST_REQUIRE_SERVICES=1 (CI).

`airflow standalone` runs the api-server, scheduler, dag-processor and triggerer as its
children, and the tasks it runs put themselves in process groups of their own; none of
them would die with the test run. So it runs under a small supervisor (`python -m
tests.airflow supervise ...`, below) that dies with the test run (`die_with`), is a child
subreaper (every orphaned descendant becomes its child) and, when it is told to stop or
its parent dies, interrupts standalone and then kills every descendant that is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embedded import die_with
from tests.backends import backends
from tests.stack import ROOT, free_port

AIRFLOW_VERSION = "3.3.2"
AIRFLOW_VENV = Path(os.environ.get("TANDEM_AIRFLOW_VENV", ROOT / ".airflow-venv"))
AIRFLOW_BIN = AIRFLOW_VENV / "bin" / "airflow"
USERNAME = "tandem"
# Components `/api/v2/monitor/health` reports; all must be healthy.
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
STARTUP_TIMEOUT_S = 240
# How often the DAG processor looks for new files in the DAG folder, and re-parses one.
PARSE_INTERVAL_S = 2


@dataclass
class Airflow:
    """A running Airflow: where it answers, who may log in, where DAGs go."""

    base_url: str
    username: str
    password: str
    home: Path
    dags_folder: Path
    log_path: Path
    # Seconds from start to every component healthy.
    startup_s: float = 0.0
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self) -> str:
        """A JWT for the API (`POST /auth/token`), cached for the session."""
        if "jwt" not in self._tokens:
            response = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": self.username, "password": self.password},
                timeout=30,
            )
            response.raise_for_status()
            self._tokens["jwt"] = response.json()["access_token"]
        return self._tokens["jwt"]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An async client on the API, authenticated as the admin user."""
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers(), timeout=30, **kwargs
        )

    def write_dag(self, dag_id: str, source: str) -> Path:
        """Writes a DAG file (the DAG processor finds it within a few seconds)."""
        path = self.dags_folder / f"{dag_id}.py"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(textwrap.dedent(source))
        tmp.rename(path)
        return path

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def failing_dag(dag_id: str, task_id: str = "fails", retries: int = 0) -> str:
    """A DAG with one task that fails by design; no schedule, so it runs only when
    triggered."""
    return f"""
        from datetime import datetime

        from airflow.providers.standard.operators.bash import BashOperator
        from airflow.sdk import DAG

        with DAG(
            dag_id={dag_id!r},
            schedule=None,
            start_date=datetime(2024, 1, 1),
            catchup=False,
            tags=["tandem-test"],
        ):
            BashOperator(
                task_id={task_id!r},
                bash_command="echo failing by design; exit 1",
                retries={retries},
            )
        """


def idle_dag(dag_id: str) -> str:
    """A DAG with one task that succeeds; no schedule."""
    return f"""
        from datetime import datetime

        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import DAG

        with DAG(
            dag_id={dag_id!r},
            schedule=None,
            start_date=datetime(2024, 1, 1),
            catchup=False,
            tags=["tandem-test"],
        ):
            EmptyOperator(task_id="noop")
        """


def health(base_url: str) -> tuple[bool, str]:
    """Whether every component is healthy, and the last answer (for messages)."""
    try:
        response = httpx.get(f"{base_url}/api/v2/monitor/health", timeout=5)
    except httpx.HTTPError as exc:
        return False, repr(exc)
    if response.status_code != 200:
        return False, f"HTTP {response.status_code}: {response.text[:300]}"
    body = response.json()
    ok = all((body.get(c) or {}).get("status") == "healthy" for c in COMPONENTS)
    return ok, json.dumps(body)


def airflow_env(home: Path, dags: Path, port: int, password_file: Path) -> dict[str, str]:
    base_url = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        # Tandem's own settings and a virtualenv of the caller mean nothing to Airflow.
        if not k.startswith(("AIRFLOW", "TANDEM_", "VIRTUAL_ENV", "PYTHON"))
    }
    env.update(
        {
            # standalone starts its components as `airflow ...`: the venv's bin first.
            "PATH": f"{AIRFLOW_VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(AIRFLOW_VENV),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # The API server on loopback, on this run's port; tasks reach its execution
            # API there.
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            # One admin user whose password this run chose (the file is read, and only
            # users missing from it get a generated password).
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            # New DAG files are seen, and changed ones re-parsed, within seconds.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(PARSE_INTERVAL_S),
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(PARSE_INTERVAL_S),
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # The scheduler's and triggerer's log servers: not their fixed default ports,
            # which another run on this machine may hold.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "NO_COLOR": "1",
        }
    )
    return env


class Running:
    """`airflow standalone` under the supervisor, and how to stop it."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.dags = root / "dags"
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(18)
        password_file = self.home / "passwords.json"
        password_file.write_text(json.dumps({USERNAME: self.password}) + "\n")
        self.log_path = root / "airflow.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (kept for the child)
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tests.airflow", "supervise", str(AIRFLOW_BIN), "standalone"],
            env={**airflow_env(self.home, self.dags, self.port, password_file)},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # A test run that is killed takes Airflow with it.
            preexec_fn=die_with(os.getpid()),
        )

    def airflow(self) -> Airflow:
        return Airflow(
            base_url=self.base_url,
            username=USERNAME,
            password=self.password,
            home=self.home,
            dags_folder=self.dags,
            log_path=self.log_path,
        )

    def wait_healthy(self, timeout_s: float = STARTUP_TIMEOUT_S) -> float:
        """Seconds from start until every component is healthy."""
        deadline = self.started + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"airflow standalone exited:\n{self.airflow().log_tail()}")
            ok, last = health(self.base_url)
            if ok:
                return time.monotonic() - self.started
            time.sleep(0.5)
        raise RuntimeError(
            f"Airflow not healthy after {timeout_s} s: {last}\n{self.airflow().log_tail()}"
        )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._log.close()


def missing_venv_message() -> str:
    return (
        f"Airflow is not installed in {AIRFLOW_VENV} (`python3 -m venv .airflow-venv && "
        f".airflow-venv/bin/pip install apache-airflow=={AIRFLOW_VERSION}`; .ci/run does it)"
    )


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    """A running Airflow 3 for the session (first backend's pass only)."""
    from tests.conftest import BACKEND, REQUIRE_SERVICES

    first = backends()[0]
    if first != BACKEND:
        pytest.skip(f"independent of the database backend; runs in the {first} pass only")
    if not AIRFLOW_BIN.exists():
        if REQUIRE_SERVICES:
            pytest.fail(missing_venv_message())
        pytest.skip(missing_venv_message())
    running = Running(tmp_path_factory.mktemp("airflow"))
    try:
        startup_s = running.wait_healthy()
        found = running.airflow()
        found.startup_s = startup_s
        print(f"\nairflow: healthy {startup_s:.1f} s after start at {found.base_url}")
        yield found
    finally:
        running.stop()


# -- the supervisor -------------------------------------------------------------------

_PR_SET_CHILD_SUBREAPER = 36


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _descendants(pid: int) -> list[int]:
    children = _children_map()
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _reap() -> dict[int, int]:
    """Reaps every child that has exited: pid -> wait status."""
    done: dict[int, int] = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done[pid] = status


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def supervise(argv: list[str]) -> int:
    """Runs `argv`; on SIGTERM/SIGINT (or the parent's death: die_with sends SIGTERM),
    interrupts it like Ctrl-C, then ends every descendant still there."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    stop = {"asked": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["asked"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    child = subprocess.Popen(argv)
    code: int | None = None
    while not stop["asked"] and code is None:
        status = _reap().get(child.pid)
        if status is not None:
            code = os.waitstatus_to_exitcode(status)
        time.sleep(0.2)
    if code is None:
        # standalone shuts its components down on KeyboardInterrupt.
        _signal_all([child.pid], signal.SIGINT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _descendants(os.getpid()):
            _reap()
            time.sleep(0.2)
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        deadline = time.monotonic() + grace
        while (left := _descendants(os.getpid())) and time.monotonic() < deadline:
            _signal_all(left, sig)
            time.sleep(0.2)
            _reap()
    _reap()
    return code or 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "supervise":
        sys.exit(supervise(sys.argv[2:]))
    sys.exit("usage: python -m tests.airflow supervise COMMAND [ARGS...]")
