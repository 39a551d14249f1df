from __future__ import annotations

from datetime import UTC, datetime

import anyio
import anyio.lowlevel
import pytest

from service.email.ratelimit import RateLimiter, parse_retry_after


class FakeClock:
    """Time that moves only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


def _limiter(clock: FakeClock, rate: float | None, burst: float | None = None) -> RateLimiter:
    return RateLimiter(rate, burst=burst, clock=clock, sleep=clock.sleep)


@pytest.mark.anyio
async def test_burst_of_n_takes_n_over_rate_once_the_bucket_is_spent() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate=10.0)
    await limiter.acquire(10)  # the initial bucket: one second's worth
    start = clock.now

    for _ in range(50):
        await limiter.acquire()

    assert clock.now - start == pytest.approx(50 / 10.0)


@pytest.mark.anyio
async def test_fresh_bucket_allows_its_burst_then_paces() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate=5.0, burst=5.0)

    for _ in range(25):
        await limiter.acquire()

    assert clock.now - 1000.0 == pytest.approx((25 - 5) / 5.0)


@pytest.mark.anyio
async def test_request_larger_than_the_bucket_is_served_in_chunks() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate=2.0, burst=2.0)

    await limiter.acquire(2)
    await limiter.acquire(20)

    assert clock.now - 1000.0 == pytest.approx(20 / 2.0)


@pytest.mark.anyio
async def test_concurrent_consumers_share_the_rate() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate=4.0, burst=1.0)

    async def consumer() -> None:
        for _ in range(10):
            await limiter.acquire()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(consumer)

    assert clock.now - 1000.0 == pytest.approx((30 - 1) / 4.0)


@pytest.mark.anyio
async def test_unlimited_returns_at_once() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate=None)

    await limiter.acquire(10_000)

    assert clock.sleeps == []


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [None, 100.0])
async def test_a_pause_delays_the_next_acquire(rate: float | None) -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate=rate)

    limiter.pause_for(30.0)
    await limiter.acquire()

    assert clock.now == pytest.approx(1030.0)


@pytest.mark.anyio
async def test_earlier_pause_does_not_shorten_a_later_one() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate=None)

    limiter.pause_for(60.0)
    limiter.pause_for(5.0)
    await limiter.acquire()

    assert clock.now == pytest.approx(1060.0)


@pytest.mark.anyio
async def test_a_zero_pause_does_not_wait() -> None:
    clock = FakeClock()
    limiter = _limiter(clock, rate=None)

    limiter.pause_for(0.0)
    await limiter.acquire()

    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"rate": 0.0}, "rate"), ({"rate": 1.0, "burst": 0.5}, "burst")],
)
def test_invalid_configuration_is_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        await RateLimiter(None).acquire(-1)


NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("30", 30.0),
        ("1.5", 1.5),
        ("-4", 0.0),
        ("Wed, 01 Jan 2025 12:00:45 GMT", 45.0),
        ("Wed, 01 Jan 2025 11:00:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=lambda: NOW) == expected
