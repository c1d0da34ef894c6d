"""The evidence report (DESIGN.md section 14): GET /v1/clusters/{id}/report as JSON and as a
PDF, and `tandem report`, against the real API server and workers.

One pair's history is made once for the module (readiness lost and regained, a failover
and a failback, each approved by a second person, with data loss measured by a real
runbook on loopback); each test reads it in its own way. The PDF and CLI tests do not
depend on the database backend: they run in the first backend's pass only.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pexpect
import pytest
import pytest_asyncio

from tests.access.test_access import as_token, create_token
from tests.backends import backends
from tests.cli.conftest import TANDEM, cli_env
from tests.conftest import ADMIN_TOKEN, BACKEND
from tests.helpers import pair_body, start_ok, wait_done, wait_for
from tests.runbook import Call, Reply, Runbook
from tests.stack import ROOT, Stack

# One history for the module's tests: keep them in one test process.
pytestmark = pytest.mark.xdist_group("reports")

first_backend_only = pytest.mark.skipif(
    backends()[0] != BACKEND,
    reason=f"independent of the database backend; runs in the {backends()[0]} pass only",
)

# What the runbook's promote says was lost: within the RPO target on the failover, over it
# on the failback.
LOSS = {"failover": {"bytes": 1024, "seconds": 2.5}, "failback": {"bytes": 8192, "seconds": 12.5}}
RTO_TARGET_S, RPO_TARGET_S = 3600.0, 10.0
STEPS = ["preflight", "approve", "promote", "switch"]


@dataclass
class History:
    pair: dict[str, Any]
    operator: str  # the approver's actor string, as the API records it
    readiness: list[dict[str, Any]]  # the readiness_changed events, oldest first
    failover: dict[str, Any]
    failback: dict[str, Any]
    drill: dict[str, Any]


async def _approved(client: httpx.AsyncClient, approver: httpx.AsyncClient, op_id: str) -> None:
    async def asked() -> bool:
        got = (await client.get(f"/v1/operations/{op_id}")).json()
        return got["awaiting_approval"] is not None

    await wait_for(asked, timeout_s=60)
    decided = await approver.post(
        f"/v1/operations/{op_id}/approve", json={"comment": "region gone, go ahead"}
    )
    assert decided.status_code == 202, decided.text


@pytest_asyncio.fixture(scope="module")
async def history(stack: Stack) -> AsyncIterator[History]:
    stack.ensure_workers()
    runbook = Runbook().start()
    healthy = False

    def answer(call: Call) -> Reply:
        if call.path == "/health":
            return Reply(200 if healthy else 503, {"healthy": healthy})
        if call.path == "/promote":
            return Reply(200, {"data_loss": LOSS[call.json()["kind"]]})
        return Reply()

    runbook.answer = answer
    plan = {
        "steps": [
            {"name": "preflight", "action": {"kind": "check", "urls": [runbook.url("/health")]}},
            {"name": "approve", "action": {"kind": "approval"}, "timeout_s": 120},
            {
                "name": "promote",
                "action": {"kind": "http", "url": runbook.url("/promote")},
                "point_of_no_return": True,
            },
            {
                "name": "switch",
                "action": {"kind": "http", "url": runbook.url("/switch")},
                "traffic_switched": True,
            },
        ]
    }
    body = {**pair_body(), "plan": plan, "rto_target_s": RTO_TARGET_S, "rpo_target_s": RPO_TARGET_S}
    del body["driver"]
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=90, headers=headers) as client:
        created = await client.post("/v1/clusters", json=body)
        assert created.status_code == 201, created.text
        pair = created.json()
        # Not ready (its first evaluation says so), then ready: two readiness changes.
        for ready in (False, True):
            healthy = ready
            got = await client.get(f"/v1/clusters/{pair['id']}/readiness?fresh=true")
            assert got.status_code == 200 and got.json()["ready"] is ready, got.text
        second = await create_token(client, "operator")
        async with as_token(stack, second["token"]) as approver:
            operations = {}
            for kind in ("failover", "failback"):
                started = await start_ok(client, pair["id"], kind, reason=f"quarterly {kind}")
                await _approved(client, approver, started["id"])
                done = await wait_done(client, started["id"])
                assert done["status"] == "succeeded", done
                operations[kind] = done
        # A drill rehearses the next failover: listed like the others, with its report.
        drilled = await client.post(
            f"/v1/clusters/{pair['id']}/drills",
            json={"reason": "quarterly drill"},
            headers={"Idempotency-Key": f"drill-{pair['id']}"},
        )
        assert drilled.status_code == 202, drilled.text
        operations["drill"] = await wait_done(client, drilled.json()["id"])
        assert operations["drill"]["status"] == "succeeded", operations["drill"]
        page = await client.get(f"/v1/clusters/{pair['id']}/events", params={"page_size": 100})
        readiness = [e for e in page.json()["items"] if e["type"] == "cluster.readiness_changed"]
        assert [e["data"]["ready"] for e in readiness] == [False, True]
    runbook.stop()
    yield History(
        pair=pair,
        operator=f"token:{second['name']} ({second['id']})",
        readiness=readiness,
        failover=operations["failover"],
        failback=operations["failback"],
        drill=operations["drill"],
    )


@pytest_asyncio.fixture
async def viewer(client: httpx.AsyncClient, live_stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    """The report is evidence anyone who reads the pair's operations may see."""
    created = await create_token(client, "viewer")
    async with as_token(live_stack, created["token"]) as reader:
        yield reader


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_the_report_lists_each_operation_with_its_figures(
    viewer: httpx.AsyncClient, history: History
) -> None:
    pair = history.pair
    response = await viewer.get(f"/v1/clusters/{pair['id']}/report")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    report = response.json()

    assert report["pair"] == {
        "id": pair["id"],
        "name": pair["name"],
        "primary": pair["primary"],
        "secondary": pair["secondary"],
        "rto_target_s": RTO_TARGET_S,
        "rpo_target_s": RPO_TARGET_S,
    }
    # The default period: the 90 days up to now.
    since, to = _at(report["period"]["from"]), _at(report["period"]["to"])
    assert to - since == timedelta(days=90)
    assert abs((datetime.now(UTC) - to).total_seconds()) < 600

    listed = report["operations"]
    assert [(o["id"], o["kind"]) for o in listed] == [
        (history.failover["id"], "failover"),
        (history.failback["id"], "failback"),
        (history.drill["id"], "drill"),
    ]
    for entry, operation in zip(listed[:2], (history.failover, history.failback), strict=True):
        kind = operation["kind"]
        assert entry["status"] == "succeeded" and entry["mode"] == "planned"
        assert entry["requested_by"] == operation["requested_by"]
        assert entry["requested_by"].startswith("token:")
        assert entry["requested_by"] != history.operator
        assert entry["approved_by"] == [history.operator]
        assert [(d["step"], d["approved"], d["comment"]) for d in entry["decisions"]] == [
            ("approve", True, "region gone, go ahead")
        ]
        assert entry["reason"] == f"quarterly {kind}"
        for field in ("created_at", "started_at", "finished_at"):
            assert _at(entry[field]) == _at(operation[field])
        assert entry["duration_s"] == pytest.approx(
            (_at(operation["finished_at"]) - _at(operation["created_at"])).total_seconds(),
            abs=0.001,
        )
        # Each step's timing, as the operation recorded it.
        assert [s["name"] for s in entry["steps"]] == STEPS
        for step, recorded in zip(entry["steps"], operation["steps"], strict=True):
            assert step["status"] == recorded["status"] == "succeeded"
            assert _at(step["started_at"]) == _at(recorded["started_at"])
            assert _at(step["finished_at"]) == _at(recorded["finished_at"])
            elapsed = _at(recorded["finished_at"]) - _at(recorded["started_at"])
            assert step["duration_s"] == pytest.approx(elapsed.total_seconds(), abs=0.001)
        # Measured RTO against the target.
        assert entry["rto"] == {
            "target_s": RTO_TARGET_S,
            "measured_s": operation["measured_rto_s"],
            "met": True,
            "breaches": [],
        }
        assert operation["measured_rto_s"] > 0
        # Data loss, as the promote step measured it, against the RPO target.
        assert entry["data_loss"] == LOSS[kind] == operation["data_loss"]
    failover, failback, drill = listed
    assert failover["rpo"] == {
        "target_s": RPO_TARGET_S,
        "measured_s": 2.5,
        "met": True,
        "breaches": [],
    }
    assert failback["rpo"]["met"] is False and failback["rpo"]["measured_s"] == 12.5
    [breach] = failback["rpo"]["breaches"]
    assert (breach["target_s"], breach["measured_s"]) == (RPO_TARGET_S, 12.5)

    # The drill: who asked, no mode, no RTO of its own; its report as on the operation, and
    # its expected RTO against the target.
    assert drill["requested_by"] == history.drill["requested_by"]
    assert drill["reason"] == "quarterly drill" and drill["mode"] is None
    assert drill["rto"]["measured_s"] is None and drill["data_loss"] is None
    assert drill["drill"] == history.drill["report"]
    assert drill["drill"]["expected_rto_s"] is not None
    assert drill["expected_rto"] == {
        "target_s": RTO_TARGET_S,
        "measured_s": drill["drill"]["expected_rto_s"],
        "met": True,
        "breaches": [],
    }
    assert [s["name"] for s in drill["steps"]] == STEPS
    assert failover["drill"] is None and failover["expected_rto"] is None

    assert report["summary"] == {
        "operations": 3,
        "by_kind": {"failover": 1, "failback": 1, "drill": 1},
        "by_status": {"succeeded": 3},
        "rto_met": 2,
        "rto_missed": 0,
        "rpo_met": 1,
        "rpo_missed": 1,
        "readiness_changes": 2,
    }
    # The readiness history: not ready (the failing check named), then ready.
    lost, regained = report["readiness"]
    assert lost["ready"] is False and regained["ready"] is True
    assert [(c["step"], c["ok"]) for c in lost["failing"]] == [("preflight", False)]
    assert regained["failing"] == []
    assert [_at(c["at"]) for c in report["readiness"]] == [
        _at(e["created_at"]) for e in history.readiness
    ]
    assert report["readiness_at_start"] is None


async def test_only_the_operations_of_the_period_are_listed(
    client: httpx.AsyncClient, history: History
) -> None:
    path = f"/v1/clusters/{history.pair['id']}/report"
    failback_at = history.failback["created_at"]

    async def listed(**params: str) -> dict[str, Any]:
        response = await client.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    # [from, to): the failback's creation starts one period and ends the one before it.
    later = await listed(**{"from": failback_at})
    assert [o["id"] for o in later["operations"]] == [history.failback["id"], history.drill["id"]]
    assert later["readiness"] == []
    assert later["readiness_at_start"]["ready"] is True  # the pair was ready then
    assert later["summary"]["operations"] == 2

    earlier = await listed(to=failback_at)
    assert [o["id"] for o in earlier["operations"]] == [history.failover["id"]]
    assert len(earlier["readiness"]) == 2
    assert _at(earlier["period"]["to"]) == _at(failback_at)
    assert _at(earlier["period"]["from"]) == _at(failback_at) - timedelta(days=90)

    # Another offset, the same instant; and a period that ended before the pair existed.
    instant = _at(failback_at).astimezone(timezone(timedelta(hours=5, minutes=30)))
    same = await listed(**{"from": instant.isoformat(), "to": history.drill["created_at"]})
    assert [o["id"] for o in same["operations"]] == [history.failback["id"]]
    # The longest period: 366 days (2024 was a leap year).
    long_ago = await listed(**{"from": "2024-01-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"})
    assert long_ago["operations"] == [] and long_ago["readiness"] == []
    assert long_ago["readiness_at_start"] is None


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-02-30T00:00:00Z"}, "to"),
        ({"from": "2026-01-01T00:00:00"}, "from"),  # no offset: which instant?
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}, "from"),
        ({"from": "2026-03-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}, "from"),
        ({"from": "2024-01-01T00:00:00Z", "to": "2025-01-02T00:00:01Z"}, "from"),
        ({"to": "0001-01-01T00:00:00Z"}, "to"),
    ],
)
async def test_bad_parameters_are_problems(
    client: httpx.AsyncClient, history: History, params: dict[str, str], where: str
) -> None:
    response = await client.get(f"/v1/clusters/{history.pair['id']}/report", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed" and problem["status"] == 422
    assert problem["errors"][0]["loc"] == ["query", where], problem


async def test_unknown_pair_unacceptable_accept_and_negotiation(
    client: httpx.AsyncClient, history: History
) -> None:
    missing = await client.get("/v1/clusters/cl_nope/report")
    assert missing.status_code == 404, missing.text
    assert missing.json()["code"] == "not_found"
    assert missing.headers["content-type"] == "application/problem+json"

    path = f"/v1/clusters/{history.pair['id']}/report"
    for accept in ("text/html", "image/*", "application/pdf;q=0, application/json;q=0"):
        refused = await client.get(path, headers={"Accept": accept})
        assert refused.status_code == 406, (accept, refused.text)
        problem = refused.json()
        assert problem["code"] == "not_acceptable"
        assert problem["available"] == ["application/json", "application/pdf"]

    for accept, served in [
        ("*/*", "application/json"),
        ("application/*", "application/json"),
        ("text/html, application/pdf", "application/pdf"),
        ("application/json;q=0.5, application/pdf", "application/pdf"),
        ("application/pdf;q=0.5, application/json", "application/json"),
    ]:
        response = await client.get(path, headers={"Accept": accept})
        assert response.status_code == 200, (accept, response.text)
        assert response.headers["content-type"] == served, accept
        assert response.headers["vary"] == "Accept"


def pdf_text(data: bytes, tmp_path: Path) -> str:
    assert data.startswith(b"%PDF-"), data[:20]
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    found = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    )
    return found.stdout


def assert_pdf_holds(text: str, history: History) -> None:
    flat = " ".join(text.split())
    assert f"Evidence report: {history.pair['name']}" in flat, flat[:500]
    for operation in (history.failover, history.failback):
        assert f"{operation['kind']} {operation['id']}: succeeded" in flat
        assert f"{operation['measured_rto_s']:.3f} s" in flat
    assert f"drill {history.drill['id']}: succeeded" in flat
    expected = history.drill["report"]["expected_rto_s"]
    assert f"{expected:.3f} s against {RTO_TARGET_S:.3f} s: met" in flat
    assert history.operator in flat
    assert "MISSED" in flat  # the failback's data loss against the RPO target
    assert "Readiness history" in flat and "NOT READY" in flat


@first_backend_only
async def test_the_pdf_holds_the_pair_operations_and_measured_rto(
    client: httpx.AsyncClient, history: History, tmp_path: Path
) -> None:
    path = f"/v1/clusters/{history.pair['id']}/report"
    response = await client.get(path, headers={"Accept": "application/pdf"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert_pdf_holds(pdf_text(response.content, tmp_path), history)

    span = {"from": "2020-01-01T00:00:00Z", "to": "2020-12-31T00:00:00Z"}
    empty = await client.get(path, params=span, headers={"Accept": "application/pdf"})
    text = pdf_text(empty.content, tmp_path)
    assert history.pair["name"] in text
    assert "No failover, failback, drill or deployment retry in the period." in text


@first_backend_only
async def test_the_cli_writes_the_report(history: History, stack: Stack, tmp_path: Path) -> None:
    env = cli_env(stack)
    name = history.pair["name"]

    def tandem(*args: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(
            [*TANDEM, "report", *args], env=env, cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE,
            timeout=120,
        )  # fmt: skip

    target = tmp_path / "evidence.pdf"
    with target.open("wb") as out:
        written = await asyncio.to_thread(tandem, name, "--output", "pdf", stdout=out)
    assert written.returncode == 0, written.stderr
    assert_pdf_holds(pdf_text(target.read_bytes(), tmp_path), history)

    # JSON by default, pretty; the period as the API takes it; the pair by its id too.
    listed = await asyncio.to_thread(
        tandem, history.pair["id"], "--from", history.failback["created_at"]
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(b"{\n  ")
    report = json.loads(listed.stdout)
    assert [o["id"] for o in report["operations"]] == [history.failback["id"], history.drill["id"]]

    refused = await asyncio.to_thread(tandem, name, "--from", "last tuesday")
    assert refused.returncode == 1 and b"query.from" in refused.stderr, refused.stderr
    unknown = await asyncio.to_thread(tandem, "no-such-pair")
    assert unknown.returncode == 2 and b"no pair named" in unknown.stderr

    # A PDF is not written to a terminal.
    child = pexpect.spawn(
        TANDEM[0], [*TANDEM[1:], "report", name, "--output", "pdf"], env=env, cwd=str(ROOT),
        timeout=60, dimensions=(24, 200),
    )  # fmt: skip
    child.expect("refusing to write a PDF to the terminal")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
