"""Pair secrets: put, list, replace, delete through the running server; who may; what is
refused; the value never shown back, audited or logged; stored encrypted; the key file of
the embedded default; the resolver actions use."""

from __future__ import annotations

import json
import os
import stat
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet, MultiFernet
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.actions.base import ActionFailed
from app.config import Settings
from app.secrets import crypto, service
from app.secrets.models import PairSecret
from app.secrets.service import SecretStore
from tests.access.test_access import all_items, as_token, assert_problem, cli, create_token
from tests.helpers import create_cluster
from tests.stack import Stack


def marker() -> str:
    """A value no other text contains by chance."""
    return f"s3cr3t-{uuid.uuid4().hex}"


def path(cluster_id: str, name: str | None = None) -> str:
    base = f"/v1/clusters/{cluster_id}/secrets"
    return base if name is None else f"{base}/{name}"


async def put(client: httpx.AsyncClient, cluster_id: str, name: str, value: str) -> httpx.Response:
    return await client.put(path(cluster_id, name), json={"value": value})


def stack_keys(stack_env: dict[str, str]) -> MultiFernet:
    """The keys the stack's processes use, found as they find them."""
    settings = Settings(
        data_dir=Path(stack_env["TANDEM_DATA_DIR"]),
        secret_key=stack_env.get("TANDEM_SECRET_KEY"),  # type: ignore[arg-type]
    )
    return crypto.cipher(settings)


async def row_of(
    sessions: async_sessionmaker[AsyncSession], cluster_id: str, name: str
) -> PairSecret | None:
    async with sessions() as session:
        return await session.get(PairSecret, (cluster_id, name))


@pytest_asyncio.fixture
async def stranger(
    live_stack: Stack, stack_env: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """The admin of another organization."""
    token = cli(stack_env, "orgs", "create", f"org-{uuid.uuid4().hex[:10]}")
    async with as_token(live_stack, token) as admin:
        yield admin


# --- put, list, replace, delete ----------------------------------------------------------


async def test_put_list_replace_delete(client: httpx.AsyncClient) -> None:
    cid = (await create_cluster(client))["id"]
    first, second = marker(), marker()

    created = await put(client, cid, "db-password", first)
    assert created.status_code == 201, created.text
    assert created.headers["location"] == path(cid, "db-password")
    body = created.json()
    assert set(body) == {"name", "created_at", "updated_at"}
    assert body["name"] == "db-password"
    assert body["created_at"] == body["updated_at"]

    listed = (await client.get(path(cid))).json()
    assert listed == {"items": [body], "next_page_token": None}
    assert (await client.get(path(cid, "db-password"))).json() == body

    replaced = await put(client, cid, "db-password", second)
    assert replaced.status_code == 200, replaced.text
    assert "location" not in replaced.headers
    again = replaced.json()
    assert again["created_at"] == body["created_at"]
    assert again["updated_at"] > body["updated_at"]
    assert [s["name"] for s in (await client.get(path(cid))).json()["items"]] == ["db-password"]

    deleted = await client.delete(path(cid, "db-password"))
    assert deleted.status_code == 204 and deleted.content == b""
    gone = assert_problem(await client.delete(path(cid, "db-password")), 404, "not_found")
    assert gone["secret"] == "db-password" and "db-password" in gone["detail"]
    assert_problem(await client.get(path(cid, "db-password")), 404, "not_found")
    assert (await client.get(path(cid))).json() == {"items": [], "next_page_token": None}


async def test_list_is_paginated_by_name(client: httpx.AsyncClient) -> None:
    cid = (await create_cluster(client))["id"]
    names = ["b.token", "A_key", "c-3", "a1", "Z"]
    for name in names:
        assert (await put(client, cid, name, marker())).status_code == 201
    seen: list[str] = []
    token = None
    while True:
        params: dict[str, Any] = {"page_size": 2}
        if token:
            params["page_token"] = token
        page = (await client.get(path(cid), params=params)).json()
        assert len(page["items"]) <= 2
        seen += [item["name"] for item in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert sorted(seen) == sorted(names) and len(seen) == len(names)
    bad_token = await client.get(path(cid), params={"page_token": "nonsense"})
    assert_problem(bad_token, 400, "bad_request")


async def test_deleting_the_pair_deletes_its_secrets(
    client: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    cid = (await create_cluster(client))["id"]
    assert (await put(client, cid, "token", marker())).status_code == 201
    assert (await client.delete(f"/v1/clusters/{cid}")).status_code == 204
    assert await row_of(sessions, cid, "token") is None
    assert_problem(await put(client, cid, "token", marker()), 404, "not_found")
    assert_problem(await client.get(path(cid)), 404, "not_found")


# --- the value is never shown --------------------------------------------------------------


async def test_the_value_is_in_no_response_audit_row_or_log_line(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    cid = (await create_cluster(client))["id"]
    value, other = marker(), marker()
    responses = [
        await put(client, cid, "api-token", value),
        await put(client, cid, "api-token", other),
        await put(client, cid, "api-token", value),
        await client.get(path(cid)),
        await client.get(path(cid, "api-token")),
        # Refused ones too: a bad name, an extra field, a value too long.
        await put(client, cid, "-bad", value),
        await client.put(path(cid, "x"), json={"value": value, "echo": value}),
        await put(client, cid, "x", value + "x" * 8192),
        await put(client, "cl_missing", "x", value),
        await client.get(f"/v1/clusters/{cid}"),
    ]
    assert [r.status_code for r in responses] == [201, 200, 200, 200, 200, 422, 422, 422, 404, 200]
    for response in responses:
        text = response.text + json.dumps(dict(response.headers))
        assert value not in text and other not in text, response.text

    rows = await all_items(client, "/v1/audit", action="put_secret")
    put_rows = [r for r in rows if r["target"] and r["target"].startswith(cid)]
    assert sorted(r["status_code"] for r in put_rows) == [200, 200, 201, 422, 422, 422]
    audit = json.dumps(await all_items(client, "/v1/audit"))
    assert value not in audit and other not in audit

    for process in [live_stack.api, *live_stack.workers]:
        assert process is not None
        log = process.log_path.read_text(errors="replace")
        assert value not in log and other not in log, process.name


async def test_stored_encrypted_with_the_stack_key(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    stack_env: dict[str, str],
) -> None:
    cid = (await create_cluster(client))["id"]
    value = marker()
    assert (await put(client, cid, "dsn", value)).status_code == 201
    row = await row_of(sessions, cid, "dsn")
    assert row is not None and row.org_id
    assert value not in row.ciphertext
    assert crypto.decrypt(stack_keys(stack_env), row.ciphertext) == value
    # A foreign key cannot read it.
    with pytest.raises(crypto.InvalidToken):
        crypto.decrypt(MultiFernet([Fernet(Fernet.generate_key())]), row.ciphertext)


# --- who may -----------------------------------------------------------------------------


async def test_viewers_and_operators_read_names_but_cannot_put_or_delete(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    cid = (await create_cluster(client))["id"]
    assert (await put(client, cid, "token", marker())).status_code == 201
    for role in ("viewer", "operator"):
        token = (await create_token(client, role))["token"]
        async with as_token(live_stack, token) as caller:
            assert (await caller.get(path(cid))).status_code == 200
            assert (await caller.get(path(cid, "token"))).status_code == 200
            refused = assert_problem(await put(caller, cid, "token", marker()), 403, "forbidden")
            assert refused["required_role"] == "admin"
            assert_problem(await caller.delete(path(cid, "token")), 403, "forbidden")
    assert (await client.get(path(cid, "token"))).status_code == 200


async def test_another_organizations_pair_is_not_found(
    client: httpx.AsyncClient, stranger: httpx.AsyncClient
) -> None:
    cid = (await create_cluster(client))["id"]
    assert (await put(client, cid, "token", marker())).status_code == 201
    assert_problem(await put(stranger, cid, "token", marker()), 404, "not_found")
    assert_problem(await put(stranger, cid, "new", marker()), 404, "not_found")
    assert_problem(await stranger.get(path(cid)), 404, "not_found")
    assert_problem(await stranger.get(path(cid, "token")), 404, "not_found")
    assert_problem(await stranger.delete(path(cid, "token")), 404, "not_found")
    # Nothing changed: the secret is the owner's, and only the one.
    names = [s["name"] for s in (await client.get(path(cid))).json()["items"]]
    assert names == ["token"]


# --- refused input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["-leading-dash", ".hidden", "_x", "a" * 65, "with space", "caf%C3%A9", "a%00b", "a:b"],
)
async def test_bad_names_are_422(client: httpx.AsyncClient, name: str) -> None:
    cid = (await create_cluster(client))["id"]
    assert_problem(await put(client, cid, name, "v"), 422, "validation_failed")
    assert_problem(await client.get(path(cid, name)), 422, "validation_failed")
    assert_problem(await client.delete(path(cid, name)), 422, "validation_failed")


async def test_names_at_the_limits_are_accepted(client: httpx.AsyncClient) -> None:
    cid = (await create_cluster(client))["id"]
    for name in ["a", "Z9", "a" * 64, "x.y-z_0"]:
        assert (await put(client, cid, name, "v")).status_code == 201, name


async def test_bad_bodies_are_problems(client: httpx.AsyncClient) -> None:
    cid = (await create_cluster(client))["id"]
    url = path(cid, "token")
    for body in ({"value": ""}, {"value": 123}, {"value": None}, {}, {"value": "v", "x": 1}, []):
        assert_problem(await client.put(url, json=body), 422, "validation_failed")
    # Over 8 KiB in UTF-8: 8,193 ASCII characters, or 4,097 two-byte ones.
    for value in ("x" * 8193, "é" * 4097):
        refused = assert_problem(await put(client, cid, "token", value), 422, "validation_failed")
        assert "8192 bytes" in refused["detail"]
    no_body = await client.put(url)
    assert_problem(no_body, 422, "validation_failed")
    as_json = {"content-type": "application/json"}
    not_json = await client.put(url, content=b"{value", headers=as_json)
    assert_problem(not_json, 400, "malformed_body")
    surrogate = await client.put(url, content=b'{"value": "\\ud800"}', headers=as_json)
    assert_problem(surrogate, 422, "validation_failed")
    assert_problem(await put(client, "cl_nonexistent", "token", "v"), 404, "not_found")
    # Nothing was stored by any of them; exactly 8 KiB is.
    assert (await client.get(path(cid))).json()["items"] == []
    assert (await put(client, cid, "token", "é" * 4096)).status_code == 201


# --- the resolver --------------------------------------------------------------------------


async def test_resolver_returns_the_value_and_names_a_missing_secret(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    stack_env: dict[str, str],
) -> None:
    cid = (await create_cluster(client))["id"]
    value = marker()
    assert (await put(client, cid, "bearer", value)).status_code == 201
    resolve = SecretStore(sessions, stack_keys(stack_env))
    assert await resolve(cid, "bearer") == value

    with pytest.raises(ActionFailed) as missing:
        await resolve(cid, "absent")
    assert "'absent'" in missing.value.message and not missing.value.transient
    assert value not in str(missing.value) and value not in repr(missing.value.details)
    # Another pair's secret of the same name is not this pair's.
    other = (await create_cluster(client))["id"]
    with pytest.raises(ActionFailed, match="'bearer'"):
        await resolve(other, "bearer")

    # A key that did not encrypt it: a failure naming the secret, no value, no token.
    stranger = SecretStore(sessions, MultiFernet([Fernet(Fernet.generate_key())]))
    with pytest.raises(ActionFailed) as undecryptable:
        await stranger(cid, "bearer")
    assert "'bearer'" in undecryptable.value.message and "TANDEM_SECRET_KEY" in str(
        undecryptable.value
    )

    names = ["absent", "bearer", "other", "absent"]
    assert await resolve.missing(cid, names) == ["absent", "other"]
    async with sessions() as session:
        assert await service.missing(session, cid, []) == []
        assert await service.missing(session, other, ["bearer"]) == ["bearer"]


async def test_rotate_reencrypts_with_the_first_key(
    client: httpx.AsyncClient,
    sessions: async_sessionmaker[AsyncSession],
    stack_env: dict[str, str],
) -> None:
    cid = (await create_cluster(client))["id"]
    value = marker()
    assert (await put(client, cid, "rotated", value)).status_code == 201
    before = await row_of(sessions, cid, "rotated")
    assert before is not None
    # The stack's own key stays first, so the running processes can still read every secret.
    keys = stack_keys(stack_env)
    done, unreadable = await service.rotate(sessions, keys)
    assert done >= 1 and unreadable == []
    after = await row_of(sessions, cid, "rotated")
    assert after is not None and after.ciphertext != before.ciphertext
    assert after.updated_at == before.updated_at
    assert crypto.decrypt(keys, after.ciphertext) == value


# --- keys ----------------------------------------------------------------------------------


def test_embedded_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"  # not there yet
    key = crypto.embedded_key(data_dir)
    file = data_dir / crypto.KEY_FILE
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert file.read_text().strip() == key
    Fernet(key)  # a key Fernet takes
    assert crypto.embedded_key(data_dir) == key
    # No candidate file is left behind.
    assert sorted(p.name for p in data_dir.iterdir()) == [crypto.KEY_FILE]
    # And it is what the settings use when TANDEM_SECRET_KEY is unset.
    keys = crypto.cipher(Settings(data_dir=data_dir, secret_key=None))
    assert Fernet(key).decrypt(keys.encrypt(b"v").decode().encode()) == b"v"


def test_processes_starting_together_get_one_key(tmp_path: Path) -> None:
    found: list[str] = []
    start = threading.Barrier(8)

    def load() -> None:
        start.wait()
        found.append(crypto.embedded_key(tmp_path))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert os.listdir(tmp_path) == [crypto.KEY_FILE]


def test_a_bad_key_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / crypto.KEY_FILE).write_text("not a key\n")
    with pytest.raises(crypto.SecretKeyError, match="does not hold a Fernet key"):
        crypto.cipher(Settings(data_dir=tmp_path, secret_key=None))


def test_a_bad_secret_key_setting_is_refused_without_echoing_it() -> None:
    good = Fernet.generate_key().decode()
    for bad in (good[:-2], good + "x", "not-a-key", f"{good},{good[:-2]}"):
        with pytest.raises(ValidationError) as refused:
            Settings(secret_key=bad)  # type: ignore[arg-type]
        assert "not a Fernet key" in str(refused.value)
        assert good[:-2] not in str(refused.value) and "not-a-key" not in str(refused.value)


def test_several_keys_the_first_encrypts_every_one_decrypts(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = crypto.cipher(Settings(data_dir=tmp_path, secret_key=old))  # type: ignore[arg-type]
    token = crypto.encrypt(before, "value")
    both = crypto.cipher(Settings(data_dir=tmp_path, secret_key=f" {new} , {old}"))  # type: ignore[arg-type]
    assert crypto.decrypt(both, token) == "value"
    rotated = crypto.reencrypt(both, token)
    only_new = crypto.cipher(Settings(data_dir=tmp_path, secret_key=new))  # type: ignore[arg-type]
    assert crypto.decrypt(only_new, rotated) == "value"
    with pytest.raises(crypto.InvalidToken):
        crypto.decrypt(only_new, token)
    # A key given in the setting leaves the data directory alone.
    assert not (tmp_path / crypto.KEY_FILE).exists()
