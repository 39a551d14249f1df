"""Pruning of finished outbox rows, so the table does not grow without bound."""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskStatus

from service.delivery.ports import PruneTarget
from service.errors import Unavailable
from service.settings import RetentionPolicy

logger = logging.getLogger(__name__)


class Pruner:
    """Deletes finished rows past their retention, and expired idempotency keys."""

    def __init__(self, target: PruneTarget, policy: RetentionPolicy) -> None:
        self._target = target
        self._retention = (("sent", policy.sent), ("dead", policy.dead))
        self._batch_size = policy.batch_size
        self._interval = policy.interval

    async def prune_once(self) -> int:
        """Delete every expired row, one small batch at a time."""
        total = 0
        for status, age in self._retention:
            while True:
                deleted = await self._target.prune_finished(status, age, self._batch_size)
                total += deleted
                if deleted < self._batch_size:
                    break
                await anyio.lowlevel.checkpoint()  # let requests in between batches
        while (expired := await self._target.prune_idempotency_keys(self._batch_size)) > 0:
            total += expired
            if expired < self._batch_size:
                break
        return total

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                deleted = await self.prune_once()
                if deleted:
                    logger.info("pruned %d finished notifications", deleted)
            except Unavailable:
                logger.warning("database unavailable; pruning postponed")
            except Exception:
                logger.exception("pruning failed")
            await anyio.sleep(self._interval)
