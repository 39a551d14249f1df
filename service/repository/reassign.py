"""The reassigning transaction, with or without an idempotency key.

A request without an idempotency key runs UPDATE_TASKS, which has none of the
key's CTEs, so it pays nothing for them; UPDATE_TASKS_ONCE is the same
statement with the key's lines added
(test_the_keyed_update_is_the_plain_one_with_the_key_added keeps them in step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from service.errors import Conflict, InvalidInput, UnknownReferences
from service.models import TaskUpdate
from service.repository._store import Store, _present

# Reassign tasks and write one outbox row per new assignee, in one round trip.
UPDATE_TASKS = """
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                         $5::timestamptz[], $6::boolean[])
        AS i(task_id, assignee_id, status, title, due_at, due_at_given)
),
missing_tasks AS (
    SELECT i.task_id FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = i.task_id)
),
missing_users AS (
    SELECT DISTINCT i.assignee_id FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = i.assignee_id)
),
-- Locked in id order, so concurrent requests cannot deadlock; nothing is
-- locked, updated or inserted while a reference is missing
-- (test_unknown_ids_are_named_and_nothing_changes).
locked AS MATERIALIZED (
    SELECT t.id, t.assignee_id AS previous_assignee_id
    FROM tasks t
    WHERE t.id = ANY($1::bigint[])
      AND NOT EXISTS (SELECT 1 FROM missing_tasks)
      AND NOT EXISTS (SELECT 1 FROM missing_users)
    ORDER BY t.id
    FOR UPDATE
),
updated AS (
    UPDATE tasks t SET
        assignee_id = i.assignee_id,
        status = coalesce(i.status, t.status),
        title = coalesce(i.title, t.title),
        due_at = CASE WHEN i.due_at_given THEN i.due_at ELSE t.due_at END,
        updated_at = now()
    FROM input i JOIN locked l ON l.id = i.task_id
    WHERE t.id = i.task_id
    RETURNING t.id, t.title, t.status, t.assignee_id, t.due_at, t.created_at,
              t.updated_at, l.previous_assignee_id
),
-- One row per new assignee, with a snapshot of their tasks as updated
-- (test_thirty_tasks_to_one_person_make_one_notification).
notified AS (
    INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, request_id)
    SELECT u.id, u.email, u.name,
           jsonb_agg(jsonb_build_object('id', up.id, 'title', up.title,
                                        'status', up.status, 'due_at', up.due_at)
                     ORDER BY up.id),
           $7
    FROM updated up JOIN users u ON u.id = up.assignee_id
    WHERE up.previous_assignee_id IS DISTINCT FROM up.assignee_id
    GROUP BY u.id
    RETURNING id
)
SELECT
    ARRAY(SELECT task_id FROM missing_tasks ORDER BY 1) AS missing_task_ids,
    ARRAY(SELECT assignee_id FROM missing_users ORDER BY 1) AS missing_assignee_ids,
    -- Records in TASK_FIELDS order: decoded by asyncpg in C, no JSON round trip.
    ARRAY(SELECT ROW(id, title, status, assignee_id, due_at, created_at, updated_at)
          FROM updated ORDER BY id) AS updated,
    ARRAY(SELECT id FROM notified) AS notification_ids
"""

# UPDATE_TASKS at most once per idempotency key ($8 caller, $9 key, $10 hash, $11 ttl).
UPDATE_TASKS_ONCE = """
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                         $5::timestamptz[], $6::boolean[])
        AS i(task_id, assignee_id, status, title, due_at, due_at_given)
),
missing_tasks AS (
    SELECT i.task_id FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM tasks t WHERE t.id = i.task_id)
),
missing_users AS (
    SELECT DISTINCT i.assignee_id FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = i.assignee_id)
),
-- The key is taken only for an update that can be done, by a fresh insert or
-- the takeover of an expired key; while another transaction holds it
-- uncommitted the insert waits, so concurrent requests with one key do the
-- work once (test_concurrent_requests_with_one_key_do_the_work_once).
taken AS (
    INSERT INTO idempotency_keys
        (caller, key, request_hash, response_status, response_body, expires_at)
    SELECT $8, $9, $10, 200, '', now() + $11::interval
    WHERE NOT EXISTS (SELECT 1 FROM missing_tasks)
      AND NOT EXISTS (SELECT 1 FROM missing_users)
    ON CONFLICT (caller, key) DO UPDATE SET
        request_hash = EXCLUDED.request_hash,
        response_status = EXCLUDED.response_status,
        response_body = EXCLUDED.response_body,
        created_at = now(),
        expires_at = EXCLUDED.expires_at
    WHERE idempotency_keys.expires_at < now()
    RETURNING true
),
-- Locked in id order, so concurrent requests cannot deadlock; nothing is
-- locked, updated or inserted while a reference is missing
-- (test_unknown_ids_are_named_and_nothing_changes) or the key is not ours.
locked AS MATERIALIZED (
    SELECT t.id, t.assignee_id AS previous_assignee_id
    FROM tasks t
    WHERE t.id = ANY($1::bigint[])
      AND NOT EXISTS (SELECT 1 FROM missing_tasks)
      AND NOT EXISTS (SELECT 1 FROM missing_users)
      AND EXISTS (SELECT 1 FROM taken)
    ORDER BY t.id
    FOR UPDATE
),
updated AS (
    UPDATE tasks t SET
        assignee_id = i.assignee_id,
        status = coalesce(i.status, t.status),
        title = coalesce(i.title, t.title),
        due_at = CASE WHEN i.due_at_given THEN i.due_at ELSE t.due_at END,
        updated_at = now()
    FROM input i JOIN locked l ON l.id = i.task_id
    WHERE t.id = i.task_id
    RETURNING t.id, t.title, t.status, t.assignee_id, t.due_at, t.created_at,
              t.updated_at, l.previous_assignee_id
),
-- One row per new assignee, with a snapshot of their tasks as updated
-- (test_thirty_tasks_to_one_person_make_one_notification).
notified AS (
    INSERT INTO notifications (recipient_id, recipient_email, recipient_name, tasks, request_id)
    SELECT u.id, u.email, u.name,
           jsonb_agg(jsonb_build_object('id', up.id, 'title', up.title,
                                        'status', up.status, 'due_at', up.due_at)
                     ORDER BY up.id),
           $7
    FROM updated up JOIN users u ON u.id = up.assignee_id
    WHERE up.previous_assignee_id IS DISTINCT FROM up.assignee_id
    GROUP BY u.id
    RETURNING id
),
-- The outcome is kept as typed rows beside the key, so a replay returns it
-- even after its tasks changed or went
-- (test_a_replay_returns_the_stored_outcome_even_if_a_task_is_gone_since).
stored AS (
    INSERT INTO idempotent_results (caller, key, tasks, notification_ids)
    SELECT $8, $9,
           ARRAY(SELECT ROW(id, title, status, assignee_id, due_at, created_at,
                            updated_at)::task_result
                 FROM updated ORDER BY id),
           ARRAY(SELECT id FROM notified)
    WHERE EXISTS (SELECT 1 FROM taken)
    ON CONFLICT (caller, key) DO UPDATE SET
        tasks = EXCLUDED.tasks,
        notification_ids = EXCLUDED.notification_ids
)
SELECT
    -- Whether this request did the work; false: the key's first request did.
    EXISTS (SELECT 1 FROM taken) AS taken,
    ARRAY(SELECT task_id FROM missing_tasks ORDER BY 1) AS missing_task_ids,
    ARRAY(SELECT assignee_id FROM missing_users ORDER BY 1) AS missing_assignee_ids,
    -- Records in TASK_FIELDS order: decoded by asyncpg in C, no JSON round trip.
    ARRAY(SELECT ROW(id, title, status, assignee_id, due_at, created_at, updated_at)
          FROM updated ORDER BY id) AS updated,
    ARRAY(SELECT id FROM notified) AS notification_ids
"""

# The first outcome stored under a key (or, for keys stored before sql/006, its body).
SELECT_IDEMPOTENT_RESULT = """
SELECT k.request_hash, k.response_status, k.response_body, r.tasks, r.notification_ids
FROM idempotency_keys k LEFT JOIN idempotent_results r USING (caller, key)
WHERE k.caller = $1 AND k.key = $2
"""


# The fields of each updated task, in the order the statements return them.
TASK_FIELDS = ("id", "title", "status", "assignee_id", "due_at", "created_at", "updated_at")


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    """The updated tasks and the outbox rows written for them."""

    # Plain dicts shaped like models.Task (same keys and value types), so the
    # request side can serialize them without building models.
    tasks: list[dict[str, Any]]
    notification_ids: list[UUID]


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    caller: str
    key: str
    request_hash: bytes
    ttl: timedelta


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The status and body stored for a key before outcomes were kept (sql/006)."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Replay:
    """A retry with a used idempotency key: what its first request came to."""

    first: UpdateOutcome | StoredResponse


class ReassignStore(Store):
    async def update_tasks(
        self, updates: Sequence[TaskUpdate], request_id: str | None
    ) -> UpdateOutcome:
        """Apply every update and write the outbox rows, all or nothing."""
        async with self._connection() as conn:
            row = await _execute(conn, UPDATE_TASKS, _arguments(updates, request_id))
        _raise_if_missing(row)
        return _outcome(row["updated"], row["notification_ids"])

    async def update_tasks_once(
        self,
        updates: Sequence[TaskUpdate],
        request_id: str | None,
        key: IdempotencyKey,
    ) -> UpdateOutcome | Replay:
        """Like ``update_tasks``, but at most once per idempotency key.

        Returns the new outcome (stored with the update, in the same
        statement), or a ``Replay`` of the first request with this key. A
        failed update stores nothing, so the key can be used again.
        """
        arguments = [
            *_arguments(updates, request_id),
            *(key.caller, key.key, key.request_hash, key.ttl),
        ]
        async with self._connection() as conn:
            row = await _execute(conn, UPDATE_TASKS_ONCE, arguments)
            if row["taken"]:
                return _outcome(row["updated"], row["notification_ids"])
            stored = await conn.fetchrow(SELECT_IDEMPOTENT_RESULT, key.caller, key.key)
        if stored is None:
            # The key is only taken for an update that can be done
            # (test_a_failed_request_does_not_use_up_its_key).
            _raise_if_missing(row)
            # Taken and then pruned as expired between the two statements.
            raise Conflict("this Idempotency-Key changed hands just now; retry the request")
        if stored["request_hash"] != key.request_hash:
            raise InvalidInput(
                "this Idempotency-Key was already used with a different request body",
                details=[{"field": "Idempotency-Key", "message": "reused with another body"}],
            )
        if stored["tasks"] is None:  # stored before sql/006: only the body
            return Replay(StoredResponse(stored["response_status"], stored["response_body"]))
        return Replay(_outcome(stored["tasks"], stored["notification_ids"]))


def _arguments(updates: Sequence[TaskUpdate], request_id: str | None) -> list[object]:
    """$1 to $7 of UPDATE_TASKS and UPDATE_TASKS_ONCE."""
    return [
        [u.task_id for u in updates],
        [u.assignee_id for u in updates],
        [u.status for u in updates],
        [u.title for u in updates],
        [u.due_at for u in updates],
        [u.due_at_given for u in updates],
        request_id,
    ]


async def _execute(
    conn: asyncpg.pool.PoolConnectionProxy[Any], statement: str, arguments: list[object]
) -> asyncpg.Record:
    try:
        return _present(await conn.fetchrow(statement, *arguments))
    except asyncpg.ForeignKeyViolationError as exc:
        # Only possible if a user vanished between check and write
        # (test_an_assignee_deleted_while_the_update_runs_is_unknown).
        raise UnknownReferences("an assignee does not exist") from exc


def _raise_if_missing(row: asyncpg.Record) -> None:
    missing_tasks, missing_assignees = row["missing_task_ids"], row["missing_assignee_ids"]
    if missing_tasks or missing_assignees:
        raise UnknownReferences(
            _describe_missing(missing_tasks, missing_assignees),
            details={
                "missing_task_ids": list(missing_tasks),
                "missing_assignee_ids": list(missing_assignees),
            },
        )


def _outcome(tasks: Sequence[Sequence[Any]], notification_ids: Sequence[UUID]) -> UpdateOutcome:
    """From the statement's (or a stored result's) task records, in TASK_FIELDS order."""
    return UpdateOutcome(
        tasks=[dict(zip(TASK_FIELDS, task, strict=True)) for task in tasks],
        notification_ids=list(notification_ids),
    )


def _describe_missing(task_ids: Sequence[int], assignee_ids: Sequence[int]) -> str:
    parts = []
    if task_ids:
        parts.append(f"tasks not found: {sorted(task_ids)}")
    if assignee_ids:
        parts.append(f"assignees not found: {sorted(assignee_ids)}")
    return "; ".join(parts)
