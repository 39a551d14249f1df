"""LISTEN/NOTIFY wake-ups between replicas."""

from __future__ import annotations

import logging

import anyio
import asyncpg
import pytest

from service.delivery import wakeup
from service.delivery.wakeup import CHANNEL, KEEP_ALIVE, WakeUp, run_listener


class _CountingWakeUp(WakeUp):
    """A WakeUp that counts how often it was set."""

    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0

    def set(self) -> None:
        self.wakes += 1
        super().set()


async def test_a_notification_from_another_replica_wakes_the_sweeper(
    db_url: str, db: asyncpg.Connection
) -> None:
    wake = _CountingWakeUp()
    async with anyio.create_task_group() as tg:
        await tg.start(run_listener, db_url, wake, "me")
        await _wait_for_listener(db)
        # One transaction: both reach the listener together at its commit, ours
        # first, so the listener has handled ours when the other one wakes the
        # sweeper.
        async with db.transaction():
            await db.execute("SELECT pg_notify($1, 'me')", CHANNEL)
            await db.execute("SELECT pg_notify($1, 'another-replica')", CHANNEL)
        with anyio.fail_after(5):
            assert await wake.sleep(10)
        assert wake.wakes == 1  # ours did not wake it
        tg.cancel_scope.cancel()


async def test_the_listener_reconnects_after_its_connection_is_killed(
    db_url: str, db: asyncpg.Connection
) -> None:
    wake = WakeUp()
    async with anyio.create_task_group() as tg:
        await tg.start(run_listener, db_url, wake, "me")
        await _wait_for_listener(db)
        await db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%' AND datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        # On reconnecting it wakes the sweeper (notifications may have been missed).
        with anyio.fail_after(10):
            assert await wake.sleep(10)
        await _wait_for_listener(db)
        await db.execute("SELECT pg_notify($1, 'another-replica')", CHANNEL)
        with anyio.fail_after(5):
            assert await wake.sleep(10)
        tg.cancel_scope.cancel()


async def test_the_listener_keeps_its_connection_in_use(
    db_url: str, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wakeup, "_KEEPALIVE_SECONDS", 0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(run_listener, db_url, WakeUp(), "me")
        with anyio.fail_after(5):
            while True:
                pinged = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = $1 "
                    "AND datname = current_database() AND pid <> pg_backend_pid()",
                    KEEP_ALIVE,
                )
                if pinged:
                    break
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


async def test_a_listener_that_cannot_connect_keeps_trying() -> None:
    failed = anyio.Event()

    class _OnFailure(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("LISTEN connection failed"):
                failed.set()

    handler = _OnFailure()
    logging.getLogger(wakeup.__name__).addHandler(handler)
    try:
        async with anyio.create_task_group() as tg:
            # Nothing listens on port 1: the connection is refused.
            await tg.start(run_listener, "postgresql://postgres@127.0.0.1:1/none", WakeUp(), "me")
            with anyio.fail_after(5):
                await failed.wait()
            tg.cancel_scope.cancel()
    finally:
        logging.getLogger(wakeup.__name__).removeHandler(handler)


async def _wait_for_listener(db: asyncpg.Connection) -> None:
    """Until the server shows the LISTEN connection (it offers no event for that)."""
    with anyio.fail_after(5):
        while True:
            listening = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
                "AND datname = current_database() AND pid <> pg_backend_pid()"
            )
            if listening:
                return
            await anyio.sleep(0.01)
