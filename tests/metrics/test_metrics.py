"""`GET /metrics` (DESIGN.md section 11), parsed with prometheus_client's own parser: the
families read from the database on the API, the ones counted by the process that did the
work on the API and on each worker's health port, one organization per token. Real API
and worker processes, a real webhook receiver."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.access.test_access import as_token, cli, unique
from tests.actions.test_http import create_planned
from tests.helpers import create_cluster, open_gate, pair_body, start_ok, wait_done, wait_for
from tests.receiver import Answer, Receiver
from tests.stack import Stack

# Read from the database when scraped: on the API only.
DATABASE_FAMILIES = {
    "tandem_pair_info": "gauge",
    "tandem_pair_state": "gauge",
    "tandem_pair_ready": "gauge",
    "tandem_replication_lag_seconds": "gauge",
    "tandem_pair_rto_target_seconds": "gauge",
    "tandem_pair_rpo_target_seconds": "gauge",
    "tandem_operations_in_progress": "gauge",
    "tandem_operations_needing_attention": "gauge",
    "tandem_operation_oldest_running_seconds": "gauge",
    "tandem_webhook_oldest_pending_seconds": "gauge",
    "tandem_last_drill_success_timestamp": "gauge",
    "tandem_pair_drill_every_days": "gauge",
}
# Counted by the process that did the work: on the API and on each worker's health port.
PROCESS_FAMILIES = {
    "tandem_operation_duration_seconds": "histogram",
    "tandem_step_duration_seconds": "histogram",
    "tandem_step_timeouts_total": "counter",
    "tandem_webhook_deliveries_total": "counter",
    "tandem_http_requests_total": "counter",
    "tandem_http_request_duration_seconds": "histogram",
}
STATES = ("primary-active", "failing-over", "secondary-active", "failing-back")
HEALTH_LOG = re.compile(r"worker health on http://[^:]+:(\d+) ")


# -- reading a scrape -----------------------------------------------------------------


def declared(text: str) -> dict[str, str]:
    """Each family's name and type as exposed (`# TYPE` lines), samples or not."""
    return {
        parts[2]: parts[3]
        for parts in (line.split() for line in text.splitlines() if line.startswith("# TYPE "))
    }


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def matching(found: list[Sample], name: str, **labels: str) -> list[Sample]:
    return [
        s for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(found: list[Sample], name: str, **labels: str) -> float:
    """The sum of the matching samples (0 when there are none)."""
    return sum(s.value for s in matching(found, name, **labels))


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def worker_ports(stack: Stack) -> list[int]:
    """The health port each live worker logged when it took a free one."""

    async def logged() -> list[int] | None:
        ports = []
        for worker in stack.live_workers():
            found = HEALTH_LOG.findall(worker.log_path.read_text(errors="replace"))
            if not found:
                return None
            ports.append(int(found[-1]))
        return ports or None

    ports: list[int] = await wait_for(logged, timeout_s=60, interval_s=0.2)
    return ports


async def scrape_workers(stack: Stack, client: httpx.AsyncClient) -> list[str]:
    """Every worker's /metrics with the client's token (an operation ran on one of them)."""
    texts = []
    for port in await worker_ports(stack):
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            headers={"Authorization": client.headers["Authorization"]},
        ) as worker:
            texts.append(await scrape(worker))
    return texts


async def workers_sum(stack: Stack, client: httpx.AsyncClient, name: str, **labels: str) -> float:
    return sum(value(samples(t), name, **labels) for t in await scrape_workers(stack, client))


@asynccontextmanager
async def organization(stack: Stack, env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of a new organization: figures that no other test moves."""
    async with as_token(stack, cli(env, "orgs", "create", unique("org"))) as admin:
        yield admin


def org_of(text: str) -> set[str]:
    return {s.labels["org"] for s in samples(text) if "org" in s.labels}


# -- the families ---------------------------------------------------------------------


async def test_every_family_is_exposed_before_its_first_sample(
    live_stack: Stack, stack_env: dict[str, str]
) -> None:
    async with organization(live_stack, stack_env) as admin:
        text = await scrape(admin)
        worker_texts = await scrape_workers(live_stack, admin)
    assert declared(text).items() >= {**DATABASE_FAMILIES, **PROCESS_FAMILIES}.items()
    found = samples(text)
    # A new organization: no pairs, nothing running, nothing counted yet (its first
    # request is this scrape, counted once answered).
    for name in DATABASE_FAMILIES:
        assert [s for s in found if s.name == name and s.value != 0] == [], name
    assert [s for s in found if s.name.startswith(tuple(PROCESS_FAMILIES))] == []
    assert value(found, "tandem_operations_in_progress") == 0
    assert matching(found, "tandem_operation_oldest_running_seconds") != []
    for worker_text in worker_texts:
        exposed = declared(worker_text)
        assert exposed.items() >= PROCESS_FAMILIES.items()
        # The database's families are the API's; a worker has its process figures too.
        assert not exposed.keys() & DATABASE_FAMILIES.keys()
        assert "process_cpu_seconds_total" in exposed
        assert [s for s in samples(worker_text) if s.name.startswith("tandem_")] == []


async def test_the_active_role_and_the_state_follow_a_failover(client: httpx.AsyncClient) -> None:
    body = {**pair_body(), "rto_target_s": 600, "rpo_target_s": 30}
    response = await client.post("/v1/clusters", json=body)
    assert response.status_code == 201, response.text
    pair = response.json()
    name = pair["name"]

    before = samples(await scrape(client))
    info = {
        (s.labels["cloud_region"], s.labels["cloud"], s.labels["role"]): s.value
        for s in matching(before, "tandem_pair_info", pair=name)
    }
    assert info == {("us-east-1", "aws", "active"): 1, ("us-west-2", "aws", "standby"): 1}
    states = {s.labels["state"]: s.value for s in matching(before, "tandem_pair_state", pair=name)}
    assert states == {state: 1 if state == "primary-active" else 0 for state in STATES}
    assert value(before, "tandem_pair_rto_target_seconds", pair=name) == 600
    assert value(before, "tandem_pair_rpo_target_seconds", pair=name) == 30
    # Never evaluated (a default plan has nothing to probe until asked): no sample.
    assert matching(before, "tandem_pair_ready", pair=name) == []
    # Nothing measures replication lag yet: the family is there, empty.
    assert matching(before, "tandem_replication_lag_seconds", pair=name) == []

    op = await start_ok(client, pair["id"])
    assert (await wait_done(client, op["id"]))["status"] == "succeeded"
    after = samples(await scrape(client))
    active = matching(after, "tandem_pair_info", pair=name, role="active")
    standby = matching(after, "tandem_pair_info", pair=name, role="standby")
    assert [s.labels["cloud_region"] for s in active] == ["us-west-2"]
    assert [s.labels["cloud_region"] for s in standby] == ["us-east-1"]
    states = {s.labels["state"]: s.value for s in matching(after, "tandem_pair_state", pair=name)}
    assert states == {state: 1 if state == "secondary-active" else 0 for state in STATES}


async def test_pair_ready_is_the_last_readiness_evaluation(client: httpx.AsyncClient) -> None:
    ready = await create_cluster(client)
    evaluated = await client.get(f"/v1/clusters/{ready['id']}/readiness", params={"fresh": True})
    assert evaluated.status_code == 200 and evaluated.json()["ready"] is True, evaluated.text
    # A secret the plan needs is not set: not ready.
    plan = {
        "steps": [
            {
                "name": "promote",
                "action": {
                    "kind": "http",
                    "url": "http://127.0.0.1:9/promote",
                    "headers": {"Authorization": {"$secret": "ops-token"}},
                },
                "point_of_no_return": True,
            }
        ]
    }
    unready = await create_planned(client, plan)
    evaluated = await client.get(f"/v1/clusters/{unready['id']}/readiness")
    assert evaluated.status_code == 200 and evaluated.json()["ready"] is False, evaluated.text

    found = samples(await scrape(client))
    assert value(found, "tandem_pair_ready", pair=ready["name"]) == 1
    assert len(matching(found, "tandem_pair_ready", pair=unready["name"])) == 1
    assert value(found, "tandem_pair_ready", pair=unready["name"]) == 0


async def test_operations_in_progress_oldest_running_and_needing_attention(
    live_stack: Stack, stack_env: dict[str, str], sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with organization(live_stack, stack_env) as admin:
        held = await create_cluster(admin, gate=["preflight"])
        op = await start_ok(admin, held["id"])

        async def running_a_while() -> list[Sample] | None:
            found = samples(await scrape(admin))
            oldest = value(found, "tandem_operation_oldest_running_seconds")
            return found if oldest >= 1 else None

        found = await wait_for(running_a_while, timeout_s=30, interval_s=0.2)
        assert value(found, "tandem_operations_in_progress") == 1
        assert value(found, "tandem_pair_state", pair=held["name"], state="failing-over") == 1
        await open_gate(sessions, held["id"], "preflight")
        assert (await wait_done(admin, op["id"]))["status"] == "succeeded"
        found = samples(await scrape(admin))
        assert value(found, "tandem_operations_in_progress") == 0
        assert value(found, "tandem_operation_oldest_running_seconds") == 0

        # A failure past the point of no return leaves its pair mid-switch: it needs attention.
        stuck = await create_cluster(admin, fail={"promote_target": 1})
        failed = await start_ok(admin, stuck["id"])
        assert (await wait_done(admin, failed["id"]))["needs_attention"] is True
        found = samples(await scrape(admin))
        assert value(found, "tandem_operations_needing_attention") == 1
        assert value(found, "tandem_pair_state", pair=stuck["name"], state="failing-over") == 1

        # A retry that succeeds clears it.
        retried = await admin.post(f"/v1/operations/{failed['id']}/retry")
        assert retried.status_code == 202, retried.text
        assert (await wait_done(admin, failed["id"]))["status"] == "succeeded"
        found = samples(await scrape(admin))
        assert value(found, "tandem_operations_needing_attention") == 0
        assert value(found, "tandem_pair_state", pair=stuck["name"], state="secondary-active") == 1


# -- counted by the process that did the work -------------------------------------------


async def test_operation_and_step_histograms_count_on_the_worker_that_ran_them(
    live_stack: Stack, stack_env: dict[str, str]
) -> None:
    async with (
        organization(live_stack, stack_env) as ours,
        organization(live_stack, stack_env) as theirs,
    ):
        pair = await create_cluster(ours)
        op = await start_ok(ours, pair["id"], mode="planned")
        assert (await wait_done(ours, op["id"]))["status"] == "succeeded"
        back = await start_ok(ours, pair["id"], "failback", mode="forced", accept_data_loss=True)
        assert (await wait_done(ours, back["id"]))["status"] == "succeeded"

        async def observed() -> bool:
            # The observers run once the worker's write has committed: soon after `done`.
            return (
                await workers_sum(live_stack, ours, "tandem_operation_duration_seconds_count") == 2
            )

        await wait_for(observed, timeout_s=30, interval_s=0.2)
        texts = await scrape_workers(live_stack, ours)
        found = [s for text in texts for s in samples(text)]
        ours_org = org_of("\n".join(texts))
        assert len(ours_org) == 1  # the token's organization only
        count = "tandem_operation_duration_seconds_count"
        assert value(found, count, kind="failover", mode="planned", outcome="succeeded") == 1
        assert value(found, count, kind="failback", mode="forced", outcome="succeeded") == 1
        assert value(found, "tandem_operation_duration_seconds_sum") > 0
        steps = "tandem_step_duration_seconds_count"
        assert value(found, steps, step="preflight", action="simulated", outcome="succeeded") == 2
        assert value(found, steps, step="promote_target", outcome="succeeded") == 2
        # Skipped by the forced failback: observed once.
        assert value(found, steps, step="pause_schedulers", outcome="succeeded") == 1
        assert value(found, "tandem_step_timeouts_total") == 0

        # Another organization sees neither the pair nor the counts, on any process.
        other = await scrape(theirs)
        other_workers = await scrape_workers(live_stack, theirs)
        assert not matching(samples(other), "tandem_pair_info", pair=pair["name"])
        assert not ours_org & org_of(other)
        for text in other_workers:
            assert value(samples(text), count) == 0
            assert not ours_org & org_of(text)


async def test_a_step_timeout_is_counted(live_stack: Stack, stack_env: dict[str, str]) -> None:
    async with organization(live_stack, stack_env) as admin:
        pair = await create_cluster(admin, gate=["preflight"], timeout_s={"preflight": 1})
        op = await start_ok(admin, pair["id"])
        done = await wait_done(admin, op["id"])
        assert done["status"] == "failed" and done["error"]["code"] == "step_timed_out", done

        async def counted() -> bool:
            return await workers_sum(live_stack, admin, "tandem_step_timeouts_total") == 1

        await wait_for(counted, timeout_s=30, interval_s=0.2)
        found = [s for text in await scrape_workers(live_stack, admin) for s in samples(text)]
        assert value(found, "tandem_step_timeouts_total", step="preflight") == 1
        assert (
            value(found, "tandem_step_duration_seconds_count", step="preflight", outcome="failed")
            == 1
        )
        operations = "tandem_operation_duration_seconds_count"
        assert value(found, operations, kind="failover", outcome="failed") == 1


async def test_a_receiver_answering_500_moves_failed_deliveries(
    live_stack: Stack, stack_env: dict[str, str]
) -> None:
    receiver = Receiver().start()
    receiver.default = Answer(status=500)
    try:
        async with organization(live_stack, stack_env) as admin:
            hook = await admin.post("/v1/webhooks", json={"url": receiver.url})
            assert hook.status_code == 201, hook.text
            try:
                # A failover's events, each a delivery to the endpoint.
                pair = await create_cluster(admin)
                op = await start_ok(admin, pair["id"])
                assert (await wait_done(admin, op["id"]))["status"] == "succeeded"

                # Retried on the schedule: pending meanwhile, so the oldest pending ages.
                async def pending() -> float:
                    found = samples(await scrape(admin))
                    return value(found, "tandem_webhook_oldest_pending_seconds")

                assert await wait_for(pending, timeout_s=30, interval_s=0.1) > 0

                async def failed() -> float:
                    return await workers_sum(
                        live_stack, admin, "tandem_webhook_deliveries_total", outcome="failed"
                    )

                assert await wait_for(failed, timeout_s=60, interval_s=0.2) >= 1
                assert (
                    await workers_sum(
                        live_stack, admin, "tandem_webhook_deliveries_total", outcome="succeeded"
                    )
                    == 0
                )
                assert receiver.received, "the receiver was not called"
            finally:
                await admin.delete(f"/v1/webhooks/{hook.json()['id']}")
    finally:
        receiver.stop()


async def test_http_requests_are_counted_by_route_template(
    live_stack: Stack, stack_env: dict[str, str]
) -> None:
    async with organization(live_stack, stack_env) as admin:
        pair = await create_cluster(admin)
        for _ in range(3):
            assert (await admin.get(f"/v1/clusters/{pair['id']}")).status_code == 200
        assert (await admin.get("/v1/clusters/clu_doesnotexist")).status_code == 404
        await scrape(admin)
        found = samples(await scrape(admin))
    route = "/v1/clusters/{cluster_id}"
    requests = "tandem_http_requests_total"
    assert value(found, requests, method="GET", route=route, status="200") == 3
    assert value(found, requests, method="GET", route=route, status="404") == 1
    assert value(found, requests, method="POST", route="/v1/clusters", status="201") == 1
    assert value(found, requests, method="GET", route="/metrics", status="200") == 1
    assert value(found, "tandem_http_request_duration_seconds_count", route=route) == 4
    routes = {s.labels["route"] for s in found if "route" in s.labels}
    assert not any(pair["id"] in r or "doesnotexist" in r for r in routes), routes
    # One organization's samples, whatever others did meanwhile.
    assert len({s.labels["org"] for s in found if "org" in s.labels}) == 1


async def test_metrics_need_a_token(client: httpx.AsyncClient, live_stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=str(client.base_url), timeout=30) as anonymous:
        response = await anonymous.get("/metrics")
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    for port in await worker_ports(live_stack):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as worker:
            response = await worker.get("/metrics")
            assert response.status_code == 401, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            # The probes stay open.
            assert (await worker.get("/healthz")).status_code == 200
