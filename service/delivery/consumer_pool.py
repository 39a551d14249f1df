"""Consumers: N consumer loops of one queue, started and drained as one unit.

Each loop takes a batch of ids off the stream and hands it to the
``Deliverer``. The unit starts every loop with ``tg.start`` under
supervision (a loop that dies marks /readyz failed and asks for shutdown),
and on exit closes the stream and lets the loops finish what they hold for
at most ``drain_seconds`` before cancelling them; the Deliverer's final
writes are shielded, and what is not sent stays pending in the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Protocol
from uuid import UUID

import anyio
from anyio.abc import TaskStatus

from service.delivery.backoff import Backoff
from service.delivery.pressure import RequestPressure
from service.delivery.provider_health import Health
from service.delivery.queue import MemoryStreamQueue, QueueReceiver
from service.delivery.supervision import FatalHandler, RunningTasks, supervised
from service.errors import Unavailable
from service.settings import ConsumerPolicy

logger = logging.getLogger(__name__)

# Capped low: nothing wakes a consumer's outage sleep when the database
# returns, so the cap bounds how long delivery lags behind a recovered database.
_OUTAGE_BACKOFF = Backoff(base=0.5, cap=5.0)


class BatchDeliverer(Protocol):
    """What a consumer loop needs: something that delivers one batch of ids."""

    async def deliver(self, ids: Sequence[UUID]) -> None: ...


async def receive_batch(receiver: QueueReceiver, batch_size: int, linger: float) -> list[UUID]:
    """Wait for one id, take what is already waiting, then gather more for ``linger`` s.

    Consumers take turns: one forms its batch while the others wait for it.
    Returns an empty list when the stream has ended (shutdown).
    """
    async with receiver.turn:
        return await _gather_batch(receiver, batch_size, linger)


async def _gather_batch(receiver: QueueReceiver, batch_size: int, linger: float) -> list[UUID]:
    try:
        batch = [await receiver.receive()]
    except anyio.EndOfStream:
        return []
    # A backlog fills the batch at once; lingering is only for a trickle.
    while len(batch) < batch_size:
        try:
            batch.append(receiver.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            break
    if len(batch) == batch_size:
        return batch
    with anyio.move_on_after(linger):
        while len(batch) < batch_size:
            try:
                batch.append(await receiver.receive())
            except anyio.EndOfStream:
                break
    return batch


class DrainCount:
    """Batches consumers finished after the stream closed (the shutdown's drain)."""

    def __init__(self) -> None:
        self.closing = False
        self.batches = 0

    def batch_done(self) -> None:
        if self.closing:
            self.batches += 1


async def run_consumer(
    receiver: QueueReceiver,
    deliverer: BatchDeliverer,
    *,
    batch_size: int,
    linger: float,
    pressure: RequestPressure,
    drain: DrainCount | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver batches until the stream ends; per-batch errors are contained."""
    consecutive_outages = 0
    async with receiver:
        task_status.started()
        while True:
            # Before taking ids off the stream, so that deferred ids stay
            # where the sweeper knows they are queued.
            await pressure.wait_until_calm()
            batch = await receive_batch(receiver, batch_size, linger)
            if not batch:
                return
            try:
                await deliverer.deliver(batch)
                consecutive_outages = 0
            except Unavailable:
                # The rows stay pending in the outbox; the sweeper re-offers
                # them. Waiting here keeps an outage from becoming a hot loop.
                consecutive_outages += 1
                logger.warning("database unavailable; consumer backs off")
                await anyio.sleep(_OUTAGE_BACKOFF.delay(consecutive_outages))
            except Exception:
                logger.exception("batch of %d notifications failed", len(batch))
            if drain is not None:
                drain.batch_done()


class Consumers:
    """``policy.concurrency`` consumer loops of one queue, supervised and drained together."""

    def __init__(
        self,
        queue: MemoryStreamQueue,
        deliverer: BatchDeliverer,
        policy: ConsumerPolicy,
        *,
        pressure: RequestPressure,
        health: Health,
        on_fatal: FatalHandler,
    ) -> None:
        self._queue = queue
        self._deliverer = deliverer
        self._policy = policy
        self._pressure = pressure
        self._health = health
        self._on_fatal = on_fatal
        self.drain = DrainCount()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Start every consumer; on exit close the stream and drain them.

        Start-up fails loudly if a consumer cannot start. The drain ends when
        every consumer has finished or after ``drain_seconds``, whichever
        comes first (tests/delivery/test_delivery.py::
        test_past_the_drain_deadline_unsent_rows_stay_pending).
        """
        running = RunningTasks()
        async with anyio.create_task_group() as consumers:
            for index in range(self._policy.concurrency):
                consumer = partial(
                    run_consumer,
                    self._queue.open_receiver(),
                    self._deliverer,
                    batch_size=self._policy.batch_size,
                    linger=self._policy.linger,
                    pressure=self._pressure,
                    drain=self.drain,
                )
                await consumers.start(
                    supervised,
                    f"consumer-{index}",
                    consumer,
                    self._health,
                    self._on_fatal,
                    running,
                )
            try:
                yield
            finally:
                # Drain: no new hints; consumers finish what they hold.
                self.drain.closing = True
                await self._queue.close()
                with anyio.move_on_after(self._policy.drain_seconds):
                    await running.all_done()
                if running.count:
                    logger.warning(
                        "drain deadline passed; %d consumers cancelled, their rows stay pending",
                        running.count,
                    )
                consumers.cancel_scope.cancel()
