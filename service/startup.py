"""Start-up checks that end in one clear line: the database, the port, the data folder.

A service started by an orchestrator often comes up before its database, so
start-up waits for a database that is not accepting connections yet (refused,
starting up, too many connections, no answer) for up to
``DATABASE_WAIT_SECONDS``, saying so once per attempt. A problem that waiting
cannot fix (wrong credentials, a missing database, a malformed URL) ends
start-up at once. Either way the process prints one line naming the setting and
what to do, and exits 1 (tests/test_startup.py).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator

import anyio
import asyncpg

from service.errors import StartupFailed

logger = logging.getLogger("service")

# One connection attempt may take this long before it counts as no answer.
_ATTEMPT_TIMEOUT_SECONDS = 5.0
# Waits between attempts grow from the first to the last, doubling.
_FIRST_RETRY_SECONDS = 0.5
_LAST_RETRY_SECONDS = 5.0

# Errors that may clear up by themselves while the database starts.
_NOT_UP_YET: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    # "database is not currently accepting connections" (ALLOW_CONNECTIONS false).
    asyncpg.ObjectNotInPrerequisiteStateError,
    asyncpg.ConnectionDoesNotExistError,
)


def _refusal(exc: BaseException) -> StartupFailed:
    """What to say about an error that waiting will not fix."""
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        # Wrong password (InvalidPasswordError) and unknown roles alike.
        return StartupFailed(
            f"DATABASE_URL: the database refused the credentials ({exc}); "
            "check the user and password in DATABASE_URL"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StartupFailed(
            f"DATABASE_URL: {exc}; create it, or correct the database name in DATABASE_URL"
        )
    return StartupFailed(
        f"DATABASE_URL: cannot connect ({type(exc).__name__}: {exc}); "
        "expected postgresql://user:password@host:port/database"
    )


async def wait_for_database(url: str, wait_seconds: float, shutdown: anyio.Event) -> bool:
    """Return True once ``url`` accepts a connection; False if ``shutdown`` came first.

    Raises ``StartupFailed`` at once for what waiting cannot fix, and after
    ``wait_seconds`` for a database that never came up.
    """
    deadline = anyio.current_time() + wait_seconds
    retry_in = _FIRST_RETRY_SECONDS
    attempt = 0
    while True:
        attempt += 1
        try:
            conn = await asyncpg.connect(url, timeout=_ATTEMPT_TIMEOUT_SECONDS)
        except _NOT_UP_YET as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if anyio.current_time() + retry_in > deadline:
                raise StartupFailed(
                    f"DATABASE_URL: the database did not accept connections within "
                    f"{wait_seconds:g} s ({reason}); check that it runs and that DATABASE_URL "
                    "points at it, or raise DATABASE_WAIT_SECONDS"
                ) from exc
            logger.warning(
                "waiting for the database (%s): attempt %d, trying again in %.1f s, "
                "giving up %g s after start",
                reason,
                attempt,
                retry_in,
                wait_seconds,
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise _refusal(exc) from exc
        else:
            await conn.close()
            return True
        with anyio.move_on_after(retry_in):
            await shutdown.wait()
        if shutdown.is_set():
            return False
        retry_in = min(retry_in * 2, _LAST_RETRY_SECONDS)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _cannot_listen(host: str, port: int, exc: OSError) -> StartupFailed:
    return StartupFailed(
        f"PORT: cannot listen on {host}:{port} ({exc.strerror}); stop the process "
        "that holds it, or set PORT (or HOST) to another"
    )


def check_port_free(host: str, port: int) -> None:
    """Raise ``StartupFailed`` if the server could not listen on ``host:port``.

    Checked before the app starts, so a port in use is one line rather than a
    lifespan started and cancelled; the server's own bind error is translated
    too (``startup_failure``), for a port taken in between.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return  # an unresolvable HOST is the server's to report
    family, kind, protocol, _, address = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        # As the server binds: a port in TIME_WAIT is free to take.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise _cannot_listen(host, port, exc) from exc
            raise


def startup_failure(exc: BaseException, host: str, port: int) -> StartupFailed | None:
    """The one-line failure inside ``exc`` (which may be an exception group), if any.

    That is a ``StartupFailed``, or a server that could not bind its port.
    """
    for leaf in _leaves(exc):
        if isinstance(leaf, StartupFailed):
            return leaf
        if isinstance(leaf, OSError) and leaf.errno in (errno.EADDRINUSE, errno.EACCES):
            return _cannot_listen(host, port, leaf)
    return None
