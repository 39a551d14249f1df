"""The outbox's delivery side: claims under leases, results, sweeping, pruning.

Every change after a claim is a compare-and-set on the lease token, so a
worker whose lease expired can never overwrite the row's newer state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from service.models import OutboxRow
from service.repository._store import Store, _present

# The statements that act on given ids (claim, renew, record) must find them
# through the primary key, whatever the planner's statistics say. Their
# conditions on status are therefore written as CASE expressions, which no
# index can answer: written plainly, they match the partial indexes'
# predicates, and the planner may scan notifications_due_idx,
# notifications_lease_idx or notifications_status_created_idx instead, that
# is every pending or sending row and the dead index entries of every row
# that passed through since the last vacuum (bitmap scans never mark them
# dead). Each batch then cost time in proportion to the backlog and to the
# traffic since that vacuum (docs/BENCHMARKS.md, finding 22).

# Claim the given rows if they are still claimable: pending and due, or
# sending with an expired lease (its holder is presumed dead and is fenced
# off by the new token). SKIP LOCKED lets replicas claim side by side.
CLAIM_BY_IDS = """
WITH claimable AS MATERIALIZED (
    SELECT id FROM notifications
    WHERE id = ANY($1::uuid[])
      AND CASE status WHEN 'pending' THEN next_attempt_at <= now()
                      WHEN 'sending' THEN lease_expires_at < now()
                      ELSE false END
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
WHERE id = ANY($1::uuid[])
  AND CASE status WHEN 'sending' THEN lease_token = $2 ELSE false END
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
WHERE n.id = r.id
  AND n.id = ANY($2::uuid[])  -- the primary-key lookup, as in the claim
  AND CASE n.status WHEN 'sending' THEN n.lease_token = $1 ELSE false END
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
# Under stale statistics the first pages read every due row too, but from the
# sixth run on a connection the prepared statement's generic plan walks the
# index, and a pass stays linear in the backlog; sorting off would cost three
# more round trips a page (finding 24).
SELECT_DUE_PENDING = """
SELECT id, next_attempt_at AS at FROM notifications
WHERE status = 'pending'
  AND next_attempt_at <= now()
  -- Only never-tried rows can still be waiting in a stream; retries are due now.
  AND (attempts > 0 OR next_attempt_at <= now() - make_interval(secs => $1))
  AND (next_attempt_at, id) > ($2, $3)
ORDER BY next_attempt_at, id
LIMIT $4
"""

# Paged like the pending rows, so a crashed replica's whole backlog of claims
# is recovered in one pass, not one page per sweep.
SELECT_EXPIRED_LEASES = """
SELECT id, lease_expires_at AS at FROM notifications
WHERE status = 'sending' AND lease_expires_at < now()
  AND (lease_expires_at, id) > ($1, $2)
ORDER BY lease_expires_at, id
LIMIT $3
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

# The pruner's batches must walk their index in order and stop after a batch,
# whatever the planner's statistics say. Taken before a long history of
# finished rows built up (or was first due for pruning), they make the planner
# expect a handful of doomed rows, and it plans a bitmap scan of all of them
# and a sort: every batch then reads every doomed row, and a pass takes time
# quadratic in their number. Sorting is switched off for the statement, in its
# own transaction only, which leaves the in-order index scan as the cheapest
# plan (docs/BENCHMARKS.md, finding 24). SET LOCAL ends with the transaction,
# so the pooled connection keeps its defaults.
WALK_INDEX_IN_ORDER = "SET LOCAL enable_sort = off"

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

NOTIFY = "SELECT pg_notify($1, $2)"

# Live work (pending, sending, dead) is counted exactly, each an index scan of
# that status only. Sent rows are most of the table: past $1 rows in all, their
# count is the planner's estimate of the table less the live rows, so a
# refresh never walks a million index entries.
OUTBOX_COUNTS = """
WITH live (status, n) AS (
    -- Literal statuses, so each count can use that status's partial index.
    VALUES ('pending', (SELECT count(*) FROM notifications WHERE status = 'pending')),
           ('sending', (SELECT count(*) FROM notifications WHERE status = 'sending')),
           ('dead', (SELECT count(*) FROM notifications WHERE status = 'dead'))
), estimate AS (
    SELECT reltuples::bigint AS total FROM pg_class WHERE oid = 'notifications'::regclass
)
SELECT
    (SELECT jsonb_object_agg(status, n) FROM live) || jsonb_build_object('sent',
        CASE WHEN (SELECT total FROM estimate) > $1
             THEN greatest(0, (SELECT total FROM estimate) - (SELECT sum(n) FROM live))
             ELSE (SELECT count(*) FROM notifications WHERE status = 'sent')
        END) AS by_status,
    (SELECT extract(epoch FROM now() - min(created_at))::float8
     FROM notifications WHERE status = 'pending') AS oldest_pending_age
"""

# Above this many rows the sent count is estimated (see OUTBOX_COUNTS).
EXACT_SENT_COUNT_LIMIT = 100_000


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
class SweepCursor:
    """Position of a keyset scan: the row's time (due, or lease end) and id."""

    at: datetime
    notification_id: UUID


SWEEP_START = SweepCursor(datetime.min.replace(tzinfo=UTC), UUID(int=0))


@dataclass(frozen=True, slots=True)
class OutboxCounts:
    by_status: dict[str, int]
    oldest_pending_age_seconds: float | None


@asynccontextmanager
async def walking_index_in_order(
    conn: asyncpg.Connection[Any] | asyncpg.pool.PoolConnectionProxy[Any],
) -> AsyncIterator[None]:
    """A transaction in which the planner will not sort (``WALK_INDEX_IN_ORDER``)."""
    async with conn.transaction():
        await conn.execute(WALK_INDEX_IN_ORDER)
        yield


class OutboxStore(Store):
    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

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
        self, grace_seconds: float, after: SweepCursor, limit: int
    ) -> list[tuple[UUID, SweepCursor]]:
        """Pending rows due now, after ``after`` in (due time, id) order."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                SELECT_DUE_PENDING, grace_seconds, after.at, after.notification_id, limit
            )
        return [(row["id"], SweepCursor(row["at"], row["id"])) for row in rows]

    async def expired_leases(
        self, after: SweepCursor, limit: int
    ) -> list[tuple[UUID, SweepCursor]]:
        """Claimed rows whose lease ran out, after ``after`` in (lease end, id) order."""
        async with self._connection() as conn:
            rows = await conn.fetch(SELECT_EXPIRED_LEASES, after.at, after.notification_id, limit)
        return [(row["id"], SweepCursor(row["at"], row["id"])) for row in rows]

    async def outbox_counts(self) -> OutboxCounts:
        async with self._connection() as conn:
            row = _present(await conn.fetchrow(OUTBOX_COUNTS, EXACT_SENT_COUNT_LIMIT))
        return OutboxCounts(dict(row["by_status"]), row["oldest_pending_age"])

    async def prune_finished(self, status: str, older_than: timedelta, limit: int) -> int:
        """Delete up to ``limit`` finished rows; returns how many went."""
        async with self._connection() as conn, walking_index_in_order(conn):
            deleted: int = await conn.fetchval(PRUNE_FINISHED, status, older_than, limit)
        return deleted

    async def prune_idempotency_keys(self, limit: int) -> int:
        async with self._connection() as conn:
            deleted: int = await conn.fetchval(PRUNE_IDEMPOTENCY_KEYS, limit)
        return deleted

    async def notify(self, channel: str, payload: str) -> None:
        async with self._connection() as conn:
            await conn.execute(NOTIFY, channel, payload)
