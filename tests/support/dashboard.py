"""The dashboard under test: the service on a real port, sign-in helpers, a page watcher."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from hypercorn.asyncio import serve
from playwright.async_api import ConsoleMessage, Page
from playwright.async_api import Request as BrowserRequest

from service.__main__ import hypercorn_config
from service.app import create_app
from service.settings import Settings
from tests.support.api import wait_until_ready
from tests.support.app import make_settings
from tests.support.service_process import free_port

API_KEY = "ops-key-0123456789abcdef0123456789abcdef"
SESSION_SECRET = "s" * 40
_READY_TIMEOUT_SECONDS = 20.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def dashboard_settings(db_url: str, **overrides: Any) -> Settings:
    """Test settings for a dashboard that refreshes every second."""
    values: dict[str, Any] = {"dashboard_refresh_seconds": 1.0, "session_secret": SESSION_SECRET}
    values.update(overrides)
    return make_settings(db_url, **values)


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


@asynccontextmanager
async def live_server(settings: Settings) -> AsyncIterator[str]:
    """The app served by hypercorn on a free port, as ``python -m service`` serves it."""
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
    url = f"http://127.0.0.1:{settings.port}"
    stop = anyio.Event()
    app = create_app(settings)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(serve, app, hypercorn_config(settings), shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        try:
            await wait_until_ready(url, _READY_TIMEOUT_SECONDS)
            yield url
        finally:
            stop.set()


@dataclass
class PageWatch:
    """Everything a page asked for and every error it logged."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> Page:
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        return page

    def foreign_requests(self, origin: str) -> list[str]:
        return [url for url in self.requests if not url.startswith(f"{origin}/")]

    def _request(self, request: BrowserRequest) -> None:
        self.requests.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)
