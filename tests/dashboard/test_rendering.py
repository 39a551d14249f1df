"""The pure parts: chart geometry, number and time formats, the provider's condition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.dashboard.chart import HEIGHT, nice_ceiling, sent_per_minute_chart
from service.dashboard.queries import DeliveryActivity
from service.dashboard.snapshot import provider_state
from service.dashboard.views import ago, duration
from service.delivery.provider_health import Health

NOW = datetime(2026, 5, 4, 12, 30, tzinfo=UTC)


def _activity(counts: list[int]) -> DeliveryActivity:
    return DeliveryActivity(
        current_minute=NOW,
        sent_per_minute=counts,
        latency_samples=0,
        latency_p50_seconds=None,
        latency_p95_seconds=None,
    )


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (10, 10), (11, 20), (181, 200), (501, 1000)],
)
def test_nice_ceiling(value: int, ceiling: int) -> None:
    assert nice_ceiling(value) == ceiling


def test_bars_are_proportional_and_labelled() -> None:
    counts = [0] * 58 + [25, 50]
    chart = sent_per_minute_chart(_activity(counts))
    assert len(chart.bars) == 60
    assert (chart.total, chart.peak) == (75, 50)
    full = chart.baseline - chart.grid[0].y  # the top grid line is the scale's top, 50
    assert chart.bars[-1].height == pytest.approx(full)
    assert chart.bars[-2].height == pytest.approx(full / 2)
    assert chart.bars[0].height == 0
    assert all(bar.y + bar.height == pytest.approx(chart.baseline) for bar in chart.bars)
    assert chart.bars[-1].label == "12:30 UTC: 50 sent"
    assert [tick.label for tick in chart.ticks] == ["11:45", "12:00", "12:15", "now"]
    assert [line.label for line in chart.grid] == ["50", "25"]
    assert max(bar.y + bar.height for bar in chart.bars) <= HEIGHT


def test_an_idle_hour_draws_flat_bars() -> None:
    chart = sent_per_minute_chart(_activity([0] * 60))
    assert {bar.height for bar in chart.bars} == {0}
    assert [line.label for line in chart.grid] == ["1"]  # no half line at 0.5


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.0123, "12 ms"),
        (0.85, "850 ms"),
        (2.46, "2.5 s"),
        (37.2, "37 s"),
        (180, "3 min"),
        (200, "3 min 20 s"),
        (5 * 3600 + 60, "5 h 1 min"),
        (3 * 86400, "3 d"),
    ],
)
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("before", "text"),
    [
        (timedelta(seconds=5), "5 s ago"),
        (timedelta(minutes=3, seconds=59), "3 min ago"),
        (timedelta(hours=5), "5 h ago"),
        (timedelta(days=3), "3 d ago"),
        (timedelta(seconds=-2), "0 s ago"),  # a clock a hair ahead is not "in the future"
    ],
)
def test_ago(before: timedelta, text: str) -> None:
    assert ago(NOW - before, NOW) == text


def test_ago_of_nothing_is_a_dash() -> None:
    assert ago(None, NOW) == "—"


async def test_provider_state_follows_health() -> None:
    health = Health()
    ok = provider_state("postmark", health, rate_limit=10.0, now=NOW)
    assert (ok.condition, ok.rate_limit) == ("ok", 10.0)

    limited = provider_state("postmark", health, rate_limit=None, paused_for=30, now=NOW)
    assert (limited.condition, limited.until) == ("rate_limited", NOW + timedelta(seconds=30))

    health.provider_halted("postmark HTTP 401: bad token")
    halted = provider_state("postmark", health, rate_limit=None, now=NOW)
    assert halted.condition == "halted"
    assert halted.reason == "postmark HTTP 401: bad token"
    assert halted.until is not None
    assert halted.until > NOW

    health.provider_accepted()
    assert provider_state("postmark", health, rate_limit=None, now=NOW).condition == "ok"
