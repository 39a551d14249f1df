"""Every SQL statement the service runs, and the translation of asyncpg errors.

Statements are set-based (``unnest``, ``= ANY``): a request or a batch is a
fixed number of round trips, whatever its size. The outbox state machine is::

    pending --claim--> sending --sent--> sent
       ^                  |--retry/halt--> pending (later)
       |                  '--rejected----> dead
       '-- lease expired: re-claimed with a new token (the old one is fenced)

Every change after a claim is a compare-and-set on the lease token, so a
worker whose lease expired can never overwrite the row's newer state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from service.errors import Conflict, InvalidInput, NotFound, Unavailable, UnknownReferences
from service.models import (
    Attempt,
    CreateTask,
    CreateUser,
    Notification,
    OutboxRow,
    Task,
    TaskUpdate,
    User,
)

INSERT_USER = """
INSERT INTO users (email, name) VALUES ($1, $2)
RETURNING id, email, name, created_at
"""

INSERT_TASK = """
INSERT INTO tasks (title, assignee_id, status, due_at) VALUES ($1, $2, $3, $4)
RETURNING id, title, status, assignee_id, due_at, created_at, updated_at
"""

SELECT_TASK = """
SELECT id, title, status, assignee_id, due_at, created_at, updated_at
FROM tasks WHERE id = $1
"""

# One round trip does the whole request: check references, lock the tasks
# (in id order, so concurrent requests cannot deadlock), update them, and
# write one outbox row per new assignee with a snapshot of their tasks. When
# a reference is missing, nothing is locked, updated or inserted.
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
    (SELECT coalesce(jsonb_agg(jsonb_build_object(
                'id', id, 'title', title, 'status', status, 'assignee_id', assignee_id,
                'due_at', due_at, 'created_at', created_at, 'updated_at', updated_at)
            ORDER BY id), '[]'::jsonb)
     FROM updated) AS updated,
    ARRAY(SELECT id FROM notified) AS notification_ids
"""


_NOTIFICATION_COLUMNS = """
    id, recipient_email AS recipient, status::text AS status, attempts,
    ARRAY(SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(tasks) e) AS task_ids,
    last_error, provider_message_id, created_at, sent_at
"""

# Taking a key: a fresh insert, or the takeover of an expired one. While
# another transaction holds the same key uncommitted, this waits for it, so
# two concurrent requests with one key do the work once.
TAKE_IDEMPOTENCY_KEY = """
INSERT INTO idempotency_keys
    (caller, key, request_hash, response_status, response_body, expires_at)
VALUES ($1, $2, $3, 0, '', now() + $4::interval)
ON CONFLICT (caller, key) DO UPDATE SET
    request_hash = EXCLUDED.request_hash,
    response_status = 0,
    response_body = '',
    created_at = now(),
    expires_at = EXCLUDED.expires_at
WHERE idempotency_keys.expires_at < now()
RETURNING true
"""

SELECT_IDEMPOTENT_RESPONSE = """
SELECT request_hash, response_status, response_body FROM idempotency_keys
WHERE caller = $1 AND key = $2
"""

STORE_IDEMPOTENT_RESPONSE = """
UPDATE idempotency_keys SET response_status = $3, response_body = $4
WHERE caller = $1 AND key = $2
"""

PRUNE_IDEMPOTENCY_KEYS = """
WITH doomed AS (
    SELECT caller, key FROM idempotency_keys WHERE expires_at < now()
    LIMIT $1 FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM idempotency_keys k USING doomed d
    WHERE k.caller = d.caller AND k.key = d.key RETURNING 1
)
SELECT count(*) FROM deleted
"""

SELECT_NOTIFICATION = f"SELECT {_NOTIFICATION_COLUMNS} FROM notifications WHERE id = $1"

SELECT_ATTEMPTS = """
SELECT attempt, outcome, error, provider_message_id, at FROM notification_attempts
WHERE notification_id = $1 ORDER BY at, id
"""

# Claim the given rows if they are still claimable: pending and due, or
# sending with an expired lease (its holder is presumed dead and is fenced
# off by the new token). SKIP LOCKED lets replicas claim side by side.
CLAIM_BY_IDS = """
WITH claimable AS MATERIALIZED (
    SELECT id FROM notifications
    WHERE id = ANY($1::uuid[])
      AND ((status = 'pending' AND next_attempt_at <= now())
           OR (status = 'sending' AND lease_expires_at < now()))
    ORDER BY id
    FOR UPDATE SKIP LOCKED
)
UPDATE notifications n SET
    status = 'sending',
    lease_token = $2,
    lease_expires_at = now() + make_interval(secs => $3),
    attempts = n.attempts + 1
FROM claimable c
WHERE n.id = c.id
RETURNING n.id, n.recipient_email, n.recipient_name, n.tasks, n.attempts, n.request_id,
          n.created_at
"""

RENEW_LEASE = """
UPDATE notifications SET lease_expires_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::uuid[]) AND lease_token = $2 AND status = 'sending'
RETURNING id
"""

# Results are written under the lease (compare-and-set on the token) and,
# in the same statement, appended to the notification's attempt history.
RECORD_OUTCOMES = """
WITH recorded AS (
UPDATE notifications n SET
    status = r.status::notification_status,
    attempts = n.attempts - r.refund,
    next_attempt_at = CASE WHEN r.status = 'pending'
                           THEN now() + make_interval(secs => r.delay)
                           ELSE n.next_attempt_at END,
    last_error = coalesce(r.error, n.last_error),
    provider_message_id = coalesce(r.provider_message_id, n.provider_message_id),
    sent_at = CASE WHEN r.status = 'sent' THEN now() ELSE n.sent_at END,
    finished_at = CASE WHEN r.status IN ('sent', 'dead') THEN now() END,
    lease_token = NULL,
    lease_expires_at = NULL
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::integer[])
    AS r(id, status, provider_message_id, error, delay, refund)
WHERE n.id = r.id AND n.lease_token = $1 AND n.status = 'sending'
RETURNING n.id, n.attempts + r.refund AS attempt, r.status, r.refund, r.error,
          r.provider_message_id
), history AS (
    INSERT INTO notification_attempts
        (notification_id, attempt, outcome, error, provider_message_id)
    SELECT id, attempt,
           CASE WHEN status <> 'pending' THEN status
                WHEN refund > 0 THEN 'halted'
                ELSE 'retry' END,
           error, provider_message_id
    FROM recorded
)
SELECT id FROM recorded
"""

# The sweeper pages through due work in a stable order (keyset pagination),
# so ids it already handed to the stream are not handed over again in the
# same pass. Rows younger than the grace period are left to the fast path.
SELECT_DUE_PENDING = """
SELECT id, next_attempt_at FROM notifications
WHERE status = 'pending'
  AND next_attempt_at <= now() - make_interval(secs => $1)
  AND (next_attempt_at, id) > ($2, $3)
ORDER BY next_attempt_at, id
LIMIT $4
"""

SELECT_EXPIRED_LEASES = """
SELECT id FROM notifications
WHERE status = 'sending' AND lease_expires_at < now()
ORDER BY lease_expires_at
LIMIT $1
"""

# Newest first, keyset-paged on (created_at, id); both filters optional.
LIST_NOTIFICATIONS = f"""
SELECT {_NOTIFICATION_COLUMNS}
FROM notifications
WHERE ($1::notification_status IS NULL OR status = $1::notification_status)
  AND ($2::text IS NULL OR lower(recipient_email) = lower($2::text))
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid))
ORDER BY created_at DESC, id DESC
LIMIT $5
"""

# Dead letters go back to pending with a fresh set of attempts.
RETRY_DEAD = """
UPDATE notifications SET
    status = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL
WHERE id = $1 AND status = 'dead'
RETURNING id
"""

RETRY_DEAD_MATCHING = """
UPDATE notifications SET
    status = 'pending', attempts = 0, next_attempt_at = now(), finished_at = NULL
WHERE status = 'dead' AND ($1::text IS NULL OR lower(recipient_email) = lower($1::text))
RETURNING id
"""

# Small batches keep each delete short and its locks few; SKIP LOCKED lets
# replicas prune side by side without waiting on each other.
PRUNE_FINISHED = """
WITH doomed AS (
    SELECT id FROM notifications
    WHERE status = $1::notification_status AND finished_at < now() - $2::interval
    ORDER BY finished_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), deleted AS (
    DELETE FROM notifications n USING doomed d WHERE n.id = d.id RETURNING 1
)
SELECT count(*) FROM deleted
"""

NOTIFY = "SELECT pg_notify($1, $2)"

# One count per status, each an index scan of that status only.
OUTBOX_COUNTS = """
SELECT
    (SELECT coalesce(jsonb_object_agg(s.status, (
        SELECT count(*) FROM notifications n WHERE n.status = s.status)), '{}'::jsonb)
     FROM unnest(enum_range(NULL::notification_status)) AS s(status)) AS by_status,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
     FROM notifications WHERE status = 'pending') AS oldest_pending_age
"""

# Translated to Unavailable: the database cannot be reached or is restarting.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
)

OutcomeStatus = Literal["sent", "pending", "dead"]


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """What to write for one claimed row when its batch comes back."""

    notification_id: UUID
    status: OutcomeStatus
    provider_message_id: str | None = None
    error: str | None = None
    # For status "pending": seconds until the next attempt.
    delay: float = 0.0
    # 1 gives the claim's attempt back (account-level halts are not the row's fault).
    refund: int = 0


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    rows: list[OutboxRow]
    # Claimed rows whose snapshot cannot be read, with the reason.
    unreadable: dict[UUID, str]

    def __len__(self) -> int:
        return len(self.rows) + len(self.unreadable)


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    tasks: list[Task]
    notification_ids: list[UUID]


@dataclass(frozen=True, slots=True)
class DueCursor:
    """Position of the sweeper's keyset scan; starts before every row."""

    next_attempt_at: datetime
    notification_id: UUID


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    caller: str
    key: str
    request_hash: bytes
    ttl: timedelta


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response the first request with an idempotency key received."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    by_status: dict[str, int]
    oldest_pending_age_seconds: float | None


@dataclass(frozen=True, slots=True)
class NotificationCursor:
    """Where a newest-first page of notifications ended."""

    created_at: datetime
    notification_id: UUID


class Repository:
    """Data access over an asyncpg pool; raises only ``service.errors`` types."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[Any]]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE_ERRORS as exc:
            raise Unavailable("the database is unavailable; try again shortly") from exc

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

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

    async def update_tasks(
        self, updates: Sequence[TaskUpdate], request_id: str | None
    ) -> UpdateOutcome:
        """Apply every update and write the outbox rows, all or nothing."""
        async with self._connection() as conn:
            return await _update_tasks(conn, updates, request_id)

    async def update_tasks_once(
        self,
        updates: Sequence[TaskUpdate],
        request_id: str | None,
        key: IdempotencyKey,
        render: Callable[[UpdateOutcome], bytes],
    ) -> UpdateOutcome | StoredResponse:
        """Like ``update_tasks``, but at most once per idempotency key.

        Returns the new outcome (whose rendered response is stored with the
        update, in one transaction), or the response stored by the first
        request with this key. A failed update stores nothing, so the key
        can be used again.
        """
        async with self._connection() as conn, conn.transaction():
            taken = await conn.fetchval(
                TAKE_IDEMPOTENCY_KEY, key.caller, key.key, key.request_hash, key.ttl
            )
            if not taken:
                stored = _present(
                    await conn.fetchrow(SELECT_IDEMPOTENT_RESPONSE, key.caller, key.key)
                )
                if stored["request_hash"] != key.request_hash:
                    raise InvalidInput(
                        "this Idempotency-Key was already used with a different request body",
                        details=[
                            {"field": "Idempotency-Key", "message": "reused with another body"}
                        ],
                    )
                return StoredResponse(stored["response_status"], stored["response_body"])
            outcome = await _update_tasks(conn, updates, request_id)
            await conn.execute(STORE_IDEMPOTENT_RESPONSE, key.caller, key.key, 200, render(outcome))
            return outcome

    async def get_notification(self, notification_id: UUID) -> Notification:
        async with self._connection() as conn:
            row = await conn.fetchrow(SELECT_NOTIFICATION, notification_id)
        if row is None:
            raise NotFound(f"notification {notification_id} does not exist")
        return Notification.model_validate(dict(row))

    async def attempts(self, notification_id: UUID) -> list[Attempt]:
        """Every recorded attempt, oldest first; 404 if the notification is unknown."""
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_ATTEMPTS, notification_id)
        if not rows:
            await self.get_notification(notification_id)  # raises NotFound if unknown
        return [Attempt.model_validate(dict(row)) for row in rows]

    async def list_notifications(
        self,
        *,
        status: str | None,
        recipient: str | None,
        before: NotificationCursor | None,
        limit: int,
    ) -> list[Notification]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                LIST_NOTIFICATIONS,
                status,
                recipient,
                before.created_at if before else None,
                before.notification_id if before else None,
                limit,
            )
        return [Notification.model_validate(dict(row)) for row in rows]

    async def retry_dead(self, notification_id: UUID) -> Notification:
        """Put one dead notification back to pending with its attempts reset."""
        async with self._connection() as conn:
            retried = await conn.fetchval(RETRY_DEAD, notification_id)
        notification = await self.get_notification(notification_id)  # 404 if unknown
        if retried is None:
            raise Conflict(
                f"notification {notification_id} is {notification.status}; only dead "
                "notifications can be retried"
            )
        return notification

    async def retry_dead_matching(self, recipient: str | None) -> list[UUID]:
        async with self._connection() as conn:
            rows = await conn.fetch(RETRY_DEAD_MATCHING, recipient)
        return [row["id"] for row in rows]

    async def prune_finished(self, status: str, older_than: timedelta, limit: int) -> int:
        """Delete up to ``limit`` finished rows; returns how many went."""
        async with self._connection() as conn:
            deleted: int = await conn.fetchval(PRUNE_FINISHED, status, older_than, limit)
        return deleted

    async def outbox_counts(self) -> OutboxCounts:
        async with self._connection() as conn:
            row = _present(await conn.fetchrow(OUTBOX_COUNTS))
        return OutboxCounts(dict(row["by_status"]), row["oldest_pending_age"])

    async def prune_idempotency_keys(self, limit: int) -> int:
        async with self._connection() as conn:
            deleted: int = await conn.fetchval(PRUNE_IDEMPOTENCY_KEYS, limit)
        return deleted

    async def notify(self, channel: str, payload: str) -> None:
        async with self._connection() as conn:
            await conn.execute(NOTIFY, channel, payload)

    # --- delivery -----------------------------------------------------------

    async def claim(
        self, ids: Sequence[UUID], lease_token: UUID, lease_seconds: float
    ) -> ClaimedBatch:
        """Claim what is still claimable among ``ids`` under ``lease_token``."""
        async with self._connection() as conn:
            records = await conn.fetch(CLAIM_BY_IDS, list(ids), lease_token, lease_seconds)
        batch = ClaimedBatch(rows=[], unreadable={})
        for record in records:
            # One corrupt snapshot must not take its batch down with it.
            try:
                batch.rows.append(OutboxRow.model_validate(dict(record)))
            except ValidationError as exc:
                batch.unreadable[record["id"]] = f"unreadable outbox row: {exc}"
        return batch

    async def renew_lease(
        self, ids: Sequence[UUID], lease_token: UUID, lease_seconds: float
    ) -> set[UUID]:
        """Extend the lease; returns the ids this token still holds."""
        async with self._connection() as conn:
            rows = await conn.fetch(RENEW_LEASE, list(ids), lease_token, lease_seconds)
        return {row["id"] for row in rows}

    async def record_outcomes(
        self, lease_token: UUID, outcomes: Sequence[RecordedOutcome]
    ) -> set[UUID]:
        """Write results under the lease; returns the ids actually written."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                RECORD_OUTCOMES,
                lease_token,
                [o.notification_id for o in outcomes],
                [o.status for o in outcomes],
                [o.provider_message_id for o in outcomes],
                [o.error for o in outcomes],
                [o.delay for o in outcomes],
                [o.refund for o in outcomes],
            )
        return {row["id"] for row in rows}

    async def due_pending(
        self, grace_seconds: float, after: DueCursor, limit: int
    ) -> list[tuple[UUID, DueCursor]]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                SELECT_DUE_PENDING,
                grace_seconds,
                after.next_attempt_at,
                after.notification_id,
                limit,
            )
        return [(row["id"], DueCursor(row["next_attempt_at"], row["id"])) for row in rows]

    async def expired_leases(self, limit: int) -> list[UUID]:
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_EXPIRED_LEASES, limit)
        return [row["id"] for row in rows]


async def _update_tasks(
    conn: asyncpg.pool.PoolConnectionProxy[Any],
    updates: Sequence[TaskUpdate],
    request_id: str | None,
) -> UpdateOutcome:
    try:
        row = _present(
            await conn.fetchrow(
                UPDATE_TASKS,
                [u.task_id for u in updates],
                [u.assignee_id for u in updates],
                [u.status for u in updates],
                [u.title for u in updates],
                [u.due_at for u in updates],
                [u.due_at_given for u in updates],
                request_id,
            )
        )
    except asyncpg.ForeignKeyViolationError as exc:
        # Only possible if a user vanished between check and write.
        raise UnknownReferences("an assignee does not exist") from exc
    missing_tasks, missing_assignees = row["missing_task_ids"], row["missing_assignee_ids"]
    if missing_tasks or missing_assignees:
        raise UnknownReferences(
            _describe_missing(missing_tasks, missing_assignees),
            details={
                "missing_task_ids": list(missing_tasks),
                "missing_assignee_ids": list(missing_assignees),
            },
        )
    return UpdateOutcome(
        tasks=[Task.model_validate(task) for task in row["updated"]],
        notification_ids=list(row["notification_ids"]),
    )


def _present(row: asyncpg.Record | None) -> asyncpg.Record:
    # INSERT ... RETURNING and an aggregate SELECT always return one row.
    assert row is not None
    return row


def _describe_missing(task_ids: Sequence[int], assignee_ids: Sequence[int]) -> str:
    parts = []
    if task_ids:
        parts.append(f"tasks not found: {sorted(task_ids)}")
    if assignee_ids:
        parts.append(f"assignees not found: {sorted(assignee_ids)}")
    return "; ".join(parts)
