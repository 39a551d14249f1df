"""A consumer loop contains every per-batch failure; the consumers start and drain as one."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from uuid import UUID

import anyio
import pytest

from service.delivery.consumer_pool import Consumers, run_consumer
from service.delivery.pressure import RequestPressure
from service.delivery.provider_health import Health
from service.delivery.queue import MemoryStreamQueue
from service.errors import Unavailable
from service.settings import ConsumerPolicy


class _Deliverer:
    """Fails as told for the first batches, then records each batch it is given."""

    def __init__(self, failures: Sequence[BaseException] = (), hold: anyio.Event | None = None):
        self.batches: list[list[UUID]] = []
        self._failures = list(failures)
        self._hold = hold

    async def deliver(self, ids: Sequence[UUID]) -> None:
        if self._failures:
            raise self._failures.pop(0)
        if self._hold is not None:
            await self._hold.wait()
        self.batches.append(list(ids))


async def test_a_consumer_survives_an_outage_and_a_bug_and_ends_with_the_stream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = MemoryStreamQueue(capacity=10, send_timeout=0)
    deliverer = _Deliverer([Unavailable("down"), RuntimeError("bug")])
    ids = [uuid.uuid4() for _ in range(3)]
    pressure = RequestPressure(pool_size=10, max_defer=0)

    with caplog.at_level(logging.WARNING), anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: run_consumer(
                    queue.open_receiver(),
                    deliverer,
                    batch_size=1,
                    linger=0,
                    pressure=pressure,
                    task_status=task_status,
                )
            )
            for notification_id in ids:
                await queue.put_all([notification_id])
            await queue.close()

    assert "database unavailable; consumer backs off" in caplog.text
    assert "batch of 1 notifications failed" in caplog.text
    assert deliverer.batches == [ids[2:]]


async def test_the_drain_deadline_cancels_a_consumer_that_holds_a_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = MemoryStreamQueue(capacity=10, send_timeout=0)
    never = anyio.Event()
    deliverer = _Deliverer(hold=never)
    policy = ConsumerPolicy(concurrency=2, batch_size=5, linger=0, drain_seconds=0.05)
    consumers = Consumers(
        queue,
        deliverer,
        policy,
        pressure=RequestPressure(pool_size=10, max_defer=0),
        health=Health(),
        on_fatal=lambda name: None,
    )

    with caplog.at_level(logging.WARNING), anyio.fail_after(5):
        async with consumers.running():
            await queue.put_all([uuid.uuid4()])
            await anyio.wait_all_tasks_blocked()

    assert "drain deadline passed; 1 consumers cancelled" in caplog.text
    assert deliverer.batches == []


async def test_consumers_that_finish_within_the_deadline_are_not_cancelled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = MemoryStreamQueue(capacity=10, send_timeout=0)
    deliverer = _Deliverer()
    policy = ConsumerPolicy(concurrency=2, batch_size=5, linger=0, drain_seconds=5)
    consumers = Consumers(
        queue,
        deliverer,
        policy,
        pressure=RequestPressure(pool_size=10, max_defer=0),
        health=Health(),
        on_fatal=lambda name: None,
    )
    ids = [uuid.uuid4() for _ in range(3)]

    with caplog.at_level(logging.WARNING), anyio.fail_after(5):
        async with consumers.running():
            await queue.put_all(ids)

    assert "drain deadline" not in caplog.text
    assert [i for batch in deliverer.batches for i in batch] == ids
