"""The incident CLI (DESIGN.md section 12) as a child process against the real API server
and workers: exit codes, the live steps, JSON output, the typed confirmation and Ctrl-C.

It does not depend on the database backend: it runs in the first backend's pass only."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import subprocess
import threading
import uuid
from typing import Any

import httpx
import pexpect
import pytest

from tests.access.test_access import create_token
from tests.actions.test_approval import approval_plan
from tests.actions.test_http import create_planned, runbook_plan
from tests.backends import backends
from tests.cli.conftest import TANDEM, Tandem, cli_env
from tests.conftest import BACKEND
from tests.helpers import create_cluster, start_ok, wait_done, wait_for
from tests.runbook import Call, Reply, Runbook
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.skipif(
    backends()[0] != BACKEND,
    reason=f"independent of the database backend; runs in the {backends()[0]} pass only",
)

DEFAULT_STEPS = [
    "preflight",
    "pause_schedulers",
    "drain_replication",
    "promote_target",
    "switch_traffic",
    "validate_deployments",
    "resume_schedulers",
]


async def run(tandem: Tandem, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(tandem, *args, **kwargs)


async def operations_of(client: httpx.AsyncClient, cluster_id: str) -> list[dict[str, Any]]:
    page = await client.get("/v1/operations", params={"cluster_id": cluster_id})
    assert page.status_code == 200, page.text
    return page.json()["items"]  # type: ignore[no-any-return]


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr


async def test_failover_wait_shows_each_step_and_exits_0(
    client: httpx.AsyncClient, tandem: Tandem
) -> None:
    pair = await create_cluster(client, step_delay_ms=50)
    result = await run(tandem, "failover", pair["name"], "--wait", "--yes", "--reason", "drill")
    assert result.returncode == 0, result.stdout + result.stderr
    for step in DEFAULT_STEPS:
        assert f"{step}: succeeded" in result.stdout, result.stdout
    assert "succeeded" in result.stdout.splitlines()[-1]
    assert "Idempotency-Key: " in result.stderr
    after = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert after["state"] == "secondary-active"
    [operation] = await operations_of(client, pair["id"])
    assert operation["reason"] == "drill" and operation["status"] == "succeeded"


async def test_the_printed_idempotency_key_gives_back_the_same_operation(
    client: httpx.AsyncClient, tandem: Tandem
) -> None:
    pair = await create_cluster(client, step_delay_ms=10)
    first = await run(tandem, "failover", pair["id"], "--yes", "--output", "json")
    assert first.returncode == 0, first.stderr
    key = first.stderr.split("Idempotency-Key: ", 1)[1].split()[0]
    again = await run(
        tandem, "failover", pair["id"], "--yes", "--idempotency-key", key, "--output", "json"
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["id"] == json.loads(first.stdout)["id"]
    assert len(await operations_of(client, pair["id"])) == 1


async def test_a_refused_failover_exits_3(client: httpx.AsyncClient, tandem: Tandem) -> None:
    pair = await create_cluster(client, step_delay_ms=10)
    done = await wait_done(client, (await start_ok(client, pair["id"]))["id"])
    assert done["status"] == "succeeded"
    result = await run(tandem, "failover", pair["name"], "--wait", "--yes")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "secondary-active" in result.stderr
    no_traceback(result)
    assert len(await operations_of(client, pair["id"])) == 1


async def test_a_failing_plan_exits_1(
    client: httpx.AsyncClient, tandem: Tandem, runbook: Runbook
) -> None:
    def answer(call: Call) -> Reply:
        # A 4xx is not transient: the step fails at once.
        if call.path == "/prepare":
            return Reply(400, {"error": "the runbook refuses"})
        return Reply(200, {"ok": True})

    runbook.answer = answer
    pair = await create_planned(client, runbook_plan(runbook))
    result = await run(tandem, "failover", pair["name"], "--wait", "--yes")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "prepare: failed" in result.stdout, result.stdout
    [operation] = await operations_of(client, pair["id"])
    assert operation["status"] == "failed"
    no_traceback(result)


async def test_a_viewer_token_exits_4(
    client: httpx.AsyncClient, tandem: Tandem, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    viewer = await create_token(client, "viewer")
    result = await run(tandem, "failover", pair["name"], "--yes", "--wait", token=viewer["token"])
    assert result.returncode == 4, result.stdout + result.stderr
    no_traceback(result)
    assert await operations_of(client, pair["id"]) == []
    # A token the server does not know is the same answer.
    unknown = await run(tandem, "pairs", token="tdm_not-a-token")
    assert unknown.returncode == 4, unknown.stderr


async def test_an_unknown_pair_name_is_a_usage_error(tandem: Tandem) -> None:
    result = await run(tandem, "status", "no-such-pair-anywhere")
    assert result.returncode == 2
    assert "no-such-pair-anywhere" in result.stderr
    no_traceback(result)


async def test_output_json_is_the_apis_resources(client: httpx.AsyncClient, tandem: Tandem) -> None:
    pair = await create_cluster(client, step_delay_ms=10)
    name = pair["name"]

    listed = json.loads((await run(tandem, "pairs", "--output", "json")).stdout)
    assert pair["id"] in [p["id"] for p in listed]

    status = json.loads((await run(tandem, "status", name, "--output", "json")).stdout)
    assert status == (await client.get(f"/v1/clusters/{pair['id']}")).json()

    plan = json.loads((await run(tandem, "failover", name, "--dry-run", "-o", "json")).stdout)
    assert plan["dry_run"] is True and plan["kind"] == "failover"
    assert [s["name"] for s in plan["steps"]] == DEFAULT_STEPS
    assert await operations_of(client, pair["id"]) == []  # a dry run changes nothing

    waited = await run(tandem, "failover", name, "--wait", "--yes", "--output", "json")
    assert waited.returncode == 0, waited.stderr
    final = json.loads(waited.stdout)
    assert final["status"] == "succeeded" and final["done"] is True
    assert "promote_target" in waited.stderr  # the live steps went to stderr

    shown = json.loads((await run(tandem, "op", "show", final["id"], "-o", "json")).stdout)
    assert shown == (await client.get(f"/v1/operations/{final['id']}")).json()

    events = json.loads((await run(tandem, "events", name, "--output", "json")).stdout)
    assert "cluster.state_changed" in [e["type"] for e in events]
    assert {e["cluster_id"] for e in events} == {pair["id"]}

    deployments = json.loads((await run(tandem, "deployments", name, "-o", "json")).stdout)
    assert [d["name"] for d in deployments] == ["api", "billing"]


async def test_dry_run_shows_the_plan_and_starts_nothing(
    client: httpx.AsyncClient, tandem: Tandem
) -> None:
    pair = await create_cluster(client)
    result = await run(tandem, "failover", pair["name"], "--dry-run")
    assert result.returncode == 0, result.stderr
    for step in DEFAULT_STEPS:
        assert step in result.stdout
    assert "expected duration" in result.stdout
    assert await operations_of(client, pair["id"]) == []
    after = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert after["state"] == "primary-active"


def confirm_through_a_terminal(stack: Stack, name: str, typed: str) -> tuple[int, str]:
    """`tandem failover NAME` in a pseudo-terminal, typing `typed` at its prompt."""
    child = pexpect.spawn(
        TANDEM[0],
        [*TANDEM[1:], "failover", name],
        env=cli_env(stack),
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=60,
    )
    child.expect("Type the pair name")
    child.sendline(typed)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.before


async def test_without_yes_a_wrong_name_aborts_and_starts_nothing(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    status, output = await asyncio.to_thread(
        confirm_through_a_terminal, live_stack, pair["name"], "some-other-pair"
    )
    assert status == 2, output
    assert "aborted" in output
    assert await operations_of(client, pair["id"]) == []


async def test_without_yes_the_right_name_starts_the_operation(
    client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client, step_delay_ms=10)
    status, output = await asyncio.to_thread(
        confirm_through_a_terminal, live_stack, pair["name"], pair["name"]
    )
    assert status == 0, output
    [operation] = await operations_of(client, pair["id"])
    assert operation["kind"] == "failover"
    assert operation["id"] in output
    await wait_done(client, operation["id"])


def read_lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)
    into.put("")


def wait_for_line(lines: queue.Queue[str], needle: str, seen: list[str]) -> None:
    while True:
        line = lines.get(timeout=90)
        assert line, f"the CLI ended before {needle!r}:\n{''.join(seen)}"
        seen.append(line)
        if needle in line:
            return


def spawn(stack: Stack, *args: str) -> subprocess.Popen[str]:
    """`tandem ARGS...` left running, its stdout and stderr in one pipe."""
    return subprocess.Popen(
        [*TANDEM, *args],
        env=cli_env(stack),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_ctrl_c_while_waiting_leaves_the_operation_running(
    client: httpx.AsyncClient, live_stack: Stack, runbook: Runbook
) -> None:
    pair = await create_planned(client, approval_plan(runbook))
    child = spawn(live_stack, "failover", pair["name"], "--wait", "--yes")
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=read_lines, args=(child.stdout, lines), daemon=True).start()
        seen: list[str] = []
        # The CLI shows the approval step waiting: it is inside its wait.
        await asyncio.to_thread(wait_for_line, lines, "approve: waiting", seen)
        child.send_signal(signal.SIGINT)
        status = await asyncio.to_thread(child.wait, 60)
        while (line := await asyncio.to_thread(lines.get, True, 30)) != "":
            seen.append(line)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    output = "".join(seen)
    assert status == 130, output
    [operation] = await operations_of(client, pair["id"])
    assert f"tandem op cancel {operation['id']}" in output
    assert "Traceback" not in output

    now = (await client.get(f"/v1/operations/{operation['id']}")).json()
    assert not now["done"] and now["status"] == "running", now
    assert now["awaiting_approval"]["step"] == "approve"
    rejected = await client.post(f"/v1/operations/{operation['id']}/reject", json={})
    assert rejected.status_code == 202, rejected.text
    assert (await wait_done(client, operation["id"]))["status"] == "cancelled"


async def test_op_wait_and_approve_carry_an_operation_through(
    client: httpx.AsyncClient, tandem: Tandem, runbook: Runbook
) -> None:
    pair = await create_planned(client, approval_plan(runbook))
    operation = await start_ok(client, pair["id"])

    async def asked() -> bool:
        current = (await client.get(f"/v1/operations/{operation['id']}")).json()
        return current["awaiting_approval"] is not None

    await wait_for(asked, timeout_s=60)
    approved = await run(tandem, "op", "approve", operation["id"], "--comment", "go", "--wait")
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "switch: succeeded" in approved.stdout
    waited = await run(tandem, "op", "wait", operation["id"])
    assert waited.returncode == 0 and "succeeded" in waited.stdout
    # Approving again is refused: nothing waits for a person now.
    again = await run(tandem, "op", "approve", operation["id"])
    assert again.returncode == 3, again.stderr


async def test_evacuate_wait_shows_the_counts_and_exits_0(
    client: httpx.AsyncClient, tandem: Tandem
) -> None:
    from tests.batches.test_evacuation import register

    region = f"cli-{uuid.uuid4().hex[:6]}"
    pairs = [await register(client, region, "us-west-2") for _ in range(3)]
    result = await run(tandem, "evacuate", region, "--wait", "--yes", "--max-parallel", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    no_traceback(result)
    assert "succeeded" in result.stdout and "3 succeeded" in result.stdout, result.stdout
    for pair in pairs:
        assert pair["name"] in result.stdout
        assert (await client.get(f"/v1/clusters/{pair['id']}")).json()["state"] == (
            "secondary-active"
        )
    listed = await run(tandem, "batch", "show", _batch_id(result.stdout), "--output", "json")
    assert json.loads(listed.stdout)["counts"]["succeeded"] == 3


def _batch_id(text: str) -> str:
    return next(word for word in text.replace("(", " ").split() if word.startswith("bt_"))


async def test_evacuate_asks_for_the_region_and_names_the_count(
    client: httpx.AsyncClient, stack: Stack
) -> None:
    from tests.batches.test_evacuation import register

    region = f"cli-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        await register(client, region, "us-west-2")

    def typed(answer: str) -> tuple[int | None, str]:
        child = pexpect.spawn(
            TANDEM[0],
            [*TANDEM[1:], "evacuate", region],
            env=cli_env(stack),
            cwd=str(ROOT),
            encoding="utf-8",
            timeout=60,
        )
        child.expect("2 pair\\(s\\) active there will move")
        child.expect("Type the region")
        child.sendline(answer)
        child.expect(pexpect.EOF)
        child.close()
        return child.exitstatus, child.before

    status, _ = await asyncio.to_thread(typed, "us-east-2")
    assert status == 2
    assert (await client.get("/v1/batches")).json()["items"][0]["region"] != region
    status, shown = await asyncio.to_thread(typed, region)
    assert status == 0, shown
    assert (await client.get("/v1/batches")).json()["items"][0]["region"] == region
