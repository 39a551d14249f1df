"""The sweeper re-offers due rows once, however often it runs."""

from __future__ import annotations

import asyncpg

from service.database import create_pool
from service.delivery.queue import MemoryStreamQueue
from service.delivery.sweeper import Sweeper
from service.metrics import Metrics
from service.repository import Repository
from service.settings import Settings, SweepPolicy


async def test_rows_still_queued_are_not_offered_again(
    settings: Settings, db: asyncpg.Connection
) -> None:
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('s@x.io', 'S') RETURNING id")
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks)
        SELECT $1, 's@x.io', 'S', '[]' FROM generate_series(1, 5)
        """,
        user,
    )
    pool = await create_pool(settings)
    queue = MemoryStreamQueue(capacity=100, send_timeout=0)
    try:
        sweeper = Sweeper(
            Repository(pool), SweepPolicy(page_size=2, interval=60, grace=0), metrics=Metrics()
        )
        # No consumer runs: as if every consumer were stuck behind a slow provider.
        assert await sweeper.sweep_once(queue) == 5
        assert await sweeper.sweep_once(queue) == 0
        assert queue.buffer_used() == 5
    finally:
        await queue.close()
        await pool.close()


async def test_one_pass_recovers_every_expired_lease_and_retries_skip_the_grace(
    settings: Settings, db: asyncpg.Connection
) -> None:
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('e@x.io', 'E') RETURNING id")
    # 25 rows a dead replica had claimed, and one row that failed once and is due now.
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   status, lease_token, lease_expires_at, attempts)
        SELECT $1, 'e@x.io', 'E', '[]', 'sending', gen_random_uuid(),
               now() - make_interval(secs => n), 1
        FROM generate_series(1, 25) AS n
        """,
        user,
    )
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   attempts, next_attempt_at)
        VALUES ($1, 'e@x.io', 'E', '[]', 1, now())
        """,
        user,
    )
    pool = await create_pool(settings)
    queue = MemoryStreamQueue(capacity=100, send_timeout=0)
    try:
        sweeper = Sweeper(
            Repository(pool), SweepPolicy(page_size=10, interval=60, grace=3600), metrics=Metrics()
        )
        assert await sweeper.sweep_once(queue) == 26
    finally:
        await queue.close()
        await pool.close()
