from __future__ import annotations

import httpx

from tests.helpers import create_cluster, start_ok, wait_done


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
