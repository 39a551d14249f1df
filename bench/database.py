"""A throw-away benchmark database: created, migrated, seeded, and dropped at the end.

The server is ``BENCH_POSTGRES_URL`` (default: the local PostgreSQL the tests
use). Each run gets its own database, ``bench_<name>_<pid>``, so runs never
see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.processes import migrate

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# Users get distinct e-mail addresses; every user can be an assignee.
SEED_USERS = """
INSERT INTO users (email, name)
SELECT format('user%s@example.com', g), format('User %s', g)
FROM generate_series(1, $1::int) AS g
"""

# Tasks start unassigned, so every first reassignment writes an e-mail.
SEED_TASKS = """
INSERT INTO tasks (title, status, due_at)
SELECT format('Task number %s: prepare the quarterly report', g), 'open',
       date_trunc('minute', now()) + make_interval(days => g % 30)
FROM generate_series(1, $1::int) AS g
"""

# Pending outbox rows shaped like the ones UPDATE_TASKS writes: a recipient
# snapshot and a jsonb array of {id, title, status, due_at}, one e-mail per row.
PREFILL_OUTBOX = """
INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, request_id)
SELECT u.id, u.email, u.name, snapshot.tasks, 'bench-prefill'
FROM generate_series(0, $1::int - 1) AS g
JOIN users u ON u.id = g % $2::int + 1
CROSS JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object(
               'id', g * $3::int + k,
               'title', format('Task number %s: prepare the quarterly report', g * $3::int + k),
               'status', 'in_progress',
               'due_at', date_trunc('minute', now()) + make_interval(days => k))
           ORDER BY k) AS tasks
    FROM generate_series(1, $3::int) AS k
) AS snapshot
"""

COUNT_BY_STATUS = "SELECT status::text, count(*) FROM notifications GROUP BY status"


def server_url() -> str:
    return os.environ.get("BENCH_POSTGRES_URL", DEFAULT_SERVER_URL)


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def bench_database(name: str, *, keep: bool = False) -> AsyncIterator[str]:
    """Create and migrate ``bench_<name>_<pid>``; yields its URL; drops it after."""
    admin_url = server_url()
    database = f"bench_{name}_{os.getpid()}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    url = _with_database(admin_url, database)
    try:
        await asyncio.to_thread(migrate, url)
        yield url
    finally:
        if not keep:
            admin = await asyncpg.connect(admin_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await admin.close()


async def postgres_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        version: str = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return version.split()[0]


async def seed(url: str, *, users: int, tasks: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SEED_USERS, users)
        await conn.execute(SEED_TASKS, tasks)
        await conn.execute("VACUUM ANALYZE users")
        await conn.execute("VACUUM ANALYZE tasks")
    finally:
        await conn.close()


async def reset_outbox(url: str) -> None:
    """Empty the outbox (and stored idempotent responses), vacuum: every run starts alike."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE notifications CASCADE")
        if await conn.fetchval("SELECT to_regclass('idempotency_keys') IS NOT NULL"):
            await conn.execute("TRUNCATE idempotency_keys CASCADE")
        await conn.execute("VACUUM ANALYZE tasks")
        await conn.execute("VACUUM ANALYZE notifications")
    finally:
        await conn.close()


async def prefill_outbox(url: str, *, rows: int, users: int, tasks_per_email: int) -> None:
    """Insert ``rows`` pending notifications, 10,000 per statement."""
    conn = await asyncpg.connect(url)
    try:
        done = 0
        while done < rows:
            chunk = min(10_000, rows - done)
            await conn.execute(PREFILL_OUTBOX, chunk, users, tasks_per_email)
            done += chunk
        await conn.execute("VACUUM ANALYZE notifications")
    finally:
        await conn.close()


async def count_by_status(conn: asyncpg.Connection) -> dict[str, int]:
    return {row[0]: row[1] for row in await conn.fetch(COUNT_BY_STATUS)}
