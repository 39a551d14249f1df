"""A database that refuses connections: 503 with Retry-After, /readyz names why, and recovery.

Each test makes PostgreSQL refuse the service's connections for real, then
terminates the service's sessions so that its pool and its LISTEN
connection must reconnect, and then lets it in again. The service is never
restarted: it recovers by itself.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import httpx
import pytest

from service.errors import UNAVAILABLE_RETRY_AFTER_SECONDS
from service.migrations import migrate
from tests.support.api import create_task, create_user, wait_for_statuses
from tests.support.app import app_client, make_settings
from tests.support.database import database_url
from tests.support.throwaway_postgres import ThrowawayPostgres

_RECOVERY_DEADLINE_SECONDS = 15.0

# Sessions of a database or a role other than the caller's own.
_TERMINATE_DATABASE_SESSIONS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = $1 AND pid <> pg_backend_pid()"
)
_TERMINATE_ROLE_SESSIONS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE usename = $1 AND pid <> pg_backend_pid()"
)


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def own_database(postgres_admin_url: str) -> AsyncIterator[tuple[str, str]]:
    """A migrated database of this test's own (its settings may change): name and URL."""
    name = f"svc_refusal_{uuid.uuid4().hex[:10]}"
    await _execute(postgres_admin_url, f'CREATE DATABASE "{name}"')
    try:
        url = database_url(postgres_admin_url, name)
        await migrate(url)
        yield name, url
    finally:
        await _execute(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _terminate(admin_url: str, query: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.fetchval(query, name)
    finally:
        await conn.close()


async def _assert_refused_then_recovers(
    client: httpx.AsyncClient,
    db_url: str,
    refuse: Callable[[], Awaitable[None]],
    allow: Callable[[], Awaitable[None]],
    reason: str,
) -> None:
    alice = await create_user(client, "alice@example.com", "Alice")
    task = await create_task(client, "Write the report")
    update = [{"task_id": task, "assignee_id": alice}]

    await refuse()
    refused = await client.post("/update-tasks", json=update)
    read = await client.get(f"/tasks/{task}")
    ready = await client.get("/readyz")

    for response in (refused, read):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "unavailable"
        assert response.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER_SECONDS)
    assert ready.status_code == 503, ready.text
    assert ready.json()["database"] == f"unavailable: {reason}"
    assert ready.json()["background_tasks"] == "ok"  # an outage is not a dead task
    assert ready.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER_SECONDS)

    await allow()
    with anyio.fail_after(_RECOVERY_DEADLINE_SECONDS):
        while True:  # polling with a deadline: nothing signals the database's return
            if (await client.get("/readyz")).status_code == 200:
                break
            await anyio.sleep(0.05)
    accepted = await client.post("/update-tasks", json=update)
    assert accepted.status_code == 200, accepted.text
    # The refused update wrote nothing; the accepted one is delivered by the
    # background side, which rode out the refusals instead of dying.
    conn = await asyncpg.connect(db_url)
    try:
        await wait_for_statuses(conn, {"sent": 1}, within=_RECOVERY_DEADLINE_SECONDS)
    finally:
        await conn.close()
    assert (await client.get("/readyz")).json()["background_tasks"] == "ok"


async def test_a_database_that_allows_no_connections_is_a_503_until_it_does(
    postgres_admin_url: str, own_database: tuple[str, str], tmp_path: Path
) -> None:
    name, url = own_database

    async def refuse() -> None:
        await _execute(postgres_admin_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await _terminate(postgres_admin_url, _TERMINATE_DATABASE_SESSIONS, name)

    async def allow() -> None:
        await _execute(postgres_admin_url, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    settings = make_settings(
        url, email_provider="file", email_file_dir=tmp_path, prune_interval=0.05
    )
    try:
        async with app_client(settings) as client:
            await _assert_refused_then_recovers(
                client, url, refuse, allow, "connections not allowed"
            )
    finally:
        await allow()


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname or ''}"))


async def test_too_many_connections_is_a_503_until_there_is_room(
    stoppable_postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    # A throw-away cluster: superusers are exempt from connection limits, so
    # the service connects as a role of its own, whose limit the test lowers.
    admin_url, role = stoppable_postgres.url, "service_app"
    await _execute(
        admin_url,
        f"CREATE ROLE {role} LOGIN",
        f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}",
    )
    url = _as_role(admin_url, role)

    async def refuse() -> None:
        await _execute(admin_url, f"ALTER ROLE {role} CONNECTION LIMIT 0")
        await _terminate(admin_url, _TERMINATE_ROLE_SESSIONS, role)

    async def allow() -> None:
        await _execute(admin_url, f"ALTER ROLE {role} CONNECTION LIMIT -1")

    settings = make_settings(
        url, email_provider="file", email_file_dir=tmp_path, prune_interval=0.05
    )
    async with app_client(settings) as client:
        await _assert_refused_then_recovers(
            client, admin_url, refuse, allow, "too many connections"
        )
