"""Fixtures for the dashboard: the service on a real port, a fake provider, a browser.

The browser is Debian's ``chromium`` driven by Playwright (its wheel brings
the driver; no browser is ever downloaded). Without chromium the browser
tests are skipped on a developer's machine and fail in CI (``CI`` set),
where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

from tests.support.app import app_client, make_settings
from tests.support.dashboard import API_KEY, SESSION_SECRET
from tests.support.fake_provider import FakeProvider

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
]


@pytest.fixture
async def secured(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app with API keys on: the dashboard wants a sign-in."""
    settings = make_settings(db_url, api_keys=f"ops:{API_KEY}", session_secret=SESSION_SECRET)
    async with app_client(settings) as client:
        yield client


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def dashboard_screenshot(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where the tour's screenshot is saved: a temporary file, so that the suite
    never writes into the repository; ``--dashboard-screenshot`` (only ``make
    screenshot`` passes it) names the README's picture instead."""
    chosen: str | None = request.config.getoption("dashboard_screenshot")
    return Path(chosen).resolve() if chosen else tmp_path / "dashboard.png"


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if found is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()
