"""A real Chromium for the page's tests: Debian's `chromium` (/usr/bin/chromium), driven by
Playwright for Python; never a browser Playwright downloads.

`browser` (session fixture) starts it once per test session, in the first backend's pass
only (the page does not depend on the database backend; its API calls are tested on both).
It skips when Chromium is missing, or fails when TANDEM_TEST_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.backends import backends
from tests.stack import ROOT

CHROMIUM = Path(os.environ.get("TANDEM_CHROMIUM", "/usr/bin/chromium"))
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    # This machine's network is closed: no background calls to Google's hosts.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    from tests.conftest import BACKEND

    first = backends()[0]
    if first != BACKEND:
        pytest.skip(f"independent of the database backend; runs in the {first} pass only")
    _require(CHROMIUM, "Debian's chromium package; .ci/run installs it")
    async with async_playwright() as playwright:
        running = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield running
        await running.close()


# An assertion about the page waits as long as an action does: "Failed over to ..." comes
# once a whole operation has run, which on a loaded machine can take longer than the
# 5 s Playwright waits by default.
expect.set_options(timeout=30_000)


@pytest_asyncio.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page of a new browser context (its own cookies)."""
    context = await browser.new_context()
    context.set_default_timeout(30_000)
    opened = await context.new_page()
    yield opened
    await context.close()


async def sign_in(page: Page, base_url: str, token: str) -> None:
    await page.goto(f"{base_url}/ui/")
    await page.get_by_label("Token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="DR pairs")).to_be_visible()


async def open_pair(page: Page, base_url: str, token: str, name: str) -> None:
    await sign_in(page, base_url, token)
    await page.get_by_role("link", name=name, exact=True).click()
    await expect(page.get_by_role("tab", name="Disaster Recovery")).to_be_visible()


def _require(path: Path, how: str) -> None:
    """Skip without it, or fail when TANDEM_TEST_REQUIRE_SERVICES=1 (CI)."""
    from tests.conftest import REQUIRE_SERVICES

    if path.exists():
        return
    message = f"{path} is missing ({how})"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    _require(AXE, "npm ci --prefix .ci/node; .ci/run does it")
    await page.add_script_tag(path=str(AXE))
    found = await page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.target.join(" "))}))"""
    )
    serious = [v for v in found if v["impact"] in ("serious", "critical")]
    if serious:
        print(json.dumps(serious, indent=1))
    return serious
