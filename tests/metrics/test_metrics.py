from __future__ import annotations

import httpx

from tests.helpers import create_cluster, start_ok, wait_done


def gauge(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    line = next(line for line in text.splitlines() if line.startswith(prefix))
    return float(line.split()[-1])


async def test_metrics_count_pairs_and_operations(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    cluster = await create_cluster(client)
    op = await start_ok(client, cluster["id"])
    await wait_done(client, op["id"])
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert gauge(after, "tandem_clusters", state="secondary-active") == (
        gauge(before, "tandem_clusters", state="secondary-active") + 1
    )
    succeeded = gauge(after, "tandem_operations", kind="failover", status="succeeded")
    assert succeeded >= 1
    assert gauge(after, "tandem_operations_needing_attention") >= 0
