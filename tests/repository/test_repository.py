"""Outbox state changes at the repository level, against a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from uuid import UUID

import asyncpg
import pytest

from service.database import create_pool
from service.models import TaskUpdate
from service.repository import RecordedOutcome, Repository
from service.repository.outbox import OUTBOX_COUNTS
from service.settings import Settings
from tests.support.api import fetch_one


@pytest.fixture
async def repository(settings: Settings) -> AsyncIterator[Repository]:
    pool = await create_pool(settings)
    try:
        yield Repository(pool)
    finally:
        await pool.close()


@pytest.fixture
async def notification_id(repository: Repository, db: asyncpg.Connection) -> UUID:
    user = await db.fetchval("INSERT INTO users (email, name) VALUES ('a@x.io', 'A') RETURNING id")
    task = await db.fetchval("INSERT INTO tasks (title) VALUES ('T') RETURNING id")
    outcome = await repository.update_tasks([TaskUpdate(task_id=task, assignee_id=user)], None)
    return outcome.notification_ids[0]


async def test_a_row_is_claimed_once(repository: Repository, notification_id: UUID) -> None:
    first = await repository.claim([notification_id], uuid.uuid4(), 30)
    second = await repository.claim([notification_id], uuid.uuid4(), 30)
    assert [row.id for row in first.rows] == [notification_id]
    assert len(second) == 0


async def test_a_stale_worker_cannot_overwrite_a_reclaimed_row(
    repository: Repository, db: asyncpg.Connection, notification_id: UUID
) -> None:
    stale, fresh = uuid.uuid4(), uuid.uuid4()
    # A lease that is already over: as if the first worker hung past it.
    assert len(await repository.claim([notification_id], stale, -1)) == 1
    assert len(await repository.claim([notification_id], fresh, 30)) == 1

    late = RecordedOutcome(notification_id, "dead", error="stale worker's verdict")
    assert await repository.record_outcomes(stale, [late]) == set()
    assert await repository.renew_lease([notification_id], stale, 30) == set()
    row = await fetch_one(db, "SELECT status::text, lease_token FROM notifications")
    assert (row["status"], row["lease_token"]) == ("sending", fresh)

    sent = RecordedOutcome(notification_id, "sent", provider_message_id="pm-1")
    assert await repository.record_outcomes(fresh, [sent]) == {notification_id}
    # Once finished, no token can change it again.
    assert await repository.record_outcomes(fresh, [late]) == set()
    row = await fetch_one(db, "SELECT status::text, attempts, sent_at FROM notifications")
    assert row["status"] == "sent"
    assert row["attempts"] == 2
    assert row["sent_at"] is not None


async def test_retry_is_not_claimable_before_it_is_due(
    repository: Repository, notification_id: UUID
) -> None:
    token = uuid.uuid4()
    await repository.claim([notification_id], token, 30)
    retry = RecordedOutcome(notification_id, "pending", error="503", delay=60)
    assert await repository.record_outcomes(token, [retry]) == {notification_id}
    assert len(await repository.claim([notification_id], uuid.uuid4(), 30)) == 0


async def test_halt_gives_the_attempt_back(
    repository: Repository, db: asyncpg.Connection, notification_id: UUID
) -> None:
    token = uuid.uuid4()
    await repository.claim([notification_id], token, 30)
    hold = RecordedOutcome(notification_id, "pending", error="halted", delay=0, refund=1)
    await repository.record_outcomes(token, [hold])
    assert await db.fetchval("SELECT attempts FROM notifications") == 0


async def test_outbox_counts_are_exact_for_live_work_and_estimate_sent_past_a_limit(
    db: asyncpg.Connection, notification_id: UUID
) -> None:
    await db.execute(
        """
        INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks,
                                   status, finished_at)
        SELECT (SELECT id FROM users LIMIT 1), 'a@x.io', 'A', '[]', 'sent', now()
        FROM generate_series(1, 50)
        """
    )
    await db.execute("ANALYZE notifications")
    exact = await fetch_one(db, OUTBOX_COUNTS, 1_000_000)
    assert json.loads(exact["by_status"]) == {"pending": 1, "sending": 0, "dead": 0, "sent": 50}
    # Past the limit, sent comes from the planner's row estimate (exact after ANALYZE here).
    estimated = await fetch_one(db, OUTBOX_COUNTS, 10)
    assert json.loads(estimated["by_status"])["sent"] == 50
