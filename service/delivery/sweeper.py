"""The sweeper: re-offers outbox rows that the fast path did not deliver.

That covers rows left by an earlier process (at start-up), rows whose hint
was dropped because the stream was full, rows due for a retry, and rows
whose lease expired because their worker died. The sweeper never claims:
it only hands ids to the consumers, which claim with compare-and-set, so a
row offered twice is still delivered once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from uuid import UUID

import anyio
from anyio.abc import TaskStatus

from service.delivery.backoff import Backoff
from service.delivery.ports import SweepSource
from service.delivery.queue import NotificationQueue
from service.delivery.wakeup import WakeUp
from service.errors import Unavailable
from service.metrics import Metrics
from service.repository import SweepCursor
from service.repository.outbox import SWEEP_START
from service.settings import SweepPolicy

logger = logging.getLogger(__name__)

_PageFetcher = Callable[[SweepCursor, int], Awaitable[list[tuple[UUID, SweepCursor]]]]


class Sweeper:
    """Offers due pending rows and expired leases to the consumers' stream."""

    def __init__(
        self,
        source: SweepSource,
        policy: SweepPolicy,
        *,
        metrics: Metrics,
        wake: WakeUp | None = None,
    ) -> None:
        self._source = source
        self._page_size = policy.page_size
        self._interval = policy.interval
        self._grace = policy.grace
        self._wake = wake or WakeUp()
        self._metrics = metrics

    async def sweep_once(self, queue: NotificationQueue, *, grace: float | None = None) -> int:
        """One pass over everything due now; returns how many ids were offered.

        Offering waits for room in the stream: that back-pressure is what keeps
        memory bounded however large the backlog is. Ids still queued from an
        earlier offer are skipped. ``grace`` defaults to the configured one; a
        wake-up from another replica's backlog uses 0, since those rows are in
        that replica's stream, not in ours.
        """
        grace = self._grace if grace is None else grace
        expired = await self._offer_all(queue, self._source.expired_leases, "expired_lease")
        due = await self._offer_all(queue, partial(self._source.due_pending, grace), "due_pending")
        return expired + due

    async def _offer_all(self, queue: NotificationQueue, fetch: _PageFetcher, kind: str) -> int:
        offered = 0
        cursor = SWEEP_START
        recoveries = self._metrics.sweeper_recoveries.labels(kind)
        while page := await fetch(cursor, self._page_size):
            queued = await queue.put_all([notification_id for notification_id, _ in page])
            offered += queued
            recoveries.inc(queued)
            cursor = page[-1][1]
            if len(page) < self._page_size:
                break
        return offered

    async def run(
        self,
        queue: NotificationQueue,
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Sweep at start-up and then every ``interval`` seconds, until cancelled."""
        # Capped low: nothing wakes this sleep when the database returns.
        outage_backoff = Backoff(base=self._interval, cap=max(self._interval, 5.0))
        consecutive_outages = 0
        woken = False
        task_status.started()
        while True:
            try:
                offered = await self.sweep_once(queue, grace=0.0 if woken else None)
                consecutive_outages = 0
                if offered:
                    logger.info("sweeper re-offered %d notifications", offered)
                woken = await self._wake.sleep(self._interval)
            except Unavailable:
                consecutive_outages += 1
                logger.warning("database unavailable; sweeper backs off")
                await anyio.sleep(outage_backoff.delay(consecutive_outages))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the queue closed: shutting down
            except Exception:
                logger.exception("sweep failed")
                await anyio.sleep(self._interval)
