"""Briefly cached reads for /metrics, /readyz and the dashboard.

Counting is index-backed but still proportional to the rows of a status, so
every reader shares one result per ``ttl`` instead of each running the query.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

from service.delivery.ports import OutboxCountsSource
from service.repository import OutboxCounts

T = TypeVar("T")


class TimedCache(Generic[T]):
    """One value, fetched again once it is older than ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._lock = anyio.Lock()
        self._cached: T | None = None
        self._taken_at = float("-inf")

    async def get(self, fetch: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:  # one query in flight; the others wait for its answer
            if self._cached is None or anyio.current_time() - self._taken_at > self._ttl:
                self._cached = await fetch()
                self._taken_at = anyio.current_time()
            return self._cached


class OutboxStats:
    """The outbox counts, shared by every reader of one process."""

    def __init__(self, source: OutboxCountsSource, ttl: float) -> None:
        self._source = source
        self._cache = TimedCache[OutboxCounts](ttl)

    async def current(self) -> OutboxCounts:
        return await self._cache.get(self._source.outbox_counts)
