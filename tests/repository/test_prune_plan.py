"""A prune batch reads about a batch of rows, not every row due for pruning.

Whatever the planner's statistics say: here they were taken while the outbox
was empty, and then it filled with long-finished rows. Left to those
statistics, each batch's plan would read every doomed row and sort them, so a
pass over a long history would cost time growing with the square of its
length. The batch must run in ``walking_index_in_order``.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from service.repository.outbox import PRUNE_FINISHED, walking_index_in_order

_DOOMED = 10_000
_BATCH = 250
_SNAPSHOT = json.dumps(
    [{"id": 1, "title": "Prepare the quarterly report", "status": "open", "due_at": None}]
)


def _rows_read(plan: dict[str, Any]) -> int:
    """The most rows any scan of the notifications table in ``plan`` returned."""
    own = plan["Actual Rows"] if plan.get("Relation Name") == "notifications" else 0
    return max([own, *(_rows_read(child) for child in plan.get("Plans", []))])


async def _prune_batch_reads(db: asyncpg.Connection) -> int:
    """Prunes one batch of sent rows (for real) and tells how many rows its scans read."""
    explained = await db.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + PRUNE_FINISHED, "sent", timedelta(days=7), _BATCH
    )
    return _rows_read(json.loads(explained)[0]["Plan"])


@pytest.fixture
async def history_with_stale_statistics(db: asyncpg.Connection) -> None:
    """An outbox analyzed while empty, then holding a long history of sent rows."""
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('a@x.io', 'A') RETURNING id")
    await db.execute("ANALYZE notifications")
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   status, sent_at, finished_at)
        SELECT $1, 'a@x.io', 'A', $3::jsonb, 'sent', finished, finished
        FROM generate_series(1, $2::int) AS g,
             LATERAL (SELECT now() - interval '30 days' + g * interval '1 s') AS t(finished)
        """,
        user,
        _DOOMED,
        _SNAPSHOT,
    )


@pytest.mark.usefixtures("history_with_stale_statistics")
async def test_a_prune_batch_reads_one_batch(db: asyncpg.Connection) -> None:
    async with walking_index_in_order(db):
        read = await _prune_batch_reads(db)

    assert read == _BATCH
    assert await db.fetchval("SELECT count(*) FROM notifications") == _DOOMED - _BATCH


async def test_sorting_is_off_only_within_its_transaction(db: asyncpg.Connection) -> None:
    async with walking_index_in_order(db):
        assert await db.fetchval("SHOW enable_sort") == "off"

    assert await db.fetchval("SHOW enable_sort") == "on"
