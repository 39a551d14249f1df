"""What the dashboard asks of the repository, and over which windows.

Everything the dashboard shows comes from the repository's statements
(``list_notifications``, ``attempts``, ``delivery_activity``) and the cached
``OutboxStats`` that /metrics uses, so the page and the API never disagree.
"""

from __future__ import annotations

from service.repository import Repository
from service.repository.activity import DELIVERY_ACTIVITY, DeliveryActivity

CHART_MINUTES = 60
LATENCY_WINDOW_MINUTES = 15


class DashboardRepository:
    """The dashboard's view of the repository: activity over its fixed windows."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository

    async def delivery_activity(self) -> DeliveryActivity:
        return await self._repository.delivery_activity(CHART_MINUTES, LATENCY_WINDOW_MINUTES)


__all__ = [
    "CHART_MINUTES",
    "DELIVERY_ACTIVITY",
    "LATENCY_WINDOW_MINUTES",
    "DashboardRepository",
    "DeliveryActivity",
]
