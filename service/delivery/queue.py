"""The in-process fast path: notification ids handed from requests to consumers.

The stream only carries hints. The outbox row is already committed when its
id is published, so a hint that cannot be delivered (stream full, process
shutting down) is simply dropped: the sweeper finds the row later.

The queue remembers which ids are waiting in the stream, so the sweeper does
not offer a row again while its earlier hint is still queued behind a slow
provider (that would fill the stream with copies of the same few ids).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

import anyio
from anyio.abc import ObjectReceiveStream
from anyio.lowlevel import checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream

logger = logging.getLogger(__name__)


class NotificationQueue(Protocol):
    """What the sweeper needs of the stream."""

    async def put_all(self, ids: Sequence[UUID]) -> int:
        """Wait for room and queue each id not queued already; returns how many were queued."""
        ...


class QueueReceiver(ObjectReceiveStream[UUID]):
    """One consumer's receive side; forgets each id as it is taken.

    ``turn`` is shared by every receiver of a queue: the consumer holding it is
    the only one waiting for ids, so a request's ids reach one consumer as one
    batch instead of one id to each idle consumer (a claim, a provider call
    and a recording write each).
    """

    def __init__(
        self, stream: MemoryObjectReceiveStream[UUID], queued: set[UUID], turn: anyio.Lock
    ) -> None:
        self._stream = stream
        self._queued = queued
        self.turn = turn

    async def receive(self) -> UUID:
        notification_id = await self._stream.receive()
        self._queued.discard(notification_id)
        return notification_id

    def receive_nowait(self) -> UUID:
        """An id already waiting; raises ``anyio.WouldBlock`` if there is none."""
        notification_id = self._stream.receive_nowait()
        self._queued.discard(notification_id)
        return notification_id

    async def aclose(self) -> None:
        await self._stream.aclose()


class MemoryStreamQueue:
    """A bounded anyio memory stream of ids; memory is bounded by ``capacity``."""

    def __init__(self, capacity: int, send_timeout: float) -> None:
        self._capacity = capacity
        self._send_timeout = send_timeout
        self._send, self._receive = anyio.create_memory_object_stream[UUID](capacity)
        self._queued: set[UUID] = set()
        self._turn = anyio.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def buffer_used(self) -> int:
        return self._send.statistics().current_buffer_used

    def open_receiver(self) -> QueueReceiver:
        """A receive side for one consumer; it ends when the queue is closed."""
        return QueueReceiver(self._receive.clone(), self._queued, self._turn)

    async def put_while_room(self, ids: Sequence[UUID], *, wait_for_room: bool = True) -> int:
        """Queue ids while there is room, waiting up to the send timeout for it
        unless ``wait_for_room`` is False; returns how many were taken."""
        room_within = self._send_timeout if wait_for_room else 0.0
        taken = 0
        for notification_id in ids:
            if notification_id in self._queued:
                taken += 1
                continue
            try:
                if not await self._put(notification_id, room_within=room_within):
                    break
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                break  # shutting down: the rows stay pending for the next start
            taken += 1
        if taken < len(ids):
            logger.debug("queue full: %d notifications left to the sweeper", len(ids) - taken)
        return taken

    async def put_all(self, ids: Sequence[UUID]) -> int:
        """For the sweeper: queue each id not queued yet, waiting for room.

        Waiting is the back-pressure that keeps memory bounded. An id goes in
        without a trip through the event loop while there is room (a backlog
        is offered a page at a time, and ``send`` would yield once per id);
        there is one checkpoint per call so a long page still lets others run.
        Raises ``anyio.ClosedResourceError`` once the queue is closed.
        """
        await checkpoint()
        queued = 0
        for notification_id in ids:
            if notification_id not in self._queued:
                await self._put(notification_id, room_within=math.inf)
                queued += 1
        return queued

    async def _put(self, notification_id: UUID, *, room_within: float) -> bool:
        """Queue one id, waiting up to ``room_within`` s for room; False if none came."""
        # Marked before sending: a consumer may take it while we wait.
        self._queued.add(notification_id)
        try:
            try:
                self._send.send_nowait(notification_id)
            except anyio.WouldBlock:
                # No timed wait for a zero timeout: it cannot find room, and a
                # cancel scope is not free
                # (tests/delivery/test_queue.py::test_publish_can_be_told_not_to_wait_for_room).
                if room_within > 0:
                    with anyio.move_on_after(room_within):
                        await self._send.send(notification_id)
                        return True
                self._queued.discard(notification_id)
                return False
        except BaseException:
            self._queued.discard(notification_id)
            raise
        return True

    async def close(self) -> None:
        """Stop accepting hints and let consumers drain what is buffered."""
        await self._send.aclose()
        await self._receive.aclose()
