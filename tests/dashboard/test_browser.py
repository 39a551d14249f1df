"""The dashboard in a real browser (headless chromium) against the service on a real port."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import asyncpg
import httpx
from playwright.async_api import Browser, Page, ViewportSize, expect

from tests.dashboard.seed import seed_tour
from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.dashboard import API_KEY, PageWatch, dashboard_settings, live_server
from tests.support.fake_provider import FakeProvider

_VIEWPORT: ViewportSize = {"width": 1360, "height": 800}
_EXPECT_TIMEOUT_MS = 10_000


@asynccontextmanager
async def _api(url: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10.0) as http:
        yield http


async def _sign_in(page: Page, url: str, secret: str) -> None:
    await page.goto(f"{url}/dashboard")
    await page.fill("#secret", secret)
    await page.click("button[type=submit]")


async def test_sign_in_works_and_a_wrong_key_is_refused(
    browser: Browser, db_url: str, provider: FakeProvider
) -> None:
    settings = dashboard_settings(
        db_url, api_keys=f"ops:{API_KEY}", email_provider_url=provider.url
    )
    async with live_server(settings) as url:
        context = await browser.new_context(viewport=_VIEWPORT)
        watch = PageWatch()
        page = watch.attach(await context.new_page())

        await _sign_in(page, url, "not-the-key")
        await expect(page.get_by_role("alert")).to_contain_text("not a valid API key")
        assert page.url.startswith(f"{url}/dashboard/login")
        assert await context.cookies() == []  # a refused sign-in opens no session

        await page.fill("#secret", API_KEY)
        await page.click("button[type=submit]")
        await expect(page.locator(".who")).to_contain_text("signed in as ops")
        assert page.url == f"{url}/dashboard"
        (cookie,) = await context.cookies()
        assert cookie["name"] == "dashboard_session"
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["path"] == "/dashboard"

        await page.get_by_role("button", name="Sign out").click()
        await expect(page.locator("#secret")).to_be_visible()
        await page.goto(f"{url}/dashboard")
        assert page.url.startswith(f"{url}/dashboard/login")  # signed out for good
        await context.close()
    # The refused sign-in answers 401, which chromium reports on the console.
    assert [e for e in watch.errors if "401" not in e] == []
    assert watch.foreign_requests(url) == []


async def test_counts_match_and_retry_sends_a_dead_letter(
    browser: Browser, db_url: str, db: asyncpg.Connection, provider: FakeProvider
) -> None:
    settings = dashboard_settings(
        db_url, api_keys=f"ops:{API_KEY}", email_provider_url=provider.url
    )
    provider.reject_recipients("gone@example.com")
    async with live_server(settings) as url, _api(url) as api:
        updates = []
        for email in ("ada@example.com", "linus@example.com", "gone@example.com"):
            user = await create_user(api, email, email.split("@")[0])
            task = await create_task(api, f"task for {email}")
            updates.append({"task_id": task, "assignee_id": user})
        response = await api.post("/update-tasks", json=updates)
        assert response.status_code == 200, response.text
        await wait_for_statuses(db, {"sent": 2, "dead": 1})

        context = await browser.new_context(viewport=_VIEWPORT)
        watch = PageWatch()
        page = watch.attach(await context.new_page())
        await _sign_in(page, url, API_KEY)

        for status, count in {"pending": 0, "sending": 0, "sent": 2, "dead": 1}.items():
            await expect(page.locator(f'[data-count="{status}"]')).to_have_text(str(count))
        await expect(page.locator('[data-count="sent-last-hour"]')).to_have_text("2")
        await expect(page.locator('[data-count="stream"]')).to_contain_text("/ 1,000")
        await expect(page.locator("[data-provider-state]")).to_have_attribute(
            "data-provider-state", "ok"
        )
        dead_row = page.locator("table.dead-letters tbody tr")
        await expect(dead_row).to_have_count(1)
        await expect(dead_row).to_contain_text("gone@example.com")
        await expect(dead_row.locator("td.num")).to_have_text("1")  # attempts
        await expect(dead_row.locator("td.reason")).to_contain_text("406")

        provider.answer_normally()  # the recipient was re-activated
        await dead_row.get_by_role("button", name="Retry").click()
        await expect(page.locator(".flash.ok")).to_contain_text("back in the queue")
        # From here the page must change by itself: mark it to prove no reload.
        await page.evaluate("window.__notReloaded = true")
        await expect(page.locator('[data-count="sent"]')).to_have_text(
            "3", timeout=_EXPECT_TIMEOUT_MS
        )
        await expect(page.locator('[data-count="dead"]')).to_have_text("0")
        await expect(page.locator("table.dead-letters")).to_have_count(0)
        assert await page.evaluate("window.__notReloaded") is True
        await expect(page.locator("#live-status")).to_have_attribute("data-state", "ok")

        # The search opens the notification's history: the dead attempt, then the sent one.
        await page.fill("input[name=q]", "gone@example.com")
        await page.press("input[name=q]", "Enter")
        await page.locator("table.list tbody a").first.click()
        await expect(page.locator("[data-status]")).to_have_attribute("data-status", "sent")
        events = page.locator(".timeline .event")
        await expect(events).to_have_count(4)  # created, attempt 1 dead, attempt 1 sent, sent
        await expect(events.nth(1)).to_contain_text("refused: dead letter")
        await expect(events.nth(2)).to_contain_text("accepted by the provider")
        await context.close()
    assert watch.errors == []
    assert watch.foreign_requests(url) == []


async def test_the_page_works_with_javascript_off(
    browser: Browser, db_url: str, db: asyncpg.Connection, provider: FakeProvider
) -> None:
    settings = dashboard_settings(db_url, email_provider_url=provider.url)  # open: no keys
    provider.reject_recipients("gone@example.com")
    async with live_server(settings) as url, _api(url) as api:
        user = await create_user(api, "gone@example.com", "Gone")
        task = await create_task(api, "a task")
        await api.post("/update-tasks", json=[{"task_id": task, "assignee_id": user}])
        await wait_for_statuses(db, {"dead": 1})

        context = await browser.new_context(viewport=_VIEWPORT, java_script_enabled=False)
        watch = PageWatch()
        page = watch.attach(await context.new_page())
        await page.goto(f"{url}/dashboard")
        await expect(page.locator(".who")).to_contain_text("open: no sign-in")
        await expect(page.locator('[data-count="dead"]')).to_have_text("1")
        await expect(page.locator("noscript")).to_have_count(1)

        provider.answer_normally()
        await page.get_by_role("button", name="Retry").click()  # a plain form POST
        await expect(page.locator(".flash.ok")).to_contain_text("back in the queue")
        await wait_for_statuses(db, {"sent": 1})
        # Counts are cached for a moment (shared with /metrics): reload until they move.
        sent = page.locator('[data-count="sent"]')
        with anyio.fail_after(_EXPECT_TIMEOUT_MS / 1000):
            while await sent.text_content() != "1":
                await anyio.sleep(0.2)
                await page.reload()
        await context.close()
    assert watch.errors == []
    assert watch.foreign_requests(url) == []


def _png_size(image: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header (its first chunk is always IHDR)."""
    assert image.startswith(b"\x89PNG\r\n\x1a\n"), image[:8]
    assert image[12:16] == b"IHDR"
    width, height = struct.unpack(">II", image[16:24])
    return width, height


async def test_tour_screenshot(
    browser: Browser,
    db_url: str,
    db: asyncpg.Connection,
    provider: FakeProvider,
    dashboard_screenshot: Path,
) -> None:
    """An hour of realistic traffic, as a person sees it.

    The suite saves the picture in a temporary directory; ``make screenshot``
    runs this test alone to refresh the README's ``docs/dashboard.png``.
    """
    settings = dashboard_settings(
        db_url, api_keys=f"ops:{API_KEY}", email_provider_url=provider.url
    )
    seeded = await seed_tour(db)
    async with live_server(settings) as url:
        context = await browser.new_context(viewport=_VIEWPORT, color_scheme="dark")
        watch = PageWatch()
        page = watch.attach(await context.new_page())
        await _sign_in(page, url, API_KEY)
        await expect(page.locator('[data-count="sent"]')).to_have_text(f"{seeded.sent:,}")
        await expect(page.locator('[data-count="dead"]')).to_have_text(str(seeded.dead))
        await expect(page.locator("#live-status")).to_have_attribute("data-state", "ok")
        image = await page.screenshot(path=str(dashboard_screenshot), full_page=True)
        await context.close()
    assert watch.errors == []
    assert watch.foreign_requests(url) == []
    assert await anyio.Path(dashboard_screenshot).read_bytes() == image
    width, height = _png_size(image)
    assert width == _VIEWPORT["width"]
    assert height >= _VIEWPORT["height"]  # the full page, not only the viewport
