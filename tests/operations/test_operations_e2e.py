"""Failover and failback through the public API, with the worker as a real process."""

from __future__ import annotations

import httpx

from tests.helpers import create_cluster, events, start_ok, wait_done


async def test_failover_then_failback_end_to_end(client: httpx.AsyncClient) -> None:
    cluster = await create_cluster(client)
    cid = cluster["id"]

    op = await start_ok(client, cid, "failover", reason="region degraded")
    assert op["status"] == "queued" and op["from_state"] == "primary-active"
    done = await wait_done(client, op["id"])
    assert done["status"] == "succeeded", done
    assert [s["status"] for s in done["steps"]] == ["succeeded"] * 7
    assert done["progress"] == {"completed_steps": 7, "total_steps": 7}
    after = (await client.get(f"/v1/clusters/{cid}")).json()
    assert after["state"] == "secondary-active"
    assert after["active_region"] == "us-west-2"
    assert after["last_operation_id"] == op["id"]

    back = await start_ok(client, cid, "failback")
    assert (await wait_done(client, back["id"]))["status"] == "succeeded"
    final = (await client.get(f"/v1/clusters/{cid}")).json()
    assert final["state"] == "primary-active" and final["active_region"] == "us-east-1"

    log = await events(client, cid)
    assert [e["sequence"] for e in log] == list(range(1, len(log) + 1))
    transitions = [
        (e["data"]["from"], e["data"]["to"], e["data"]["operation_id"])
        for e in log
        if e["type"] == "cluster.state_changed"
    ]
    assert transitions == [
        ("primary-active", "failing-over", op["id"]),
        ("failing-over", "secondary-active", op["id"]),
        ("secondary-active", "failing-back", back["id"]),
        ("failing-back", "primary-active", back["id"]),
    ]
    for e in log:
        assert set(e) == {"id", "type", "created_at", "cluster_id", "sequence", "data"}
