"""The connection helper every store shares, and the translation of outage errors.

Every way PostgreSQL can refuse or drop a connection becomes ``Unavailable``
(a 503 with Retry-After on the request side, a back-off on the background
side), with a short reason that ``/readyz`` shows:

- while a connection is opened (the pool reconnects on acquire), *any* server
  error: the database refuses it (``ALLOW_CONNECTIONS false``, a connection
  limit, start-up or shutdown, a dropped database, authentication);
- while a statement runs: the SQLSTATE classes that mean the session is gone
  or the server cannot serve it (08 connection exception, 53 insufficient
  resources, 57P01-57P05 shutdown and termination), the connection closing
  under asyncpg, and network errors and timeouts.

Everything else a statement raises (constraint violations, bugs) stays
itself. Guarded by tests/repository/test_outage_errors.py and
tests/http/test_database_refusals.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg

from service.errors import Unavailable

if TYPE_CHECKING:  # subscriptable only in asyncpg-stubs
    _Connection = asyncpg.pool.PoolConnectionProxy[Any]

# What /readyz says, by SQLSTATE; then by SQLSTATE class.
_REASONS = {
    "55000": "connections not allowed",  # ALLOW_CONNECTIONS false (at connect)
    "53300": "too many connections",  # max_connections, or a role's or database's limit
    "57P01": "terminated by an administrator or a shutdown",
    "57P02": "the server crashed",
    "57P03": "the database is starting up or shutting down",
    "57P04": "the database was dropped",
    "57P05": "idle session timeout",
    "3D000": "the database does not exist",
}
_CLASS_REASONS = {
    "08": "connection lost",
    "28": "authentication refused",
    "53": "insufficient resources",
}
# SQLSTATEs raised by a statement that mean the session or server is gone.
_OUTAGE_CLASSES = ("08", "53")
_OUTAGE_STATES = ("57P01", "57P02", "57P03", "57P04", "57P05")
# Not server errors: the socket, a timeout, or asyncpg finding the connection closed.
_CLIENT_SIDE_OUTAGES: tuple[type[Exception], ...] = (
    OSError,  # TimeoutError and ConnectionRefusedError are OSErrors
    asyncpg.InterfaceError,
)
# Whatever a connection or a statement may raise that can mean an outage.
_CANDIDATES: tuple[type[Exception], ...] = (asyncpg.PostgresError, *_CLIENT_SIDE_OUTAGES)
# What a statement on a connection the server has closed may raise besides.
_STATEMENT_CANDIDATES: tuple[type[Exception], ...] = (*_CANDIDATES, asyncpg.InternalClientError)


def outage_reason(exc: BaseException) -> str:
    """A few words for why the database could not serve, for logs and /readyz."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate)
        return _REASONS.get(state) or _CLASS_REASONS.get(state[:2], f"refused ({state})")
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, (ConnectionRefusedError, FileNotFoundError)):
        return "connection refused"  # FileNotFoundError: no unix socket, no server
    if isinstance(exc, OSError):
        return "network error"
    return "connection lost"


def _is_statement_outage(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate)
        return state[:2] in _OUTAGE_CLASSES or state in _OUTAGE_STATES
    return isinstance(exc, _CLIENT_SIDE_OUTAGES)


def _unavailable(exc: BaseException) -> Unavailable:
    reason = outage_reason(exc)
    # The message stays the same for every reason; /readyz and the logs name it.
    return Unavailable("the database is unavailable; try again shortly", reason=reason)


class Store:
    """Base of the stores: an asyncpg pool, and connections that fail as ``Unavailable``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def _acquire(self) -> _Connection:
        # The pool (re)opens the connection here if it has none or it was lost,
        # so whatever the server answers is a refusal of the connection.
        try:
            conn: _Connection = await self._pool.acquire()
        except _CANDIDATES as exc:
            raise _unavailable(exc) from exc
        return conn

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[_Connection]:
        conn = await self._acquire()
        try:
            yield conn
        except _STATEMENT_CANDIDATES as exc:
            # A session the server ended while the connection sat idle fails its
            # next statement in one of several ways (asyncpg may even find its
            # protocol state confused), but the connection is closed by then.
            if _is_statement_outage(exc) or conn.is_closed():
                raise _unavailable(exc) from exc
            raise
        finally:
            try:
                await self._pool.release(conn)
            except _CLIENT_SIDE_OUTAGES as exc:
                raise _unavailable(exc) from exc


def _present(row: asyncpg.Record | None) -> asyncpg.Record:
    # INSERT ... RETURNING and an aggregate SELECT always return one row.
    assert row is not None
    return row
