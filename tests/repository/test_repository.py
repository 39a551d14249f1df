"""Outbox state changes at the repository level, against a real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from uuid import UUID

import anyio
import asyncpg
import pytest

from service.database import create_pool
from service.errors import Unavailable
from service.models import TaskUpdate
from service.repository import RecordedOutcome, Repository
from service.repository.outbox import OUTBOX_COUNTS
from service.settings import Settings
from tests.support.api import fetch_one


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


async def test_outbox_counts_tell_each_status_and_the_oldest_pending_age(
    repository: Repository, notification_id: UUID
) -> None:
    counts = await repository.outbox_counts()
    assert counts.by_status == {"pending": 1, "sending": 0, "dead": 0, "sent": 0}
    assert counts.oldest_pending_age_seconds is not None


async def test_an_unreadable_row_is_claimed_with_its_reason(
    repository: Repository, db: asyncpg.Connection, notification_id: UUID
) -> None:
    await db.execute("UPDATE notifications SET tasks = '\"not a task list\"'")
    batch = await repository.claim([notification_id], uuid.uuid4(), 30)
    assert batch.rows == []
    assert batch.unreadable[notification_id].startswith("unreadable outbox row")


async def test_finished_rows_and_expired_keys_are_pruned_past_their_time(
    repository: Repository, db: asyncpg.Connection, notification_id: UUID
) -> None:
    await db.execute(
        "UPDATE notifications SET status = 'sent', finished_at = now() - interval '2 days'"
    )
    await db.execute(
        "INSERT INTO idempotency_keys (caller, key, request_hash, response_status,"
        " response_body, expires_at) VALUES ('c', 'old', '', 200, '', now() - interval '1 s'),"
        " ('c', 'new', '', 200, '', now() + interval '1 h')"
    )
    assert await repository.prune_finished("sent", timedelta(days=3), 10) == 0
    assert await repository.prune_finished("sent", timedelta(days=1), 10) == 1
    assert await repository.prune_idempotency_keys(10) == 1
    assert await db.fetchval("SELECT key FROM idempotency_keys") == "new"


async def test_a_notify_reaches_the_listeners_of_its_channel(
    repository: Repository, db: asyncpg.Connection
) -> None:
    received = anyio.Event()
    payloads: list[object] = []

    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        payloads.append(payload)
        received.set()

    await db.add_listener("test_channel", on_notify)
    await repository.notify("test_channel", "hello")
    with anyio.fail_after(5):
        await received.wait()
    assert payloads == ["hello"]


async def test_a_database_out_of_reach_is_unavailable(settings: Settings) -> None:
    pool = await create_pool(settings)
    repository = Repository(pool)
    await repository.ping()
    await pool.close()
    with pytest.raises(Unavailable):
        await repository.ping()


async def test_activity_counts_what_was_sent_in_its_minutes(
    repository: Repository, db: asyncpg.Connection, notification_id: UUID
) -> None:
    await db.execute(
        "UPDATE notifications SET status = 'sent', sent_at = now(), finished_at = now()"
    )
    activity = await repository.delivery_activity(minutes=3, latency_window_minutes=5)
    # In the current minute, or the one before if a minute began in between.
    assert len(activity.sent_per_minute) == 3
    assert sum(activity.sent_per_minute) == 1
    assert activity.latency_samples == 1
    assert activity.latency_p50_seconds == activity.latency_p95_seconds
