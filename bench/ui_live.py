"""(h) The web page, for `make bench` (also `python -m bench.ui_live`): Debian's Chromium
driven by Playwright, on loopback.

Latency: the pair's DR tab open in Chromium and, beside it, a plain SSE client (httpx) on
the same event stream, while failovers of simulated pairs (step_delay_ms 150) change their
steps. For every `operation.step_changed` event, its time is taken from the event's
`created_at` (set by the worker just before the commit that writes it), and compared with
when the plain client read its frame and when the page showed the step's new status (a
MutationObserver in the page, on the same clock). Target: the page's median at most 2x the
plain client's.

Size: every response of the tab's first load (document, scripts, style sheet, the dry-run
and live fragments are not part of it), uncompressed, from Chromium's own accounting.
Target: under 100 KB.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
from playwright.async_api import Browser, Page, async_playwright

from bench.services import own_stack
from bench.stats import median, summary_ms, table
from tests.ui.browser import CHROMIUM, FLAGS

FAILOVERS = int(os.environ.get("BENCH_UI_FAILOVERS", "6"))
STEP_DELAY_MS = 150
TARGET_RATIO = 2.0
TARGET_BYTES = 100_000

# Records, in the page, the first time each step shows each status (epoch seconds).
OBSERVER = """
() => {
  window.benchSeen = {};
  const now = () => (performance.timeOrigin + performance.now()) / 1000;
  const note = () => {
    const op = document.querySelector("#operation");
    if (!op) return;
    for (const step of op.querySelectorAll("[data-step]")) {
      const status = step.querySelector(".status").textContent;
      const key = `${op.dataset.operationId}/${step.dataset.step}/${status}`;
      if (!(key in window.benchSeen)) window.benchSeen[key] = now();
    }
  };
  new MutationObserver(note).observe(
    document.body, {subtree: true, childList: true, characterData: true, attributes: true}
  );
  note();
}
"""


def _progress(message: str) -> None:
    print(f"[bench.ui_live] {message}", file=sys.stderr, flush=True)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


async def _sign_in(page: Page, base_url: str, token: str) -> None:
    await page.goto(f"{base_url}/ui/sign-in")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base_url}/ui/")


async def _plain_client(
    base_url: str,
    auth: dict[str, str],
    cluster_id: str,
    seen: dict[str, float],
    ready: asyncio.Event,
) -> None:
    """Reads the stream as any SSE client would, noting when each step event arrives."""
    async with (
        httpx.AsyncClient(base_url=base_url, headers=auth, timeout=None) as client,
        client.stream("GET", "/v1/events/stream", params={"cluster_id": cluster_id}) as stream,
    ):
        ready.set()
        async for line in stream.aiter_lines():
            if not line.startswith("data: "):
                continue
            arrived = time.time()
            event = json.loads(line[6:])
            if event["type"] == "operation.step_changed":
                data = event["data"]
                key = f"{data['operation_id']}/{data['step']}/{data['status']}"
                seen.setdefault(key, arrived)


async def _one_failover(
    browser: Browser, client: httpx.AsyncClient, base_url: str, token: str
) -> dict[str, Any]:
    name = f"bench-ui-{uuid.uuid4().hex[:8]}"
    created = await client.post(
        "/v1/clusters",
        json={
            "name": name,
            "primary": {"name": f"{name}-a", "region": "us-east-1", "cloud": "aws"},
            "secondary": {"name": f"{name}-b", "region": "us-west-2", "cloud": "aws"},
            "driver": {"kind": "simulated", "step_delay_ms": STEP_DELAY_MS},
        },
    )
    created.raise_for_status()
    cluster_id = created.json()["id"]
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await _sign_in(page, base_url, token)
        plain: dict[str, float] = {}
        ready = asyncio.Event()
        reader = asyncio.create_task(
            _plain_client(base_url, dict(client.headers), cluster_id, plain, ready)
        )
        await ready.wait()
        # The person has the tab open when the failover starts, as in an incident.
        await page.goto(f"{base_url}/ui/pairs/{cluster_id}")
        await page.wait_for_function("window.htmx && document.querySelector('#event-stream')")
        await page.evaluate(OBSERVER)
        await asyncio.sleep(0.5)  # the page's stream is connected
        started = await client.post(
            f"/v1/clusters/{cluster_id}/failover",
            json={},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        started.raise_for_status()
        op_id = started.json()["id"]
        done = await client.get(f"/v1/operations/{op_id}", params={"wait": 60})
        assert done.json()["done"], done.text
        await page.wait_for_function(
            "document.querySelector('#status-indicator').textContent.startsWith('Failed over')"
        )
        await asyncio.sleep(0.3)  # the last frames reach both readers
        shown: dict[str, float] = await page.evaluate("window.benchSeen")
        reader.cancel()
        listed = await client.get(f"/v1/clusters/{cluster_id}/events", params={"page_size": 100})
        events = listed.json()["items"]
    finally:
        await context.close()
    samples = []
    for event in events:
        if event["type"] != "operation.step_changed":
            continue
        data = event["data"]
        key = f"{data['operation_id']}/{data['step']}/{data['status']}"
        if key not in plain or key not in shown:
            missing = "the plain client" if key not in plain else "the page"
            raise RuntimeError(f"{key} never reached {missing}")
        committed = _epoch(event["created_at"])
        samples.append(
            {"key": key, "plain_s": plain[key] - committed, "page_s": shown[key] - committed}
        )
    return {"op_id": op_id, "samples": samples}


async def _first_load_bytes(browser: Browser, base_url: str, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        created = await client.post(
            "/v1/clusters",
            headers={"Authorization": f"Bearer {token}"},
            json={
                "name": f"bench-size-{uuid.uuid4().hex[:8]}",
                "primary": {"name": "a", "region": "us-east-1", "cloud": "aws"},
                "secondary": {"name": "b", "region": "us-west-2", "cloud": "aws"},
                "driver": {"kind": "simulated"},
            },
        )
        created.raise_for_status()
        cluster_id = created.json()["id"]
    signed_in = await browser.new_context()
    context = await browser.new_context()
    try:
        await _sign_in(await signed_in.new_page(), base_url, token)
        # A first load: a context of its own (an empty cache) with only the session cookie.
        await context.add_cookies(await signed_in.cookies())
        page = await context.new_page()
        finished: list[Any] = []
        page.on("requestfinished", lambda request: finished.append(request))
        await page.goto(f"{base_url}/ui/pairs/{cluster_id}", wait_until="load")
        await asyncio.sleep(0.5)
        parts = {}
        for request in finished:
            if "/v1/events/stream" in request.url:
                continue  # endless; not part of the load
            sizes = await request.sizes()
            path = request.url.removeprefix(base_url)
            parts[path] = sizes["responseBodySize"] + sizes["responseHeadersSize"]
        return {"parts": parts, "total_bytes": sum(parts.values())}
    finally:
        await context.close()
        await signed_in.close()


async def measure(base_url: str, token: str) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {token}"}
    async with (
        async_playwright() as playwright,
        httpx.AsyncClient(base_url=base_url, headers=auth, timeout=90) as client,
    ):
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            size = await _first_load_bytes(browser, base_url, token)
            runs = []
            for n in range(FAILOVERS):
                runs.append(await _one_failover(browser, client, base_url, token))
                _progress(f"failover {n + 1}/{FAILOVERS}: {len(runs[-1]['samples'])} step changes")
        finally:
            await browser.close()
    return {"size": size, "runs": runs}


def report(raw: dict[str, Any]) -> dict[str, Any]:
    samples = [s for run in raw["runs"] for s in run["samples"]]
    plain = [s["plain_s"] for s in samples]
    page = [s["page_s"] for s in samples]
    ratio = median(page) / median(plain)
    return {
        "samples": len(samples),
        "plain_sse": summary_ms(plain),
        "page": summary_ms(page),
        "ratio_median": ratio,
        "target_ratio": TARGET_RATIO,
        "met_ratio": ratio <= TARGET_RATIO,
        "first_load_bytes": raw["size"]["total_bytes"],
        "first_load_parts": raw["size"]["parts"],
        "target_bytes": TARGET_BYTES,
        "met_bytes": raw["size"]["total_bytes"] < TARGET_BYTES,
    }


def render(fig: dict[str, Any]) -> list[str]:
    def row(name: str, s: dict[str, Any]) -> list[object]:
        return [name, f"{s['median_ms']:.1f}", f"{s['p90_ms']:.1f}", f"{s['max_ms']:.1f}"]

    lines = [
        f"(h) web page: a step's change, commit -> shown ({fig['samples']} step changes)",
        table(
            ["reader", "median ms", "p90 ms", "max ms"],
            [row("plain SSE client", fig["plain_sse"]), row("the DR tab", fig["page"])],
        ),
        f"    ratio (medians) {fig['ratio_median']:.2f}x, target <= {fig['target_ratio']}x: "
        + ("met" if fig["met_ratio"] else "MISSED"),
        f"    first load of the DR tab: {fig['first_load_bytes']:,} bytes uncompressed, "
        f"target < {fig['target_bytes']:,}: " + ("met" if fig["met_bytes"] else "MISSED"),
    ]
    lines += [f"      {size:>7,}  {path}" for path, size in fig["first_load_parts"].items()]
    return lines


def main() -> int:
    """`python -m bench.ui_live`: (h) alone, on a stack of its own."""
    with own_stack("ui") as own:
        raw = asyncio.run(measure(own.stack.base_url, own.token))
    print("\n".join(render(report(raw))), flush=True)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM too
    sys.exit(main())
