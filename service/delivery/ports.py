"""What each background worker needs of the database: one narrow port per worker.

``service.repository.Repository`` satisfies every one of them; the workers
depend on these Protocols only, so each one's needs are visible here and its
decisions can be tested against in-memory fakes
(tests/delivery/test_consumer_decisions.py, tests/delivery/test_sweeper_decisions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol
from uuid import UUID

from service.repository import ClaimedBatch, OutboxCounts, RecordedOutcome, SweepCursor


class DeliveryStore(Protocol):
    """The consumer's side of the outbox: claims under a lease and their results."""

    async def claim(
        self, ids: Sequence[UUID], lease_token: UUID, lease_seconds: float
    ) -> ClaimedBatch:
        """Claim what is still claimable among ``ids`` under ``lease_token``."""
        ...

    async def renew_lease(
        self, ids: Sequence[UUID], lease_token: UUID, lease_seconds: float
    ) -> set[UUID]:
        """Extend the lease; returns the ids this token still holds."""
        ...

    async def record_outcomes(
        self, lease_token: UUID, outcomes: Sequence[RecordedOutcome]
    ) -> set[UUID]:
        """Write results under the lease; returns the ids actually written."""
        ...


class SweepSource(Protocol):
    """Where the sweeper finds rows the fast path did not deliver, page by page."""

    async def due_pending(
        self, grace_seconds: float, after: SweepCursor, limit: int
    ) -> list[tuple[UUID, SweepCursor]]:
        """Pending rows due now, after ``after`` in (due time, id) order."""
        ...

    async def expired_leases(
        self, after: SweepCursor, limit: int
    ) -> list[tuple[UUID, SweepCursor]]:
        """Claimed rows whose lease ran out, after ``after`` in (lease end, id) order."""
        ...


class PruneTarget(Protocol):
    """What the pruner deletes: finished rows and expired idempotency keys."""

    async def prune_finished(self, status: str, older_than: timedelta, limit: int) -> int:
        """Delete up to ``limit`` rows of ``status`` finished before ``older_than``."""
        ...

    async def prune_idempotency_keys(self, limit: int) -> int:
        """Delete up to ``limit`` expired idempotency keys."""
        ...


class OutboxCountsSource(Protocol):
    """The outbox counts by status, for /metrics, /readyz and the dashboard."""

    async def outbox_counts(self) -> OutboxCounts: ...


class NotifySender(Protocol):
    """Sends a PostgreSQL NOTIFY (the backlog broadcast between replicas)."""

    async def notify(self, channel: str, payload: str) -> None: ...
