"""Outbox counts for /metrics, /readyz and the dashboard, cached briefly.

Counting is index-backed but still proportional to the rows of a status, so
every reader shares one result per ``ttl`` instead of each running the query.
"""

from __future__ import annotations

import anyio

from service.repository import OutboxCounts, Repository


class OutboxStats:
    def __init__(self, repository: Repository, ttl: float) -> None:
        self._repository = repository
        self._ttl = ttl
        self._lock = anyio.Lock()
        self._cached: OutboxCounts | None = None
        self._taken_at = float("-inf")

    async def current(self) -> OutboxCounts:
        async with self._lock:  # one query in flight; the others wait for its answer
            if self._cached is None or anyio.current_time() - self._taken_at > self._ttl:
                self._cached = await self._repository.outbox_counts()
                self._taken_at = anyio.current_time()
            return self._cached
