"""Requests first: consumers give way to a saturating load, but not for ever."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import cast

import anyio
import httpx

from service.delivery.consumer_pool import run_consumer
from service.delivery.handoff import Handoff
from service.delivery.pressure import SUSTAINED_SECONDS, RequestPressure
from service.delivery.queue import MemoryStreamQueue
from service.delivery.wakeup import BacklogBroadcaster

# Long enough that a test which waits it out is an obvious failure.
_LONG_DEFER = 30.0


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _saturated(pool_size: int = 2, max_defer: float = _LONG_DEFER) -> RequestPressure:
    clock = _Clock()
    pressure = RequestPressure(pool_size=pool_size, max_defer=max_defer, clock=clock)
    for _ in range(pool_size + 1):
        pressure.request_started()
    clock.now += SUSTAINED_SECONDS
    assert pressure.saturated
    return pressure


def test_a_moment_over_the_pool_size_is_not_saturation() -> None:
    # An open-loop load well below capacity has such moments; deferring
    # delivery for them cost e-mails seconds (docs/BENCHMARKS.md, finding 20).
    clock = _Clock()
    pressure = RequestPressure(pool_size=2, max_defer=_LONG_DEFER, clock=clock)
    for _ in range(3):
        pressure.request_started()
    assert not pressure.saturated
    clock.now += SUSTAINED_SECONDS / 2
    assert not pressure.saturated
    pressure.request_finished()  # back within the pool: the next rise starts afresh
    pressure.request_started()
    clock.now += SUSTAINED_SECONDS / 2
    assert not pressure.saturated
    clock.now += SUSTAINED_SECONDS
    assert pressure.saturated


async def test_no_wait_while_requests_fit_the_pool() -> None:
    pressure = RequestPressure(pool_size=2, max_defer=_LONG_DEFER)
    pressure.request_started()
    pressure.request_started()
    assert not pressure.saturated
    with anyio.fail_after(1):
        await pressure.wait_until_calm()


async def test_waits_until_requests_drain_below_the_pool_size() -> None:
    pressure = _saturated()
    calm = anyio.Event()

    async def wait() -> None:
        await pressure.wait_until_calm()
        calm.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            assert not calm.is_set()
            pressure.request_finished()  # 2 in flight: every one has a connection
            await calm.wait()


async def test_gives_up_waiting_after_max_defer() -> None:
    pressure = _saturated(max_defer=0.05)
    with anyio.fail_after(5):
        await pressure.wait_until_calm()
    assert pressure.saturated


async def test_max_defer_zero_never_waits() -> None:
    pressure = _saturated(max_defer=0)
    with anyio.fail_after(1):
        await pressure.wait_until_calm()


class _RecordingDeliverer:
    def __init__(self) -> None:
        self.batches: list[list[uuid.UUID]] = []
        self.delivered = anyio.Event()

    async def deliver(self, ids: Sequence[uuid.UUID]) -> None:
        self.batches.append(list(ids))
        self.delivered.set()


async def test_a_consumer_leaves_ids_queued_while_requests_saturate_the_pool() -> None:
    pressure = _saturated()
    queue = MemoryStreamQueue(capacity=10, send_timeout=0)
    deliverer = _RecordingDeliverer()
    ids = [uuid.uuid4() for _ in range(3)]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(
                lambda task_status: run_consumer(
                    queue.open_receiver(),
                    deliverer,
                    batch_size=10,
                    linger=0,
                    pressure=pressure,
                    task_status=task_status,
                )
            )
            assert await queue.put_while_room(ids) == 3
            await anyio.wait_all_tasks_blocked()
            assert deliverer.batches == []
            assert queue.buffer_used() == 3  # still queued: the sweeper skips them

            pressure.request_finished()
            await deliverer.delivered.wait()
            assert deliverer.batches == [ids]
            await queue.close()


async def test_requests_in_flight_are_exported(client: httpx.AsyncClient) -> None:
    metrics = (await client.get("/metrics")).text
    assert "http_requests_in_flight 1.0" in metrics  # the scrape itself


class _Backlog:
    def __init__(self) -> None:
        self.signals = 0

    def signal(self) -> None:
        self.signals += 1


async def test_a_request_does_not_wait_for_room_while_requests_saturate_the_pool() -> None:
    # The consumers are giving way, so the stream will not drain within the
    # send timeout: the request hands what does not fit to the sweeper at once.
    queue = MemoryStreamQueue(capacity=1, send_timeout=_LONG_DEFER)
    backlog = _Backlog()
    handoff = Handoff(queue, _saturated(), cast(BacklogBroadcaster, backlog))
    with anyio.fail_after(5):
        await handoff.hand_over([uuid.uuid4(), uuid.uuid4()])
    assert queue.buffer_used() == 1
    assert backlog.signals == 1
    await queue.close()
