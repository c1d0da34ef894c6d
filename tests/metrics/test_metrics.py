from __future__ import annotations

import httpx

from tests.access.test_access import as_token, cli, unique
from tests.helpers import create_cluster, start_ok, wait_done
from tests.stack import Stack


def gauge(text: str, name: str, **labels: str) -> float:
    """A sample's value; 0 for a label set the gauge has not reported (yet)."""
    assert f"# TYPE {name} gauge" in text, f"no gauge {name}"
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    line = next((line for line in text.splitlines() if line.startswith(prefix)), None)
    return float(line.split()[-1]) if line is not None else 0.0


async def test_metrics_count_pairs_and_operations(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text

    def delta(text: str, name: str, **labels: str) -> float:
        return gauge(text, name, **labels) - gauge(before, name, **labels)

    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
    # A failure past the point of no return leaves its pair mid-switch: it needs attention.
    stuck = await create_cluster(client, fail={"promote_target": 1})
    failed = await start_ok(client, stuck["id"])
    assert (await wait_done(client, failed["id"]))["needs_attention"] is True

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert delta(after, "tandem_clusters", state="secondary-active") == 1
    assert delta(after, "tandem_clusters", state="failing-over") == 1
    assert delta(after, "tandem_operations", kind="failover", status="succeeded") == 1
    assert delta(after, "tandem_operations", kind="failover", status="failed") == 1
    assert delta(after, "tandem_operations_needing_attention") == 1

    # A retry that succeeds clears the flag and moves the operation to succeeded.
    retried = await client.post(f"/v1/operations/{failed['id']}/retry")
    assert retried.status_code == 202, retried.text
    assert (await wait_done(client, failed["id"]))["status"] == "succeeded"
    healed = (await client.get("/metrics")).text
    assert delta(healed, "tandem_clusters", state="secondary-active") == 2
    assert delta(healed, "tandem_clusters", state="failing-over") == 0
    assert delta(healed, "tandem_operations", kind="failover", status="succeeded") == 2
    assert delta(healed, "tandem_operations", kind="failover", status="failed") == 0
    assert delta(healed, "tandem_operations_needing_attention") == 0


async def test_metrics_need_a_token(client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as anonymous:
        response = await anonymous.get("/metrics")
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def total(text: str, name: str) -> float:
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(f"{name}{{") or line.startswith(f"{name} ")
    )


async def test_a_viewer_sees_its_own_organization_only(
    client: httpx.AsyncClient, live_stack: Stack, stack_env: dict[str, str]
) -> None:
    # The admin's organization has pairs by now (this test made some if no other did).
    await create_cluster(client)
    ours_before = (await client.get("/metrics")).text
    assert total(ours_before, "tandem_clusters") >= 1
    async with as_token(live_stack, cli(stack_env, "orgs", "create", unique("org"))) as admin:
        created = await admin.post("/v1/tokens", json={"name": unique("scrape"), "role": "viewer"})
        assert created.status_code == 201, created.text
        # A new organization has nothing, whatever the others have.
        async with as_token(live_stack, created.json()["token"]) as viewer:
            empty = await viewer.get("/metrics")
            assert empty.status_code == 200, empty.text
            assert total(empty.text, "tandem_clusters") == 0
            assert total(empty.text, "tandem_operations") == 0

            cluster = await create_cluster(admin)
            op = await start_ok(admin, cluster["id"])
            assert (await wait_done(admin, op["id"]))["status"] == "succeeded"
            theirs = (await viewer.get("/metrics")).text
    assert total(theirs, "tandem_clusters") == 1
    assert gauge(theirs, "tandem_clusters", state="secondary-active") == 1
    assert total(theirs, "tandem_operations") == 1
    assert gauge(theirs, "tandem_operations", kind="failover", status="succeeded") == 1
    # And the default organization's scrape does not count the other's pair.
    ours = (await client.get("/metrics")).text
    assert total(ours, "tandem_clusters") == total(ours_before, "tandem_clusters")
