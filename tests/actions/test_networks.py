"""What actions may reach (TANDEM_ACTION_NETWORKS): checked when the call is made, after
placeholders are filled, on the address the connection then goes to. The actions are
called in-process, against a real runbook service on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import outbound
from app.actions import registry
from app.actions.base import ActionDeps, ActionFailed, StepCall
from app.columns import new_id, utcnow
from app.webhooks import signing
from tests.runbook import Runbook


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with outbound.client() as client:
        yield client


async def no_secrets(cluster_id: str, name: str) -> str:
    raise ActionFailed(f"secret {name!r} is not set")


def a_call(step: str = "promote") -> StepCall:
    return StepCall(
        cluster_id=new_id("cl"),
        cluster_name="pair",
        operation_id=new_id("op"),
        kind="failover",
        mode="planned",
        step=step,
        phase="do",
        attempt=1,
        idempotency_key=f"{new_id('op')}:{step}:1",
        deadline_at=utcnow() + timedelta(seconds=30),
        source={"name": "east", "region": "us-east-1"},
        target={"name": "west", "region": "us-west-2"},
        deployments=[],
        signing_secrets=(signing.new_secret(),),
    )


async def call(
    settings: dict[str, Any],
    networks: outbound.Networks,
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
) -> Any:
    deps = ActionDeps(sessions=sessions, http=http, secrets=no_secrets, networks=networks)
    return await registry.build(settings, deps).do(a_call())


@pytest.mark.parametrize("kind", ["http", "check"])
async def test_private_refuses_a_loopback_runbook_with_a_clear_error(
    kind: str,
    runbook: Runbook,
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
) -> None:
    url = runbook.url("/promote")
    settings = {"kind": "http", "url": url} if kind == "http" else {"kind": kind, "urls": [url]}
    with pytest.raises(ActionFailed) as refused:
        await call(settings, outbound.Networks.PRIVATE, sessions, http)
    assert "not reachable from here" in refused.value.message
    assert "127.0.0.1" in refused.value.message
    assert refused.value.transient is False
    assert runbook.calls == []
    # The same call under `all` reaches it.
    assert await call(settings, outbound.Networks.ALL, sessions, http)
    assert len(runbook.calls) == 1


@pytest.mark.parametrize("networks", list(outbound.Networks))
@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://{target.region}.169.254.169.254.nip.io.invalid/",
    ],
)
async def test_link_local_is_refused_under_every_setting(
    networks: outbound.Networks,
    url: str,
    sessions: async_sessionmaker[AsyncSession],
    http: httpx.AsyncClient,
) -> None:
    with pytest.raises(ActionFailed) as refused:
        await call({"kind": "http", "url": url}, networks, sessions, http)
    assert "not reachable from here" in refused.value.message
    assert refused.value.transient is False
    if "{" in url:
        # Checked after the placeholders were filled in.
        assert "us-west-2.169.254.169.254" in refused.value.message
