"""Real PostgreSQL servers for the `postgres` action's tests: a primary and a streaming
standby made with `initdb` and `pg_basebackup -R`, run as the `postgres` user on free
loopback ports, in a directory that user owns (pytest's temporary directory is closed to
it).

`pg_pair` (session fixture) builds them once per test session, in the first backend's pass
only (the servers do not depend on Tandem's own database), and stops them afterwards.
Each postmaster is started with a parent-death signal (SIGINT: a fast shutdown), so a
test run that is killed takes its servers with it. A test that breaks the pair (promotes
the standby, stops the primary) calls `rebuild()`, which puts back a fresh primary (a copy
of the initdb made once) and a fresh base backup of it. The shared PostgreSQL on
127.0.0.1:5432 is Tandem's own database: nothing here touches it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import backends
from tests.stack import free_port

BIN = Path(os.environ.get("TANDEM_PG_BIN", "/usr/lib/postgresql/15/bin"))
OWNER = "postgres"
# The role whose password the bad-credentials test gets wrong.
PASSWORD_ROLE, PASSWORD = "tandem_pw", "s3cret-pw"
STARTUP_TIMEOUT_S = 30

CONFIG = """
listen_addresses = '127.0.0.1'
wal_level = replica
hot_standby = on
wal_log_hints = on
max_wal_senders = 10
wal_keep_size = '256MB'
max_connections = 60
shared_buffers = '16MB'
fsync = off
synchronous_commit = on
full_page_writes = on
# A standby never cancels a test's query to replay (the pause test reads while paused).
max_standby_streaming_delay = -1
hot_standby_feedback = on
wal_receiver_status_interval = 1s
log_min_messages = warning
"""

HBA = f"""
local all all trust
local replication all trust
host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
"""


def _as_owner(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: become the postgres user, then get SIGINT (fast shutdown) when the
    test run dies (the parent-death signal is cleared by a change of user: set after).
    The kernel sends it when the forking *thread* ends: only a start from the main thread
    asks for it (a runbook's thread starts servers too; the fixture stops those)."""
    user = pwd.getpwnam(OWNER)
    main = threading.current_thread() is threading.main_thread()

    def preexec() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
        if main and sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def run_as_owner(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", OWNER, "--", *argv],
        capture_output=True,
        text=True,
        check=check,
        env={"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "PGTZ": "UTC"},
    )


@dataclass
class Server:
    name: str
    datadir: Path
    port: int
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def dsn(self, user: str = OWNER, password: str | None = None) -> str:
        auth = f"{user}:{password}" if password else user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115  (kept by the child)
        self.popen = subprocess.Popen(
            [
                str(BIN / "postgres"),
                "-D",
                str(self.datadir),
                "-c",
                f"port={self.port}",
                "-c",
                f"unix_socket_directories={self.datadir.parent}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_as_owner(os.getpid()),
            env={"LANG": "C.UTF-8", "PGTZ": "UTC"},
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            ready = subprocess.run(
                [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start:\n{self.log_tail()}")

    def stop(self) -> None:
        """A fast shutdown (sessions ended, a clean checkpoint)."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None

    def crash(self) -> None:
        """The primary goes away as in an outage: no shutdown checkpoint."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGQUIT)
            self.popen.wait(timeout=30)
        self.popen = None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def psql(self, sql: str) -> str:
        """One statement's result, unaligned, as the postgres user over loopback."""
        done = subprocess.run(
            [str(BIN / "psql"), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(), "-c", sql],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.name}: {sql}: {done.stderr.strip()}")
        return done.stdout.strip()

    def log_tail(self, lines: int = 40) -> str:
        """The server's own messages (clients' refused statements left out)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
            own = [line for line in text if "read-only" not in line and "STATEMENT" not in line]
            return "\n".join(own[-lines:])
        except OSError:
            return ""


class PgPair:
    """A primary and its streaming standby, in `root` (owned by the postgres user)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.template = root / "template"
        self.primary = Server("primary", root / "a" / "data", free_port(), root / "a.log")
        self.standby = Server("standby", root / "b" / "data", free_port(), root / "b.log")
        self.others: list[Server] = []

    def _mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, OWNER, OWNER)
        path.chmod(0o700)

    def init_template(self) -> None:
        """initdb once: the primary of every rebuild is a copy of it."""
        self._mkdir(self.template.parent)
        run_as_owner(
            str(BIN / "initdb"), "-D", str(self.template), "-U", OWNER, "-A", "trust", "-N",
            "--no-instructions",
        )  # fmt: skip
        with open(self.template / "postgresql.conf", "a") as conf:
            conf.write(CONFIG)
        (self.template / "pg_hba.conf").write_text(HBA)

    def rebuild(self) -> None:
        """A fresh primary (a copy of the template) and a fresh base backup of it."""
        for server in (self.primary, self.standby, *self.others):
            server.stop()
        self.others.clear()
        for server in (self.primary, self.standby):
            shutil.rmtree(server.datadir.parent, ignore_errors=True)
            self._mkdir(server.datadir.parent)
        run_as_owner("cp", "-a", str(self.template), str(self.primary.datadir))
        self.primary.start()
        self.primary.psql(f"CREATE ROLE {PASSWORD_ROLE} LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
        self.base_backup(self.primary, self.standby)
        self.standby.start()
        self.wait_streaming(self.primary, self.standby)

    def base_backup(self, source: Server, into: Server) -> None:
        """`into` becomes a standby of `source` (a fresh copy, `-R` writes its conninfo)."""
        into.stop()
        shutil.rmtree(into.datadir, ignore_errors=True)
        self._mkdir(into.datadir.parent)
        run_as_owner(
            str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(source.port), "-U", OWNER,
            "-D", str(into.datadir), "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip

    def rewind(self, source: Server, into: Server) -> None:
        """`into` (stopped, once a primary) becomes a standby of `source` by pg_rewind."""
        # pg_rewind reads the source's timeline from its control file, written by the
        # checkpoint that follows a promotion: without it, "no rewind required".
        source.psql("CHECKPOINT")
        into.stop()
        run_as_owner(
            str(BIN / "pg_rewind"), "-D", str(into.datadir), "--source-server",
            f"host=127.0.0.1 port={source.port} user={OWNER} dbname=postgres", "-R",
            "--no-sync",
        )  # fmt: skip

    def wait_streaming(self, primary: Server, standby: Server, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = primary.psql(
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
            )
            if state != "0":
                return
            time.sleep(0.1)
        raise RuntimeError(f"{standby.name} is not streaming:\n{standby.log_tail()}")

    def other_pair(self) -> tuple[Server, Server]:
        """A primary of another cluster (its own initdb) and its standby: a standby that
        does not replicate from this pair's primary."""
        other = Server("other-primary", self.root / "c" / "data", free_port(), self.root / "c.log")
        other_standby = Server(
            "other-standby", self.root / "d" / "data", free_port(), self.root / "d.log"
        )
        for server in (other, other_standby):
            shutil.rmtree(server.datadir.parent, ignore_errors=True)
            self._mkdir(server.datadir.parent)
        run_as_owner(
            str(BIN / "initdb"), "-D", str(other.datadir), "-U", OWNER, "-A", "trust", "-N",
            "--no-instructions",
        )  # fmt: skip
        with open(other.datadir / "postgresql.conf", "a") as conf:
            conf.write(CONFIG)
        shutil.copy(self.template / "pg_hba.conf", other.datadir / "pg_hba.conf")
        other.start()
        self.base_backup(other, other_standby)
        other_standby.start()
        self.others.extend([other, other_standby])
        return other, other_standby

    def healthy(self) -> bool:
        """Primary writable and the standby streaming from it, as rebuild() left them."""
        if not (self.primary.running and self.standby.running):
            return False
        try:
            return (
                self.primary.psql("SELECT pg_is_in_recovery()") == "f"
                and self.primary.psql("SHOW default_transaction_read_only") == "off"
                and self.standby.psql("SELECT pg_is_in_recovery()") == "t"
                and self.standby.psql("SELECT pg_is_wal_replay_paused()") == "f"
                and self.primary.psql(
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                )
                == "1"
            )
        except RuntimeError:
            return False

    def stop(self) -> None:
        for server in (*self.others, self.standby, self.primary):
            server.stop()


def missing_message() -> str:
    return f"PostgreSQL server binaries are not in {BIN} (apt-get install postgresql-15)"


@pytest.fixture(scope="session")
def pg_servers() -> Iterator[PgPair]:
    """A primary and a streaming standby for the session (first backend's pass only)."""
    from tests.conftest import BACKEND, REQUIRE_SERVICES

    first = backends()[0]
    if first != BACKEND:
        pytest.skip(f"independent of the database backend; runs in the {first} pass only")
    if not (BIN / "initdb").exists() or shutil.which("runuser") is None:
        if REQUIRE_SERVICES:
            pytest.fail(missing_message())
        pytest.skip(missing_message())
    root = Path(tempfile.mkdtemp(prefix="tandem-pg-"))
    root.chmod(0o755)
    pair = PgPair(root)
    try:
        pair.init_template()
        pair.rebuild()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_pair(pg_servers: PgPair) -> Iterator[PgPair]:
    """The session's pair, as rebuild() left it (rebuilt first if a test broke it)."""
    if not pg_servers.healthy():
        pg_servers.rebuild()
    yield pg_servers
    with contextlib.suppress(Exception):
        for server in pg_servers.others:
            server.stop()
        pg_servers.others.clear()
