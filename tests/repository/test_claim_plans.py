"""The statements that act on given outbox ids find them by primary key.

Whatever the planner's statistics say: here they were taken while the table
was empty (as after a deploy, or with autovacuum behind), and then the
outbox filled with pending and sending rows. A plain condition on status
would match a partial index's predicate (notifications_due_idx,
notifications_lease_idx), and a plan reading it would read every pending or
sending row for each batch; the statements' CASE conditions match none.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest

from service.repository.outbox import CLAIM_BY_IDS, RECORD_OUTCOMES, RENEW_LEASE

_ROWS_PER_STATUS = 10_000
_BATCH = 150
# A realistic row width: the planner weighs a sequential scan by pages.
_SNAPSHOT = json.dumps(
    [{"id": 1, "title": "Prepare the quarterly report", "status": "open", "due_at": None}]
)


def _scans(plan: dict[str, Any]) -> list[str]:
    """Every read of the notifications table in ``plan``: its index, or "Seq Scan"."""
    found = []
    if plan.get("Index Name", "").startswith("notifications_"):
        found.append(plan["Index Name"])
    elif plan["Node Type"] == "Seq Scan" and plan.get("Relation Name") == "notifications":
        found.append("Seq Scan")
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


async def _plan_scans(db: asyncpg.Connection, statement: str, *args: object) -> list[str]:
    """How ``statement`` would read the notifications table (planned, not run)."""
    plan = json.loads(await db.fetchval("EXPLAIN (FORMAT JSON) " + statement, *args))
    return _scans(plan[0]["Plan"])


@pytest.fixture
async def outbox_with_stale_statistics(db: asyncpg.Connection) -> list[uuid.UUID]:
    """Ids of pending rows, in an outbox analyzed while it was empty."""
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('a@x.io', 'A') RETURNING id")
    await db.execute("ANALYZE notifications")
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   status, lease_token, lease_expires_at)
        SELECT $1, 'a@x.io', 'A', $3::jsonb, s.status::notification_status,
               CASE WHEN s.status = 'sending' THEN gen_random_uuid() END,
               CASE WHEN s.status = 'sending' THEN now() + interval '1 minute' END
        FROM generate_series(1, $2::int), (VALUES ('pending'), ('sending')) AS s(status)
        """,
        user,
        _ROWS_PER_STATUS,
        _SNAPSHOT,
    )
    rows = await db.fetch("SELECT id FROM notifications WHERE status = 'pending' LIMIT $1", _BATCH)
    return [row["id"] for row in rows]


async def test_claim_looks_up_its_ids_by_primary_key(
    db: asyncpg.Connection, outbox_with_stale_statistics: list[uuid.UUID]
) -> None:
    scans = await _plan_scans(db, CLAIM_BY_IDS, outbox_with_stale_statistics, uuid.uuid4(), 30.0)

    assert set(scans) == {"notifications_pkey"}


async def test_renewing_a_lease_looks_up_its_ids_by_primary_key(
    db: asyncpg.Connection, outbox_with_stale_statistics: list[uuid.UUID]
) -> None:
    scans = await _plan_scans(db, RENEW_LEASE, outbox_with_stale_statistics, uuid.uuid4(), 30.0)

    assert set(scans) == {"notifications_pkey"}


async def test_recording_results_looks_up_its_ids_by_primary_key(
    db: asyncpg.Connection, outbox_with_stale_statistics: list[uuid.UUID]
) -> None:
    ids = outbox_with_stale_statistics
    count = len(ids)
    scans = await _plan_scans(
        db,
        RECORD_OUTCOMES,
        uuid.uuid4(),
        ids,
        ["sent"] * count,
        ["provider-id"] * count,
        [None] * count,
        [0.0] * count,
        [0] * count,
    )

    assert set(scans) == {"notifications_pkey"}
