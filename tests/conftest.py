"""Shared fixtures: a real PostgreSQL database per test session, settings, an app client.

The server is the one at TEST_POSTGRES_URL (default: the local one on
127.0.0.1:5432). When none answers, an embedded PostgreSQL (pgserver) is
started for the session, so the suite passes on a machine with only Python.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from service.app import create_app
from service.migrations import migrate
from service.settings import Settings
from tests.support.database import admin_url_or_none, database_url, start_embedded_server
from tests.support.settings import settings_from

POSTMARK_URL = "https://postmark.test"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"  # asyncpg runs on asyncio only


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bool]]:
    """A superuser URL of a running server, and whether it is this session's own."""
    url = admin_url_or_none()
    if url is not None:
        yield url, False
        return
    with start_embedded_server(tmp_path_factory.mktemp("pg")) as embedded_url:
        yield embedded_url, True


@pytest.fixture(scope="session")
def postgres_admin_url(postgres_server: tuple[str, bool]) -> str:
    return postgres_server[0]


@pytest.fixture(scope="session")
def migrated_database(postgres_server: tuple[str, bool]) -> Iterator[str]:
    """A fresh database for this session, migrated, dropped at the end.

    An embedded server is deleted whole at the end of the session, so its
    database is not dropped separately.
    """
    postgres_admin_url, embedded = postgres_server
    name = f"svc_test_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(postgres_admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(postgres_admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    anyio.run(create)
    url = database_url(postgres_admin_url, name)
    anyio.run(migrate, url)
    yield url
    if not embedded:
        anyio.run(drop)


@pytest.fixture
async def db_url(migrated_database: str) -> str:
    """The session database, emptied before the test."""
    conn = await asyncpg.connect(migrated_database)
    try:
        await conn.execute(
            "TRUNCATE notifications, tasks, users, idempotency_keys RESTART IDENTITY CASCADE"
        )
    finally:
        await conn.close()
    return migrated_database


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection for arranging and checking data."""
    conn = await asyncpg.connect(db_url)
    try:
        yield conn
    finally:
        await conn.close()


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


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app, with the lifespan running."""
    async with app_client(settings) as http:
        yield http


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


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
