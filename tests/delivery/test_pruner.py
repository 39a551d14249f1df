"""Pruning finished outbox rows."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from service.database import create_pool
from service.delivery.pruner import Pruner
from service.repository import Repository
from service.settings import RetentionPolicy, Settings
from tests.support.settings import settings_from


async def test_only_rows_finished_before_their_retention_are_pruned(
    settings: Settings, db: asyncpg.Connection
) -> None:
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('p@x.io', 'P') RETURNING id")
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   status, finished_at)
        SELECT $1, 'p@x.io', 'P', '[]', s.status::notification_status,
               now() - make_interval(days => s.age_days)
        FROM (VALUES ('sent', 8), ('sent', 8), ('sent', 8), ('sent', 6),
                     ('dead', 31), ('dead', 29)) AS s(status, age_days)
        """,
        user,
    )
    # A pending row is never pruned, however old.
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   created_at)
        VALUES ($1, 'p@x.io', 'P', '[]', now() - interval '90 days')
        """,
        user,
    )
    pool = await create_pool(settings)
    try:
        pruner = Pruner(
            Repository(pool),
            # batch_size smaller than the backlog: several batches
            RetentionPolicy(
                sent=timedelta(days=7), dead=timedelta(days=30), batch_size=2, interval=60
            ),
        )
        assert await pruner.prune_once() == 4
        assert await pruner.prune_once() == 0
    finally:
        await pool.close()
    remaining = await db.fetch(
        "SELECT status::text, count(*) AS n FROM notifications GROUP BY 1 ORDER BY 1"
    )
    assert {r["status"]: r["n"] for r in remaining} == {"pending": 1, "sent": 1, "dead": 1}


def test_retention_settings_accept_iso_durations() -> None:
    settings = settings_from(retention="P3D", dead_retention=86400)
    assert settings.retention == timedelta(days=3)
    assert settings.dead_retention == timedelta(days=1)
