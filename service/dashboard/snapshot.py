"""What the dashboard shows at one moment, gathered from the app's state.

Each number comes from where the API gets it: outbox counts from the shared
``OutboxStats`` cache (the one /metrics and /readyz read), the stream from the
queue, the provider from ``Health``, dead letters from
the read-only ``InsightsStore``. A refresh is a fixed number of queries,
whatever the outbox holds: none per notification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal

from service.dashboard.queries import DeliveryActivity, InsightsStore, chart_activity
from service.delivery.outbox_stats import TimedCache
from service.delivery.provider_health import Health
from service.models import Notification
from service.repository import OutboxCounts
from service.state import AppState

DEAD_LETTERS_SHOWN = 10
STATUSES = ("pending", "sending", "sent", "dead")

ProviderCondition = Literal["ok", "rate_limited", "halted"]


@dataclass(frozen=True, slots=True)
class ProviderState:
    name: str
    condition: ProviderCondition
    reason: str | None = None
    # Wall-clock end of a halt or rate-limit pause; in the past while a halted
    # provider is being tried again.
    until: datetime | None = None
    # EMAIL_RATE_LIMIT, messages per second; None means no limit of our own.
    rate_limit: float | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    counts: dict[str, int]
    oldest_pending_age_seconds: float | None
    queue_used: int
    queue_capacity: int
    provider: ProviderState
    failed_tasks: dict[str, str]
    activity: DeliveryActivity
    dead_letters: list[Notification]

    @property
    def queue_fraction(self) -> float:
        return self.queue_used / self.queue_capacity if self.queue_capacity else 0.0


def provider_state(
    name: str,
    health: Health,
    *,
    rate_limit: float | None,
    paused_for: float = 0.0,
    now: datetime,
) -> ProviderState:
    """The provider's condition; ``paused_for`` is the rate limiter's pause, if known."""
    halt = health.halt
    if halt is not None:
        # Kept until the provider accepts again, so a halt being retried still shows.
        until = now + timedelta(seconds=health.halted_for())
        return ProviderState(name, "halted", halt.reason, until, rate_limit)
    if paused_for > 0:
        until = now + timedelta(seconds=paused_for)
        return ProviderState(name, "rate_limited", "provider asked us to wait", until, rate_limit)
    return ProviderState(name, "ok", rate_limit=rate_limit)


async def take_snapshot(state: AppState, activity_cache: TimedCache[DeliveryActivity]) -> Snapshot:
    """Everything the live part of the dashboard shows; raises ``Unavailable``.

    ``activity_cache`` shares one activity query among every open page.
    """
    settings = state["settings"]
    store: InsightsStore = state["repository"]
    counts: OutboxCounts = await state["outbox_stats"].current()
    activity = await activity_cache.get(partial(chart_activity, store))
    dead = await store.list_notifications(
        status="dead", recipient=None, before=None, limit=DEAD_LETTERS_SHOWN
    )
    now = datetime.now(UTC)
    return Snapshot(
        taken_at=now,
        counts={status: counts.by_status.get(status, 0) for status in STATUSES},
        oldest_pending_age_seconds=counts.oldest_pending_age_seconds,
        queue_used=state["handoff"].buffer_used(),
        queue_capacity=state["handoff"].capacity,
        provider=provider_state(
            settings.email_provider,
            state["health"],
            rate_limit=settings.email_rate_limit,
            paused_for=state["rate_limiter"].paused_for(),
            now=now,
        ),
        failed_tasks=dict(state["health"].failed_tasks),
        activity=activity,
        dead_letters=dead,
    )
