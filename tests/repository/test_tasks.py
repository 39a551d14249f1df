"""Users, tasks and the reassigning statement at the repository level."""

from __future__ import annotations

import anyio
import asyncpg
import pytest

from service.errors import Conflict, NotFound, UnknownReferences
from service.models import CreateTask, CreateUser, TaskUpdate
from service.repository import Repository


async def test_a_second_user_with_the_same_address_is_a_conflict(repository: Repository) -> None:
    await repository.create_user(CreateUser(email="same@x.io", name="First"))
    with pytest.raises(Conflict) as refused:
        await repository.create_user(CreateUser(email="same@x.io", name="Second"))
    assert refused.value.details == [{"field": "email", "message": "already registered"}]


async def test_a_task_for_an_unknown_assignee_names_it(repository: Repository) -> None:
    with pytest.raises(UnknownReferences) as refused:
        await repository.create_task(CreateTask(title="T", assignee_id=404))
    assert refused.value.details == {"missing_assignee_ids": [404]}


async def test_a_task_is_read_back_and_an_unknown_one_is_not_found(
    repository: Repository,
) -> None:
    task = await repository.create_task(CreateTask(title="Read me"))
    assert await repository.get_task(task.id) == task
    with pytest.raises(NotFound):
        await repository.get_task(task.id + 1)


async def test_an_update_names_every_missing_task_and_assignee(
    repository: Repository, db: asyncpg.Connection
) -> None:
    task = await repository.create_task(CreateTask(title="T"))
    updates = [
        TaskUpdate(task_id=task.id, assignee_id=8),
        TaskUpdate(task_id=9, assignee_id=7),
    ]
    with pytest.raises(UnknownReferences) as refused:
        await repository.update_tasks(updates, None)
    assert refused.value.message == "tasks not found: [9]; assignees not found: [7, 8]"
    assert refused.value.details == {"missing_task_ids": [9], "missing_assignee_ids": [7, 8]}
    assert await db.fetchval("SELECT count(*) FROM notifications") == 0
    with pytest.raises(UnknownReferences, match=r"^assignees not found: \[8\]$"):
        await repository.update_tasks(updates[:1], None)


async def test_an_assignee_deleted_while_the_update_runs_is_unknown(
    repository: Repository, db: asyncpg.Connection, db_url: str
) -> None:
    user = await repository.create_user(CreateUser(email="gone@x.io", name="Gone"))
    task = await repository.create_task(CreateTask(title="T"))
    deleter = await asyncpg.connect(db_url)
    try:
        # The user is deleted by a transaction that commits only once the update,
        # which saw the user, waits for it to write its reference.
        deleting = deleter.transaction()
        await deleting.start()
        await deleter.execute("DELETE FROM users WHERE id = $1", user.id)

        async def commit_once_the_update_waits() -> None:
            await _wait_for_a_lock_wait(db)
            await deleting.commit()

        async with anyio.create_task_group() as tg:
            tg.start_soon(commit_once_the_update_waits)
            with pytest.raises(UnknownReferences):
                await repository.update_tasks(
                    [TaskUpdate(task_id=task.id, assignee_id=user.id)], None
                )
    finally:
        await deleter.close()
    assert await db.fetchval("SELECT assignee_id FROM tasks") is None


async def _wait_for_a_lock_wait(db: asyncpg.Connection) -> None:
    """Until a session of this database waits for a lock (the server offers no event)."""
    with anyio.fail_after(5):
        while True:
            waiting = await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if waiting:
                return
            await anyio.sleep(0.01)
