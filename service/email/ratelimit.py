"""A token bucket that keeps one process within the provider's sending rate.

One ``RateLimiter`` is built in the lifespan and shared by every consumer, so
the configured rate holds for the process however many consumers run. A
provider's ``Retry-After`` or rate-limit reset pauses the whole bucket: no
consumer calls the provider again before that time.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import anyio

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# Float slack in tokens and seconds; see ``acquire``.
_TOLERANCE = 1e-9


class RateLimiter:
    """Token bucket: ``rate`` tokens per second, up to ``burst`` saved up.

    ``rate=None`` means no limit of our own; ``pause_for`` still applies.
    ``burst`` defaults to one second's worth of tokens (at least one).
    """

    def __init__(
        self,
        rate: float | None,
        *,
        burst: float | None = None,
        clock: Clock = anyio.current_time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1")
        self._rate = rate
        self._capacity = burst if burst is not None else max(1.0, rate or 1.0)
        self._tokens = self._capacity
        self._clock = clock
        self._sleep = sleep
        # Read lazily: anyio.current_time needs a running event loop.
        self._updated: float | None = None
        self._paused_until = -math.inf
        # FIFO: waiters are served in arrival order, so a large burst cannot be
        # starved by a stream of small ones.
        self._lock = anyio.Lock()

    def paused_for(self) -> float:
        """Seconds until calls may go out again after a provider's pause; 0 when none."""
        return max(0.0, self._paused_until - self._clock())

    def pause_for(self, seconds: float) -> None:
        """Make no call for ``seconds`` from now."""
        # Keep the later deadline: a shorter hint must not cut a longer pause short
        # (tests/email/test_ratelimit.py::test_earlier_pause_does_not_shorten_a_later_one).
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    async def acquire(self, n: int = 1) -> None:
        """Wait until ``n`` tokens are available and take them.

        A request larger than the bucket is served in bucket-sized chunks, so
        it waits as long as the rate demands instead of never completing.
        """
        if n < 0:
            raise ValueError("n must not be negative")
        async with self._lock:
            remaining = float(n)
            while True:
                pause = self._paused_until - self._clock()
                if pause > _TOLERANCE:
                    await self._sleep(pause)
                    continue
                if self._rate is None or remaining <= 0:
                    return
                self._refill(self._rate)
                chunk = min(remaining, self._capacity)
                # The tolerance absorbs float rounding: without it a refill that
                # lands a hair short would sleep for 1e-14 s, which a clock
                # reading of ~1e3 cannot register, and spin for ever.
                if self._tokens + _TOLERANCE >= chunk:
                    self._tokens = max(0.0, self._tokens - chunk)
                    remaining -= chunk
                    continue
                await self._sleep((chunk - self._tokens) / self._rate)

    def _refill(self, rate: float) -> None:
        now = self._clock()
        if self._updated is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._updated) * rate)
        self._updated = now


def _utc_now() -> datetime:
    return datetime.now(UTC)


def parse_retry_after(value: str | None, *, now: Callable[[], datetime] = _utc_now) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delay-seconds or an HTTP-date.

    Returns ``None`` when absent or unreadable; a date in the past means 0.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; a zone-less one is read the same way.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())
