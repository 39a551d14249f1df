"""Building the app for tests: settings with fast background loops, and an ASGI client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.settings import Settings
from tests.support.settings import settings_from

POSTMARK_URL = "https://postmark.test"


def make_settings(db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "email_provider": "postmark",
        "email_provider_url": POSTMARK_URL,
        "email_api_token": "test-token",
        "email_from": "Task Service <tasks@example.com>",
        # Fast background loops so tests wait milliseconds, not seconds.
        "sweep_interval": 0.05,
        "sweep_grace": 0.2,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "batch_linger": 0.001,
        "drain_seconds": 5.0,
    }
    values.update(overrides)
    return settings_from(**values)


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an httpx client bound to it."""
    app = create_app(settings)
    async with (
        LifespanManager(app, startup_timeout=20, shutdown_timeout=30) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://service.test"
        ) as http,
    ):
        yield http
