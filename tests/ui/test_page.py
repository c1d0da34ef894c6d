"""The Disaster Recovery page in a real Chromium (DESIGN.md section 12): its names are what
people, screen readers and these tests rely on."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.access.test_access import create_token
from tests.actions.test_approval import approval_plan, waiting
from tests.actions.test_http import create_planned
from tests.conftest import ADMIN_TOKEN
from tests.helpers import create_cluster, open_gate, start_ok, wait_done
from tests.runbook import Runbook
from tests.stack import Stack
from tests.ui.browser import axe_violations, open_pair, sign_in


async def test_fail_over_and_back_on_the_dr_tab(
    page: Page,
    client: httpx.AsyncClient,
    live_stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # switch_traffic waits for its gate: the page is shown mid-switch, then the rest of the
    # failover must reach it through the event stream.
    pair = await create_cluster(client, step_delay_ms=50, gate=["switch_traffic"])
    await open_pair(page, live_stack.base_url, ADMIN_TOKEN, pair["name"])
    status = page.get_by_role("status")
    await expect(status).to_have_text("Primary region active: us-east-1")
    await expect(page.get_by_role("button", name="Failback", exact=True)).to_be_disabled()

    await page.get_by_role("button", name="Failover", exact=True).click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    name_field = dialog.get_by_label("Type the pair name to confirm")
    await expect(name_field).to_be_focused()
    await expect(dialog.get_by_text("preflight")).to_be_visible()  # the dry run's steps
    confirm = dialog.get_by_role("button", name="Confirm failover")
    await expect(confirm).to_be_disabled()
    await name_field.fill(pair["name"][:-1])
    await expect(confirm).to_be_disabled()
    await name_field.fill(pair["name"])
    await dialog.get_by_label("Reason").fill("us-east-1 is down")
    await expect(confirm).to_be_enabled()
    await confirm.click()

    await expect(status).to_have_text("Failing over…")
    steps = page.get_by_role("list", name="Steps")
    await expect(steps.locator("[data-step=switch_traffic] .status")).to_have_text("running")
    # From here on, no navigation: what changes arrives over the event stream.
    await page.evaluate("window.stillTheSamePage = true")
    await open_gate(sessions, pair["id"], "switch_traffic")
    await expect(status).to_have_text("Failed over to secondary region: us-west-2")
    await expect(steps.locator("[data-step=switch_traffic] .status")).to_have_text("succeeded")
    await expect(steps.locator("[data-step=resume_schedulers] .status")).to_have_text("succeeded")
    assert await page.evaluate("window.stillTheSamePage") is True
    await expect(page.locator("#events")).to_contain_text("cluster.state_changed")
    await expect(page.get_by_role("button", name="Failover", exact=True)).to_be_disabled()

    # Failback through the Actions menu, by keyboard into the menu. The menu shows the
    # buttons as they are when it opens: wait until the page has enabled Failback.
    await expect(page.get_by_role("button", name="Failback", exact=True)).to_be_enabled()
    actions = page.get_by_role("button", name="Actions")
    await actions.click()
    await expect(actions).to_have_attribute("aria-expanded", "true")
    menu = page.get_by_role("menu")
    failover_item = menu.get_by_role("menuitem", name="Failover to Secondary…")
    await expect(failover_item).to_have_attribute("aria-disabled", "true")
    await menu.get_by_role("menuitem", name="Failback to Primary…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_role("heading", level=2)).to_have_text(re.compile("Fail back"))
    await dialog.get_by_label("Type the pair name to confirm").fill(pair["name"])
    await dialog.get_by_role("button", name="Confirm failback").click()
    # (The gate stays open: this time the steps may all be done before the page is back.)
    await expect(status).to_have_text("Primary region active: us-east-1")

    operations = (await client.get("/v1/operations", params={"cluster_id": pair["id"]})).json()
    kinds = [(op["kind"], op["status"], op["reason"]) for op in operations["items"]]
    assert ("failover", "succeeded", "us-east-1 is down") in kinds
    assert ("failback", "succeeded", None) in kinds


async def test_forced_failover_needs_consent_to_data_loss(
    page: Page, client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    await open_pair(page, live_stack.base_url, ADMIN_TOKEN, pair["name"])
    await page.get_by_role("button", name="Failover", exact=True).click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("Type the pair name to confirm").fill(pair["name"])
    confirm = dialog.get_by_role("button", name="Confirm failover")
    await expect(confirm).to_be_enabled()
    await dialog.get_by_label("Forced (primary unreachable)").check()
    await expect(dialog.get_by_text("Last measured lag").first).to_be_visible()
    await expect(confirm).to_be_disabled()
    await dialog.get_by_label("I accept data loss").check()
    await expect(confirm).to_be_enabled()
    await confirm.click()
    await expect(page.get_by_role("status")).to_have_text(
        "Failed over to secondary region: us-west-2"
    )
    last = (await client.get(f"/v1/clusters/{pair['id']}")).json()["last_operation_id"]
    operation = (await client.get(f"/v1/operations/{last}")).json()
    assert operation["mode"] == "forced"


async def test_escape_closes_the_dialog_and_focus_returns(
    page: Page, client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    await open_pair(page, live_stack.base_url, ADMIN_TOKEN, pair["name"])
    actions = page.get_by_role("button", name="Actions")
    await actions.focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("menuitem", name="Failover to Secondary…")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("menu")).to_be_hidden()
    await expect(actions).to_be_focused()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Enter")  # the first item: Failover to Secondary…
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_label("Type the pair name to confirm")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(actions).to_be_focused()
    assert (await client.get(f"/v1/clusters/{pair['id']}")).json()["last_operation_id"] is None


async def test_approve_on_the_page_moves_the_operation_on(
    page: Page, client: httpx.AsyncClient, live_stack: Stack, runbook: Runbook
) -> None:
    pair = await create_planned(client, approval_plan(runbook))
    started = await start_ok(client, pair["id"])
    await waiting(client, started["id"])
    # A second person approves: an operator token of the same organization.
    operator = await create_token(client, "operator")
    await open_pair(page, live_stack.base_url, operator["token"], pair["name"])
    await expect(page.get_by_text("Waiting for approval of step approve")).to_be_visible()
    await page.get_by_role("button", name="Approve").click()
    await expect(page.get_by_role("status")).to_have_text(
        "Failed over to secondary region: us-west-2"
    )
    done = await wait_done(client, started["id"])
    assert done["status"] == "succeeded"
    assert runbook.of("POST", "/switch")


async def test_a_viewer_can_press_nothing_and_a_forged_post_is_refused(
    page: Page, client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    viewer = await create_token(client, "viewer")
    await open_pair(page, live_stack.base_url, viewer["token"], pair["name"])
    await expect(page.get_by_role("status")).to_have_text("Primary region active: us-east-1")
    for name in ("Failover", "Failback", "Actions", "Cancel", "Retry", "Approve"):
        assert await page.get_by_role("button", name=name, exact=True).count() == 0, name
    assert await page.get_by_role("button", name="Retry failed deployments").count() == 0
    # A forged post with the viewer's own session and CSRF token: the API refuses it.
    csrf = await page.locator("input[name=csrf_token]").first.input_value()
    forged = await page.request.post(
        f"{live_stack.base_url}/ui/pairs/{pair['id']}/failover",
        form={"csrf_token": csrf, "confirm_name": pair["name"], "idempotency_key": "forged-1"},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "operator" in await forged.text()
    after = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert after["state"] == "primary-active" and after["last_operation_id"] is None


async def test_axe_finds_nothing_serious(
    page: Page, client: httpx.AsyncClient, live_stack: Stack
) -> None:
    pair = await create_cluster(client)
    await sign_in(page, live_stack.base_url, ADMIN_TOKEN)
    assert await axe_violations(page) == [], "pairs list"
    await page.get_by_role("link", name=pair["name"], exact=True).click()
    await expect(page.get_by_role("status")).to_be_visible()
    assert await axe_violations(page) == [], "DR tab"
    await page.get_by_role("button", name="Failover", exact=True).click()
    await expect(page.get_by_role("dialog").get_by_text("preflight")).to_be_visible()
    assert await axe_violations(page) == [], "the open dialog"


async def test_the_pairs_list_filters_by_region_and_state(
    page: Page, client: httpx.AsyncClient, live_stack: Stack
) -> None:
    steady = await create_cluster(client)
    moved = await create_cluster(client)
    await wait_done(client, (await start_ok(client, moved["id"]))["id"])
    await sign_in(page, live_stack.base_url, ADMIN_TOKEN)
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=moved["name"]))
    await expect(row).to_contain_text("Failed over to secondary region: us-west-2")
    await page.get_by_label("State").select_option("secondary-active")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name=moved["name"], exact=True)).to_be_visible()
    assert await page.get_by_role("link", name=steady["name"], exact=True).count() == 0


async def test_evacuate_a_region_from_its_view(
    page: Page, client: httpx.AsyncClient, live_stack: Stack
) -> None:
    from tests.batches.test_evacuation import register

    region = f"ui-{uuid.uuid4().hex[:6]}"
    moving = [await register(client, region, "us-west-2") for _ in range(2)]
    await sign_in(page, live_stack.base_url, ADMIN_TOKEN)
    await page.get_by_role("link", name=region, exact=True).click()
    await expect(page.get_by_role("heading", name=f"Region {region}")).to_be_visible()
    await expect(page.get_by_role("status")).to_contain_text("2 of 2 pairs")
    await page.get_by_role("button", name="Evacuate region").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_contain_text("2 pairs")
    confirm = dialog.get_by_role("button", name="Confirm evacuation")
    await expect(confirm).to_be_disabled()
    await dialog.get_by_label("Type the region name to confirm").fill(region)
    await expect(confirm).to_be_enabled()
    await confirm.click()
    status = page.get_by_role("status")
    await expect(status).to_contain_text("Batch succeeded: 2 succeeded", timeout=60_000)
    for pair in moving:
        state = (await client.get(f"/v1/clusters/{pair['id']}")).json()["state"]
        assert state == "secondary-active"
    assert await axe_violations(page) == [], "the batch view"


async def test_run_a_drill_on_the_dr_tab_and_read_its_report(
    page: Page, client: httpx.AsyncClient, live_stack: Stack
) -> None:
    """**Run drill** needs no typed name (it moves nothing); its report arrives live."""
    pair = await create_cluster(client, step_delay_ms=20)
    await open_pair(page, live_stack.base_url, ADMIN_TOKEN, pair["name"])
    status = page.get_by_role("status")
    await expect(status).to_have_text("Primary region active: us-east-1")
    await page.get_by_role("button", name="Run drill").click()

    report = page.locator("#drill-report")
    await expect(report.get_by_role("heading", level=2)).to_have_text("Last drill succeeded")
    await expect(report).to_contain_text(re.compile(r"Expected RTO\s*\d+\.\d s"))
    steps = page.get_by_role("table", name="Drill steps")
    await expect(steps.locator("[data-drill-step=preflight]")).to_contain_text("succeeded")
    await expect(status).to_have_text("Primary region active: us-east-1")
    await expect(page.get_by_role("button", name="Run drill")).to_be_enabled()
    assert await axe_violations(page) == [], "the drill's report"

    operations = (await client.get("/v1/operations", params={"cluster_id": pair["id"]})).json()
    assert [(op["kind"], op["status"]) for op in operations["items"]] == [("drill", "succeeded")]
    shown = await report.get_attribute("data-operation-id")
    assert shown == operations["items"][0]["id"]
    cluster = (await client.get(f"/v1/clusters/{pair['id']}")).json()
    assert (cluster["state"], cluster["active_region"]) == ("primary-active", "us-east-1")
