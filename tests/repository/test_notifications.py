"""Reading notifications and their attempts, and retrying dead letters."""

from __future__ import annotations

import uuid
from uuid import UUID

import asyncpg
import pytest

from service.errors import Conflict, NotFound
from service.models import CreateTask, CreateUser, TaskUpdate
from service.repository import NotificationCursor, RecordedOutcome, Repository


async def _notify(repository: Repository, email: str, tasks: int = 1) -> UUID:
    """One notification to a new user about ``tasks`` new tasks."""
    user = await repository.create_user(CreateUser(email=email, name=email))
    updates = [
        TaskUpdate(
            task_id=(await repository.create_task(CreateTask(title="T"))).id, assignee_id=user.id
        )
        for _ in range(tasks)
    ]
    outcome = await repository.update_tasks(updates, None)
    return outcome.notification_ids[0]


async def _kill(db: asyncpg.Connection, notification_id: UUID) -> None:
    await db.execute(
        "UPDATE notifications SET status = 'dead', attempts = 5, finished_at = now() WHERE id = $1",
        notification_id,
    )


async def test_a_notification_tells_its_recipient_and_tasks(repository: Repository) -> None:
    notification_id = await _notify(repository, "one@x.io", tasks=2)
    notification = await repository.get_notification(notification_id)
    assert (notification.recipient, notification.status) == ("one@x.io", "pending")
    assert len(notification.task_ids) == 2
    with pytest.raises(NotFound):
        await repository.get_notification(uuid.uuid4())


async def test_attempts_are_listed_oldest_first(repository: Repository) -> None:
    notification_id = await _notify(repository, "tried@x.io")
    assert await repository.attempts(notification_id) == []
    for outcome in (
        RecordedOutcome(notification_id, "pending", error="503", delay=-1),
        RecordedOutcome(notification_id, "sent", provider_message_id="pm-1"),
    ):
        token = uuid.uuid4()
        await repository.claim([notification_id], token, 30)
        await repository.record_outcomes(token, [outcome])
    attempts = await repository.attempts(notification_id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "retry"), (2, "sent")]
    with pytest.raises(NotFound):
        await repository.attempts(uuid.uuid4())


async def test_notifications_are_listed_newest_first_by_status_and_recipient(
    repository: Repository, db: asyncpg.Connection
) -> None:
    first, second, third = [await _notify(repository, f"r{n}@x.io") for n in range(3)]
    await _kill(db, first)
    await _kill(db, third)

    page = await repository.list_notifications(status=None, recipient=None, before=None, limit=2)
    assert [n.id for n in page] == [third, second]
    cursor = NotificationCursor(page[-1].created_at, page[-1].id)
    rest = await repository.list_notifications(status=None, recipient=None, before=cursor, limit=2)
    assert [n.id for n in rest] == [first]
    dead = await repository.list_notifications(status="dead", recipient=None, before=None, limit=9)
    assert [n.id for n in dead] == [third, first]
    mine = await repository.list_notifications(
        status=None, recipient="R1@X.IO", before=None, limit=9
    )
    assert [n.id for n in mine] == [second]


async def test_a_dead_notification_is_retried_with_fresh_attempts(
    repository: Repository, db: asyncpg.Connection
) -> None:
    notification_id = await _notify(repository, "dead@x.io")
    await _kill(db, notification_id)
    retried = await repository.retry_dead(notification_id)
    assert (retried.status, retried.attempts) == ("pending", 0)
    with pytest.raises(Conflict, match="is pending"):
        await repository.retry_dead(notification_id)
    with pytest.raises(NotFound):
        await repository.retry_dead(uuid.uuid4())


async def test_dead_notifications_are_retried_by_recipient_or_all(
    repository: Repository, db: asyncpg.Connection
) -> None:
    ids = [await _notify(repository, f"d{n}@x.io") for n in range(3)]
    for notification_id in ids:
        await _kill(db, notification_id)
    assert await repository.retry_dead_matching("D0@x.io") == [ids[0]]
    assert set(await repository.retry_dead_matching(None)) == set(ids[1:])
    assert await repository.retry_dead_matching(None) == []
