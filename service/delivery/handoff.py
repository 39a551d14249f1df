"""The one hand-over from the request side to delivery.

A handler calls ``Handoff.hand_over(ids)`` once its transaction has committed
the outbox rows. The stream only carries hints: what it cannot take now stays
pending in the outbox, the other replicas are told (their idle consumers can
help), and the sweeper delivers it anyway. The request never waits long.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from service.delivery.pressure import RequestPressure
from service.delivery.queue import MemoryStreamQueue
from service.delivery.wakeup import BacklogBroadcaster


class Handoff:
    """Owns the stream's send side, the request-pressure gauge and the backlog broadcast."""

    def __init__(
        self, queue: MemoryStreamQueue, pressure: RequestPressure, backlog: BacklogBroadcaster
    ) -> None:
        self._queue = queue
        self._pressure = pressure
        self._backlog = backlog

    async def hand_over(self, ids: Sequence[UUID]) -> None:
        """Hint the consumers that ``ids`` are committed and ready.

        While requests saturate the pool the consumers give way to them
        (``RequestPressure``), so a full stream would not drain within the
        send timeout: the request does not wait for room then
        (tests/delivery/test_pressure.py guards this).
        """
        calm = not self._pressure.saturated
        if await self._queue.put_while_room(ids, wait_for_room=calm) < len(ids):
            self._backlog.signal()

    @property
    def capacity(self) -> int:
        """How many hints the stream holds (0 in an API-only process)."""
        return self._queue.capacity

    def buffer_used(self) -> int:
        """How many hints are waiting in the stream now."""
        return self._queue.buffer_used()
