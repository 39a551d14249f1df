"""The connection helper every store shares, and the translation of outage errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from service.errors import Unavailable

# Translated to Unavailable: the database cannot be reached or is restarting.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
)


class Store:
    """Base of the stores: an asyncpg pool, and connections that fail as ``Unavailable``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[Any]]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE_ERRORS as exc:
            raise Unavailable("the database is unavailable; try again shortly") from exc


def _present(row: asyncpg.Record | None) -> asyncpg.Record:
    # INSERT ... RETURNING and an aggregate SELECT always return one row.
    assert row is not None
    return row
