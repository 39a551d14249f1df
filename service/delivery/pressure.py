"""Requests first: background delivery gives way while the API is saturated.

Requests and delivery share one event loop, one CPU and one connection pool.
While more requests are in flight than the pool has connections (and have
been for ``SUSTAINED_SECONDS``), requests are queueing for the database, and
each delivery batch (a claim, the rendering, the recording writes) makes that
queue longer. So a consumer waits for the requests to drain before it takes
its next batch, but never longer than ``max_defer``: under a sustained
overload e-mails still go out (a batch per consumer per ``max_defer``), and
the outbox holds the rest until the load passes
(tests/delivery/test_pressure.py::test_a_consumer_leaves_ids_queued_while_requests_saturate_the_pool).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

# Saturation counts once it has lasted this long: a load below capacity still
# has moments with more requests in flight than connections, and those must
# not defer delivery
# (tests/delivery/test_pressure.py::test_a_moment_over_the_pool_size_is_not_saturation).
SUSTAINED_SECONDS = 0.1


class RequestPressure:
    """Counts requests in flight; lets background work wait for them to drain."""

    def __init__(
        self,
        pool_size: int,
        max_defer: float,
        *,
        sustained: float = SUSTAINED_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool_size = pool_size
        self._max_defer = max_defer
        self._sustained = sustained
        self._clock = clock
        self._in_flight = 0
        self._over_since: float | None = None  # when in-flight last rose above the pool
        self._calm: anyio.Event | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def saturated(self) -> bool:
        """More requests in flight than connections, for a while: requests are queueing."""
        return self._over_since is not None and self._clock() - self._over_since >= self._sustained

    def request_started(self) -> None:
        self._in_flight += 1
        if self._in_flight == self._pool_size + 1:
            self._over_since = self._clock()

    def request_finished(self) -> None:
        self._in_flight -= 1
        if self._in_flight <= self._pool_size:
            self._over_since = None
            if self._calm is not None:
                self._calm.set()
                self._calm = None

    async def wait_until_calm(self) -> None:
        """Return when requests no longer saturate the pool, or after ``max_defer`` s."""
        if self._max_defer <= 0 or not self.saturated:
            return
        if self._calm is None:
            self._calm = anyio.Event()
        with anyio.move_on_after(self._max_defer):
            await self._calm.wait()
