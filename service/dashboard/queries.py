"""What the dashboard reads, through a read-only port, and over which windows.

Everything the dashboard shows comes from the repository's statements (the
same ones the API uses) and the cached ``OutboxStats`` that /metrics reads,
so the page and the API never disagree. The one thing it writes, putting a
dead letter back, goes through its own port.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from service.models import Attempt, Notification
from service.repository import DeliveryActivity, NotificationCursor

CHART_MINUTES = 60
LATENCY_WINDOW_MINUTES = 15


class InsightsStore(Protocol):
    """The reads the dashboard makes; nothing here changes data."""

    async def get_notification(self, notification_id: UUID) -> Notification: ...

    async def attempts(self, notification_id: UUID) -> list[Attempt]: ...

    async def list_notifications(
        self,
        *,
        status: str | None,
        recipient: str | None,
        before: NotificationCursor | None,
        limit: int,
    ) -> list[Notification]: ...

    async def delivery_activity(
        self, minutes: int, latency_window_minutes: int
    ) -> DeliveryActivity: ...


class DeadLetterStore(Protocol):
    """The dashboard's one write: a dead notification back to pending."""

    async def retry_dead(self, notification_id: UUID) -> Notification: ...


async def chart_activity(store: InsightsStore) -> DeliveryActivity:
    """Sent per minute over the chart's window; latency over the latency window."""
    return await store.delivery_activity(CHART_MINUTES, LATENCY_WINDOW_MINUTES)


__all__ = [
    "CHART_MINUTES",
    "LATENCY_WINDOW_MINUTES",
    "DeadLetterStore",
    "DeliveryActivity",
    "InsightsStore",
    "chart_activity",
]
