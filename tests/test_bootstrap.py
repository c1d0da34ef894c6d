"""First start on an empty embedded database: an organization and an admin token in a file."""

from __future__ import annotations

import os
import secrets
import signal
import stat
from pathlib import Path

import httpx

from tests.helpers import wait_for
from tests.stack import TANDEM, Process, free_port


def _serve(data_dir: Path, redis_url: str, log_dir: Path, name: str) -> tuple[Process, str]:
    # Nothing of the test stack's configuration: no database URL (the embedded SQLite under
    # the data dir), no bootstrap token.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env |= {
        "TANDEM_DATA_DIR": str(data_dir),
        "TANDEM_REDIS_URL": redis_url,
        "TANDEM_REDIS_PREFIX": f"tandem-test-bootstrap-{secrets.token_hex(4)}",
    }
    port = free_port()
    process = Process(name, [*TANDEM, "serve", "--port", str(port)], env, log_dir)
    return process, f"http://127.0.0.1:{port}"


async def _wait_ready(process: Process, base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as anonymous:

        async def ready() -> bool:
            assert process.alive(), f"the server exited:\n{process.tail()}"
            try:
                return (await anonymous.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, timeout_s=60, interval_s=0.1)


async def test_first_start_writes_an_admin_token_once(tmp_path: Path, redis_url: str) -> None:
    data_dir = tmp_path / "data"
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    token_file = data_dir / "admin-token"

    process, base_url = _serve(data_dir, redis_url, log_dir, "bootstrap-1")
    try:
        await _wait_ready(process, base_url)
        assert token_file.exists(), process.tail()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        first = token_file.read_text()
        token = first.strip()
        assert token.startswith("tdm_")
        async with httpx.AsyncClient(
            base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as admin:
            me = await admin.get("/v1/me")
            assert me.status_code == 200, me.text
            assert me.json()["role"] == "admin"
            listed = await admin.get("/v1/tokens")
            assert listed.status_code == 200, listed.text
            assert len(listed.json()["items"]) == 1
        assert token not in process.log_path.read_text(errors="replace")
    finally:
        process.kill(signal.SIGTERM)
    assert (data_dir / "tandem.db").exists()

    process, base_url = _serve(data_dir, redis_url, log_dir, "bootstrap-2")
    try:
        await _wait_ready(process, base_url)
        assert token_file.read_text() == first
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        async with httpx.AsyncClient(
            base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as admin:
            me = await admin.get("/v1/me")
            assert me.status_code == 200, me.text
            assert me.json()["role"] == "admin"
            listed = await admin.get("/v1/tokens")
            assert listed.status_code == 200, listed.text
            assert [t["id"] for t in listed.json()["items"]] == [me.json()["token_id"]]
    finally:
        process.kill(signal.SIGTERM)
