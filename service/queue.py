"""The in-process fast path: notification ids handed from requests to consumers.

The stream only carries hints. The outbox row is already committed when its
id is published, so a hint that cannot be delivered (stream full, process
shutting down) is simply dropped: the sweeper finds the row later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol
from uuid import UUID

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

logger = logging.getLogger(__name__)


class NotificationQueue(Protocol):
    async def publish(self, ids: Sequence[UUID]) -> int:
        """Offer ids to the consumers; returns how many were taken."""
        ...

    def buffer_used(self) -> int: ...

    @property
    def capacity(self) -> int: ...


class MemoryStreamQueue:
    """A bounded anyio memory stream; publishing never blocks for long."""

    def __init__(self, capacity: int, send_timeout: float) -> None:
        self._capacity = capacity
        self._send_timeout = send_timeout
        self._send, self._receive = anyio.create_memory_object_stream[UUID](capacity)

    @property
    def capacity(self) -> int:
        return self._capacity

    def buffer_used(self) -> int:
        return self._send.statistics().current_buffer_used

    def open_receiver(self) -> ObjectReceiveStream[UUID]:
        """A receive side for one consumer; it ends when the queue is closed."""
        return self._receive.clone()

    def open_sender(self) -> ObjectSendStream[UUID]:
        """A send side for the sweeper, which may wait for room."""
        return self._send.clone()

    async def publish(self, ids: Sequence[UUID]) -> int:
        taken = 0
        try:
            for notification_id in ids:
                try:
                    self._send.send_nowait(notification_id)
                except anyio.WouldBlock:
                    with anyio.move_on_after(self._send_timeout) as wait:
                        await self._send.send(notification_id)
                    if wait.cancelled_caught:
                        break
                taken += 1
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # shutting down: the rows stay pending for the next start
        if taken < len(ids):
            logger.info(
                "queue full: %d of %d notifications left to the sweeper", len(ids) - taken, len(ids)
            )
        return taken

    async def close(self) -> None:
        """Stop accepting hints and let consumers drain what is buffered."""
        await self._send.aclose()
        await self._receive.aclose()
