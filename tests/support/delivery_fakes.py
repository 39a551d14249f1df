"""In-memory fakes of the delivery ports and of a provider, for tests that need no database."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from service.email.base import BatchLimits, EmailMessage, SendResult
from service.errors import Unavailable
from service.models import OutboxRow
from service.repository import ClaimedBatch, OutboxCounts, RecordedOutcome, SweepCursor


def outbox_row(index: int = 0, *, attempts: int = 0) -> OutboxRow:
    return OutboxRow(
        id=uuid.uuid4(),
        recipient_email=f"user{index}@example.com",
        recipient_name=f"User {index}",
        tasks=[],
        attempts=attempts,
    )


@dataclass
class StoredRow:
    row: OutboxRow
    status: str = "pending"
    token: UUID | None = None
    delay: float | None = None
    error: str | None = None


@dataclass
class FakeDeliveryStore:
    """The outbox's claim / renew / record, with the same compare-and-set on the token."""

    rows: dict[UUID, StoredRow] = field(default_factory=dict)
    unreadable: dict[UUID, str] = field(default_factory=dict)
    recordings: list[list[RecordedOutcome]] = field(default_factory=list)
    renewals: list[list[UUID]] = field(default_factory=list)
    # Set to make the next writes fail as an outage would.
    record_fails: bool = False
    renew_fails: bool = False

    def add(self, *rows: OutboxRow) -> list[UUID]:
        for row in rows:
            self.rows[row.id] = StoredRow(row)
        return [row.id for row in rows]

    def status(self, notification_id: UUID) -> str:
        return self.rows[notification_id].status

    def statuses(self) -> list[str]:
        return [stored.status for stored in self.rows.values()]

    async def claim(
        self, ids: Sequence[UUID], lease_token: UUID, lease_seconds: float
    ) -> ClaimedBatch:
        batch = ClaimedBatch(rows=[], unreadable={})
        for notification_id in ids:
            stored = self.rows.get(notification_id)
            if stored is None or stored.status != "pending":
                continue
            stored.status, stored.token = "sending", lease_token
            stored.row = stored.row.model_copy(update={"attempts": stored.row.attempts + 1})
            if notification_id in self.unreadable:
                batch.unreadable[notification_id] = self.unreadable[notification_id]
            else:
                batch.rows.append(stored.row)
        return batch

    async def renew_lease(
        self, ids: Sequence[UUID], lease_token: UUID, lease_seconds: float
    ) -> set[UUID]:
        if self.renew_fails:
            raise Unavailable("down")
        self.renewals.append(list(ids))
        return {i for i in ids if self._holds(i, lease_token)}

    async def record_outcomes(
        self, lease_token: UUID, outcomes: Sequence[RecordedOutcome]
    ) -> set[UUID]:
        if self.record_fails:
            raise Unavailable("down")
        self.recordings.append(list(outcomes))
        written: set[UUID] = set()
        for outcome in outcomes:
            stored = self.rows.get(outcome.notification_id)
            if stored is None or not self._holds(outcome.notification_id, lease_token):
                continue
            stored.status, stored.token = outcome.status, None
            stored.delay, stored.error = outcome.delay, outcome.error
            stored.row = stored.row.model_copy(
                update={"attempts": stored.row.attempts - outcome.refund}
            )
            written.add(outcome.notification_id)
        return written

    def _holds(self, notification_id: UUID, token: UUID) -> bool:
        stored = self.rows.get(notification_id)
        return stored is not None and stored.status == "sending" and stored.token == token


Answer = Callable[[Sequence[EmailMessage]], Awaitable[list[SendResult]]]


class FakeProvider:
    """Answers each call with the next of ``answers``; accepts everything after them."""

    name = "fake"

    def __init__(self, max_messages: int, answers: Sequence[Answer] = ()) -> None:
        self.limits = BatchLimits(max_messages=max_messages)
        self.calls: list[list[str]] = []
        self._answers = list(answers)

    async def send_batch(self, messages: Sequence[EmailMessage]) -> list[SendResult]:
        self.calls.append([message.notification_id for message in messages])
        if self._answers:
            return await self._answers.pop(0)(messages)
        return accepted(messages)


def accepted(messages: Sequence[EmailMessage]) -> list[SendResult]:
    return [SendResult.accepted(f"ok-{m.notification_id}") for m in messages]


def every(result: SendResult) -> Answer:
    """An answer giving ``result`` for every message of the call."""

    async def answer(messages: Sequence[EmailMessage]) -> list[SendResult]:
        return [result] * len(messages)

    return answer


@dataclass
class FakeSweepSource:
    """Pages of due pending rows and expired leases, in cursor order."""

    due: list[UUID] = field(default_factory=list)
    expired: list[UUID] = field(default_factory=list)
    graces: list[float] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)

    async def due_pending(
        self, grace_seconds: float, after: SweepCursor, limit: int
    ) -> list[tuple[UUID, SweepCursor]]:
        self.graces.append(grace_seconds)
        return self._page(self.due, after, limit)

    async def expired_leases(
        self, after: SweepCursor, limit: int
    ) -> list[tuple[UUID, SweepCursor]]:
        if self.failures:
            raise self.failures.pop(0)
        return self._page(self.expired, after, limit)

    @staticmethod
    def _page(ids: list[UUID], after: SweepCursor, limit: int) -> list[tuple[UUID, SweepCursor]]:
        ordered = sorted(ids)
        later = [i for i in ordered if i > after.notification_id]
        return [(i, SweepCursor(after.at, i)) for i in later[:limit]]


@dataclass
class FakePruneTarget:
    """Finished rows by status; deletes up to ``limit`` a call."""

    finished: dict[str, int] = field(default_factory=dict)
    keys: int = 0
    calls: list[tuple[str, timedelta, int]] = field(default_factory=list)

    async def prune_finished(self, status: str, older_than: timedelta, limit: int) -> int:
        self.calls.append((status, older_than, limit))
        deleted = min(limit, self.finished.get(status, 0))
        self.finished[status] = self.finished.get(status, 0) - deleted
        return deleted

    async def prune_idempotency_keys(self, limit: int) -> int:
        deleted = min(limit, self.keys)
        self.keys -= deleted
        return deleted


@dataclass
class FakeCountsSource:
    calls: int = 0

    async def outbox_counts(self) -> OutboxCounts:
        self.calls += 1
        return OutboxCounts({"pending": self.calls}, None)
