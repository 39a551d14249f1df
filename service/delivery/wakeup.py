"""LISTEN/NOTIFY between replicas: "I have more work than my stream holds".

A replica whose stream is full sends one NOTIFY (rate-limited); the other
replicas' sweepers wake at once and offer those rows to their own idle
consumers instead of waiting for the next poll. It is only a hint: polling
stays the fallback, and a lost notification costs at most one sweep interval.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import asyncpg
from anyio.abc import TaskStatus

from service.delivery.backoff import Backoff
from service.delivery.ports import NotifySender
from service.errors import Unavailable

logger = logging.getLogger(__name__)

_Listener = Callable[[Any, int, str, Any], None]
# Any of these means the connection is gone or refused: reconnect with backoff.
# InternalClientError: a session the server ended can confuse asyncpg's
# protocol state on the next statement (tests/repository/test_outage_errors.py).
_CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)

CHANNEL = "notifications_backlog"

# Use the LISTEN connection, so that asyncpg notices when it is dead.
KEEP_ALIVE = "SELECT 1"

# asyncpg notices a dead connection only when it uses it; ping this often
# (test_the_listener_reconnects_after_its_connection_is_killed).
_KEEPALIVE_SECONDS = 5.0
_CONNECT_TIMEOUT_SECONDS = 5.0


def new_instance_id() -> str:
    return uuid.uuid4().hex


class WakeUp:
    """Cuts the sweeper's sleep short when another replica has a backlog."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if woken by a notification."""
        with anyio.move_on_after(seconds):
            await self._event.wait()
        woken = self._event.is_set()
        if woken:
            self._event = anyio.Event()
        return woken


class BacklogBroadcaster:
    """Sends the NOTIFY from a background task, at most once per ``min_interval``.

    Requests only call ``signal()``: no extra round trip on the request path,
    and a burst of overflowing requests collapses into one NOTIFY. A signal
    that arrives while the task waits out the interval is sent right after
    it, so the last overflow of a burst is never left unannounced.
    """

    def __init__(self, repository: NotifySender, instance_id: str, min_interval: float) -> None:
        self._repository = repository
        self._instance_id = instance_id
        self._min_interval = min_interval
        self._pending = anyio.Event()

    def signal(self) -> None:
        self._pending.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            try:
                await self._repository.notify(CHANNEL, self._instance_id)
            except Unavailable:
                pass  # the rows are committed; polling finds them
            await anyio.sleep(self._min_interval)


async def _listen_until_lost(conn: asyncpg.Connection, on_notify: _Listener) -> None:
    lost = anyio.Event()
    conn.add_termination_listener(lambda _conn: lost.set())
    await conn.add_listener(CHANNEL, on_notify)
    while not lost.is_set():
        with anyio.move_on_after(_KEEPALIVE_SECONDS):
            await lost.wait()
        if not lost.is_set():
            await conn.fetchval(KEEP_ALIVE, timeout=_CONNECT_TIMEOUT_SECONDS)


async def run_listener(
    dsn: str,
    wake: WakeUp,
    instance_id: str,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Keep a LISTEN connection open, re-establishing it whenever it drops.

    Start-up does not wait for it: until it works, polling covers.
    """
    reconnect_backoff = Backoff(base=0.5, cap=10.0)
    failures = 0
    task_status.started()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        # Our own backlog is already in our stream
        # (test_a_notification_from_another_replica_wakes_the_sweeper).
        if payload != instance_id:
            wake.set()

    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=_CONNECT_TIMEOUT_SECONDS)
            try:
                if failures:
                    logger.info("LISTEN connection re-established")
                    wake.set()  # notifications may have been missed meanwhile
                    failures = 0
                await _listen_until_lost(conn, on_notify)
            finally:
                conn.terminate()
            logger.warning("LISTEN connection lost; reconnecting")
        except _CONNECTION_ERRORS as exc:
            logger.warning("LISTEN connection failed (%r); reconnecting", exc)
        failures += 1
        await anyio.sleep(reconnect_backoff.delay(failures))
