"""The memory-stream queue: bounded, non-blocking for requests, no duplicate hints."""

from __future__ import annotations

import uuid

import anyio

from service.delivery.consumer_pool import receive_batch
from service.delivery.queue import MemoryStreamQueue, QueueReceiver


async def test_publish_takes_what_fits_and_never_waits_past_its_timeout() -> None:
    queue = MemoryStreamQueue(capacity=2, send_timeout=0.01)
    ids = [uuid.uuid4() for _ in range(5)]
    with anyio.fail_after(1):
        assert await queue.put_while_room(ids) == 2
    assert queue.buffer_used() == 2
    await queue.close()


async def test_publish_can_be_told_not_to_wait_for_room() -> None:
    queue = MemoryStreamQueue(capacity=1, send_timeout=3600)  # waiting it out would fail
    first, second = uuid.uuid4(), uuid.uuid4()
    with anyio.fail_after(1):
        assert await queue.put_while_room([first, second], wait_for_room=False) == 1
    assert queue.buffer_used() == 1
    receiver = queue.open_receiver()
    assert await receiver.receive() == first
    assert await queue.put_all([second]) == 1  # the one not taken was not left marked as queued
    await receiver.aclose()
    await queue.close()


async def test_an_api_only_queue_takes_nothing_and_never_waits() -> None:
    queue = MemoryStreamQueue(capacity=0, send_timeout=0)  # WORKER_CONCURRENCY=0
    with anyio.fail_after(1):
        assert await queue.put_while_room([uuid.uuid4(), uuid.uuid4()]) == 0
    await queue.close()


async def test_an_id_already_queued_is_not_queued_again() -> None:
    queue = MemoryStreamQueue(capacity=10, send_timeout=0)
    receiver = queue.open_receiver()
    first = uuid.uuid4()
    assert await queue.put_while_room([first]) == 1
    assert await queue.put_all([first]) == 0  # the sweeper finds it still queued
    assert queue.buffer_used() == 1
    assert await receiver.receive() == first
    assert await queue.put_all([first]) == 1  # taken by a consumer: it may be offered again
    assert queue.buffer_used() == 1
    await receiver.aclose()
    await queue.close()


async def test_offer_waits_for_room_and_fails_once_closed() -> None:
    queue = MemoryStreamQueue(capacity=1, send_timeout=0)
    receiver = queue.open_receiver()
    assert await queue.put_all([uuid.uuid4()]) == 1
    second = uuid.uuid4()
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.put_all, [second])
        await anyio.wait_all_tasks_blocked()
        assert queue.buffer_used() == 1  # the offer is waiting for room
        await receiver.receive()
    assert await receiver.receive() == second
    await receiver.aclose()
    await queue.close()
    assert await queue.put_while_room([uuid.uuid4()]) == 0


async def test_a_consumer_takes_a_waiting_backlog_without_lingering() -> None:
    queue = MemoryStreamQueue(capacity=10, send_timeout=0)
    receiver = queue.open_receiver()
    ids = [uuid.uuid4() for _ in range(4)]
    await queue.put_while_room(ids)
    with anyio.fail_after(1):  # a linger of an hour would be waited out otherwise
        assert await receive_batch(receiver, batch_size=4, linger=3600) == ids
    assert await queue.put_all(ids[:1]) == 1  # taken ids are forgotten: they may be offered again
    await receiver.aclose()
    await queue.close()


async def test_offer_queues_a_page_once_and_waits_for_room_for_the_rest() -> None:
    queue = MemoryStreamQueue(capacity=2, send_timeout=0)
    receiver = queue.open_receiver()
    ids = [uuid.uuid4() for _ in range(3)]
    taken: list[uuid.UUID] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.put_all, [ids[0], ids[1], ids[0], ids[2]])
        await anyio.wait_all_tasks_blocked()
        assert queue.buffer_used() == 2  # the third waits for room
        for _ in ids:
            taken.append(await receiver.receive())
    assert taken == ids  # in order, and the repeated id only once
    await receiver.aclose()
    await queue.close()


async def test_idle_consumers_take_turns_so_a_request_is_one_batch() -> None:
    queue = MemoryStreamQueue(capacity=100, send_timeout=0)
    receivers = [queue.open_receiver() for _ in range(4)]
    batches: list[list[uuid.UUID]] = []
    ids = [uuid.uuid4() for _ in range(10)]

    async def consume(receiver: QueueReceiver) -> None:
        batches.append(await receive_batch(receiver, batch_size=100, linger=0))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for receiver in receivers:
                tg.start_soon(consume, receiver)
            await anyio.wait_all_tasks_blocked()
            await queue.put_while_room(ids)
            await anyio.wait_all_tasks_blocked()
            # Without turns each idle consumer would have been handed one id.
            assert batches == [ids]
            await queue.close()
    assert batches[1:] == [[], [], []]  # the others saw the stream end
    for receiver in receivers:
        await receiver.aclose()


async def test_a_waiting_consumer_gets_a_whole_offered_page_as_one_batch() -> None:
    # The sweeper offers a page at once; yielding per id would wake the
    # consumer after the first one and make every batch a single e-mail.
    queue = MemoryStreamQueue(capacity=100, send_timeout=0)
    receiver = queue.open_receiver()
    page = [uuid.uuid4() for _ in range(50)]
    batches: list[list[uuid.UUID]] = []

    async def consume() -> None:
        batches.append(await receive_batch(receiver, batch_size=100, linger=0))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.wait_all_tasks_blocked()
            assert await queue.put_all(page) == 50
    assert batches == [page]
    await receiver.aclose()
    await queue.close()
