"""The outbox's delivery side: claims under leases, results, sweeping, pruning.

Every change after a claim is a compare-and-set on the lease token, so a
worker whose lease expired can never overwrite the row's newer state
(test_a_stale_worker_cannot_overwrite_a_reclaimed_row).

The statements that act on given ids (claim, renew, record) find them through
the primary key, whatever the planner's statistics say: their conditions on
status are CASE expressions, which match no partial index's predicate, so no
plan can read every pending or sending row instead
(tests/repository/test_claim_plans.py).
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

# Claim those of the given rows that are pending and due, or whose lease expired.
CLAIM_BY_IDS = """
-- An expired lease's holder is presumed dead and is fenced off by the new
-- token (test_a_stale_worker_cannot_overwrite_a_reclaimed_row); SKIP LOCKED
-- lets replicas claim side by side (test_a_row_is_claimed_once).
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

# Extend the lease of the given rows that this token still holds.
RENEW_LEASE = """
UPDATE notifications SET lease_expires_at = now() + make_interval(secs => $3)
WHERE id = ANY($1::uuid[])
  AND CASE status WHEN 'sending' THEN lease_token = $2 ELSE false END
RETURNING id
"""

# Write results under the lease and append them to each row's attempt history.
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

# One page of due pending rows, after a (due time, id) cursor.
SELECT_DUE_PENDING = """
-- Keyset pages in a stable order, so one pass never offers an id twice;
-- never-tried rows younger than the grace ($1 seconds) are left to the fast
-- path (test_rows_still_queued_are_not_offered_again).
SELECT id, next_attempt_at AS at FROM notifications
WHERE status = 'pending'
  AND next_attempt_at <= now()
  -- Only never-tried rows can still be waiting in a stream; retries are due now.
  AND (attempts > 0 OR next_attempt_at <= now() - make_interval(secs => $1))
  AND (next_attempt_at, id) > ($2, $3)
ORDER BY next_attempt_at, id
LIMIT $4
"""

# One page of rows whose lease expired, after a (lease end, id) cursor.
SELECT_EXPIRED_LEASES = """
-- Paged like the pending rows, so one pass recovers a crashed replica's whole
-- backlog of claims (test_one_pass_recovers_every_expired_lease_and_retries_skip_the_grace).
SELECT id, lease_expires_at AS at FROM notifications
WHERE status = 'sending' AND lease_expires_at < now()
  AND (lease_expires_at, id) > ($1, $2)
ORDER BY lease_expires_at, id
LIMIT $3
"""

# Delete one batch of rows finished in a status longer ago than a retention.
PRUNE_FINISHED = """
-- Small batches keep each delete short and its locks few; SKIP LOCKED lets
-- replicas prune side by side without waiting on each other.
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

# Leave the in-order index scan as a prune batch's cheapest plan, for this transaction.
WALK_INDEX_IN_ORDER = "SET LOCAL enable_sort = off"

# Delete one batch of expired idempotency keys (their stored outcomes go with them).
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

# Send a notification to the listeners of a channel.
NOTIFY = "SELECT pg_notify($1, $2)"

# Whether the database answers.
PING = "SELECT 1"

# Rows per status, and the age of the oldest pending row.
OUTBOX_COUNTS = """
-- Live work (pending, sending, dead) is counted exactly, each an index scan of
-- that status only. Sent rows are most of the table: past $1 rows in all, their
-- count is the planner's estimate of the table less the live rows, so a refresh
-- never walks every sent row
-- (test_outbox_counts_are_exact_for_live_work_and_estimate_sent_past_a_limit).
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
    """A transaction in which the planner will not sort (``WALK_INDEX_IN_ORDER``).

    A prune batch must walk its index in order and stop after a batch,
    whatever the planner's statistics say (test_a_prune_batch_reads_one_batch).
    SET LOCAL ends with the transaction, so a pooled connection keeps its
    defaults (test_sorting_is_off_only_within_its_transaction).
    """
    async with conn.transaction():
        await conn.execute(WALK_INDEX_IN_ORDER)
        yield


class OutboxStore(Store):
    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval(PING)

    async def claim(
        self, ids: Sequence[UUID], lease_token: UUID, lease_seconds: float
    ) -> ClaimedBatch:
        """Claim what is still claimable among ``ids`` under ``lease_token``."""
        async with self._connection() as conn:
            records = await conn.fetch(CLAIM_BY_IDS, list(ids), lease_token, lease_seconds)
        batch = ClaimedBatch(rows=[], unreadable={})
        for record in records:
            # One corrupt snapshot must not take its batch down with it
            # (test_an_unreadable_row_is_claimed_with_its_reason).
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
