"""Which database errors are an outage (``Unavailable``), and the reason each one gives."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from service.errors import Unavailable
from service.repository import Repository
from service.repository._store import Store, outage_reason

# Whether the session runs pg_sleep (the statement the test ends under it).
_SLEEPING = "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%'"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (asyncpg.ObjectNotInPrerequisiteStateError("not accepting"), "connections not allowed"),
        (asyncpg.TooManyConnectionsError("sorry"), "too many connections"),
        (
            asyncpg.CannotConnectNowError("starting up"),
            "the database is starting up or shutting down",
        ),
        (asyncpg.AdminShutdownError("terminating"), "terminated by an administrator or a shutdown"),
        (asyncpg.InvalidCatalogNameError("no such db"), "the database does not exist"),
        (asyncpg.ConnectionFailureError("gone"), "connection lost"),
        (asyncpg.InvalidPasswordError("wrong"), "authentication refused"),
        (asyncpg.DiskFullError("full"), "insufficient resources"),
        (asyncpg.UndefinedTableError("odd"), "refused (42P01)"),
        (TimeoutError(), "no answer in time"),
        (ConnectionRefusedError(), "connection refused"),
        (FileNotFoundError(), "connection refused"),
        (ConnectionResetError(), "network error"),
        (asyncpg.InterfaceError("connection is closed"), "connection lost"),
    ],
)
def test_each_refusal_has_a_reason(error: BaseException, reason: str) -> None:
    assert outage_reason(error) == reason


async def test_a_session_terminated_while_idle_is_unavailable(
    repository: Repository, db: asyncpg.Connection
) -> None:
    store: Store = repository

    async def query_a_terminated_session() -> None:
        async with store._connection() as conn:
            await db.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            await conn.fetchval("SELECT 1")

    with pytest.raises(Unavailable) as refused:
        await query_a_terminated_session()
    assert refused.value.reason in {
        "terminated by an administrator or a shutdown",
        "connection lost",  # or asyncpg's protocol confused by the unexpected FATAL message
    }
    await repository.ping()  # the pool opens a new connection by itself


async def test_a_session_terminated_during_a_statement_is_unavailable(
    repository: Repository, db: asyncpg.Connection
) -> None:
    store: Store = repository
    pids: list[int] = []

    async def sleep_in_the_database() -> None:
        async with store._connection() as conn:
            pids.append(conn.get_server_pid())
            await conn.fetchval("SELECT pg_sleep(30)")

    async def terminate_once_sleeping() -> None:
        with anyio.fail_after(10):
            while True:  # no event says that the statement has started
                if pids and await db.fetchval(_SLEEPING, pids[0]):
                    break
                await anyio.sleep(0.01)
        await db.execute("SELECT pg_terminate_backend($1)", pids[0])

    refused: list[Unavailable] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(terminate_once_sleeping)
        try:
            await sleep_in_the_database()
        except Unavailable as outage:
            refused.append(outage)
    (error,) = refused
    # asyncpg reports the FATAL message as the server's error or as the closed connection.
    assert error.reason in {"terminated by an administrator or a shutdown", "connection lost"}


async def test_a_statement_error_that_is_no_outage_stays_itself(repository: Repository) -> None:
    store: Store = repository

    async def query_a_missing_table() -> None:
        async with store._connection() as conn:
            await conn.fetchval("SELECT * FROM no_such_table")

    with pytest.raises(asyncpg.UndefinedTableError):
        await query_a_missing_table()
