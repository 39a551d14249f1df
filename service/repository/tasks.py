"""Users and tasks: creating and reading them."""

from __future__ import annotations

import asyncpg

from service.errors import Conflict, NotFound, UnknownReferences
from service.models import CreateTask, CreateUser, Task, User
from service.repository._store import Store, _present

# Create a user; its e-mail address is unique.
INSERT_USER = """
INSERT INTO users (email, name) VALUES ($1, $2)
RETURNING id, email, name, created_at
"""

# Create a task, assigned or not.
INSERT_TASK = """
INSERT INTO tasks (title, assignee_id, status, due_at) VALUES ($1, $2, $3, $4)
RETURNING id, title, status, assignee_id, due_at, created_at, updated_at
"""

# One task by id.
SELECT_TASK = """
SELECT id, title, status, assignee_id, due_at, created_at, updated_at
FROM tasks WHERE id = $1
"""


class TaskStore(Store):
    async def create_user(self, user: CreateUser) -> User:
        async with self._connection() as conn:
            try:
                row = await conn.fetchrow(INSERT_USER, user.email, user.name)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(
                    "a user with this e-mail address already exists",
                    details=[{"field": "email", "message": "already registered"}],
                ) from exc
        return User.model_validate(dict(_present(row)))

    async def create_task(self, task: CreateTask) -> Task:
        async with self._connection() as conn:
            try:
                row = await conn.fetchrow(
                    INSERT_TASK, task.title, task.assignee_id, task.status, task.due_at
                )
            except asyncpg.ForeignKeyViolationError as exc:
                raise UnknownReferences(
                    f"user {task.assignee_id} does not exist",
                    details={"missing_assignee_ids": [task.assignee_id]},
                ) from exc
        return Task.model_validate(dict(_present(row)))

    async def get_task(self, task_id: int) -> Task:
        async with self._connection() as conn:
            row = await conn.fetchrow(SELECT_TASK, task_id)
        if row is None:
            raise NotFound(f"task {task_id} does not exist")
        return Task.model_validate(dict(row))
