"""Shared fixtures: a real PostgreSQL database per test session, settings, an app client.

The server is the one at TEST_POSTGRES_URL (default: the local one on
127.0.0.1:5432). When none answers, an embedded PostgreSQL (pgserver) is
started for the session, so the suite passes on a machine with only Python.

Every test is marked by what it needs, from the fixtures it uses (see
``pytest_collection_modifyitems``): ``db`` (a PostgreSQL server), ``browser``
(chromium), ``e2e`` (the service as a process). ``make test-fast`` runs the
tests that need none of them.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
import yaml

from service.migrations import migrate
from service.settings import Settings
from tests.support.app import app_client, make_settings
from tests.support.container_files import COMPOSE_FILE, DOCKERFILE, Instruction, parse_dockerfile
from tests.support.database import admin_url_or_none, database_url, start_embedded_server
from tests.support.throwaway_postgres import ThrowawayPostgres

# The fixtures whose use puts a test under each marker. ``postgres_server``
# is where every fixture of the shared server starts, so it stands for them.
_FIXTURE_MARKERS = {"postgres_server": "db", "stoppable_postgres": "db", "browser": "browser"}
_E2E_DIRECTORY = Path(__file__).resolve().parent / "e2e"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dashboard-screenshot",
        metavar="PATH",
        default=None,
        help="save the dashboard tour's screenshot here (make screenshot), not in a temp dir",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by what it needs, so ``-m`` can leave the slow parts out."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in used:
                item.add_marker(marker)
        if _E2E_DIRECTORY in item.path.parents:
            item.add_marker("e2e")


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


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def migrated_database(postgres_server: tuple[str, bool]) -> Iterator[str]:
    """A fresh database for this session, migrated, dropped at the end.

    An embedded server is deleted whole at the end of the session, so its
    database is not dropped separately.
    """
    postgres_admin_url, embedded = postgres_server
    name = f"svc_test_{uuid.uuid4().hex[:10]}"
    anyio.run(_create_database, postgres_admin_url, name)
    url = database_url(postgres_admin_url, name)
    anyio.run(migrate, url)
    yield url
    if not embedded:
        anyio.run(_drop_database, postgres_admin_url, name)


@pytest.fixture
def empty_database(postgres_admin_url: str) -> Iterator[str]:
    """A database of its own, not migrated, dropped after the test (synchronous tests)."""
    name = f"svc_empty_{uuid.uuid4().hex[:10]}"
    anyio.run(_create_database, postgres_admin_url, name)
    try:
        yield database_url(postgres_admin_url, name)
    finally:
        anyio.run(_drop_database, postgres_admin_url, name)


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


@pytest.fixture
async def stoppable_postgres() -> AsyncIterator[ThrowawayPostgres]:
    """A private, migrated PostgreSQL cluster that the test may stop (a real outage).

    Never the shared server: stopping it would take every other test's database away.
    """
    async with ThrowawayPostgres() as postgres:
        await migrate(postgres.url)
        yield postgres


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app, with the lifespan running."""
    async with app_client(settings) as http:
        yield http


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide this machine's settings variables, so only what a test passes counts."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)


@pytest.fixture
def command_line(
    isolated_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[pytest.MonkeyPatch]:
    """For calling ``service.__main__.main``: no setting comes from this machine's
    environment or a ``.env`` file (the working directory is ``tmp_path``), and
    the logging that ``main`` configures is undone after the test. Set settings
    with the ``MonkeyPatch`` it returns."""
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx").level
    try:
        yield monkeypatch
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        logging.getLogger("httpx").setLevel(httpx_level)


@pytest.fixture(scope="session")
def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per build stage."""
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def runtime_stage(dockerfile_stages: list[list[Instruction]]) -> list[Instruction]:
    """The Dockerfile's last stage: the image that runs."""
    return dockerfile_stages[-1]


@pytest.fixture(scope="session")
def compose_file() -> dict[str, Any]:
    """docker-compose.yml, loaded."""
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded
